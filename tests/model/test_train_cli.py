"""`encoder-serve train` and `encoder-serve attention` end to end, as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encoder_serve.model.checkpoint import load_checkpoint, predict_logits, save_checkpoint
from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
from tests.clikit import TINY, encoder_serve

ARTIFACTS = ["config.json", "model.safetensors", "tokenizer.json", "metrics.json", "history.json",
             "training_curves.png", "confusion_matrix.png"]


def model_labels(checkpoint: Path) -> list[str]:
    return json.loads((checkpoint / "config.json").read_text())["encoder"]["labels"]


def tiny_model(labels: list[str], **size) -> EncoderClassifier:
    """An untrained model on the 800-token test vocabulary: a teacher whose outputs are as good as any here."""
    torch.manual_seed(1)
    return EncoderClassifier(EncoderConfig(vocab_size=800, max_length=48, n_layers=1, d_ff=64, labels=labels,
                                           **size))


@pytest.fixture(scope="module")
def small_emotion(tmp_path_factory, emotion_dir) -> Path:
    """600 training and 200 test texts of the emotion data; no validation file, so it is carved from train."""
    out = tmp_path_factory.mktemp("emotion_small")
    for split, n in (("train", 600), ("test", 200)):
        with open(emotion_dir / f"{split}.jsonl") as f:
            (out / f"{split}.jsonl").write_text("".join(next(f) for _ in range(n)))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_emotion) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    result = encoder_serve("train", "--data", small_emotion, "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    return out


def test_train_writes_every_artifact(trained):
    for name in ARTIFACTS:
        assert (trained / name).is_file() and (trained / name).stat().st_size > 0, name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["test"]["per_class"]) == {"anger", "fear", "joy", "love", "sadness", "surprise"}
    assert 0 <= metrics["test"]["accuracy"] <= 1 and 0 <= metrics["validation"]["macro_f1"] <= 1
    history = json.loads((trained / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


def test_the_saved_checkpoint_reproduces_the_reported_test_accuracy(trained, small_emotion):
    model, tokenizer, _ = load_checkpoint(trained)
    rows = [json.loads(line) for line in (small_emotion / "test.jsonl").read_text().splitlines()]
    predicted = predict_logits(model, tokenizer, [r["text"] for r in rows]).argmax(-1).tolist()
    accuracy = sum(model.config.labels[p] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy == pytest.approx(json.loads((trained / "metrics.json").read_text())["test"]["accuracy"])


def test_bad_data_fails_before_training_with_file_and_line(tmp_path, small_emotion):
    (tmp_path / "train.jsonl").write_text((small_emotion / "train.jsonl").read_text())
    (tmp_path / "test.jsonl").write_text('{"text": "fine", "label": "joy"}\n{"text": "hm", "label": "boredom"}\n')
    result = encoder_serve("train", "--data", tmp_path, "--out", tmp_path / "out", *TINY)
    assert result.returncode == 2
    assert f"{tmp_path / 'test.jsonl'}:2: label 'boredom'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_distillation_from_a_teacher_runs_end_to_end_and_caches_teacher_logits_per_text(trained, small_emotion,
                                                                                        tmp_path):
    args = ["train", "--data", small_emotion, "--teacher", trained, "--augment", "1", "--temperature", "3",
            "--alpha", "0.7", *TINY]
    first = encoder_serve(*args, "--out", tmp_path / "student")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "student" / "metrics.json").is_file()
    assert len(list((trained / "teacher_cache").glob("*-logits-*.safetensors"))) == 1
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["training"]["teachers"] == [str(trained)] and config["training"]["augment"] == 1
    second = encoder_serve(*args, "--out", tmp_path / "student2")
    assert second.returncode == 0 and "labelling" not in second.stderr
    # with a validation file the training texts do not depend on the seed, only the augmented copies do
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    for split, source in (("train", "train"), ("validation", "test"), ("test", "test")):
        (fixed / f"{split}.jsonl").write_text((small_emotion / f"{source}.jsonl").read_text())
    args[2] = fixed
    first_seed = encoder_serve(*args, "--out", tmp_path / "student3", "--seed", "7")
    assert first_seed.returncode == 0 and "labelling" in first_seed.stderr
    other_seed = encoder_serve(*args, "--out", tmp_path / "student4", "--seed", "8")  # its own copies
    assert other_seed.returncode == 0 and "labelling" in other_seed.stderr
    shared = encoder_serve(*args, "--out", tmp_path / "student4", "--seed", "9", "--augment-seed", "7")
    assert shared.returncode == 0 and "labelling" not in shared.stderr
    record = json.loads((tmp_path / "student4" / "config.json").read_text())["training"]
    assert record["augment_seed"] == 7 and record["train"]["seed"] == 9


def test_attention_and_hidden_state_distillation_from_an_ensemble_teacher(trained, small_emotion, tmp_path):
    """A student with another width, head count and vocabulary than its teachers learns their last-layer
    relations and hidden states, from an ensemble of two, with synonym augmentation."""
    second_teacher = save_checkpoint(tiny_model(model_labels(trained), d_model=48, n_heads=4),
                                      load_checkpoint(trained)[1], tmp_path / "teacher2")
    result = encoder_serve("train", "--data", small_emotion, "--out", tmp_path / "student", *TINY,
                           "--vocab-size", "600", "--teacher", second_teacher, "--teacher", trained,
                           "--attention-distill", "1", "--hidden-distill", "0.5", "--augment", "1",
                           "--augment-kinds", "synonym,dropout")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "student" / "config.json").read_text())["training"]
    assert record["train"]["attention_distill"] == 1 and record["train"]["hidden_distill"] == 0.5
    assert record["augment_kinds"] == ["synonym", "dropout"] and len(record["teachers"]) == 2
    assert list((second_teacher / "teacher_cache").glob("*-relations-h2-*.safetensors"))


def test_attention_writes_a_heatmap_grid_and_the_weights_as_json(trained, tmp_path):
    result = encoder_serve("attention", trained, "i feel so happy today", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "attention.png").stat().st_size > 0
    data = json.loads((tmp_path / "attention.json").read_text())
    weights = torch.tensor(data["weights"])
    assert data["tokens"][0] == "[CLS]" and weights.shape == (1, 2, len(data["tokens"]), len(data["tokens"]))
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)
