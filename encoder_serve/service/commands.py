"""`encoder-serve serve`: the service with command-line overrides of its environment settings."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model package over HTTP (settings from the environment)",
                                   description="Run the inference service. Every setting is an environment "
                                               "variable (MODEL_DIR, PORT, MAX_BATCH_SIZE, ...); these options "
                                               "override the common ones.")
    parser.add_argument("--model-dir", help="model package directory (MODEL_DIR)")
    parser.add_argument("--host", help="interface to bind (HOST)")
    parser.add_argument("--port", type=int, help="port (PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes, each with its own model (WORKERS, default: "
                                                         "one per usable CPU, at most 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # through the environment, so that every worker process sees the same settings
    for name in ("model_dir", "host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[name.upper()] = str(value)
    from encoder_serve.service.__main__ import main

    return main()
