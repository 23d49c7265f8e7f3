"""The Grafana dashboard covers every metric the service exports; compose wires service, Prometheus and
Grafana together."""

from __future__ import annotations

import re

from tests.deploy.deploy_config import DEPLOY, REPO, dashboard, dashboard_panels, dashboard_queries, load_yaml
from prometheus_client import CollectorRegistry

from encoder_serve.service.metrics import ServiceMetrics

COMPOSE = REPO / "docker-compose.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def exported_metrics() -> set[str]:
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    return {family.name for family in registry.collect()}


def test_dashboard_shows_every_metric_the_service_exports():
    queries = " ".join(expr for _, expr in dashboard_queries())
    used = set(re.findall(r"encoder_serve_[a-z_]+", queries))
    used = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in used}
    missing = {name for name in exported_metrics() if re.sub(r"_total$", "", name) not in used}
    assert not missing, f"metrics with no dashboard panel: {sorted(missing)}"


def test_dashboard_has_the_required_views():
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for words in ("throughput", "error rate", "request latency", "queue wait", "inference", "batch size",
                  "batch tokens", "padding ratio", "queue depth", "in-flight", "429 and 504", "by pod"):
        assert words in titles, f"no panel about {words!r}: {titles}"
    for panel in ("Request latency", "Queue wait", "Inference (per batch)"):
        exprs = " ".join(e for t, e in dashboard_queries() if t == panel)
        assert set(re.findall(r"histogram_quantile\((0\.\d+)", exprs)) == {"0.5", "0.95", "0.99"}, panel


def test_dashboard_is_templated_by_datasource_job_and_pod():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            for selector in re.findall(r"encoder_serve_[a-z_]+\{([^}]*)\}", target["expr"]):
                assert 'instance=~"$instance"' in selector and 'job=~"$job"' in selector, panel["title"]


def test_panels_do_not_overlap():
    cells = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24 and not area & cells, panel["title"]
        cells |= area


def test_compose_provisions_prometheus_and_grafana_from_files_in_the_repo():
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"encoder-serve", "prometheus", "grafana"} <= services.keys()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name} mounts {host}, which is not in the repo"
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["encoder-serve:8000"]
    assert services["encoder-serve"]["read_only"] is True and services["encoder-serve"]["cap_drop"] == ["ALL"]
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert any(v.endswith(":" + str(home.rsplit("/", 1)[0]) + ":ro") for v in services["grafana"]["volumes"])
