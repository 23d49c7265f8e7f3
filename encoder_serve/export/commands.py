"""`encoder-serve export` and `encoder-serve bench-model` (heavy imports happen inside the commands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="checkpoint -> verified, optimized, gated ONNX model package",
        description="Export CHECKPOINT to ONNX, verify it against PyTorch, fuse it with ONNX Runtime's "
                    "transformer optimizer, build and gate INT8 (with --data), and write the model package.")
    export.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, "
                                                      "tokenizer.json)")
    export.add_argument("package", type=Path, help="package directory to write (an older package is replaced)")
    export.add_argument("--name", help="model name (default: the package directory's name)")
    export.add_argument("--version", default="1", help="model version (default: 1)")
    export.add_argument("--data", help="the training data (directory of train/validation/test JSONL or CSV, one "
                                       "file, or a hub name): verification texts, INT8 calibration and gate, metrics")
    add_column_arguments(export)
    export.add_argument("--calibration-size", type=int, default=512,
                        help="training texts used to fix the static INT8 scales (default: 512)")
    export.add_argument("--no-int8", action="store_true", help="build no INT8 graph")
    export.add_argument("--no-attention", action="store_true",
                        help="build no attention graph (the service's /v1/explain then says it is missing)")
    export.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch threads (default: 1)")
    export.set_defaults(func=run_export)

    bench = subparsers.add_parser(
        "bench-model", help="accuracy, latency, throughput and size: PyTorch vs ONNX Runtime fp32 / INT8",
        description="Benchmark one model package (and its source checkpoint) in one run with a fixed thread "
                    "count; writes bench-model.json and bench-model.png to OUT and prints a table.")
    bench.add_argument("package", type=Path)
    bench.add_argument("--data", required=True, help="the data the model was trained on (its test split is "
                                                     "scored; train calibrates INT8)")
    add_column_arguments(bench)
    bench.add_argument("--out", type=Path, required=True, help="directory for the JSON and PNG results")
    bench.add_argument("--checkpoint", type=Path, help="source checkpoint (default: the one in the manifest)")
    bench.add_argument("--threads", type=int, default=1, help="threads for every engine (default: 1)")
    bench.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default: 3)")
    bench.set_defaults(func=run_bench)


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", help="default: the one the checkpoint was trained with, else 'text'")
    parser.add_argument("--label-column", help="default: the one the checkpoint was trained with, else 'label'")


def run_export(args: argparse.Namespace) -> int:
    import logging

    import torch

    from encoder_serve.export.build import build_package

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # ONNX Runtime's tools log a lot at INFO
    logging.getLogger("encoder_serve").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    package = build_package(args.checkpoint, args.package, name=args.name or args.package.name,
                            version=args.version, data_dir=args.data, int8=not args.no_int8,
                            attention=not args.no_attention,
                            calibration_size=args.calibration_size, threads=args.threads,
                            text_column=args.text_column, label_column=args.label_column)
    summary = {"package": str(package.path), "model": package.ref,
               "fusions": package.manifest["export"]["fusions"],
               "precisions": {k: {"servable": v["servable"], "reason": v["reason"]}
                              for k, v in package.manifest["precisions"].items()},
               "metrics": package.manifest["metrics"]}
    print(json.dumps(summary, indent=2))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from encoder_serve.export.bench import bench_model

    bench_model(args.package, args.data, args.out, checkpoint_dir=args.checkpoint, threads=args.threads,
                rounds=args.rounds, text_column=args.text_column, label_column=args.label_column)
    return 0
