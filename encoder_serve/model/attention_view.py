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


def tick_step(T: int, max_labels: int = 40) -> int:
    """Label every token up to `max_labels` tokens; beyond that every k-th, so labels never overlap."""
    return max(1, -(-T // max_labels))


def plot_attention(tokens: list[str], weights: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Layers down, heads across; row i of each heatmap: how much token i attends to each token.

    Token labels sit on the outer edges only (left column, bottom row), sized to the cell; one colour bar
    (attention weight, 0 to 1) serves every panel, since all share the same scale."""
    n_layers, n_heads, T, _ = weights.shape
    step = tick_step(T)
    panel = min(4.0, max(2.2, 0.16 * T))  # inches per heatmap
    label_room = 0.09 * max(len(t) for t in tokens) + 0.4  # inches for the longest token label
    fig, axes = plt.subplots(n_layers, n_heads, squeeze=False,
                             figsize=(panel * n_heads + label_room + 1.2, panel * n_layers + label_room + 0.8))
    fontsize = max(5, min(9, 72 * panel / T * 0.75 * step))
    ticks = list(range(0, T, step))
    labels = [tokens[i] for i in ticks]
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            image = ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1, aspect="equal")
            bottom, left = layer == n_layers - 1, head == 0
            ax.set_xticks(ticks, labels if bottom else [], rotation=90, fontsize=fontsize)
            ax.set_yticks(ticks, labels if left else [], fontsize=fontsize)
            ax.tick_params(length=2 if bottom or left else 0)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
    fig.supxlabel("attended token (key)", fontsize=9)
    fig.supylabel("attending token (query)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    colorbar_axes = fig.add_axes((0.935, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=colorbar_axes, label="attention weight")
    fig.savefig(path, dpi=110)
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
