"""What /v1/explain costs: its latency next to /v1/classify's, and what it takes from classification under load.

    python -m benchmarks.explain_cost --package PKG                   # full: about 2 minutes
    python -m benchmarks.explain_cost --package PKG --quick           # smoke: about 20 s
    python -m benchmarks.explain_cost --package PKG --out DIR --seconds 30 --requests 500

The package needs its attention graph (`encoder-serve export` builds one unless --no-attention). One
service, pinned as benchmarks.run pins it (every core for the server, wrk and this script's clients on the
last one; --server-cpus and --client-cpus change that), is measured in two parts:

1. Latency. One client, keep-alive, no other load: for each of N emotion test texts (typical tweets, in the
   benchmarks' fixed shuffled order) it sends /v1/classify, /v1/explain, and /v1/explain with the query-key
   view (what the playground asks for), interleaved, and records each answer's time and size.
2. Throughput. wrk with 64 closed-loop connections on /v1/classify, once alone and once with an explain
   client alongside sending 5 requests a second (open loop, a new one every 200 ms; back to back if one
   takes longer), alternated: alone, with, alone, with. The goal: classification throughput with explain
   within 5% of it without.

It prints a table and writes explain_cost.json and explain_cost.md to --out (default
benchmarks/results/explain; --quick writes to benchmarks/results/tmp/explain, which git ignores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.loadgen import measure_point, wrk
from benchmarks.machine import CoreSplit, add_core_arguments, describe
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies
from encoder_serve.package import load_package
from encoder_serve.service.testing import LiveServer

GOAL = 0.05  # classification throughput with explain alongside: at most 5% lower
FULL = {"requests": 300, "seconds": 20, "warmup_s": 5, "rounds": 2}
QUICK = {"requests": 40, "seconds": 4, "warmup_s": 2, "rounds": 2}
JSON_HEADERS = {"Content-Type": "application/json"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "mean": statistics.fmean(ordered),
            "max": ordered[-1]} if ordered else {"n": 0}


class Client:
    """One keep-alive HTTP/1.1 connection: the cheapest way for Python to time a request."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.connection = HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def post(self, path: str, body: dict) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one POST."""
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        self.connection.request("POST", path, payload, JSON_HEADERS)
        response = self.connection.getresponse()
        data = response.read()
        return time.perf_counter() - started, response.status, data

    def close(self) -> None:
        self.connection.close()


def measure_latency(url: str, texts: list[str], requests: int) -> dict:
    """Single client, interleaved: classify, explain, explain with the query-key view, per text."""
    kinds = {"classify": ("/v1/classify", {}), "explain": ("/v1/explain", {}),
             "explain_query_key": ("/v1/explain", {"query_key": True, "layer": 0, "head": 0})}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    sizes: dict[str, list[int]] = {k: [] for k in kinds}
    tokens: list[int] = []
    client = Client(url)
    try:
        for text in texts[:5]:  # warm the connection and both graphs
            for path, extra in kinds.values():
                client.post(path, {"inputs": text, **extra})
        for i in range(requests):
            text = texts[i % len(texts)]
            for kind, (path, extra) in kinds.items():
                seconds, status, data = client.post(path, {"inputs": text, **extra})
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {data[:300]!r}")
                times[kind].append(1000 * seconds)
                sizes[kind].append(len(data))
                if kind == "explain":
                    tokens.append(len(json.loads(data)["tokens"]))
    finally:
        client.close()
    result = {kind: {"latency_ms": percentiles(times[kind]), "response_bytes_p50": statistics.median(sizes[kind])}
              for kind in kinds}
    result["tokens"] = percentiles(tokens)
    result["explain_over_classify_p50"] = result["explain"]["latency_ms"]["p50"] / result["classify"]["latency_ms"]["p50"]
    return result


class ExplainLoad(threading.Thread):
    """Explain requests at `rate` per second (open loop; back to back when one takes longer than 1/rate)."""

    def __init__(self, url: str, texts: list[str], rate: float):
        super().__init__(daemon=True, name="explain-load")
        self.url, self.texts, self.interval = url, texts, 1 / rate
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        client = Client(self.url)
        self.started_at = due = time.monotonic()
        i = 0
        try:
            while not self.stopping.is_set():
                wait = due - time.monotonic()
                if wait > 0 and self.stopping.wait(wait):
                    break
                try:
                    seconds, status, _ = client.post("/v1/explain", {"inputs": self.texts[i % len(self.texts)]})
                except OSError as e:
                    status, seconds = f"error: {type(e).__name__}", 0.0
                    client.close()
                    client = Client(self.url)
                self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
                if status == 200:
                    self.latencies.append(1000 * seconds)
                due += self.interval
                i += 1
        finally:
            self.stopped_at = time.monotonic()
            client.close()

    def stop(self) -> dict:
        self.stopping.set()
        self.join()
        sent = sum(self.statuses.values())
        return {"sent": sent, "rate_per_s": sent / max(self.stopped_at - self.started_at, 1e-9),
                "statuses": self.statuses, "latency_ms": percentiles(self.latencies)}


def measure_throughput(server: LiveServer, bodies: Path, texts: list[str], split: CoreSplit, concurrency: int,
                       seconds: int, rounds: int, rate: float) -> dict:
    """wrk on /v1/classify alone and with explain alongside, alternated `rounds` times."""
    runs = []
    for r in range(rounds):
        for condition in ("alone", "with_explain"):
            load = ExplainLoad(server.url, texts, rate) if condition == "with_explain" else None
            if load:
                load.start()
            point = measure_point(server.url, server.pid, bodies, concurrency, seconds, 0, split.client,
                                  split.server).as_dict()
            run = {"round": r + 1, "condition": condition, **point}
            if load:
                run["explain"] = load.stop()
            runs.append(run)
            extra = (f"  explain {run['explain']['rate_per_s']:.1f}/s p50 "
                     f"{run['explain']['latency_ms'].get('p50', float('nan')):.1f} ms" if load else "")
            log(f"round {r + 1} {condition:12} {point['throughput']:8,.0f} texts/s  p50 {point['p50_ms']:6.2f} ms  "
                f"p99 {point['p99_ms']:6.2f} ms  errors {point['requests'] - point['ok']}{extra}")
    alone = [run["throughput"] for run in runs if run["condition"] == "alone"]
    alongside = [run["throughput"] for run in runs if run["condition"] == "with_explain"]
    change = statistics.fmean(alongside) / statistics.fmean(alone) - 1
    return {"runs": runs, "alone_texts_per_s": statistics.fmean(alone),
            "with_explain_texts_per_s": statistics.fmean(alongside), "change": change,
            "goal": {"at_most_lower": GOAL, "pass": change >= -GOAL}}


def markdown(results: dict) -> str:
    lat, thr, m = results["latency"], results["throughput"], results["machine"]
    s = results["settings"]
    lines = [
        f"# /v1/explain cost{' (quick smoke run: not a measurement)' if s['quick'] else ''}",
        "",
        f"`{s['command']}`",
        "",
        (f"{results['package']['ref']}, {s['precision']}, {m['cpu_model']} ({m['cpus']} CPUs), server on CPUs "
         f"{m['server_cpus']}, clients on {m['client_cpus']}, {m['date']}, commit {m['git_commit']}."),
        "",
        (f"## Latency, one client ({lat['classify']['latency_ms']['n']} texts, "
         f"{lat['tokens']['p50']:.0f} tokens median)"),
        "",
        "| request | p50 ms | p90 ms | p99 ms | answer bytes (median) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, name in [("classify", "`/v1/classify`"), ("explain", "`/v1/explain`"),
                       ("explain_query_key", "`/v1/explain` with `query_key`")]:
        t = lat[kind]["latency_ms"]
        lines.append(f"| {name} | {t['p50']:.2f} | {t['p90']:.2f} | {t['p99']:.2f} | "
                     f"{lat[kind]['response_bytes_p50']:,.0f} |")
    lines += ["", f"explain p50 / classify p50: {lat['explain_over_classify_p50']:.1f}x", "",
              (f"## Classification throughput, {s['concurrency']} connections, with and without "
               f"{s['explain_rate']:g} explain requests/s"), "",
              ("| round | condition | texts/s | p50 ms | p99 ms | errors | explain sent/s | explain p50 ms | "
               "explain statuses |"),
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in thr["runs"]:
        e = run.get("explain")
        explain = (f"{e['rate_per_s']:.1f} | {e['latency_ms'].get('p50', float('nan')):.1f} | "
                   f"{', '.join(f'{k}: {v}' for k, v in e['statuses'].items())}") if e else "| |"
        lines.append(f"| {run['round']} | {run['condition'].replace('_', ' ')} | {run['throughput']:,.0f} | "
                     f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['requests'] - run['ok']} | {explain} |")
    verdict = "pass" if thr["goal"]["pass"] else "FAIL"
    lines += ["", (f"Mean: {thr['alone_texts_per_s']:,.0f} texts/s alone, {thr['with_explain_texts_per_s']:,.0f} "
                   f"with explain alongside ({100 * thr['change']:+.1f}%; goal: at most {100 * GOAL:.0f}% lower: "
                   f"{verdict})."), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"),
                        help="model package with an attention graph (default models/emotion)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="emotion data directory (test.jsonl)")
    parser.add_argument("--precision", default="fp32", help="PRECISION for classification (default fp32; "
                                                            "explain always runs the fp32 attention graph)")
    parser.add_argument("--out", help="results directory (default benchmarks/results/explain, or "
                                      "benchmarks/results/tmp/explain with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 20 s")
    parser.add_argument("--requests", type=int, help="texts in the latency part (each sent three ways)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, help="alone / with-explain pairs (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--explain-rate", type=float, default=5.0, help="explain requests per second alongside")
    add_core_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("benchmarks.explain_cost: error: wrk not found (apt-get install wrk)")
        return 2
    package = load_package(args.package)
    if package.attention_path is None:
        log(f"benchmarks.explain_cost: error: {package.path} has no attention graph; rebuild it with "
            "`encoder-serve export CHECKPOINT PACKAGE` (without --no-attention), or pass --package")
        return 2
    mode = dict(QUICK if args.quick else FULL)
    for key in ("requests", "seconds", "rounds"):
        if getattr(args, key):
            mode[key] = getattr(args, key)
    split = CoreSplit.from_args(args)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / ("tmp/explain" if args.quick else "explain")
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, split.client)  # this script's clients beside wrk, off the model's cores
    texts = load_texts(args.data)
    env = {"PRECISION": args.precision, "ORT_INTRA_OP_THREADS": str(split.threads), "LOG_LEVEL": "warning"}
    command = "python -m benchmarks.explain_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"machine": describe(split), "package": {"ref": package.ref, "path": str(package.path),
                                                       "max_length": package.max_length,
                                                       "encoder": package.manifest.get("encoder", {})},
               "settings": {**mode, "quick": args.quick, "precision": args.precision, "threads": split.threads,
                            "concurrency": args.concurrency, "explain_rate": args.explain_rate,
                            "command": command.strip()}}
    with tempfile.TemporaryDirectory() as tmp, \
            LiveServer(package.path, env=env, cpus=split.server, log_path=Path(tmp) / "service.log") as server:
        log(f"service {package.ref} ({args.precision}) on CPUs {list(split.server)}, clients on {list(split.client)}")
        results["latency"] = latency = measure_latency(server.url, texts, mode["requests"])
        for kind in ("classify", "explain", "explain_query_key"):
            t = latency[kind]["latency_ms"]
            log(f"{kind:18} p50 {t['p50']:7.2f} ms  p90 {t['p90']:7.2f} ms  p99 {t['p99']:7.2f} ms  "
                f"answer {latency[kind]['response_bytes_p50']:,.0f} bytes")
        bodies = write_bodies(texts, Path(tmp) / "bodies.txt")
        wrk(server.url, bodies, args.concurrency, mode["warmup_s"], split.client)  # warm-up, discarded
        results["throughput"] = measure_throughput(server, bodies, texts, split, args.concurrency, mode["seconds"],
                                                   mode["rounds"], args.explain_rate)
    report = markdown(results)
    (out / "explain_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "explain_cost.md").write_text(report)
    print(report)
    log(f"wrote {out / 'explain_cost.json'} and explain_cost.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
