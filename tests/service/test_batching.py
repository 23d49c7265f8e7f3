"""The batching core on its own: a deterministic model function in the worker thread, real asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from encoder_serve.service.batching import (
    Batcher,
    DeadlineExceeded,
    QueueFull,
    ShuttingDown,
    WaitedTooLong,
    select_batch,
)
from encoder_serve.service.metrics import ServiceMetrics


class GatedModel:
    """Each output row is (length, sum of ids) of its own text, so a reply can be checked against its
    caller. With `hold()` the first call blocks until `release()`, so a test can queue texts while the
    model is busy, as under load."""

    def __init__(self):
        self.batches: list[list[int]] = []  # lengths of the texts in each call
        self.started = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self):
        self._gate.clear()

    def release(self):
        self._gate.set()

    def __call__(self, sequences):
        self.batches.append([len(s) for s in sequences])
        self.started.set()
        self._gate.wait(30)
        return np.array([[len(s), sum(s)] for s in sequences], dtype=np.float32)


def expected(ids):
    return [len(ids), sum(ids)]


def text(length: int, seed: int = 0) -> list[int]:
    return [seed * 1000 + i for i in range(length)]


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make(model, metrics, **kw):
    options = {"max_batch_size": 64, "max_batch_tokens": 10_000, "max_wait_ms": 0.0, "max_queue_size": 1024} | kw
    batcher = Batcher(model, metrics, **options)
    batcher.start()
    return batcher


async def busy(model, batcher):
    """Occupy the model with one text and return its future once the model is computing it."""
    model.hold()
    first = batcher.submit([text(3, seed=99)], deadline=asyncio.get_running_loop().time() + 60)
    await asyncio.to_thread(model.started.wait, 30)
    return first


async def settle():
    """Let the scheduler task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def next_batch_waiting(model, batcher, sequences):
    """The model busy with one text and `sequences` submitted behind it: (first, second) futures."""
    first = await busy(model, batcher)
    second = batcher.submit(sequences, deadline())
    await settle()
    return first, second


def deadline():
    return asyncio.get_running_loop().time() + 60


def queued(metrics: ServiceMetrics) -> float:
    """Texts waiting in the queue, as the queue-depth gauge reports them."""
    return metrics.queue_depth.collect()[0].samples[0].value


# --- select_batch: which queued texts run together -------------------------------------------------------

def test_select_takes_everything_that_fits():
    assert select_batch([5, 9, 7], max_size=8, max_tokens=100) == [0, 1, 2]


def test_select_respects_the_size_bound_and_always_takes_the_oldest():
    chosen = select_batch([10] * 20, max_size=4, max_tokens=10_000)
    assert len(chosen) == 4 and 0 in chosen


def test_select_respects_the_padded_token_bound():
    lengths = [10, 10, 10, 10, 10]
    chosen = select_batch(lengths, max_size=64, max_tokens=25)
    assert len(chosen) * max(lengths[i] for i in chosen) <= 25 and chosen == [0, 1]


def test_select_groups_texts_of_similar_length_around_the_oldest():
    lengths = [5, 60, 6, 58, 7, 59]
    assert select_batch(lengths, max_size=3, max_tokens=10_000) == [0, 2, 4]
    assert select_batch([60, 5, 58, 6, 59, 7], max_size=3, max_tokens=10_000) == [0, 2, 4]


def test_select_prefers_the_neighbour_that_adds_less_padding():
    # around the oldest (20): 19 wastes 1 token, then 2 wastes 18 where 40 would waste 2 x 20
    assert select_batch([20, 40, 19, 2], max_size=3, max_tokens=10_000) == [0, 2, 3]
    assert select_batch([20, 21, 3], max_size=2, max_tokens=10_000) == [0, 1]


def test_select_bounds_the_padding_ratio_of_a_batch():
    lengths = [10, 40, 9, 38, 11, 20]
    chosen = select_batch(lengths, max_size=64, max_tokens=10_000, max_padding_ratio=0.3)
    assert chosen == [0, 2, 4]  # 9, 10, 11 around the oldest; 20 would make it 1 - 50/80 = 38% padding
    assert select_batch(lengths, max_size=64, max_tokens=10_000, max_padding_ratio=1.0) == list(range(6))


def test_select_with_no_padding_allowed_takes_only_equal_lengths():
    assert select_batch([7, 8, 7, 6, 7], max_size=64, max_tokens=10_000, max_padding_ratio=0.0) == [0, 2, 4]


def test_select_keeps_the_oldest_even_when_it_alone_fills_the_budget():
    assert select_batch([64, 3, 3], max_size=8, max_tokens=64) == [0]


# --- the scheduler ----------------------------------------------------------------------------------------

async def test_every_text_gets_its_own_result():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics)
    sequences = [text(n, seed=n) for n in range(1, 30)]
    results = await asyncio.gather(*batcher.submit(sequences, deadline()))
    assert [r.tolist() for r in results] == [expected(s) for s in sequences]
    await batcher.close()


async def test_a_lone_text_never_waits_for_company_and_batches_grow_under_load():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_wait_ms=0.0)
    first = await busy(model, batcher)  # the lone text went straight to the model
    later = [batcher.submit([text(4, seed=i)], deadline())[0] for i in range(5)]  # arrive while it computes
    model.release()
    await asyncio.gather(*first, *later)
    assert model.batches == [[3], [4] * 5]
    await batcher.close()


async def test_a_positive_wait_holds_a_text_until_the_batch_is_full():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_wait_ms=60_000, max_batch_size=3)
    futures = batcher.submit([text(2, seed=1)], deadline())
    await settle()  # the scheduler is now waiting for company
    assert model.batches == []
    futures += batcher.submit([text(2, seed=2), text(2, seed=3)], deadline())
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert model.batches == [[2, 2, 2]]
    await batcher.close()


async def test_the_wait_is_bounded_by_max_wait():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_wait_ms=0.02, max_batch_size=64)
    (result,) = await asyncio.wait_for(asyncio.gather(*batcher.submit([text(5)], deadline())), 30)
    assert result.tolist() == expected(text(5)) and model.batches == [[5]]
    await batcher.close()


async def test_the_next_batch_waits_at_the_worker_while_one_computes():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_batch_size=3)
    first, second = await next_batch_waiting(model, batcher, [text(4, seed=i) for i in range(3)])
    assert queued(metrics) == 0  # formed and handed to the worker although the model is still busy
    third = batcher.submit([text(5, seed=i) for i in range(2)], deadline())
    await settle()
    assert queued(metrics) == 2  # two batches in flight: later texts queue (and can still be dropped)
    model.release()
    results = await asyncio.wait_for(asyncio.gather(*first, *second, *third), 30)
    assert model.batches == [[3], [4, 4, 4], [5, 5]]
    assert [r.tolist() for r in results[1:]] == [expected(text(4, seed=i)) for i in range(3)] + \
        [expected(text(5, seed=i)) for i in range(2)]
    await batcher.close()


async def test_the_model_starts_the_next_batch_without_the_event_loop():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics)
    first, second = await next_batch_waiting(model, batcher, [text(6)])
    model.release()
    time.sleep(0.5)  # noqa: ASYNC251 (on purpose: the loop is blocked, as by a burst of requests, when the first batch ends)
    assert model.batches == [[3], [6]]  # the worker went straight on to the batch waiting for it
    results = await asyncio.wait_for(asyncio.gather(*first, *second), 30)
    assert results[1].tolist() == expected(text(6))
    await batcher.close()


async def test_close_waits_for_both_batches_in_flight():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics)
    first, second = await next_batch_waiting(model, batcher, [text(6)])
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    model.release()
    await asyncio.wait_for(closing, 30)
    assert all(f.done() and not f.cancelled() for f in first + second)


async def test_batches_respect_the_size_bound():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_batch_size=4)
    first = await busy(model, batcher)
    futures = batcher.submit([text(5, seed=i) for i in range(10)], deadline())
    model.release()
    await asyncio.gather(*first, *futures)
    assert model.batches[1:] == [[5] * 4, [5] * 4, [5] * 2]
    await batcher.close()


async def test_batches_respect_the_padded_token_bound():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_batch_tokens=30)
    first = await busy(model, batcher)
    futures = batcher.submit([text(10, seed=i) for i in range(7)], deadline())
    model.release()
    await asyncio.gather(*first, *futures)
    assert all(len(b) * max(b) <= 30 for b in model.batches[1:])
    assert sum(len(b) for b in model.batches[1:]) == 7
    await batcher.close()


async def test_queued_texts_are_grouped_by_length():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_batch_size=3)
    first = await busy(model, batcher)
    lengths = [5, 60, 6, 58, 7, 59]
    futures = batcher.submit([text(n, seed=n) for n in lengths], deadline())
    model.release()
    results = await asyncio.gather(*first, *futures)
    assert model.batches[1:] == [[5, 6, 7], [60, 58, 59]]
    assert [r.tolist() for r in results[1:]] == [expected(text(n, seed=n)) for n in lengths]
    await batcher.close()


async def test_padding_bound_splits_a_mixed_queue_and_runs_every_part_without_waiting():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_padding_ratio=0.1)
    first = await busy(model, batcher)
    lengths = [10, 60, 11, 58, 12, 59, 30]
    futures = batcher.submit([text(n, seed=n) for n in lengths], deadline())
    model.release()
    results = await asyncio.wait_for(asyncio.gather(*first, *futures), 30)
    assert model.batches[1:] == [[10, 11, 12], [60, 58, 59], [30]]  # 30 beside the 60s: 14% padding
    assert all(1 - sum(b) / (len(b) * max(b)) <= 0.1 for b in model.batches)
    assert [r.tolist() for r in results[1:]] == [expected(text(n, seed=n)) for n in lengths]
    await batcher.close()


async def test_texts_of_cancelled_callers_are_dropped_before_compute():
    model = GatedModel()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    batcher = make(model, metrics)
    first = await busy(model, batcher)
    futures = batcher.submit([text(4, seed=1), text(5, seed=2), text(6, seed=3)], deadline())
    futures[1].cancel()  # its caller gave up
    model.release()
    await asyncio.gather(*first, futures[0], futures[2])
    assert model.batches[1:] == [[4, 6]]
    assert registry.get_sample_value("encoder_serve_dropped_total", {"reason": "cancelled"}) == 1
    await batcher.close()


async def test_texts_given_up_through_cancel_leave_the_queue_before_compute():
    """The pipeline gives up on a request's texts with `cancel` (its deadline passed): queued behind two
    batches, they are dropped and counted, never computed."""
    model = GatedModel()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    batcher = make(model, metrics)
    first, second = await next_batch_waiting(model, batcher, [text(2, seed=1)])
    queued_behind = batcher.submit([text(4, seed=2), text(5, seed=3)], deadline())
    await settle()
    assert queued(metrics) == 2
    batcher.cancel(queued_behind[:1])
    model.release()
    await asyncio.gather(*first, *second, queued_behind[1])
    assert model.batches[1:] == [[2], [5]]
    assert registry.get_sample_value("encoder_serve_dropped_total", {"reason": "cancelled"}) == 1
    await batcher.close()


async def test_texts_past_their_deadline_are_dropped_and_fail_with_deadline_exceeded():
    model = GatedModel()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    batcher = make(model, metrics)
    first = await busy(model, batcher)
    now = asyncio.get_running_loop().time()
    (expired,) = batcher.submit([text(7)], deadline=now)
    (alive,) = batcher.submit([text(8)], deadline=now + 60)
    model.release()
    await asyncio.gather(*first, alive)
    with pytest.raises(DeadlineExceeded):
        await expired
    assert model.batches[1:] == [[8]]
    assert registry.get_sample_value("encoder_serve_dropped_total", {"reason": "deadline"}) == 1
    await batcher.close()


async def test_texts_that_waited_past_the_queue_delay_budget_are_refused_before_compute():
    model = GatedModel()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    batcher = make(model, metrics)
    first, second = await next_batch_waiting(model, batcher, [text(3)])
    over = [e.future for e in batcher.queue([text(7, seed=1), text(7, seed=2)], deadline(), wait_budget_s=0.05)]
    unbounded = [e.future for e in batcher.queue([text(8)], deadline())]  # no budget (MAX_QUEUE_DELAY_MS=0)
    await asyncio.sleep(0.1)  # the model stays busy past the first request's budget
    model.release()
    await asyncio.gather(*first, *second, *unbounded)
    for future in over:
        with pytest.raises(WaitedTooLong) as refused:
            await future
        assert refused.value.reason == "queue_delay" and refused.value.retry_after_s >= 1
        assert "MAX_QUEUE_DELAY_MS (50 ms)" in str(refused.value)
    assert model.batches[2:] == [[8]]
    assert registry.get_sample_value("encoder_serve_dropped_total", {"reason": "queue_delay"}) == 2
    await batcher.close()


async def test_texts_within_the_queue_delay_budget_are_computed():
    model = GatedModel()
    batcher = make(model, ServiceMetrics(CollectorRegistry()))
    futures = [e.future for e in batcher.queue([text(9, seed=i) for i in range(3)], deadline(), wait_budget_s=5)]
    results = await asyncio.gather(*futures)
    assert [row.tolist() for row in results] == [expected(text(9, seed=i)) for i in range(3)]
    await batcher.close()


async def test_a_full_queue_refuses_a_whole_request_with_a_retry_after():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_queue_size=4)
    first = await busy(model, batcher)
    waiting = batcher.submit([text(3, seed=i) for i in range(3)], deadline())
    with pytest.raises(QueueFull) as refused:
        batcher.submit([text(3), text(3)], deadline())
    assert refused.value.retry_after_s >= 1 and queued(metrics) == 3
    model.release()
    await asyncio.gather(*first, *waiting)
    await batcher.close()


def failing_once():
    """A model whose first call raises RuntimeError("boom") and whose later calls answer zeros."""
    calls = []

    def flaky(sequences):
        calls.append(len(sequences))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(sequences), 2), dtype=np.float32)

    return flaky


async def test_a_model_error_fails_its_batch_and_the_scheduler_goes_on():
    batcher = make(failing_once(), ServiceMetrics(CollectorRegistry()))
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.gather(*batcher.submit([text(3)], deadline()))
    (ok,) = await asyncio.gather(*batcher.submit([text(3)], deadline()))
    assert ok.tolist() == [0.0, 0.0]
    await batcher.close()


async def test_close_runs_everything_queued_at_once_then_refuses_new_work():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_wait_ms=3_600_000)  # without close, these would wait an hour for company
    queued = batcher.submit([text(3, seed=i) for i in range(5)], deadline())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        batcher.submit([text(3)], deadline())
    await asyncio.wait_for(closing, 30)
    results = await asyncio.gather(*queued)
    assert [r.tolist() for r in results] == [expected(text(3, seed=i)) for i in range(5)]


async def test_drain_runs_held_texts_at_once_and_still_accepts_work():
    model, metrics = GatedModel(), ServiceMetrics(CollectorRegistry())
    batcher = make(model, metrics, max_wait_ms=3_600_000)
    held = batcher.submit([text(3, seed=1)], deadline())
    await asyncio.sleep(0)
    batcher.drain()
    later = batcher.submit([text(4, seed=2)], deadline())
    results = await asyncio.wait_for(asyncio.gather(*held, *later), 30)
    assert [r.tolist() for r in results] == [expected(text(3, seed=1)), expected(text(4, seed=2))]
    await batcher.close()


async def test_batch_metrics_count_texts_and_padding():
    model = GatedModel()
    registry = CollectorRegistry()
    batcher = make(model, ServiceMetrics(registry))
    await asyncio.gather(*batcher.submit([text(2), text(4)], deadline()))
    assert registry.get_sample_value("encoder_serve_texts_total") == 2
    assert registry.get_sample_value("encoder_serve_batch_tokens_sum") == 8  # 2 rows padded to 4
    assert registry.get_sample_value("encoder_serve_padding_ratio_sum") == pytest.approx(0.25)
    assert registry.get_sample_value("encoder_serve_queue_depth") == 0
    await batcher.close()


class ThreadRecordingModel(GatedModel):
    """A GatedModel that also records which thread computed each call."""

    def __init__(self):
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, sequences):
        self.threads.append(threading.get_ident())
        return super().__call__(sequences)


async def test_run_here_computes_the_queued_batch_on_the_calling_thread_at_once():
    model, registry = ThreadRecordingModel(), CollectorRegistry()
    batcher = make(model, ServiceMetrics(registry))
    futures = batcher.submit([text(3, seed=1), text(4, seed=2)], deadline())
    batcher.run_here(asyncio.get_running_loop().time())
    assert all(f.done() for f in futures)  # answered before the event loop ran anything else
    assert [f.result().tolist() for f in futures] == [expected(text(3, seed=1)), expected(text(4, seed=2))]
    assert model.threads == [threading.get_ident()]
    assert registry.get_sample_value("encoder_serve_batches_on_event_loop_total") == 1
    assert registry.get_sample_value("encoder_serve_texts_total") == 2
    assert batcher.idle
    await settle()  # the scheduler, woken by the submit, finds nothing left to do
    assert len(model.batches) == 1
    await batcher.close()


async def test_run_here_leaves_the_queue_to_the_model_threads_while_a_batch_computes():
    model, registry = ThreadRecordingModel(), CollectorRegistry()
    batcher = make(model, ServiceMetrics(registry))
    first = await busy(model, batcher)
    assert not batcher.idle
    second = batcher.submit([text(5, seed=2)], deadline())
    batcher.run_here(asyncio.get_running_loop().time())
    assert not second[0].done()
    model.release()
    results = await asyncio.wait_for(asyncio.gather(*first, *second), 30)
    assert [r.tolist() for r in results] == [expected(text(3, seed=99)), expected(text(5, seed=2))]
    assert threading.get_ident() not in model.threads
    assert registry.get_sample_value("encoder_serve_batches_on_event_loop_total") == 0
    await batcher.close()


async def test_run_here_leaves_work_estimated_to_take_long_to_the_model_threads():
    model = ThreadRecordingModel()
    # 10 ms per padded token: a 3-token text is estimated at 30 ms, over RUN_HERE_MAX_S
    batcher = make(model, ServiceMetrics(CollectorRegistry()), seconds_per_token=0.01)
    futures = batcher.submit([text(3)], deadline())
    batcher.run_here(asyncio.get_running_loop().time())
    assert not futures[0].done()
    (result,) = await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert result.tolist() == expected(text(3))
    assert model.threads and threading.get_ident() not in model.threads
    await batcher.close()


async def test_a_model_error_in_run_here_fails_its_batch_and_the_batcher_goes_on():
    batcher = make(failing_once(), ServiceMetrics(CollectorRegistry()))
    futures = batcher.submit([text(3)], deadline())
    batcher.run_here(asyncio.get_running_loop().time())
    with pytest.raises(RuntimeError, match="boom"):
        futures[0].result()
    assert batcher.idle
    (ok,) = await asyncio.gather(*batcher.submit([text(3)], deadline()))
    assert ok.tolist() == [0.0, 0.0]
    await batcher.close()
