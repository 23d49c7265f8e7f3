"""Every training run reports the bag-of-words baseline, and says so when the model does not beat it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.clikit import TINY, encoder_serve

FILLER = [f"w{i}" for i in range(300)]
KEYWORDS = {"calm": "neutral", "furious": "anger", "delighted": "joy"}


def keyword_texts(n: int, rng: random.Random) -> list[dict]:
    """Texts of random filler words with one keyword among them; the keyword alone decides the label."""
    rows = []
    for _ in range(n):
        keyword = rng.choice(list(KEYWORDS))
        words = rng.sample(FILLER, rng.randint(6, 14))
        words.insert(rng.randrange(len(words) + 1), keyword)
        rows.append({"text": " ".join(words), "label": KEYWORDS[keyword]})
    return rows


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keywords")
    rng = random.Random(0)
    for split, n in (("train", 300), ("validation", 100), ("test", 100)):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keyword_texts(n, rng)))
    return out


def test_a_model_that_loses_to_bag_of_words_says_so_and_suggests_a_pretrained_start(keyword_data, tmp_path):
    result = encoder_serve("train", "--data", keyword_data, "--out", tmp_path / "model", *TINY, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    baseline = metrics["baseline"]
    assert "TF-IDF" in baseline["model"] and "logistic regression" in baseline["model"]
    assert baseline["test"]["accuracy"] >= 0.95 and 0 <= baseline["test"]["macro_f1"] <= 1
    assert metrics["test"]["accuracy"] < baseline["test"]["accuracy"]
    assert "warning: the model does not beat the bag-of-words baseline" in result.stderr
    assert "--pretrained minilm" in result.stderr
    # the side-by-side table names both
    assert "baseline" in result.stderr and "model" in result.stderr
