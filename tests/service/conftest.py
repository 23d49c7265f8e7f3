"""Fixtures for the service tests: the real service on a real port, and an independent reference model."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoder_serve.service.testing import LiveServer
from tests.service.servicekit import Reference

LIMITS = {"MAX_INPUTS_PER_REQUEST": "16", "MAX_CHARS_PER_INPUT": "2000", "MAX_BODY_BYTES": "65536"}


@pytest.fixture(scope="session")
def package(service_package) -> Path:
    return service_package


@pytest.fixture(scope="session")
def server(package, tmp_path_factory):
    """The service as deployed (fp32, the default zero wait), shared by the contract tests. Their bursts of
    concurrent clients must all be answered 200 on a slow, shared CI machine too, so the queue-delay
    budget is generous here (its own tests are in test_admission and test_flood)."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    env = {"PRECISION": "fp32", "LOG_LEVEL": "info", "MAX_QUEUE_DELAY_MS": "10000", **LIMITS}
    with LiveServer(package, env=env, log_path=log) as live:
        live.log = log
        yield live


@pytest.fixture(scope="session")
def reference(package) -> Reference:
    return Reference(package)


