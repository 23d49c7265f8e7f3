"""The service tests' independent reference: each text alone through ONNX Runtime directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoder_serve import onnx_runtime
from encoder_serve.package import load_package
from encoder_serve.tokenization import encode, load_tokenizer


class Reference:
    """Each text alone through ONNX Runtime directly: what the service must answer, whatever the batch."""

    def __init__(self, package_dir: Path):
        package = load_package(package_dir)
        self.session = onnx_runtime.session(package.model_path("fp32"), threads=1)
        self.tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
        self.labels = package.labels
        self.ref = package.ref

    def probabilities(self, text: str) -> np.ndarray:
        return onnx_runtime.softmax(onnx_runtime.run(self.session, *encode(self.tokenizer, [text])))[0]

    def scores(self, text: str) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities(text).tolist()))
