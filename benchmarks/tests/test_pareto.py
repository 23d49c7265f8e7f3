"""The Pareto report's pieces: the reproducing command and the frontier."""

from __future__ import annotations

import itertools
import json
import shlex

import pytest

from benchmarks.pareto import Variant, group_recipes, mark_frontier, spread_labels, train_command
from encoder_serve.cli import build_parser


def test_train_command_reproduces_the_training_record(tmp_path):
    record = {"data": "data/emotion",
              "model": {"pretrained": None, "layers": 4, "d_model": 192, "heads": 4, "d_ff": 768,
                        "vocab_size": 8000, "max_length": 64, "position": "learned", "norm": "pre", "dropout": 0.2,
                        "embeddings_from": "runs/teacher", "pooler": False},
              "train": {"epochs": 4, "batch_size": 64, "lr": 0.0007, "weight_decay": 0.01, "warmup": 0.1,
                        "patience": 3, "grad_clip": 1.0, "seed": 0, "threads": 1, "eval_batch_size": 128,
                        "temperature": 2.0, "alpha": 0.9, "attention_distill": 1.0, "hidden_distill": 0.0},
              "teachers": ["runs/teacher", "runs/teacher-s1"], "augment": 4,
              "augment_kinds": ["dropout", "synonym"], "augment_seed": 0, "text_column": "tweet",
              "label_column": "label"}
    (tmp_path / "config.json").write_text(json.dumps({"training": record}))
    argv = shlex.split(train_command(tmp_path))
    assert argv[:2] == ["encoder-serve", "train"]
    args = build_parser().parse_args(argv[1:])  # the real CLI accepts it ...
    assert args.out == str(tmp_path) and args.teacher == ["runs/teacher", "runs/teacher-s1"] and args.augment == 4
    assert args.augment_kinds == "dropout,synonym" and args.augment_seed == 0
    assert (args.text_column, args.label_column) == ("tweet", "label")
    for key, value in {**record["model"], **record["train"]}.items():  # ... and sets every recorded value
        if key not in ("pretrained", "threads", "eval_batch_size", "grad_clip", "augment_kinds"):
            assert getattr(args, key) == value, key


def test_frontier_keeps_only_variants_nothing_beats_on_both_axes():
    def v(name, latency, accuracy):
        return Variant(name, "", "", 1.0, None, accuracy=accuracy, latency_p50_ms=latency)

    variants = [v("fast", 0.5, 89.0), v("slow-good", 5.0, 93.0), v("dominated", 1.5, 88.0), v("mid", 1.4, 90.5)]
    mark_frontier(variants)
    assert {x.name for x in variants if x.pareto} == {"fast", "slow-good", "mid"}


def test_a_pretrained_start_with_the_pooler_gets_the_flag_and_an_old_single_teacher_record_still_works(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    record = {"data": "data/emotion", "model": {"pretrained": "minilm", "max_length": 64, "pooler": True},
              "train": {"epochs": 3, "seed": 2, "temperature": 2.0}}
    (teacher / "config.json").write_text(json.dumps({"training": record}))
    args = build_parser().parse_args(shlex.split(train_command(teacher))[1:])
    assert args.pretrained == "minilm" and args.pooler and args.seed == 2 and not args.teacher
    student = tmp_path / "student"
    student.mkdir()
    old = {"data": "d", "model": {"pretrained": None, "layers": 2}, "train": {"alpha": 0.9},
           "teacher": "runs/teacher", "augment": 1}
    (student / "config.json").write_text(json.dumps({"training": old}))
    args = build_parser().parse_args(shlex.split(train_command(student))[1:])
    assert args.teacher == ["runs/teacher"] and args.alpha == 0.9 and args.augment == 1


def test_checkpoints_that_differ_only_by_seed_form_one_recipe_with_mean_and_spread(tmp_path):
    variants = []
    for seed, accuracy in ((0, 92.0), (1, 93.0), (2, 92.5)):
        checkpoint = tmp_path / f"student-s{seed}"
        checkpoint.mkdir()
        record = {"data": "d", "model": {"pretrained": None, "layers": 4}, "train": {"seed": seed, "epochs": 6}}
        (checkpoint / "config.json").write_text(json.dumps({"training": record}))
        variants.append(Variant(checkpoint.name, str(checkpoint), train_command(checkpoint), 3.0, accuracy + 0.1,
                                accuracy=accuracy, macro_f1=88.0, latency_p50_ms=1.4, speedup_vs_teacher=5.0))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"training": {"data": "d", "model": {"layers": 2},
                                                                "train": {"seed": 0}}}))
    variants.append(Variant("other", str(other), train_command(other), 1.0, None, accuracy=90.0))
    recipes = group_recipes(variants)
    assert [r.name for r in recipes] == ["student", "other"]
    student = recipes[0]
    assert student.seeds == [0, 1, 2] and student.accuracy_mean == pytest.approx(92.5)
    assert student.accuracy_std == pytest.approx(0.5) and (student.accuracy_min, student.accuracy_max) == (92.0, 93.0)
    assert "--seed=SEED" in student.command and "student-sSEED" in student.command


def test_labels_keep_their_order_stay_apart_and_inside_the_axes():
    heights = spread_labels([0.5, 0.5, 0.51, 0.99, 0.98, 0.1], gap=0.05)
    ordered = sorted(heights)
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(ordered))
    assert 0 <= min(heights) and max(heights) <= 1
    assert heights[5] == pytest.approx(0.1)


def test_a_checkpoint_is_exported_to_int8_timed_and_scored(tmp_path):
    """The measuring half of `make pareto` on a real (tiny, untrained) checkpoint: INT8 export, ONNX Runtime."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from benchmarks.pareto import int8_graph, measure
    from encoder_serve.model.checkpoint import save_checkpoint
    from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
    from encoder_serve.tokenization import train_wordpiece

    texts = [f"i feel {w} today and {v}" for w in ("happy", "sad", "angry", "calm") for v in ("yes", "no", "ok")]
    tokenizer = train_wordpiece(texts * 4, vocab_size=200)
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderConfig(vocab_size=tokenizer.get_vocab_size(), max_length=32, d_model=32,
                                            n_layers=1, n_heads=2, d_ff=64, labels=["a", "b"]))
    checkpoint = save_checkpoint(model, tokenizer, tmp_path / "student-tiny")
    (checkpoint / "config.json").write_text(json.dumps({**json.loads((checkpoint / "config.json").read_text()),
                                                        "training": {}}))
    graph = int8_graph(checkpoint, tmp_path / "work", texts)
    assert graph.is_file() and int8_graph(checkpoint, tmp_path / "work", texts) == graph  # cached
    variant = Variant("student-tiny", str(checkpoint), "", 0.1, None)
    labels = np.array([i % 2 for i in range(len(texts))])
    measure([variant], [graph], [SimpleNamespace(test=SimpleNamespace(texts=texts, labels=labels))], 1, 1)
    assert 0 <= variant.accuracy <= 100 and variant.latency_p50_ms > 0 and variant.throughput_texts_per_s > 0
