"""BentoML 1.4: one service (PEER_WORKERS workers, default 1), adaptive batching on the classify API.

The documented shape: a `@bentoml.service` class that loads the model in `__init__`, and an API declared
`batchable=True`, which turns on BentoML's adaptive batching dispatcher. The client sends a list of texts
(`{"texts": ["..."]}`, one text per request in the benchmark); the dispatcher merges the lists of
concurrent requests into one call of at most `max_batch_size` texts, waiting at most `max_latency_ms`.

    PEER_PACKAGE=... PEER_PRECISION=int8 PEER_WORKERS=1 PEER_THREADS=2 \
        bentoml serve bentoml_service:EmotionClassifier --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import os

import bentoml
from peer_model import Classifier

MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 60000  # bentoml.api's default
WORKERS = int(os.environ.get("PEER_WORKERS", "1"))  # bentoml.service's default is 1


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class EmotionClassifier:
    def __init__(self) -> None:
        self.model = Classifier()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, texts: list[str]) -> list[dict[str, float]]:
        return self.model(texts)
