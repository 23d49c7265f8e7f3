"""ONNX Runtime's transformer optimizer, applied offline: the fused graph is what model.onnx holds.

Fusions depend on the graph: learned and sinusoidal positions fuse attention into one `Attention` op per
layer; relative positions add a per-head bias the BERT attention pattern does not have, so their
attention stays unfused (LayerNorm and GELU still fuse). We record the counts instead of failing.

The attention mask stays the raw 0/1 mask (not ONNX Runtime's default for BERT, a 1-D length index that
silently assumes right padding): scores are then correct for any padding layout a client sends.
"""

from __future__ import annotations

from pathlib import Path

from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from encoder_serve.model.encoder import EncoderConfig

# ORT's basic graph optimizations (constant folding, redundant node elimination) run before the fusions;
# they are hardware-independent, unlike level 2+, which bakes in CPU-specific layouts.
OPT_LEVEL = 1


def optimize_onnx(src: str | Path, dst: str | Path, config: EncoderConfig) -> dict[str, int]:
    """Fuse `src` into `dst`; returns the fused operators that occur, with their counts."""
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    model = optimize_model(str(src), model_type="bert", num_heads=config.n_heads, hidden_size=config.d_model,
                           optimization_options=options, opt_level=OPT_LEVEL, use_gpu=False)
    model.save_model_to_file(str(dst))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}
