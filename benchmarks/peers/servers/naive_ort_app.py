"""The naive baseline of the peer comparison: FastAPI + uvicorn, one ONNX Runtime call per request.

A synchronous route (FastAPI runs it in its thread pool) classifies the request's one text with the same
model code every peer serves (peer_model.Classifier): no batching, one uvicorn worker, access log off.

    PEER_PACKAGE=models/emotion PEER_PRECISION=int8 PEER_THREADS=2 PORT=8001 python naive_ort_app.py
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from peer_model import Classifier
from pydantic import BaseModel

model = Classifier()
app = FastAPI(title="naive FastAPI + ONNX Runtime")


class ClassifyRequest(BaseModel):
    inputs: str


@app.post("/v1/classify")
def classify(request: ClassifyRequest) -> dict[str, float]:
    return model([request.inputs])[0]


@app.get("/readyz")
def ready() -> dict:
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8001")),
                log_level="warning", access_log=False)
