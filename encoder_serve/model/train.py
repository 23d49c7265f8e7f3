"""Training: data -> tokenizer and model -> AdamW loop with early stopping -> checkpoint, metrics, plots.

One loop serves every kind of run: from scratch (a WordPiece vocabulary trained on the training texts),
from a pretrained BERT-family start, and distillation from a teacher checkpoint (soft targets, see
`distill.py`). AdamW with linear warm-up then linear decay, gradient clipping, early stopping on validation
macro-F1 keeping the best weights; seeded, so the same command gives the same model. On CPU most of the
speed comes from length-bucketed batches padded only to their own longest text.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from encoder_serve.model.checkpoint import save_checkpoint
from encoder_serve.model.config import DEFAULT_AUGMENT_KINDS, ModelOptions, TrainConfig
from encoder_serve.model.data import Dataset, length_bucketed_batches, load_dataset
from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
from encoder_serve.model.evaluation import classification_report
from encoder_serve.tokenization import configure, pad_batch, pad_token_id, train_wordpiece


@dataclass
class Examples:
    """Token ids with hard labels (-1: none, e.g. an augmented text) and, when distilling, teacher logits;
    for attention or hidden-state distillation also each text's word groups and the teacher's word-level
    targets (see distill.py)."""

    ids: list[list[int]]
    labels: list[int]
    teacher_logits: torch.Tensor | None = None  # (N, num_labels)
    groups: list[list[int]] | None = None
    internals: list | None = None  # distill.Internals per text


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts)]


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, attention_mask = pad_batch(ids, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


@torch.no_grad()
def predict(model: EncoderClassifier, ids: list[list[int]], pad_id: int, batch_size: int = 128) -> torch.Tensor:
    """Logits (N, num_labels) in input order; texts run sorted by length so batches carry little padding."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    logits = torch.empty(len(ids), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        logits[chunk] = model(*collate([ids[i] for i in chunk], pad_id))
    return logits


def evaluate(model: EncoderClassifier, ids: list[list[int]], labels: list[int], pad_id: int,
             batch_size: int = 128) -> dict:
    logits = predict(model, ids, pad_id, batch_size)
    report = classification_report(labels, logits.argmax(-1).tolist(), model.config.labels)
    report["loss"] = float(F.cross_entropy(logits, torch.tensor(labels)))
    return report


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to the peak learning rate, then linear decay to 0 at the last step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and layer-norm weights (every 1-D parameter), as in BERT."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
               config: TrainConfig) -> torch.Tensor:
    """Cross-entropy on the hard labels, mixed with the soft-target loss when a teacher is given."""
    has_label = labels >= 0
    hard = F.cross_entropy(logits[has_label], labels[has_label]) if has_label.any() else logits.sum() * 0
    if teacher_logits is None:
        return hard
    from encoder_serve.model.distill import soft_target_loss

    soft = soft_target_loss(logits, teacher_logits, config.temperature)
    return config.alpha * soft + (1 - config.alpha) * hard


def internals_loss(model: EncoderClassifier, projection: torch.nn.Module | None, input_ids: torch.Tensor,
                   mask: torch.Tensor, train: Examples, batch: list[int], labels: torch.Tensor,
                   config: TrainConfig) -> torch.Tensor:
    """The distillation loss plus MiniLM's relation losses and/or the hidden-state loss for one batch."""
    from encoder_serve.model import distill

    hidden, layers = model.encoder(input_ids, mask, return_attention=True, return_values=True)
    loss = batch_loss(model.head(hidden), labels[batch], train.teacher_logits[batch], config)
    groups = [train.groups[i] for i in batch]
    weights, values = layers[-1]
    attention, value_relation, valid = distill.relations(weights, values, mask, model.config.n_heads, groups)
    t_attention, t_values, t_hidden = distill.batch_targets([train.internals[i] for i in batch],
                                                            attention.shape[2])
    if config.attention_distill:
        loss = loss + config.attention_distill * (distill.relation_loss(attention, t_attention, valid)
                                                  + distill.relation_loss(value_relation, t_values, valid))
    if config.hidden_distill:
        word_hidden, _ = distill.pool_hidden(hidden, groups)
        loss = loss + config.hidden_distill * distill.hidden_loss(projection(word_hidden), t_hidden, valid)
    return loss


def fit(model: EncoderClassifier, train: Examples, validation: Examples, pad_id: int,
        config: TrainConfig) -> list[dict]:
    """Train in place; `model` ends with the weights of its best validation macro-F1. Returns the history."""
    rng = random.Random(config.seed)
    lengths = [len(x) for x in train.ids]
    steps_per_epoch = -(-len(train.ids) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    # hidden-state distillation: a learned projection from the student's width to the teacher's (not saved)
    projection = (torch.nn.Linear(model.config.d_model, train.internals[0].hidden.shape[-1])
                  if config.hidden_distill and train.internals else None)
    optimizer = adamw(torch.nn.ModuleList([model] + ([projection] if projection else [])), config.lr,
                      config.weight_decay)
    scheduler = linear_schedule(optimizer, int(config.warmup * total_steps), total_steps)
    labels = torch.tensor(train.labels)
    best_f1, best_state, stale, history = -1.0, None, 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        started, losses = time.perf_counter(), []
        bar = tqdm(length_bucketed_batches(lengths, config.batch_size, rng), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{config.epochs}", unit="batch", file=sys.stderr, dynamic_ncols=True)
        for batch in bar:
            input_ids, mask = collate([train.ids[i] for i in batch], pad_id)
            teacher = train.teacher_logits[batch] if train.teacher_logits is not None else None
            if train.internals is None:
                loss = batch_loss(model(input_ids, mask), labels[batch], teacher, config)
            else:
                loss = internals_loss(model, projection, input_ids, mask, train, batch, labels, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        report = evaluate(model, validation.ids, validation.labels, pad_id, config.eval_batch_size)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "step_losses": losses,
                  "validation_loss": report["loss"], "validation_accuracy": report["accuracy"],
                  "validation_macro_f1": report["macro_f1"], "seconds": time.perf_counter() - started}
        history.append(record)
        improved = report["macro_f1"] > best_f1
        if improved:
            best_f1, stale = report["macro_f1"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_acc=f"{report['accuracy']:.4f}",
                        val_f1=f"{report['macro_f1']:.4f}")
        bar.close()
        tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, validation loss {report['loss']:.4f}, "
                   f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}"
                   f"{' (best)' if improved else ''}, {record['seconds']:.0f} s", file=sys.stderr)
        if config.patience and stale >= config.patience:
            tqdm.write(f"early stop: no better validation macro-F1 for {stale} epochs", file=sys.stderr)
            break
    model.load_state_dict(best_state)
    return history


def build_model(options: ModelOptions, dataset: Dataset) -> tuple[EncoderClassifier, Tokenizer]:
    """A pretrained encoder with a fresh head, or a new encoder with a WordPiece vocabulary of the train texts."""
    if options.pretrained:
        from encoder_serve.model.pretrained import load_pretrained, minilm_path

        path = minilm_path() if options.pretrained == "minilm" else Path(options.pretrained)
        return load_pretrained(path, dataset.label_names, max_length=options.max_length, pooler=options.pooler)
    source = None
    if options.embeddings_from:
        from encoder_serve.model.pretrained import embedding_source

        source, tokenizer = embedding_source(options.embeddings_from, dataset.label_names)
        tokenizer = configure(tokenizer, options.max_length)
    else:
        tokenizer = configure(train_wordpiece(dataset.train.texts, vocab_size=options.vocab_size),
                              options.max_length)
    config = EncoderConfig(vocab_size=tokenizer.get_vocab_size(), max_length=options.max_length,
                           d_model=options.d_model, n_layers=options.layers, n_heads=options.heads,
                           d_ff=options.d_ff, dropout=options.dropout, attention_dropout=options.dropout,
                           position=options.position, norm=options.norm, labels=dataset.label_names,
                           pooler=options.pooler,
                           pad_token_id=pad_token_id(tokenizer))
    model = EncoderClassifier(config)
    if source is not None:
        from encoder_serve.model.pretrained import project_embeddings

        project_embeddings(source, model)
    return model, tokenizer


def distillation_examples(teachers: list[str], texts: list[str], labels: list[int], tokenizer: Tokenizer,
                          model: EncoderClassifier, config: TrainConfig, augment: int,
                          augment_kinds: tuple[str, ...], augment_seed: int | None = None) -> Examples:
    """The training texts plus `augment` teacher-labelled perturbed copies of each, with the teacher's logits
    (and word-level relations and hidden states when attention or hidden-state distillation is on). The
    copies are drawn with `augment_seed` (default: the training seed)."""
    from encoder_serve.model import distill

    teacher = distill.Teacher(teachers, model.config.labels, config.threads, config.eval_batch_size)
    neighbours = None
    if "synonym" in augment_kinds and augment:
        neighbours = distill.embedding_neighbours(texts, teacher.tokenizer,
                                                  teacher.model.encoder.embeddings.token.weight.detach())
        print(f"synonym augmentation: {len(neighbours)} words have embedding neighbours", file=sys.stderr)
    extra = distill.augment_texts(texts, augment, seed=config.seed if augment_seed is None else augment_seed,
                                  kinds=augment_kinds, neighbours=neighbours)
    texts, labels = texts + extra, labels + [-1] * len(extra)
    examples = Examples(tokenize(tokenizer, texts), labels, teacher.logits(texts))
    if config.attention_distill or config.hidden_distill:
        distill.check_same_words(tokenizer, teacher.tokenizer, texts)
        internals = teacher.internals(texts, model.config.n_heads)
        groups = [distill.word_groups(e, t.words) for e, t in zip(tokenizer.encode_batch(texts), internals)]
        examples.groups = groups
        examples.internals = [t.cut(max(g) - 1) for g, t in zip(groups, internals)]
    return examples


def run(data: str, out: str | Path, model_options: ModelOptions, config: TrainConfig,
        text_column: str = "text", label_column: str = "label", teachers: list[str] | None = None,
        augment: int = 0, augment_kinds: tuple[str, ...] = DEFAULT_AUGMENT_KINDS,
        command: str | None = None, augment_seed: int | None = None) -> dict:
    """The whole `encoder-serve train`: returns metrics.json's content."""
    from encoder_serve.model.baseline import fit_baseline

    started = time.perf_counter()
    dataset = load_dataset(data, text_column, label_column, seed=config.seed)  # every check before training
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    splits = {name: (split.texts, dataset.label_ids(split))
              for name, split in (("validation", dataset.validation), ("test", dataset.test))}
    baseline = fit_baseline(dataset.train.texts, dataset.label_ids(dataset.train), splits, dataset.label_names)
    model, tokenizer = build_model(model_options, dataset)
    pad_id = pad_token_id(tokenizer)
    print(f"{len(dataset.train)} train / {len(dataset.validation)} validation / {len(dataset.test)} test texts, "
          f"labels {dataset.label_names}, {model.num_parameters() / 1e6:.2f} M parameters", file=sys.stderr)
    print(f"baseline ({baseline['model']}, {baseline['seconds']:.0f} s): validation accuracy "
          f"{baseline['validation']['accuracy']:.4f}, test accuracy {baseline['test']['accuracy']:.4f}, "
          f"macro-F1 {baseline['test']['macro_f1']:.4f}", file=sys.stderr)

    train_texts, train_labels = dataset.train.texts, dataset.label_ids(dataset.train)
    if teachers:
        train = distillation_examples(list(teachers), train_texts, train_labels, tokenizer, model, config, augment,
                                      tuple(augment_kinds), augment_seed)
    else:
        train = Examples(tokenize(tokenizer, train_texts), train_labels)
    validation = Examples(tokenize(tokenizer, dataset.validation.texts), dataset.label_ids(dataset.validation))
    test = Examples(tokenize(tokenizer, dataset.test.texts), dataset.label_ids(dataset.test))

    history = fit(model, train, validation, pad_id, config)
    metrics = {
        "validation": evaluate(model, validation.ids, validation.labels, pad_id, config.eval_batch_size),
        "test": evaluate(model, test.ids, test.labels, pad_id, config.eval_batch_size),
        "baseline": baseline,
        "labels": dataset.label_names,
        "parameters": model.num_parameters(),
        "best_epoch": max(history, key=lambda r: r["validation_macro_f1"])["epoch"],
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - started,
        "command": command,
    }
    write_outputs(Path(out), model, tokenizer, metrics, history,
                  training={"data": str(data), "text_column": text_column, "label_column": label_column,
                            "model": asdict(model_options), "train": asdict(config),
                            "teachers": list(teachers or []), "augment": augment,
                            "augment_kinds": list(augment_kinds),
                            **({"augment_seed": augment_seed} if augment_seed is not None else {})})
    report(metrics, baseline, len(dataset.train), model_options, out)
    return metrics


def report(metrics: dict, baseline: dict, n_train: int, model_options: ModelOptions, out: str | Path) -> None:
    """The model next to the baseline on stderr, and a warning when the model does not beat it."""
    from encoder_serve.model.baseline import splits_not_beating

    lines = ["", f"{'':<12}{'validation acc':>16}{'test acc':>10}{'test macro-F1':>15}"]
    for name, scores in (("model", metrics), ("baseline", baseline)):
        lines.append(f"{name:<12}{scores['validation']['accuracy']:>16.4f}{scores['test']['accuracy']:>10.4f}"
                     f"{scores['test']['macro_f1']:>15.4f}")
    print("\n".join(lines) + f"\n({metrics['train_seconds']:.0f} s) -> {out}", file=sys.stderr)
    losing = splits_not_beating(metrics, baseline)
    if losing:
        advice = ("a from-scratch transformer needs more data than this; start from pretrained weights: "
                  "--pretrained minilm" if not model_options.pretrained else
                  "try another learning rate or more epochs, or use the baseline")
        print(f"warning: the model does not beat the bag-of-words baseline (TF-IDF + logistic regression) on "
              f"{' and '.join(losing)} accuracy, with {n_train} training texts; {advice}", file=sys.stderr)


def write_outputs(out: Path, model: EncoderClassifier, tokenizer: Tokenizer, metrics: dict, history: list[dict],
                  training: dict) -> None:
    """The checkpoint (config.json, model.safetensors, tokenizer.json), metrics.json, history.json, plots."""
    from encoder_serve.model.plots import plot_confusion_matrix, plot_training_curves

    save_checkpoint(model.eval(), tokenizer, out, extra={"training": training})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(history) + "\n")
    plot_training_curves(history, out / "training_curves.png")
    plot_confusion_matrix(np.array(metrics["test"]["confusion_matrix"]), metrics["labels"],
                          out / "confusion_matrix.png")
