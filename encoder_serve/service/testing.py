"""Start real servers on real ports, for tests, benchmarks and load suites (standard library only).

    with LiveServer("models/emotion", env={"MAX_BATCH_SIZE": "32"}) as server:
        httpx.post(server.url + "/v1/classify", json={"inputs": "hello"})

`LiveServer` runs the service as a container would (`python -m encoder_serve.service`, configured through
the environment only) on free ports, waits for /readyz, and stops it with SIGTERM. `ServerProcess` does
the same for any HTTP server command (the benchmark's baselines and peers), optionally pinned to CPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ServerProcess:
    """An HTTP server command in a subprocess, ready once GET `ready_path` answers 200."""

    def __init__(self, command: Sequence[str], port: int, env: dict[str, str] | None = None,
                 ready_path: str = "/readyz", cpus: Sequence[int] | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 60.0, name: str | None = None):
        self.command = [*(["taskset", "-c", ",".join(map(str, cpus))] if cpus else []), *command]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.name = name or " ".join(command)
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int:
        return self.process.pid  # taskset execs the command, so this is the server's own pid

    def start(self) -> Self:
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log or subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = f"; log {self.log_path}:\n{self.log_path.read_text()[-3000:]}" if self.log_path else ""
                self.stop()
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode} during start-up{log}")
            if answers(self.url + self.ready_path):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready within {self.startup_timeout} s at {self.url}")

    def log_lines(self, containing: str, timeout: float = 5.0) -> list[str]:
        """The log's lines that contain `containing`, waiting up to `timeout` s for at least one (the
        service writes its access lines at most 0.1 s after the request, see logs.AccessLog)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log_path.read_text().splitlines() if containing in line]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def terminate(self) -> None:
        """Send SIGTERM (graceful drain) without waiting."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class LiveServer(ServerProcess):
    """The service on `package_dir`, on free ports (PORT and OPS_PORT), configured by `env`."""

    def __init__(self, package_dir: str | Path, env: dict[str, str] | None = None, port: int | None = None,
                 startup_timeout: float = 60.0, log_path: str | Path | None = None,
                 cpus: Sequence[int] | None = None, python: str = sys.executable):
        port = port or free_port()
        settings = {"MODEL_DIR": str(package_dir), "HOST": "127.0.0.1", "PORT": str(port),
                    "OPS_PORT": str(free_port()), "ORT_INTRA_OP_THREADS": "1", "LOG_LEVEL": "warning", **(env or {})}
        super().__init__([python, "-m", "encoder_serve.service"], port, settings, cpus=cpus, log_path=log_path,
                         startup_timeout=startup_timeout, name="encoder-serve")
        self.package_dir = Path(package_dir)
        self.ops_url = f"http://127.0.0.1:{settings['OPS_PORT']}"
