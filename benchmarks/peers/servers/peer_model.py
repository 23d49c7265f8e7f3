"""The model code every peer serves: the same math as encoder-serve's backend, in one place.

Tokenize with the package's tokenizer.json (truncation to max_length), pad to the longest text of the
batch, one ONNX Runtime call, softmax, one {label: score} dict per text, labels from the manifest. The
helpers are encoder-serve's own (`encoder_serve.tokenization`, `encoder_serve.onnx_runtime`), installed
into every peer's virtual environment without dependencies, so no peer runs a copy that could drift.

Configured by the environment the benchmark sets for every peer:
    PEER_PACKAGE    model package directory
    PEER_PRECISION  fp32 or int8: the file encoder-serve serves with PRECISION=auto
    PEER_THREADS    ONNX Runtime intra-op threads (in each of PEER_WORKERS model processes, which the
                    stack's own setting starts: BentoML workers, MLServer parallel workers, Ray replicas)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from encoder_serve import onnx_runtime
from encoder_serve.package import load_package
from encoder_serve.tokenization import encode, load_tokenizer


class Classifier:
    def __init__(self, package_dir: str | None = None, precision: str | None = None, threads: int | None = None):
        package = load_package(package_dir or os.environ["PEER_PACKAGE"])
        self.precision = precision or os.environ.get("PEER_PRECISION", "fp32")
        self.threads = threads or int(os.environ.get("PEER_THREADS", "1"))
        self.labels = package.labels
        self.tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
        # the session options encoder-serve uses: idle threads do not spin on cores HTTP needs
        self.session = onnx_runtime.session(package.model_path(self.precision), self.threads, spinning=False)

    def probabilities(self, texts: Sequence[str]):
        """(len(texts), num_labels) float32, columns in manifest label order."""
        return onnx_runtime.softmax(onnx_runtime.run(self.session, *encode(self.tokenizer, texts)))

    def __call__(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [dict(zip(self.labels, map(float, row), strict=True)) for row in self.probabilities(texts)]
