"""OpenTelemetry traces of the request path, off unless an OTLP endpoint is configured.

Configured by the standard variables, so an operator's collector set-up works unchanged:
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns tracing on and says where
OTLP/HTTP goes; OTEL_SERVICE_NAME (default encoder-serve), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER /
OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on), OTEL_EXPORTER_OTLP_HEADERS and friends, and
OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BSP_MAX_EXPORT_BATCH_SIZE / OTEL_BSP_SCHEDULE_DELAY for the export queue.
OTEL_SDK_DISABLED=true keeps it off. The SDK and the exporter come from the `otel` extra and are imported
only when tracing is on.

What a trace holds (span names and attributes after the HTTP server semantic conventions):

    POST /v1/classify        one per request (kind SERVER): http.request.method, http.route,
      |                      http.response.status_code, url.path, encoder_serve.texts, encoder_serve.model;
      |                      a caller's W3C `traceparent` makes it a child of the caller's span
      +-- tokenize           the request's texts into token ids
      +-- queue              from queueing its texts until the last of them was taken into a batch
    batch                    one per model call, its own trace (a batch serves many requests), linked to
                             every sampled request span it served: batch.size, batch.tokens,
                             batch.padded_tokens, batch.padding_ratio

The trace id goes into the request's JSON log line and into the response's `traceresponse` header, and
onto the request-latency histogram as an exemplar. Spans leave through a bounded queue drained by a thread
of its own: exporting never blocks a request, and what a full queue drops is counted
(encoder_serve_spans_dropped_total).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from encoder_serve.service.threads import named

log = logging.getLogger("encoder_serve.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def enabled(environ: dict[str, str] | None = None) -> bool:
    """True when an OTLP endpoint is configured and the SDK is not disabled."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


class BoundedExport:
    """A span processor: ended, sampled spans go into a bounded queue that a thread of its own exports in
    batches. A full queue drops the span and counts it; an export that fails counts its spans."""

    def __init__(self, exporter, dropped, max_queue: int, batch: int, delay_s: float):
        self.exporter = exporter
        self.dropped = dropped  # a Counter with a `reason` label
        self.max_queue, self.batch, self.delay_s = max_queue, batch, delay_s
        self.queue: deque = deque()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=named("otel-export", self._run), name="otel-export", daemon=True)
        self.thread.start()

    # the SpanProcessor interface
    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span) -> None:
        with self.lock:
            if len(self.queue) >= self.max_queue:
                self.dropped.labels("queue_full").inc()
                return
            self.queue.append(span)
            full = len(self.queue) >= self.batch
        if full:
            self.wake.set()

    def shutdown(self) -> None:
        self.done.set()
        self.wake.set()
        self.thread.join(10)
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        while self.queue and time.monotonic() < deadline:
            self._export_once()
        return not self.queue

    def _run(self) -> None:
        while not self.done.is_set():
            self.wake.wait(self.delay_s)
            self.wake.clear()
            while self.queue:
                self._export_once()
        while self.queue:
            self._export_once()

    def _export_once(self) -> None:
        with self.lock:
            spans = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
        if not spans:
            return
        try:
            result = self.exporter.export(spans)
            failed = getattr(result, "name", "SUCCESS") != "SUCCESS"
        except Exception:
            log.warning("exporting %d spans failed", len(spans), exc_info=True)
            failed = True
        if failed:
            self.dropped.labels("export_failed").inc(len(spans))


class Tracing:
    """The tracer, the propagator and the span processor, built from the environment."""

    def __init__(self, service_version: str, model: str, dropped):
        from opentelemetry import propagate, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        env = os.environ
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "encoder-serve"),
                                    "service.version": service_version}).merge(OTELResourceDetector().detect())
        # OTEL_TRACES_SAMPLER, with the trace-id ratio samplers decided here, before any span exists: a
        # request left out then costs one random number (the SDK would build a span to drop it). A root
        # span has no upstream to agree with, so a random draw samples as the trace id's bits would.
        sampler_name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        self.ratio = None
        self.ratio_with_parent = False  # traceidratio applies to requests with a caller's context too
        if sampler_name in ("traceidratio", "parentbased_traceidratio"):
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
            try:
                self.ratio = min(1.0, max(0.0, float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
            except ValueError:
                self.ratio = 1.0  # as the SDK does with an argument that is not a number
            self.ratio_with_parent = sampler_name == "traceidratio"
            sampler = ALWAYS_ON if self.ratio_with_parent else ParentBased(ALWAYS_ON)
            self.provider = TracerProvider(resource=resource, sampler=sampler)
        else:
            self.provider = TracerProvider(resource=resource)  # the SDK reads OTEL_TRACES_SAMPLER itself
        processor = type("BoundedExportProcessor", (BoundedExport, SpanProcessor), {})  # the SDK's hooks too
        self.processor = processor(OTLPSpanExporter(), dropped,
                                       max_queue=int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048")),
                                       batch=int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")),
                                       delay_s=int(env.get("OTEL_BSP_SCHEDULE_DELAY", "1000")) / 1000)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("encoder_serve")
        self.propagator = propagate.get_global_textmap()
        self.trace = trace
        self.model = model
        self.server_kind = trace.SpanKind.SERVER

    def start_request(self, method: str, route: str, path: str, headers: Sequence[tuple[bytes, bytes]]):
        """The request's span, started (not yet current), a child of the caller's `traceparent` if any; None
        when the sampler leaves the request out, so that an unsampled request costs one sampling decision
        and nothing else (no context switches, no child spans)."""
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
                   if name in (b"traceparent", b"tracestate", b"baggage")}
        if self.ratio is not None and (self.ratio_with_parent or "traceparent" not in carrier) \
                and random.random() >= self.ratio:
            return None
        parent = self.propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(f"{method} {route}", context=parent, kind=self.server_kind)
        if not span.is_recording():
            return None
        span.set_attributes({"http.request.method": method, "http.route": route, "url.path": path,
                             "encoder_serve.model": self.model})
        return span

    def traced(self) -> bool:
        """Whether the request being handled has a sampled span (its children are then worth making)."""
        return self.trace.get_current_span().is_recording()

    def use(self, span):
        """A context manager making `span` current (for the child spans and the log lines under it)."""
        return self.trace.use_span(span, end_on_exit=False)

    def child(self, name: str, **attributes: Any):
        return self.tracer.start_as_current_span(name, attributes=attributes or None)

    def current_context(self):
        """The current span's context when it is sampled (what a batch links to), else None."""
        context = self.trace.get_current_span().get_span_context()
        return context if context.trace_flags.sampled else None

    def record_span(self, name: str, start_ns: int, end_ns: int, links: Sequence = (), root: bool = False,
                    **attributes: Any) -> None:
        """A span that has already happened (the queue wait, a batch), with its own start and end."""
        context = self.trace.set_span_in_context(self.trace.INVALID_SPAN) if root else None
        span = self.tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes or None,
                                      links=[self.trace.Link(c) for c in links])
        span.end(end_time=end_ns)

    def observe_batch(self, contexts: Sequence, start_ns: int, end_ns: int, size: int, tokens: int,
                      padded_tokens: int) -> None:
        """One batch span linked to the request spans it served (if any of them is sampled)."""
        sampled = [c for c in contexts if c is not None]
        if sampled:
            self.record_span("batch", start_ns, end_ns, links=sampled, root=True, **{
                "batch.size": size, "batch.tokens": tokens, "batch.padded_tokens": padded_tokens,
                "batch.padding_ratio": round(1 - tokens / padded_tokens, 4)})

    @staticmethod
    def ids(span) -> tuple[str, str] | None:
        """(trace id, span id) in hex when `span` is sampled, else None."""
        context = span.get_span_context()
        if not context.trace_flags.sampled:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def shutdown(self) -> None:
        self.provider.shutdown()


def from_environment(service_version: str, model: str, dropped) -> Tracing | None:
    """Tracing when the environment asks for it (see the module's docstring), else None."""
    if not enabled():
        return None
    try:
        return Tracing(service_version, model, dropped)
    except ModuleNotFoundError as e:
        raise ValueError(f"tracing is configured ({', '.join(v for v in ENDPOINT_VARIABLES if os.environ.get(v))}) "
                         f"but the OpenTelemetry SDK is not installed (no module {e.name!r}): "
                         "pip install 'encoder-serve[otel]'") from None
