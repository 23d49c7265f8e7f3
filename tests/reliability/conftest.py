"""Fixtures of the reliability suite: the real service on a real port, started once per configuration.

The service runs the `service_package` model (RELIABILITY_MODEL_DIR points the suite at another package, e.g.
the shipped models/emotion): what is under test here is the serving path, not the model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from tests.live_server import LiveServer

REPO = Path(__file__).resolve().parents[2]

# Limits the fast suites assert against; small, so crossing them is cheap.
LIMITS = {"MAX_INPUTS_PER_REQUEST": "16", "MAX_CHARS_PER_INPUT": "2000", "MAX_BODY_BYTES": "65536"}
API_KEY = "reliability-suite-key-0123456789"


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    override = os.environ.get("RELIABILITY_MODEL_DIR")
    return Path(override) if override else request.getfixturevalue("service_package")


@pytest.fixture(scope="session")
def model_name(model_dir) -> str:
    return json.loads((model_dir / "manifest.json").read_text())["name"]


@pytest.fixture(scope="session")
def texts(emotion_test_rows) -> list[str]:
    return [r["text"] for r in emotion_test_rows]


def start(model_dir: Path, log_dir: Path, **env: str) -> LiveServer:
    """A started service on `model_dir`, configured by `env`, logging to `log_dir`/service.log."""
    return LiveServer(model_dir, env=env, log_path=log_dir / "service.log").start()


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """The service with the suite's limits and no API key; shared by the fast functional tests."""
    live = start(model_dir, tmp_path_factory.mktemp("server"), **LIMITS)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def secured_server(model_dir, tmp_path_factory):
    live = start(model_dir, tmp_path_factory.mktemp("secured_server"), **LIMITS, API_KEY=API_KEY)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# What must never appear in a response: a traceback, or where the code, the model or Python live.
LEAK_MARKERS = ("Traceback (most recent call last)", 'File "', "site-packages", str(REPO), sys.prefix)


def assert_no_internals(response: httpx.Response, *extra_markers: str) -> None:
    leaked = [m for m in (*LEAK_MARKERS, *extra_markers) if m and m in response.text]
    assert not leaked, f"{response.request.method} {response.request.url.path} -> {response.status_code} " \
                       f"leaks {leaked}: {response.text[:500]}"


def assert_error(response: httpx.Response, statuses: set[int], words: tuple[str, ...], *extra_markers: str):
    """A client error: one of `statuses`, a JSON body that names what was wrong (one of `words`), no leaks."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code in statuses, \
        f"{where}: expected {sorted(statuses)}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), \
        f"{where} -> {response.status_code}: not JSON ({response.headers.get('content-type')}): {response.text[:200]}"
    body = response.json()
    assert body, f"{where} -> {response.status_code}: empty JSON body"
    text = response.text.lower()
    assert any(w.lower() in text for w in words), \
        f"{where} -> {response.status_code}: message names none of {words}: {response.text[:500]}"
    assert_no_internals(response, *extra_markers)
