"""Admission: whether the service takes a request, decided before its body is read.

Refusing is the cheapest thing the service does, so an overloaded service spends its time on the work it
took, not on the work it turns away. In order:

  * a body declared larger than MAX_BODY_BYTES: 413 (a streamed one is stopped at the limit, `too_large`);
  * inference: more than MAX_CONCURRENT_REQUESTS in progress in this worker (as TEI's
    max_concurrent_requests): 429 `concurrency`;
  * inference: more model work queued than MAX_QUEUE_DELAY_MS (admission by time, after Envoy's adaptive
    concurrency and Triton's queue policy): a new text would wait longer than the budget, so it is
    refused at once with 429 `queue_delay` and a Retry-After of when the queue will be under the budget.
    The queued work is the batcher's estimate plus what such promises have overrun lately (`overrun_s`,
    the 99th percentile of answered-in minus promised seconds): the time a request spends outside the
    queue (reading and parsing its body, tokenizing, answering, an event loop busy refusing a flood) is
    measured, not modelled, so that the requests taken are answered within the budget (and the batcher
    refuses, before compute, a text that would still not be: `WaitedTooLong`, the same reason);
  * explain: more than MAX_CONCURRENT_EXPLAINS in progress: 429 `explain_busy` (its own lane, so a person
    in the playground never delays classification traffic).

Every refusal is counted in rejected_total{reason} and answered with Retry-After. The queue-full check
(MAX_QUEUE_SIZE texts) needs the request's text count, so it happens after parsing, in the pipeline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from encoder_serve.service.metrics import ServiceMetrics
from encoder_serve.service.routes import Kind, Route

OVERRUN_REQUESTS = 1024  # how many recent answered requests measure the overrun
LEARN_ABOVE_S = 0.05  # requests promised less than this waited for nothing: noise, not evidence


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 429 or 413
    reason: str  # the rejected_total label, and the error type of the answer
    message: str
    headers: dict[str, str]


class Admission:
    def __init__(self, metrics: ServiceMetrics, *, max_body_bytes: int, max_concurrent_requests: int,
                 max_queue_delay_ms: float, max_concurrent_explains: int):
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_queue_delay_s = max_queue_delay_ms / 1000
        self.limits = {Kind.INFERENCE: max_concurrent_requests, Kind.EXPLAIN: max_concurrent_explains}
        self.in_progress = dict.fromkeys(self.limits, 0)
        self.promised_s: float | None = None  # the queued work when enter() last took an inference request
        self.overrun_s = 0.0
        self._overruns: deque[float] = deque(maxlen=OVERRUN_REQUESTS)
        self._since_overrun = 0
        self.work_ahead_s: Callable[[], float] = lambda: 0.0  # the batcher's, once the model is loaded
        self._too_large = Refusal(413, "body_too_large", f"request body larger than {max_body_bytes} bytes "
                                  "(MAX_BODY_BYTES)", {"Connection": "close"})

    def enter(self, route: Route | None, headers: list[tuple[bytes, bytes]]) -> Refusal | None:
        """A refusal, or None when the request is taken (then `leave` must follow, with `promised_s` as it
        was right after this call)."""
        self.promised_s = None
        for name, value in headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body_bytes:
                    return self.refuse(self._too_large)
                break
        kind = route.kind if route is not None else None
        if kind not in self.limits:
            return None
        if self.in_progress[kind] >= self.limits[kind]:
            return self.refuse(self._busy(kind))
        if kind is Kind.INFERENCE and self.max_queue_delay_s:
            promised = self.work_ahead_s()
            ahead = promised + self.overrun_s
            if ahead > self.max_queue_delay_s:
                retry = max(1, math.ceil(ahead - self.max_queue_delay_s))
                return self.refuse(Refusal(429, "queue_delay", f"the model has {ahead:.2f} s of work queued, more "
                                           f"than MAX_QUEUE_DELAY_MS ({1000 * self.max_queue_delay_s:g} ms); retry "
                                           f"in {retry} s", {"Retry-After": str(retry)}))
            self.promised_s = promised
        self.in_progress[kind] += 1
        return None

    def leave(self, route: Route | None, promised_s: float | None = None, answered_s: float | None = None) -> None:
        """A taken request is done; `answered_s`, when it was answered 200, is how long that took against the
        `promised_s` work queued when it was taken."""
        if route is not None and route.kind in self.in_progress:
            self.in_progress[route.kind] -= 1
        if promised_s is not None and answered_s is not None and promised_s > LEARN_ABOVE_S:
            self._overruns.append(answered_s - promised_s)
            self._since_overrun += 1
            if self._since_overrun >= OVERRUN_REQUESTS // 8:
                overruns = sorted(self._overruns)
                self.overrun_s = min(self.max_queue_delay_s / 2, max(0.0, overruns[int(0.99 * (len(overruns) - 1))]))
                self._since_overrun = 0

    def too_large(self) -> Refusal:
        """A streamed body passed MAX_BODY_BYTES."""
        return self.refuse(self._too_large)

    def refuse(self, refusal: Refusal) -> Refusal:
        self.metrics.rejected.labels(refusal.reason).inc()
        return refusal

    def _busy(self, kind: Kind) -> Refusal:
        retry = max(1, math.ceil(self.work_ahead_s()))
        if kind is Kind.EXPLAIN:
            return Refusal(429, "explain_busy", f"more than {self.limits[kind]} explain requests in progress "
                           f"(MAX_CONCURRENT_EXPLAINS); retry in {retry} s", {"Retry-After": str(retry)})
        return Refusal(429, "concurrency", f"more than {self.limits[kind]} inference requests in progress "
                       f"(MAX_CONCURRENT_REQUESTS); retry in {retry} s", {"Retry-After": str(retry)})
