"""Start a contender (encoder-serve or the naive baseline) as a subprocess pinned to the server cores.

tests/live_server.py does the same for tests; benchmarks also need the CPU pinning, the process id for
CPU accounting and py-spy, and an arbitrary command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from benchmarks.machine import taskset


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Contender:
    """One server configuration in the comparison."""
    name: str
    module: str  # run as `python -m module`
    env: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    batching: bool = True
    kind: str = "service"  # service | naive | service-multi (several texts per request; not in the goals)
    texts_per_request: int = 1


class RunningServer:
    def __init__(self, contender: Contender, cpus: tuple[int, ...], log_path: Path, startup_timeout=120.0):
        self.contender = contender
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **contender.env}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (the server writes to it until stop())
        self.process = subprocess.Popen(taskset(cpus, [sys.executable, "-m", contender.module]), env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(startup_timeout)

    @property
    def pid(self) -> int:
        return self.process.pid  # taskset execs the command, so this is the server's own pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.contender.name} exited with code {self.process.returncode} during "
                                   f"start-up; log {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.contender.name} not ready within {timeout}s; log {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
