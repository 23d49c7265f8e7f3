"""The contenders of the benchmark (encoder-serve configurations, the naive baseline), started with the
same launcher the tests use (encoder_serve.service.testing), pinned to the server cores."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from encoder_serve.service.testing import ServerProcess, free_port


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


def serve(contender: Contender, cpus: tuple[int, ...], log_path: Path, startup_timeout: float = 120.0
          ) -> ServerProcess:
    """`contender` started on free ports, pinned to `cpus`, logging to `log_path`, ready."""
    port = free_port()
    env = {"HOST": "127.0.0.1", "PORT": str(port), "OPS_PORT": str(free_port()), **contender.env}
    return ServerProcess([sys.executable, "-m", contender.module], port, env, cpus=cpus, log_path=log_path,
                         startup_timeout=startup_timeout, name=contender.name).start()
