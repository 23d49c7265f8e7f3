"""Security: the API key guards inference (not health or metrics), errors reveal nothing internal, the
key comparison is constant-time, and the container runs unprivileged on a read-only root filesystem."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEY, REPO, assert_error

OPEN_ROUTES = ["/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"]
WRONG_KEYS = {
    "missing": None,
    "empty": "Bearer",
    "wrong": "Bearer not-the-key",
    "prefix": f"Bearer {API_KEY[:-1]}",
    "longer": f"Bearer {API_KEY}0",
    "other_case": f"Bearer {API_KEY.upper()}",
    "no_scheme": API_KEY,
    "basic_scheme": f"Basic {API_KEY}",
    "non_ascii": "Bearer clé-ünïcode",
}


def inference_calls(model_name: str) -> list[tuple[str, str, dict]]:
    return [("POST", "/v1/classify", {"inputs": ["I feel fine"]}),
            ("POST", f"/v2/models/{model_name}/infer",
             {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["I feel fine"]}]})]


@pytest.fixture(scope="module")
def secured(secured_server):
    with httpx.Client(base_url=secured_server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("authorization", WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_inference_without_the_right_key_is_401(secured, model_name, authorization):
    headers = {} if authorization is None else {"authorization": authorization.encode()}
    for method, path, payload in inference_calls(model_name):
        response = secured.request(method, path, json=payload, headers=headers)
        assert_error(response, {401}, ("key", "auth", "token", "credential"), API_KEY)


def test_inference_with_the_right_key_is_served(secured, model_name, secured_server):
    headers = {"authorization": f"Bearer {API_KEY}"}
    response = secured.post("/v1/classify", json={"inputs": ["I feel fine"]}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"]
    metadata = secured.get(f"/v2/models/{model_name}", headers=headers).json()
    name = metadata["inputs"][0]["name"]
    response = secured.post(f"/v2/models/{model_name}/infer", headers=headers, json={
        "inputs": [{"name": name, "shape": [1], "datatype": "BYTES", "data": ["I feel fine"]}]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", OPEN_ROUTES)
def test_health_and_metrics_stay_open_when_a_key_is_set(secured, path):
    """Probes and Prometheus scrapers carry no credentials."""
    assert secured.get(path).status_code == 200


def test_401_says_how_to_authenticate(secured):
    response = secured.post("/v1/classify", json={"inputs": ["hi"]})
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def service_sources() -> list[Path]:
    return sorted((REPO / "encoder_serve" / "service").rglob("*.py"))


def test_api_key_is_compared_in_constant_time():
    """Timing cannot be asserted reliably in a test; the code that compares the key can be read.

    The key must be checked with hmac/secrets.compare_digest, and never with == or != on its value, which
    return at the first differing byte and let a caller guess the key one character at a time.
    """
    compare_digest_calls, equality_on_key = [], []
    for path in service_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    == "compare_digest":
                compare_digest_calls.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                source = ast.unparse(node)
                if re.search(r"api_key|secret|token|credential", source, re.IGNORECASE) and "None" not in source:
                    equality_on_key.append(f"{path.name}:{node.lineno}: {source}")
    assert compare_digest_calls, "no compare_digest call in encoder_serve/service"
    assert not equality_on_key, f"key compared with ==/!=: {equality_on_key}"


def deploy_file(*candidates: str) -> Path:
    """The first file matching one of `candidates`; a missing one fails the test (it must not become a skip)."""
    for pattern in candidates:
        found = sorted(REPO.glob(pattern))
        if found:
            return found[0]
    pytest.fail(f"missing: {' or '.join(candidates)}", pytrace=False)


def test_container_image_runs_as_an_unprivileged_user():
    dockerfile = deploy_file("Dockerfile", "deploy/**/Dockerfile").read_text()
    runtime_stage = re.split(r"(?im)^FROM\s", dockerfile)[-1]
    users = re.findall(r"(?im)^USER\s+(\S+)", runtime_stage)
    assert users, "the runtime stage sets no USER: it runs as root"
    user = users[-1].split(":")[0]
    args = dict(re.findall(r"(?im)^ARG\s+(\w+)=(\S+)", dockerfile))
    user = args.get(user.strip("${}"), user)
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    assert user.isdigit(), f"USER {users[-1]}: use a numeric UID so runAsNonRoot can verify it"


def test_kubernetes_deployment_runs_non_root_on_a_read_only_root_filesystem():
    import yaml
    path = deploy_file("deploy/k8s/base/deployment.yaml", "deploy/**/deployment.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Deployment"]
    assert docs, f"{path}: no Deployment"
    pod = docs[0]["spec"]["template"]["spec"]
    pod_ctx = pod.get("securityContext", {})
    for container in pod["containers"]:
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        name = container["name"]
        assert ctx.get("runAsNonRoot") is True, f"{name}: runAsNonRoot is not true"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem is not true"
        assert ctx.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation is not false"
        assert "ALL" in ctx.get("capabilities", {}).get("drop", []), f"{name}: capabilities not dropped"
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{name}: read-only root but no writable /tmp (emptyDir) for the service"
