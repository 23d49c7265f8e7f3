"""Fixtures for the service tests: the real service on a real port, and an independent reference model."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.live_server import LiveServer
from tests.service.servicekit import Reference

LIMITS = {"MAX_INPUTS_PER_REQUEST": "16", "MAX_CHARS_PER_INPUT": "2000", "MAX_BODY_BYTES": "65536"}


@pytest.fixture(scope="session")
def package(service_package) -> Path:
    return service_package


@pytest.fixture(scope="session")
def server(package, tmp_path_factory):
    """The service as deployed (fp32, the default zero wait), shared by the contract tests."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    with LiveServer(package, env={"PRECISION": "fp32", "LOG_LEVEL": "info", **LIMITS}, log_path=log) as live:
        live.log = log
        yield live


@pytest.fixture(scope="session")
def reference(package) -> Reference:
    return Reference(package)


