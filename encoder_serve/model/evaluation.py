"""Classification metrics from a confusion matrix (numpy only): accuracy, macro-F1, per-class scores.

Macro-F1 weighs every class the same, so on imbalanced data (emotion: 572 "surprise" against 5,362 "joy")
it shows what accuracy hides; early stopping selects on it for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_labels: int) -> np.ndarray:
    """counts[i, j] = examples of true class i predicted as class j."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return counts


def classification_report(true: Sequence[int], predicted: Sequence[int], labels: list[str]) -> dict:
    """{"accuracy", "macro_f1", "per_class": {label: {precision, recall, f1, support}}, "confusion_matrix"}."""
    counts = confusion_matrix(true, predicted, len(labels))
    correct = np.diag(counts).astype(np.float64)
    predicted_totals, support = counts.sum(axis=0), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_totals > 0, correct / predicted_totals, 0.0)
        recall = np.where(support > 0, correct / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # a class absent from this split has no F1 to average
    return {
        "accuracy": float(correct.sum() / max(counts.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(support[i])} for i, label in enumerate(labels)},
        "confusion_matrix": counts.tolist(),
    }
