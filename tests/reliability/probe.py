"""What the suites observe about the service from outside: its memory and their results files.

Resident memory is read from /proc for the server process and every process under it (the server's workers
included); /metrics is read through tests.prometheus.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from encoder_serve.service.metrics import process_tree

# Every run writes its numbers here (git-ignored); the run quoted in docs/reliability.md was written to
# tests/reliability/results with RELIABILITY_RESULTS set, and committed.
RESULTS_DIR = Path(os.environ.get("RELIABILITY_RESULTS", Path(__file__).resolve().parents[2] / "build" / "reliability"))


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler:
    """Samples the resident memory of a process tree in a background thread: `with RssSampler(pid) as s`."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(v for _, v in self.samples)

    def between(self, start: float, end: float) -> list[int]:
        return [v for t, v in self.samples if start <= t < end]


def record(name: str, result: dict) -> Path:
    """Write one suite's numbers to RESULTS_DIR/<name>.json, stamped with the date and the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    stamp = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    path.write_text(json.dumps({**stamp, **result}, indent=2) + "\n")
    return path


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {cpu}; load average when recorded: {load}"
