"""The naive baseline: a classifier served the way most tutorials do it.

FastAPI with a synchronous route that tokenizes the request and runs the PyTorch model once per request,
no batching, no ONNX. It is the same model (the package's training checkpoint, loaded from safetensors)
behind the same request schema, so the only difference from encoder-serve is how it is served.
The baseline is not sandbagged: uvicorn's access log is off (ours is too) and torch uses one thread per
server core.

    CHECKPOINT_DIR=... PORT=8001 TORCH_THREADS=1 python -m benchmarks.naive_app
"""

from __future__ import annotations

import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from encoder_serve.model.checkpoint import load_checkpoint
from encoder_serve.tokenization import encode

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
model, tokenizer, _ = load_checkpoint(os.environ["CHECKPOINT_DIR"])
labels = model.config.labels
app = FastAPI(title="naive baseline")


class ClassifyRequest(BaseModel):
    inputs: str | list[str]


@app.post("/v1/classify")
def classify(request: ClassifyRequest) -> dict:
    texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    ids, mask = encode(tokenizer, texts)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(ids), torch.from_numpy(mask)), dim=-1)
    return {"predictions": [[{"label": label, "score": score} for label, score in zip(labels, row)]
                            for row in probs.tolist()]}


@app.get("/readyz")
def ready() -> dict:
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8001")),
                log_level="warning", access_log=False)
