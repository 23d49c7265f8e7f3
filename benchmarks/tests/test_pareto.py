"""The Pareto report's pieces: the reproducing command and the frontier."""

from __future__ import annotations

import json
import shlex

from benchmarks.pareto import Variant, mark_frontier, train_command
from encoder_serve.cli import build_parser


def test_train_command_reproduces_the_training_record(tmp_path):
    record = {"data": "../shared/data/emotion",
              "model": {"pretrained": None, "layers": 4, "d_model": 192, "heads": 4, "d_ff": 768,
                        "vocab_size": 8000, "max_length": 64, "position": "learned", "norm": "pre", "dropout": 0.2,
                        "embeddings_from": "runs/teacher"},
              "train": {"epochs": 4, "batch_size": 64, "lr": 0.0007, "weight_decay": 0.01, "warmup": 0.1,
                        "patience": 3, "grad_clip": 1.0, "seed": 0, "threads": 1, "eval_batch_size": 128,
                        "temperature": 2.0, "alpha": 0.9},
              "teacher": "runs/teacher", "augment": 4, "text_column": "tweet", "label_column": "label"}
    (tmp_path / "config.json").write_text(json.dumps({"training": record}))
    argv = shlex.split(train_command(tmp_path))
    assert argv[:2] == ["encoder-serve", "train"]
    args = build_parser().parse_args(argv[1:])  # the real CLI accepts it ...
    assert args.out == str(tmp_path) and args.teacher == "runs/teacher" and args.augment == 4
    assert (args.text_column, args.label_column) == ("tweet", "label")
    for key, value in {**record["model"], **record["train"]}.items():  # ... and sets every recorded value
        if key not in ("pretrained", "threads", "eval_batch_size", "grad_clip"):
            assert getattr(args, key) == value, key


def test_frontier_keeps_only_variants_nothing_beats_on_both_axes():
    def v(name, latency, accuracy):
        return Variant(name, "", "", 1.0, None, accuracy=accuracy, latency_p50_ms=latency)

    variants = [v("fast", 0.5, 89.0), v("slow-good", 5.0, 93.0), v("dominated", 1.5, 88.0), v("mid", 1.4, 90.5)]
    mark_frontier(variants)
    assert {x.name for x in variants if x.pareto} == {"fast", "slow-good", "mid"}
