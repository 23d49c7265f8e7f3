"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load and fault tests.

Why not httpx or wrk: the load suites must offer hundreds of requests per second from the same two cores
the service runs on, on a fixed schedule (open loop, which wrk does not do), and must tell apart exactly
what happened to each request -- refused at connect, dropped before any response byte, or cut in the
middle of one -- together with the instant its last byte was written (the drain test compares that
instant with the moment SIGTERM was sent). A bare client on asyncio streams is cheap enough for the
first and transparent enough for the second. It speaks real HTTP/1.1 over real TCP to the real service;
functional tests use httpx, the benchmarks wrk.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What happened to one request. `status` is None when no complete response came back."""

    status: int | None = None
    error: str | None = None  # "refused" | "no_response" | "cut" | "timeout"
    detail: str = ""  # the exception behind `error`
    sent_at: float | None = None  # time.monotonic() when the last request byte was written
    done_at: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def latency(self) -> float | None:
        return None if self.sent_at is None else self.done_at - self.sent_at


def build_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    merged = {"Content-Type": "application/json", **(headers or {})}
    lines += [f"{k}: {v}" for k, v in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One persistent connection; `send` writes a request and reads its response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    async def send(self, raw_request: bytes, timeout: float = 60.0) -> Outcome:
        outcome = Outcome()
        try:
            self.writer.write(raw_request)
            await self.writer.drain()
            outcome.sent_at = time.monotonic()
            await asyncio.wait_for(self._read_response(outcome), timeout)
        except TimeoutError:
            outcome.error = "timeout"
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            outcome.error = "cut" if outcome.status is not None else "no_response"
            outcome.status = None
        outcome.done_at = time.monotonic()
        if outcome.error or outcome.headers.get("connection", "").lower() == "close":
            self.close()
        return outcome

    async def _read_response(self, outcome: Outcome) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        outcome.status = int(status_line.split(" ", 2)[1])  # a partial read after this point is a cut
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                outcome.headers[name.strip().lower()] = value.strip()
        if outcome.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size + 2))
            await self.reader.readuntil(b"\r\n")
            outcome.body = b"".join(c[:-2] for c in chunks)
        else:
            outcome.body = await self.reader.readexactly(int(outcome.headers.get("content-length", "0")))


async def request_once(host: str, port: int, raw_request: bytes, timeout: float = 60.0) -> Outcome:
    """One request on a fresh connection, closed afterwards; a refused connect is an Outcome, not a raise."""
    try:
        conn = await Connection.open(host, port)
    except OSError:
        return Outcome(error="refused", done_at=time.monotonic())
    try:
        return await conn.send(raw_request, timeout)
    finally:
        conn.close()
