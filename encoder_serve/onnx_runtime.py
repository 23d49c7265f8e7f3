"""ONNX Runtime for every part of the project (torch-free): sessions, logits in batches, softmax.

The service, export (verification, the INT8 gate, metrics), the benchmarks and the tests all open a
package's graphs through `session`, so a thread count or an option means the same thing everywhere and
numbers measured in one run compare. Sessions run on the CPU with a fixed intra-op thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from encoder_serve.tokenization import encode

INPUT_NAMES = ("input_ids", "attention_mask")
LOGITS = "logits"


def session(path: str | Path, threads: int = 1, *, optimize: bool = True, spinning: bool = True,
            quiet: bool = True) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads.

    `optimize=False` runs the graph as written (the benchmark's unoptimized baseline). `spinning=False`
    stops idle ONNX Runtime threads from spinning, which a server wants: between batches the cores belong
    to the event loop. `quiet` hides ONNX Runtime's warnings (it logs a lot while loading quantized graphs).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if quiet:
        options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray,
        output: str = LOGITS) -> np.ndarray:
    """One output of one call, e.g. logits (B, num_labels) for int64 (B, T) ids and mask."""
    return sess.run([output], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def logits(sess: ort.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str],
           batch_size: int = 32) -> np.ndarray:
    """Logits (N, num_labels) for `texts`, in batches of `batch_size` in input order."""
    out = [run(sess, *encode(tokenizer, texts[i: i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(out)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32; each row depends only on itself."""
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)
