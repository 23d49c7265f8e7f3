"""JSON logs: one object per line, the request id attached to everything logged while serving a request."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from encoder_serve.service.threads import named

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)  # when the request is traced


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        tid = trace_id.get()
        if tid:
            entry["trace_id"] = tid
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class JsonStdout(logging.StreamHandler):
    """The handler `log_config` installs: JSON lines to standard output. `AccessLog` writes beside it."""


PIPE_BUF = 4096  # POSIX: a write of at most this many bytes to a pipe is never interleaved with another's


class AccessLog:
    """One JSON line per request, the shape `JsonFormatter` gives (logger encoder_serve.access, level info).

    Through the logging module a line cost 15 us of the event loop and a write(2) per request, which lets go
    of the GIL and waits to get it back behind the model thread: in-process, with standard output a pipe,
    about 90 us per request, a third of the rest of a request's Python (docs/benchmarks.md, "The request
    path"). So where logging is ours (`log_config`'s JsonStdout handler), lines are gathered as nginx's
    buffered access log does and written in whole lines, at most PIPE_BUF bytes per write (so that two
    workers' writes to one pipe never interleave within a line), at the latest `flush_s` after the first
    line of a chunk, and at shutdown. The writes happen on a thread of their own: a reader of standard output
    that stops reading (a full pipe) stalls that thread, never the event loop, so probes and requests go on
    being answered. While it is stalled, chunks wait up to `backlog_bytes`; lines beyond that are dropped,
    counted by `dropped(n)` (the service's log_lines_dropped_total) and reported in a warning line once
    standard output takes lines again. Anywhere else (the app under another server or test harness) each line
    goes through the logging module as before."""

    def __init__(self, flush_s: float = 0.1, backlog_bytes: int = 1 << 20,
                 dropped: Callable[[int], None] | None = None):
        self.logger = logging.getLogger("encoder_serve.access")
        self.flush_s = flush_s
        self.backlog_bytes = backlog_bytes
        self.dropped = dropped
        self._chunk: list[bytes] = []
        self._size = 0
        self._timer: Any = None
        self._fd: int | bool | None = None  # our handler's file descriptor, once `write` has found it
        self._lost = 0  # lines dropped since the last chunk that was handed on
        self._pending = 0  # bytes handed to the writer thread and not written yet
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        if self._fd is None:
            self._fd = self._our_descriptor()
        if self._fd is False or self.logger.handlers or not self.logger.propagate:
            self.logger.info("request", extra={"fields": fields})
            return
        ids = {}
        rid, tid = request_id.get(), trace_id.get()
        if rid:
            ids["request_id"] = rid
        if tid:
            ids["trace_id"] = tid
        line = self._line("info", "request", {**ids, **fields})
        if self._size + len(line) > PIPE_BUF:
            self.flush()
        self._chunk.append(line)
        self._size += len(line)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()

    def flush(self) -> None:
        """Hand what is gathered to the writer thread (one write), or drop it if the backlog is full."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._chunk:
            return
        lines, chunk, self._chunk, self._size = len(self._chunk), b"".join(self._chunk), [], 0
        chunks = [chunk]
        if self._lost:  # its own write: each stays within PIPE_BUF
            chunks.insert(0, self._line("warning", f"{self._lost} access lines dropped: standard output did not "
                                        "take them", {"dropped": self._lost}))
        size = sum(map(len, chunks))
        with self._lock:
            full = self._pending + size > self.backlog_bytes
            if not full:
                self._pending += size
        if full:
            self._lost += lines
            if self.dropped is not None:
                self.dropped(lines)
            return
        self._lost = 0
        if self._writer is None:
            self._writer = threading.Thread(target=named("access-log", self._write_chunks), args=(self._fd,),
                                            name="access-log", daemon=True)
            self._writer.start()
        for chunk in chunks:
            self._queue.put(chunk)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is gathered and wait up to `timeout` s for it (a stalled reader must not hold up exit)."""
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            if not self._writer.is_alive():  # else it is stalled: leave it, the process is ending
                self._writer = None

    def _line(self, level: str, msg: str, fields: dict[str, Any]) -> bytes:
        """One JSON line in `JsonFormatter`'s shape."""
        return orjson.dumps({"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level,
                             "logger": self.logger.name, "msg": msg, **fields}) + b"\n"

    @staticmethod
    def _our_descriptor() -> int | bool:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, JsonStdout):
                try:
                    return handler.stream.fileno()
                except (OSError, ValueError):  # not a file (a test's captured output)
                    return False
        return False

    def _write_chunks(self, fd: int) -> None:
        while (chunk := self._queue.get()) is not None:
            view = memoryview(chunk)
            try:
                while view:  # a pipe takes a chunk of at most PIPE_BUF whole; a file may take less
                    view = view[os.write(fd, view):]
            except OSError:  # standard output closed: the lines are lost, as logging's would be
                pass
            with self._lock:
                self._pending -= len(chunk)


def log_config(level: str) -> dict[str, Any]:
    """A logging.dictConfig for the launcher and every worker: JSON to stdout, the HTTP server's own logs
    included, and no server access log (our middleware writes one richer line per request instead)."""
    handler = {"class": f"{__name__}.JsonStdout", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": handler},
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }
