"""The Open Inference Protocol (KServe v2) over REST, so Triton and KServe clients work unchanged.

The model takes one BYTES input (`text`, shape [N] or [N, 1], UTF-8) and returns `probabilities` (FP32,
[N, num_labels], columns in the manifest's label order) and `label` (BYTES, [N], the most likely label).
Both JSON tensors and the binary tensor data extension are understood, in requests and in responses
(tritonclient uses binary by default): the JSON header is followed by raw tensor bytes, its length given by
the `Inference-Header-Content-Length` header, BYTES elements as a 4-byte little-endian length plus bytes.
"""

from __future__ import annotations

import struct
from importlib import metadata
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from encoder_serve.service import routes
from encoder_serve.service.http import (
    ERRORS,
    JSON,
    TIMEOUT_PARAMETER,
    ApiError,
    authorize,
    detail,
    field_name,
    invalid,
    request_timeout,
    service_of,
)
from encoder_serve.service.pipeline import InputTooLong
from encoder_serve.service.schemas import ErrorResponse
from encoder_serve.service.state import Service

HEADER_LENGTH = "inference-header-content-length"
INPUT = "text"
OUTPUTS = ("probabilities", "label")


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


def deserialize_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ValueError("truncated element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ValueError("element longer than the data")
        items.append(raw[offset: offset + length])
        offset += length
    return items


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _flatten(data: list[Any]) -> list[Any]:
    return [x for item in data for x in (_flatten(item) if isinstance(item, list) else [item])]


def _invalid(field: str, message: str) -> ApiError:
    return invalid([{"field": field, "message": message}])


async def parse_infer_request(request: Request) -> tuple[InferRequest, list[str]]:
    body = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)
    try:
        split = int(header_length) if header_length is not None else len(body)
        if not 0 <= split <= len(body):
            raise ValueError
    except ValueError:
        raise _invalid(HEADER_LENGTH, f"must be an integer between 0 and the body length ({len(body)})") from None
    try:
        infer = InferRequest.model_validate_json(body[:split])
    except ValidationError as e:
        raise invalid([detail(err) for err in e.errors()]) from None
    tensor = infer.inputs[0]
    if tensor.name != INPUT or tensor.datatype != "BYTES":
        raise _invalid("inputs[0]", f"expected the BYTES input {INPUT!r}, got {tensor.datatype} {tensor.name!r}")
    if "binary_data_size" in tensor.parameters:
        try:
            items = deserialize_bytes(body[split: split + int(tensor.parameters["binary_data_size"])])
            texts = [b.decode("utf-8") for b in items]
        except (ValueError, UnicodeDecodeError) as e:
            raise _invalid("inputs[0]", f"bad binary BYTES data: {e}") from None
    elif tensor.data is not None:
        texts = _flatten(tensor.data)
    else:
        raise _invalid("inputs[0].data", "missing (and no binary_data_size)")
    if int(np.prod(tensor.shape)) != len(texts) or len(tensor.shape) not in (1, 2) or (
            len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise _invalid("inputs[0].shape", f"must be [N] or [N, 1] with N = {len(texts)} elements")
    return infer, texts


def build_outputs(infer: InferRequest, probabilities: np.ndarray, labels: list[str]) -> tuple[list[dict], bytes]:
    """The JSON output tensors and the concatenated binary data of those sent as binary."""
    wanted = infer.outputs or [RequestedOutput(name=n) for n in OUTPUTS]
    default_binary = bool(infer.parameters.get("binary_data_output", False))
    outputs, blobs = [], []
    for i, requested in enumerate(wanted):
        if requested.name == "probabilities":
            tensor = {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape)}
            raw = probabilities.astype("<f4").tobytes()
            values = probabilities.ravel()
        elif requested.name == "label":
            top = [labels[j] for j in probabilities.argmax(axis=1)]
            tensor = {"name": "label", "datatype": "BYTES", "shape": [len(top)]}
            raw = serialize_bytes([t.encode() for t in top])
            values = top
        else:
            raise _invalid(f"outputs[{i}].name", f"unknown output {requested.name!r} (has {list(OUTPUTS)})")
        if requested.parameters.get("binary_data", default_binary):
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = values
        outputs.append(tensor)
    return outputs, b"".join(blobs)


def _texts_field(loc: tuple) -> str:
    """Name a /v1-style validation error the v2 way: ("inputs", 3) -> "inputs[0].data[3]"."""
    if loc and loc[0] == "inputs":
        return "inputs[0].data" + "".join(f"[{p}]" for p in loc[1:])
    return "parameters." + field_name(("body", *loc))


def _model(service: Service, name: str, version: str | None = None) -> None:
    package = service.package
    if name != package.name or version not in (None, "", package.version):
        raise ApiError(404, f"model {name!r}{f' version {version!r}' if version else ''} not found "
                            f"(serving {package.ref})")


def build_kserve_router(request_model: type[BaseModel]) -> APIRouter:
    router = APIRouter(tags=["kserve-v2"])
    unavailable = {503: {"model": ErrorResponse}}
    missing = {404: {"model": ErrorResponse}, **unavailable}  # unknown model or version; not ready
    guarded = {**missing, 401: ERRORS[401]}

    @router.get(routes.V2_SERVER.path, summary="Server metadata")
    async def server_metadata() -> Response:
        try:
            version = metadata.version("encoder-serve")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return JSON({"name": "encoder-serve", "version": version, "extensions": ["binary_tensor_data"]})

    @router.get(routes.V2_LIVE.path, summary="Server liveness (also on OPS_PORT)", responses=unavailable)
    async def live(request: Request) -> Response:
        alive = service_of(request).health.live()[0]
        return JSON({"live": alive}, status_code=200 if alive else 503)

    @router.get(routes.V2_READY.path, summary="Server readiness (also on OPS_PORT)", responses=unavailable)
    async def ready(request: Request) -> Response:
        service = service_of(request)
        return JSON({"ready": service.ready}, status_code=200 if service.ready else 503)

    @router.get(routes.V2_MODEL_READY.path, summary="Model readiness", responses=missing)
    @router.get(routes.V2_MODEL_VERSION_READY.path, summary="Model version readiness", responses=missing)
    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        service = service_of(request)
        _model(service, name, version)
        return JSON({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @router.get(routes.V2_MODEL.path, summary="Model metadata", responses=guarded)
    @router.get(routes.V2_MODEL_VERSION.path, summary="Model version metadata", responses=guarded)
    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        service = service_of(request)
        authorize(service.settings.api_key, request.headers)
        _model(service, name, version)
        package = service.package
        return JSON({"name": package.name, "versions": [package.version], "platform": "onnxruntime_onnx",
                     "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
                     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(package.labels)]},
                                 {"name": "label", "datatype": "BYTES", "shape": [-1]}],
                     "parameters": {"labels": package.labels, "max_length": package.max_length}})

    timeout = {"parameters": [TIMEOUT_PARAMETER]}

    @router.post(routes.V2_INFER.path, responses={**ERRORS, **missing}, summary="Inference",
                 openapi_extra=timeout)
    @router.post(routes.V2_INFER_VERSION.path, responses={**ERRORS, **missing},
                 summary="Inference on a model version", openapi_extra=timeout)
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        service = service_of(request)
        authorize(service.settings.api_key, request.headers)
        timeout_s = request_timeout(service.settings.request_timeout_s, request.headers)
        _model(service, name, version)
        infer, texts = await parse_infer_request(request)
        truncate = infer.parameters.get("truncate", True)
        try:  # the same limits and messages as /v1/classify
            request_model.model_validate({"inputs": texts, "truncate": truncate})
        except ValidationError as e:
            raise invalid([detail(err, name=_texts_field) for err in e.errors()]) from None
        try:
            probabilities = np.stack(await service.pipeline.classify(
                texts, truncate=truncate is not False, timeout_s=timeout_s))
        except InputTooLong as e:
            raise invalid([{"field": f"inputs[0].data[{e.index}]", "message": str(e)}]) from None
        outputs, binary = build_outputs(infer, probabilities, service.package.labels)
        reply = {"model_name": service.package.name, "model_version": service.package.version, "outputs": outputs}
        if infer.id is not None:
            reply["id"] = infer.id
        if not binary:
            return JSON(reply)
        header = orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(header + binary, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(header))})

    return router
