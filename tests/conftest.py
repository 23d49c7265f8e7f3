"""Session fixtures shared by every test module: real data, real checkpoints, real packages."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data" / "emotion"  # filled by `make data`
SHIPPED_PACKAGE = REPO / "models" / "emotion"
SPLITS = ("train", "validation", "test")


def find_emotion_data() -> Path | None:
    """data/emotion (what `make data` fills), else $EMOTION_DATA; None when neither holds the three splits."""
    candidates = [DATA_DIR] + ([Path(os.environ["EMOTION_DATA"])] if os.environ.get("EMOTION_DATA") else [])
    return next((d for d in candidates if all((d / f"{s}.jsonl").is_file() for s in SPLITS)), None)


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def emotion_dir() -> Path:
    found = find_emotion_data()
    if found is None:
        pytest.fail(f"the emotion dataset is not in {DATA_DIR}: run `make data` (it copies the directory named by "
                    "EMOTION_DATA, or downloads dair-ai/emotion from the Hugging Face hub)", pytrace=False)
    return found


@pytest.fixture(scope="session")
def emotion_test_rows(emotion_dir) -> list[dict]:
    return read_jsonl(emotion_dir / "test.jsonl")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, emotion_dir) -> Path:
    """A small untrained encoder with a WordPiece vocabulary learned on the emotion training texts.

    Its scores are arbitrary but deterministic: enough for export, packaging and service mechanics.
    """
    import torch

    from encoder_serve.model.checkpoint import save_checkpoint
    from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
    from encoder_serve.tokenization import train_wordpiece

    rows = read_jsonl(emotion_dir / "train.jsonl", limit=4000)
    labels = sorted({r["label"] for r in rows})
    tokenizer = train_wordpiece((r["text"] for r in rows), vocab_size=2000)
    torch.manual_seed(0)
    config = EncoderConfig(vocab_size=tokenizer.get_vocab_size(), max_length=64, d_model=64, n_layers=2,
                           n_heads=4, d_ff=128, labels=labels)
    model = EncoderClassifier(config).eval()
    return save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, emotion_dir) -> Path:
    """The first 300 texts of each emotion split: enough to gate and score INT8, fast to evaluate."""
    out = tmp_path_factory.mktemp("tiny_data")
    for split in ("train", "validation", "test"):
        rows = read_jsonl(emotion_dir / f"{split}.jsonl", limit=300)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, tiny_checkpoint, tiny_data_dir) -> Path:
    """`tiny_checkpoint` exported by the real pipeline: verified fp32 graph, gated INT8, manifest."""
    from encoder_serve.export.build import build_package

    path = tmp_path_factory.mktemp("tiny_package") / "emotion-tiny"
    build_package(tiny_checkpoint, path, name="emotion-tiny", version="0.0.1", data_dir=tiny_data_dir,
                  calibration_size=128)
    return path


@pytest.fixture(scope="session")
def service_package(request) -> Path:
    """The package the serving tests run: `tiny_package`, made by the real export pipeline, where torch is
    installed; in a serving-only install (no torch, `make test-pythons`), the shipped models/emotion."""
    if torch_installed():
        return request.getfixturevalue("tiny_package")
    return SHIPPED_PACKAGE
