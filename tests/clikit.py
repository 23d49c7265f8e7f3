"""`encoder-serve` as a user runs it (a real subprocess), and the tiny model size the CLI tests train."""

from __future__ import annotations

import subprocess
import sys

TINY = ["--layers", "1", "--d-model", "32", "--heads", "2", "--d-ff", "64", "--vocab-size", "800",
        "--max-length", "48", "--epochs", "2", "--batch-size", "32", "--lr", "2e-3", "--threads", "1"]


def encoder_serve(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "encoder_serve.cli", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=600)
