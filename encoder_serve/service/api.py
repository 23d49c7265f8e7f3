"""The /v1 API, health, readiness and metrics routes. Handlers are a few lines: the work is in
`inference.Classifier`, validation in `schemas`, error mapping in `errors`.

The hot routes take only the `Request`: auth, the deadline header and the body are plain calls in the
handler (no `Depends`, no FastAPI body parameter), while `openapi_extra` keeps the documented contract.
"""

import hmac
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from encoder_serve.service.errors import JSON, ApiError, error_response
from encoder_serve.service.metrics import render
from encoder_serve.service.schemas import ClassifyResponse, ErrorResponse, ModelsResponse
from encoder_serve.service.state import Service

ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503, 504)}
TIMEOUT_HEADER = "x-request-timeout-ms"
TIMEOUT_DOC = "Shorter deadline for this request, in ms (REQUEST_TIMEOUT_S caps it)."
TIMEOUT_PARAMETER = {"name": TIMEOUT_HEADER, "in": "header", "required": False, "description": TIMEOUT_DOC,
                     "schema": {"type": "integer", "exclusiveMinimum": 0, "title": "X-Request-Timeout-Ms"}}
timeout_ms = TypeAdapter(Annotated[int, Field(gt=0)])


def service_of(request: Request) -> Service:
    return request.app.state.service


def authorize(service: Service, request: Request) -> None:
    """`Authorization: Bearer <API_KEY>` when API_KEY is set (compared in constant time).

    A plain call inside each handler, not a dependency: FastAPI resolves a `Depends` chain per request,
    and runs a plain `def` one in its thread pool, which cost more than the model on the hot path."""
    key = service.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             key.get_secret_value().encode()):
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                       headers={"WWW-Authenticate": "Bearer"})


def request_timeout(service: Service, request: Request) -> float:
    """Seconds this request may take: REQUEST_TIMEOUT_S, or less if X-Request-Timeout-Ms asks."""
    limit = service.settings.request_timeout_s
    header = request.headers.get(TIMEOUT_HEADER)
    if header is None:
        return limit
    try:
        return min(limit, timeout_ms.validate_python(header) / 1000)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("header", TIMEOUT_HEADER)} for err in e.errors()]) from None


def is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/")
                                                 and media_type.endswith("+json"))


async def read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The JSON body validated in one pass (pydantic's Rust JSON parser, no dict in between), with the
    errors FastAPI's body parameters would give; parsed here because FastAPI's generic body handling
    (stdlib json, then dependency resolution) cost more per request than the model."""
    body = await request.body()
    if not is_json(request):
        raise RequestValidationError([{"type": "dict_type", "loc": ("body",), "msg": "not JSON"}])
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


async def client_gone(receive: Receive) -> None:
    """Completes when the client disconnects (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def rank(probabilities: Sequence[np.ndarray], labels: list[str], top_k: int | None) -> list[list[dict]]:
    """Each text's labels sorted by score, highest first (ties keep label order), cut to top_k.

    Plain Python on purpose: for a handful of labels per text, numpy's per-call overhead (stack, argsort)
    cost more than the sort itself."""
    ranked = []
    for row in probabilities:
        scores = row.tolist()
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:top_k]  # stable
        ranked.append([{"label": labels[j], "score": scores[j]} for j in order])
    return ranked


async def classify_response(service: Service, request: Request, request_model: type[BaseModel]) -> Response:
    """POST /v1/classify: auth, deadline, body, the batched model, ranked labels."""
    authorize(service, request)
    timeout_s = request_timeout(service, request)
    body = await read_body(request, request_model)
    probabilities = await service.classifier.classify(
        body.inputs, truncate=body.truncate, timeout_s=timeout_s, client_gone=client_gone(request.receive))
    return JSON({"model": service.package.ref,
                 "predictions": rank(probabilities, service.package.labels, body.top_k)})


class ClassifyEndpoint:
    """POST /v1/classify as a bare ASGI endpoint, which `RequestContext` calls directly.

    Routing a request through FastAPI (router, exception and exit-stack middleware, the endpoint wrapper,
    dependency resolution, response serialization) cost about as much CPU as the request's own work; on
    the one route that carries the load, none of it does anything. Same handler code as the documented
    FastAPI route, and errors map through the app's own exception handlers, so the answers are identical.
    """

    def __init__(self, app: FastAPI, router: APIRouter, request_model: type[BaseModel]):
        self.service: Service = app.state.service
        self.request_model = request_model
        self.handlers = app.exception_handlers  # filled by install_error_handlers; read at request time
        self.route = next(r for r in router.routes if getattr(r, "path", None) == "/v1/classify")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route  # the metrics' route label, as routing would have set it
        request = Request(scope, receive)
        try:
            response = await classify_response(self.service, request, self.request_model)
        except Exception as exc:  # noqa: BLE001 (mapped exactly as ExceptionMiddleware would)
            handler = next(self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers)
            response = await handler(request, exc)
        await response(scope, receive, send)


def build_router(request_model: type[BaseModel]) -> APIRouter:
    router = APIRouter()
    request_schema = {"$ref": f"#/components/schemas/{request_model.__name__}"}  # app.document_model adds it

    @router.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["inference"],
                 summary="Classify one text or a batch of texts", openapi_extra={
                     "parameters": [TIMEOUT_PARAMETER], "requestBody": {"required": True, "content": {
                         "application/json": {"schema": request_schema}}}})
    async def classify(request: Request) -> Response:
        # normally answered by ClassifyEndpoint before FastAPI routes it; same code, same answers
        return await classify_response(service_of(request), request, request_model)

    @router.get("/v1/models", response_model=ModelsResponse, responses={401: ERRORS[401]}, tags=["inference"],
                summary="The served model, as its manifest describes it")
    async def models(request: Request) -> Response:
        service = service_of(request)
        authorize(service, request)
        package, runtime = service.package, service.classifier.runtime
        return JSON({"models": [{"name": package.name, "version": package.version, "ref": package.ref,
                                 "precision": runtime.precision, "labels": package.labels,
                                 "max_length": package.max_length,
                                 "precisions": package.manifest["precisions"],
                                 "metrics": package.manifest.get("metrics", {})}]})

    @router.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return JSON({"status": "ok"})

    @router.get("/readyz", tags=["operations"], responses={503: {"model": ErrorResponse}},
                summary="Readiness: model loaded and warmed up, not shutting down")
    async def readyz(request: Request) -> Response:
        service = service_of(request)
        if service.ready:
            return JSON({"status": "ready", "model": service.package.ref})
        return error_response(503, "shutting down" if service.draining else "model not loaded yet")

    @router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse,
                responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        body, content_type = render(service_of(request).registry)
        return Response(body, media_type=content_type)

    return router
