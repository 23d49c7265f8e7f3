"""JSON logs: one object per line, the request id attached to everything logged while serving a request."""

from __future__ import annotations

import asyncio
import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

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
    path"). So where logging is ours (`log_config`'s JsonStdout
    handler), lines are gathered and written to standard output as nginx's buffered access log does: in
    whole lines, at most PIPE_BUF bytes per write (so that two workers' writes to one pipe never interleave
    within a line), at the latest `flush_s` after the first line of a chunk, and at shutdown. Anywhere else
    (the app under another server or test harness) each line goes through the logging module as before."""

    def __init__(self, flush_s: float = 0.1):
        self.logger = logging.getLogger("encoder_serve.access")
        self.flush_s = flush_s
        self._chunk: list[bytes] = []
        self._size = 0
        self._timer: Any = None
        self._stream: Any = None  # our handler's stream, once `write` has found it

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        if self._stream is None:
            self._stream = next((h.stream for h in logging.getLogger().handlers if isinstance(h, JsonStdout)), False)
        if not self._stream or self.logger.handlers or not self.logger.propagate:
            self.logger.info("request", extra={"fields": fields})
            return
        entry: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": "info",
                                 "logger": self.logger.name, "msg": "request"}
        rid, tid = request_id.get(), trace_id.get()
        if rid:
            entry["request_id"] = rid
        if tid:
            entry["trace_id"] = tid
        entry.update(fields)
        line = orjson.dumps(entry) + b"\n"
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
        """Write what is gathered now (one write), in order with what the logging module wrote before."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._chunk:
            return
        chunk, self._chunk, self._size = b"".join(self._chunk), [], 0
        try:
            self._stream.flush()
            os.write(self._stream.fileno(), chunk)
        except (OSError, ValueError):  # standard output closed or not a file: the lines are lost, as logging would
            pass


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
