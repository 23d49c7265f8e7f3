"""One error shape for every 4xx and 5xx answer, and the mapping from exceptions to it.

    {"error": {"type": "validation_error", "message": "...", "details": [{"field": "inputs[3]", "message": "..."}]}}

Messages say what was wrong with the request; stack traces and internal paths never leave the process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from encoder_serve.service.batching import QueueFull, ShuttingDown
from encoder_serve.service.inference import ClientGone, InputTooLong, RequestTimeout

log = logging.getLogger("encoder_serve.errors")

STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
                429: "queue_full", 499: "client_closed_request", 500: "internal_error",
                503: "unavailable", 504: "timeout"}
CLIENT_CLOSED = 499  # nginx's code: nobody reads it, but logs and metrics say what happened


class JSON(Response):
    """orjson-encoded JSON (numpy arrays included)."""
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: Sequence[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.details, self.headers = status, message, details, headers


def error_body(status: int, message: str, details: Sequence[dict] | None = None) -> dict:
    error: dict[str, Any] = {"type": STATUS_TYPES.get(status, "error"), "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(status: int, message: str, details: Sequence[dict] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return JSON(error_body(status, message, details), status_code=status, headers=headers)


def field_name(loc: Sequence[str | int]) -> str:
    """("body", "inputs", 3) -> "inputs[3]"; ("header", "x-request-timeout-ms") -> "x-request-timeout-ms"."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "header", "path") else loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _validation_details(errors: Sequence[dict]) -> list[dict]:
    details = []
    for e in errors:
        if e["type"] == "json_invalid":
            details.append({"field": "body", "message": f"invalid JSON: {e.get('ctx', {}).get('error', e['msg'])}"})
        elif tuple(e["loc"]) == ("body",) and e["type"] in ("model_attributes_type", "model_type", "dict_type"):
            details.append({"field": "body", "message": "expected a JSON object (send Content-Type: application/json)"})
        else:
            details.append({"field": field_name(e["loc"]), "message": e["msg"]})
    return details


def install_error_handlers(app: FastAPI) -> None:
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc.errors())
        return error_response(422, "; ".join(f"{d['field']}: {d['message']}" for d in details), details)

    async def http(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    async def api(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.details, exc.headers)

    async def too_long(request: Request, exc: InputTooLong) -> Response:
        field = f"inputs[{exc.index}]"
        return error_response(422, f"{field}: {exc}", [{"field": field, "message": str(exc)}])

    async def queue_full(request: Request, exc: QueueFull) -> Response:
        return error_response(429, f"{exc}; retry in {exc.retry_after_s} s",
                              headers={"Retry-After": str(exc.retry_after_s)})

    async def timeout(request: Request, exc: RequestTimeout) -> Response:
        return error_response(504, "the request's deadline passed before it was classified")

    async def draining(request: Request, exc: ShuttingDown) -> Response:
        return error_response(503, str(exc), headers={"Connection": "close"})

    async def gone(request: Request, exc: ClientGone) -> Response:
        return error_response(CLIENT_CLOSED, "the client disconnected")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the request id in the logs has the details")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(InputTooLong, too_long)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(RequestTimeout, timeout)
    app.add_exception_handler(ShuttingDown, draining)
    app.add_exception_handler(ClientGone, gone)
    app.add_exception_handler(Exception, unexpected)
