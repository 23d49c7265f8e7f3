"""Where the service's time goes under load: py-spy samples encoder-serve while wrk drives it.

    python -m benchmarks.profile_service --package models/emotion [--concurrency 64] [--seconds 10]

The service runs pinned to the server cores as in benchmarks.run; wrk and py-spy share the client core.
Two recordings, one after the other under the same steady load:

- wall time per thread (`py-spy --idle`): how busy the event loop and the model worker are, and on what;
- who holds the GIL (`py-spy --gil`): the Python work that serializes everything on the event loop.

Each sample is attributed to the innermost frame that names a cost (tokenization, padding, ONNX Runtime,
JSON, pydantic, HTTP, thread hand-offs, ...). Writes profile-<precision>.md and the raw stacks,
profile-<precision>-{wall,gil}.collapsed (Brendan Gregg's collapsed format: open them at
https://www.speedscope.app or with flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loadgen import wrk_argv
from benchmarks.machine import CoreSplit, add_core_arguments, taskset
from benchmarks.servers import Contender, serve
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies

RATE_HZ = 100
IDLE = "idle (waiting for work or I/O)"
# A sample whose innermost frame is one of these is a thread blocked in C: waiting, not working.
IDLE_LEAVES = re.compile(r"^(Condition\.wait|Event\.wait|Thread\._wait_for_tstate_lock) |"
                         r"^_worker \(concurrent/futures/thread\.py|^Runner\.run \(asyncio/runners\.py")
# (category, pattern on "function (file:line)"), first match wins, checked from the innermost frame out.
CATEGORIES = [
    ("model: ONNX Runtime run", r"onnxruntime_inference_collection\.py"),
    ("padding (pad_batch)", r"^pad_batch "),
    ("softmax, ranking (numpy)", r"^(softmax|rank) |numpy/"),
    ("tokenization", r"^(Runtime\.)?(tokenize|encode_batch|encode) |tokenization\.py"),
    ("prometheus metrics", r"prometheus_client"),
    ("logging", r"/logging/|service/logs\.py"),
    ("JSON encode/decode", r"orjson|/json/|^JSON\.render |^Request\.(json|body) "),
    ("pydantic validation", r"pydantic|fastapi/_compat"),
    ("thread hand-offs (thread pools, futures)", (r"concurrent/futures|threading\.py|queue\.py|anyio/|"
                                                 r"to_thread|run_in_executor|run_in_threadpool")),
    ("batching core (queue, scheduler)", r"service/batching\.py"),
    ("request path (inference.py)", r"service/inference\.py"),
    ("HTTP parsing and writing (uvicorn)", r"uvicorn/"),
    ("routing, middleware, dependencies (starlette, fastapi)", r"starlette/|fastapi/|service/(api|middleware)"),
    ("event loop (asyncio, uvloop)", r"asyncio/|uvloop"),
]


def categorize(frames: list[str], idle_aware: bool) -> str:
    if idle_aware and frames and IDLE_LEAVES.search(frames[-1]):
        return IDLE
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def parse(collapsed: str):
    """Yield (thread name, frames root-first, sample count) from py-spy's raw output with --threads."""
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        name = re.sub(r"^thread \(\d+\):?\s*", "", thread) or "?"
        yield re.sub(r"_\d+$", "", name), [f for f in frames if not f.startswith(("thread ", "process "))], \
            int(count)


def wall_by_thread(collapsed: str) -> dict[str, tuple[int, collections.Counter]]:
    """thread name (pool threads grouped) -> (number of threads, samples per category)."""
    threads: dict[str, collections.Counter] = {}
    members: dict[str, set[str]] = {}
    for line, (name, frames, count) in zip(collapsed.splitlines(), parse(collapsed), strict=True):
        threads.setdefault(name, collections.Counter())[categorize(frames, idle_aware=True)] += count
        members.setdefault(name, set()).add(line.split(";", 1)[0])
    return {name: (len(members[name]), counter) for name, counter in threads.items()}


def gil_holders(collapsed: str) -> tuple[collections.Counter, collections.Counter]:
    """(samples per category, samples per innermost frame with two callers) while holding the GIL."""
    categories, frames_seen = collections.Counter(), collections.Counter()
    for _, frames, count in parse(collapsed):
        categories[categorize(frames, idle_aware=False)] += count
        path = " <- ".join(re.sub(r":\d+\)$", ")", f) for f in reversed(frames[-3:]))
        frames_seen[path] += count
    return categories, frames_seen


def markdown(title: str, seconds: int, wall: str, gil: str, top: int = 15) -> str:
    expected = seconds * RATE_HZ  # samples one thread yields in the recording
    lines = [f"# {title}", "", f"## Wall time per thread (`py-spy --idle`, {seconds} s at {RATE_HZ} Hz)", "",
             "| thread | threads | busy | where the busy time goes |", "| --- | ---: | ---: | --- |"]
    for name, (n, counter) in sorted(wall_by_thread(wall).items(), key=lambda kv: -sum(kv[1][1].values())):
        total = sum(counter.values())
        busy = total - counter[IDLE]
        spread = ", ".join(f"{c} {k / max(busy, 1):.0%}" for c, k in counter.most_common() if c != IDLE)
        lines.append(f"| {name} | {n} | {busy / (expected * n):.0%} | {spread or '–'} |")
    categories, frames = gil_holders(gil)
    held = sum(categories.values())
    lines += ["", f"## Who holds the GIL (`py-spy --gil`, {seconds} s)", "",
              f"Some thread held the GIL in {held / expected:.0%} of the samples.", "",
              "| holder | share of GIL samples |", "| --- | ---: |"]
    lines += [f"| {name} | {n / max(held, 1):.1%} |" for name, n in categories.most_common()]
    lines += ["", f"### Top {top} stacks holding the GIL (innermost frame <- caller <- caller)", "",
              "| frames | share |", "| --- | ---: |"]
    lines += [f"| `{path}` | {n / max(held, 1):.1%} |" for path, n in frames.most_common(top)]
    return "\n".join(lines) + "\n"


def py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(path).exists():
        raise FileNotFoundError("py-spy not found (pip install py-spy)")
    return path


def profile(package: str, precision: str, concurrency: int, seconds: int, split: CoreSplit, out: Path,
            extra_env: dict[str, str]) -> Path:
    env = {"MODEL_DIR": package, "PRECISION": precision, "ORT_INTRA_OP_THREADS": str(split.threads),
           "WORKERS": "1", "LOG_LEVEL": "warning", "API_KEY": "", **extra_env}
    contender = Contender(f"encoder-serve {precision}", "encoder_serve.service", env, precision)
    out.mkdir(parents=True, exist_ok=True)
    recordings = {mode: out / f"profile-{precision}-{mode}.collapsed" for mode in ("wall", "gil")}
    with tempfile.TemporaryDirectory() as tmp, \
            serve(contender, split.server, Path(tmp) / "server.log") as server:
        bodies = write_bodies(load_texts(DEFAULT_DATA), Path(tmp) / "bodies.txt")
        # load for longer than needed (py-spy takes a while to attach); stopped once both recordings are in
        load = subprocess.Popen(wrk_argv(server.url, bodies, concurrency, 10 * seconds + 60, split.client),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)  # let the load reach steady state
            for mode, path in recordings.items():
                subprocess.run(taskset(split.client, [
                    py_spy(), "record", "--pid", str(server.pid), "--subprocesses", "--threads",
                    "--rate", str(RATE_HZ), "--duration", str(seconds), "--format", "raw", "--output", str(path),
                    "--idle" if mode == "wall" else "--gil"]), check=True, capture_output=True)
        finally:
            load.terminate()
            load.wait()
    title = (f"Profile: encoder-serve {precision} under {concurrency} closed-loop clients, one text per "
             f"request ({Path(package).name}, {split.threads} compute thread(s), server on CPU "
             f"{','.join(map(str, split.server))}, wrk and py-spy on CPU {','.join(map(str, split.client))})")
    path = out / f"profile-{precision}.md"
    path.write_text(markdown(title, seconds, recordings["wall"].read_text(), recordings["gil"].read_text()))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_service",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="per recording (two recordings)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra service setting, e.g. MAX_BATCH_SIZE=1 (repeatable)")
    add_core_arguments(parser)
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    path = profile(args.package, args.precision, args.concurrency, args.seconds, CoreSplit.from_args(args),
                   Path(args.out), extra)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
