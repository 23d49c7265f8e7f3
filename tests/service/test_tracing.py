"""OpenTelemetry tracing, for real: the service exports OTLP/HTTP to a receiver that decodes the protobuf,
and the span tree, the caller's trace, sampling, the log line, the response header and the exemplars are
checked on what arrived. With tracing off, the SDK is not even imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from encoder_serve.service.metrics import SharedExemplars, read_exemplars
from encoder_serve.service.testing import LiveServer
from tests.otlp import Receiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER_KIND = 2  # SPAN_KIND_SERVER in the OTLP protobuf


@pytest.fixture(scope="module")
def traced(package, tmp_path_factory):
    log = tmp_path_factory.mktemp("traced") / "service.log"
    with Receiver() as receiver:
        # one worker: prometheus_client keeps exemplars only then
        env = {"WORKERS": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "encoder-serve-test",
               "OTEL_BSP_SCHEDULE_DELAY": "100", "LOG_LEVEL": "info"}
        with LiveServer(package, env=env, log_path=log) as server:
            yield server, receiver, log


def classify(server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + "/v1/classify", json={"inputs": ["i feel great", "so unfair"]}, headers=headers,
                      timeout=30)


def test_a_request_gives_a_span_tree_in_the_callers_trace_and_a_linked_batch_span(traced):
    server, receiver, _ = traced
    r = classify(server, {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01", "X-Request-ID": "traced-1"})
    assert r.status_code == 200
    spans = receiver.wait_for(lambda spans: sum(b.attributes["batch.size"] for b in spans if b.name == "batch"
                                                and any(t == TRACE for t, _ in b.links)) >= 2
                              and sum(s.trace_id == TRACE for s in spans) >= 3)
    request = next(s for s in spans if s.trace_id == TRACE and s.name == "POST /v1/classify")
    assert request.parent_span_id == CALLER_SPAN and request.kind == SERVER_KIND
    assert request.attributes["http.route"] == "/v1/classify"
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["http.response.status_code"] == 200
    assert request.resource["service.name"] == "encoder-serve-test" and "service.version" in request.resource
    children = {s.name: s for s in spans if s.trace_id == TRACE and s.parent_span_id == request.span_id}
    assert {"tokenize", "queue"} <= children.keys()
    assert children["tokenize"].attributes["encoder_serve.texts"] == 2
    assert request.start_ns <= children["queue"].start_ns <= children["queue"].end_ns <= request.end_ns
    batches = [s for s in spans if s.name == "batch" and (TRACE, request.span_id) in s.links]
    assert sum(b.attributes["batch.size"] for b in batches) >= 2  # both texts, in one batch or in two
    for batch in batches:
        assert batch.trace_id != TRACE and batch.parent_span_id == ""  # a batch is its own trace, linked
        assert batch.attributes["batch.padded_tokens"] >= batch.attributes["batch.tokens"] >= 1
        assert 0 <= batch.attributes["batch.padding_ratio"] < 1
    assert r.headers["traceresponse"] == f"00-{TRACE}-{request.span_id}-01"
    lines = [json.loads(line) for line in server.log_lines("traced-1")]
    assert lines and all(line["trace_id"] == TRACE for line in lines)


def test_a_sampled_out_request_exports_nothing(traced):
    server, receiver, _ = traced
    unsampled = "0af7651916cd43dd8448eb211c80319c"
    assert classify(server, {"traceparent": f"00-{unsampled}-b7ad6b7169203331-00"}).status_code == 200
    marker = "11111111111111111111111111111111"
    assert classify(server, {"traceparent": f"00-{marker}-b7ad6b7169203331-01"}).status_code == 200
    spans = receiver.wait_for(lambda spans: any(s.trace_id == marker for s in spans))
    assert not [s for s in spans if s.trace_id == unsampled]
    assert not [s for s in spans if s.name == "batch" and any(t == unsampled for t, _ in s.links)]


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "traceidratio"])
def test_a_ratio_sampler_samples_its_share_of_new_traces_and_follows_callers_only_when_parent_based(
        package, tmp_path, sampler):
    with Receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": "0.25"}
        with LiveServer(package, env=env, log_path=tmp_path / "service.log") as server:
            answers = [classify(server, {}) for _ in range(200)]
            sampled = [r for r in answers if "traceresponse" in r.headers]
            assert all(r.status_code == 200 for r in answers)
            assert 20 <= len(sampled) <= 80, len(sampled)  # 50 expected; outside this range: p < 1e-6
            exported = {r.headers["traceresponse"].split("-")[1] for r in sampled}
            spans = receiver.wait_for(lambda spans: exported <= {s.trace_id for s in spans})
            assert {s.trace_id for s in spans if s.name == "POST /v1/classify"} == exported  # and no other
            if sampler == "parentbased_traceidratio":  # a sampled caller is always followed
                for _ in range(5):
                    followed = classify(server, {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
                    assert followed.headers["traceresponse"].startswith(f"00-{TRACE}-")
                receiver.wait_for(lambda spans: sum(s.trace_id == TRACE and s.name == "POST /v1/classify"
                                                    for s in spans) == 5)


def test_the_latency_histogram_carries_trace_ids_as_exemplars_in_openmetrics(traced):
    server, _, _ = traced
    classify(server, {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
    openmetrics = httpx.get(server.ops_url + "/metrics",
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    exemplars = [line for line in openmetrics.splitlines()
                 if line.startswith("encoder_serve_request_duration_seconds_bucket") and " # {" in line]
    assert any(f'trace_id="{TRACE}"' in line for line in exemplars), exemplars[:3]
    plain = httpx.get(server.ops_url + "/metrics").text
    assert " # {" not in plain  # the classic text format has no exemplars


def exemplar_trace_ids(openmetrics: str) -> set[str]:
    return {re.search(r'trace_id="([0-9a-f]+)"', line).group(1) for line in openmetrics.splitlines()
            if line.startswith("encoder_serve_request_duration_seconds_bucket") and " # {" in line}


def test_with_several_workers_each_writes_its_exemplars_and_the_scrape_carries_them(package, tmp_path):
    """prometheus_client merges no exemplars across workers; ours travel through the multiprocess
    directory: both workers write theirs, and a scrape (answered by either) carries the requests' trace ids."""
    shared = tmp_path / "metrics"
    with Receiver() as receiver:
        env = {"WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(shared), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with LiveServer(package, env=env, log_path=tmp_path / "service.log") as server:
            sent = [f"{i + 1:032x}" for i in range(40)]
            for trace in sent:  # a connection each, so the kernel spreads them over both workers
                with httpx.Client() as client:
                    assert client.post(server.url + "/v1/classify", json={"inputs": "i feel great"},
                                       headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}).status_code == 200
            written = sorted(p.name for p in shared.glob("exemplars_*.json"))
            assert len(written) == 2, written
            seen = exemplar_trace_ids(httpx.get(server.ops_url + "/metrics", headers={
                "Accept": "application/openmetrics-text; version=1.0.0"}).text)
            assert seen & set(sent), seen  # (the start-up's readiness polls are traced too)
            assert " # {" not in httpx.get(server.url + "/metrics").text


def test_the_newest_exemplar_of_each_bucket_wins_across_workers(tmp_path):
    first, second = (SharedExemplars(tmp_path, (0.01, 0.1)) for _ in range(2))
    second.path = tmp_path / "exemplars_2.json"  # another worker's file (the name carries the pid)
    first.offer("/v1/classify", 0.005, {"trace_id": "a"})
    first.offer("/v1/classify", 0.05, {"trace_id": "b"})
    second.offer("/v1/classify", 0.006, {"trace_id": "c"})  # same bucket as "a", later
    second.offer("/v1/classify", 5.0, {"trace_id": "d"})  # past every bound: +Inf
    first.offer("/v1/classify", 0.004, {"trace_id": "e"})  # within a second of "a": not replaced
    merged = {key: e.labels["trace_id"] for key, e in read_exemplars(tmp_path).items()}
    assert merged == {("/v1/classify", "0.01"): "c", ("/v1/classify", "0.1"): "b", ("/v1/classify", "+Inf"): "d"}


def test_with_tracing_off_the_sdk_is_not_imported(package):
    code = ("import sys; from encoder_serve.service.app import create_app; "
            "from encoder_serve.service.settings import load_settings; "
            f"app = create_app(load_settings(model_dir={str(package)!r}, ops_port=0)); "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
