"""Start the real service (uvicorn on a real port, in a subprocess) for tests, benchmarks and load suites.

    with LiveServer(package_dir, env={"MAX_BATCH_SIZE": "32"}) as server:
        httpx.post(server.url + "/v1/classify", json={"inputs": "hello"})

The service is configured through the environment only (the same variables a container gets) and started
as `python -m encoder_serve.service`; the context manager waits for /readyz and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, package_dir: str | Path, env: dict[str, str] | None = None, port: int | None = None,
                 startup_timeout: float = 60.0, log_path: str | Path | None = None):
        self.package_dir = Path(package_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MODEL_DIR": str(self.package_dir), "HOST": "127.0.0.1",
                    "PORT": str(self.port), "ORT_INTRA_OP_THREADS": "1", "LOG_LEVEL": "warning",
                    **(env or {})}
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> LiveServer:
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([sys.executable, "-m", "encoder_serve.service"], env=self.env,
                                        stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with code {self.process.returncode} during start-up"
                                   + (f"; log: {self.log_path.read_text()[-3000:]}" if self.log_path else ""))
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"service not ready within {self.startup_timeout}s at {self.url}")

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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
