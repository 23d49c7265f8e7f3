"""Where the service's CPU goes under load, thread by thread: the event loops, the model threads, the HTTP
server's own runtime, the access-log writer, the launcher, and the load generator beside them.

    python -m benchmarks.thread_cpu [--package models/emotion] [--concurrency 1,64] [--texts-per-request 1]

The service runs as `make bench` runs it (its defaults: a worker per CPU, LOG_LEVEL=info, pinned to the
server cores; wrk on the client core). For each client count, wrk runs once to warm up and once measured,
and the CPU time (user and system) of every thread of the server's process tree is read from
/proc/<pid>/task/<tid>/stat before and after. Threads are told apart by the names the service gives them
in the kernel (`encoder_serve.service.threads`): a worker's main thread runs its event loop (ASGI, the
handlers, tokenization, the batcher's scheduler, metrics); "model" threads run ONNX Runtime and the
padding and softmax around it; Granian's Rust runtime ("tokio-rt-worker") reads and writes the sockets.
What is reported is CPU microseconds per answered text for each group: on a CPU-bound machine, the sum is
what a text costs, and the in-process limit of `make bench` spends only the model's share of it. (Refused
requests cost CPU too and answer no text: the share refused is shown beside.)

Writes benchmarks/results/thread_cpu/thread_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import inprocess
from benchmarks.loadgen import wrk
from benchmarks.machine import CoreSplit, describe, process_tree_cpu_seconds
from benchmarks.servers import Contender, serve
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, shown, write_bodies
from encoder_serve.package import load_package
from encoder_serve.service.backend import choose_precision
from encoder_serve.service.metrics import process_tree

OUT = REPO / "benchmarks" / "results" / "thread_cpu"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# thread name in the kernel -> the group it is reported under (a worker's main thread: EVENT_LOOP)
EVENT_LOOP = "event loop"
GROUPS = {"model": "model threads", "tokio-rt-worker": "HTTP server (Granian's Rust runtime)",
          "access-log": "access-log writer", "ops-server": "operations port", "otel-export": "span exporter",
          "explain": "explain lane"}
LAUNCHER = "launcher"
OTHER = "other threads"
GOALS = (0.8, 0.95)  # make bench's saturation goals at 1 and at 8 texts per request
ORDER = [EVENT_LOOP, GROUPS["model"], GROUPS["tokio-rt-worker"], GROUPS["access-log"], GROUPS["ops-server"],
         GROUPS["otel-export"], GROUPS["explain"], OTHER, LAUNCHER]


def _stat(path: Path) -> tuple[str, float, float] | None:
    """(name, user s, system s) from a /proc stat file; None if it is gone."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1: stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return name, int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def thread_times(root: int) -> dict[tuple[int, int], tuple[str, float, float]]:
    """(pid, tid) -> (group, user s, system s) for every thread of `root`'s process tree."""
    times = {}
    for pid in process_tree(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            if (stat := _stat(task / "stat")) is None:
                continue
            name, user, system = stat
            tid = int(task.name)
            if pid == root:
                group = LAUNCHER
            elif tid == pid:
                group = EVENT_LOOP
            else:
                group = GROUPS.get(name, OTHER)
            times[(pid, tid)] = (group, user, system)
    return times


def by_group(before: dict, after: dict, texts: int) -> dict[str, dict[str, float]]:
    """CPU µs per text of each group between two `thread_times` readings (threads that started meanwhile
    count from zero; threads that ended are lost, which the service's long-lived threads never do)."""
    groups: dict[str, dict[str, float]] = {}
    for key, (group, user, system) in after.items():
        _, user0, system0 = before.get(key, (group, 0.0, 0.0))
        row = groups.setdefault(group, {"user_us": 0.0, "system_us": 0.0, "threads": 0})
        row["user_us"] += (user - user0) * 1e6 / max(texts, 1)
        row["system_us"] += (system - system0) * 1e6 / max(texts, 1)
        row["threads"] += 1
    return groups


def budget(limit: dict, cores: int, goal: float, client_us: float) -> float:
    """Server CPU µs per text that leaves room for `goal` x the limit's texts/s on `cores` shared with a
    client spending `client_us` per text: the model's share is the limit's own CPU per text, the rest of
    this is what everything else (event loop, HTTP, logs) may spend."""
    return cores * 1e6 / (goal * limit["texts_per_s"]) - client_us


def measure(package: str, concurrency: list[int], texts_per_request: int, seconds: int, warmup_s: int,
            split: CoreSplit, limit_s: float = 0.0) -> dict:
    """Each client count's CPU per text by thread group; with `limit_s`, also the in-process limit (as `make
    bench` measures it, `limit_s` per arrangement) for the precision the service serves."""
    texts = load_texts(DEFAULT_DATA)
    limit = None
    if limit_s:
        precision = choose_precision(load_package(package), "auto")
        limit = inprocess.measure(package, precision, split.threads, limit_s)
        limit = {k: limit[k] for k in ("precision", "threads", "texts_per_s", "cpu_ms_per_text", "best_batch_size",
                                       "best_order", "best_lanes")}
    env = {"MODEL_DIR": package, "WORKERS": "", "LOG_LEVEL": "info", "API_KEY": "", "MODEL_THREADS": "",
           "ORT_INTRA_OP_THREADS": "", "PRECISION": "auto"}
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = write_bodies(texts, Path(tmp) / "bodies.txt", texts_per_request)
        with serve(Contender("encoder-serve", "encoder_serve.service", env), split.server,
                   Path(tmp) / "server.log") as server:
            for clients in concurrency:
                if warmup_s:
                    wrk(server.url, bodies, clients, warmup_s, split.client)
                before, tree_before = thread_times(server.pid), process_tree_cpu_seconds(server.pid)
                summary, client_cpu = wrk(server.url, bodies, clients, seconds, split.client)
                after, tree_after = thread_times(server.pid), process_tree_cpu_seconds(server.pid)
                ok = summary["requests"] - summary["errors"]["status"] - summary["errors"]["timeout"]
                served = ok * texts_per_request
                groups = by_group(before, after, served)
                points.append({"concurrency": clients, "requests": summary["requests"], "ok": ok,
                               "texts_per_s": served / (summary["duration_us"] / 1e6),
                               "p50_ms": summary["latency_us"]["50"] / 1000, "groups": groups,
                               "server_us_per_text": sum(g["user_us"] + g["system_us"] for g in groups.values()),
                               # the same from the processes' own totals: what the threads must add up to
                               "process_tree_us_per_text": (tree_after - tree_before) * 1e6 / max(served, 1),
                               "client_us_per_text": client_cpu * 1e6 / max(served, 1)})
    return {"machine": describe(split), "package": shown(package), "texts_per_request": texts_per_request,
            "seconds": seconds, "points": points, "limit": limit, "server_cpus": len(split.server)}


def report(results: dict) -> str:
    machine = results["machine"]
    points = results["points"]
    lines = [f"# Where the CPU goes: {results['texts_per_request']} text(s) per request",
             "",
             (f"Measured {machine['date']}, {machine['cpu_model']}, {machine['cpus']} CPUs, load average at start "
             f"{machine['load_average_at_start']}, commit {machine['git_commit']}; package `{results['package']}`, "
             f"the service's defaults, {results['seconds']} s per point. `python -m benchmarks.thread_cpu`"),
             "",
             "CPU µs per text (user + system; system in brackets):",
             "",
             "| | " + " | ".join(f"{p['concurrency']} client{'s' if p['concurrency'] > 1 else ''}" for p in points) + " |",
             "| --- | " + " | ".join("---:" for _ in points) + " |"]
    present = [g for g in ORDER if any(g in p["groups"] for p in points)]
    for group in present:
        cells = []
        for p in points:
            row = p["groups"].get(group)
            cells.append("–" if row is None else f"{row['user_us'] + row['system_us']:,.0f} ({row['system_us']:,.0f})")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines.append("| **server, all threads** | " + " | ".join(f"**{p['server_us_per_text']:,.0f}**" for p in points) + " |")
    lines.append("| load generator (wrk) | " + " | ".join(f"{p['client_us_per_text']:,.0f}" for p in points) + " |")
    lines.append("| texts / s | " + " | ".join(f"{p['texts_per_s']:,.0f}" for p in points) + " |")
    lines.append("| p50 latency | " + " | ".join(f"{p['p50_ms']:.2f} ms" for p in points) + " |")
    lines.append("| refused (429, 504) | " + " | ".join(f"{1 - p['ok'] / max(p['requests'], 1):.0%}" for p in points) + " |")
    limit = results.get("limit")
    if limit:
        best = max(points, key=lambda p: p["texts_per_s"])
        lines += ["", (f"The in-process limit ({limit['precision']}, batches of {limit['best_batch_size']} "
                      f"{'grouped by length' if limit['best_order'] == 'length' else 'in arrival order'}, "
                      f"{limit['best_lanes']} at once): {limit['texts_per_s']:,.0f} texts/s at "
                      f"{1000 * limit['cpu_ms_per_text']:,.0f} µs of CPU per text. At {best['concurrency']} clients "
                      f"the service reached {best['texts_per_s'] / limit['texts_per_s']:.2f} × it; for a ratio "
                      f"of r on {results['server_cpus']} cores, with the load generator's CPU as measured, a text "
                      f"may cost the server at most:"), "",
                  "| ratio | server CPU µs per text, at most | of it, left for all but the model |",
                  "| ---: | ---: | ---: |"]
        for goal in GOALS:
            allowed = budget(limit, results["server_cpus"], goal, best["client_us_per_text"])
            lines.append(f"| {goal} | {allowed:,.0f} | {allowed - 1000 * limit['cpu_ms_per_text']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.thread_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--concurrency", default="1,64", help="comma-separated client counts")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before each measured point")
    parser.add_argument("--limit-seconds", type=float, default=2.0,
                        help="seconds per arrangement of the in-process limit (0: skip it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(args.package, [int(c) for c in args.concurrency.split(",")], args.texts_per_request,
                      args.seconds, args.warmup, CoreSplit.default(), args.limit_seconds)
    suffix = "" if args.texts_per_request == 1 else f"-{args.texts_per_request}-texts"
    (args.out / f"thread_cpu{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results)
    (args.out / f"thread_cpu{suffix}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
