"""Pure-ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream per request).

`RequestContext` gives every HTTP request an id (a sane incoming X-Request-ID is kept), echoes it in the
response, counts and times the request by route template, tracks in-flight requests, writes one JSON
log line, and enforces MAX_BODY_BYTES: 413 from Content-Length up front, or once a streamed body passes it.
Routes listed in `endpoints` (the hot POST /v1/classify) are called directly, skipping FastAPI's routing.
It also caps inference requests in progress (MAX_CONCURRENT_REQUESTS, as TEI's max_concurrent_requests):
past the cap a request gets 429 before its body is read or tokenized, so overload costs little to refuse.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from encoder_serve.service.errors import error_response
from encoder_serve.service.logs import request_id
from encoder_serve.service.metrics import ServiceMetrics

access_log = logging.getLogger("encoder_serve.access")
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # anything else could forge log lines: replace it


def incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


def is_inference(scope: Scope) -> bool:
    """POST /v1/classify or POST /v2/models/{name}/infer: the routes that queue work for the model."""
    path = scope["path"]
    return scope["method"] == "POST" and (path == "/v1/classify" or
                                          (path.startswith("/v2/models/") and path.endswith("/infer")))


class RequestContext:
    """One pure-ASGI layer for everything every HTTP request needs (one layer costs less than two)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int, max_concurrent_requests: int,
                 endpoints: dict[tuple[str, str], ASGIApp] | None = None):
        self.app = app
        self.endpoints = endpoints or {}  # (method, path) -> ASGI endpoint called without FastAPI's routing
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent_requests
        self.inference_in_progress = 0
        self.too_many = f"more than {max_concurrent_requests} inference requests in progress; retry in 1 s"
        self.too_large = f"request body larger than {max_body_bytes} bytes (MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        rid = incoming_request_id(scope)
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        inference = is_inference(scope)
        self.inference_in_progress += inference
        self.metrics.in_flight.inc()
        try:
            if self.declared_too_large(scope):
                response = error_response(413, self.too_large, headers={"Connection": "close"})
                await response(scope, receive, send_with_id)
            elif inference and self.inference_in_progress > self.max_concurrent:
                self.metrics.rejected.labels("concurrency").inc()
                response = error_response(429, self.too_many, headers={"Retry-After": "1"})
                await response(scope, receive, send_with_id)
            else:
                endpoint = self.endpoints.get((scope["method"], scope["path"]), self.app)
                await endpoint(scope, self.limited(receive), send_with_id)
        finally:
            self.inference_in_progress -= inference
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_duration.labels(route).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={"fields": {
                    "method": scope["method"], "path": scope["path"], "route": route, "status": status,
                    "duration_ms": round(seconds * 1000, 3)}})
            request_id.reset(token)

    def declared_too_large(self, scope: Scope) -> bool:
        """413 from Content-Length up front, before reading a byte of the body."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                return value.isdigit() and int(value) > self.max_body_bytes
        return False

    def limited(self, receive: Receive) -> Receive:
        """`receive` that stops a streamed (chunked) body at the limit."""
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, self.too_large, headers={"Connection": "close"})
            return message

        return receive_limited
