"""Slow and broken clients: they must neither block other clients nor be computed for nothing.

- A client that will give up soon (X-Request-Timeout-Ms) and hangs up, behind a backlog longer than its
  deadline: it is answered 504 at once and none of its texts is computed; the model computes exactly the
  texts of the clients that stayed. (A disconnect itself is not seen while a request is in progress, so the
  deadline is how a client says when its answer stops being useful.)
- Clients that trickle their body a byte at a time (slowloris) or hold many idle connections open (more
  than a worker's old connection cap): other clients are served as usual meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time

import httpx
import pytest

from tests.prometheus import sample, scrape

from .conftest import start
from .http1 import Connection, build_request
from .loadgen import classify_requests, run
from .probe import record

FLOOD_REQUESTS, FLOOD_TEXTS, VICTIMS = 40, 64, 20


@pytest.fixture(scope="module")
def backlogged_server(model_dir, tmp_path_factory):
    """One text per model call, a long deadline and no queue-delay bound: a flood builds a backlog of seconds."""
    live = start(model_dir, tmp_path_factory.mktemp("backlogged"), WORKERS="1", MAX_BATCH_SIZE="1",
                 MAX_INPUTS_PER_REQUEST=str(FLOOD_TEXTS), MAX_QUEUE_SIZE="100000", REQUEST_TIMEOUT_S="300",
                 MAX_QUEUE_DELAY_MS="0")  # no admission by time: the backlog is the point
    yield live
    live.stop()


def test_clients_that_will_give_up_are_not_computed_for(backlogged_server, texts):
    url = backlogged_server.url
    host, port = "127.0.0.1", backlogged_server.port
    flood = classify_requests(texts, FLOOD_TEXTS, count=FLOOD_REQUESTS)
    victim = build_request("POST", "/v1/classify", json.dumps({"inputs": [texts[-1]]}).encode(),
                           headers={"X-Request-Timeout-Ms": "200"})
    before = scrape(url)

    async def scenario():
        conns = [await Connection.open(host, port) for _ in flood]
        pending = [asyncio.create_task(c.send(r, timeout=300)) for c, r in zip(conns, flood)]
        queued = 0.0
        for _ in range(600):  # wait (at most ~60 s) until the backlog is far longer than the victims' deadline
            queued = sample(await asyncio.to_thread(scrape, url), "encoder_serve_queue_depth")
            if queued >= FLOOD_REQUESTS * FLOOD_TEXTS / 2:
                break
            await asyncio.sleep(0.1)
        victims = []
        for _ in range(VICTIMS):  # send a request that may take 200 ms, take the answer, hang up
            conn = await Connection.open(host, port)
            victims.append(await conn.send(victim, timeout=30))
            conn.close()
        queued_after_victims = sample(await asyncio.to_thread(scrape, url), "encoder_serve_queue_depth")
        return await asyncio.gather(*pending), victims, queued, queued_after_victims

    outcomes, victims, queued, queued_after_victims = run(scenario())
    after = scrape(url)

    assert queued_after_victims > FLOOD_REQUESTS * FLOOD_TEXTS / 4, "the backlog drained before the victims left"
    assert [o.status for o in outcomes] == [200] * FLOOD_REQUESTS
    timeouts = sample(after, "encoder_serve_timeouts_total") - sample(before, "encoder_serve_timeouts_total")
    computed = sample(after, "encoder_serve_batch_size_sum") - sample(before, "encoder_serve_batch_size_sum")
    record("abandoned", {"flood_texts": FLOOD_REQUESTS * FLOOD_TEXTS, "queue_depth_when_victims_sent": queued,
                         "victims": VICTIMS, "victim_statuses": sorted({o.status for o in victims}),
                         "victim_seconds_max": round(max(o.latency for o in victims), 3), "timeouts": timeouts,
                         "texts_computed": computed})
    assert [o.status for o in victims] == [504] * VICTIMS
    # answered at once, from the work queued ahead, not after waiting in the queue for its deadline (timing
    # is not asserted: a busy machine can delay any answer by 200 ms)
    messages = [json.loads(o.body)["error"]["message"] for o in victims]
    assert all("s of work queued, more than this request's deadline of 0.200 s" in m for m in messages), messages
    assert timeouts == VICTIMS
    assert computed == FLOOD_REQUESTS * FLOOD_TEXTS


async def trickle(host: str, port: int, stop: asyncio.Event, head_only: bool) -> None:
    """A slowloris client: a request whose headers (or body) arrive one byte every 100 ms, for ever."""
    raw = build_request("POST", "/v1/classify", json.dumps({"inputs": "slow " * 200}).encode())
    _reader, writer = await asyncio.open_connection(host, port)
    start_at = 0 if head_only else raw.index(b"\r\n\r\n") + 4
    writer.write(raw[:start_at])
    try:
        for i in range(start_at, len(raw)):
            if stop.is_set():
                break
            writer.write(raw[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0.1)
    except ConnectionError:
        pass  # the server may hang up on a client this slow; that is allowed
    finally:
        writer.close()


async def served_while(url: str, hogs, count: int) -> list[int]:
    """Open the hogging connections, then send `count` ordinary requests; returns their statuses."""
    stop = asyncio.Event()
    hog_tasks = [asyncio.create_task(h(stop)) for h in hogs]
    await asyncio.sleep(1.0)  # every hog is connected and holding its connection
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        statuses = [(await client.post("/v1/classify", json={"inputs": [f"ordinary request {i}"]})).status_code
                    for i in range(count)]
    stop.set()
    await asyncio.gather(*hog_tasks, return_exceptions=True)
    return statuses


def test_slow_bodies_and_slow_headers_do_not_block_other_clients(server):
    host, port = "127.0.0.1", server.port
    hogs = [lambda stop, h=(i % 2 == 0): trickle(host, port, stop, head_only=h) for i in range(100)]
    started = time.monotonic()
    statuses = run(served_while(server.url, hogs, count=50))
    record("slowloris", {"slow_connections": len(hogs), "ordinary_requests": len(statuses),
                         "ordinary_ok": statuses.count(200), "seconds": round(time.monotonic() - started, 1)})
    assert statuses == [200] * 50
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_many_idle_connections_do_not_block_other_clients(model_dir, tmp_path):
    """One worker and 2,000 idle connections: more than the HTTP server would accept when its connection
    cap was sized for requests (1,024), as keep-alive pools under a flood hold them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    idle = 2000
    if soft < idle + 256:  # this process holds the client side of every connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle + 1024), hard))
    server = start(model_dir, tmp_path, WORKERS="1")
    host, port = "127.0.0.1", server.port

    async def hold(stop: asyncio.Event) -> None:
        _reader, writer = await asyncio.open_connection(host, port)
        await stop.wait()
        writer.close()

    try:
        statuses = run(served_while(server.url, [hold] * idle, count=50))
    finally:
        server.stop()
    record("idle_connections", {"idle_connections": idle, "ordinary_requests": len(statuses),
                                "ordinary_ok": statuses.count(200)})
    assert statuses == [200] * 50
