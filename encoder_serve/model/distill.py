"""Knowledge distillation: a small student learns the teacher's full output distribution.

Hinton et al. (2015): soften both distributions with a temperature T and minimise their KL divergence,
scaled by T^2 so its gradients keep the size of the hard-label loss's; the student gets the teacher's
"dark knowledge" (that a fearful tweet looks a little like a sad one) besides the right answer.
On small data, the teacher can also label texts nobody labelled: `augment_texts` makes perturbed copies
of the training texts (word dropout, a shuffled span, halves of two texts joined), which carry soft targets
only. The teacher runs once per set of texts; its logits are cached as safetensors beside its weights.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature ** 2


def word_dropout(words: list[str], rng: random.Random, p: float = 0.15) -> list[str]:
    kept = [w for w in words if rng.random() >= p]
    return kept or words


def span_shuffle(words: list[str], rng: random.Random, max_span: int = 5) -> list[str]:
    if len(words) < 3:
        return words
    n = rng.randint(2, min(max_span, len(words)))
    start = rng.randrange(len(words) - n + 1)
    span = words[start: start + n]
    rng.shuffle(span)
    return words[:start] + span + words[start + n:]


def mix(words: list[str], other: list[str], rng: random.Random) -> list[str]:
    """The first half of one text joined to the second half of another: a text between two labels."""
    return words[: max(1, len(words) // 2)] + other[len(other) // 2:]


def augment_texts(texts: list[str], copies: int, seed: int = 0) -> list[str]:
    """`copies` perturbed versions of every text (seeded): word dropout, span shuffle or mixing, at random."""
    rng = random.Random(seed)
    out = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            kind = rng.randrange(3)
            if kind == 0:
                words = word_dropout(words, rng)
            elif kind == 1:
                words = span_shuffle(words, rng)
            else:
                words = mix(words, texts[rng.randrange(len(texts))].split(), rng)
            out.append(" ".join(words))
    return out


def cache_path(teacher_dir: Path, texts: list[str]) -> Path:
    """One cache file per (teacher weights, texts): any change to either gives a new file."""
    digest = hashlib.sha256()
    with open(teacher_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return teacher_dir / "teacher_logits" / f"{digest.hexdigest()[:16]}.safetensors"


def teacher_logits_for(teacher: str | Path, texts: list[str], labels: list[str], config) -> torch.Tensor:
    """The teacher checkpoint's logits on `texts` (N, num_labels), computed once and cached."""
    from encoder_serve.model.checkpoint import load_checkpoint
    from encoder_serve.model.train import predict, tokenize
    from encoder_serve.tokenization import pad_token_id

    teacher_dir = Path(teacher)
    model, tokenizer, _ = load_checkpoint(teacher_dir)
    if model.config.labels != labels:
        raise ValueError(f"teacher {teacher_dir} predicts labels {model.config.labels}, "
                         f"the data has {labels}: train the teacher on the same label set")
    path = cache_path(teacher_dir, texts)
    if path.is_file():
        print(f"teacher logits from cache {path}", file=sys.stderr)
        return load_file(str(path))["logits"]
    print(f"teacher labelling {len(texts)} texts ...", file=sys.stderr)
    torch.set_num_threads(config.threads)
    logits = predict(model, tokenize(tokenizer, texts), pad_token_id(tokenizer), config.eval_batch_size)
    path.parent.mkdir(exist_ok=True)
    save_file({"logits": logits.contiguous()}, str(path))
    return logits
