"""INT8: two ways to quantize, one gate that decides whether either ships.

*Dynamic* quantization (`quantize_dynamic`) stores INT8 weights and computes each activation's scale at
run time from the whole input tensor, so padding and the other texts in a batch change a text's scores
(FINDINGS.md). *Static* quantization fixes every activation scale beforehand from calibration texts
(QDQ around MatMul and the embedding lookups, per-channel weights), so a text's scores depend on that text alone: the precision a
batching service can serve. Both are built, gated and measured; the package says which shipped and why.

The gate (on the validation split, against the package's own fp32 graph): top-1 agreement >= 99% and
accuracy drop <= 0.5 point; batch invariance is measured alongside and recorded, never assumed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from tokenizers import Tokenizer

from encoder_serve.tokenization import encode

MIN_AGREEMENT = 0.99  # top-1 agreement with fp32
MAX_ACCURACY_DROP = 0.5  # accuracy points
BATCH_INVARIANCE_TOLERANCE = 1e-5  # max |score alone - score inside a mixed batch|
MODES = ("static", "dynamic")
INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QAttention", "QLinearMatMul",
            "DynamicQuantizeMatMul"}


def quantize_dynamic_int8(src: str | Path, dst: str | Path) -> Path:
    """INT8 weights, activation scales computed per run from the whole batch."""
    # the fused graph's contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference,
    # so the quantizer is told that untyped activations are float32
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(dst)


class _Calibration(CalibrationDataReader):
    """Feeds calibration texts in padded batches, as the service will."""

    def __init__(self, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 32):
        self._batches: Iterator[dict[str, np.ndarray]] = (
            dict(zip(("input_ids", "attention_mask"), encode(tokenizer, texts[i: i + batch_size])))
            for i in range(0, len(texts), batch_size))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_static_int8(src: str | Path, dst: str | Path, tokenizer: Tokenizer,
                         calibration_texts: Sequence[str]) -> Path:
    """INT8 weights (per channel) and INT8 activations with scales fixed from `calibration_texts`.

    MatMul (every projection, and the attention products) and Gather (the embedding tables, most of a
    small model's bytes) are quantized; a lookup's scale is fixed too, so nothing depends on the batch.

    `src` must be the graph as exported, not the fused one: the quantizer cannot type the outputs of
    ONNX Runtime's contrib ops (Attention, SkipLayerNormalization) and silently quantizes nothing there.
    Activations are unsigned (U8S8), ONNX Runtime's fast path on x86 without VNNI (S8S8 measured 2x
    slower here); MinMax calibration, because the calibration batches have varied sequence lengths.
    """
    if not calibration_texts:
        raise ValueError("static INT8 needs calibration texts")
    quantize_static(str(src), str(dst), _Calibration(tokenizer, calibration_texts),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gather"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True})
    return Path(dst)


def quantized_ops(path: str | Path) -> int:
    """How many INT8 operators (QDQ pairs count once, by their QuantizeLinear) a graph holds."""
    return sum(node.op_type in INT8_OPS for node in onnx.load(str(path)).graph.node)


def gate(fp32_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray) -> dict:
    """Compare INT8 with fp32 on labelled texts: {"passed", "reason", agreement, accuracies, drop}."""
    fp32_pred, int8_pred = fp32_logits.argmax(-1), int8_logits.argmax(-1)
    agreement = float((fp32_pred == int8_pred).mean())
    accuracy_fp32, accuracy_int8 = float((fp32_pred == labels).mean()), float((int8_pred == labels).mean())
    drop = 100 * (accuracy_fp32 - accuracy_int8)
    failures = []
    if not agreement >= MIN_AGREEMENT:
        failures.append(f"top-1 agreement with fp32 {100 * agreement:.2f}% < {100 * MIN_AGREEMENT:g}%")
    if not drop <= MAX_ACCURACY_DROP:
        failures.append(f"accuracy drop {drop:.2f} points > {MAX_ACCURACY_DROP:g}")
    return {"passed": not failures, "reason": "; ".join(failures) or "passed the gate",
            "texts": len(labels), "top1_agreement": agreement, "accuracy_fp32": accuracy_fp32,
            "accuracy_int8": accuracy_int8, "accuracy_drop_points": drop,
            "min_top1_agreement": MIN_AGREEMENT, "max_accuracy_drop_points": MAX_ACCURACY_DROP}


def choose(candidates: dict[str, dict]) -> str | None:
    """The mode to ship: one that passed the gate and is batch-invariant (in MODES order), else one that
    passed but is not (the service will refuse to batch it), else None."""
    passed = [m for m in MODES if candidates.get(m, {}).get("passed")]
    return next((m for m in passed if candidates[m]["batch_invariant"]), passed[0] if passed else None)
