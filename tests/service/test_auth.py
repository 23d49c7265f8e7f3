"""With API_KEY set, inference routes need `Authorization: Bearer <key>`; health, metrics and docs stay open."""

from __future__ import annotations

import httpx
import pytest

from encoder_serve.service.testing import LiveServer


@pytest.fixture(scope="module")
def secured(package):
    with LiveServer(package, env={"API_KEY": "s3cret-key"}) as live:
        yield live


@pytest.mark.parametrize("path", ["/v1/classify", "/v1/explain"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"},
                                     {"Authorization": "Basic s3cret-key"}])
def test_inference_without_the_right_key_is_401(secured, path, headers):
    r = httpx.post(secured.url + path, json={"inputs": "hello"}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_the_right_key_is_served(secured):
    r = httpx.post(secured.url + "/v1/classify", json={"inputs": "hello"},
                   headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    r = httpx.post(secured.url + "/v1/explain", json={"inputs": "hello"},
                   headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200 and r.json()["tokens"][0] == "[CLS]"


def test_health_metrics_and_docs_stay_open(secured):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/v2/health/ready"):
        assert httpx.get(secured.url + path).status_code == 200, path


def test_without_a_key_configured_no_header_is_needed(server):
    assert httpx.post(server.url + "/v1/classify", json={"inputs": "hello"}).status_code == 200
