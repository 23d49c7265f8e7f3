"""Liveness, readiness and metrics that never wait behind inference.

Under a flood the event loop is busy reading, refusing and answering requests, and anything that waits
its turn there (a health probe, a Prometheus scrape) waits seconds: Kubernetes then takes a busy pod out
of its Service or restarts it, and its load moves to the other pods, which fail the same way. So the
operations port (OPS_PORT) is served by a small HTTP server on its own thread, outside the event loop:

    GET /healthz, /v2/health/live    liveness: 200 while the process can still serve, else 503
    GET /readyz,  /v2/health/ready   readiness: 200 once the model is loaded and warmed up, until drain
    GET /metrics                     the same exposition as the main port's /metrics

`LoopLag` measures how late the event loop runs what is due (event_loop_lag_seconds): how busy it is,
which the operations port, being off the loop, can report while it is; `GcPauses` times the garbage
collector's pauses (gc_pause_seconds), which stop everything.

Liveness means "the process can still serve", not "the event loop answered": the event loop has ticked
within STALL_S (a heartbeat it schedules every half second), the batcher's scheduler task is running, and
no model call has been running for longer than STUCK_S. Busy is alive; wedged is not. With several
workers each binds the port with SO_REUSEPORT, so a probe reaches one of them and hears about that one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from encoder_serve.service.threads import named

log = logging.getLogger("encoder_serve.probes")

STALL_S = 10.0  # event loop silent this long: not alive
STUCK_S = 120.0  # one model call running this long: not alive
HEARTBEAT_S = 0.5
LAG_TICK_S = 0.01  # the lag probe is due this often
LAG_TICKS = 32  # the lag is the largest of this many recent ticks (about a third of a second)
GC_REPORT_S = 1.0  # how often the collector's pauses go to the metrics


class LoopLag:
    """How late the event loop runs a callback that is due: what a request that has just arrived waits
    before the application sees it (the HTTP server hands each request to the loop as a callback), and the
    plainest sign that the Python side of a worker is saturated. A timer every LAG_TICK_S records how late
    it fired; `seconds` is the largest of the last LAG_TICKS, exported as event_loop_lag_seconds. Costs a
    hundred callbacks a second. (Added to the queued work at admission, it changed nothing measurable
    in the overload test, so admission does not use it.)"""

    def __init__(self, observe: Callable[[float], None] | None = None):
        self._samples: deque[float] = deque(maxlen=LAG_TICKS)
        self._observe = observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def seconds(self) -> float:
        return max(self._samples, default=0.0)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _schedule(self) -> None:
        self._due = self._loop.time() + LAG_TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        lag = max(0.0, self._loop.time() - self._due)
        self._samples.append(lag)
        if self._observe is not None:
            self._observe(self.seconds)
        self._schedule()


class GcPauses:
    """Every pause of the garbage collector, by generation (gc_pause_seconds): while it runs, the event
    loop and every Python thread stand still, so its pauses add straight to the answers' latency. Python's
    own gc.callbacks time each collection; the loop hands them to `observe` once a second. (Not from the
    callback itself: a collection can start inside prometheus_client while it holds its lock.)"""

    def __init__(self, observe: Callable[[int, float], None]):
        self._observe = observe
        self._started = 0.0
        self._pauses: deque[tuple[int, float]] = deque(maxlen=100_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        gc.callbacks.append(self._callback)
        self._loop = loop
        self._handle = loop.call_later(GC_REPORT_S, self.report)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.report()

    def report(self) -> None:
        while self._pauses:
            self._observe(*self._pauses.popleft())
        if self._handle is not None:
            self._handle = self._loop.call_later(GC_REPORT_S, self.report)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses.append((info["generation"], time.perf_counter() - self._started))


class Health:
    """What liveness and readiness mean, readable from any thread."""

    def __init__(self) -> None:
        self.loaded = False  # model loaded and warmed up
        self.draining = False
        self.last_beat = time.monotonic()
        self.scheduler_alive: Callable[[], bool] = lambda: True
        self.model_busy_since: Callable[[], float | None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._beat()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        if self._loop is not None:
            self._loop.call_later(HEARTBEAT_S, self._beat)

    def live(self) -> tuple[bool, str]:
        silent = time.monotonic() - self.last_beat
        if silent > STALL_S:
            return False, f"the event loop has not run for {silent:.1f} s"
        if not self.scheduler_alive():
            return False, "the batcher's scheduler task has stopped"
        busy_since = self.model_busy_since()
        if busy_since is not None and time.perf_counter() - busy_since > STUCK_S:
            return False, f"a model call has been running for {time.perf_counter() - busy_since:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down"
        if not self.loaded:
            return False, "model not loaded yet"
        return self.live()


def liveness_body(health: Health) -> tuple[int, dict]:
    live, why = health.live()
    return (200, {"status": "ok"}) if live else (503, error(why))


def readiness_body(health: Health, model: str) -> tuple[int, dict]:
    ready, why = health.ready()
    return (200, {"status": "ready", "model": model}) if ready else (503, error(why))


def error(message: str) -> dict:
    return {"error": {"type": "unavailable", "message": message}}


class OpsServer:
    """The operations port: a threaded HTTP server that answers without the event loop."""

    def __init__(self, host: str, port: int, health: Health, model: str,
                 metrics: Callable[[str | None], tuple[bytes, str]]):
        routes: dict[str, Callable[[str | None], tuple[int, bytes, str]]] = {
            "/healthz": lambda accept: as_json(*liveness_body(health)),
            "/readyz": lambda accept: as_json(*readiness_body(health, model)),
            "/v2/health/live": lambda accept: as_json(200 if health.live()[0] else 503, {"live": health.live()[0]}),
            "/v2/health/ready": lambda accept: as_json(200 if health.ready()[0] else 503,
                                                       {"ready": health.ready()[0]}),
            "/metrics": lambda accept: (200, *metrics(accept)),
        }

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "encoder-serve-ops"
            sys_version = ""

            def do_GET(self) -> None:
                answer = routes.get(self.path.partition("?")[0])
                status, body, content_type = answer(self.headers.get("accept")) if answer else as_json(404, error(
                    f"{self.path} is not an operations route (have {sorted(routes)})"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def server_bind(self) -> None:
                if hasattr(socket, "SO_REUSEPORT"):  # every worker binds the same port
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                super().server_bind()

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=named("ops-server", self.server.serve_forever),
                                       kwargs={"poll_interval": 0.5}, name="ops-server", daemon=True)

    def start(self) -> OpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def as_json(status: int, body: dict) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode(), "application/json"
