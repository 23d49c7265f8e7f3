"""`encoder-serve train` and `encoder-serve attention`. Torch is imported only when a command runs."""

from __future__ import annotations

import argparse
import shlex
import sys


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
    model.add_argument("--layers", type=int, default=4)
    model.add_argument("--d-model", type=int, default=256)
    model.add_argument("--heads", type=int, default=4)
    model.add_argument("--d-ff", type=int, default=1024)
    model.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary trained on the train texts")
    model.add_argument("--max-length", type=int, default=128, help="tokens per text, [CLS] and [SEP] included")
    model.add_argument("--position", choices=("learned", "sinusoidal", "relative"), default="learned")
    model.add_argument("--norm", choices=("pre", "post"), default="post")
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument("--embeddings-from", help="start from this checkpoint's vocabulary and (PCA-projected) "
                                                 "embeddings: a trained teacher, a BERT-family directory or 'minilm'")

    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=5)
    opt.add_argument("--batch-size", type=int, default=32)
    opt.add_argument("--lr", type=float, help="peak learning rate (default 5e-4 from scratch, 8e-5 pretrained)")
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps spent warming up")
    opt.add_argument("--patience", type=int, default=3,
                     help="stop after this many epochs without a better validation macro-F1 (0: never)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--threads", type=int, default=2, help="torch CPU threads")

    distil = train.add_argument_group("distillation")
    distil.add_argument("--teacher", help="a checkpoint trained on the same labels; its soft targets teach")
    distil.add_argument("--temperature", type=float, default=2.0)
    distil.add_argument("--alpha", type=float, default=0.5, help="weight of the soft-target loss")
    distil.add_argument("--augment", type=int, default=0,
                        help="teacher-labelled perturbed copies of every training text (soft targets only)")
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
    from encoder_serve.model.train import ModelOptions, TrainConfig, run

    if args.teacher and args.pretrained:
        raise ValueError("--teacher distils into a from-scratch student; drop --pretrained")
    if args.embeddings_from and args.pretrained:
        raise ValueError("--embeddings-from starts a from-scratch model; drop --pretrained")
    if args.augment and not args.teacher:
        raise ValueError("--augment needs --teacher: augmented texts are labelled by the teacher")
    lr = args.lr if args.lr is not None else (8e-5 if args.pretrained else 5e-4)
    model_options = ModelOptions(pretrained=args.pretrained, layers=args.layers, d_model=args.d_model,
                                 heads=args.heads, d_ff=args.d_ff, vocab_size=args.vocab_size,
                                 max_length=args.max_length, position=args.position, norm=args.norm,
                                 dropout=args.dropout, embeddings_from=args.embeddings_from)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
                         warmup=args.warmup, patience=args.patience, seed=args.seed, threads=args.threads,
                         temperature=args.temperature, alpha=args.alpha)
    command = "encoder-serve " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    run(args.data, args.out, model_options, config, args.text_column, args.label_column,
        teacher=args.teacher, augment=args.augment, command=command)
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from encoder_serve.model.attention_view import write_attention

    png, data = write_attention(args.checkpoint, args.text, args.out)
    print(f"wrote {png} and {data}")
    return 0
