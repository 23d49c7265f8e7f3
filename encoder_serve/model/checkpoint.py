"""Checkpoints: a directory with config.json, model.safetensors and tokenizer.json. Nothing is pickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
from encoder_serve.tokenization import configure, encode

CHECKPOINT_FORMAT = "encoder-serve-checkpoint/1"


def save_checkpoint(model: EncoderClassifier, tokenizer: Tokenizer, out_dir: str | Path,
                    extra: dict | None = None) -> Path:
    """Write config.json (the encoder config, labels included), model.safetensors and tokenizer.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": CHECKPOINT_FORMAT, "encoder": model.config.to_dict(), **(extra or {})}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # the sinusoidal table is a non-persistent buffer, rebuilt from the config: not in the state dict
    tensors = {name: p.detach().contiguous().cpu() for name, p in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
    tokenizer.save(str(out / "tokenizer.json"))
    return out


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` holds a checkpoint written by `save_checkpoint` (not, say, a BERT-family directory)."""
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: str | Path) -> tuple[EncoderClassifier, Tokenizer, dict]:
    """Load a checkpoint directory written by `save_checkpoint`: (model in eval mode, tokenizer, config)."""
    path = Path(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is missing {name}")
    raw = json.loads((path / "config.json").read_text())
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path / 'config.json'} is not an encoder-serve checkpoint "
                         f"(format {raw.get('format')!r}); a BERT-family checkpoint loads with --pretrained")
    config = EncoderConfig.from_dict(raw["encoder"])
    model = EncoderClassifier(config)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)  # the sinusoidal table is no state
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its config: missing {missing}, unexpected {unexpected}")
    model.eval()
    tokenizer = configure(Tokenizer.from_file(str(path / "tokenizer.json")), config.max_length)
    return model, tokenizer, raw


@torch.no_grad()
def predict_logits(model: EncoderClassifier, tokenizer: Tokenizer, texts: list[str],
                   batch_size: int = 64) -> torch.Tensor:
    """Logits for `texts` (N, num_labels), batched, in input order."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = encode(tokenizer, texts[i: i + batch_size])
        out.append(model(torch.from_numpy(ids), torch.from_numpy(mask)))
    return torch.cat(out) if out else torch.zeros(0, model.config.num_labels)
