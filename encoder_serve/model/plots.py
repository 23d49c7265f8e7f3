"""Training plots as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_training_curves(history: list[dict], path: str | Path) -> Path:
    """Left: training loss per step (smoothed) and validation loss per epoch. Right: validation accuracy, F1."""
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.concatenate([r["step_losses"] for r in history])
    steps_per_epoch = len(history[0]["step_losses"])
    window = max(1, min(50, len(steps) // 10))
    smooth = np.convolve(steps, np.ones(window) / window, mode="valid")
    loss_ax.plot(np.arange(len(smooth)) / steps_per_epoch + window / steps_per_epoch, smooth,
                 label="train (per step, smoothed)", alpha=0.8)
    epochs = [r["epoch"] for r in history]
    loss_ax.plot(epochs, [r["validation_loss"] for r in history], "o-", label="validation (per epoch)")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    score_ax.plot(epochs, [r["validation_accuracy"] for r in history], "o-", label="accuracy")
    score_ax.plot(epochs, [r["validation_macro_f1"] for r in history], "s-", label="macro-F1")
    score_ax.set(xlabel="epoch", ylabel="score", title="validation")
    score_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion_matrix(counts: np.ndarray, labels: list[str], path: str | Path) -> Path:
    """Rows: true label; columns: predicted label; colour: share of the row, number: count."""
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true label")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
