"""Service settings: one pydantic-settings class read from the environment (no prefix).

Every knob a container or `encoder-serve serve` can turn lives here, validated once at start-up so a bad
value stops the process with a message naming the variable instead of failing on the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in µs, or "max <period>"
MAX_AUTO_WORKERS = 8  # beyond this many CPUs, the default gives each worker more model threads instead


def cgroup_cpus(path: Path | None = None) -> int | None:
    """The CPU quota of this process's cgroup (Docker's --cpus, a Kubernetes CPU limit), rounded up to whole
    CPUs; None where there is none or no cgroup v2."""
    try:
        quota, period = (path or CGROUP_CPU_MAX).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, -(-int(quota) // int(period)))


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask (which container CPU sets narrow) and its cgroup's CPU
    quota (which a container CPU limit sets), not the host's."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cgroup_cpus() or cpus)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    model_dir: Path = Field(Path("models/emotion"), description="Model package directory (MODEL_DIR).")
    host: str = Field("0.0.0.0", min_length=1, description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535)
    ops_port: int = Field(8001, ge=0, le=65535, description="Operations port: /healthz, /readyz and /metrics on "
                                                            "their own thread, answered even while the event loop "
                                                            "is flooded (0 turns it off).")
    workers: int | None = Field(
        None, ge=1, le=64, description=f"Worker processes, each with its own model, event loop and model threads; "
                                       f"default: one per usable CPU, at most {MAX_AUTO_WORKERS}.")
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="auto serves int8 only when the package marks it servable and batch-invariant.")
    model_threads: int | None = Field(
        None, ge=1, le=64, description="Batches computed at once per worker, each in a thread of its own; default: "
                                       "usable CPUs / workers.")
    ort_intra_op_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per batch; default: 1 (several batches at once use the cores "
                                "better than one batch on several threads, for small encoders on CPU).")
    max_batch_size: int = Field(64, ge=1, le=4096, description="Most texts in one model call.")
    max_batch_tokens: int = Field(16384, ge=1, description="Most padded tokens (texts x longest) in one call.")
    max_padding_ratio: float = Field(
        0.1, ge=0, le=1, description="Most padding tokens / padded tokens in one call under load (texts of "
                                     "other lengths run in the next call at once); 1 turns the bound off. "
                                     "On CPU a padding token costs what a real one does, and each call has a "
                                     "fixed cost of its own: 0.1 measured best on the shipped model "
                                     "(docs/benchmarks.md).")
    max_wait_ms: float = Field(
        0.0, ge=0, le=60_000, description="How long the batcher may wait for company; 0 never waits (TEI).")
    inline_lone_requests: bool = Field(
        True, description="A request that finds its worker idle (no other inference request in progress, no "
                          "batch computing) computes its batch on the event loop's thread, without the hand-over "
                          "to a model thread and back; false always hands over.")
    max_queue_size: int = Field(1024, ge=1, description="Most texts waiting; beyond it requests get 429.")
    max_queue_delay_ms: float = Field(
        500.0, ge=0, le=600_000, description="Most model work (estimated from the measured speed) queued ahead "
                                             "of a new request; beyond it 429 at once, before the body is read "
                                             "(0 turns the bound off).")
    max_concurrent_requests: int = Field(
        256, ge=1, description="Most inference requests in progress per worker; beyond it 429 at once, "
                               "before the body is read. Where the HTTP side saturates first (a small "
                               "model, one text per request), a request's time in the worker is about this "
                               "many / requests per second, so it bounds the wait as MAX_QUEUE_DELAY_MS "
                               "does for the model's queue (docs/reliability.md: 128 bounds the tail under "
                               "overload better, but refuses a fifth of 256 steady clients).")
    max_connections: int = Field(
        8192, ge=16, description="Most open client connections per worker, idle keep-alive ones included; "
                                 "beyond it new connections wait in the listen backlog (the HTTP server "
                                 "accepts no more), so it must be well above what clients keep open.")
    max_concurrent_explains: int = Field(
        4, ge=1, description="Most /v1/explain requests in progress per worker; beyond it 429 (explain has its own "
                             "lane and never delays classification).")
    gc_young_threshold: int = Field(
        10_000, ge=0, description="Once a worker has loaded the model: freeze what start-up allocated out of the "
                                  "garbage collector's sight and collect the young generation every this many "
                                  "allocations (Python's default: 700); 0 leaves the collector as Python sets it.")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="Deadline of a request; then 504.")
    max_inputs_per_request: int = Field(64, ge=1, le=4096)
    max_chars_per_input: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    api_key: SecretStr | None = Field(None, description="If set, inference routes need `Authorization: Bearer`.")
    playground: bool = Field(True, description="Serve the playground page at / (false leaves it out).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("log_level", "precision", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key", "ort_intra_op_threads", "model_threads", "workers", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.workers is None:
            self.workers = min(available_cpus(), MAX_AUTO_WORKERS)
        if self.ops_port and self.ops_port == self.port:
            raise ValueError(f"OPS_PORT ({self.ops_port}) must differ from PORT, or be 0 to turn it off")
        if self.max_queue_size < self.max_inputs_per_request:
            raise ValueError(f"MAX_QUEUE_SIZE ({self.max_queue_size}) must be >= MAX_INPUTS_PER_REQUEST "
                             f"({self.max_inputs_per_request}), or a full request could never be queued")
        return self

    @property
    def batch_threads(self) -> int:
        """Batches computed at once per worker."""
        return self.model_threads or max(1, available_cpus() // self.workers)

    @property
    def intra_op_threads(self) -> int:
        """ONNX Runtime threads per batch."""
        return self.ort_intra_op_threads or 1


def describe(error: ValidationError) -> str:
    """One line per bad variable, named as the user sets it (MAX_BATCH_SIZE, not max_batch_size)."""
    lines = []
    for e in error.errors():
        name = ".".join(str(p) for p in e["loc"]).upper() or "settings"
        lines.append(f"invalid setting {name}: {e['msg']}" + (f" (got {e['input']!r})" if e["loc"] else ""))
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overrides win); raises ValueError with a readable message on bad values."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ValueError(describe(e)) from None
