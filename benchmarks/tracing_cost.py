"""What tracing costs: classify throughput at 64 connections with tracing off, on at 1% sampling and on at
100%, the three measured in interleaved rounds in one run, exporting to a real OTLP/HTTP endpoint (a sink
on this machine that reads and discards every export, as a collector would accept it).

    python -m benchmarks.tracing_cost [--package models/emotion] [--seconds 10] [--rounds 3]

Prints a table and writes benchmarks/results/tracing/results.json and results.md. The goal: off unchanged
from a service without tracing, 1% costing at most 3% of throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.loadgen import measure_point
from benchmarks.machine import CoreSplit, add_core_arguments, describe
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies
from encoder_serve.service.testing import LiveServer, free_port

CONFIGS = {"off": {}, "on, 1% sampled": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                          "OTEL_TRACES_SAMPLER_ARG": "0.01"},
           "on, 100% sampled": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}}


class Sink:
    """An OTLP/HTTP endpoint that accepts and discards every export, counting the bytes."""

    def __init__(self):
        received = self.received = [0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received[0] += len(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tracing"))
    add_core_arguments(parser)
    args = parser.parse_args(argv)
    split = CoreSplit.from_args(args)
    out = Path(args.out)
    logs = out / "logs"  # git-ignored
    logs.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    points: dict[str, list] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        bodies = write_bodies(load_texts(args.data), Path(tmp) / "bodies.txt")
        for round_ in range(args.rounds):
            for name, env in CONFIGS.items():
                tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, **env} if env else {}
                with LiveServer(args.package, env={"ORT_INTRA_OP_THREADS": "", "LOG_LEVEL": "warning", **tracing},
                                cpus=split.server, log_path=logs / f"{name.split(',')[0]}.log") as server:
                    point = measure_point(server.url, server.pid, bodies, args.concurrency, args.seconds, 2,
                                          split.client, split.server)
                points[name].append(point.as_dict())
                print(f"round {round_ + 1} {name:18} {point.throughput:8,.0f} texts/s  p50 {point.p50_ms:6.2f} ms  "
                      f"p99 {point.p99_ms:7.2f} ms  errors {point.requests - point.ok}", file=sys.stderr, flush=True)
    medians = {name: statistics.median(p["throughput"] for p in ps) for name, ps in points.items()}
    rows = ["| tracing | texts/s (median of rounds) | vs off | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, ps in points.items():
        rows.append(f"| {name} | {medians[name]:,.0f} | {medians[name] / medians['off']:.3f} | "
                    f"{statistics.median(p['p50_ms'] for p in ps):.2f} | {statistics.median(p['p99_ms'] for p in ps):.2f} |")
    table = "\n".join(rows)
    results = {"machine": describe(split), "package": args.package, "concurrency": args.concurrency,
               "seconds": args.seconds, "rounds": args.rounds, "otlp_bytes_received": sink.received[0],
               "points": points, "median_texts_per_s": medians,
               "cost_of_1pct": round(1 - medians["on, 1% sampled"] / medians["off"], 4),
               "cost_of_100pct": round(1 - medians["on, 100% sampled"] / medians["off"], 4)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(f"`python -m benchmarks.tracing_cost --seconds {args.seconds} --rounds {args.rounds}`, "
                                     f"{results['machine']['date']}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
