"""From exceptions to answers: every error a request can meet, mapped once to the shape `http` defines.

Messages say what was wrong with the request; stack traces and internal paths never leave the process.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from encoder_serve.service.batching import Overloaded, ShuttingDown
from encoder_serve.service.http import ApiError, detail, error_response, invalid
from encoder_serve.service.pipeline import InputTooLong, NoAttentionGraph, RequestTimeout

log = logging.getLogger("encoder_serve.errors")


def answer(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.details, exc.headers, exc.type)


def install_error_handlers(app: FastAPI) -> None:
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        return answer(invalid([detail(e) for e in exc.errors()]))

    async def http(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    async def api(request: Request, exc: ApiError) -> Response:
        return answer(exc)

    async def too_long(request: Request, exc: InputTooLong) -> Response:
        return answer(invalid([{"field": exc.field, "message": str(exc)}]))

    async def overloaded(request: Request, exc: Overloaded) -> Response:
        return error_response(429, f"{exc}; retry in {exc.retry_after_s} s", type_=exc.reason,
                              headers={"Retry-After": str(exc.retry_after_s)})

    async def timeout(request: Request, exc: RequestTimeout) -> Response:
        return error_response(504, str(exc))

    async def draining(request: Request, exc: ShuttingDown) -> Response:
        return error_response(503, str(exc), headers={"Connection": "close"})

    async def no_attention(request: Request, exc: NoAttentionGraph) -> Response:
        package = request.app.state.service.package
        return error_response(501, f"the model package {package.ref} has no attention graph, so it cannot "
                                   "explain: rebuild it with `encoder-serve export CHECKPOINT PACKAGE` (the attention "
                                   "graph is built unless --no-attention is given)", type_="not_available")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the request id in the logs has the details")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(InputTooLong, too_long)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(RequestTimeout, timeout)
    app.add_exception_handler(ShuttingDown, draining)
    app.add_exception_handler(NoAttentionGraph, no_attention)
    app.add_exception_handler(Exception, unexpected)
