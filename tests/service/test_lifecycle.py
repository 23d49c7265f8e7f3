"""Process-level behaviour: graceful drain on SIGTERM, several workers with one /metrics, no torch needed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx

from encoder_serve.service.testing import LiveServer, free_port
from tests.prometheus import parse, sample, scrape


def test_sigterm_finishes_every_accepted_request_then_exits_cleanly(package, reference):
    # a long MAX_WAIT_MS keeps the accepted texts queued until the drain flushes them
    server = LiveServer(package, env={"PRECISION": "fp32", "MAX_WAIT_MS": "60000", "MAX_BATCH_SIZE": "64"}).start()
    texts = [f"request number {i} feels {'happy' if i % 2 else 'sad'}" for i in range(12)]
    replies: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        replies[i] = httpx.post(server.url + "/v1/classify", json={"inputs": texts[i]}, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    while sample(scrape(server.url), "encoder_serve_queue_depth") != len(texts):
        pass
    server.terminate()
    for t in threads:
        t.join(60)
    assert server.process.wait(60) == 0
    assert sorted(replies) == list(range(len(texts)))
    for i, r in replies.items():
        assert r.status_code == 200, r.text
        ranking = r.json()["predictions"][0]
        expected = reference.scores(texts[i])
        assert all(abs(p["score"] - expected[p["label"]]) <= 1e-5 for p in ranking)


def test_several_workers_report_one_consistent_metrics_view(package):
    with LiveServer(package, env={"WORKERS": "2", "ORT_INTRA_OP_THREADS": "1"}) as server:
        for i in range(40):  # a new connection each, so both workers get some
            r = httpx.post(server.url + "/v1/classify", json={"inputs": [f"text {i}", "x"]}, timeout=60)
            assert r.status_code == 200
        exposition = httpx.get(server.url + "/metrics", timeout=60).text
    assert sample(parse(exposition), "encoder_serve_texts_total") == 80
    assert sample(parse(exposition), "encoder_serve_requests_total", route="/v1/classify", status="200") == 40
    info = [line for line in exposition.splitlines() if line.startswith("encoder_serve_model_info{")]
    assert len(info) == 1 and info[0].endswith(" 1.0")


def test_gc_young_threshold_0_leaves_the_garbage_collector_as_python_sets_it(package, tmp_path):
    log = tmp_path / "service.log"
    with LiveServer(package, env={"GC_YOUNG_THRESHOLD": "0", "LOG_LEVEL": "info"}, log_path=log) as server:
        assert httpx.post(server.url + "/v1/classify", json={"inputs": "x"}, timeout=60).status_code == 200
    text = log.read_text()
    assert '"route":"/v1/classify"' in text  # the workers' info lines are in the log
    assert "objects frozen" not in text


def test_the_service_imports_and_serves_without_torch(package):
    port = free_port()
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            "runpy.run_module('encoder_serve.service', run_name='__main__')")
    env = {**os.environ, "MODEL_DIR": str(package), "PORT": str(port), "OPS_PORT": str(free_port()),
           "HOST": "127.0.0.1", "WORKERS": "1", "ORT_INTRA_OP_THREADS": "1", "LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while process.poll() is None:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
        assert process.poll() is None, "the service died at start-up without torch"
        r = httpx.post(url + "/v1/classify", json={"inputs": "no torch here"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) > 0
    finally:
        process.terminate()
        process.wait(60)


def test_sigterm_while_workers_are_still_starting_ends_the_process(package):
    """A worker still in its start-up (model loading) when SIGTERM comes does not hear it from the HTTP server:
    the launcher must stop it after the longest a request may take, not wait for it for ever."""
    port, ops_port = free_port(), free_port()
    env = {**os.environ, "MODEL_DIR": str(package), "PORT": str(port), "OPS_PORT": str(ops_port),
           "HOST": "127.0.0.1", "WORKERS": "2", "REQUEST_TIMEOUT_S": "1", "LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "encoder_serve.service"], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first worker ready: the other may still be loading
            try:
                if httpx.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.01)
        process.terminate()
        started = time.monotonic()
        process.wait(60)
        assert time.monotonic() - started < 30, "the launcher waited on a worker that missed SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
