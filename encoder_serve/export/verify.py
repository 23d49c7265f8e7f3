"""Verification is part of export: a graph that fails here is never written into a package.

Three checks, each with a number recorded in the manifest:
  * `onnx.checker` (full check, shape inference included) accepts the graph;
  * ONNX Runtime matches PyTorch on texts of varied lengths in batches of varied sizes;
  * a text's logits do not change with padding or batch neighbours (alone vs inside a mixed batch),
    the property the service's dynamic batching relies on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from encoder_serve import onnx_runtime
from encoder_serve.model.encoder import EncoderClassifier
from encoder_serve.tokenization import encode

FP32_TOLERANCE = 1e-4  # max |logits ORT - logits PyTorch|
BATCH_TOLERANCE = 1e-5  # max |logits alone - logits inside a padded, mixed batch|
BATCH_SIZES = (1, 3, 8, 32)


class VerificationError(ValueError):
    """An exported graph that does not compute what the checkpoint computes; the message has the numbers."""


def check_graph(path: str | Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise VerificationError(f"{path}: onnx.checker rejected the graph: {e}") from None


def probe_texts(texts: Sequence[str], n: int = 96, seed: int = 0) -> list[str]:
    """`n` texts spanning the length range: a seeded sample, the longest ones, and one past max_length."""
    rng = random.Random(seed)
    by_length = sorted(texts, key=len)
    picked = rng.sample(list(texts), min(n - 4, len(texts)))
    return picked + by_length[:1] + by_length[-2:] + [" ".join(by_length[-8:])]  # the last one gets truncated


def synthetic_texts(tokenizer: Tokenizer, max_length: int, n: int = 96, seed: int = 0) -> list[str]:
    """Texts of random vocabulary words, 1 to max_length + 8 words long, for when no data is given."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha()]
    if not words:
        raise ValueError("the tokenizer has no alphabetic vocabulary words to make verification texts from")
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(1, max_length + 8))) for _ in range(n)]


def batches(texts: Sequence[str], sizes: Sequence[int] = BATCH_SIZES):
    """Consecutive slices of `texts` cycling through `sizes`: every batch mixes lengths, so it is padded."""
    i, k = 0, 0
    while i < len(texts):
        size = sizes[k % len(sizes)]
        yield texts[i: i + size]
        i, k = i + size, k + 1


@torch.no_grad()
def diff_vs_pytorch(model: EncoderClassifier, sess: ort.InferenceSession, tokenizer: Tokenizer,
                    texts: Sequence[str]) -> float:
    """max |logits ORT - logits PyTorch| over `texts` in batches of BATCH_SIZES."""
    worst = 0.0
    for batch in batches(texts):
        ids, mask = encode(tokenizer, batch)
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        worst = max(worst, float(np.abs(onnx_runtime.run(sess, ids, mask) - expected).max()))
    return worst


def alone_and_batched(sess: ort.InferenceSession, tokenizer: Tokenizer,
                      texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of each text run alone (no padding) and inside one padded batch with all the others."""
    alone = np.concatenate([onnx_runtime.run(sess, *encode(tokenizer, [t])) for t in texts])
    return alone, onnx_runtime.run(sess, *encode(tokenizer, texts))


def batch_dependence(sess: ort.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str],
                     scores: bool = False) -> float:
    """max |alone - batched| over `texts`, on logits or (scores=True) on softmax scores."""
    alone, batched = alone_and_batched(sess, tokenizer, texts)
    if scores:
        alone, batched = onnx_runtime.softmax(alone), onnx_runtime.softmax(batched)
    return float(np.abs(alone - batched).max())


def verify_fp32(model: EncoderClassifier, path: str | Path, tokenizer: Tokenizer, texts: Sequence[str],
                threads: int = 1) -> dict:
    """Run every check on the fp32 graph at `path`; raises VerificationError with the numbers."""
    check_graph(path)
    sess = onnx_runtime.session(path, threads)
    vs_pytorch = diff_vs_pytorch(model, sess, tokenizer, texts)
    if not vs_pytorch <= FP32_TOLERANCE:  # `not <=` also catches NaN
        raise VerificationError(f"{Path(path).name}: ONNX Runtime differs from PyTorch by max |Δlogits| = "
                                f"{vs_pytorch:.3g} > {FP32_TOLERANCE:g} on {len(texts)} texts")
    vs_batch = batch_dependence(sess, tokenizer, texts[:BATCH_SIZES[-1]])
    if not vs_batch <= BATCH_TOLERANCE:
        raise VerificationError(f"{Path(path).name}: a text's logits change with padding and batch neighbours "
                                f"by max |Δlogits| = {vs_batch:.3g} > {BATCH_TOLERANCE:g}")
    return {"onnx_checker": "passed", "texts": len(texts), "batch_sizes": list(BATCH_SIZES),
            "max_abs_logit_diff_vs_pytorch": vs_pytorch, "max_abs_logit_diff_alone_vs_batched": vs_batch}


@torch.no_grad()
def verify_attention(model: EncoderClassifier, path: str | Path, tokenizer: Tokenizer, texts: Sequence[str],
                     threads: int = 1) -> dict:
    """The attention graph against PyTorch, text by text (as the explain endpoint runs it): logits and every
    layer's attention probabilities within FP32_TOLERANCE, and each probability row summing to 1."""
    check_graph(path)
    sess = onnx_runtime.session(path, threads)
    worst_logits = worst_attention = worst_row = 0.0
    for text in texts:
        ids, mask = encode(tokenizer, [text])
        logits, attentions = sess.run(["logits", "attentions"], {"input_ids": ids, "attention_mask": mask})
        expected_logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        expected = torch.stack(model.attention_maps(torch.from_numpy(ids), torch.from_numpy(mask))).numpy()
        worst_logits = max(worst_logits, float(np.abs(logits - expected_logits).max()))
        worst_attention = max(worst_attention, float(np.abs(attentions - expected).max()))
        worst_row = max(worst_row, float(np.abs(attentions.sum(-1) - 1).max()))
    for what, worst in (("logits", worst_logits), ("attention", worst_attention), ("row sums", worst_row)):
        if not worst <= FP32_TOLERANCE:
            raise VerificationError(f"{Path(path).name}: the attention graph's {what} differ from PyTorch by "
                                    f"{worst:.3g} > {FP32_TOLERANCE:g} on {len(texts)} texts")
    return {"onnx_checker": "passed", "texts": len(texts), "max_abs_logit_diff_vs_pytorch": worst_logits,
            "max_abs_attention_diff_vs_pytorch": worst_attention, "max_abs_row_sum_error": worst_row}
