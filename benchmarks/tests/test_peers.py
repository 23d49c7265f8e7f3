"""`make bench-peers`'s own logic: wrk accounting, answer parsing and checking, goals, the report.
No network, no peer installed: seconds."""

from __future__ import annotations

import json

import pytest

from benchmarks.peers import report, stacks, venvs
from benchmarks.peers.run import compare_scores, point_from_wrk, write_bodies

LABELS = ["anger", "fear", "joy", "love", "sadness", "surprise"]
SCORES = dict(zip(LABELS, [0.01, 0.02, 0.9, 0.03, 0.03, 0.01], strict=True))


def wrk_summary(requests: int, status: int = 0, timeout: int = 0, read: int = 0) -> dict:
    return {"duration_us": 2_000_000, "requests": requests,
            "errors": {"connect": 0, "read": read, "write": 0, "status": status, "timeout": timeout},
            "latency_us": {"mean": 5000.0, "max": 90000, "50": 4000, "90": 8000, "95": 9000, "99": 20000,
                           "99.9": 50000}}


def test_only_2xx_answers_count_as_throughput():
    p = point_from_wrk(wrk_summary(1000, status=150, timeout=50), 64, client_cpu_s=0.1, server_cpu_s=3.0,
                       client_cpus=1, server_cpus=2)
    assert (p.requests, p.ok, p.throughput) == (1000, 800, 400.0)
    assert (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms) == (4.0, 8.0, 20.0, 90.0)
    assert p.server_cpu_ms_per_request == pytest.approx(3.0)  # CPU per request sent, failed ones included
    assert p.server_cpu_utilization == pytest.approx(0.75)
    assert p.client_cpu_utilization == pytest.approx(0.05)


def test_a_contender_that_only_fails_has_no_throughput():
    assert point_from_wrk(wrk_summary(500, status=500), 8, 0.1, 1.0, 1, 2).throughput == 0.0


def test_every_stack_answer_parses_to_label_scores():
    encoder_serve = {"model": "emotion@1.1.0", "predictions": [
        [{"label": label, "score": score} for label, score in sorted(SCORES.items(), key=lambda kv: -kv[1])]]}
    mlserver = {"model_name": "emotion", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["joy"]},
        {"name": "scores", "datatype": "FP32", "shape": [1, 6], "data": [SCORES[label] for label in LABELS]}]}
    assert stacks.encoder_serve_scores(encoder_serve, LABELS) == SCORES
    assert stacks.dict_scores(dict(SCORES), LABELS) == SCORES
    assert stacks.bentoml_scores([dict(SCORES)], LABELS) == SCORES
    assert stacks.mlserver_scores(mlserver, LABELS) == SCORES


@pytest.mark.parametrize("parse, answer", [
    (stacks.encoder_serve_scores, {"detail": "not found"}),
    (stacks.dict_scores, {"anger": 1.0}),  # labels missing
    (stacks.dict_scores, {**SCORES, "extra": 0.0}),
    (stacks.bentoml_scores, [dict(SCORES), dict(SCORES)]),  # two answers to one text
    (stacks.mlserver_scores, {"outputs": [{"name": "scores", "shape": [1, 6], "data": [0.1] * 6}]}),
    (stacks.mlserver_scores, {"outputs": [  # the label output disagrees with the scores
        {"name": "label", "shape": [1], "data": ["anger"]},
        {"name": "scores", "shape": [1, 6], "data": [SCORES[label] for label in LABELS]}]}),
])
def test_an_answer_that_is_not_a_classification_is_refused(parse, answer):
    with pytest.raises(stacks.AnswerError):
        parse(answer, LABELS)


def test_scores_must_match_the_model_not_just_the_labels():
    assert compare_scores(dict(SCORES), SCORES) == ""
    assert compare_scores({**SCORES, "joy": 0.90005}, SCORES) == ""
    assert "joy" in compare_scores({**SCORES, "joy": 0.7, "anger": 0.11}, SCORES)
    assert "labels" in compare_scores({"positive": 1.0}, SCORES)


def test_every_contender_gets_the_body_its_api_expects(tmp_path):
    bodies = {s.venv or s.key: s.body('she said "hi"') for s in stacks.contenders(2)}
    assert bodies["encoder-serve"] == bodies["naive"] == {"inputs": 'she said "hi"'}
    assert bodies["bentoml"] == {"texts": ['she said "hi"']}
    assert bodies["ray"] == {"text": 'she said "hi"'}
    assert bodies["mlserver"]["inputs"][0]["data"] == ['she said "hi"']
    mlserver = next(s for s in stacks.contenders(2) if s.venv == "mlserver")
    path = write_bodies(mlserver, ["one", "two\nlines"], tmp_path / "bodies.txt")
    lines = path.read_text().splitlines()  # wrk_rotate.lua reads one body per line
    assert [json.loads(line)["inputs"][0]["data"][0] for line in lines] == ["one", "two\nlines"]


def test_each_peer_runs_in_every_shape_asked_for_from_one_environment():
    shapes = stacks.parse_shapes("auto", 2)
    assert shapes == [(1, 2), (2, 1)] and stacks.parse_shapes("auto", 1) == [(1, 1)]
    assert stacks.parse_shapes("1x2, 4x1", 2) == [(1, 2), (4, 1)]
    everyone = stacks.contenders(2, shapes)
    peers = [s for s in everyone if s.kind == "peer"]
    assert sorted(s.key for s in peers) == ["bentoml-1x2", "bentoml-2x1", "mlserver-1x2", "mlserver-2x1",
                                            "ray-1x2", "ray-2x1"]
    assert {s.venv for s in peers} == {"bentoml", "mlserver", "ray"}
    assert next(s for s in peers if s.key == "ray-2x1").display_name("2.60.0") == "Ray Serve 2.60.0 (2 x 1 thread)"
    assert [s.key for s in everyone if s.selected_by(["encoder-serve", "bentoml", "ray-2x1"])] == [
        "encoder-serve", "bentoml-1x2", "bentoml-2x1", "ray-2x1"]
    assert [s.key for s in stacks.contenders(2)][:2] == ["encoder-serve", "naive"]  # one shape by default: 1 x 2


def test_peers_are_pinned_and_share_the_benchmarks_onnx_runtime():
    peers = [s for s in stacks.contenders(2) if s.kind == "peer"]
    assert {s.venv for s in peers} == {"bentoml", "mlserver", "ray"}
    for stack in peers:
        reqs = venvs.requirements(stack)
        assert all("==" in r for r in reqs), reqs
        assert any(r.startswith("onnxruntime==") for r in reqs)


def test_install_error_keeps_pips_errors_not_its_index_warnings():
    log = ("$ pip install x\nWARNING: Location 'file:///opt/pypi/simple/x/' is ignored\n"
           "Collecting x\nERROR: Could not find a version that satisfies the requirement x==9\n"
           "ERROR: No matching distribution found for x==9\n")
    assert venvs.install_error(log) == ("ERROR: Could not find a version that satisfies the requirement x==9 / "
                                        "ERROR: No matching distribution found for x==9")


def point(c: int, throughput: float, p50: float) -> dict:
    return {"concurrency": c, "throughput": throughput, "p50_ms": p50, "p90_ms": p50, "p99_ms": 2 * p50,
            "requests": int(throughput), "ok": int(throughput), "server_cpu_ms_per_request": 1.0,
            "client_cpu_utilization": 0.05, "errors": {"connect": 0, "read": 0, "write": 0, "status": 0,
                                                        "timeout": 0}}


def contender(name: str, kind: str, at1: tuple[float, float], at64: tuple[float, float]) -> dict:
    return {"name": name, "kind": kind, "points": [point(1, *at1), point(64, *at64)], "config": {"workers": 1},
            "route": "/x", "request_body": {"text": "..."}}


def verdicts(runs, not_measured=None) -> dict:
    return {g["goal"]: g["pass"] for g in report.evaluate(runs, not_measured)}


def test_goals_compare_with_the_best_peer_at_each_concurrency():
    runs = [contender("encoder-serve", "service", (300, 3.0), (900, 70)),
            contender("A", "peer", (100, 9.0), (500, 120)), contender("B", "peer", (200, 3.5), (590, 100)),
            contender("naive", "naive", (400, 2.0), (1000, 60))]  # the naive app is not a peer
    goals = {g["goal"]: g for g in report.evaluate(runs)}
    assert goals["throughput"]["pass"] and goals["throughput"]["measured"] == pytest.approx(900 / 590, abs=1e-3)
    assert "against B 590" in goals["throughput"]["detail"]
    assert goals["latency"]["pass"] and goals["latency"]["measured"] == pytest.approx(0.5)


def test_goals_fail_on_the_strongest_peer():
    runs = [contender("encoder-serve", "service", (300, 3.0), (880, 70)),
            contender("A", "peer", (100, 2.9), (500, 120)), contender("B", "peer", (200, 9.0), (600, 100))]
    assert verdicts(runs) == {"throughput": False, "latency": False}  # 880 < 1.5 x 600; 3.0 ms >= 2.9 ms
    tie = [contender("encoder-serve", "service", (300, 3.0), (900, 70)), contender("A", "peer", (100, 3.0), (600, 1))]
    assert verdicts(tie) == {"throughput": True, "latency": False}  # "lower than", so a tie fails


def test_without_peers_the_goals_are_not_measured_and_say_who_is_missing():
    runs = [contender("encoder-serve", "service", (300, 3.0), (900, 70))]
    missing = [{"contender": "BentoML", "kind": "peer", "stage": "install", "reason": "no wheel"}]
    goals = report.evaluate(runs, missing)
    assert [g["pass"] for g in goals] == [None, None]
    assert all("not measured: BentoML" in g["detail"] for g in goals)
    partial = report.evaluate(runs + [contender("A", "peer", (100, 9.0), (500, 120))], missing)
    assert [g["pass"] for g in partial] == [True, True]
    assert all(g["detail"].endswith("not measured: BentoML") for g in partial)


def results(quick: bool = False) -> dict:
    runs = [contender("encoder-serve", "service", (300, 3.0), (900, 70)),
            contender("BentoML 1.4.40", "peer", (100, 9.0), (500, 120))]
    limit = {"texts_per_s": 1000.0, "best_batch_size": 16, "best_order": "length", "single_text_p50_ms": 1.5,
             "cpu_ms_per_text": 1.9}
    return {"machine": {"date": "2026-12-03 10:00 UTC", "cpu_model": "AMD EPYC", "cpus": 2, "server_cpus": [0, 1],
                        "client_cpus": [1], "load_average_at_start": [0.5, 0.5, 0.5], "onnxruntime": "1.32.0",
                        "wrk": "wrk 4.1.0", "git_commit": "abc1234"},
            "package": {"ref": "emotion@1.1.0", "size": "4 layers", "precision": "int8", "file": "model.int8.onnx"},
            "settings": {"duration_s": 10, "warmup_s": 2, "quick": quick, "peer_shapes": ["1x2", "2x1"]},
            "limits": {"1 thread": limit, "2 threads": {**limit, "texts_per_s": 1500.0}},
            "runs": runs, "not_measured": [{"contender": "Ray Serve", "kind": "peer", "stage": "install",
                                            "reason": "ERROR: no wheel for this Python"}],
            "goals": report.evaluate(runs)}


def test_markdown_has_one_row_per_point_the_goals_and_what_was_not_measured(tmp_path):
    text = report.write_markdown(results(), tmp_path / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| encoder-serve |", "| BentoML 1.4.40 |"))]
    assert len(rows) == 4
    assert "| encoder-serve | 64 | 900 | 70.00 |" in text
    assert "**Not measured: Ray Serve** (install): ERROR: no wheel for this Python" in text
    assert "| throughput |" in text and "1.80x" in text and "**pass**" in text
    assert "Smoke run" not in text and "threads: 1x2, 2x1." in text
    assert "Smoke run" in report.write_markdown(results(quick=True), tmp_path / "quick.md").read_text()


def test_goal_lines_say_pass_fail_or_not_measured():
    lines = report.goal_lines([{"goal": "throughput", "pass": True, "detail": "a"},
                               {"goal": "latency", "pass": None, "detail": "b"}])
    assert lines[0].split()[:3] == ["goal", "throughput", "PASS"]
    assert "NOT MEASURED" in lines[1]


def test_plot_is_written(tmp_path):
    path = report.plot(results(), tmp_path / "plot.png")
    assert path.stat().st_size > 10_000
