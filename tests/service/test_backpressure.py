"""A full queue answers 429 with Retry-After; a request past its deadline answers 504 and its texts are
dropped before compute. A long MAX_WAIT_MS holds queued texts in place, so both happen deterministically."""

from __future__ import annotations

import threading

import httpx
import pytest

from encoder_serve.service.testing import LiveServer
from tests.prometheus import sample, scrape


@pytest.fixture(scope="module")
def holding(package):
    # the queue and the caps are per worker: one worker, so that every request meets the same ones
    env = {"WORKERS": "1", "MAX_WAIT_MS": "10000", "MAX_BATCH_SIZE": "64", "MAX_QUEUE_SIZE": "4",
           "MAX_INPUTS_PER_REQUEST": "4"}
    with LiveServer(package, env=env) as live:
        yield live


def wait_for_queue_depth(url: str, depth: int) -> None:
    while sample(scrape(url), "encoder_serve_queue_depth") != depth:
        pass


def test_full_queue_gets_429_with_retry_after_and_a_deadline_gets_504(holding):
    replies = {}
    waiting = threading.Thread(target=lambda: replies.setdefault("held", httpx.post(
        holding.url + "/v1/classify", json={"inputs": ["a", "b", "c", "d"]},
        headers={"X-Request-Timeout-Ms": "3000"}, timeout=60)))
    waiting.start()
    wait_for_queue_depth(holding.url, 4)  # those four texts wait for company, filling the queue

    refused = httpx.post(holding.url + "/v1/classify", json={"inputs": "one more"}, timeout=60)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "queue_full"
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1

    waiting.join(60)
    held = replies["held"]
    assert held.status_code == 504 and held.json()["error"]["type"] == "timeout"
    after = scrape(holding.url)
    assert sample(after, "encoder_serve_rejected_total", reason="queue_full") == 1
    assert sample(after, "encoder_serve_timeouts_total") == 1
    assert sample(after, "encoder_serve_dropped_total", reason="deadline") == 4
    assert sample(after, "encoder_serve_texts_total") == 0  # nothing was computed for nobody
    # the refused request was turned away before tokenization: only the held one was tokenized
    assert sample(after, "encoder_serve_tokenization_duration_seconds_count") == 1
    wait_for_queue_depth(holding.url, 0)
    assert httpx.get(holding.url + "/healthz").status_code == 200


def test_requests_past_the_concurrency_cap_get_429_before_their_body_is_read(package):
    env = {"WORKERS": "1", "MAX_WAIT_MS": "10000", "MAX_BATCH_SIZE": "64", "MAX_CONCURRENT_REQUESTS": "1"}
    with LiveServer(package, env=env) as live:
        replies = {}
        waiting = threading.Thread(target=lambda: replies.setdefault("held", httpx.post(
            live.url + "/v1/classify", json={"inputs": "held for company"},
            headers={"X-Request-Timeout-Ms": "3000"}, timeout=60)))
        waiting.start()
        wait_for_queue_depth(live.url, 1)

        refused = httpx.post(live.url + "/v1/classify", json={"inputs": "one too many"}, timeout=60)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "inference requests in progress" in refused.json()["error"]["message"]
        assert httpx.get(live.url + "/healthz").status_code == 200  # the cap is for inference only

        waiting.join(60)
        after = scrape(live.url)
        assert sample(after, "encoder_serve_rejected_total", reason="concurrency") == 1
        assert sample(after, "encoder_serve_tokenization_duration_seconds_count") == 1
        assert replies["held"].status_code == 504
