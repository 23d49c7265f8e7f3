"""PyTorch -> ONNX with dynamic batch and sequence axes: the serving graph and the attention graph.

We use the TorchScript exporter (`dynamo=False`), not torch 2.13's default dynamo exporter, on purpose:
ONNX Runtime's transformer optimizer recognizes the TorchScript graph's attention pattern and fuses it
into one `Attention` op per layer; on the dynamo graph it fuses LayerNorm and GELU but no attention
(measured on this encoder: 2/2 vs 0/2 attention fusions, and the dynamo export takes ~25x longer).

The attention graph (`export_attention_onnx`) is the same model with more outputs: every layer's attention
probabilities, and the query and key vectors they are formed from, for the explain endpoint. It stays
unfused, since a fused attention never materializes its probabilities.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from encoder_serve.model.encoder import EncoderClassifier
from encoder_serve.package import ATTENTION_OUTPUTS

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
EXPORTER = f"torch.onnx (TorchScript, dynamo=False), torch {torch.__version__}"


def _export(module: nn.Module, max_length: int, path: Path, outputs: dict[str, dict[int, str]],
            opset: int) -> Path:
    """Trace `module(input_ids, attention_mask)` into `path` with the named outputs and their dynamic axes."""
    T = min(8, max_length)
    # example inputs with padding, so no shape or mask value can be folded into a constant
    input_ids = torch.full((2, T), 5, dtype=torch.int64)
    attention_mask = torch.ones(2, T, dtype=torch.int64)
    attention_mask[1, T // 2:] = 0
    inputs = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic and the exporter's deprecation notice
        torch.onnx.export(module, (input_ids, attention_mask), str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(outputs),
                          dynamic_axes={**inputs, **outputs})
    return path


def export_onnx(model: EncoderClassifier, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` as ONNX: inputs input_ids, attention_mask (int64 [batch, sequence]) -> logits."""
    model.eval()
    return _export(model, model.config.max_length, Path(path), {OUTPUT_NAME: {0: "batch"}}, opset)


class WithAttention(nn.Module):
    """`model` returning, next to its logits (B, labels), every layer's attention probabilities
    (L, B, nh, T, T) and the queries and keys they come from (L, B, nh, T, hs), read off the query and key
    projections by forward hooks, so the model's own code is traced unchanged."""

    def __init__(self, model: EncoderClassifier):
        super().__init__()
        self.model = model
        self.n_heads = model.config.n_heads
        self._seen: dict[str, list[torch.Tensor]] = {"queries": [], "keys": []}
        self._hooks = [hook for layer in model.encoder.layers for hook in (
            layer.attention.query.register_forward_hook(lambda m, i, out: self._seen["queries"].append(out)),
            layer.attention.key.register_forward_hook(lambda m, i, out: self._seen["keys"].append(out)))]

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def heads(self, projections: list[torch.Tensor]) -> torch.Tensor:
        B, T, C = projections[0].shape
        return torch.stack([p.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for p in projections])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        for seen in self._seen.values():
            seen.clear()
        hidden, attentions = self.model.encoder(input_ids, attention_mask, return_attention=True)
        logits = self.model.head(hidden)
        return logits, torch.stack(attentions), self.heads(self._seen["queries"]), self.heads(self._seen["keys"])


def export_attention_onnx(model: EncoderClassifier, path: str | Path, opset: int = OPSET) -> Path:
    """Write the attention graph: inputs as `export_onnx`; outputs logits, attentions, queries, keys."""
    model.eval()
    axes = {"logits": {0: "batch"}, "attentions": {1: "batch", 3: "sequence", 4: "sequence"},
            "queries": {1: "batch", 3: "sequence"}, "keys": {1: "batch", 3: "sequence"}}
    assert tuple(axes) == ATTENTION_OUTPUTS
    wrapped = WithAttention(model).eval()  # the exporter restores the mode it found: eval, for the model too
    try:
        return _export(wrapped, model.config.max_length, Path(path), axes, opset)
    finally:
        wrapped.remove_hooks()
