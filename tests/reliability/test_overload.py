"""Overload: three times the measured capacity, open loop, for OVERLOAD_S seconds (default 60).

The service must shed what it cannot do with 429 + Retry-After, answer everything else with 200 within
its own request deadline (REQUEST_TIMEOUT_S, 30 s by default; the client gives up 10 s later), never 5xx,
never crash, keep its memory bounded, keep delivering close to capacity while overloaded (no congestion
collapse), and be back at full throughput once the flood stops. The client may open up to 8,192
connections, so that a service which stops reading, instead of shedding, is seen as one.

Knobs (environment): OVERLOAD_S, OVERLOAD_FACTOR (3), TEXTS_PER_REQUEST (4), CAPACITY_S (10).
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.prometheus import sample, scrape

from .conftest import start
from .loadgen import classify_requests, measure_capacity, open_loop, percentile, run
from .probe import RssSampler, record, rss_bytes

pytestmark = pytest.mark.slow

OVERLOAD_S = float(os.environ.get("OVERLOAD_S", "60"))
FACTOR = float(os.environ.get("OVERLOAD_FACTOR", "3"))
TEXTS_PER_REQUEST = int(os.environ.get("TEXTS_PER_REQUEST", "4"))
CAPACITY_S = float(os.environ.get("CAPACITY_S", "10"))
DEADLINE_S = 30.0  # the service's default REQUEST_TIMEOUT_S


def wait_until_idle(url: str, limit_s: float = 60.0) -> float:
    """Seconds until the queue is empty and no request is in flight (bounded by `limit_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        metrics = scrape(url)
        # the scrape itself is one in-flight request
        if sample(metrics, "encoder_serve_queue_depth") == 0 \
                and sample(metrics, "encoder_serve_in_flight_requests") <= 1:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def test_three_times_capacity_is_shed_with_429_and_the_service_recovers(model_dir, texts, tmp_path):
    server = start(model_dir, tmp_path)
    try:
        requests = classify_requests(texts, TEXTS_PER_REQUEST)
        capacity, _ = measure_capacity(server.port, requests, seconds=CAPACITY_S)
        rss_before = rss_bytes(server.process.pid)
        with RssSampler(server.process.pid) as rss:
            flood = run(open_loop("127.0.0.1", server.port, requests, FACTOR * capacity, OVERLOAD_S,
                                  max_connections=8192, timeout=DEADLINE_S + 10))
        alive = server.process.poll() is None
        recovery_s = wait_until_idle(server.url)
        after, after_run = measure_capacity(server.port, requests, seconds=CAPACITY_S, warmup=0)
        counts = flood.count()
        shed = [o for o in flood.outcomes if o.status == 429]
        retry_after = [int(o.headers["retry-after"]) for o in shed if o.headers.get("retry-after", "").isdigit()]
        goodput = flood.goodput()
        offered = FACTOR * capacity * OVERLOAD_S
        ok_latencies = flood.latencies()
        result = {
            "texts_per_request": TEXTS_PER_REQUEST, "capacity_rps": round(capacity, 1),
            "offered_rps": round(FACTOR * capacity, 1), "seconds": OVERLOAD_S,
            "requests_offered": int(offered), "not_offered_client_saturated": flood.not_offered,
            "outcomes": {str(k): v for k, v in counts.items()},
            "goodput_rps_during_overload": round(goodput, 1),
            "ok_p50_ms": round(1000 * percentile(ok_latencies, 0.5), 1) if ok_latencies else None,
            "ok_p99_ms": round(1000 * percentile(ok_latencies, 0.99), 1) if ok_latencies else None,
            "ok_max_ms": round(1000 * ok_latencies[-1], 1) if ok_latencies else None,
            "retry_after_s_min_max": [min(retry_after), max(retry_after)] if retry_after else None,
            "rss_mib_before": round(rss_before / 2**20, 1), "rss_mib_peak": round(rss.peak / 2**20, 1),
            "seconds_until_idle_after_flood": round(recovery_s, 2),
            "throughput_rps_after": round(after, 1), "throughput_after_vs_capacity": round(after / capacity, 3),
            "after_outcomes": {str(k): v for k, v in after_run.count().items()},
            "service_alive": alive}
        record("overload", result)

        assert alive and httpx.get(server.url + "/healthz").status_code == 200
        assert set(counts) <= {200, 429}, f"statuses other than 200/429: {counts}"
        assert shed, "no 429 at all: the service was not overloaded, nothing was proved"
        assert len(retry_after) == len(shed), "a 429 without a numeric Retry-After"
        assert flood.not_offered < 0.01 * offered, "the client could not offer the load"
        assert rss.peak < 1.5 * rss_before, f"memory grew from {rss_before} to {rss.peak} bytes"
        # no congestion collapse: the 3x flood's 429s cost HTTP work on the same two cores the open-loop
        # client also runs on, so a quarter of capacity is the bar here (measured after the admission
        # fixes: 31%; before them: 6%)
        assert goodput > 0.25 * capacity, f"congestion collapse: {goodput:.0f} rps served of {capacity:.0f}"
        assert set(after_run.count()) == {200}
        assert after > 0.8 * capacity, f"not back to full throughput: {after:.0f} rps vs {capacity:.0f}"
    finally:
        server.stop()
