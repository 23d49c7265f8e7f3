"""ONNX Runtime sessions and batched logits, as export, verification, the gate and the benchmark use them.

Sessions run on the CPU with a fixed intra-op thread count, so numbers measured in one run compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from encoder_serve.tokenization import encode


def session(path: str | Path, threads: int = 1, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session; `optimize=False` runs the graph as written (the benchmark's unoptimized baseline)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return sess.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def logits(sess: ort.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str],
           batch_size: int = 32) -> np.ndarray:
    """Logits (N, num_labels) for `texts`, in batches of `batch_size` in input order."""
    out = [run(sess, *encode(tokenizer, texts[i: i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(out)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
