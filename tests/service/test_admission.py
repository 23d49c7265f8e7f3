"""Admission, health and the route table in-process: refusals before any work, liveness that means "can
still serve", and a table that lists exactly the routes the application has."""

from __future__ import annotations

import asyncio
import gc
import time

import httpx
import pytest
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from starlette.routing import Mount, Route

from encoder_serve.service import routes
from encoder_serve.service.admission import OVERRUN_REQUESTS, Admission
from encoder_serve.service.app import create_app
from encoder_serve.service.batching import Batcher, DeadlineExceeded
from encoder_serve.service.metrics import ServiceMetrics
from encoder_serve.service.probes import GC_REPORT_S, STALL_S, STUCK_S, GcPauses, Health, LoopLag, OpsServer
from encoder_serve.service.settings import load_settings
from encoder_serve.service.testing import free_port
from tests.prometheus import parse, sample


@pytest.fixture
def anyio_backend():
    return "asyncio"


CLASSIFY_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"20")]


def admission(**kw) -> tuple[Admission, CollectorRegistry]:
    registry = CollectorRegistry()
    options = {"max_body_bytes": 1000, "max_concurrent_requests": 2, "max_queue_delay_ms": 300,
               "max_concurrent_explains": 1} | kw
    return Admission(ServiceMetrics(registry), **options), registry


def test_work_queued_beyond_the_budget_is_refused_with_a_retry_after_of_when_it_will_fit():
    gate, registry = admission()
    gate.work_ahead_s = lambda: 2.2
    refusal = gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS)
    assert refusal.status == 429 and refusal.reason == "queue_delay"
    assert refusal.headers["Retry-After"] == "2"  # 2.2 s queued, 0.3 s allowed: under the budget in 1.9 s
    assert "MAX_QUEUE_DELAY_MS (300 ms)" in refusal.message
    assert registry.get_sample_value("encoder_serve_rejected_total", {"reason": "queue_delay"}) == 1
    gate.work_ahead_s = lambda: 0.1
    assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None


def test_a_late_event_loop_shows_in_its_lag_gauge():
    """A flooded loop runs what has just arrived late: the lag probe measures how late, and the gauge shows
    the largest recent lag until newer ticks push it out."""
    async def scenario() -> tuple:
        registry = CollectorRegistry()
        loop_lag = LoopLag(ServiceMetrics(registry).loop_lag.set)
        loop_lag.start(asyncio.get_running_loop())
        try:
            await asyncio.sleep(0.05)
            idle = loop_lag.seconds
            time.sleep(0.15)  # noqa: ASYNC251 (blocking on purpose: a flood keeps the loop this busy)
            await asyncio.sleep(0.02)  # the lag probe fires, about 140 ms late
            lag = loop_lag.seconds
            gauge = registry.get_sample_value("encoder_serve_event_loop_lag_seconds")
            await asyncio.sleep(0.6)  # more than LAG_TICKS ticks later, on an idle loop
            return idle, lag, gauge, loop_lag.seconds
        finally:
            loop_lag.stop()

    idle, lag, gauge, later = asyncio.run(scenario())
    assert idle < 0.05
    assert 0.1 < lag < 1 and gauge == lag
    assert later < 0.05


def test_garbage_collector_pauses_are_timed_by_generation_and_reported_from_the_event_loop():
    """Each collection is timed in gc's own callback and reaches the histogram on the loop's next report (never
    from inside the collection); stopping removes the callback and reports what is left."""
    registry = CollectorRegistry()
    pauses = GcPauses(ServiceMetrics(registry).observe_gc_pause)

    def full() -> float:
        return registry.get_sample_value("encoder_serve_gc_pause_seconds_count", {"generation": "2"})

    async def scenario() -> tuple:
        pauses.start(asyncio.get_running_loop())
        try:
            gc.collect()
            in_collection = full()
            await asyncio.sleep(GC_REPORT_S + 0.3)
            reported = full()
            gc.collect()
        finally:
            pauses.stop()
        return in_collection, reported, full()

    in_collection, reported, at_stop = asyncio.run(scenario())
    assert in_collection == 0 and reported >= 1 and at_stop >= reported + 1
    assert registry.get_sample_value("encoder_serve_gc_pause_seconds_sum", {"generation": "2"}) > 0
    gc.collect()
    assert full() == at_stop and pauses._callback not in gc.callbacks


def test_promises_that_turn_out_late_make_admission_stricter_and_only_answered_requests_teach_it():
    gate, _ = admission()  # a budget of 300 ms
    gate.work_ahead_s = lambda: 0.25
    for _ in range(OVERRUN_REQUESTS // 8):
        assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None and gate.promised_s == 0.25
        gate.leave(routes.CLASSIFY, gate.promised_s, None)  # not answered 200: no evidence
    assert gate.overrun_s == 0
    for _ in range(OVERRUN_REQUESTS // 8):
        assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None
        gate.leave(routes.CLASSIFY, gate.promised_s, 0.32)  # answered 70 ms after the work it was promised
    assert gate.overrun_s == pytest.approx(0.07)
    refusal = gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS)  # 0.25 s queued + 0.07 s overrun > 0.3 s
    assert refusal.reason == "queue_delay" and "0.32 s of work queued" in refusal.message
    gate.work_ahead_s = lambda: 0.2
    assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None and gate.promised_s == 0.2
    gate.leave(routes.CLASSIFY)
    assert gate.enter(routes.MODELS, []) is None and gate.promised_s is None  # only inference is promised
    gate.work_ahead_s = lambda: 0.01  # an idle model: promises that small teach nothing
    for _ in range(OVERRUN_REQUESTS):
        assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None
        gate.leave(routes.CLASSIFY, gate.promised_s, 0.5)
    assert gate.overrun_s == pytest.approx(0.07)


def test_the_concurrency_cap_counts_inference_only_and_frees_its_place_on_leave():
    gate, registry = admission()
    assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None
    assert gate.enter(routes.V2_INFER, CLASSIFY_HEADERS) is None
    refusal = gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS)
    assert refusal.status == 429 and refusal.reason == "concurrency" and int(refusal.headers["Retry-After"]) >= 1
    assert gate.enter(routes.MODELS, []) is None and gate.enter(routes.HEALTHZ, []) is None
    gate.leave(routes.CLASSIFY)
    assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None
    assert registry.get_sample_value("encoder_serve_rejected_total", {"reason": "concurrency"}) == 1


def test_explain_has_its_own_lane():
    gate, _ = admission()
    explain = routes.Route("POST", "/v1/explain", routes.Kind.EXPLAIN)
    assert gate.enter(explain, []) is None
    busy = gate.enter(explain, [])
    assert busy.reason == "explain_busy" and busy.status == 429
    assert gate.enter(routes.CLASSIFY, CLASSIFY_HEADERS) is None  # classification is not held up by it


def test_a_declared_body_over_the_limit_is_refused_for_any_route():
    gate, registry = admission()
    refusal = gate.enter(None, [(b"content-length", b"1001")])
    assert refusal.status == 413 and refusal.reason == "body_too_large"
    assert registry.get_sample_value("encoder_serve_rejected_total", {"reason": "body_too_large"}) == 1


@pytest.mark.anyio
async def test_a_text_that_could_not_finish_before_its_deadline_fails_at_once_without_compute():
    calls = []

    def model(sequences):
        calls.append(len(sequences))
        return [[0.0, 1.0]] * len(sequences)

    registry = CollectorRegistry()
    batcher = Batcher(model, ServiceMetrics(registry), max_batch_size=8, max_batch_tokens=1000,
                      seconds_per_token=0.01)  # 10 ms per token: a 20-token text takes 0.2 s
    batcher.start()
    now = asyncio.get_running_loop().time()
    (doomed,) = batcher.submit([list(range(20))], deadline=now + 0.1)
    (fine,) = batcher.submit([list(range(20))], deadline=now + 60)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(doomed, 5)
    await asyncio.wait_for(fine, 5)
    assert calls == [1]  # only the text that could make it was computed
    assert registry.get_sample_value("encoder_serve_dropped_total", {"reason": "deadline"}) == 1
    await batcher.close()


def test_liveness_means_the_process_can_still_serve():
    health = Health()
    health.loaded = True
    assert health.live() == (True, "ok") and health.ready()[0]
    health.last_beat = time.monotonic() - STALL_S - 1
    live, why = health.live()
    assert not live and "event loop has not run" in why and not health.ready()[0]
    health.last_beat = time.monotonic()
    health.model_busy_since = lambda: time.perf_counter() - STUCK_S - 1
    assert not health.live()[0] and "model call" in health.live()[1]
    health.model_busy_since = lambda: None
    health.scheduler_alive = lambda: False
    assert not health.live()[0]
    health.scheduler_alive = lambda: True
    health.draining = True
    assert health.live()[0] and health.ready() == (False, "shutting down")


def test_the_operations_server_answers_from_its_own_thread():
    health = Health()
    ops = OpsServer("127.0.0.1", free_port(), health, "emotion@1", lambda accept: (b"x_total 1.0\n", "text/plain")).start()
    url = f"http://127.0.0.1:{ops.port}"
    try:
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        not_ready = httpx.get(url + "/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["error"]["message"] == "model not loaded yet"
        health.loaded = True
        assert httpx.get(url + "/readyz").json() == {"status": "ready", "model": "emotion@1"}
        assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}
        assert sample(parse(httpx.get(url + "/metrics").text), "x_total") == 1
        assert httpx.get(url + "/nothing").status_code == 404
    finally:
        ops.stop()


def test_the_route_table_lists_exactly_the_application_routes(service_package):
    app = create_app(load_settings(model_dir=service_package, ops_port=0))
    declared = {(r.method, r.path) for r in routes.ROUTES}
    documented = {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
                  for method in operations}
    undocumented = set()  # the app's own pages and the mounted assets
    for route in app.router.routes:
        if isinstance(route, APIRoute | Route) and not route.include_in_schema:
            undocumented |= {(m, route.path) for m in route.methods if m != "HEAD"}
        elif isinstance(route, Mount):
            undocumented.add(("GET", route.path + "/{path}"))
    assert documented | undocumented == declared


@pytest.mark.parametrize(("method", "path", "label"), [
    ("POST", "/v1/classify", "/v1/classify"),
    ("GET", "/v1/classify", "/v1/classify"),  # a 405 is still that route's
    ("POST", "/v2/models/emotion/versions/3/infer", "/v2/models/{name}/versions/{version}/infer"),
    ("HEAD", "/healthz", "/healthz"),
    ("GET", "/docs/assets/swagger-ui.css", "/docs/assets/{path}"),
    ("GET", "/nothing/here", "unmatched"),
    ("GET", "/v2/models/a/b/c", "unmatched"),
])
def test_routes_are_labelled_by_their_template_and_only_unknown_paths_are_unmatched(method, path, label):
    assert routes.match(method, path)[1] == label
