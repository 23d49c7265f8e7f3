"""`python -m encoder_serve.service`: validate the settings and the package, then run uvicorn.

Everything is checked here, in the launcher, before any worker starts: a bad variable or a package that
cannot be served stops the process with one clear message and exit code 2. With several workers the
launcher also owns the Prometheus multiprocess directory: it prepares it empty and removes it at exit.
"""

from __future__ import annotations

import logging.config
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from encoder_serve.package import PackageError, load_package
from encoder_serve.service.backend import choose_precision
from encoder_serve.service.logs import log_config
from encoder_serve.service.settings import Settings, load_settings

APP = "encoder_serve.service.app:create_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
        for stale in path.glob("*.db"):
            stale.unlink()
        return None
    if workers == 1:
        return None
    path = Path(tempfile.mkdtemp(prefix="encoder-serve-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def serve(settings: Settings) -> int:
    import uvicorn

    logging.config.dictConfig(log_config(settings.log_level))
    created = prepare_metrics_dir(settings.workers)
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that a clean exit, not death by signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(APP, factory=True, host=settings.host, port=settings.port, workers=settings.workers,
                    loop="uvloop", http="httptools", lifespan="on", log_config=log_config(settings.log_level),
                    access_log=False, server_header=False, timeout_keep_alive=30)
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
