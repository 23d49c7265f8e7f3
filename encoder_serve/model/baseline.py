"""The bag-of-words baseline every training run reports: TF-IDF of word 1-2-grams + logistic regression.

Fitted on the same train split the model trains on and scored on the same validation and test splits, in
seconds on a CPU. A transformer that does not beat it has not earned its cost; on small datasets trained
from scratch it often does not (a pretrained start usually does): `train` says so.
"""

from __future__ import annotations

import time

from encoder_serve.model.evaluation import classification_report

DESCRIPTION = "TF-IDF (word 1-2-grams, sublinear tf, min_df 1) + logistic regression (C=100, scikit-learn)"


def fit_baseline(train_texts: list[str], train_labels: list[int], splits: dict[str, tuple[list[str], list[int]]],
                 label_names: list[str]) -> dict:
    """{"model": DESCRIPTION, "seconds", "validation": {accuracy, macro_f1}, "test": {...}} for `splits`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                             LogisticRegression(C=100.0, max_iter=3000))
    pipeline.fit(train_texts, train_labels)
    result = {"model": DESCRIPTION}
    for name, (texts, labels) in splits.items():
        report = classification_report(labels, pipeline.predict(texts).tolist(), label_names)
        result[name] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
    result["seconds"] = time.perf_counter() - started
    return result


def splits_not_beating(metrics: dict, baseline: dict) -> list[str]:
    """The splits on which the model's accuracy is not above the baseline's (empty: it wins everywhere)."""
    return [split for split in ("validation", "test")
            if split in baseline and metrics[split]["accuracy"] <= baseline[split]["accuracy"]]
