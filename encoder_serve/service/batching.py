"""The batching core: one queue, one scheduler task, one reply future per text (no FastAPI here).

Design (after text-embeddings-inference's `core/src/queue.rs`): request handlers tokenize, then `submit`
one entry per text, each with its own future and deadline. A single background task owns the queue:
whenever the model is free it takes whatever is queued, up to `max_batch_size` texts and `max_batch_tokens`
padded tokens, and runs the model in a dedicated worker thread, so the event loop keeps accepting and
tokenizing the next requests while the current batch computes. With `max_wait_ms = 0` a lone text never
waits for company; a positive value lets the scheduler hold the oldest text up to that long to fill a batch.
A request that finds its worker idle may instead compute its batch at once on the event loop's own thread
(`run_here`, called by the pipeline): for a lone text, handing it to a sleeping model thread and the answer
back to a sleeping event loop cost more than computing it where it is.

`model_threads` batches compute at once, each in a worker thread of its own (ONNX Runtime releases the GIL
and a session may run concurrently), and as many more are in flight: formed, waiting at the workers'
door, so a worker starts the next the moment its batch is done instead of waiting for a busy event loop
to notice and hand it over (TEI gets the same effect by answering from another thread). On a small model on CPU, two
single-threaded batches at once do more per second than one batch on two threads.

When more is queued than fits, the batch is built around the oldest text (so nothing starves) from the
texts closest to it in length, adding at each step whichever neighbour adds fewer padding tokens, and
stops growing before the batch's padding ratio passes `max_padding_ratio` (the rest runs next, at once).
Entries whose caller has gone (cancelled future) are dropped before compute, and so are entries whose
deadline would pass before their batch could finish (they fail with DeadlineExceeded: a 504 at once,
instead of work nobody waits for), and so are entries queued with a wait budget (MAX_QUEUE_DELAY_MS) that
would finish after it (WaitedTooLong: a 429, as Triton's queue policy rejects a request whose queue time
passes its budget). How long that is comes from the model's measured speed: seconds per
padded token over the batches of the last SPEED_WINDOW_S seconds (a ratio of sums, so one slow batch
moves it little), or the warm-up measurement when the model has been idle that long. The same estimate
gives `work_ahead_s`, how long a text queued now would take to be answered (the work queued and in flight
ahead of it, then a batch of its own), which admission compares with its budget before taking a request.

Length grouping lets a text jump ahead of older ones, which would make the oldest wait longer than the
work queued ahead of them. So the queue is served in epochs: the oldest EPOCH_BATCHES x max_batch_size
texts form an epoch, batches are chosen within it until it is done, and only then does the next epoch
begin. No text is overtaken by one that came after its epoch, so a text waits for the work queued ahead of
it plus, at most, the rest of its own epoch: what admission promised holds.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from encoder_serve.service.threads import name_os_thread

Predict = Callable[[list[Sequence[int]]], np.ndarray]
# what a batch reports to tracing: the request contexts it served, its wall-clock start and end (ns), its
# texts, real tokens and padded tokens
OnBatch = Callable[[list[object], int, int, int, int, int], None]
SPEED_WINDOW_S = 2.0  # the model's speed is measured over the batches that finished this recently
CALIBRATION_TEXTS = 1024  # how many recent waits calibrate the estimate
CALIBRATE_ABOVE_S = 0.05  # waits estimated shorter than this are noise, not evidence
RUN_HERE_MAX_S = 0.005  # `run_here` computes on the event loop's thread only what is estimated to take less
EPOCH_BATCHES = 4  # an epoch: the oldest EPOCH_BATCHES x max_batch_size queued texts, batched among themselves



class Overloaded(Exception):
    """The service cannot take this work now: 429, `reason` in rejected_total, Retry-After `retry_after_s`."""

    def __init__(self, reason: str, message: str, retry_after_s: int):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class QueueFull(Overloaded):
    """The queue cannot take these texts now (MAX_QUEUE_SIZE)."""

    def __init__(self, depth: int, retry_after_s: int):
        super().__init__("queue_full", f"queue full ({depth} texts waiting)", retry_after_s)


class WaitedTooLong(Overloaded):
    """The text waited in the queue until it could no longer be answered within the queue-delay budget
    (admission's estimate of the work ahead was short): refused before compute, as Triton's queue policy
    rejects a request whose queue time passes its budget, so that what is answered 200 stays within it."""

    def __init__(self, waited_s: float, budget_s: float, retry_after_s: int):
        super().__init__("queue_delay", f"waited {waited_s:.2f} s for the model and would not have been answered "
                                        f"within MAX_QUEUE_DELAY_MS ({1000 * budget_s:g} ms)", retry_after_s)


class ShuttingDown(Exception):
    """The service is draining: it finishes accepted work and takes no more."""


class DeadlineExceeded(Exception):
    """The text's deadline passed before the model got to it."""


class BatchMetrics(Protocol):
    def observe_batch(self, size: int, tokens: int, padded_tokens: int, seconds: float, here: bool = False
                      ) -> None: ...
    def observe_queue_wait(self, seconds: float) -> None: ...
    def set_queue_depth(self, depth: int) -> None: ...
    def dropped(self, reason: str, count: int) -> None: ...


@dataclass(slots=True, eq=False)
class Entry:
    ids: Sequence[int]
    future: asyncio.Future
    deadline: float  # loop.time()
    enqueued: float = field(default=0.0)  # loop.time()
    expected_wait: float = 0.0  # seconds, as `queue_wait_estimate_s` put it when the text was queued
    trace: object = None  # the request's sampled span context when tracing is on (what its batch links to)
    taken: float = 0.0  # loop.time() when a batch took it
    due: float = math.inf  # loop.time() by which its answer must be ready to keep the queue-delay budget
    budget_s: float = 0.0  # that budget (for the refusal's message)


def select_batch(lengths: Sequence[int], max_size: int, max_tokens: int, max_padding_ratio: float = 1.0) -> list[int]:
    """Indices of the texts to run together; `lengths[0]` is the oldest and is always chosen.

    The batch costs `len(batch) * max(length)` padded tokens, and the model's work grows with them, not
    with the real tokens: a batch half padding costs twice the CPU per text. Walking outwards from the
    oldest text in length order, take the shorter neighbour (adds its padding) or the longer one (raises
    every row to its length), whichever wastes fewer tokens among those that keep the batch within
    `max_size` texts, `max_tokens` padded tokens and a padding ratio (padding / padded tokens) of
    `max_padding_ratio`; stop when neither does. What is left runs in the next batch, as soon as the model is free.
    """
    def fits(count: int, longest: int, total: int) -> bool:
        padded = count * longest
        return count <= max_size and padded <= max_tokens and padded - total <= max_padding_ratio * padded

    n = len(lengths)
    if fits(n, max(lengths), sum(lengths)):
        return list(range(n))
    order = sorted(range(n), key=lambda i: lengths[i])  # stable: ties stay oldest first
    lo = hi = order.index(0)
    longest = total = lengths[0]
    while True:
        count = hi - lo + 1
        candidates = []  # (wasted tokens, side): ties go to the shorter neighbour
        if lo > 0 and fits(count + 1, longest, total + lengths[order[lo - 1]]):
            candidates.append((longest - lengths[order[lo - 1]], -1))
        if hi + 1 < n and fits(count + 1, lengths[order[hi + 1]], total + lengths[order[hi + 1]]):
            candidates.append(((lengths[order[hi + 1]] - longest) * count, 1))
        if not candidates:
            break
        _, side = min(candidates)
        if side < 0:
            lo -= 1
            total += lengths[order[lo]]
        else:
            hi += 1
            longest = lengths[order[hi]]
            total += longest
    return sorted(order[lo: hi + 1])


class Batcher:
    """Owns the queue and the scheduler task; `predict` runs in the model threads (or, through `run_here`,
    on the caller's)."""

    def __init__(self, predict: Predict, metrics: BatchMetrics, *, max_batch_size: int, max_batch_tokens: int,
                 max_wait_ms: float = 0.0, max_queue_size: int = 1024, max_padding_ratio: float = 1.0,
                 seconds_per_token: float = 0.0, model_threads: int = 1, on_batch: OnBatch | None = None):
        self._predict = predict
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue_size = max_queue_size
        self.max_padding_ratio = max_padding_ratio
        self._queue: deque[Entry] = deque()
        self._queued_tokens = 0
        self._epoch_left = 0  # how many texts at the head of the queue belong to the epoch being served
        # The queue is scanned for texts to drop only when one may be: a deadline or queue-delay budget
        # has come (`_expiry`, never later than the earliest of them) or a caller gave up (`_gone`).
        self._expiry = math.inf
        self._gone = 0
        self.calibration = 1.0  # actual / estimated queue wait, the median over recent texts
        self._wait_ratios: deque[float] = deque(maxlen=CALIBRATION_TEXTS)
        self._since_calibration = 0
        self.epoch_size = EPOCH_BATCHES * max_batch_size
        self._in_flight_tokens = 0  # padded tokens handed to the worker and not finished
        self._wakeup = asyncio.Event()
        self.model_threads = model_threads
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=model_threads, thread_name_prefix="model",
                                            initializer=name_os_thread, initargs=("model",))
        self._task: asyncio.Task | None = None
        self._closing = False
        self._draining = False  # stop holding texts for company
        self.idle_seconds_per_token = seconds_per_token  # measured at warm-up, on an idle machine
        self._recent: deque[tuple[float, int, float]] = deque()  # (finished at, padded tokens, seconds)
        self._recent_tokens, self._recent_seconds = 0, 0.0
        self._running: dict[int, float] = {}  # worker thread id -> perf_counter() when its model call began
        self._batches = 0  # batches formed and not finished, wherever they compute

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    @property
    def alive(self) -> bool:
        """False once the scheduler task has died (never, unless a bug): the process cannot serve then."""
        return self._task is not None and not (self._task.done() and not self._closing)

    def drain(self) -> None:
        """Run queued texts as soon as the model is free instead of holding them for company (SIGTERM)."""
        self._draining = True
        self._wakeup.set()

    async def close(self) -> None:
        """Take no more work, run everything already queued, then stop the scheduler and the worker."""
        self._closing = self._draining = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def idle(self) -> bool:
        """Nothing queued, no batch formed or computing."""
        return not self._queue and not self._batches

    @property
    def busy_since(self) -> float | None:
        """perf_counter() when the longest-running model call began; None when the model is idle."""
        return min(list(self._running.values()), default=None)  # list(): one step, safe against other threads

    @property
    def seconds_per_token(self) -> float:
        """One model thread's seconds per padded token, over the batches of the last SPEED_WINDOW_S."""
        self._forget_before(time.monotonic() - SPEED_WINDOW_S)
        if not self._recent_tokens:
            return self.idle_seconds_per_token
        return self._recent_seconds / self._recent_tokens

    def _forget_before(self, cutoff: float) -> None:
        while self._recent and self._recent[0][0] < cutoff:
            _, tokens, seconds = self._recent.popleft()
            self._recent_tokens -= tokens
            self._recent_seconds -= seconds

    def queue_wait_estimate_s(self) -> float:
        """Seconds a text queued now would wait for its batch, from the model's measured speed: the work
        queued and in flight ahead of it and what newer texts of its own epoch may add (up to an epoch,
        judged from the queue's length), shared by the model threads."""
        queued = len(self._queue)
        overtaking = self._queued_tokens * min(1.0, self.epoch_size / queued) if queued else 0
        ahead = (self._queued_tokens + overtaking + self._in_flight_tokens) * self.seconds_per_token
        return ahead / self.model_threads

    def work_ahead_s(self) -> float:
        """Seconds until a text queued now would be answered: its wait, corrected by how such estimates have
        turned out (`calibration`), then one batch of its own (the recent mean)."""
        return self.queue_wait_estimate_s() * self.calibration + self.mean_batch_s()

    def mean_batch_s(self) -> float:
        """How long a model call took lately, on average (0 before any)."""
        return self._recent_seconds / len(self._recent) if self._recent else 0.0

    def _calibrate(self, waits: list[tuple[float, float]]) -> None:
        """Learn how estimated waits turn out: `calibration` is the median of actual / estimated wait over
        the last CALIBRATION_TEXTS texts that waited noticeably (between 0.5 and 3). What the estimate
        cannot see (other processes on the cores, a busy event loop handing batches over, which texts of an
        epoch go first) is thus measured instead of modelled. The median makes the estimate unbiased; the
        tail is admission's to measure (its overrun), on the whole time a request takes, not only its wait."""
        self._wait_ratios.extend(actual / expected for actual, expected in waits if expected > CALIBRATE_ABOVE_S)
        self._since_calibration += len(waits)
        if self._since_calibration >= CALIBRATION_TEXTS // 8 and len(self._wait_ratios) >= CALIBRATION_TEXTS // 8:
            ratios = sorted(self._wait_ratios)
            self.calibration = min(3.0, max(0.5, ratios[len(ratios) // 2]))
            self._since_calibration = 0

    def admit(self, count: int) -> None:
        """Raise QueueFull now if `count` more texts could not be queued: checked before tokenizing, so an
        overloaded service refuses work at the cost of a 429, not of the work it refuses."""
        if len(self._queue) + count > self.max_queue_size:
            raise QueueFull(len(self._queue), self.retry_after_s())

    def submit(self, sequences: Sequence[Sequence[int]], deadline: float, trace: object = None
               ) -> list[asyncio.Future]:
        """Queue one entry per sequence (all or none); each future resolves to that text's output row."""
        return [entry.future for entry in self.queue(sequences, deadline, trace)]

    def queue(self, sequences: Sequence[Sequence[int]], deadline: float, trace: object = None,
              wait_budget_s: float = 0.0, since: float | None = None) -> list[Entry]:
        """`submit`, returning the entries themselves (their times are what a trace's queue span shows).

        With a `wait_budget_s`, the texts must be answered within that budget from `since` (loop.time(),
        when the request came; default now) plus the time their own work takes; a text that would not be
        fails with WaitedTooLong before compute."""
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(self._queue) + len(sequences) > self.max_queue_size:
            self._drop_dead(now)  # texts nobody waits for must not cost a live request its place
            if len(self._queue) + len(sequences) > self.max_queue_size:
                raise QueueFull(len(self._queue), self.retry_after_s())
        expected = self.queue_wait_estimate_s()
        entries = [Entry(ids, loop.create_future(), deadline, now, expected, trace) for ids in sequences]
        tokens = sum(len(ids) for ids in sequences)
        if wait_budget_s:
            own_s = tokens * self.seconds_per_token / self.model_threads
            due = (now if since is None else since) + wait_budget_s + own_s + self.mean_batch_s()
            for entry in entries:
                entry.due, entry.budget_s = due, wait_budget_s
        self._queue.extend(entries)
        self._queued_tokens += tokens
        if entries:
            self._expiry = min(self._expiry, deadline, entries[0].due)
        self._metrics.set_queue_depth(len(self._queue))
        self._wakeup.set()
        return entries

    def cancel(self, futures: Sequence[asyncio.Future]) -> None:
        """The caller gave up (its deadline passed): its texts leave the queue before compute."""
        for future in futures:
            future.cancel()
        self._gone += len(futures)
        self._wakeup.set()

    def retry_after_s(self) -> int:
        """Seconds until the work queued now is done at the recent speed (at least 1, as Retry-After wants)."""
        return max(1, math.ceil(self.work_ahead_s()))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task] = set()
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            in_flight = {task for task in in_flight if not task.done()}
            if len(in_flight) >= 2 * self.model_threads:  # every worker busy, and a batch waiting for each
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue  # the queue may have changed meanwhile (cancellations, deadlines)
            if self.max_wait_s > 0 and not self._draining:
                await self._wait_for_company(loop)
            batch = self._take_batch(loop.time())
            if batch:
                self._batches += 1
                in_flight.add(loop.create_task(self._run_batch(loop, batch)))
        if in_flight:
            await asyncio.wait(in_flight)

    def _full(self) -> bool:
        return (len(self._queue) >= self.max_batch_size
                or len(self._queue) * max(len(e.ids) for e in self._queue) >= self.max_batch_tokens)

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold the queue until it fills a batch, its oldest text has waited max_wait_s, or a deadline
        comes; entries given up on meanwhile leave at once, so they never hold queue slots."""
        while not self._draining and self._queue and not self._full():
            now = loop.time()
            self._drop_dead(now)
            if not self._queue:
                return
            until = min(self._queue[0].enqueued + self.max_wait_s, min(e.deadline for e in self._queue))
            if until <= now:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), until - now)
            except TimeoutError:
                return

    def _drop_dead(self, now: float) -> None:
        """Remove entries whose deadline passed (they get DeadlineExceeded), whose queue-delay budget passed
        (WaitedTooLong) or whose caller has gone; scans the queue only when one of those may have happened."""
        if now < self._expiry and not self._gone:
            return
        self._gone = 0
        gone = expired = overdue = epoch_dropped = 0
        live: deque[Entry] = deque()
        for position, entry in enumerate(self._queue):
            if entry.deadline <= now:  # whether or not its caller already gave up on it
                if not entry.future.done():
                    entry.future.set_exception(DeadlineExceeded())
                expired += 1
            elif entry.due <= now:
                overdue += self._waited_too_long(entry, now)
            elif entry.future.done():  # cancelled by its caller, which gave up on its request
                gone += 1
            else:
                live.append(entry)
                continue
            epoch_dropped += position < self._epoch_left
        self._expiry = min((min(e.deadline, e.due) for e in live), default=math.inf)
        if gone or expired or overdue:
            self._epoch_left -= epoch_dropped
            self._set_queue(live)
            if gone:
                self._metrics.dropped("cancelled", gone)
            if expired:
                self._metrics.dropped("deadline", expired)
            if overdue:
                self._metrics.dropped("queue_delay", overdue)

    def _waited_too_long(self, entry: Entry, now: float) -> bool:
        """Fail `entry` with WaitedTooLong; False if its caller had already gone (then it is not counted)."""
        if entry.future.done():
            return False
        entry.future.set_exception(WaitedTooLong(now - entry.enqueued, entry.budget_s, self.retry_after_s()))
        return True

    def _set_queue(self, entries: deque[Entry]) -> None:
        self._queue = entries
        self._queued_tokens = sum(len(e.ids) for e in entries)
        self._metrics.set_queue_depth(len(entries))

    def _take_batch(self, now: float) -> list[Entry]:
        """The next batch; its texts that could not finish before their deadline fail now instead."""
        self._drop_dead(now)
        if not self._queue:
            return []
        if self._epoch_left <= 0:
            self._epoch_left = min(len(self._queue), self.epoch_size)
        # only the epoch is taken out and put back: a batch costs the epoch's length, not the queue's
        epoch = [self._queue.popleft() for _ in range(min(self._epoch_left, len(self._queue)))]
        chosen = select_batch([len(e.ids) for e in epoch], self.max_batch_size, self.max_batch_tokens,
                              self.max_padding_ratio)
        self._epoch_left -= len(chosen)
        if len(chosen) == len(epoch):
            batch = epoch
        else:
            picked = set(chosen)
            batch = [epoch[i] for i in chosen]
            self._queue.extendleft(reversed([e for i, e in enumerate(epoch) if i not in picked]))
        self._queued_tokens -= sum(len(e.ids) for e in batch)
        self._metrics.set_queue_depth(len(self._queue))
        if any(e.future.done() for e in batch):  # cancelled with its request's task, not through `cancel`
            self._metrics.dropped("cancelled", sum(e.future.done() for e in batch))
            batch = [e for e in batch if not e.future.done()]
            if not batch:
                return []
        padded = len(batch) * max(len(e.ids) for e in batch)
        finish = now + (self._in_flight_tokens / self.model_threads + padded) * self.seconds_per_token
        late = [e for e in batch if e.deadline < finish]
        if late:
            for entry in late:
                entry.future.set_exception(DeadlineExceeded())
            self._metrics.dropped("deadline", len(late))
            batch = [e for e in batch if e.deadline >= finish]
        overdue = [e for e in batch if e.due < finish]
        if overdue:
            self._metrics.dropped("queue_delay", sum(self._waited_too_long(e, now) for e in overdue))
            batch = [e for e in batch if e.due >= finish]
        for entry in batch:
            entry.taken = now
            self._metrics.observe_queue_wait(now - entry.enqueued)
        self._calibrate([(now - e.enqueued, e.expected_wait) for e in batch])
        return batch

    def _timed_predict(self, sequences: list[Sequence[int]]) -> tuple[np.ndarray, float, int]:
        """In the thread that computes the batch: the model's own time, not the wait behind the batch before it,
        and when the call began (wall clock, ns)."""
        thread = threading.get_ident()
        began = time.time_ns()
        started = self._running[thread] = time.perf_counter()
        try:
            outputs = self._predict(sequences)
        finally:
            del self._running[thread]
        return outputs, time.perf_counter() - started, began

    def run_here(self, now: float) -> None:
        """Take the next batch and compute it on the calling thread (the event loop's), now: for a request that
        found its worker idle, this skips handing the batch to a model thread and the answer back, two
        wake-ups of sleeping threads. Does nothing while another batch is formed or computing, or when what is
        queued is estimated to take RUN_HERE_MAX_S or longer (the event loop answers nobody meanwhile)."""
        if self._batches or self._closing or not self._queue:
            return
        if len(self._queue) * max(len(e.ids) for e in self._queue) * self.seconds_per_token >= RUN_HERE_MAX_S:
            return
        batch = self._take_batch(now)
        if not batch:
            return
        self._batches += 1
        try:
            outputs, seconds, began = self._timed_predict([e.ids for e in batch])
        except Exception as error:  # noqa: BLE001 (a model failure fails its batch, not its caller's task)
            fail(batch, error)
            return
        finally:
            self._batches -= 1
        self._finish_batch(batch, outputs, seconds, began, here=True)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Entry]) -> None:
        """Compute `batch` in a model thread (`_batches` was counted when its task was created)."""
        padded = len(batch) * max(len(e.ids) for e in batch)
        self._in_flight_tokens += padded
        try:
            outputs, seconds, began = await loop.run_in_executor(
                self._executor, self._timed_predict, [e.ids for e in batch])
        except Exception as error:  # noqa: BLE001 (a model failure fails its batch, not the scheduler)
            fail(batch, error)
            return
        finally:
            self._in_flight_tokens -= padded
            self._batches -= 1
        self._finish_batch(batch, outputs, seconds, began)

    def _finish_batch(self, batch: list[Entry], outputs: np.ndarray, seconds: float, began: int,
                      here: bool = False) -> None:
        """Record the batch's speed and metrics, and answer its texts."""
        sequences = [e.ids for e in batch]
        padded = len(batch) * max(len(s) for s in sequences)
        self._recent.append((time.monotonic(), padded, seconds))
        self._recent_tokens += padded
        self._recent_seconds += seconds
        tokens = sum(len(s) for s in sequences)
        self._metrics.observe_batch(len(batch), tokens, padded, seconds, here)
        if self._on_batch is not None:
            self._on_batch([e.trace for e in batch], began, began + int(seconds * 1e9), len(batch), tokens, padded)
        for entry, row in zip(batch, outputs):
            if not entry.future.done():
                entry.future.set_result(row)


def fail(batch: list[Entry], error: Exception) -> None:
    """A model failure fails every text of its batch still waiting."""
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(error)
