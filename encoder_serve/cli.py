"""`encoder-serve`: one command, one subcommand per job.

Each part of the project registers its own subcommands from a `commands` module that imports nothing
heavy at import time, so `encoder-serve serve` runs in an install without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "encoder_serve.model.commands",  # train, attention
    "encoder_serve.export.commands",  # export, bench-model
    "encoder_serve.service.commands",  # serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encoder-serve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # that part of the project is not there
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as e:  # data and config errors: one clear line, no traceback
        print(f"encoder-serve {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
