"""Alert rules: promtool accepts them, every alert has a promtool unit test, every alert has one shape."""

from __future__ import annotations

import subprocess

from tests.deploy.deploy_config import (
    ALERT_TESTS,
    ALERTS,
    COMPOSE_PROMETHEUS,
    alert_rules,
    load_yaml,
    split_threshold,
    tool,
)

REQUIRED_ALERTS = {"error rate": "EncoderServeHighErrorRate", "p99 latency": "EncoderServeHighLatencyP99",
                   "queue saturation": "EncoderServeQueueSaturated",
                   "429 rate": "EncoderServeRejectingRequests",
                   "pods not ready": "EncoderServeNotReady", "target down": "EncoderServeTargetDown"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], check=False, capture_output=True, text=True)


def test_promtool_accepts_the_alert_rules():
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    out = promtool("test", "rules", str(ALERT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    names = {rule["alert"] for rule in alert_rules()}
    assert set(REQUIRED_ALERTS.values()) <= names
    firing, silent = set(), set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == names, f"alerts never fired by a unit test: {sorted(names - firing)}"
    assert silent == names, f"alerts never checked to stay silent: {sorted(names - silent)}"


def test_every_alert_is_a_query_compared_with_a_threshold():
    # the end-to-end test evaluates each query part against a real Prometheus, which needs this shape
    for rule in alert_rules():
        query, op, _ = split_threshold(rule["expr"])
        assert query and op in {">", "<", ">=", "<=", "==", "!="}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_compose_prometheus_config_is_valid_and_loads_the_alert_rules():
    out = promtool("check", "config", str(COMPOSE_PROMETHEUS))
    assert out.returncode == 0, out.stdout + out.stderr
    config = load_yaml(COMPOSE_PROMETHEUS)
    assert config["rule_files"] == [ALERTS.name]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["encoder-serve"]
