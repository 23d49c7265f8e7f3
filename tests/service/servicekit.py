"""Helpers for the service tests: an independent reference model and Prometheus text parsing."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from encoder_serve.package import load_package
from encoder_serve.tokenization import encode, load_tokenizer


class Reference:
    """Each text alone through ONNX Runtime directly: what the service must answer, whatever the batch."""

    def __init__(self, package_dir: Path):
        package = load_package(package_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(package.model_path("fp32")), options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
        self.labels = package.labels
        self.ref = package.ref

    def probabilities(self, text: str) -> np.ndarray:
        ids, mask = encode(self.tokenizer, [text])
        (logits,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        e = np.exp(logits[0].astype(np.float64) - logits[0].max())
        return e / e.sum()

    def scores(self, text: str) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities(text).tolist()))


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text
