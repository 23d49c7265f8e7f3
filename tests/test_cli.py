"""`encoder-serve` as a user runs it: --version, and subcommands whose extra is not installed."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

NO_TORCH = "import sys; sys.modules['torch'] = None; from encoder_serve.cli import main; sys.exit(main(sys.argv[1:]))"


def cli(*args: str, without_torch: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", NO_TORCH, *args] if without_torch else \
        [sys.executable, "-m", "encoder_serve.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_version_prints_the_installed_version():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"encoder-serve {metadata.version('encoder-serve')}"


def test_help_lists_every_subcommand_even_without_torch():
    result = cli("--help", without_torch=True)
    assert result.returncode == 0
    for command in ("train", "attention", "export", "bench-model", "serve"):
        assert command in result.stdout


@pytest.mark.parametrize("args", [["train", "--data", "data/emotion", "--out", "runs/x"],
                                  ["export", "runs/x", "build/x"],
                                  ["bench-model", "models/emotion", "--data", "data/emotion", "--out", "build/x"],
                                  ["attention", "runs/x", "some text"]])
def test_a_training_command_without_torch_names_the_extra_and_exits_2(args):
    result = cli(*args, without_torch=True)
    assert result.returncode == 2, result.stderr
    assert "pip install 'encoder-serve[train]'" in result.stderr
    assert "Traceback" not in result.stderr
