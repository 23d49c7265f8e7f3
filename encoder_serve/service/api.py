"""The /v1 API, health, readiness and metrics routes. Handlers are a few lines: the work is in
`pipeline.InferencePipeline`, validation in `schemas`, what routes share in `http`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response

from encoder_serve.service import routes
from encoder_serve.service.http import (
    ERRORS,
    JSON,
    TIMEOUT_PARAMETER,
    Answer,
    authorize,
    parse_json,
    read_json,
    request_timeout,
    service_of,
)
from encoder_serve.service.probes import liveness_body, readiness_body
from encoder_serve.service.schemas import ClassifyResponse, ErrorResponse, ExplainResponse, ModelsResponse
from encoder_serve.service.state import Service


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


def explanation(explained, ref: str, labels: list[str], body) -> dict:
    """The /v1/explain answer: tokens, ranked labels, every layer's and head's attention, and for the asked
    layer and head the queries, keys and scaled dot products the weights come from."""
    layers, heads = explained.attentions.shape[:2]
    answer = {"model": ref, "tokens": explained.tokens, "truncated": explained.truncated,
              "predictions": rank([explained.probabilities], labels, None)[0],
              "attention": {"layers": layers, "heads": heads, "weights": explained.attentions}}
    if body.query_key:
        q, k = explained.queries[body.layer, body.head], explained.keys[body.layer, body.head]
        answer["query_key"] = {"layer": body.layer, "head": body.head, "queries": q, "keys": k,
                               "scores": q @ k.T / np.sqrt(q.shape[-1])}
    return answer


def classify_answer(request_model: type[BaseModel]) -> Answer:
    async def answer(service: Service, headers: Headers, body: bytes) -> bytes:
        """Auth, deadline, body, the batched model, ranked labels."""
        authorize(service.settings.api_key, headers)
        timeout_s = request_timeout(service.settings.request_timeout_s, headers)
        parsed = parse_json(body, headers, request_model)
        probabilities = await service.pipeline.classify(parsed.inputs, truncate=parsed.truncate, timeout_s=timeout_s)
        return orjson.dumps({"model": service.package.ref,
                             "predictions": rank(probabilities, service.package.labels, parsed.top_k)})

    return answer


def build_router(request_model: type[BaseModel], explain_model: type[BaseModel],
                 classify_answer: Answer) -> APIRouter:
    router = APIRouter()
    request_schema = {"$ref": f"#/components/schemas/{request_model.__name__}"}  # app.document_model adds it
    explain_schema = {"$ref": f"#/components/schemas/{explain_model.__name__}"}

    @router.post(routes.CLASSIFY.path, response_model=ClassifyResponse, responses=ERRORS, tags=["inference"],
                 summary="Classify one text or a batch of texts", openapi_extra={
                     "parameters": [TIMEOUT_PARAMETER], "requestBody": {"required": True, "content": {
                         "application/json": {"schema": request_schema}}}})
    async def classify(request: Request) -> Response:
        """`classify_answer` through FastAPI. The middleware's fast path calls that answer itself before
        FastAPI routes the request: same code, same answers."""
        answer = await classify_answer(service_of(request), request.headers, await request.body())
        return Response(answer, media_type=JSON.media_type)

    @router.post(routes.EXPLAIN.path, response_model=ExplainResponse, tags=["inference"],
                 responses={**ERRORS, 501: {"model": ErrorResponse}},
                 summary="What the model attends to: one text's tokens, labels and attention",
                 description="Every layer's and head's attention weights for one text (the model's own tokens, "
                             "[CLS] and [SEP] included), and optionally, for one layer and head, the query and key "
                             "vectors whose scaled dot products the weights are the softmax of. Runs on a lane of "
                             "its own (MAX_CONCURRENT_EXPLAINS, then 429), never delaying classification. 501 when "
                             "the model package was built without its attention graph.",
                 openapi_extra={"parameters": [TIMEOUT_PARAMETER], "requestBody": {"required": True, "content": {
                     "application/json": {"schema": explain_schema}}}})
    async def explain(request: Request) -> Response:
        service = service_of(request)
        authorize(service.settings.api_key, request.headers)
        timeout_s = request_timeout(service.settings.request_timeout_s, request.headers)
        body = await read_json(request, explain_model)
        explained = await service.pipeline.explain(body.inputs, truncate=body.truncate, timeout_s=timeout_s)
        return JSON(explanation(explained, service.package.ref, service.package.labels, body))

    @router.get(routes.MODELS.path, response_model=ModelsResponse, responses={401: ERRORS[401]},
                tags=["inference"], summary="The served model, as its manifest describes it")
    async def models(request: Request) -> Response:
        service = service_of(request)
        authorize(service.settings.api_key, request.headers)
        package = service.package
        return JSON({"models": [{"name": package.name, "version": package.version, "ref": package.ref,
                                 "precision": service.precision, "labels": package.labels,
                                 "max_length": package.max_length,
                                 "precisions": package.manifest["precisions"],
                                 "metrics": package.manifest.get("metrics", {})}]})

    @router.get(routes.HEALTHZ.path, tags=["operations"], responses={503: {"model": ErrorResponse}},
                summary="Liveness: the process can still serve (also on OPS_PORT, off the event loop)")
    async def healthz(request: Request) -> Response:
        status, body = liveness_body(service_of(request).health)
        return JSON(body, status_code=status)

    @router.get(routes.READYZ.path, tags=["operations"], responses={503: {"model": ErrorResponse}},
                summary="Readiness: model loaded and warmed up, not shutting down (also on OPS_PORT)")
    async def readyz(request: Request) -> Response:
        service = service_of(request)
        status, body = readiness_body(service.health, service.package.ref)
        return JSON(body, status_code=status)

    @router.get(routes.METRICS.path, tags=["operations"], summary="Prometheus metrics (also on OPS_PORT)",
                response_class=PlainTextResponse,
                responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        body, content_type = service_of(request).exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return router
