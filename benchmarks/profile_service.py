"""Where the service's CPU goes under load: py-spy samples encoder-serve while wrk drives it.

    python -m benchmarks.profile_service --package models/emotion [--concurrency 64] [--seconds 15]

The service runs pinned to the server cores as in benchmarks.run; wrk and py-spy share the client core.
py-spy samples every Python thread (event loop and model worker) and we attribute each sample to the
innermost frame that names a cost (tokenization, padding, ONNX Runtime, JSON, pydantic, HTTP, ...).
Writes profile-<precision>.md (shares, top functions) and profile-<precision>.collapsed (the raw stacks,
Brendan Gregg's collapsed format: open it at https://www.speedscope.app or with flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.loadgen import wrk
from benchmarks.machine import CoreSplit, taskset
from benchmarks.servers import Contender, RunningServer
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies

# (category, pattern on "function (file:line)"), first match wins; checked from the innermost frame out.
CATEGORIES = [
    ("model: ONNX Runtime run", r"onnxruntime_inference_collection\.py"),
    ("padding (pad_batch)", r"^pad_batch "),
    ("softmax / ranking (numpy)", r"^(softmax|rank) "),
    ("tokenization", r"^(tokenize|encode_batch|encode) |tokenization\.py"),
    ("prometheus metrics", r"prometheus_client"),
    ("logging", r"/logging/|service/logs\.py"),
    ("JSON encode/decode", r"orjson|/json/|^(render|json) .*(responses|requests)\.py"),
    ("pydantic validation / serialization", r"pydantic|fastapi/_compat|jsonable_encoder|serialize_response"),
    ("batching core (queue, scheduler)", r"service/batching\.py"),
    ("request path (inference.py)", r"service/inference\.py"),
    ("thread hand-offs (executor, futures)", r"concurrent/futures|/threading\.py|to_thread|run_in_executor"),
    ("HTTP parsing / writing (uvicorn)", r"uvicorn/"),
    ("routing, middleware, dependencies (starlette/fastapi)", r"starlette/|fastapi/|service/(api|middleware)"),
    ("event loop (asyncio, uvloop)", r"asyncio/|uvloop"),
]


def categorize(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def summarize(collapsed: str) -> tuple[collections.Counter, collections.Counter, dict[str, collections.Counter]]:
    """(samples per category, samples per leaf function, categories per thread) from collapsed stacks."""
    categories, leaves, threads = collections.Counter(), collections.Counter(), {}
    for line in collapsed.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text:
            continue
        frames = stack_text.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        category = categorize(frames)
        categories[category] += int(count)
        leaves[re.sub(r":\d+\)$", ")", frames[-1]) if frames else "?"] += int(count)
        threads.setdefault(thread, collections.Counter())[category] += int(count)
    return categories, leaves, threads


def markdown(title: str, categories, leaves, threads, top: int = 20) -> str:
    total = sum(categories.values()) or 1
    lines = [f"# {title}", "", f"{total} samples of busy Python threads (idle waits excluded).", "",
             "| where | share of samples |", "| --- | ---: |"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in categories.most_common()]
    lines += ["", "## Per thread", "", "| thread | samples | top categories |", "| --- | ---: | --- |"]
    for thread, counter in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(counter.values())
        tops = ", ".join(f"{c} {k / n:.0%}" for c, k in counter.most_common(4))
        lines.append(f"| {thread} | {n} | {tops} |")
    lines += ["", f"## Top {top} innermost frames", "", "| function (file) | share |", "| --- | ---: |"]
    lines += [f"| `{name}` | {n / total:.1%} |" for name, n in leaves.most_common(top)]
    return "\n".join(lines) + "\n"


def profile(package: str, precision: str, concurrency: int, seconds: int, split: CoreSplit, out: Path,
            extra_env: dict[str, str]) -> Path:
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise FileNotFoundError("py-spy not found (pip install py-spy)")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    env = {"MODEL_DIR": package, "PRECISION": precision, "ORT_INTRA_OP_THREADS": str(split.threads),
           "WORKERS": "1", "LOG_LEVEL": "warning", "API_KEY": "", **extra_env}
    contender = Contender(f"encoder-serve {precision}", "encoder_serve.service", env, precision)
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"profile-{precision}.collapsed"
    with tempfile.TemporaryDirectory() as tmp, \
            RunningServer(contender, split.server, Path(tmp) / "server.log") as server:
        bodies = write_bodies(load_texts(DEFAULT_DATA), Path(tmp) / "bodies.txt")
        load = threading.Thread(target=wrk, args=(server.url, bodies, concurrency, seconds + 4, split.client))
        load.start()
        subprocess.run(["sleep", "2"], check=True)  # let the load reach steady state
        subprocess.run(taskset(split.client, [py_spy, "record", "--pid", str(server.pid), "--subprocesses",
                                              "--threads", "--rate", "100", "--duration", str(seconds),
                                              "--format", "raw", "--output", str(collapsed)]),
                       check=True, capture_output=True)
        load.join()
    categories, leaves, threads = summarize(collapsed.read_text())
    title = (f"Profile: encoder-serve {precision}, {concurrency} closed-loop clients, one text per request "
             f"({Path(package).name}, {split.threads} thread(s), {seconds} s at 100 Hz)")
    path = out / f"profile-{precision}.md"
    path.write_text(markdown(title, categories, leaves, threads))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_service",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra service setting, e.g. MAX_BATCH_SIZE=1 (repeatable)")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    path = profile(args.package, args.precision, args.concurrency, args.seconds, CoreSplit.default(),
                   Path(args.out), extra)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
