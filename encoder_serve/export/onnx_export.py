"""PyTorch -> ONNX with dynamic batch and sequence axes.

We use the TorchScript exporter (`dynamo=False`), not torch 2.13's default dynamo exporter, on purpose:
ONNX Runtime's transformer optimizer recognizes the TorchScript graph's attention pattern and fuses it
into one `Attention` op per layer; on the dynamo graph it fuses LayerNorm and GELU but no attention
(measured on this encoder: 2/2 vs 0/2 attention fusions, and the dynamo export takes ~25x longer).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from encoder_serve.model.encoder import EncoderClassifier

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
EXPORTER = f"torch.onnx (TorchScript, dynamo=False), torch {torch.__version__}"


def export_onnx(model: EncoderClassifier, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` as ONNX: inputs input_ids, attention_mask (int64 [batch, sequence]) -> logits."""
    path = Path(path)
    model.eval()
    T = min(8, model.config.max_length)
    # example inputs with padding, so no shape or mask value can be folded into a constant
    input_ids = torch.full((2, T), 5, dtype=torch.int64)
    attention_mask = torch.ones(2, T, dtype=torch.int64)
    attention_mask[1, T // 2:] = 0
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic and the exporter's deprecation notice
        torch.onnx.export(
            model, (input_ids, attention_mask), str(path), dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": {v: k for k, v in axes.items()},
                          "attention_mask": {v: k for k, v in axes.items()},
                          OUTPUT_NAME: {0: "batch"}},
        )
    return path
