"""Ray Serve 2: one deployment (PEER_WORKERS replicas, default 1) behind Serve's HTTP proxy, batching with
`@serve.batch` in each replica.

The documented pattern for dynamic request batching: the replica's `__call__` takes the HTTP request and
awaits an `async` method decorated with `@serve.batch`, which receives the texts of concurrent requests as
one list (at most `max_batch_size`, waiting at most `batch_wait_timeout_s`: Ray's default, 10 ms).
`max_ongoing_requests` is raised to the batch size, as Ray's own warning asks, or batches could never
grow past its default of 5. A GET on the route answers 200 once the replica is up (readiness).

Run as a script (not `serve run`, which has no port option): it starts a local Ray instance with the CPUs
given, Serve's proxy on HOST:PORT, deploys the app and waits for SIGTERM. The replica's and the proxy's
logs stay in Ray's log files (under RAY_TMPDIR), as on a cluster started with `ray start`, instead of
being forwarded line by line to this script.

    PEER_PACKAGE=... PEER_PRECISION=int8 PEER_WORKERS=1 PEER_THREADS=2 PORT=8000 python ray_app.py
"""

from __future__ import annotations

import os
import signal
import threading

from ray import serve
from starlette.requests import Request

MAX_BATCH_SIZE = 64
BATCH_WAIT_TIMEOUT_S = 0.01  # serve.batch's default
REPLICAS = int(os.environ.get("PEER_WORKERS", "1"))
THREADS = int(os.environ.get("PEER_THREADS", "1"))  # each replica's ONNX Runtime threads, and its CPUs for Ray


@serve.deployment(num_replicas=REPLICAS, max_ongoing_requests=MAX_BATCH_SIZE, ray_actor_options={"num_cpus": THREADS})
class EmotionClassifier:
    def __init__(self) -> None:
        from peer_model import Classifier

        self.model = Classifier()

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def classify(self, texts: list[str]) -> list[dict[str, float]]:
        return self.model(texts)

    async def __call__(self, request: Request):
        if request.method == "GET":
            return {"status": "ready"}
        return await self.classify((await request.json())["text"])


app = EmotionClassifier.bind()


def main() -> None:
    import ray

    ray.init(num_cpus=REPLICAS * THREADS, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": os.environ.get("HOST", "127.0.0.1"), "port": int(os.environ["PORT"])})
    serve.run(app, name="emotion", route_prefix="/classify")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
