"""The inference pipeline shared by /v1/classify and the KServe v2 infer route: texts in, probabilities out.

    queued-work check -> queue-size check -> tokenize -> batcher (one future per text) -> probabilities

Admission checked the queued model work against MAX_QUEUE_DELAY_MS before the body was read; it is checked
again here, once the request is parsed, because requests admitted meanwhile may have queued their texts
since (at MAX_CONCURRENT_REQUESTS of them, that alone would be seconds of work). A request whose deadline
is shorter than the work queued is answered 504 at once: it could not be served in time, and computing it
anyway would take the model from requests that can. Tokenization happens in the request's own task, so it
overlaps the batch the model is computing (`Encoder`: about 10 us for a tweet); long requests tokenize in
a thread, so that the event loop keeps answering. Each text then waits on its own future until its batch
is done or the deadline passes (504: the futures are cancelled and the batcher drops them before
compute); a request that is its worker's only one, with the model idle, has its batch computed at once on
the event loop's thread instead (INLINE_LONE_REQUESTS). A client that hangs up is not seen before its
answer is written (the HTTP server does not report a disconnect while a request is in progress), so a
client that may give up should say when, with X-Request-Timeout-Ms: its work is then dropped at that
deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from encoder_serve.service.backend import AttentionBackend, Explanation, OnnxBackend, Tokenized
from encoder_serve.service.batching import Batcher, DeadlineExceeded, Entry, Overloaded
from encoder_serve.service.metrics import ServiceMetrics
from encoder_serve.service.threads import name_os_thread
from encoder_serve.service.tracing import Tracing

INLINE_TOKENIZE_CHARS = 4096  # below this, a thread hop costs more than tokenizing on the event loop


class InputTooLong(Exception):
    def __init__(self, index: int, max_length: int, field: str | None = None):
        super().__init__(f"longer than the model's {max_length} tokens and truncate is false")
        self.index = index
        self.field = field or f"inputs[{index}]"


class RequestTimeout(Exception):
    """The request's deadline passes, or would pass, before all its texts are classified."""

    def __init__(self, message: str = "the request's deadline passed before it was classified"):
        super().__init__(message)


class NoAttentionGraph(Exception):
    """The package was built without the attention graph that /v1/explain needs."""


class InferencePipeline:
    def __init__(self, backend: OnnxBackend, batcher: Batcher, metrics: ServiceMetrics, max_queue_delay_ms: float = 0,
                 attention: AttentionBackend | None = None, tracing: Tracing | None = None,
                 inline_lone_requests: bool = False):
        self.backend = backend
        self.batcher = batcher
        self.metrics = metrics
        self.tracing = tracing
        self.max_queue_delay_s = max_queue_delay_ms / 1000
        self.attention = attention
        self.overrun_s: Callable[[], float] = lambda: 0.0  # admission's measured overrun of its promises
        # a positive MAX_WAIT_MS asks a lone text to wait for company: then it is not computed alone at once
        self.inline_lone_requests = inline_lone_requests and not batcher.max_wait_s
        self.in_progress: Callable[[], int] = lambda: 1  # inference requests in progress in this worker (admission's)
        # explain's own lane: one thread, bounded by admission (MAX_CONCURRENT_EXPLAINS), never the batcher's
        self._explain = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain",
                                           initializer=name_os_thread, initargs=("explain",)) if attention else None

    @property
    def precision(self) -> str:
        """The precision the model runs in (fp32 or int8)."""
        return self.backend.precision

    @property
    def alive(self) -> bool:
        """False once the batcher's scheduler has died: the process cannot serve then."""
        return self.batcher.alive

    @property
    def busy_since(self) -> float | None:
        """perf_counter() when the longest-running model call began; None when the model is idle."""
        return self.batcher.busy_since

    def drain(self) -> None:
        """Run queued texts as soon as a model thread is free instead of holding them for company."""
        self.batcher.drain()

    def close(self) -> None:
        if self._explain is not None:
            self._explain.shutdown(wait=True)

    async def explain(self, text: str, *, truncate: bool, timeout_s: float) -> Explanation:
        """One text through the attention graph, in the explain lane's thread, within the deadline."""
        if self.attention is None:
            raise NoAttentionGraph()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._explain, self.attention.explain, text)
        try:
            explanation = await asyncio.wait_for(work, timeout_s)
        except TimeoutError:
            self.metrics.timeouts.inc()
            raise RequestTimeout() from None
        if explanation.truncated and not truncate:
            raise InputTooLong(0, self.backend.max_length, field="inputs")
        return explanation

    def trace_queue_wait(self, loop: asyncio.AbstractEventLoop, entries: list[Entry]) -> None:
        """The request's `queue` span: from queueing its texts until the last of them was taken into a batch."""
        if all(e.taken for e in entries):
            to_wall_ns = time.time_ns() - int(loop.time() * 1e9)
            self.tracing.record_span("queue", int(entries[0].enqueued * 1e9) + to_wall_ns,
                                     int(max(e.taken for e in entries) * 1e9) + to_wall_ns)

    async def tokenize(self, texts: Sequence[str]) -> Tokenized:
        started = time.perf_counter()
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            tokenized = self.backend.tokenize(texts)
        else:
            tokenized = await asyncio.to_thread(self.backend.tokenize, texts)
        self.metrics.tokenization.observe(time.perf_counter() - started)
        return tokenized

    def check_queued_work(self, timeout_s: float) -> None:
        """The queue-delay budget again, now that the request is parsed (admission checked it before the body
        was read, but the requests admitted meanwhile may have queued their texts since): 429 when the work
        queued ahead is over the budget, 504 when it is longer than this request may wait."""
        ahead = self.batcher.work_ahead_s()
        if self.max_queue_delay_s and (taking := ahead + self.overrun_s()) > self.max_queue_delay_s:
            retry = max(1, math.ceil(taking - self.max_queue_delay_s))
            raise Overloaded("queue_delay", f"the model has {taking:.2f} s of work queued, more than "
                                            f"MAX_QUEUE_DELAY_MS ({1000 * self.max_queue_delay_s:g} ms)", retry)
        if ahead > timeout_s:
            self.metrics.timeouts.inc()
            raise RequestTimeout(f"the model has {ahead:.3f} s of work queued, more than this request's "
                                 f"deadline of {timeout_s:.3f} s")

    async def alone(self) -> bool:
        """Whether this request is its worker's only one and the model idle, still after one turn of the event
        loop: requests that reached the worker meanwhile (while the model ran on the event loop's thread, say)
        are admitted in that turn, and then the model's batches are theirs to share."""
        if not (self.inline_lone_requests and self.batcher.idle and self.in_progress() == 1):
            return False
        await asyncio.sleep(0)
        return self.batcher.idle and self.in_progress() == 1

    async def classify(self, texts: Sequence[str], *, truncate: bool, timeout_s: float) -> list[np.ndarray]:
        """One probability row per text, in input order."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout_s
        tracing = self.tracing if self.tracing is not None and self.tracing.traced() else None
        alone = await self.alone()
        try:
            self.check_queued_work(timeout_s)
            self.batcher.admit(len(texts))
            if tracing is None:
                tokenized = await self.tokenize(texts)
            else:
                with tracing.child("tokenize", **{"encoder_serve.texts": len(texts)}):
                    tokenized = await self.tokenize(texts)
            if not truncate and tokenized.truncated:
                raise InputTooLong(tokenized.truncated[0], self.backend.max_length)
            context = tracing.current_context() if tracing is not None else None
            entries = self.batcher.queue(tokenized.ids, deadline, context, self.max_queue_delay_s, started)
            futures = [entry.future for entry in entries]
            if alone:  # a batch of its own, computed here, without the hand-over to a model thread and back
                self.batcher.run_here(loop.time())
        except Overloaded as refused:
            self.metrics.rejected.labels(refused.reason).inc()
            raise
        # At the deadline a timer fails the texts not yet answered (the batcher then drops them before
        # compute); one text, the common request, is awaited directly, without a gather's bookkeeping.
        timer = loop.call_at(deadline, expire, futures)
        try:
            return [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        except DeadlineExceeded:
            self.batcher.cancel(futures)  # its other texts, if any, are not computed for nobody
            self.metrics.timeouts.inc()
            raise RequestTimeout() from None
        except Overloaded as refused:  # waited past the queue-delay budget
            self.batcher.cancel(futures)
            self.metrics.rejected.labels(refused.reason).inc()
            raise
        finally:
            timer.cancel()
            if context is not None:
                self.trace_queue_wait(loop, entries)


def expire(futures: Sequence[asyncio.Future]) -> None:
    """A request's deadline came: its texts not answered yet fail with DeadlineExceeded."""
    for future in futures:
        if not future.done():
            future.set_exception(DeadlineExceeded())
