"""The Kubernetes manifests: every overlay builds, validates against the API schemas, and holds together.

Schema validation uses kubernetes-validate (strict: unknown fields fail) against the oldest and newest
Kubernetes versions we support. It has no schemas for the Prometheus Operator's CRDs (ServiceMonitor,
PrometheusRule), so those are skipped there and checked here instead: the ServiceMonitor must select the
Service and name one of its ports, and the PrometheusRule must hold exactly deploy/prometheus/alerts.yml,
which promtool checks and tests (test_prometheus_rules.py).
"""

from __future__ import annotations

import json
import math

import kubernetes_validate
import pytest
import yaml

from tests.deploy.deploy_config import ALERTS, DASHBOARD, K8S, OVERLAYS, adapter_rules, kustomize, load_yaml

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # 1.30: first with the preStop `sleep` action on by default
CRD_GROUPS = ("monitoring.coreos.com/",)
APP_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
              "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(request.param)


def one(resources: list[dict], kind: str) -> dict:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(resources: list[dict]) -> dict:
    return one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def config_env(resources: list[dict]) -> dict[str, str]:
    """The settings ConfigMap the container reads (its generated, hash-suffixed name must resolve)."""
    [ref] = container(resources)["envFrom"]
    name = ref["configMapRef"]["name"]
    found = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == name]
    assert len(found) == 1, f"envFrom names ConfigMap {name}, which the overlay does not define"
    return found[0]["data"]


def test_overlays_exist_for_dev_and_prod():
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_overlay_validates_against_the_kubernetes_schemas(overlay):
    name, resources = overlay
    checked = 0
    for resource in resources:
        if resource["apiVersion"].startswith(CRD_GROUPS):
            continue  # no schema shipped for CRDs: checked structurally by the tests below
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {resource['kind']}/{resource['metadata']['name']} is invalid for "
                            f"Kubernetes {version}: {e.message} at {'.'.join(map(str, e.path))}")
        checked += 1
    assert checked >= 6, f"{name}: only {checked} resources validated"


def test_every_resource_carries_the_recommended_labels(overlay):
    name, resources = overlay
    for resource in resources:
        if resource["kind"] == "Namespace":
            continue
        labels = resource["metadata"].get("labels", {})
        missing = [label for label in APP_LABELS if label not in labels]
        assert not missing, f"{name}: {resource['kind']}/{resource['metadata']['name']} lacks {missing}"
    pod_labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(label in pod_labels for label in APP_LABELS), f"{name}: pod template lacks app labels"


def test_service_pdb_and_deployment_select_the_pods(overlay):
    _, resources = overlay
    deployment = one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {"Deployment": deployment["spec"]["selector"]["matchLabels"],
                 "Service": one(resources, "Service")["spec"]["selector"],
                 "PodDisruptionBudget":
                     one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]}
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), f"{kind} selector {selector} misses pods"


def test_probes_hit_the_operations_port_healthz_for_liveness_and_readyz_for_readiness(overlay):
    _, resources = overlay
    c = container(resources)
    probes = ("startupProbe", "livenessProbe", "readinessProbe")
    paths = {probe: c[probe]["httpGet"]["path"] for probe in probes}
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert {c[probe]["httpGet"]["port"] for probe in probes} == {"ops"}  # off the event loop
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in c["ports"]
    assert {"name": "ops", "containerPort": 8001, "protocol": "TCP"} in c["ports"]
    assert {"name": "OPS_PORT", "value": "8001"} in c["env"]


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_workers_follow_the_cpu_limit(overlay):
    _, resources = overlay
    c = container(resources)
    assert c["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert c["resources"]["limits"].keys() >= {"cpu", "memory"}
    workers = next(e for e in c["env"] if e["name"] == "WORKERS")
    ref = workers["valueFrom"]["resourceFieldRef"]
    assert (ref["resource"], ref["containerName"], str(ref["divisor"])) == ("limits.cpu", c["name"], "1")
    # Kubernetes rounds the limit up to whole CPUs: a worker per CPU, one model thread each
    assert config_env(resources)["MODEL_THREADS"] == "1"
    assert math.ceil(cpus(c["resources"]["limits"]["cpu"])) >= 1


def test_container_runs_unprivileged_on_a_read_only_root(overlay):
    _, resources = overlay
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    c = container(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    # the only writable path is an emptyDir at /tmp (where the launcher keeps multiprocess metrics)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    assert mounts.keys() == {"/tmp"} and all("emptyDir" in v for v in mounts.values())


def test_grace_period_covers_the_prestop_sleep_and_the_longest_request(overlay):
    _, resources = overlay
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(resources)["lifecycle"]["preStop"]["sleep"]["seconds"]
    longest_request = float(config_env(resources)["REQUEST_TIMEOUT_S"])
    assert pre_stop >= 5, "endpoints need a few seconds to stop routing to a terminating pod"
    assert pod["terminationGracePeriodSeconds"] > pre_stop + longest_request


def test_hpa_scales_the_deployment_on_cpu_and_on_the_adapter_queue_depth_metric():
    resources = kustomize("prod")
    hpa = one(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = one(resources, "Deployment")
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    pods_metric = kinds["Pods"]["pods"]["metric"]["name"]
    exposed = {rule["name"]["as"] for rule in adapter_rules()}
    assert pods_metric in exposed, f"HPA metric {pods_metric} is not one the adapter exposes: {exposed}"
    assert "replicas" not in deployment["spec"], "the HPA owns replicas; a fixed count fights it"


def test_prod_turns_the_playground_off_and_dev_keeps_it():
    assert config_env(kustomize("prod"))["PLAYGROUND"] == "false"
    assert config_env(kustomize("dev")).get("PLAYGROUND", "true") == "true"


def test_dev_overlay_runs_one_pod_without_the_prometheus_operator():
    resources = kustomize("dev")
    assert one(resources, "Deployment")["spec"]["replicas"] == 1
    kinds = {r["kind"] for r in resources}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"}


def test_service_monitor_scrapes_the_service_metrics_port():
    resources = kustomize("prod")
    monitor, service = one(resources, "ServiceMonitor"), one(resources, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("ops", "/metrics")]
    assert monitor["spec"]["endpoints"][0]["port"] in ports
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]


def test_prometheus_rule_holds_exactly_the_alert_rules_file():
    rule = one(kustomize("prod"), "PrometheusRule")
    assert rule["spec"] == load_yaml(ALERTS), (
        "deploy/k8s/base/prometheusrule.yaml is out of date: "
        "run python deploy/prometheus/make_prometheusrule.py")


def test_base_has_one_resource_per_file():
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, f"{path.name} holds {len(docs)} resources"


def test_prod_ships_the_dashboard_to_the_grafana_sidecar():
    [dashboard] = [r for r in kustomize("prod")
                   if r["kind"] == "ConfigMap" and "grafana_dashboard" in r["metadata"]["labels"]]
    [content] = dashboard["data"].values()
    assert json.loads(content) == json.loads(DASHBOARD.read_text())
