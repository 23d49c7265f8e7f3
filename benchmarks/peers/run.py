"""`python -m benchmarks.peers.run` (= `make bench-peers`): encoder-serve against other serving stacks.

1. Peers' environments: BentoML, MLServer and Ray Serve, each in build/peers/<peer>/venv (created on first
   use, pinned); one that does not install is reported as not measured and the rest run.
2. The in-process limit (benchmarks.inprocess) on the server cores: with the ONNX Runtime threads
   `make bench` gives the limit, and with one thread per server core (what every peer's model gets).
3. Every contender in turn (encoder-serve, the naive FastAPI + ONNX Runtime app, the peers), on the same
   cores, serving the same package file: started, its answer to one text checked against the model's
   own scores, then closed-loop wrk at each concurrency, one text per request, warm-up then N seconds.
4. The two goals against the peers (benchmarks.peers.report), results.json, results.md and
   throughput_latency.png in benchmarks/results/peers/ (a --quick smoke run: build/peers/results-quick/).

A full run takes about 12 minutes once the environments exist (installing them the first time: about 5 more).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.goals import limit_name
from benchmarks.loadgen import Point, mode_from_args, wrk
from benchmarks.machine import CoreSplit, add_core_arguments, describe, process_tree_cpu_seconds
from benchmarks.peers import report, stacks, venvs
from benchmarks.peers.servers.peer_model import Classifier
from benchmarks.run import measure_limit, package_summary
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts
from encoder_serve.package import load_package
from encoder_serve.service.backend import choose_precision
from encoder_serve.service.testing import ServerProcess, free_port

FULL = {"concurrency": (1, 8, 32, 64, 128, 256), "duration_s": 10, "warmup_s": 2, "limit_s": 2.0}
QUICK = {"concurrency": (1, 8, 64), "duration_s": 2, "warmup_s": 1, "limit_s": 0.3}
BUILD = REPO / "build" / "peers"
SCORE_TOLERANCE = 1e-4  # same file, same ONNX Runtime, one text: the scores agree to float precision
STARTUP_TIMEOUT_S = 240.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def point_from_wrk(summary: dict, concurrency: int, client_cpu_s: float, server_cpu_s: float,
                   client_cpus: int, server_cpus: int) -> Point:
    """One measured point from wrk_rotate.lua's WRK_JSON summary, counted as benchmarks.loadgen counts it:
    only responses that are neither non-2xx nor timed out are throughput."""
    duration = summary["duration_us"] / 1e6
    requests = summary["requests"]
    ok = max(requests - summary["errors"]["status"] - summary["errors"]["timeout"], 0)
    lat = summary["latency_us"]
    return Point(
        concurrency=concurrency, seconds=round(duration, 3), requests=requests, ok=ok, errors=summary["errors"],
        throughput=ok / duration, p50_ms=lat["50"] / 1000, p90_ms=lat["90"] / 1000, p95_ms=lat["95"] / 1000,
        p99_ms=lat["99"] / 1000, max_ms=lat["max"] / 1000,
        client_cpu_us_per_request=client_cpu_s / max(requests, 1) * 1e6,
        client_cpu_utilization=client_cpu_s / duration / client_cpus,
        server_cpu_ms_per_request=server_cpu_s / max(requests, 1) * 1000,
        server_cpu_utilization=server_cpu_s / duration / server_cpus)


def measure_point(url: str, route: str, server_pid: int, bodies: Path, concurrency: int, seconds: int,
                  warmup_s: int, split: CoreSplit) -> Point:
    """benchmarks.loadgen.measure_point on any route: warm-up (discarded), then one measured wrk run with
    the server's whole process tree (workers, Ray's daemons) and wrk's CPU time accounted."""
    if warmup_s > 0:
        wrk(url, bodies, concurrency, warmup_s, split.client, route)
    before = process_tree_cpu_seconds(server_pid)
    summary, client_cpu = wrk(url, bodies, concurrency, seconds, split.client, route)
    server_cpu = process_tree_cpu_seconds(server_pid) - before
    return point_from_wrk(summary, concurrency, client_cpu, server_cpu, len(split.client), len(split.server))


def compare_scores(got: dict[str, float], expected: dict[str, float], tolerance: float = SCORE_TOLERANCE) -> str:
    """"" when `got` is the model's answer (same labels, every score within `tolerance`), else why not."""
    if sorted(got) != sorted(expected):
        return f"labels {sorted(got)}, expected {sorted(expected)}"
    worst = max(expected, key=lambda label: abs(got[label] - expected[label]))
    diff = abs(got[worst] - expected[worst])
    if diff > tolerance:
        return f"score of {worst!r} is {got[worst]:.6f}, the model gives {expected[worst]:.6f} (|diff| {diff:.2e})"
    return ""


def post_json(url: str, body: dict, timeout: float = 30.0):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise stacks.AnswerError(f"HTTP {e.code}: {e.read()[:300]!r}") from None


def check_answer(stack: stacks.Stack, url: str, text: str, expected: dict[str, float]) -> dict:
    """One real classification through the contender's API, compared with the model's own scores."""
    answer = post_json(url + stack.route, stack.body(text))
    got = stack.scores(answer, list(expected))
    problem = compare_scores(got, expected)
    if problem:
        raise stacks.AnswerError(problem)
    top = max(got, key=got.__getitem__)
    return {"text": text, "label": top, "score": round(got[top], 6),
            "max_abs_diff": max(abs(got[k] - expected[k]) for k in expected)}


def process_tree(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of `pid` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            start[int(entry.name)] = fields[19]
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        if p in start:
            out.append((p, start[p]))
        stack.extend(children.get(p, []))
    return out


def kill_leftovers(tree: list[tuple[int, str]]) -> list[str]:
    """SIGKILL the processes of `tree` (recorded while the server ran) that outlived its shutdown; a pid
    is killed only if it still has the same start time, so a reused pid is never hit. Returns their names."""
    killed = []
    for pid, started in tree:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[19] == started and fields[0] != "Z":
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"{pid} ({stat[stat.find('(') + 1: stat.rfind(')')]})")
            except ProcessLookupError:
                pass
    return killed


class PeerProcess(ServerProcess):
    """A ServerProcess whose stop also ends what the server started and left behind (Ray's daemons, a
    stack's worker processes), found from the process tree recorded just before the stop."""

    def stop(self, timeout: float = 30.0) -> int | None:
        tree = process_tree(self.process.pid) if self.process is not None else []
        code = super().stop(timeout)
        if killed := kill_leftovers(tree):
            log(f"{self.name}: killed what its shutdown left running: {', '.join(killed)}")
        return code


def write_bodies(stack: stacks.Stack, texts: list[str], path: Path) -> Path:
    """One request body per line, in the format the contender's API expects (what wrk_rotate.lua sends)."""
    path.write_text("".join(json.dumps(stack.body(t)) + "\n" for t in texts))
    return path


def measure_contender(stack: stacks.Stack, python: Path, model_env: dict[str, str], split: CoreSplit,
                      mode: dict, texts: list[str], expected: dict[str, float], tmp: Path, runs: list[dict]) -> None:
    """Start, check, load at each concurrency, stop; the run joins `runs` once its answer is checked, so the
    points measured before a failure are kept. Raises RuntimeError/TimeoutError/OSError/AnswerError."""
    ports = {name: free_port() for name in stack.ports}
    launch = stack.launch(stack, python, ports, model_env)
    version = venvs.versions(python, [stack.version_of])[stack.version_of] if stack.version_of else ""
    run = {"key": stack.key, "stack": stack.venv or stack.key, "name": stack.display_name(version),
           "kind": stack.kind, "version": version,
           "workers": stack.workers, "threads": stack.threads, "config": stack.config, "route": stack.route, "request_body": stack.body("..."),
           "command": launch.argv, "environment": {k: v for k, v in launch.env.items() if not k.endswith("PORT")},
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "points": []}
    bodies = write_bodies(stack, texts, tmp / f"bodies-{stack.key}.txt")
    server = PeerProcess(launch.argv, ports["http"], launch.env, ready_path=launch.ready_path, cpus=split.server,
                         log_path=BUILD / "logs" / f"{stack.key}.log", startup_timeout=STARTUP_TIMEOUT_S,
                         name=run["name"])
    began = time.monotonic()
    with server:
        run["startup_s"] = round(time.monotonic() - began, 1)
        run["check"] = check_answer(stack, server.url, texts[0], expected)
        log(f"{run['name']}: up in {run['startup_s']} s, answer checked ({run['check']['label']}, "
            f"|diff| {run['check']['max_abs_diff']:.1e})")
        runs.append(run)
        for c in mode["concurrency"]:
            point = measure_point(server.url, stack.route, server.pid, bodies, c, mode["duration_s"],
                                  mode["warmup_s"], split)
            run["points"].append(point.as_dict())
            log(f"{run['name']:34} c={c:<4} {point.throughput:8,.0f} req/s  p50 {point.p50_ms:7.2f} ms  "
                f"p99 {point.p99_ms:7.2f} ms  non-2xx/timeouts {point.requests - point.ok}  "
                f"client CPU {point.client_cpu_utilization:.0%}")


def prepare(selected: list[stacks.Stack]) -> dict[str, tuple[Path | None, str]]:
    """The python each contender runs on, or why it has none; peers' environments installed in parallel."""
    out = {s.key: (stacks.benchmark_python(), "") for s in selected if not s.requirements}
    peers = list({s.venv: s for s in selected if s.requirements}.values())  # one environment per stack
    if peers:
        log(f"environments: {', '.join(s.name for s in peers)} under {BUILD} (each installed on first use)")
        with ThreadPoolExecutor(len(peers)) as pool:
            ready = dict(zip((s.venv for s in peers), pool.map(lambda s: venvs.ensure(s, BUILD), peers), strict=True))
        out.update({s.key: ready[s.venv] for s in selected if s.requirements})
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"), help="model package directory")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="emotion data directory (test.jsonl)")
    parser.add_argument("--out", help="results directory (default benchmarks/results/peers; --quick: "
                                      "build/peers/results-quick, never committed)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1, 8, 64 clients, 2 s per point")
    parser.add_argument("--concurrency", help="comma-separated client counts")
    parser.add_argument("--duration", type=int, help="seconds per measured point")
    parser.add_argument("--only", help="comma-separated contenders to run: encoder-serve, naive, a peer stack "
                                       "(bentoml, mlserver, ray: every shape) or one shape (bentoml-2x1); default: all")
    parser.add_argument("--peer-shapes", help="peers' model processes x ONNX Runtime threads each, comma-separated "
                                              "(e.g. 1x2,2x1); default auto: one process with a thread per server "
                                              "CPU, and one process per server CPU with one thread each "
                                              "(with --threads N: 1xN)")
    add_core_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("benchmarks.peers: error: wrk not found (apt-get install wrk)")
        return 2
    mode = mode_from_args(args, QUICK, FULL)
    split = CoreSplit.from_args(args)
    threads = args.threads or len(split.server)  # every peer's model: one thread per server core
    out = Path(args.out) if args.out else (BUILD / "results-quick" if args.quick
                                           else REPO / "benchmarks" / "results" / "peers")
    out.mkdir(parents=True, exist_ok=True)
    (BUILD / "logs").mkdir(parents=True, exist_ok=True)

    package = load_package(args.package)
    precision = choose_precision(package, "auto")  # the file encoder-serve serves by default
    model_env = {"PEER_PACKAGE": str(package.path.resolve()), "PEER_PRECISION": precision}
    shapes = stacks.parse_shapes(args.peer_shapes or ("auto" if not args.threads else f"1x{threads}"),
                                 len(split.server))
    selected = [s for s in stacks.contenders(threads, shapes) if not args.only or s.selected_by(args.only.split(","))]
    results = {"machine": describe(split),
               "package": {**package_summary(package), "precision": precision,
                           "file": package.model_path(precision).name},
               "settings": {**mode, "quick": args.quick, "peer_threads": threads, "limit_threads": split.threads,
                            "peer_shapes": [f"{w}x{t}" for w, t in shapes],
                            "loadgen": "wrk, closed loop, one text per request (benchmarks/wrk_rotate.lua), "
                                       "bodies in each contender's own request format",
                            "model_code": "benchmarks/peers/servers/peer_model.py (encoder_serve.tokenization "
                                          "and encoder_serve.onnx_runtime) in every peer"},
               "limits": {}, "runs": [], "not_measured": []}
    log(f"machine: {report.machine_line(results)}")
    log(f"package {package.ref}, {precision} ({results['package']['file']}); peers as model processes x ONNX "
        f"Runtime threads: {', '.join(results['settings']['peer_shapes'])}")

    pythons = prepare(selected)
    for stack in selected:
        if pythons[stack.key][0] is None:
            results["not_measured"].append({"contender": stack.display_name(), "kind": stack.kind, "stage": "install",
                                            "reason": pythons[stack.key][1]})
            log(f"NOT MEASURED: {stack.display_name()}: {pythons[stack.key][1]}")

    for label, limit_threads in (("limit", split.threads), ("limit, all server cores", len(split.server))):
        if label != "limit" and limit_threads == split.threads:
            continue
        limit = measure_limit(package, precision, split, mode["limit_s"], args.data, limit_threads)
        results["limits"][f"{limit_threads} thread{'s' * (limit_threads > 1)}"] = limit
        log(f"in-process {precision}, {limit_threads} thread(s): {limit['texts_per_s']:,.0f} texts/s "
            f"({limit_name(limit)}), single text {limit['single_text_p50_ms']:.2f} ms")

    texts = load_texts(args.data)
    reference = Classifier(str(package.path), precision, threads)
    expected = reference([texts[0]])[0]
    with tempfile.TemporaryDirectory() as tmp:
        for stack in selected:
            python = pythons[stack.key][0]
            if python is None:
                continue
            try:
                measure_contender(stack, python, model_env, split, mode, texts, expected, Path(tmp), results["runs"])
            except (RuntimeError, TimeoutError, OSError, stacks.AnswerError) as e:
                why = str(e).strip()
                partial = next((r for r in results["runs"] if r["key"] == stack.key), None)
                stage = ("answer check" if isinstance(e, stacks.AnswerError) else "start or answer check" if partial is None
                         else "load, after " + (", ".join(f"c={p['concurrency']}" for p in partial["points"])
                                                or "no point") + " (those points are kept)")
                results["not_measured"].append({"contender": stack.display_name(), "kind": stack.kind, "stage": stage,
                                                "reason": why[-1500:]})
                log(f"NOT MEASURED: {stack.display_name()} ({stage}): {why[-1500:]} (log {BUILD / 'logs' / stack.key}.log)")

    results["goals"] = report.evaluate(results["runs"], results["not_measured"])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write_markdown(results, out / "results.md")
    report.plot(results, out / "throughput_latency.png")
    for line in report.goal_lines(results["goals"]):
        log(line)
    for missing in results["not_measured"]:
        log(f"NOT MEASURED: {missing['contender']} ({missing['stage']})")
    log(f"wrote {out / 'results.json'}, results.md, throughput_latency.png")
    return 1 if results["not_measured"] else 0


if __name__ == "__main__":
    sys.exit(main())
