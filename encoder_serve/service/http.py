"""What every route shares: the JSON response, the error shape, auth, deadlines and body reading. Routes import from here (and from `errors`), never from each other.

Every 4xx and 5xx answer has one shape:

    {"error": {"type": "validation_error", "message": "...", "details": [{"field": "inputs[3]", "message": "..."}]}}

The hot routes call these helpers directly with the request's headers and body (no `Depends` chain, no
FastAPI body parameter): FastAPI resolves a dependency chain per request, runs a plain-`def` dependency in
its thread pool, and parses a body parameter with the standard library, which together cost more than the
model on the hot path. `openapi_extra` keeps the documented contract.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive

from encoder_serve.service.schemas import ErrorResponse
from encoder_serve.service.state import Service

STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
                429: "queue_full", 500: "internal_error", 501: "not_available",
                503: "unavailable", 504: "timeout"}
TIMEOUT_HEADER = "x-request-timeout-ms"
TIMEOUT_PARAMETER = {"name": TIMEOUT_HEADER, "in": "header", "required": False,
                     "description": "Shorter deadline for this request, in ms (REQUEST_TIMEOUT_S caps it).",
                     "schema": {"type": "integer", "exclusiveMinimum": 0, "title": "X-Request-Timeout-Ms"}}
_timeout_ms = TypeAdapter(Annotated[int, Field(gt=0)])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503, 504)}  # for OpenAPI


# What a fast route computes (middleware.FastEndpoint calls it without FastAPI's routing): the service, the
# request's headers and its whole body in, the 200 answer's JSON bytes out; any other answer is raised.
Answer = Callable[[Service, Headers, bytes], Awaitable[bytes]]


def service_of(request: Request) -> Service:
    return request.app.state.service


class JSON(Response):
    """orjson-encoded JSON, numpy arrays included. (FastAPI's ORJSONResponse does the same but is deprecated
    in favour of response-model serialization, which the hot routes skip on purpose.)"""
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    """An answer other than 200, raised anywhere in a handler; `errors` turns it into the error shape."""

    def __init__(self, status: int, message: str, details: Sequence[dict] | None = None,
                 headers: dict[str, str] | None = None, type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.details, self.headers, self.type = status, message, details, headers, type_


def error_body(status: int, message: str, details: Sequence[dict] | None = None, type_: str | None = None) -> dict:
    error: dict[str, Any] = {"type": type_ or STATUS_TYPES.get(status, "error"), "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(status: int, message: str, details: Sequence[dict] | None = None,
                   headers: dict[str, str] | None = None, type_: str | None = None) -> Response:
    return JSON(error_body(status, message, details, type_), status_code=status, headers=headers)


def field_name(loc: Sequence[str | int]) -> str:
    """("body", "inputs", 3) -> "inputs[3]"; ("header", "x-request-timeout-ms") -> "x-request-timeout-ms"."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "header", "path") else loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def detail(error: dict, name=field_name) -> dict:
    """One pydantic error as {"field", "message"}; `name` maps its location to the field a client sent."""
    if error["type"] == "json_invalid":
        return {"field": "body", "message": f"invalid JSON: {error.get('ctx', {}).get('error', error['msg'])}"}
    if tuple(error["loc"]) in (("body",), ()) and error["type"] in ("model_attributes_type", "model_type",
                                                                     "dict_type"):
        return {"field": "body", "message": "expected a JSON object (send Content-Type: application/json)"}
    return {"field": name(error["loc"]), "message": error["msg"]}


def invalid(details: Sequence[dict]) -> ApiError:
    """422 naming every bad field, its message the details joined."""
    return ApiError(422, "; ".join(f"{d['field']}: {d['message']}" for d in details), details)


def authorize(api_key: SecretStr | None, headers: Headers) -> None:
    """`Authorization: Bearer <API_KEY>` when API_KEY is set (compared in constant time)."""
    if api_key is None:
        return
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             api_key.get_secret_value().encode()):
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                       headers={"WWW-Authenticate": "Bearer"})


def request_timeout(limit_s: float, headers: Headers) -> float:
    """Seconds this request may take: REQUEST_TIMEOUT_S, or less if X-Request-Timeout-Ms asks."""
    header = headers.get(TIMEOUT_HEADER)
    if header is None:
        return limit_s
    try:
        return min(limit_s, _timeout_ms.validate_python(header) / 1000)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("header", TIMEOUT_HEADER)} for err in e.errors()]) from None


def is_json(headers: Headers) -> bool:
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/")
                                                 and media_type.endswith("+json"))


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request's JSON body, validated (`parse_json`)."""
    return parse_json(await request.body(), request.headers, model)


async def read_body(receive: Receive) -> bytes:
    """The whole request body from ASGI `receive` (the middleware's, which enforces MAX_BODY_BYTES)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(body: bytes, headers: Headers, model: type[BaseModel]) -> BaseModel:
    """The JSON body validated in one pass (pydantic's Rust JSON parser, no dict in between), with the
    errors FastAPI's body parameters would give."""
    if not is_json(headers):
        raise RequestValidationError([{"type": "dict_type", "loc": ("body",), "msg": "not JSON"}])
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
