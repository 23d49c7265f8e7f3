"""The contenders of `make bench-peers`: how each is installed, started, asked and understood.

Every contender serves the same package file with the same model code (servers/peer_model.py, which is
encoder-serve's own tokenization and ONNX Runtime helpers) on the same cores. What differs is the stack:

    encoder-serve   `python -m encoder_serve.service`, its defaults (env: MODEL_DIR, HOST, PORT, OPS_PORT)
    naive           FastAPI + uvicorn, one ONNX Runtime call per request (servers/naive_ort_app.py)
    BentoML         `bentoml serve`, batchable API (servers/bentoml_service.py)
    MLServer        `mlserver start`, custom runtime + adaptive batching (servers/mlserver*)
    Ray Serve       Serve's HTTP proxy + one replica with `@serve.batch` (servers/ray_app.py)

Each peer runs in a virtual environment of its own (benchmarks.peers.venvs) with the versions pinned
here; each answers one text per request in the body its API expects, and `scores` turns its answer back
into {label: score} so the runner can check it against the model before timing anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SERVERS = Path(__file__).resolve().with_name("servers")
MAX_BATCH_SIZE = 64  # every batcher's cap

BENTOML = "bentoml==1.4.40"
MLSERVER = "mlserver==1.7.1"
# mlserver 1.7.1 asks for any uvloop; from 0.22 on, uvloop's get_event_loop() raises where no loop is set,
# and MLServer's inference workers die at start-up ("There is no current event loop in thread 'MainThread'")
MLSERVER_UVLOOP = "uvloop==0.21.0"
RAY = "ray[serve]==2.60.0"


@dataclass(frozen=True)
class Launch:
    """What ServerProcess needs: the command (after taskset), extra environment, readiness path."""
    argv: list[str]
    env: dict[str, str]
    ready_path: str


@dataclass(frozen=True)
class Stack:
    key: str  # directory name under build/peers, file-name safe
    name: str
    kind: str  # service (encoder-serve) | naive | peer (the goals compare service with peers)
    route: str  # POST route of one classification
    body: Callable[[str], dict]  # the request body for one text
    scores: Callable[[object, list[str]], dict[str, float]]  # answer JSON -> {label: score}
    launch: Callable[[Stack, Path, dict[str, int], dict[str, str]], Launch]  # (self, python, ports, model env)
    config: dict  # recorded in the results as is: workers, threads, batching
    requirements: tuple[str, ...] = ()  # empty: runs in the benchmark's own environment
    version_of: str = ""  # distribution whose version names the stack in the results
    ports: tuple[str, ...] = ("http",)  # free ports it needs; "http" is the one wrk loads
    workers: int = 1  # model processes (BentoML workers, MLServer parallel workers, Ray replicas)
    threads: int = 1  # ONNX Runtime intra-op threads in each
    venv: str = ""  # its environment's directory under build/peers (peers in several shapes share one)

    def display_name(self, version: str = "") -> str:
        """'BentoML 1.4.40 (1 x 2 threads)': the stack, its version, and for a peer its shape."""
        name = f"{self.name} {version}".strip()
        return f"{name} ({_shape(self.workers, self.threads)})" if self.kind == "peer" else name

    def selected_by(self, names: list[str]) -> bool:
        """--only: a contender by its key (bentoml-2x1) or a peer in every shape by its stack (bentoml)."""
        return self.key in names or (bool(self.venv) and self.venv in names)


class AnswerError(ValueError):
    """An answer that is not a classification of the text by this package's model."""


def _label_scores(pairs: dict, labels: list[str]) -> dict[str, float]:
    if not isinstance(pairs, dict) or sorted(pairs) != sorted(labels):
        raise AnswerError(f"expected scores for labels {labels}, got {str(pairs)[:200]}")
    return {label: float(pairs[label]) for label in labels}


def encoder_serve_scores(answer, labels: list[str]) -> dict[str, float]:
    """`{"model": ..., "predictions": [[{"label", "score"}, ...]]}`: one list per input."""
    try:
        (prediction,) = answer["predictions"]
        return _label_scores({p["label"]: p["score"] for p in prediction}, labels)
    except (KeyError, TypeError, ValueError) as e:
        raise AnswerError(f"not an encoder-serve answer for one text ({e}): {str(answer)[:200]}") from None


def dict_scores(answer, labels: list[str]) -> dict[str, float]:
    """`{label: score}` (the naive app, Ray Serve)."""
    return _label_scores(answer, labels)


def bentoml_scores(answer, labels: list[str]) -> dict[str, float]:
    """A batchable BentoML API answers a list, one element per text sent: `[{label: score}]`."""
    if not isinstance(answer, list) or len(answer) != 1:
        raise AnswerError(f"expected a list of one {{label: score}}, got {str(answer)[:200]}")
    return _label_scores(answer[0], labels)


def mlserver_scores(answer, labels: list[str]) -> dict[str, float]:
    """Open Inference Protocol: outputs "scores" (FP32 [1, num_labels], manifest order) and "label"
    (BYTES [1], the most likely label), which must agree."""
    try:
        outputs = {o["name"]: o for o in answer["outputs"]}
        scores, label = outputs["scores"], outputs["label"]
        if scores["shape"] != [1, len(labels)] or len(scores["data"]) != len(labels):
            raise AnswerError(f"scores of shape {scores['shape']}, expected [1, {len(labels)}]")
        by_label = dict(zip(labels, scores["data"], strict=True))
        top = label["data"][0]
    except (KeyError, TypeError, IndexError) as e:
        raise AnswerError(f"not an inference response with outputs label and scores ({e}): "
                          f"{str(answer)[:200]}") from None
    if top != max(by_label, key=by_label.__getitem__):
        raise AnswerError(f"label {top!r} is not the highest-scoring one in {by_label}")
    return _label_scores(by_label, labels)


def _model_env(stack: Stack, model: dict[str, str]) -> dict[str, str]:
    """What servers/peer_model.py reads: the package and precision, this shape's workers and threads."""
    return {**model, "PEER_WORKERS": str(stack.workers), "PEER_THREADS": str(stack.threads)}


def _peer_env(stack: Stack, model: dict[str, str]) -> dict[str, str]:
    """Environment of every process started from a peer's venv: its model, and the server files only on
    the import path (not the repository: encoder_serve comes from the venv's own editable install)."""
    return {**_model_env(stack, model), "PYTHONPATH": str(SERVERS), "PYTHONDONTWRITEBYTECODE": "1"}


def _encoder_serve(stack: Stack, python: Path, ports: dict[str, int], model: dict[str, str]) -> Launch:
    env = {"MODEL_DIR": model["PEER_PACKAGE"], "HOST": "127.0.0.1", "PORT": str(ports["http"]),
           "OPS_PORT": str(ports["ops"])}
    return Launch([str(python), "-m", "encoder_serve.service"], env, "/readyz")


def _naive(stack: Stack, python: Path, ports: dict[str, int], model: dict[str, str]) -> Launch:
    return Launch([str(python), str(SERVERS / "naive_ort_app.py")],
                  {**_model_env(stack, model), "HOST": "127.0.0.1", "PORT": str(ports["http"])}, "/readyz")


def _bentoml(stack: Stack, python: Path, ports: dict[str, int], model: dict[str, str]) -> Launch:
    home = python.parents[2] / "home"
    return Launch([str(python.with_name("bentoml")), "serve", "bentoml_service:EmotionClassifier",
                   "--working-dir", str(SERVERS), "--host", "127.0.0.1", "--port", str(ports["http"])],
                  {**_peer_env(stack, model), "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}, "/readyz")


def _mlserver(stack: Stack, python: Path, ports: dict[str, int], model: dict[str, str]) -> Launch:
    state = python.parents[2] / "state"  # MLServer keeps metrics and environments in directories of its own
    env = {**_peer_env(stack, model), "MLSERVER_HOST": "127.0.0.1", "MLSERVER_HTTP_PORT": str(ports["http"]),
           "MLSERVER_GRPC_PORT": str(ports["grpc"]), "MLSERVER_METRICS_PORT": str(ports["metrics"]),
           "MLSERVER_PARALLEL_WORKERS": str(stack.workers),
           "MLSERVER_METRICS_DIR": str(state / "metrics"), "MLSERVER_ENVIRONMENTS_DIR": str(state / "envs")}
    return Launch([str(python.with_name("mlserver")), "start", str(SERVERS / "mlserver")], env,
                  "/v2/models/emotion/ready")


def _ray(stack: Stack, python: Path, ports: dict[str, int], model: dict[str, str]) -> Launch:
    env = {**_peer_env(stack, model), "HOST": "127.0.0.1", "PORT": str(ports["http"]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(python.parents[2] / "tmp")}
    return Launch([str(python), str(SERVERS / "ray_app.py")], env, "/classify")


def parse_shapes(spec: str, cores: int) -> list[tuple[int, int]]:
    """'1x2,2x1' -> [(1, 2), (2, 1)]: model processes x ONNX Runtime threads each; 'auto' -> one process
    with a thread per core, and one process per core with one thread each (the same when cores = 1)."""
    if spec == "auto":
        return list(dict.fromkeys([(1, cores), (cores, 1)]))
    shapes = []
    for part in spec.split(","):
        workers, _, threads = part.strip().partition("x")
        shapes.append((int(workers), int(threads)))
    return shapes


def _shape(workers: int, threads: int) -> str:
    return f"{workers} x {threads} thread{'s' * (threads > 1)}"


def contenders(cores: int, shapes: list[tuple[int, int]] | None = None) -> list[Stack]:
    """Every contender, encoder-serve first. The naive app gets one process with a thread per core; each
    peer is measured once per shape in `shapes` (model processes x ONNX Runtime threads; default one
    process with a thread per core)."""
    shapes = shapes or [(1, cores)]
    out = [
        Stack("encoder-serve", "encoder-serve", "service", "/v1/classify", lambda t: {"inputs": t},
              encoder_serve_scores, _encoder_serve, ports=("http", "ops"),
              config={"command": "python -m encoder_serve.service",
                      "environment": "MODEL_DIR, HOST, PORT, OPS_PORT only: every other setting at its default",
                      "batching": "its own dynamic batcher (defaults: a worker per usable CPU, each with one "
                                  "model thread on 1 ONNX Runtime thread; MAX_BATCH_SIZE=64, MAX_WAIT_MS=0, "
                                  "MAX_PADDING_RATIO=0.1)"}),
        Stack("naive", "naive FastAPI + ONNX Runtime", "naive", "/v1/classify", lambda t: {"inputs": t},
              dict_scores, _naive, threads=cores,
              config={"model processes": 1, "ONNX Runtime intra-op threads": cores,
                      "server": "uvicorn, 1 worker, access log off",
                      "batching": "none: a synchronous route, one ONNX Runtime call per request"}),
    ]
    peers: list[Stack] = []
    for workers, threads in shapes:
        shape = {"model processes": workers, "ONNX Runtime intra-op threads": threads}
        key = f"-{workers}x{threads}"
        peers += [
            Stack("bentoml" + key, "BentoML", "peer", "/classify", lambda t: {"texts": [t]},
                  bentoml_scores, _bentoml, requirements=(BENTOML,), version_of="bentoml", workers=workers,
                  threads=threads, venv="bentoml",
                  config={**shape, "service": f"@bentoml.service(workers={workers}) (the default is 1)",
                          "batching": f"@bentoml.api(batchable=True, max_batch_size={MAX_BATCH_SIZE}, "
                                      "max_latency_ms=60000): the default latency bound, one dispatcher per worker"}),
            Stack("mlserver" + key, "MLServer", "peer", "/v2/models/emotion/infer",
                  lambda t: {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t],
                                         "parameters": {"content_type": "str"}}]},
                  mlserver_scores, _mlserver, requirements=(MLSERVER, MLSERVER_UVLOOP), version_of="mlserver",
                  ports=("http", "grpc", "metrics"), workers=workers, threads=threads, venv="mlserver",
                  config={**shape, "server": f"mlserver start; parallel_workers={workers} (inference processes "
                                             "beside the HTTP process; the default is 1)",
                          "batching": f"model-settings max_batch_size={MAX_BATCH_SIZE}, max_batch_time=0.005 s "
                                      "(MLServer has no default: 0 turns batching off)"}),
            Stack("ray" + key, "Ray Serve", "peer", "/classify", lambda t: {"text": t}, dict_scores, _ray,
                  requirements=(RAY,), version_of="ray", workers=workers, threads=threads, venv="ray",
                  config={**shape, "deployment": f"num_replicas={workers}, num_cpus={threads} each, "
                                                 f"max_ongoing_requests={MAX_BATCH_SIZE}; Serve's HTTP proxy",
                          "batching": f"@serve.batch(max_batch_size={MAX_BATCH_SIZE}, batch_wait_timeout_s=0.01): "
                                      "the default wait, per replica"}),
        ]
    order = ["bentoml", "mlserver", "ray"]
    return out + sorted(peers, key=lambda stack: order.index(stack.venv))  # each stack's shapes side by side


def benchmark_python() -> Path:
    """The interpreter of the benchmark itself (encoder-serve and the naive app run on it)."""
    return Path(sys.executable)
