"""One virtual environment per peer stack under build/peers/<stack>/venv, created on first use and kept while its
requirements stay the same.

A peer's environment holds its stack at the version pinned in benchmarks.peers.stacks, plus ONNX Runtime,
tokenizers and NumPy at exactly the versions the benchmark itself runs (so every contender computes with
the same ONNX Runtime build), plus this repository installed editable without dependencies, so the peer's
model code imports encoder-serve's own tokenization and ONNX Runtime helpers. pip's output goes to
build/peers/<stack>/install.log; a failure is returned as a message, never raised, so the other contenders
still run.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.peers.stacks import Stack
from benchmarks.workload import REPO

SHARED = ("onnxruntime", "tokenizers", "numpy")  # pinned to the benchmark's own versions
INSTALL_TIMEOUT_S = 1800


def requirements(stack: Stack) -> list[str]:
    return [*stack.requirements, *(f"{name}=={importlib.metadata.version(name)}" for name in SHARED)]


def base_python() -> str:
    """The interpreter peers' environments are made from: the one the benchmark runs on (its base)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure(stack: Stack, root: Path) -> tuple[Path | None, str]:
    """(the venv's python, "") when the environment is ready, else (None, why not)."""
    home = root / stack.venv
    venv, log_path = home / "venv", home / "install.log"
    python = venv / "bin" / "python"
    stamp = venv / "peer-requirements.json"
    want = {"python": base_python(), "requirements": requirements(stack), "repo": str(REPO)}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and python.exists():
        return python, ""
    shutil.rmtree(venv, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    steps = [[want["python"], "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *want["requirements"]],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
              "-e", str(REPO)]]
    with open(log_path, "w") as log:
        for argv in steps:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False,
                                      timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return None, f"install timed out after {INSTALL_TIMEOUT_S} s ({' '.join(argv[3:])}); log {log_path}"
            if done.returncode != 0:
                return None, f"install failed: {install_error(log_path.read_text())} (log {log_path})"
    stamp.write_text(json.dumps(want, indent=2) + "\n")
    return python, ""


def install_error(log: str) -> str:
    """The lines of a pip log that say what went wrong (pip's index warnings are noise)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()
             and not line.startswith(("WARNING: Location", "$ "))]
    errors = [line for line in lines if line.startswith("ERROR")]
    return " / ".join(line[:240] for line in (errors or lines or ["no output"])[-3:])


def versions(python: Path, names: list[str]) -> dict[str, str]:
    """Installed versions of `names` in the environment of `python` (what actually ran)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = 'missing'\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {n: "unknown" for n in names}
