"""What each head looks at: the BertViz idea, as files.

For one text, every layer's and head's attention weights (row i: how much token i attends to each token)
are drawn as a grid of heatmaps, layers down and heads across, and written as JSON with the tokens so the
numbers can be checked or re-plotted.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from encoder_serve.model.checkpoint import load_checkpoint


def attention_for(checkpoint: str | Path, text: str) -> tuple[list[str], torch.Tensor]:
    """(tokens, weights (n_layers, n_heads, T, T)) for one text."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    encoding = tokenizer.encode(text)
    ids = torch.tensor([encoding.ids])
    maps = model.attention_maps(ids, torch.ones_like(ids))
    return encoding.tokens, torch.stack([m[0] for m in maps])


def plot_attention(tokens: list[str], weights: torch.Tensor, path: str | Path, title: str = "") -> Path:
    n_layers, n_heads, T, _ = weights.shape
    cell = max(1.6, 0.22 * T)
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(cell * n_heads, cell * n_layers), squeeze=False)
    show_tokens = T <= 40  # beyond that the labels overlap into noise
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(T) if show_tokens else [], tokens if show_tokens else [], rotation=90, fontsize=6)
            ax.set_yticks(range(T) if show_tokens else [], tokens if show_tokens else [], fontsize=6)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_attention(checkpoint: str | Path, text: str, out_dir: str | Path) -> tuple[Path, Path]:
    """attention.png (the grid) and attention.json ({"text", "tokens", "weights": [layer][head][i][j]})."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens, weights = attention_for(checkpoint, text)
    png = plot_attention(tokens, weights, out / "attention.png", title=text[:100])
    data = out / "attention.json"
    data.write_text(json.dumps({"text": text, "tokens": tokens, "shape": list(weights.shape),
                                "weights": weights.tolist()}) + "\n")
    return png, data
