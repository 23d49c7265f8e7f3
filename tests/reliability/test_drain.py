"""Drain: SIGTERM while the service is under load loses nothing it had accepted.

Every request whose last byte was written before the signal must come back complete with 200. Requests
sent after the signal may be refused (the listening socket is closed) or answered; they are counted apart.
No response may be cut in the middle, before or after the signal. Run with one and with two workers.

Knobs (environment): DRAIN_LOAD_S (seconds of load before the signal, 5), DRAIN_CONNECTIONS (64).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from .conftest import start
from .loadgen import classify_requests, closed_loop, run
from .probe import record

pytestmark = pytest.mark.slow

LOAD_S = float(os.environ.get("DRAIN_LOAD_S", "5"))
CONNECTIONS = int(os.environ.get("DRAIN_CONNECTIONS", "64"))
AFTER_S = 5.0  # the clients keep trying this long after the signal


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_completes_every_accepted_request(model_dir, texts, tmp_path, workers):
    # no queue-delay bound: 64 clients x 16 texts is more queued work than its default, and the point here is
    # what happens to work already accepted
    server = start(model_dir, tmp_path, WORKERS=str(workers), MAX_QUEUE_DELAY_MS="0")
    requests = classify_requests(texts, 16)

    async def scenario():
        load = asyncio.create_task(closed_loop("127.0.0.1", server.port, requests, CONNECTIONS, LOAD_S + AFTER_S))
        await asyncio.sleep(LOAD_S)
        signalled = time.monotonic()
        server.terminate()
        exit_code = await asyncio.to_thread(server.process.wait, 60)
        exited = time.monotonic()
        return await load, signalled, exited, exit_code

    try:
        result, signalled, exited, exit_code = run(scenario())
    finally:
        server.stop()

    accepted = [o for o in result.outcomes if o.sent_at is not None and o.sent_at < signalled]
    in_flight = [o for o in accepted if o.done_at >= signalled]
    lost = [o for o in accepted if o.status != 200]
    later = [o for o in result.outcomes if o.sent_at is None or o.sent_at >= signalled]
    cut = [o for o in result.outcomes if o.error == "cut"]
    outcome = lambda o: str(o.status) if o.status is not None else o.error
    record(f"drain_workers{workers}", {
        "workers": workers, "connections": CONNECTIONS, "texts_per_request": 16,
        "accepted_before_signal": len(accepted), "in_flight_at_signal": len(in_flight),
        "accepted_not_200": len(lost), "lost_outcomes": sorted({outcome(o) for o in lost}),
        "lost_details": [{"sent_s": round(o.sent_at - signalled, 3), "done_s": round(o.done_at - signalled, 3),
                          "outcome": outcome(o), "detail": o.detail} for o in lost[:10]],
        "after_signal": {k: sum(1 for o in later if outcome(o) == k) for k in sorted({outcome(o) for o in later})},
        "cut_responses": len(cut), "exit_code": exit_code,
        "seconds_signal_to_exit": round(exited - signalled, 2)})

    assert in_flight, "no request was in flight at the signal: the drain was not exercised"
    assert not lost, f"{len(lost)} of {len(accepted)} accepted requests lost: {sorted({outcome(o) for o in lost})}"
    assert not cut, f"{len(cut)} responses cut mid-way"
    assert exit_code == 0
