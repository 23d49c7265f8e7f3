"""Load patterns over `http1`: closed loop (to measure capacity) and open loop (to offer a fixed rate).

Closed loop: N connections each send their next request as soon as the previous answer arrives; what comes
back per second is the service's capacity at that concurrency. Open loop: requests start on a fixed
schedule whatever the service does, the way real traffic arrives; a service that slows down faces a
growing backlog instead of a politely waiting client. Requests the client could not start because every
connection it may open is busy are counted as `not_offered`, so a result always says what was really
offered.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .http1 import Connection, Outcome, build_request


def run(coro):
    """Run a coroutine on uvloop when installed (it is, with the serve extra): more load per core. The
    client's own garbage collector stays out of the measurement: by the time the overload and soak tests
    run, this process holds a test session's heap (fuzzing included), and a full collection of it stopped
    the client for up to 0.9 s, in which it neither sent nor read, then sent what it owed in one burst. So
    the heap is frozen and collection is off while the load runs (its garbage is nearly all freed by
    reference counting), and both come back after."""
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    finally:
        gc.enable()
        gc.unfreeze()


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    started: float
    duration: float
    not_offered: int = 0
    client_lags: list[float] | None = None  # open loop: how late the client's own loop woke, each millisecond

    def count(self) -> Counter:
        return Counter(o.status if o.status is not None else o.error for o in self.outcomes)

    def ok_per_second(self, start: float | None = None, end: float | None = None) -> float:
        start = self.started if start is None else start
        end = self.started + self.duration if end is None else end
        return sum(1 for o in self.outcomes if o.status == 200 and start <= o.done_at < end) / (end - start)

    def goodput(self) -> float:
        """200s per second of the window, counting the requests sent in it (an answer that comes after the
        window counts; a straggler does not stretch the window)."""
        end = self.started + self.duration
        return sum(1 for o in self.outcomes if o.status == 200 and o.sent_at is not None
                   and self.started <= o.sent_at < end) / self.duration

    def latencies(self, start: float | None = None, end: float | None = None) -> list[float]:
        start = self.started if start is None else start
        end = float("inf") if end is None else end
        return sorted(o.latency for o in self.outcomes
                      if o.status == 200 and o.latency is not None and start <= o.sent_at < end)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def closed_loop(host: str, port: int, requests: Sequence[bytes], connections: int,
                      duration: float, timeout: float = 60.0) -> LoadResult:
    """`connections` clients, each sending back to back for `duration` seconds."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    deadline = started + duration
    cycle = itertools.cycle(requests)

    async def client() -> None:
        conn = None
        while time.monotonic() < deadline:
            if conn is None or not conn.usable:
                try:
                    conn = await Connection.open(host, port)
                except OSError:
                    outcomes.append(Outcome(error="refused", done_at=time.monotonic()))
                    await asyncio.sleep(0.05)
                    continue
            outcomes.append(await conn.send(next(cycle), timeout))
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return LoadResult(outcomes, started, time.monotonic() - started)


async def open_loop(host: str, port: int, requests: Sequence[bytes], rate: float, duration: float,
                    max_connections: int = 512, timeout: float = 60.0) -> LoadResult:
    """Start `rate` requests per second for `duration` seconds, on up to `max_connections` connections."""
    outcomes: list[Outcome] = []
    idle: list[Connection] = []
    open_count = 0
    not_offered = 0
    cycle = itertools.cycle(requests)
    tasks: set[asyncio.Task] = set()
    lags: list[float] = []

    async def one(raw: bytes) -> None:
        nonlocal open_count, not_offered
        conn = None
        while idle and conn is None:
            conn = idle.pop()
            if not conn.usable:
                conn.close()
                conn, open_count = None, open_count - 1
        if conn is None:
            if open_count >= max_connections:
                not_offered += 1
                return
            open_count += 1  # counted before the await, so concurrent starts respect the cap
            try:
                conn = await Connection.open(host, port)
            except OSError:
                open_count -= 1
                outcomes.append(Outcome(error="refused", done_at=time.monotonic()))
                return
        outcomes.append(await conn.send(raw, timeout))
        if conn.usable:
            idle.append(conn)
        else:
            open_count -= 1

    started = time.monotonic()
    launched = 0
    while (now := time.monotonic()) < started + duration:
        for _ in range(int((now - started) * rate) - launched):
            launched += 1
            task = asyncio.create_task(one(next(cycle)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.001)
        lags.append(max(0.0, time.monotonic() - now - 0.001))
    if tasks:
        await asyncio.wait(tasks)
    for conn in idle:
        conn.close()
    return LoadResult(outcomes, started, duration, not_offered, sorted(lags))


def classify_requests(texts: Sequence[str], per_request: int, count: int = 256) -> list[bytes]:
    """`count` distinct /v1/classify requests of `per_request` real texts each, ready to send."""
    return [build_request("POST", "/v1/classify", json.dumps(
        {"inputs": [texts[(i * per_request + j) % len(texts)] for j in range(per_request)]}).encode())
        for i in range(count)]


def measure_capacity(port: int, requests: Sequence[bytes], connections: int = 32, seconds: float = 10.0,
                     warmup: float = 2.0) -> tuple[float, LoadResult]:
    """Successful requests per second in a closed loop of `connections`, after a discarded warm-up."""
    run(closed_loop("127.0.0.1", port, requests, connections, warmup))
    result = run(closed_loop("127.0.0.1", port, requests, connections, seconds))
    return result.ok_per_second(), result
