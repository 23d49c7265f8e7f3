"""The /v1 API, health, readiness and metrics routes. Handlers are a few lines: the work is in
`inference.Classifier`, validation in `schemas`, error mapping in `errors`.

No `from __future__ import annotations` here: the request model is a class built at start-up, and FastAPI
needs the handlers' annotations as real objects.
"""

import hmac
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive

from encoder_serve.service.errors import JSON, ApiError, error_response
from encoder_serve.service.metrics import render
from encoder_serve.service.schemas import ClassifyResponse, ErrorResponse, ModelsResponse
from encoder_serve.service.state import Service, get_service

ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503, 504)}
ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """`Authorization: Bearer <API_KEY>` when API_KEY is set (compared in constant time). Dependencies are
    `async def` so FastAPI calls them on the event loop instead of hopping to its thread pool per request."""
    key = service.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             key.get_secret_value().encode()):
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                       headers={"WWW-Authenticate": "Bearer"})


async def request_timeout(service: ServiceDep, x_request_timeout_ms: Annotated[int | None, Header(
        gt=0, description="Shorter deadline for this request, in ms (REQUEST_TIMEOUT_S caps it).")] = None
                          ) -> float:
    limit = service.settings.request_timeout_s
    return limit if x_request_timeout_ms is None else min(limit, x_request_timeout_ms / 1000)


async def client_gone(receive: Receive) -> None:
    """Completes when the client disconnects (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def rank(probabilities: Sequence[np.ndarray], labels: list[str], top_k: int | None) -> list[list[dict]]:
    """Each text's labels sorted by score, highest first (ties keep label order), cut to top_k."""
    scores = np.stack(probabilities)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k].tolist()
    return [[{"label": labels[j], "score": row[j]} for j in idx] for idx, row in zip(order, scores.tolist())]


def build_router(request_model: type[BaseModel]) -> APIRouter:
    router = APIRouter()
    ClassifyRequest = request_model
    inference = [Depends(require_api_key)]

    @router.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, dependencies=inference,
                 tags=["inference"], summary="Classify one text or a batch of texts")
    async def classify(body: ClassifyRequest, request: Request, service: ServiceDep,  # type: ignore[valid-type]
                       timeout_s: Annotated[float, Depends(request_timeout)]) -> Response:
        probabilities = await service.classifier.classify(
            body.inputs, truncate=body.truncate, timeout_s=timeout_s, client_gone=client_gone(request.receive))
        return JSON({"model": service.package.ref,
                     "predictions": rank(probabilities, service.package.labels, body.top_k)})

    @router.get("/v1/models", response_model=ModelsResponse, dependencies=inference, tags=["inference"],
                summary="The served model, as its manifest describes it")
    async def models(service: ServiceDep) -> Response:
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
    async def readyz(service: ServiceDep) -> Response:
        if service.ready:
            return JSON({"status": "ready", "model": service.package.ref})
        return error_response(503, "shutting down" if service.draining else "model not loaded yet")

    @router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(service: ServiceDep) -> Response:
        body, content_type = render(service.registry)
        return Response(body, media_type=content_type)

    return router
