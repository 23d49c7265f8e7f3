"""POST /v1/classify skips FastAPI's routing (`ClassifyEndpoint`): it must answer exactly as the
documented FastAPI route does, errors included. Both apps run in-process with their lifespan (real
ONNX Runtime, real batcher); the only difference between them is the fast path."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from encoder_serve.service.api import ClassifyEndpoint
from encoder_serve.service.app import create_app
from encoder_serve.service.middleware import RequestContext
from encoder_serve.service.settings import load_settings

JSON = {"content-type": "application/json"}
REQUESTS = [  # (headers, body)
    (JSON, b'{"inputs": "i feel wonderful today"}'),
    (JSON, b'{"inputs": ["so angry", "a little scared", "i love this"], "top_k": 2}'),
    (JSON, b'{"inputs": ["abc " * 400], "truncate": false}'),  # longer than max_length
    (JSON, b'{"inputs": []}'),
    (JSON, b'{"inputs": "x", "top_k": 0}'),
    (JSON, b'{"inputs": "x", "unknown": 1}'),
    (JSON, b'{"inputs": '),  # invalid JSON
    ({"content-type": "text/plain"}, b'{"inputs": "x"}'),
    ({**JSON, "x-request-timeout-ms": "-5"}, b'{"inputs": "x"}'),
    ({**JSON, "authorization": "Bearer wrong"}, b'{"inputs": "x"}'),
    ({**JSON, "authorization": "Bearer sesame"}, b'{"inputs": "fine"}'),
]


def context_layer(app) -> dict:
    """The kwargs RequestContext is built with (the stack is built at the first request)."""
    return next(m for m in app.user_middleware if m.cls is RequestContext).kwargs


@pytest.fixture(scope="module")
def apps(service_package):
    settings = load_settings(model_dir=service_package, precision="fp32", api_key="sesame", log_level="warning")
    fast, routed = create_app(settings), create_app(settings)
    assert isinstance(context_layer(fast)["endpoints"][("POST", "/v1/classify")], ClassifyEndpoint)
    context_layer(routed)["endpoints"] = {}  # every request through FastAPI's router
    with TestClient(fast) as fast_client, TestClient(routed) as routed_client:
        yield fast_client, routed_client


@pytest.mark.parametrize(("headers", "body"), REQUESTS)
def test_fast_path_answers_exactly_as_the_fastapi_route(apps, headers, body):
    fast, routed = apps
    headers = {"authorization": "Bearer sesame", **headers}
    a = fast.post("/v1/classify", content=body, headers=headers)
    b = routed.post("/v1/classify", content=body, headers=headers)
    assert a.status_code == b.status_code
    assert a.json() == b.json()
    for name in ("content-type", "www-authenticate", "retry-after"):
        assert a.headers.get(name) == b.headers.get(name)


def test_fast_path_is_counted_under_its_route(apps):
    fast, _ = apps
    fast.post("/v1/classify", json={"inputs": "hello"}, headers={"authorization": "Bearer sesame"})
    metrics = fast.get("/metrics").text
    assert 'route="/v1/classify"' in metrics
