"""The inference pipeline shared by /v1/classify and the KServe v2 infer route: texts in, probabilities out.

    deadline check -> queue check -> tokenize -> batcher (one future per text) -> probabilities

A request whose deadline is shorter than the model work already queued is answered 504 at once: it could
not be served in time, and computing it anyway would take the model from requests that can. Tokenization
happens in the request's own task, so it overlaps the batch the model is computing; long requests
tokenize in a thread (the Rust tokenizer releases the GIL) to keep the event loop free. Each text then
waits on its own future until its batch is done, the deadline passes (504) or the client disconnects; in
the last two cases the futures are cancelled and the batcher drops them before compute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence

import numpy as np

from encoder_serve.service.backend import OnnxBackend, Tokenized
from encoder_serve.service.batching import Batcher, DeadlineExceeded, QueueFull
from encoder_serve.service.metrics import ServiceMetrics

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


class ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


class InferencePipeline:
    def __init__(self, backend: OnnxBackend, batcher: Batcher, metrics: ServiceMetrics):
        self.backend = backend
        self.batcher = batcher
        self.metrics = metrics

    async def tokenize(self, texts: Sequence[str]) -> Tokenized:
        started = time.perf_counter()
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            tokenized = self.backend.tokenize(texts)
        else:
            tokenized = await asyncio.to_thread(self.backend.tokenize, texts)
        self.metrics.tokenization.observe(time.perf_counter() - started)
        return tokenized

    def check_deadline(self, timeout_s: float) -> None:
        """504 at once when the work queued ahead is longer than the request may wait."""
        ahead = self.batcher.work_ahead_s()
        if ahead > timeout_s:
            self.metrics.timeouts.inc()
            raise RequestTimeout(f"the model has {ahead:.3f} s of work queued, more than this request's "
                                 f"deadline of {timeout_s:.3f} s")

    async def classify(self, texts: Sequence[str], *, truncate: bool, timeout_s: float,
                       client_gone: Awaitable[object] | None = None) -> list[np.ndarray]:
        """One probability row per text, in input order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.check_deadline(timeout_s)
        try:
            self.batcher.admit(len(texts))
            tokenized = await self.tokenize(texts)
            if not truncate and tokenized.truncated:
                raise InputTooLong(tokenized.truncated[0], self.backend.max_length)
            futures = self.batcher.submit(tokenized.ids, deadline)
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise
        # one text (the common request) waits on its own future: a gather would cost a task per request
        results = futures[0] if len(futures) == 1 else asyncio.gather(*futures)
        watcher = asyncio.ensure_future(client_gone) if client_gone is not None else None
        try:
            done, _ = await asyncio.wait({results} | ({watcher} if watcher else set()),
                                         timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
        if results in done:
            try:
                return [results.result()] if len(futures) == 1 else results.result()
            except DeadlineExceeded:
                self.batcher.cancel(futures)  # its other texts, if any, are not computed for nobody
                self.metrics.timeouts.inc()
                raise RequestTimeout() from None
        self.batcher.cancel(futures)  # the batcher drops them before compute
        if watcher is not None and watcher in done:
            raise ClientGone()
        self.metrics.timeouts.inc()
        raise RequestTimeout()
