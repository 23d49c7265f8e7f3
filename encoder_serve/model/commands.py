"""`encoder-serve train` and `encoder-serve attention`. Torch is imported only when a command runs.

Every default comes from the dataclasses in config.py (torch-free), so each is written once.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from encoder_serve.model.config import (
    DEFAULT_AUGMENT_KINDS,
    NORM_PLACEMENTS,
    POSITION_KINDS,
    PRETRAINED_LR,
    ModelOptions,
    TrainConfig,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train (or fine-tune, or distil) an encoder classifier",
        description="Train an encoder classifier and write a checkpoint, metrics.json, history.json and plots "
                    "to OUT. Every data file is checked before training starts.")
    train.add_argument("--data", required=True,
                       help="a directory with train and test (and optionally validation) .jsonl or .csv files, "
                            "one such file, or a Hugging Face hub dataset name")
    train.add_argument("--out", required=True, help="output directory (the checkpoint and reports)")
    train.add_argument("--text-column", default="text")
    train.add_argument("--label-column", default="label")

    model = train.add_argument_group("model (from scratch; a pretrained start brings its own size)")
    model.add_argument("--pretrained", help="a BERT-family checkpoint directory, or 'minilm' for the offline MiniLM-L6")
    model.add_argument("--layers", type=int, default=ModelOptions.layers)
    model.add_argument("--d-model", type=int, default=ModelOptions.d_model)
    model.add_argument("--heads", type=int, default=ModelOptions.heads)
    model.add_argument("--d-ff", type=int, default=ModelOptions.d_ff)
    model.add_argument("--vocab-size", type=int, default=ModelOptions.vocab_size,
                       help="WordPiece vocabulary trained on the train texts")
    model.add_argument("--max-length", type=int, default=ModelOptions.max_length,
                       help="tokens per text, [CLS] and [SEP] included")
    model.add_argument("--position", choices=POSITION_KINDS, default=ModelOptions.position)
    model.add_argument("--norm", choices=NORM_PLACEMENTS, default=ModelOptions.norm)
    model.add_argument("--dropout", type=float, default=ModelOptions.dropout)
    model.add_argument("--pooler", action="store_true",
                       help="BERT's pooler (dense + tanh on [CLS]) before the classifier, as in Hugging Face's "
                            "BertForSequenceClassification; with --pretrained its weights are loaded too")
    model.add_argument("--embeddings-from", help="start from this checkpoint's vocabulary and (PCA-projected) "
                                                 "embeddings: a trained teacher, a BERT-family directory or 'minilm'")

    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    opt.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    opt.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.lr:g} from scratch, "
                                              f"{PRETRAINED_LR:g} pretrained)")
    opt.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    opt.add_argument("--warmup", type=float, default=TrainConfig.warmup, help="fraction of the steps spent warming up")
    opt.add_argument("--patience", type=int, default=TrainConfig.patience,
                     help="stop after this many epochs without a better validation macro-F1 (0: never)")
    opt.add_argument("--seed", type=int, default=TrainConfig.seed)
    opt.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch CPU threads")

    distil = train.add_argument_group("distillation")
    distil.add_argument("--teacher", action="append", default=[],
                        help="a checkpoint trained on the same labels; its soft targets teach. Repeat it for an "
                             "ensemble (logits averaged). Its outputs are cached per text in TEACHER/teacher_cache/")
    distil.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    distil.add_argument("--alpha", type=float, default=TrainConfig.alpha, help="weight of the soft-target loss")
    distil.add_argument("--attention-distill", type=float, default=TrainConfig.attention_distill, metavar="WEIGHT",
                        help="MiniLM self-attention distillation: weight of KL(teacher || student) of the last "
                             "layer's attention distributions and value relations, per head, at word level "
                             "(any width, heads or vocabulary; 0: off)")
    distil.add_argument("--hidden-distill", type=float, default=TrainConfig.hidden_distill, metavar="WEIGHT",
                        help="weight of the MSE between the last hidden states (student projected to the "
                             "teacher's width by a learned linear layer) at word level (0: off)")
    distil.add_argument("--augment", type=int, default=0,
                        help="teacher-labelled perturbed copies of every training text (soft targets only)")
    distil.add_argument("--augment-kinds", default=",".join(DEFAULT_AUGMENT_KINDS),
                        help="comma-separated perturbations, one drawn per copy: dropout (15%% of words), "
                             "shuffle (a span of 2-5 words), mix (halves of two texts), synonym (20%% of words "
                             "replaced by a nearest neighbour in the teacher's embeddings: keeps the meaning)")
    distil.add_argument("--augment-seed", type=int, default=None,
                        help="draw the augmented copies with this seed instead of --seed: students of several "
                             "seeds then share their copies, and the teacher labels them once")
    train.set_defaults(func=run_train)

    attention = subparsers.add_parser(
        "attention", help="heatmaps of every layer's and head's attention weights for one text",
        description="Render the attention weights of every layer and head for TEXT as a PNG grid, "
                    "and write the same numbers as JSON.")
    attention.add_argument("checkpoint", help="a checkpoint directory written by `encoder-serve train`")
    attention.add_argument("text")
    attention.add_argument("--out", default=".", help="directory for attention.png and attention.json")
    attention.set_defaults(func=run_attention)


def run_train(args: argparse.Namespace) -> int:
    from encoder_serve.model.train import run

    if args.teacher and args.pretrained:
        raise ValueError("--teacher distils into a from-scratch student; drop --pretrained")
    if args.embeddings_from and args.pretrained:
        raise ValueError("--embeddings-from starts a from-scratch model; drop --pretrained")
    if args.augment and not args.teacher:
        raise ValueError("--augment needs --teacher: augmented texts are labelled by the teacher")
    if (args.attention_distill or args.hidden_distill) and not args.teacher:
        raise ValueError("--attention-distill and --hidden-distill need --teacher")
    kinds = tuple(k.strip() for k in args.augment_kinds.split(",") if k.strip())
    lr = args.lr if args.lr is not None else (PRETRAINED_LR if args.pretrained else TrainConfig.lr)
    model_options = ModelOptions(pretrained=args.pretrained, layers=args.layers, d_model=args.d_model,
                                 heads=args.heads, d_ff=args.d_ff, vocab_size=args.vocab_size,
                                 max_length=args.max_length, position=args.position, norm=args.norm,
                                 dropout=args.dropout, embeddings_from=args.embeddings_from,
                                 pooler=args.pooler)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
                         warmup=args.warmup, patience=args.patience, seed=args.seed, threads=args.threads,
                         temperature=args.temperature, alpha=args.alpha,
                         attention_distill=args.attention_distill, hidden_distill=args.hidden_distill)
    command = "encoder-serve " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    run(args.data, args.out, model_options, config, args.text_column, args.label_column,
        teachers=args.teacher, augment=args.augment, augment_kinds=kinds, command=command,
        augment_seed=args.augment_seed)
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from encoder_serve.model.attention_view import write_attention

    png, data = write_attention(args.checkpoint, args.text, args.out)
    print(f"wrote {png} and {data}")
    return 0
