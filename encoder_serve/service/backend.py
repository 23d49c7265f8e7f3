"""The model backend: a package's tokenizer and ONNX Runtime session (no asyncio, no HTTP).

`predict` is what the batcher's worker thread calls: it pads a batch to its longest text, runs the graph
(ONNX Runtime releases the GIL, so the event loop keeps serving meanwhile) and returns softmax
probabilities. Each row depends only on its own text, so scores never depend on batch composition.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from encoder_serve import onnx_runtime
from encoder_serve.package import ModelPackage, PackageError
from encoder_serve.tokenization import Encoder, load_tokenizer, pad_batch


def choose_precision(package: ModelPackage, requested: str) -> str:
    """fp32, or int8 where the manifest says it is servable AND its scores do not depend on the batch.

    Dynamic INT8 computes activation scales over the whole batch, so a text's scores would change with its
    neighbours; a batching server must not serve that. `auto` falls back to fp32 silently, an explicit
    `int8` that cannot be honoured stops start-up with the manifest's reason.
    """
    int8 = package.manifest["precisions"].get("int8") or {}
    int8_ok = package.servable("int8") and int8.get("batch_invariant") is True
    if requested == "auto":
        return "int8" if int8_ok else "fp32"
    if requested == "int8" and not int8_ok:
        why = (int8.get("reason") or "not servable") if not package.servable("int8") else (
            "its scores depend on batch composition (batch_invariant is not true)")
        raise PackageError(f"PRECISION=int8 cannot be served from {package.path}: {why}; "
                           "use PRECISION=fp32 or auto")
    package.model_path(requested)  # raises with the manifest's reason if not servable
    return requested


@dataclass(frozen=True, slots=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[int]  # indices of texts longer than max_length tokens


class OnnxBackend:
    def __init__(self, package: ModelPackage, precision: str = "auto", threads: int = 1):
        self.package = package
        self.precision = choose_precision(package, precision)
        self.labels = package.labels
        self.max_length = package.max_length
        self.tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
        self.encoder = Encoder(self.tokenizer)
        self.pad_id = self.encoder.pad_id
        path = package.model_path(self.precision)
        try:
            # idle ORT threads must not spin on cores the event loop needs between batches
            self.session = onnx_runtime.session(path, threads, spinning=False)
        except Exception as e:  # noqa: BLE001 (ORT raises its own types for unreadable graphs)
            raise PackageError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != set(onnx_runtime.INPUT_NAMES):
            raise PackageError(f"{path}: inputs {sorted(inputs)}, expected {sorted(onnx_runtime.INPUT_NAMES)}")

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        return Tokenized(*self.encoder.ids(texts))

    def predict(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities (B, num_labels), float32, for token id sequences of any lengths <= max_length."""
        logits = onnx_runtime.run(self.session, *pad_batch(sequences, self.pad_id))
        if logits.shape != (len(sequences), len(self.labels)):
            raise RuntimeError(f"model returned logits of shape {logits.shape}, "
                               f"expected {(len(sequences), len(self.labels))}")
        return onnx_runtime.softmax(logits)

    def warm_up(self) -> float:
        """Run the shortest and the longest input, so the first request pays no allocation cost; returns the
        seconds one padded token of a full-length text took (a first estimate of the model's speed)."""
        self.predict([[self.pad_id] * 2])
        self.predict([[self.pad_id] * self.max_length])
        started = time.perf_counter()
        self.predict([[self.pad_id] * self.max_length])
        return (time.perf_counter() - started) / self.max_length


@dataclass(frozen=True, slots=True)
class Explanation:
    """One text through the attention graph: its tokens, probabilities, and what attention did."""
    tokens: list[str]
    probabilities: np.ndarray  # (num_labels,)
    attentions: np.ndarray  # (layers, heads, T, T), each row sums to 1
    queries: np.ndarray  # (layers, heads, T, head size)
    keys: np.ndarray  # (layers, heads, T, head size)
    truncated: bool  # the text was longer than max_length tokens and was cut


class AttentionBackend:
    """The package's attention graph (fp32, unfused) on one ONNX Runtime thread: one text at a time, for
    people looking at the model, never on the classification path."""

    def __init__(self, package: ModelPackage, tokenizer):
        path = package.attention_path
        if path is None:
            raise PackageError(f"{package.path} has no attention graph")
        self.tokenizer = tokenizer
        self.max_length = package.max_length
        try:
            self.session = onnx_runtime.session(path, threads=1, spinning=False)
        except Exception as e:  # noqa: BLE001 (ORT raises its own types for unreadable graphs)
            raise PackageError(f"{path}: ONNX Runtime cannot load it: {e}") from None

    def explain(self, text: str) -> Explanation:
        encoding = self.tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        logits, attentions, queries, keys = self.session.run(
            ["logits", "attentions", "queries", "keys"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        return Explanation(encoding.tokens, onnx_runtime.softmax(logits)[0], attentions[:, 0], queries[:, 0],
                           keys[:, 0], bool(encoding.overflowing))
