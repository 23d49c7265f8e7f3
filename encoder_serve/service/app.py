"""`create_app`: the FastAPI application, and the lifespan that loads, warms up and drains the model.

The package (manifest, hashes) is read when the app is built, since the request schema carries its label
count; the ONNX Runtime session is created and warmed up in the lifespan, before uvicorn accepts any
connection, so /readyz is true from the first request it can answer. On SIGTERM readiness turns false
at once; uvicorn stops accepting, lets accepted requests finish, and then the lifespan drains the batcher.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from encoder_serve.package import load_package
from encoder_serve.service.api import ClassifyEndpoint, build_router
from encoder_serve.service.apidocs import add_docs_pages
from encoder_serve.service.batching import Batcher
from encoder_serve.service.errors import install_error_handlers
from encoder_serve.service.inference import Classifier
from encoder_serve.service.kserve import build_kserve_router
from encoder_serve.service.metrics import ServiceMetrics, forget_this_process
from encoder_serve.service.middleware import RequestContext
from encoder_serve.service.runtime import Runtime
from encoder_serve.service.schemas import classify_request_model
from encoder_serve.service.settings import Settings, load_settings
from encoder_serve.service.state import Service

# The service exports Prometheus metrics itself; FastAPI's native OpenTelemetry would otherwise look up the
# global tracer provider (reading os.environ) on every request, about 5% of the event loop under load.
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def drain_on_signals(service: Service) -> None:
    """Chain onto uvicorn's SIGTERM/SIGINT handlers: the moment a signal arrives readiness goes false and
    the batcher stops holding texts for company, so the requests uvicorn waits for finish promptly."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            def handler(signum, frame, previous=previous):
                loop.call_soon_threadsafe(service.begin_drain)
                previous(signum, frame)
            signal.signal(sig, handler)


def document_model(app: FastAPI, model: type[BaseModel]) -> None:
    """Add a model that routes parse themselves (so FastAPI never saw it) to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {})[model.__name__] = \
                model.model_json_schema(ref_template="#/components/schemas/{model}")
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def lifespan(app: FastAPI):
    service: Service = app.state.service
    settings = service.settings
    runtime = await asyncio.to_thread(Runtime, service.package, settings.precision, settings.intra_op_threads)
    if settings.max_batch_tokens < runtime.max_length:
        raise ValueError(f"MAX_BATCH_TOKENS ({settings.max_batch_tokens}) must be >= the model's max_length "
                         f"({runtime.max_length}), or a long text could never be batched")
    await asyncio.to_thread(runtime.warm_up)
    batcher = Batcher(runtime.predict, service.metrics, max_batch_size=settings.max_batch_size,
                      max_batch_tokens=settings.max_batch_tokens, max_wait_s=settings.max_wait_ms / 1000,
                      max_queue_size=settings.max_queue_size, max_padding=settings.max_padding_ratio)
    batcher.start()
    service.classifier = Classifier(runtime, batcher, service.metrics)
    service.metrics.model_info.labels(service.package.name, service.package.version, runtime.precision).set(1)
    service.metrics.ready.set(1)
    drain_on_signals(service)
    try:
        yield
    finally:
        service.begin_drain()
        await batcher.close()
        forget_this_process()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    package = load_package(settings.model_dir)
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    request_model = classify_request_model(settings.max_inputs_per_request, settings.max_chars_per_input,
                                           len(package.labels))
    app = FastAPI(title="encoder-serve", summary=f"Text classification with {package.ref}",
                  version=package.version, lifespan=lifespan, telemetry=NO_TELEMETRY, docs_url=None, redoc_url=None)
    add_docs_pages(app)
    app.state.service = Service(settings=settings, package=package, metrics=metrics, registry=registry)
    router = build_router(request_model)
    app.include_router(router)
    app.include_router(build_kserve_router(request_model))
    document_model(app, request_model)
    install_error_handlers(app)
    app.add_middleware(RequestContext, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       max_concurrent_requests=settings.max_concurrent_requests,
                       endpoints={("POST", "/v1/classify"): ClassifyEndpoint(app, router, request_model)})
    return app
