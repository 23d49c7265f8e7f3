"""One pure-ASGI layer for what every HTTP request needs, in front of the whole application (app.ServiceApp
calls it before FastAPI's own middleware; no BaseHTTPMiddleware: it costs a task and a stream per request).

`RequestContext` finds the request's route in the route table, gives it an id (a sane incoming
X-Request-ID is kept), echoes the id in the response, asks `Admission` whether to take it (a refusal is
answered here, before the body is read or any handler runs), counts and times it under its route label
(refusals included), tracks in-flight requests and writes one JSON log line. With tracing on it opens the
request's span (a caller's traceparent honoured), makes it current for the spans below it, puts the trace
id in the log line, the `traceresponse` header and the latency histogram's exemplar. It also stops a
streamed body at MAX_BODY_BYTES.

Routes marked `fast` in the table (POST /v1/classify, the one that carries the load) are called directly:
routing through FastAPI (router, exception and exit-stack middleware, the endpoint wrapper, dependency
resolution) cost about as much CPU as the request's own work. `FastEndpoint` runs the same answer the
documented FastAPI route runs (`http.Answer`: headers and body in, JSON bytes out, no Request or Response
object on the way) and maps errors through the app's own exception handlers, so the answers are identical.
"""

from __future__ import annotations

import random
import re
import time

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from encoder_serve.service.admission import Admission
from encoder_serve.service.http import Answer, error_response, read_body
from encoder_serve.service.logs import AccessLog, request_id, trace_id
from encoder_serve.service.metrics import ServiceMetrics
from encoder_serve.service.routes import Route, match
from encoder_serve.service.tracing import Tracing

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # anything else could forge log lines: replace it


def incoming_request_id(scope: Scope) -> str:
    """The caller's X-Request-ID, or 128 random bits in hex (uuid4's shape). Not uuid4 itself: it reads
    os.urandom, which lets go of the GIL, and getting it back behind the model thread cost more than the
    rest of a refusal. An id needs to be unique, not unpredictable; `random` reseeds in every forked worker."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
            return value.decode()
    return f"{random.getrandbits(128):032x}"


class FastEndpoint:
    """A route's `Answer` as a bare ASGI endpoint: the body read here, the 200 answer's JSON bytes sent as
    two messages, any other answer mapped by the app's own exception handlers."""

    JSON_TYPE = (b"content-type", b"application/json")

    def __init__(self, app: FastAPI, answer: Answer):
        self.answer = answer
        self.service = app.state.service
        self.handlers = app.exception_handlers  # filled by install_error_handlers; read at request time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            content = await self.answer(self.service, Headers(scope=scope), await read_body(receive))
        except Exception as exc:  # noqa: BLE001 (mapped exactly as ExceptionMiddleware would)
            request = Request(scope, receive)
            handler = next(self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers)
            response = await handler(request, exc)
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [self.JSON_TYPE, (b"content-length", b"%d" % len(content))]})
        await send({"type": "http.response.body", "body": content})


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, admission: Admission,
                 fast_endpoints: dict[Route, ASGIApp] | None = None, tracing: Tracing | None = None):
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.fast_endpoints = fast_endpoints or {}
        self.tracing = tracing
        self.access_log = AccessLog(dropped=metrics.log_lines_dropped.inc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route, label = match(scope["method"], scope["path"])
        rid = incoming_request_id(scope)
        token = request_id.set(rid)
        headers = [(b"x-request-id", rid.encode())]
        span = ids = None
        if self.tracing is not None:
            span = self.tracing.start_request(scope["method"], label, scope["path"], scope["headers"])
            ids = self.tracing.ids(span) if span is not None else None
            if ids is not None:  # W3C Trace Context's response header: which trace this answer belongs to
                headers.append((b"traceresponse", f"00-{ids[0]}-{ids[1]}-01".encode()))
        trace_token = trace_id.set(ids[0] if ids else None)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self.admission.enter(route, scope["headers"])
            promised = self.admission.promised_s
            if refusal is not None:
                response = error_response(refusal.status, refusal.message, headers=refusal.headers,
                                          type_=refusal.reason if refusal.status == 429 else None)
                await response(scope, receive, send_with_id)
            else:
                try:
                    endpoint = self.fast_endpoints.get(route, self.app)
                    if span is None:
                        await endpoint(scope, self.limited(receive), send_with_id)
                    else:
                        with self.tracing.use(span):
                            await endpoint(scope, self.limited(receive), send_with_id)
                finally:
                    self.admission.leave(route, promised,
                                         time.perf_counter() - started if status == 200 else None)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            self.metrics.observe_request(label, scope["method"], status, seconds, {"trace_id": ids[0]} if ids else None)
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(self.tracing.trace.StatusCode.ERROR)
                span.end()
            if self.access_log.enabled():
                self.access_log.write({"method": scope["method"], "path": scope["path"], "route": label,
                                       "status": status, "duration_ms": round(seconds * 1000, 3)})
            trace_id.reset(trace_token)
            request_id.reset(token)

    def limited(self, receive: Receive) -> Receive:
        """`receive` that stops a streamed (chunked) body at MAX_BODY_BYTES."""
        received = 0
        limit = self.admission.max_body_bytes

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = self.admission.too_large()
                    raise HTTPException(refusal.status, refusal.message, headers=refusal.headers)
            return message

        return receive_limited
