"""`python -m encoder_serve.service`: validate the settings and the package, then run the HTTP server.

Everything is checked here, in the launcher, before any worker starts: a bad variable or a package that
cannot be served stops the process with one clear message and exit code 2. With several workers the
launcher also owns the Prometheus multiprocess directory: it prepares it empty and removes it at exit.

The HTTP server is Granian (Rust: connections, HTTP parsing and writing happen outside the Python event
loop, which runs the application only). Under a flood of connections it stays fair to new ones, where
uvicorn's accept path left a new connection waiting seconds (docs/reliability.md); in steady state the two
are on par (docs/benchmarks.md). The launcher process supervises the worker processes; each worker loads
its own model.
"""

from __future__ import annotations

import logging.config
import math
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

from encoder_serve.package import PackageError, load_package
from encoder_serve.service.backend import choose_precision
from encoder_serve.service.logs import log_config
from encoder_serve.service.settings import Settings, load_settings

# Nothing imported here may import prometheus_client: it reads PROMETHEUS_MULTIPROC_DIR once, when imported,
# and the workers fork from this process after prepare_metrics_dir has set it.
APP = "encoder_serve.service.app:create_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROOT_PID_ENV = "ENCODER_SERVE_ROOT_PID"
STALE_METRICS = ("*.db", "exemplars_*.json")  # prometheus_client's samples, metrics.SharedExemplars' files
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"  # read by the tokenizers library when it first batches
KILL_MARGIN_S = 5  # after SIGTERM, a worker gets REQUEST_TIMEOUT_S plus this to finish, then it is killed
LISTEN_BACKLOG = 4096  # connections the kernel holds until a worker accepts them (net.core.somaxconn caps it)
FILES_PER_WORKER = 256  # descriptors a worker needs besides its connections (model, metrics, logs, sockets)

log = logging.getLogger("encoder_serve.service")


def raise_open_files_limit(settings: Settings) -> None:
    """Every connection is a file descriptor: lift the soft limit to the hard one (as nginx's
    worker_rlimit_nofile does), and say so when even that is short of MAX_CONNECTIONS per worker."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = settings.workers * (settings.max_connections + FILES_PER_WORKER)
    if hard != resource.RLIM_INFINITY and hard < needed:
        log.warning("open-file limit %d is below the %d that %d workers x MAX_CONNECTIONS (%d) need: raise "
                    "`ulimit -n` or lower MAX_CONNECTIONS", hard, needed, settings.workers, settings.max_connections)


def preflight() -> Settings:
    """The settings, once the package they name is known to load and the precision to be servable."""
    settings = load_settings()
    choose_precision(load_package(settings.model_dir), settings.precision)
    return settings


def prepare_metrics_dir(workers: int) -> Path | None:
    """An empty multiprocess directory when there are several workers; returns one to delete at exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:  # the operator chose it: empty it of a previous run's samples, keep the directory
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for pattern in STALE_METRICS:
            for stale in path.glob(pattern):
                stale.unlink()
        return None
    if workers == 1:
        return None
    path = Path(tempfile.mkdtemp(prefix="encoder-serve-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def sequential_tokenizer() -> None:
    """TOKENIZERS_PARALLELISM=false unless the operator set it: the service already runs a worker per CPU,
    and the tokenizer's own thread pool in each of them (the library's default) took more CPU per text than
    the event loop saves by handing it the work (docs/benchmarks.md, "Where the CPU goes")."""
    os.environ.setdefault(TOKENIZERS_PARALLELISM, "false")


def serve(settings: Settings) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    logging.config.dictConfig(log_config(settings.log_level))
    created = prepare_metrics_dir(settings.workers)
    sequential_tokenizer()
    raise_open_files_limit(settings)
    os.environ[ROOT_PID_ENV] = str(os.getpid())  # the workers report CPU and memory from this process down
    try:
        Granian(APP, address=settings.host, port=settings.port, interface=Interfaces.ASGI, workers=settings.workers,
                loop=Loops.uvloop, factory=True, websockets=False, log_dictconfig=log_config(settings.log_level),
                backlog=LISTEN_BACKLOG,
                # Granian's backpressure is a permit per open connection, held until the connection
                # closes: a flood's keep-alive connections exhausted a cap sized for requests, and the
                # connections past it waited in the backlog, their requests unanswered for tens of seconds
                backpressure=settings.max_connections,
                # a worker still starting when SIGTERM comes never hears of it (Granian's worker loses the
                # signal during the ASGI lifespan start-up): after the longest a request may take, plus a
                # margin, the launcher kills what is left instead of waiting for it for ever
                workers_kill_timeout=math.ceil(settings.request_timeout_s) + KILL_MARGIN_S).serve()
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    return 0


def main() -> int:
    try:
        settings = preflight()
    except (ValueError, PackageError) as e:
        print(f"encoder-serve: cannot start: {e}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
