"""Our classification metrics agree with scikit-learn's on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from encoder_serve.model.evaluation import classification_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_macro_f1_and_per_class_scores_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d"]
    true = rng.integers(0, 4, 300)
    predicted = np.where(rng.random(300) < 0.6, true, rng.integers(0, 4, 300))
    predicted[predicted == 3] = 2  # class d is never predicted: its precision and F1 are 0, as in sklearn
    report = classification_report(true.tolist(), predicted.tolist(), labels)
    assert report["accuracy"] == pytest.approx(accuracy_score(true, predicted))
    assert report["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro", zero_division=0))
    for i, label in enumerate(labels):
        assert report["per_class"][label]["precision"] == pytest.approx(
            precision_score(true, predicted, labels=[i], average="macro", zero_division=0))
        assert report["per_class"][label]["recall"] == pytest.approx(
            recall_score(true, predicted, labels=[i], average="macro", zero_division=0))
    assert report["confusion_matrix"] == confusion_matrix(true, predicted, labels=range(4)).tolist()
