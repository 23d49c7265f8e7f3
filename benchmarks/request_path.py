"""What one classify request costs the event loop, with no HTTP server and no client in the way.

    python -m benchmarks.request_path [--package models/emotion] [--baseline DIR] [--log-level info] [--rounds 3]

The service's ASGI application runs in-process with its lifespan (real ONNX Runtime, real batcher, one
worker's settings: WORKERS=1, so the model threads are the machine's), and `--concurrency` callers send
POST /v1/classify straight into it, each request a different test-split text. What is measured is the CPU
time of the event loop's thread per request (`time.thread_time`): everything the service's Python does for
a request (middleware, admission, parsing, tokenization, queueing, the batcher's scheduler, ranking,
metrics, and at `--log-level info` the access line), which on a small model is the part of a request's cost
that is not the model's. The whole process's CPU per request (the model threads included) and the requests
per second are printed beside it. Logging is set up as in a worker of the service, standard output a pipe.

HTTP (Granian, the kernel, the client) is left out on purpose: it is the same for every version of the
application, and without it the Python path is measured with less noise than through wrk. `make bench`
measures the whole. With `--baseline DIR` (a checkout of another commit, e.g. `git worktree add /tmp/base
HEAD~1`) the same measurement runs on that code too, the two alternating round by round in one run, so a
change to the request path can be judged by the ratio on a noisy machine. Each round is a fresh process.

Writes benchmarks/results/request_path/results-<log level>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import CoreSplit, describe
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, shown

OUT = REPO / "benchmarks" / "results" / "request_path"


def scope_for(body: bytes) -> dict:
    """The ASGI scope Granian builds for a POST /v1/classify with a JSON body."""
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": "POST",
            "root_path": "", "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def drive(app, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    """Send `requests` requests from `concurrency` closed-loop callers; the loop thread's CPU per request."""
    statuses: dict[int, int] = {}

    async def one(body: bytes) -> None:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never hangs up
            raise AssertionError

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope_for(body), receive, send)

    async def caller(k: int) -> None:
        for i in range(k, requests, concurrency):
            await one(bodies[i % len(bodies)])

    for body in bodies[:200]:  # warm-up: the batcher's speed estimate, every code path's first call
        await one(body)
    statuses.clear()
    wall, loop_cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    wall, loop_cpu = time.perf_counter() - wall, time.thread_time() - loop_cpu
    process_cpu = time.process_time() - process_cpu
    return {"requests": requests, "statuses": statuses, "requests_per_s": requests / wall,
            "loop_cpu_us_per_request": 1e6 * loop_cpu / requests,
            "process_cpu_us_per_request": 1e6 * process_cpu / requests}


def one_round(package: str, data: Path, requests: int, concurrency: int, texts_per_request: int,
              log_level: str = "warning") -> dict:
    """One measurement in this process (`main` runs each round in a fresh interpreter)."""
    import uvloop

    # as the service's launcher sets it for its workers (here for every checkout alike): requests of
    # several texts are tokenized on the event loop, not by the tokenizer's own thread pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import encoder_serve
    from encoder_serve.service.app import create_app
    from encoder_serve.service.settings import load_settings

    texts = load_texts(data)
    if texts_per_request == 1:
        bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    else:
        bodies = [json.dumps({"inputs": texts[i: i + texts_per_request]}).encode()
                  for i in range(0, len(texts) - texts_per_request + 1, texts_per_request)]

    async def run() -> dict:
        app = create_app(load_settings(model_dir=package, workers=1, log_level=log_level, ops_port=0))
        async with app.router.lifespan_context(app):
            return await drive(app, bodies, requests, concurrency)

    return {**uvloop.run(run()), "code": str(Path(encoder_serve.__file__).parent.parent)}


def measure(source: Path | None, args: argparse.Namespace) -> dict:
    """One round in a fresh interpreter, importing encoder_serve from `source` (None: this checkout)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "round.json"
        argv = [sys.executable, "-m", "benchmarks.request_path", "--one-round", str(result), "--package",
                args.package, "--data", str(args.data), "--requests", str(args.requests), "--concurrency",
                str(args.concurrency), "--texts-per-request", str(args.texts_per_request), "--log-level",
                args.log_level] + (["--source", str(source)] if source else [])
        # the service's log lines go where a container's would go, a pipe, read and dropped here
        done = subprocess.run(argv, cwd=REPO, capture_output=True, check=False)
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(f"a round failed (exit {done.returncode}): {done.stderr.decode()[-3000:]}")
        return json.loads(result.read_text())


def report(results: dict) -> str:
    machine = results["machine"]
    command = "python -m benchmarks.request_path" + (f" --baseline {results['baseline']}" if results["baseline"] else "")
    if results["log_level"] != "warning":
        command += f" --log-level {results['log_level']}"
    title = (f"# The request path in-process: {results['texts_per_request']} text(s) per request, "
             f"{results['concurrency']} callers, LOG_LEVEL={results['log_level']}")
    setting = (f"Measured {machine['date']}, {machine['cpu_model']}, {machine['cpus']} CPUs, load average at start "
               f"{machine['load_average_at_start']}, Python {machine['python']}, commit {machine['git_commit']}; "
               f"package `{results['package']}`; {results['requests']:,} requests per round, {results['rounds']} "
               f"rounds alternating, medians. `{command}`")
    lines = [title, "", setting, "",
             "| code | event loop CPU µs / request | process CPU µs / request | requests / s |",
             "| --- | ---: | ---: | ---: |"]
    for name, row in results["contenders"].items():
        lines.append(f"| {name} | {row['loop_cpu_us_per_request']:.0f} | {row['process_cpu_us_per_request']:.0f} | "
                     f"{row['requests_per_s']:,.0f} |")
    if "ratio_loop_cpu" in results:
        ratios = (f"This checkout's event-loop CPU per request is {results['ratio_loop_cpu']:.2f} x the baseline's; "
                  f"its requests per second {results['ratio_requests_per_s']:.2f} x.")
        lines += ["", ratios]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of other code to measure alongside")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--log-level", default="warning", help="the service's LOG_LEVEL (info: access lines on)")
    parser.add_argument("--one-round", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:  # a round's own process: encoder_serve from --source, logging as a worker sets it up
        if args.source is not None:
            sys.path.insert(0, str(args.source))
        from encoder_serve.service.logs import log_config
        logging.config.dictConfig(log_config(args.log_level))
        row = one_round(args.package, args.data, args.requests, args.concurrency, args.texts_per_request,
                        args.log_level)
        args.one_round.write_text(json.dumps(row))
        return
    contenders = {"this checkout": None}
    if args.baseline is not None:
        contenders = {"baseline": args.baseline.resolve(), **contenders}
    rounds: dict[str, list[dict]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, source in contenders.items():
            row = measure(source, args)
            rounds[name].append(row)
            print(f"round {r + 1}, {row['code']}: event loop {row['loop_cpu_us_per_request']:.1f} µs/request, process "
                  f"{row['process_cpu_us_per_request']:.1f} µs/request, {row['requests_per_s']:,.0f} requests/s, "
                  f"statuses {row['statuses']}", flush=True)
    keys = ("loop_cpu_us_per_request", "process_cpu_us_per_request", "requests_per_s")
    results = {"machine": describe(CoreSplit.default()),
               "package": shown(args.package), "requests": args.requests, "concurrency": args.concurrency,
               "texts_per_request": args.texts_per_request, "rounds": args.rounds, "log_level": args.log_level,
               "baseline": str(args.baseline) if args.baseline else None,
               "contenders": {name: {k: statistics.median(row[k] for row in rows) for k in keys}
                              for name, rows in rounds.items()},
               "raw": rounds}
    if args.baseline is not None:
        ours, theirs = results["contenders"]["this checkout"], next(iter(results["contenders"].values()))
        results["ratio_loop_cpu"] = ours["loop_cpu_us_per_request"] / theirs["loop_cpu_us_per_request"]
        results["ratio_requests_per_s"] = ours["requests_per_s"] / theirs["requests_per_s"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-{args.log_level}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"results-{args.log_level}.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
