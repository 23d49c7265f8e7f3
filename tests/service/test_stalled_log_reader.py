"""When whatever reads the service's standard output stops reading (a stuck log shipper, a full pipe), the
worker goes on answering requests and probes; the access lines it cannot write are dropped, counted, and
reported once standard output takes lines again."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from encoder_serve.service.testing import LiveServer
from tests.prometheus import sample, scrape

LONG_PATH = "/v1/" + "x" * 3000  # a 404 whose access line is about 3 KB: 1 MiB of backlog in ~400 requests


def drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    """Read the pipe until its writer is gone (or `stop` is set and nothing is left)."""
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            if stop.is_set():
                return
            time.sleep(0.01)
            continue
        if not data:
            return
        into.extend(data)


def test_a_stalled_log_reader_stops_neither_requests_nor_probes(package, tmp_path):
    stdout = tmp_path / "stdout"
    os.mkfifo(stdout)
    reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)  # opened, then not read: the pipe fills up
    received = bytearray()
    try:
        with LiveServer(package, env={"LOG_LEVEL": "info", "WORKERS": "1"}, log_path=stdout) as server, \
                httpx.Client(timeout=10) as client:
            with ThreadPoolExecutor(8) as pool:  # ~2 MiB of access lines into a 64 KiB pipe nobody reads
                statuses = set(pool.map(lambda _: client.get(server.url + LONG_PATH).status_code, range(800)))
            assert statuses == {404}
            time.sleep(0.3)  # the last chunk is due (0.1 s) and finds the backlog full

            started = time.monotonic()
            probe = client.get(server.ops_url + "/healthz", timeout=2)
            answer = client.post(server.url + "/v1/classify", json={"inputs": "i am so happy"}, timeout=2)
            assert probe.status_code == 200 and answer.status_code == 200
            assert time.monotonic() - started < 2
            dropped = sample(scrape(server.ops_url), "encoder_serve_log_lines_dropped_total")
            assert dropped > 0

            stop = threading.Event()
            reading = threading.Thread(target=drain, args=(reader, received, stop))
            reading.start()  # the reader is back
            sent, deadline = 800 + 1, time.monotonic() + 10
            while b"access lines dropped" not in received and time.monotonic() < deadline:
                client.post(server.url + "/v1/classify", json={"inputs": "back"})  # its chunk carries the warning
                sent += 1
                time.sleep(0.05)
            # nothing more is dropped once lines flow again
            assert sample(scrape(server.ops_url), "encoder_serve_log_lines_dropped_total") == dropped
        stop.set()
        reading.join(30)
    finally:
        os.close(reader)

    lines = [json.loads(line) for line in received.decode().splitlines()]  # every line whole
    warnings = [line for line in lines if line["msg"].endswith("access lines dropped: standard output did not take them")]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning" and warnings[0]["dropped"] == dropped
    access = [line for line in lines if line["logger"] == "encoder_serve.access" and line["msg"] == "request"
              and line["path"] in (LONG_PATH, "/v1/classify")]  # (the launcher's readiness checks have lines too)
    assert len(access) + dropped == sent  # every request's line written or counted
    assert sum(line.get("path") == LONG_PATH for line in access) < 800
