"""What the routes share: settings, metrics, the model package, health and (once loaded) the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from encoder_serve.package import ModelPackage
from encoder_serve.service.metrics import ServiceMetrics, render
from encoder_serve.service.pipeline import InferencePipeline
from encoder_serve.service.probes import Health
from encoder_serve.service.settings import Settings
from encoder_serve.service.tracing import Tracing


@dataclass(eq=False)
class Service:
    settings: Settings
    package: ModelPackage
    metrics: ServiceMetrics
    registry: CollectorRegistry
    process_root: int | None = None  # the server's top process, for its CPU and memory metrics
    health: Health = field(default_factory=Health)
    tracing: Tracing | None = None  # OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    pipeline: InferencePipeline | None = None  # set once the model is loaded and warmed up

    @property
    def ready(self) -> bool:
        return self.health.ready()[0]

    @property
    def precision(self) -> str:
        """The precision being served (fp32 or int8)."""
        return self.pipeline.precision

    def load(self, pipeline: InferencePipeline) -> None:
        self.pipeline = pipeline
        self.health.scheduler_alive = lambda: pipeline.alive
        self.health.model_busy_since = lambda: pipeline.busy_since
        self.health.loaded = True
        self.metrics.model_info.labels(self.package.name, self.package.version, pipeline.precision).set(1)
        self.metrics.ready.set(1)

    def drain(self) -> None:
        """Stop advertising readiness and run queued texts now; the server lets accepted requests finish."""
        self.health.draining = True
        self.metrics.ready.set(0)
        if self.pipeline is not None:
            self.pipeline.drain()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The /metrics body and its content type, OpenMetrics when `accept` asks (callable from any thread)."""
        return render(self.registry, self.process_root, accept)
