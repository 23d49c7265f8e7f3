"""The promise that the pipeline is dataset-agnostic: teacher, distilled student and export through
the CLI on a CSV dataset with other column names, other labels and no validation file (real subprocesses)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from encoder_serve.package import load_package
from tests.clikit import TINY, encoder_serve

SENTIMENT = {"joy": "positive", "love": "positive", "surprise": "positive",
             "sadness": "negative", "anger": "negative", "fear": "negative"}


@pytest.fixture(scope="module")
def sentiment_csv(tmp_path_factory, emotion_dir) -> Path:
    """train.csv and test.csv with columns tweet,sentiment (positive/negative), commas and quotes inside."""
    out = tmp_path_factory.mktemp("sentiment")
    for split, n in (("train", 600), ("test", 200)):
        with open(emotion_dir / f"{split}.jsonl") as f, open(out / f"{split}.csv", "w", newline="") as g:
            writer = csv.writer(g)
            writer.writerow(["id", "tweet", "sentiment"])
            for i in range(n):
                row = json.loads(next(f))
                writer.writerow([i, row["text"] + (', "really"' if i % 7 == 0 else ""), SENTIMENT[row["label"]]])
    return out


def test_teacher_student_and_export_work_on_a_csv_with_other_columns_and_labels(sentiment_csv, tmp_path):
    columns = ["--text-column", "tweet", "--label-column", "sentiment"]
    teacher = encoder_serve("train", "--data", sentiment_csv, "--out", tmp_path / "teacher", *columns, *TINY)
    assert teacher.returncode == 0, teacher.stderr
    student = encoder_serve("train", "--data", sentiment_csv, "--out", tmp_path / "student", *columns, *TINY,
                            "--teacher", tmp_path / "teacher", "--augment", "1")
    assert student.returncode == 0, student.stderr
    record = json.loads((tmp_path / "student" / "config.json").read_text())["training"]
    assert (record["text_column"], record["label_column"], record["teachers"]) == (
        "tweet", "sentiment", [str(tmp_path / "teacher")])

    # export reads the same columns from the training record, and carves the same validation split
    export = encoder_serve("export", tmp_path / "student", tmp_path / "package", "--data", sentiment_csv,
                           "--calibration-size", "64")
    assert export.returncode == 0, export.stderr
    package = load_package(tmp_path / "package")
    assert package.labels == ["negative", "positive"]
    metrics = package.manifest["metrics"]["fp32"]
    trained = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(trained["test"]["accuracy"], abs=0.011)
    assert metrics["validation"]["accuracy"] == pytest.approx(trained["validation"]["accuracy"], abs=0.011)
    assert "int8" in package.manifest["precisions"]  # built and judged by the gate, servable or not
    assert package.manifest["baseline"] == trained["baseline"]  # the bag-of-words baseline travels along

    wrong = encoder_serve("export", tmp_path / "student", tmp_path / "package2", "--data", sentiment_csv,
                          "--text-column", "text")
    assert wrong.returncode != 0 and "missing column 'text'" in wrong.stderr
