"""What ran where: machine description, the core split between server and client, CPU accounting.

By default the whole machine serves, as a user runs it: the server gets every core, the in-process limit
and the naive baseline one compute thread (ONNX Runtime intra-op, torch) per core, and encoder-serve its
own defaults. wrk runs on the last core, which it shares (wrk costs a few percent of that core; every
point records it). --server-cpus/--client-cpus/--threads override it; `--server-cpus 0 --client-cpus 1`
is the stricter split where the client has a core of its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CoreSplit:
    server: tuple[int, ...]
    client: tuple[int, ...]
    compute_threads: int = 0  # 0: one per server core

    @property
    def threads(self) -> int:
        """Compute threads (ONNX Runtime intra-op, torch) every contender gets."""
        return self.compute_threads or len(self.server)

    @staticmethod
    def parse(spec: str) -> tuple[int, ...]:
        """'0-2,5' -> (0, 1, 2, 5)"""
        cpus: list[int] = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
        return tuple(cpus)

    @classmethod
    def default(cls) -> CoreSplit:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        return cls(server=cpus, client=cpus[-1:], compute_threads=len(cpus))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CoreSplit:
        default = cls.default()
        client = cls.parse(args.client_cpus) if args.client_cpus else default.client
        if not args.server_cpus:
            return cls(default.server, client, args.threads or default.compute_threads)
        return cls(cls.parse(args.server_cpus), client, args.threads or 0)


def add_core_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-cpus", help="CPUs for the server, e.g. 0 or 0-2 (default: all)")
    parser.add_argument("--client-cpus", help="CPUs for wrk, e.g. 1 (default: the last CPU; may overlap)")
    parser.add_argument("--threads", type=int, help="compute threads per contender (default: one per server "
                                                     "CPU but the last, or one per --server-cpus CPU)")


def taskset(cpus: tuple[int, ...], argv: list[str]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe(split: CoreSplit) -> dict:
    """The facts a reader needs to judge the numbers: CPU, cores, split, load, versions, commit."""
    def first_line(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (done.stdout.strip() or done.stderr.strip() or "unknown").splitlines()[0]

    import onnxruntime
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "server_cpus": list(split.server),
        "client_cpus": list(split.client),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "wrk": first_line("wrk", "--version").split(" Copyright")[0],
        "git_commit": first_line("git", "rev-parse", "--short", "HEAD"),
    }


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and all its descendants (uvicorn workers included), from /proc."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        children.setdefault(ppid, []).append(int(entry.name))
        times[int(entry.name)] = (utime + stime) / CLOCK_TICKS
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += times.get(p, 0.0)
        stack.extend(children.get(p, []))
    return total
