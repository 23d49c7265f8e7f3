"""`encoder-serve`: one command, one subcommand per job.

Each part of the project registers its own subcommands from a `commands` module that imports nothing
heavy at import time, so `encoder-serve --help` lists every subcommand in any install, and `serve` runs
in an install without torch. A subcommand whose part is not installed says which extra brings it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

COMMAND_MODULES = (
    "encoder_serve.model.commands",  # train, attention
    "encoder_serve.export.commands",  # export, bench-model
    "encoder_serve.service.commands",  # serve
)
# The import name of each optional dependency -> the extra that installs it.
EXTRAS = {"torch": "train", "safetensors": "train", "onnx": "train", "onnxscript": "train", "matplotlib": "train",
          "tqdm": "train", "sklearn": "train", "datasets": "hub", "onnxruntime": "serve", "fastapi": "serve",
          "uvicorn": "serve", "pydantic_settings": "serve", "prometheus_client": "serve", "orjson": "serve",
          "opentelemetry": "otel"}


def version() -> str:
    try:
        return metadata.version("encoder-serve")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encoder-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The extra that provides the module an import could not find, if it is one of ours."""
    return EXTRAS.get((error.name or "").partition(".")[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:
        extra = missing_extra(e)
        if extra is None:
            raise
        print(f"encoder-serve {args.command}: needs the '{extra}' extra, which is not installed "
              f"(no module {e.name!r}): pip install 'encoder-serve[{extra}]'", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:  # data and config errors: one clear line, no traceback
        print(f"encoder-serve {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
