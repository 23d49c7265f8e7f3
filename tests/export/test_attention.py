"""The attention graph: exported with every package, verified against PyTorch, and what /v1/explain serves
is what the PyTorch model computes (<= 1e-4)."""

from __future__ import annotations

import httpx
import numpy as np
import onnx
import torch

from encoder_serve.model.checkpoint import load_checkpoint
from encoder_serve.package import ATTENTION_OUTPUTS, load_package
from encoder_serve.service.testing import LiveServer

TEXTS = ["i feel wonderful today", "a", "this is so unfair and i am furious about it " * 3]


def test_every_package_carries_a_verified_attention_graph(tiny_package):
    package = load_package(tiny_package)
    entry = package.manifest["attention"]
    assert package.attention_path.is_file() and entry["outputs"] == list(ATTENTION_OUTPUTS)
    assert [o.name for o in onnx.load(package.attention_path).graph.output] == list(ATTENTION_OUTPUTS)
    checks = entry["verification"]
    assert checks["max_abs_attention_diff_vs_pytorch"] <= 1e-4 and checks["max_abs_logit_diff_vs_pytorch"] <= 1e-4
    assert entry["size_bytes"] == package.attention_path.stat().st_size


@torch.no_grad()
def test_explain_serves_the_attention_the_pytorch_model_computes(tiny_package, tiny_checkpoint):
    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    with LiveServer(tiny_package) as server:
        for text in TEXTS:
            answer = httpx.post(server.url + "/v1/explain", json={"inputs": text}, timeout=60).json()
            encoding = tokenizer.encode(text)
            ids = torch.tensor([encoding.ids])
            expected = torch.stack(model.attention_maps(ids, torch.ones_like(ids)))[:, 0].numpy()
            assert answer["tokens"] == encoding.tokens
            assert np.abs(np.array(answer["attention"]["weights"]) - expected).max() <= 1e-4, text
            probabilities = torch.softmax(model(ids, torch.ones_like(ids))[0], -1).numpy()
            served = {p["label"]: p["score"] for p in answer["predictions"]}
            assert max(abs(served[label] - p) for label, p in zip(model.config.labels, probabilities)) <= 1e-4
