"""What the routes share: settings, metrics, the model package, and (once loaded) runtime and classifier."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from encoder_serve.package import ModelPackage
from encoder_serve.service.inference import Classifier
from encoder_serve.service.metrics import ServiceMetrics
from encoder_serve.service.settings import Settings


@dataclass(eq=False)
class Service:
    settings: Settings
    package: ModelPackage
    metrics: ServiceMetrics
    registry: CollectorRegistry
    classifier: Classifier | None = None  # set once the model is loaded and warmed up
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.classifier is not None and not self.draining

    def begin_drain(self) -> None:
        """Stop advertising readiness and run queued texts now; uvicorn lets accepted requests finish."""
        self.draining = True
        self.metrics.ready.set(0)
        if self.classifier is not None:
            self.classifier.batcher.stop_waiting()

