"""The harness's own logic: goal verdicts, wrk accounting against a real HTTP server, profile attribution."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks import goals, request_path, thread_cpu
from benchmarks.loadgen import measure_point
from benchmarks.machine import CoreSplit
from benchmarks.profile_service import IDLE, gil_holders, wall_by_thread
from benchmarks.workload import DEFAULT_DATA, REPO, write_bodies

SHIPPED = REPO / "models" / "emotion"


def point(c: int, throughput: float, p50: float = 1.0) -> dict:
    return {"concurrency": c, "throughput": throughput, "p50_ms": p50, "server_cpu_ms_per_request": 1.0}


def run(kind: str, batching: bool, points: list[dict], precision: str = "fp32") -> dict:
    return {"kind": kind, "precision": precision, "batching": batching, "points": points}


LIMITS = {"fp32": {"texts_per_s": 1000.0, "best_batch_size": 32, "single_text_p50_ms": 3.0, "cpu_ms_per_text": 1.0,
                   "sweep": [{"batch_size": 1, "texts_per_s": 250.0}, {"batch_size": 32, "texts_per_s": 1000.0}]}}


def verdicts(runs: list[dict]) -> dict[str, bool | None]:
    return {g["goal"]: g["pass"] for g in goals.evaluate(LIMITS, runs)}


def multi(points: list[dict]) -> dict:
    return {**run("service-multi", True, points), "texts_per_request": goals.MULTI_TEXTS}


def test_goals_pass_when_every_ratio_is_met():
    runs = [run("service", True, [point(1, 200, p50=3.9), point(64, 820), point(128, 810)]),
            multi([point(1, 300), point(64, 960)])]
    assert verdicts(runs) == {"saturation": True, "saturation, 8 texts/request": True, "latency": True}


def test_goals_fail_below_their_ratios():
    runs = [run("service", True, [point(1, 200, p50=4.1), point(64, 790), point(256, 795)]),
            multi([point(64, 940)])]
    assert verdicts(runs) == {"saturation": False, "saturation, 8 texts/request": False, "latency": False}


def test_comparisons_report_batching_off_and_the_naive_baseline_without_judging():
    runs = [run("service", True, [point(64, 950), point(128, 900)]),
            run("service", False, [point(64, 300), point(128, 450)]),
            run("naive", False, [point(64, 200)])]
    found = {c["goal"]: c for c in goals.comparisons(LIMITS, runs)}
    assert found["batching on vs off"]["measured"] == 2.0 and found["batching on vs off"]["pass"] is None
    assert found["batching on vs off"]["detail"].endswith("best batch over batch 1: 4.00x")
    assert found["vs naive baseline"]["measured"] == 4.75


def test_goals_without_a_contender_are_not_judged():
    runs = [run("service", True, [point(1, 200), point(64, 950)])]
    assert verdicts(runs) == {"saturation": True, "saturation, 8 texts/request": None, "latency": True}


def test_profile_attributes_each_sample_to_the_innermost_named_cost():
    main = "thread (11): MainThread"
    wall = "\n".join([
        f"{main};Runner.run (asyncio/runners.py:118) 50",
        f"{main};Runner.run (asyncio/runners.py:118);classify (api.py:60);tokenize (runtime.py:77) 30",
        f"{main};Runner.run (asyncio/runners.py:118);RequestResponseCycle.send (uvicorn/protocols/h.py:1) 20",
        ("thread (12): model_0;_worker (concurrent/futures/thread.py:89);predict (runtime.py:90);"
        "run (onnxruntime/capi/onnxruntime_inference_collection.py:220) 100"),
    ])
    threads = wall_by_thread(wall)
    assert threads["MainThread"][1] == {IDLE: 50, "tokenization": 30, "HTTP parsing and writing (uvicorn)": 20}
    assert threads["model"][1] == {"model: ONNX Runtime run": 100}
    categories, _ = gil_holders(wall)
    assert categories["event loop (asyncio, uvloop)"] == 50  # with --gil, a sample in uvloop is work


class HalfFailing(BaseHTTPRequestHandler):
    """Answers 200 and 500 alternately, so wrk's error accounting can be checked exactly."""
    count = 0
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with HalfFailing.lock:
            HalfFailing.count += 1
            status = 200 if HalfFailing.count % 2 else 500
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # wrk hangs up mid-response when its time is up
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
def test_load_generator_counts_only_successful_requests_as_throughput(tmp_path: Path):
    server = QuietServer(("127.0.0.1", 0), HalfFailing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies = write_bodies(["first text", "second text", "third text"], tmp_path / "bodies.txt")
    split = CoreSplit.default()
    try:
        p = measure_point(f"http://127.0.0.1:{server.server_port}", os.getpid(), bodies, concurrency=1,
                          seconds=1, warmup_s=0, client_cpus=split.client, server_cpus=split.server)
    finally:
        server.shutdown()
    assert p.requests > 10
    assert abs(p.errors["status"] - p.requests / 2) <= 1
    assert p.ok == p.requests - p.errors["status"]
    assert p.throughput == pytest.approx(p.ok / p.seconds, rel=1e-3)
    assert p.p50_ms > 0 and p.p99_ms >= p.p50_ms


def test_bodies_carry_the_requested_number_of_texts(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    one = [json.loads(line) for line in write_bodies(texts, tmp_path / "a", 1).read_text().splitlines()]
    four = [json.loads(line) for line in write_bodies(texts, tmp_path / "b", 4).read_text().splitlines()]
    assert one == [{"inputs": t} for t in texts]
    assert four == [{"inputs": texts[0:4]}, {"inputs": texts[4:8]}]


def test_several_texts_per_request_stay_within_the_queue():
    from benchmarks.run import levels

    assert levels((1, 8, 32, 64, 128), 1) == [1, 8, 32, 64, 128]
    assert levels((1, 8, 32, 64, 128), 16) == [1, 8, 32]
    assert levels((64, 128), 16) == [64]


def core_args(server: str | None = None, client: str | None = None, threads: int | None = None):
    import argparse
    return argparse.Namespace(server_cpus=server, client_cpus=client, threads=threads)


def test_the_default_split_serves_on_the_whole_machine():
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    split = CoreSplit.from_args(core_args())
    assert split.server == cpus and split.client == cpus[-1:]
    assert split.threads == len(cpus)  # the limit and the naive baseline get a thread per core
    assert CoreSplit.from_args(core_args(threads=1)).threads == 1
    strict = CoreSplit.from_args(core_args(server="0", client="1"))  # the client on a core of its own
    assert (strict.server, strict.client, strict.threads) == ((0,), (1,), 1)


def test_the_limit_runs_whole_passes_with_several_batches_at_once():
    """Batches at once, each on its own thread: every batch of every pass runs exactly once per pass, so every
    length is in the measurement, and the arrangement is recorded."""
    from benchmarks.inprocess import time_batch_size
    from encoder_serve import onnx_runtime
    from encoder_serve.package import load_package
    from encoder_serve.tokenization import Encoder, load_tokenizer

    package = load_package(REPO / "models" / "emotion")
    session = onnx_runtime.session(package.model_path("fp32"), 1)
    encoder = Encoder(load_tokenizer(package.tokenizer_path, package.max_length))
    texts = [("word " * n).strip() for n in range(1, 41)]
    result = time_batch_size(session, encoder, texts, 4, 0.0, "length", lanes=2)
    assert result["lanes"] == 2
    assert result["batches"] > 0 and result["batches"] % 10 == 0  # 40 texts in batches of 4: passes of 10
    assert result["texts_per_s"] > 0 and result["cpu_ms_per_text"] > 0


def test_the_limit_table_names_each_arrangement_and_marks_the_best():
    from benchmarks.report import limits_table

    def row(batch, lanes, rate):
        return {"batch_size": batch, "order": "length", "lanes": lanes, "texts_per_s": rate}

    limit = {"threads": 2, "texts_per_s": 300.0, "best_batch_size": 2, "best_order": "length", "best_lanes": 2,
             "single_text_p50_ms": 1.0, "cpu_ms_per_text": 0.5,
             "sweep": [row(2, 1, 200.0), row(4, 1, 250.0), row(2, 2, 300.0), row(4, 2, 280.0)]}
    lines = limits_table({"int8": limit})
    assert "grouped by length, one at a time (2 threads) | 200 | 250 |" in lines[2]
    assert "grouped by length, 2 at once (1 thread each) | **300** | 280 |" in lines[3]
    assert goals.limit_name(limit) == "batches of 2 grouped by length, 2 at once (1 thread each)"


def test_against_a_two_arrangement_limit_the_other_arrangement_is_reported_as_a_comparison():
    limit = {"threads": 2, "texts_per_s": 1000.0, "best_batch_size": 32, "best_order": "length", "best_lanes": 2,
             "single_text_p50_ms": 1.0, "cpu_ms_per_text": 1.0,
             "sweep": [{"batch_size": 1, "order": "arrival", "lanes": 1, "texts_per_s": 300.0},
                       {"batch_size": 64, "order": "length", "lanes": 1, "texts_per_s": 800.0},
                       {"batch_size": 32, "order": "length", "lanes": 2, "texts_per_s": 1000.0}]}
    runs = [run("service", True, [point(64, 720.0)]), multi([point(64, 960.0)])]
    other = next(c for c in goals.comparisons({"fp32": limit}, runs) if c["goal"] == "vs one batch at a time")
    assert other["measured"] == 0.9 and other["pass"] is None
    assert "1 text/request: 0.90x, 8 texts/request: 1.20x" in other["detail"]
    assert "batches of 64 grouped by length, one at a time (2 threads)" in other["detail"]
    # the goals are judged against the better arrangement
    assert {g["goal"]: g["measured"] for g in goals.evaluate({"fp32": limit}, runs)}["saturation"] == 0.72


def test_a_sweep_table_shows_the_share_of_answers_refused_and_the_median_latency():
    from benchmarks.sweep import markdown

    def row(value, refused, requests, p50_ms=2.0):
        return {"texts_per_request": 1, "concurrency": 256, "value": value, "throughput": 1000.0, "p50_ms": p50_ms,
                "p99_ms": 10.0,
                "errors": {"status": refused}, "requests": requests, "server_cpu_ms_per_request": 0.5,
                "mean_batch": 8.0, "mean_padding": 0.05}

    machine = {"date": "2026-12-07", "cpu_model": "x", "cpus": 2, "server_cpus": [0, 1], "client_cpus": [1],
               "load_average_at_start": [0, 0, 0], "onnxruntime": "1", "wrk": "wrk", "git_commit": "abc"}
    table = markdown({"setting": "MAX_CONCURRENT_REQUESTS", "values": ["128", "512"], "machine": machine, "command": "x",
                      "precision": "int8", "rounds": 2, "duration_s": 10,
                      "rows": [row("128", 100, 500, 1.5), row("128", 0, 500, 2.5), row("512", 0, 1000)]})
    assert "| 1 | 256 | 128 | 1,000 [1,000–1,000] | 2.00 [1.50–2.50] | 10 | 10.0% |" in table
    assert "| 1 | 256 | 512 | 1,000 [1,000–1,000] | 2.00 [2.00–2.00] | 10 | 0.0% |" in table



def test_the_request_path_round_answers_every_request_and_measures_the_event_loop():
    row = request_path.one_round(str(SHIPPED), DEFAULT_DATA, requests=300, concurrency=16, texts_per_request=2)
    assert row["statuses"] == {200: 300}
    assert 0 < row["loop_cpu_us_per_request"] <= row["process_cpu_us_per_request"]
    assert row["code"] == str(REPO)


def test_the_request_path_baseline_runs_the_other_checkouts_code(tmp_path):
    """--baseline must import encoder_serve from the other checkout, not from this one: a copy of the
    package whose classify answers 503 shows which code ran."""
    shutil.copytree(REPO / "encoder_serve", tmp_path / "encoder_serve", ignore=shutil.ignore_patterns("__pycache__"))
    api = tmp_path / "encoder_serve" / "service" / "api.py"
    docstring = '        """Auth, deadline, body, the batched model, ranked labels."""\n'
    assert docstring in api.read_text()
    api.write_text(api.read_text().replace(docstring, docstring + "        from encoder_serve.service.http import "
                                           "ApiError\n        raise ApiError(503, 'the baseline')\n"))
    args = argparse.Namespace(package=str(SHIPPED), data=DEFAULT_DATA, requests=50, concurrency=4, texts_per_request=1,
                              log_level="info")
    row = request_path.measure(tmp_path, args)
    assert row["code"] == str(tmp_path)
    assert row["statuses"] == {"503": 50}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
def test_thread_cpu_tells_the_event_loop_from_the_model_threads():
    """Against the real service: the threads are found by the names the service gives them in the kernel,
    and the groups add up to the whole tree's CPU. Enough clients that requests find others in progress
    and their batches go to the model threads (a lone request's runs on the event loop's thread)."""
    split = CoreSplit.default()
    results = thread_cpu.measure(str(SHIPPED), [16], 1, seconds=1, warmup_s=0, split=split)
    (p,) = results["points"]
    assert p["ok"] > 0
    groups = p["groups"]
    for group in (thread_cpu.EVENT_LOOP, thread_cpu.GROUPS["model"], thread_cpu.GROUPS["access-log"]):
        assert group in groups, sorted(groups)
    assert groups[thread_cpu.GROUPS["model"]]["threads"] >= 1
    assert groups[thread_cpu.EVENT_LOOP]["user_us"] > 0 and groups[thread_cpu.GROUPS["model"]]["user_us"] > 0
    total = sum(g["user_us"] + g["system_us"] for g in groups.values())
    # every thread found: they add up to the processes' own CPU totals (each reading rounds to clock ticks)
    ticks = sum(g["threads"] for g in groups.values()) * 2e6 / thread_cpu.CLOCK_TICKS / p["ok"]
    assert abs(total - p["process_tree_us_per_text"]) <= 0.1 * p["process_tree_us_per_text"] + ticks
    assert "| model threads |" in thread_cpu.report(results)


def test_tokenize_cost_times_both_ways_on_the_same_ids():
    from benchmarks import tokenize_cost

    results = tokenize_cost.measure(str(SHIPPED), DEFAULT_DATA, passes=1, texts_per_call=(1, 8))
    assert [(r["way"], r["texts_per_call"]) for r in results["rows"]] == [
        ("full pipeline (encode_batch)", 1), ("fast path (Encoder.ids)", 1),
        ("full pipeline (encode_batch)", 8), ("fast path (Encoder.ids)", 8)]
    assert all(r["us_per_text"] > 0 for r in results["rows"])
    assert results["ascii_share"] == 1.0  # every emotion test text takes the fast path
    assert "| fast path (Encoder.ids) | 8 |" in tokenize_cost.report(results)


def test_sweep_rounds_alternate_the_order_of_the_values():
    from benchmarks.sweep import round_order

    assert [round_order(["a", "b", "c"], r) for r in range(3)] == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
