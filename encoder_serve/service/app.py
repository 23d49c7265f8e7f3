"""`create_app`: the FastAPI application, and the lifespan that loads, warms up and drains the model.

The package (manifest, hashes) is read when the app is built, since the request schema carries its label
count; the operations port starts first (so probes answer "alive, not ready" while the model loads), then
the ONNX Runtime session is created and warmed up, before the server accepts any connection, so /readyz is
true from the first request it can answer. On SIGTERM readiness turns false at once; the server stops
accepting, lets accepted requests finish, and then the lifespan drains the batcher.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from encoder_serve.cli import version
from encoder_serve.package import load_package
from encoder_serve.service import routes, tracing
from encoder_serve.service.admission import Admission
from encoder_serve.service.api import build_router, classify_answer
from encoder_serve.service.apidocs import add_docs_pages
from encoder_serve.service.backend import AttentionBackend, OnnxBackend
from encoder_serve.service.batching import Batcher
from encoder_serve.service.errors import install_error_handlers
from encoder_serve.service.http import Answer
from encoder_serve.service.kserve import build_kserve_router
from encoder_serve.service.metrics import (
    ProcessTreeCollector,
    ServiceMetrics,
    forget_this_process,
    server_root,
)
from encoder_serve.service.middleware import FastEndpoint, RequestContext
from encoder_serve.service.pipeline import InferencePipeline
from encoder_serve.service.playground import add_playground
from encoder_serve.service.probes import GcPauses, LoopLag, OpsServer
from encoder_serve.service.schemas import classify_request_model, explain_request_model
from encoder_serve.service.settings import Settings, load_settings
from encoder_serve.service.state import Service

log = logging.getLogger("encoder_serve.service")

# The service exports Prometheus metrics itself; FastAPI's native OpenTelemetry would otherwise look up the
# global tracer provider (reading os.environ) on every request, about 5% of the event loop under load.
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def drain_on_signals(service: Service) -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers, where it has Python ones: the moment a signal arrives
    readiness goes false and the batcher stops holding texts for company, so the requests the server waits
    for finish promptly. (Otherwise the lifespan's shutdown does the same, once the server has stopped.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            def handler(signum, frame, previous=previous):
                loop.call_soon_threadsafe(service.drain)
                previous(signum, frame)
            signal.signal(sig, handler)


def document_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add the models that routes parse themselves (so FastAPI never saw them) to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for model in models:
                schema.setdefault("components", {}).setdefault("schemas", {})[model.__name__] = \
                    model.model_json_schema(ref_template="#/components/schemas/{model}")
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def freeze_heap(young_threshold: int) -> None:
    """Hide what start-up loaded from the garbage collector, and let it run less often (GC_YOUNG_THRESHOLD).

    The libraries, the app and the model's Python side are some 70,000 objects that live as long as the
    process, and every full collection walked them all again to free nothing; a request allocates a few
    hundred, so Python's default young-generation threshold (700) collected thousands of times a second
    under load. Measured in one worker over a 20 s one-text flood: 8% of the time collecting, full
    collections of up to 50 ms every second with the event loop stopped; frozen and at 10,000, 0.3% and no
    full collection (docs/serving.md). gc.freeze is what Python's documentation suggests for a server that
    loads first; memory freed by reference counting, nearly all of it, is unaffected."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    log.info("garbage collector: %d start-up objects frozen, young-generation threshold %d",
             gc.get_freeze_count(), young_threshold)


@asynccontextmanager
async def lifespan(app: FastAPI):
    service: Service = app.state.service
    admission: Admission = app.state.admission
    settings = service.settings
    service.health.start_heartbeat(asyncio.get_running_loop())
    loop_lag = LoopLag(service.metrics.loop_lag.set)
    loop_lag.start(asyncio.get_running_loop())
    gc_pauses = GcPauses(service.metrics.observe_gc_pause)
    gc_pauses.start(asyncio.get_running_loop())
    ops = None
    if settings.ops_port:
        ops = OpsServer(settings.host, settings.ops_port, service.health, service.package.ref,
                        service.exposition).start()
    try:
        backend = await asyncio.to_thread(OnnxBackend, service.package, settings.precision, settings.intra_op_threads)
        if settings.max_batch_tokens < backend.max_length:
            raise ValueError(f"MAX_BATCH_TOKENS ({settings.max_batch_tokens}) must be >= the model's max_length "
                             f"({backend.max_length}), or a long text could never be batched")
        seconds_per_token = await asyncio.to_thread(backend.warm_up)
        batcher = Batcher(backend.predict, service.metrics, max_batch_size=settings.max_batch_size,
                          max_batch_tokens=settings.max_batch_tokens, max_wait_ms=settings.max_wait_ms,
                          max_queue_size=settings.max_queue_size, max_padding_ratio=settings.max_padding_ratio,
                          seconds_per_token=seconds_per_token, model_threads=settings.batch_threads,
                          on_batch=service.tracing.observe_batch if service.tracing else None)
        batcher.start()
        admission.work_ahead_s = batcher.work_ahead_s
        attention = (await asyncio.to_thread(AttentionBackend, service.package, backend.tokenizer)
                     if service.package.attention_path else None)
        pipeline = InferencePipeline(backend, batcher, service.metrics, settings.max_queue_delay_ms, attention,
                                     service.tracing, settings.inline_lone_requests)
        pipeline.overrun_s = lambda: admission.overrun_s
        pipeline.in_progress = lambda: admission.in_progress[routes.Kind.INFERENCE]
        service.load(pipeline)
        if settings.gc_young_threshold and server_root() != os.getpid():  # a worker of the launcher, which
            freeze_heap(settings.gc_young_threshold)  # lives to serve (in-process, in tests, the heap is theirs)
        drain_on_signals(service)
        try:
            yield
        finally:
            service.drain()
            await batcher.close()
            pipeline.close()
            if service.tracing is not None:
                service.tracing.shutdown()
            forget_this_process()
    finally:
        loop_lag.stop()
        gc_pauses.stop()
        if ops is not None:
            ops.stop()
        app.context.access_log.close()


def fast_endpoints(app: FastAPI, answers: dict[routes.Route, Answer]) -> dict[routes.Route, FastEndpoint]:
    """The answer of every route the table marks `fast`, callable without FastAPI's routing."""
    return {route: FastEndpoint(app, answers[route]) for route in routes.ROUTES if route.fast}


class ServiceApp(FastAPI):
    """FastAPI with `RequestContext` in front of everything, FastAPI's own middleware included.

    A refusal and the fast path are answered before FastAPI's middleware stack (its server-error,
    body-limit and exception layers) runs: under overload, refusing cheaply is what keeps the service
    serving. Every other request goes on through FastAPI as usual."""

    context: RequestContext

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self
            await self.context(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> ServiceApp:
    settings = settings or load_settings()
    package = load_package(settings.model_dir)
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    root = server_root()
    if Path("/proc").is_dir():
        registry.register(ProcessTreeCollector(root))
    request_model = classify_request_model(settings.max_inputs_per_request, settings.max_chars_per_input,
                                           len(package.labels))
    app = ServiceApp(title="encoder-serve", summary=f"Text classification with {package.ref}",
                  version=package.version, lifespan=lifespan, telemetry=NO_TELEMETRY, docs_url=None, redoc_url=None)
    app.state.service = Service(settings=settings, package=package, metrics=metrics, registry=registry,
                                process_root=root, tracing=tracing.from_environment(
                                    version(), package.ref, metrics.spans_dropped))
    app.state.admission = Admission(metrics, max_body_bytes=settings.max_body_bytes,
                                    max_concurrent_requests=settings.max_concurrent_requests,
                                    max_queue_delay_ms=settings.max_queue_delay_ms,
                                    max_concurrent_explains=settings.max_concurrent_explains)
    encoder = package.manifest["encoder"]
    explain_model = explain_request_model(settings.max_chars_per_input, encoder["n_layers"], encoder["n_heads"])
    answers = {routes.CLASSIFY: classify_answer(request_model)}
    routers = [build_router(request_model, explain_model, answers[routes.CLASSIFY]), build_kserve_router(request_model)]
    for router in routers:
        app.include_router(router)
    add_docs_pages(app)
    if settings.playground:
        add_playground(app)
    document_models(app, request_model, explain_model)
    install_error_handlers(app)
    app.context = RequestContext(app.routed, metrics, app.state.admission, fast_endpoints(app, answers),
                                 app.state.service.tracing)
    return app
