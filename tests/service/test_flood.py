"""Under a flood (wrk, 800 connections, closed loop) the service stays operable: probes on the operations
port answer at once, a request with a short deadline is answered within it, and every refusal is counted
under its real route."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest

from encoder_serve.service.testing import LiveServer
from tests.prometheus import label_values, sample, scrape

FLOOD_S = 8
CONNECTIONS = 800
WRK_SCRIPT = "benchmarks/wrk_rotate.lua"


@pytest.fixture(scope="module")
def flood(package, emotion_test_rows, tmp_path_factory):
    """Probes and short-deadline requests sent while wrk floods the service; their outcomes, and /metrics."""
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (make system-deps)", pytrace=False)
    work = tmp_path_factory.mktemp("flood")
    texts = [r["text"] for r in emotion_test_rows]
    bodies = work / "bodies.txt"
    bodies.write_text("".join(json.dumps({"inputs": texts[i: i + 4]}) + "\n" for i in range(0, 400, 4)))
    outcome = {"probes": [], "deadlined": []}
    with LiveServer(package, env={"LOG_LEVEL": "warning"}, log_path=work / "service.log") as server, \
            httpx.Client(timeout=30) as caller:
        # the deadlined requests go over a keep-alive connection opened before the flood, as the probes' do:
        # what is timed is the service keeping the deadline, not the kernel accepting a new connection
        # (a dropped SYN alone is retried after a second)
        assert caller.post(server.url + "/v1/classify", json={"inputs": texts[:2]}).status_code == 200
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{FLOOD_S}s", "--timeout", "30s", "-s",
                                WRK_SCRIPT, server.url + "/v1/classify", "--", str(bodies)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)  # the flood is on

        def probe() -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(40):
                    started = time.perf_counter()
                    try:
                        status = client.get(server.ops_url + "/healthz").status_code
                    except httpx.TransportError as e:
                        status = type(e).__name__
                    outcome["probes"].append((status, time.perf_counter() - started))
                    time.sleep(0.1)

        def deadlined() -> None:
            for _ in range(15):
                started = time.perf_counter()
                try:
                    status = caller.post(server.url + "/v1/classify", json={"inputs": texts[:2]},
                                         headers={"X-Request-Timeout-Ms": "300"}).status_code
                except httpx.TransportError as e:
                    status = type(e).__name__
                outcome["deadlined"].append((status, time.perf_counter() - started))
                time.sleep(0.2)

        threads = [threading.Thread(target=probe), threading.Thread(target=deadlined)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcome["wrk"] = wrk.communicate(timeout=60)[0]
        # counted once answered: wait until what the flood left in progress is done (refusals are counted
        # by reason when refused and by status when answered, a moment apart)
        deadline = time.monotonic() + 60
        while sample(metrics := scrape(server.url), "encoder_serve_in_flight_requests") and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        outcome["metrics"] = metrics
    return outcome


def test_probes_on_the_operations_port_answer_at_once_during_a_flood(flood):
    statuses = [s for s, _ in flood["probes"]]
    slowest = max(seconds for _, seconds in flood["probes"])
    assert statuses == [200] * len(statuses), statuses
    assert slowest < 1.0, f"a probe took {slowest:.2f} s during the flood"


def test_a_short_deadline_is_kept_during_a_flood(flood):
    late = [(status, round(seconds, 2)) for status, seconds in flood["deadlined"] if seconds > 0.3 + 0.7]
    assert not late, f"answers long after their 300 ms deadline: {late}"
    assert {status for status, _ in flood["deadlined"]} <= {200, 429, 504}, flood["deadlined"]


def test_every_refusal_is_counted_under_its_route(flood):
    metrics = flood["metrics"]
    refused = sample(metrics, "encoder_serve_requests_total", status="429")
    by_reason = sum(sample(metrics, "encoder_serve_rejected_total", reason=reason)
                    for reason in ("queue_full", "queue_delay", "concurrency"))
    assert refused > 0, "the flood was refused nothing: it proved nothing"
    assert refused == by_reason
    assert "unmatched" not in label_values(metrics, "encoder_serve_requests_total", "route")
