"""Soak: SOAK_S seconds (default 300) at SOAK_FRACTION (0.7) of the measured capacity, open loop.

Zero errors, resident memory growth under 10% (first tenth of the run against the last tenth, after a
warm-up tenth), and stable latency (the last minute's p50 and p99 against the first minute's); the load
client may fall behind on at most 0.1% of the requests it was to send.

Knobs (environment): SOAK_S, SOAK_FRACTION, TEXTS_PER_REQUEST (4), CAPACITY_S (10).
"""

from __future__ import annotations

import os

import pytest

from tests.prometheus import by_label, scrape

from .conftest import start
from .loadgen import classify_requests, measure_capacity, open_loop, percentile, run
from .probe import RssSampler, record

pytestmark = pytest.mark.slow

SOAK_S = float(os.environ.get("SOAK_S", "300"))
FRACTION = float(os.environ.get("SOAK_FRACTION", "0.7"))
TEXTS_PER_REQUEST = int(os.environ.get("TEXTS_PER_REQUEST", "4"))
CAPACITY_S = float(os.environ.get("CAPACITY_S", "10"))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def test_long_run_below_capacity_has_no_errors_no_leak_and_stable_latency(model_dir, texts, tmp_path):
    server = start(model_dir, tmp_path)
    try:
        requests = classify_requests(texts, TEXTS_PER_REQUEST)
        capacity, _ = measure_capacity(server.port, requests, seconds=CAPACITY_S)
        with RssSampler(server.process.pid, interval=1.0) as rss:
            soak = run(open_loop("127.0.0.1", server.port, requests, FRACTION * capacity, SOAK_S))
        alive = server.process.poll() is None
        samples = scrape(server.ops_url) if alive else {}
    finally:
        server.stop()

    tenth = SOAK_S / 10
    t0 = soak.started
    rss_early = sorted(rss.between(t0 + tenth, t0 + 2 * tenth))
    rss_late = sorted(rss.between(t0 + 9 * tenth, t0 + SOAK_S))
    early_rss, late_rss = rss_early[len(rss_early) // 2], rss_late[len(rss_late) // 2]
    window = min(60.0, tenth * 2)
    first = soak.latencies(t0, t0 + window)
    last = soak.latencies(t0 + SOAK_S - window, t0 + SOAK_S)
    windows = [soak.latencies(t0 + s, t0 + s + window) for s in range(0, int(SOAK_S - window) + 1, int(window))]
    counts = soak.count()
    record("soak", {
        "seconds": SOAK_S, "texts_per_request": TEXTS_PER_REQUEST, "capacity_rps": round(capacity, 1),
        "offered_rps": round(FRACTION * capacity, 1), "requests": len(soak.outcomes),
        "not_offered_client_saturated": soak.not_offered, "outcomes": {str(k): v for k, v in counts.items()},
        "rss_mib_early": round(early_rss / 2**20, 1), "rss_mib_late": round(late_rss / 2**20, 1),
        "rss_growth": round(late_rss / early_rss - 1, 4), "latency_window_s": window,
        "p50_ms_by_window": [ms(percentile(w, 0.5)) for w in windows],
        "p99_ms_by_window": [ms(percentile(w, 0.99)) for w in windows],
        "max_ms": ms(max((o.latency for o in soak.outcomes if o.latency is not None), default=None)),
        "refused_by_reason": by_label(samples, "encoder_serve_rejected_total", "reason"),
        "dropped_texts_by_reason": by_label(samples, "encoder_serve_dropped_total", "reason"),
        "service_alive": alive})

    assert alive
    assert set(counts) == {200}, f"errors during the soak: {counts}"
    # The load client shares the machine with the service: a handful of requests it fell behind on sending
    # do not change what the soak measures, a client that could not keep up at all would
    assert soak.not_offered <= 0.001 * (len(soak.outcomes) + soak.not_offered), (
        f"the load client could not offer {soak.not_offered} requests: the soak did not run at {FRACTION:.0%}")
    assert late_rss < 1.10 * early_rss, f"resident memory grew {late_rss / early_rss - 1:.1%}"
    # Stable latency: generous bounds, since other work on a shared machine moves latency too.
    assert percentile(last, 0.5) < 2 * percentile(first, 0.5) + 0.005
    assert percentile(last, 0.99) < 3 * percentile(first, 0.99) + 0.010
