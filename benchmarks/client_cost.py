"""Why wrk: the CPU each candidate load generator spends per request, against the same running service.

    python -m benchmarks.client_cost --package models/emotion [--concurrency 32] [--seconds 5]

Each client runs closed-loop on the client core for the same time and we divide its CPU time (user +
system) by the requests it completed. On a 2-core machine a client that costs as much CPU per request as
the server's HTTP path would cap what we can measure, so the cheapest honest client wins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loadgen import measure_point
from benchmarks.machine import CoreSplit
from benchmarks.servers import Contender, serve
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies


async def closed_loop(send, concurrency: int, seconds: float) -> int:
    """`concurrency` workers, each awaiting `send(i)` back to back until time is up; returns requests."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        while time.monotonic() < end:
            await send(i + done)
            done += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done


async def raw_asyncio(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> int:
    """HTTP/1.1 keep-alive over asyncio streams, hand-written: the cheapest Python client."""
    pool = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    free = list(range(concurrency))

    async def send(i: int) -> None:
        reader, writer = pool[slot := free.pop()]
        body = bodies[i % len(bodies)]
        writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        free.append(slot)

    try:
        return await closed_loop(send, concurrency, seconds)
    finally:
        for _, writer in pool:
            writer.close()


async def aiohttp_client(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> int:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/classify"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def send(i: int) -> None:
            async with session.post(url, data=bodies[i % len(bodies)],
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
        return await closed_loop(send, concurrency, seconds)


async def httpx_client(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> int:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/classify"
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        async def send(i: int) -> None:
            await client.post(url, content=bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
        return await closed_loop(send, concurrency, seconds)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    split = CoreSplit.default()
    texts = load_texts(DEFAULT_DATA)
    bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    env = {"MODEL_DIR": args.package, "PRECISION": "fp32", "ORT_INTRA_OP_THREADS": str(split.threads),
           "LOG_LEVEL": "warning", "API_KEY": ""}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            serve(Contender("encoder-serve", "encoder_serve.service", env), split.server,
                          Path(tmp) / "server.log") as server:
        point = measure_point(server.url, server.pid, write_bodies(texts, Path(tmp) / "bodies.txt"),
                              args.concurrency, args.seconds, 1, split.client, split.server)
        rows.append(("wrk + wrk_rotate.lua", point.client_cpu_us_per_request, point.throughput))
        os.sched_setaffinity(0, split.client)  # the Python clients get the same core wrk had
        for name, client in (("Python asyncio streams, hand-written HTTP/1.1", raw_asyncio),
                             ("Python aiohttp", aiohttp_client), ("Python httpx (async)", httpx_client)):
            asyncio.run(client(server.port, bodies, args.concurrency, 1))  # warm-up
            cpu, start = cpu_seconds(), time.monotonic()
            n = asyncio.run(client(server.port, bodies, args.concurrency, args.seconds))
            rows.append((name, (cpu_seconds() - cpu) / n * 1e6, n / (time.monotonic() - start)))
    print(f"| client ({args.concurrency} connections, {args.seconds} s) | client CPU per request | requests/s |")
    print("| --- | ---: | ---: |")
    for name, us, rps in rows:
        print(f"| {name} | {us:,.0f} us | {rps:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
