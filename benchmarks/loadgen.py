"""Closed-loop load with wrk: N connections, each sending one text per request and waiting for the answer.

Why wrk: it is C on epoll and costs a few microseconds of CPU per request, where a Python client
(asyncio, httpx, aiohttp) costs 50-200 us per request, as much as the server's own HTTP path; on a
2-core machine such a client would be the bottleneck it is supposed to measure. wrk records every
request's latency (closed loop: a new request starts only when the previous answer arrived, so there is
no coordinated-omission correction to make), and wrk_rotate.lua rotates pre-formatted request bodies so
every request carries a different test-split text. The client runs on its own core(s) (`taskset`) and
its CPU time is measured for every point (client_cpu_us_per_request, client_cpu_utilization), so a
reader can check it never ran out of CPU.
"""

from __future__ import annotations

import json
import resource
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.machine import process_tree_cpu_seconds, taskset

LUA_SCRIPT = Path(__file__).with_name("wrk_rotate.lua")


@dataclass
class Point:
    concurrency: int
    seconds: float
    requests: int
    ok: int
    errors: dict
    throughput: float  # texts in successful requests, per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_us_per_request: float
    client_cpu_utilization: float  # of the client's cores
    server_cpu_ms_per_request: float  # per text when requests carry several
    server_cpu_utilization: float  # of the server's cores
    texts_per_request: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_argv(url: str, bodies: Path, concurrency: int, seconds: int, cpus: tuple[int, ...],
             route: str = "/v1/classify", timeout_s: int = 30) -> list[str]:
    """The wrk command line, pinned to `cpus`, one wrk thread per client CPU."""
    threads = max(1, min(len(cpus), concurrency))
    return taskset(cpus, ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
                          "--timeout", f"{timeout_s}s", "-s", str(LUA_SCRIPT), url + route,
                          "--", str(bodies), route])


def wrk(url: str, bodies: Path, concurrency: int, seconds: int, cpus: tuple[int, ...],
        route: str = "/v1/classify", timeout_s: int = 30) -> tuple[dict, float]:
    """Run wrk once (it takes whole seconds); returns (its WRK_JSON summary, its CPU seconds)."""
    argv = wrk_argv(url, bodies, concurrency, seconds, cpus, route, timeout_s)
    before = children_cpu_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=seconds + timeout_s + 30)
    cpu = children_cpu_seconds() - before
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    return json.loads(lines[-1].removeprefix("WRK_JSON ")), cpu


def measure_point(url: str, server_pid: int, bodies: Path, concurrency: int, seconds: int,
                  warmup_s: int, client_cpus: tuple[int, ...], server_cpus: tuple[int, ...],
                  texts_per_request: int = 1) -> Point:
    """Warm up (discarded), then one measured wrk run at `concurrency` with CPU accounting on both sides."""
    if warmup_s > 0:
        wrk(url, bodies, concurrency, warmup_s, client_cpus)
    server_before = process_tree_cpu_seconds(server_pid)
    summary, client_cpu = wrk(url, bodies, concurrency, seconds, client_cpus)
    server_cpu = process_tree_cpu_seconds(server_pid) - server_before
    duration = summary["duration_us"] / 1e6
    requests = summary["requests"]
    failed = summary["errors"]["status"] + summary["errors"]["timeout"]
    ok = max(requests - failed, 0)
    lat = summary["latency_us"]
    return Point(
        concurrency=concurrency, seconds=round(duration, 3), requests=requests, ok=ok,
        errors=summary["errors"], throughput=ok * texts_per_request / duration, texts_per_request=texts_per_request,
        p50_ms=lat["50"] / 1000, p90_ms=lat["90"] / 1000, p95_ms=lat["95"] / 1000, p99_ms=lat["99"] / 1000,
        max_ms=lat["max"] / 1000,
        client_cpu_us_per_request=client_cpu / max(requests, 1) * 1e6,
        client_cpu_utilization=client_cpu / duration / len(client_cpus),
        server_cpu_ms_per_request=server_cpu / max(requests * texts_per_request, 1) * 1000,
        server_cpu_utilization=server_cpu / duration / len(server_cpus))


def mode_from_args(args, quick: dict, full: dict) -> dict:
    """A harness's load settings: its quick or full mode, with --concurrency and --duration applied."""
    mode = dict(quick if args.quick else full)
    if args.concurrency:
        mode["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.duration:
        mode["duration_s"] = args.duration
    return mode
