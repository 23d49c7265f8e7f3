"""Read the deployment files the way their consumers do: kustomize output, alert rules, dashboard queries.

Shared by the static checks and the end-to-end Prometheus test, so both look at the same expressions.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
COMPOSE_PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "encoder-serve.json"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
INFERENCE_ROUTES = "/v1/classify|/v2/models/.+/infer"


def tool(name: str) -> str:
    """A command-line tool from the virtual environment (pip-installed binaries) or the PATH."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]') or the Debian "
                    f"package (apt-get install prometheus for promtool/prometheus)")
    return found


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@functools.cache
def kustomize(overlay: str) -> list[dict]:
    """`kubectl kustomize` of an overlay: the resources exactly as `kubectl apply -k` would send them.

    Built once per session; callers must not modify the result."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, f"kustomize {overlay} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


# Top-level comparison of an alert: `<query> <op> <number>` with the operator outside any (), {} or [].
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(bool\s+)?(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


def split_threshold(expr: str) -> tuple[str, str, float]:
    """`sum(...) / sum(...) > 0.05` -> ("sum(...) / sum(...)", ">", 0.05); ValueError if not that shape."""
    expr = " ".join(expr.split())
    match = _COMPARISON.search(expr)
    if match is None:
        raise ValueError(f"not `<query> <comparison> <number>`: {expr}")
    query = expr[:match.start()].rstrip()
    depth = 0
    for ch in query:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
    if depth != 0 or not query:
        raise ValueError(f"comparison is not at the top level: {expr}")
    return query, match.group(1), float(match.group(3))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return [p for p in panels if p.get("type") != "row"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, as written (with $variables)."""
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


def render_dashboard_query(expr: str, job: str, rate_interval: str) -> str:
    """Substitute the dashboard's variables as Grafana does with `All` selected."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$job", job)
            .replace("$instance", ".*"))


def adapter_rules() -> list[dict]:
    return load_yaml(ADAPTER_VALUES)["rules"]["custom"]


def render_adapter_query(rule: dict, label_matchers: str, group_by: str) -> str:
    """prometheus-adapter's metricsQuery template, filled in as the adapter fills it for one request."""
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by))
