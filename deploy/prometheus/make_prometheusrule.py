"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yml.

The alert rules have one source, alerts.yml, which Prometheus loads directly (docker compose) and
`promtool test rules` tests; the Prometheus Operator wants the same groups wrapped in a PrometheusRule.
Run this after editing alerts.yml; tests/deploy fails while the two disagree.

    python deploy/prometheus/make_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yml"
TARGET = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"
LABELS = {"app.kubernetes.io/name": "encoder-serve", "app.kubernetes.io/instance": "encoder-serve",
          "app.kubernetes.io/component": "server"}
HEADER = ("# GENERATED from deploy/prometheus/alerts.yml by deploy/prometheus/make_prometheusrule.py:\n"
          "# edit that file and rerun the script. Add the label your Prometheus' ruleSelector matches in an\n"
          "# overlay.\n")


def prometheus_rule(rules: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "encoder-serve", "labels": LABELS}, "spec": rules}


def main() -> None:
    rules = yaml.safe_load(SOURCE.read_text())
    body = yaml.safe_dump(prometheus_rule(rules), sort_keys=False, width=110, allow_unicode=True)
    TARGET.write_text(HEADER + body)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
