"""End to end: the real service, a real Prometheus scraping it every second while traffic flows, and every
PromQL expression we ship evaluated against that Prometheus: dashboard panels and variables, alert rules,
the prometheus-adapter rule behind the HPA.

Each expression must return data (at least one finite sample). Alerts are `<query> <op> <threshold>`; the
query part is evaluated on its own, because whether the comparison holds depends on the traffic, while a
misspelt metric, label or function shows as an empty result either way. The traffic includes a burst that
overflows a 16-text queue (429) and requests with a 1 ms deadline (504), so the error counters have series.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from encoder_serve.service.testing import LiveServer, free_port
from tests.deploy.deploy_config import (
    ALERTS,
    COMPOSE_PROMETHEUS,
    adapter_rules,
    alert_rules,
    dashboard,
    dashboard_queries,
    load_yaml,
    render_adapter_query,
    render_dashboard_query,
    split_threshold,
    tool,
)
from tests.otlp import Receiver

JOB = "encoder-serve"
POD = {"namespace": "e2e", "pod": "encoder-serve-0"}  # what a ServiceMonitor's relabelling adds on Kubernetes
RATE_INTERVAL = "1m"
TEXTS = ["i feel wonderful today", "this is so frustrating", "i am scared of tomorrow", "what a surprise"] * 4


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as otlp:
        yield otlp


@pytest.fixture(scope="module")
def service(service_package, receiver, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    # traced, so the latency histogram carries exemplars for Prometheus to store; the default workers (a
    # worker per CPU), as docker-compose runs it: the exemplars travel between workers
    env = {"MAX_INPUTS_PER_REQUEST": "16", "MAX_QUEUE_SIZE": "16", "MAX_BATCH_SIZE": "16",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    log = work / "service.log"
    with LiveServer(service_package, env=env, log_path=log) as server:
        yield server


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body.get('error', body)}"
        return body["data"]["result"]

    def finite(self, expr: str) -> list[float]:
        return [float(s["value"][1]) for s in self.query(expr) if math.isfinite(float(s["value"][1]))]

    def wait_for(self, expr: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.finite(expr):
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never returned data for {expr} within {timeout}s")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    """Prometheus 2 from the shipped compose config, pointed at the live service, 1 s scrape and rules, storing
    exemplars (as compose runs it)."""
    work = tmp_path_factory.mktemp("prometheus")
    config = load_yaml(COMPOSE_PROMETHEUS)
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ALERTS)]
    [job] = config["scrape_configs"]
    # the operations port, as compose and the ServiceMonitor scrape it
    job["static_configs"] = [{"targets": [service.ops_url.removeprefix("http://")], "labels": POD}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(work / "prometheus.log", "wb") as log:
        process = subprocess.Popen([tool("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={work / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}",
                                    "--enable-feature=exemplar-storage"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Prometheus not ready within 60 s"
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(30)


def classify(client: httpx.Client, texts: list[str], **headers: str) -> int:
    return client.post("/v1/classify", json={"inputs": texts}, headers=headers).status_code


@pytest.fixture(scope="module")
def traffic(service, prometheus):
    """Steady traffic in the background for the whole module, after a burst of 429s and 504s."""
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=service.url, timeout=30) as client, ThreadPoolExecutor(24) as pool:
        for _ in range(50):
            statuses.update(pool.map(lambda _: classify(client, TEXTS), range(48)))
            statuses[classify(client, TEXTS[:1], **{"X-Request-Timeout-Ms": "1"})] += 1
            if statuses[429] and statuses[504]:
                break
    assert statuses[200] and statuses[429] and statuses[504], f"no 200, 429 and 504 each: {statuses}"

    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not stop.is_set():
                classify(client, TEXTS[:3])
                stop.wait(0.05)

    thread = threading.Thread(target=steady, daemon=True)
    thread.start()
    # enough scrapes for rates: the error counters and some traffic inside one rate window
    prometheus.wait_for('encoder_serve_rejected_total{reason="queue_full"} > 0')
    prometheus.wait_for("encoder_serve_timeouts_total > 0")
    prometheus.wait_for(f"count_over_time(encoder_serve_texts_total[{RATE_INTERVAL}]) >= 5")
    yield statuses
    stop.set()
    thread.join()


def dashboard_cases() -> list:
    return [pytest.param(expr, id=f"{title}#{i}") for i, (title, expr) in enumerate(dashboard_queries())]


@pytest.mark.parametrize("expr", dashboard_cases())
def test_dashboard_query_returns_data(prometheus, traffic, expr):
    rendered = render_dashboard_query(expr, JOB, RATE_INTERVAL)
    assert prometheus.finite(rendered), f"no data for {rendered}"


def test_dashboard_variables_find_the_job_and_the_pod(prometheus, traffic):
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        # label_values(<selector>, <label>) is Grafana's call of /api/v1/label/<label>/values?match[]=
        call = variable["query"]["query"].removeprefix("label_values(").removesuffix(")")
        selector, label = call.replace("$job", JOB).rsplit(", ", 1)
        r = httpx.get(f"{prometheus.url}/api/v1/label/{label}/values", params={"match[]": selector},
                      timeout=10)
        assert r.json()["data"], f"variable {variable['name']}: no {label} values for {selector}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_query_returns_data(prometheus, traffic, rule):
    query, _, _ = split_threshold(rule["expr"])
    assert prometheus.finite(query), f"{rule['alert']}: no data for {query}"


def test_prometheus_evaluates_every_alert_rule_without_error(prometheus, traffic):
    # rules run every second and `traffic` waited for five scrapes: a rule never evaluated would say "unknown"
    groups = httpx.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_adapter_rule_gives_the_hpa_a_queue_depth_per_pod(prometheus, traffic):
    for rule in adapter_rules():
        r = httpx.get(prometheus.url + "/api/v1/series", params={"match[]": rule["seriesQuery"]}, timeout=10)
        assert r.json()["data"], f"seriesQuery {rule['seriesQuery']} finds no series"
        # what the adapter sends for GET .../namespaces/e2e/pods/*/<metric>
        query = render_adapter_query(rule, f'namespace="{POD["namespace"]}",pod=~"{POD["pod"]}"', "pod")
        result = prometheus.query(query)
        assert [s["metric"] for s in result] == [{"pod": POD["pod"]}], f"{query} -> {result}"
        assert math.isfinite(float(result[0]["value"][1]))


def test_prometheus_scrapes_the_service_while_traffic_flows(prometheus, traffic):
    assert prometheus.finite(f'up{{job="{JOB}"}} == 1') == [1.0]
    assert prometheus.finite(f"rate(encoder_serve_texts_total[{RATE_INTERVAL}]) > 0")


def test_the_latency_panel_jumps_to_traces_through_exemplars(prometheus, traffic, receiver):
    panel = next(p for p in dashboard()["panels"] if p["title"] == "Request latency")
    assert all(target.get("exemplar") is True for target in panel["targets"])
    selector = 'encoder_serve_request_duration_seconds_bucket{route="/v1/classify"}'
    now = time.time()
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(prometheus.url + "/api/v1/query_exemplars",
                      params={"query": selector, "start": now - 600, "end": now + 60}, timeout=10).json()
        exemplars = [e for series in r["data"] for e in series["exemplars"]]
        if exemplars or time.monotonic() > deadline:
            break
        time.sleep(1)
    trace_ids = {e["labels"]["trace_id"] for e in exemplars}
    assert trace_ids, "Prometheus stored no exemplar for the latency histogram"
    exported = {s.trace_id for s in receiver.wait_for(lambda spans: bool(trace_ids & {s.trace_id for s in spans}))}
    assert trace_ids & exported  # an exemplar leads to a trace the collector has
