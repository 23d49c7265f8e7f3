"""Prometheus metrics (prefix `encoder_serve_`), correct with one worker or several.

With several workers each process writes its samples to PROMETHEUS_MULTIPROC_DIR (prepared by the
launcher) and /metrics merges them; gauges say how to merge (queue depth and in-flight requests sum over
live workers, model info and readiness take the live maximum and minimum). prometheus_client merges no
exemplars there, so the request-latency histogram's trace exemplars travel beside them (`SharedExemplars`).
The server's own vital signs, CPU seconds and resident memory, are read from /proc at scrape time for the
whole process tree (the launcher and every worker), so they are right however many workers there are.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

PREFIX = "encoder_serve_"
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .0075, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
RATIO_BUCKETS = (0, .05, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1)
REJECTED_REASONS = ("queue_full", "queue_delay", "concurrency", "body_too_large", "explain_busy")


EXEMPLARS_GLOB = "exemplars_*.json"  # a worker's exemplars in the multiprocess directory
EXEMPLAR_REFRESH_S = 1.0  # a bucket's exemplar is replaced at most this often


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class SharedExemplars:
    """The request-latency histogram's exemplars when several workers share the metrics.

    Each worker keeps, per route and bucket, the latest traced request's trace id and latency, and writes
    them to a file of its own in the multiprocess directory (whole, by rename, so a scrape never reads half
    a file); a bucket's exemplar is replaced at most once per EXEMPLAR_REFRESH_S, so a traced flood writes
    a few small files a second, not one per request. The scrape (`render`) attaches the newest of each
    bucket over all workers to the merged histogram, as one process's prometheus_client would."""

    def __init__(self, directory: str | Path, buckets: tuple[float, ...]):
        self.path = Path(directory) / f"exemplars_{os.getpid()}.json"
        self.bounds = [*buckets, float("inf")]
        self.latest: dict[str, dict] = {}  # "route\tle" -> {"labels", "value", "timestamp"}

    def offer(self, route: str, seconds: float, labels: dict[str, str]) -> None:
        le = floatToGoString(self.bounds[bisect.bisect_left(self.bounds, seconds)])
        key = f"{route}\t{le}"
        now = time.time()
        kept = self.latest.get(key)
        if kept is not None and now - kept["timestamp"] < EXEMPLAR_REFRESH_S:
            return
        self.latest[key] = {"labels": labels, "value": seconds, "timestamp": now}
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            partial.write_text(json.dumps(self.latest))
            os.replace(partial, self.path)
        except OSError:  # the directory is gone (shutting down): exemplars are a convenience, never an error
            pass


def read_exemplars(directory: str | Path) -> dict[tuple[str, str], Exemplar]:
    """(route, le) -> the newest exemplar any worker wrote for that bucket."""
    newest: dict[tuple[str, str], dict] = {}
    for path in Path(directory).glob(EXEMPLARS_GLOB):
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):  # a worker's file removed meanwhile
            continue
        for key, entry in entries.items():
            route, _, le = key.partition("\t")
            if (route, le) not in newest or entry["timestamp"] > newest[route, le]["timestamp"]:
                newest[route, le] = entry
    return {key: Exemplar(e["labels"], e["value"], e["timestamp"]) for key, e in newest.items()}


class MergedWithExemplars(Collector):
    """Every worker's samples (prometheus_client's multiprocess merge), with `SharedExemplars`' exemplars on
    the request-latency histogram's buckets."""

    def __init__(self, directory: str):
        self.directory = directory

    def collect(self):
        exemplars = read_exemplars(self.directory)
        for family in multiprocess.MultiProcessCollector(None, self.directory).collect():
            if family.name == PREFIX + "request_duration_seconds" and exemplars:
                family.samples = [
                    s._replace(exemplar=exemplars.get((s.labels.get("route"), s.labels.get("le"))))
                    if s.name.endswith("_bucket") else s for s in family.samples]
            yield family


class ServiceMetrics:
    """Every metric the service exports; the batcher reports through `observe_batch` and friends."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        self.requests = Counter(PREFIX + "requests_total", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], **r)
        self.request_duration = Histogram(PREFIX + "request_duration_seconds", "Request latency by route.",
                                           ["route"], buckets=LATENCY_BUCKETS, **r)
        self.tokenization = Histogram(PREFIX + "tokenization_duration_seconds", "Tokenizing one request.",
                                      buckets=LATENCY_BUCKETS, **r)
        self.queue_wait = Histogram(PREFIX + "queue_wait_seconds", "Time a text waited for its batch.",
                                    buckets=LATENCY_BUCKETS, **r)
        self.inference = Histogram(PREFIX + "inference_duration_seconds", "One model call (one batch).",
                                   buckets=LATENCY_BUCKETS, **r)
        self.batch_size = Histogram(PREFIX + "batch_size", "Texts per model call.", buckets=SIZE_BUCKETS, **r)
        self.batch_tokens = Histogram(PREFIX + "batch_tokens", "Padded tokens per model call.",
                                      buckets=TOKEN_BUCKETS, **r)
        self.padding_ratio = Histogram(PREFIX + "padding_ratio", "Padding tokens / batch tokens per call.",
                                       buckets=RATIO_BUCKETS, **r)
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Texts waiting for a batch.",
                                 multiprocess_mode="livesum", **r)
        self.loop_lag = Gauge(PREFIX + "event_loop_lag_seconds", "How late the event loop runs a callback that "
                              "is due, the largest of the last third of a second (what a request that arrives "
                              "waits before admission sees it).", multiprocess_mode="livemax", **r)
        self.gc_pause = Histogram(PREFIX + "gc_pause_seconds", "Garbage-collector pauses, by generation (the "
                                  "event loop and every Python thread stand still meanwhile).", ["generation"],
                                  buckets=LATENCY_BUCKETS, **r)
        self.in_flight = Gauge(PREFIX + "in_flight_requests", "Requests being handled.",
                               multiprocess_mode="livesum", **r)
        self.texts = Counter(PREFIX + "texts_total", "Texts classified.", **r)
        self.batches_here = Counter(PREFIX + "batches_on_event_loop_total", "Model calls computed on the event "
                                    "loop's thread, for a request that found its worker idle.", **r)
        self.rejected = Counter(PREFIX + "rejected_total", "Requests refused before any model work (429 or "
                                "413), by reason.", ["reason"], **r)
        self.timeouts = Counter(PREFIX + "timeouts_total", "Requests answered 504.", **r)
        self.dropped_texts = Counter(PREFIX + "dropped_total", "Texts dropped before compute.", ["reason"], **r)
        self.model_info = Gauge(PREFIX + "model_info", "The served model (value 1).",
                                ["name", "version", "precision"], multiprocess_mode="livemax", **r)
        self.ready = Gauge(PREFIX + "ready", "1 when the worker takes traffic.", multiprocess_mode="livemin", **r)
        self.spans_dropped = Counter(PREFIX + "spans_dropped_total", "Trace spans not exported: the export queue "
                                     "was full, or the collector failed.", ["reason"], **r)
        self.log_lines_dropped = Counter(PREFIX + "log_lines_dropped_total", "Access lines not written: standard "
                                         "output stopped taking them and the backlog was full.", **r)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # prometheus_client keeps an exemplar only in the process that observed it: with several workers
        # they are shared through files
        directory = multiprocess_dir()
        self.shared_exemplars = SharedExemplars(directory, LATENCY_BUCKETS) if directory else None
        for reason in ("cancelled", "deadline"):
            self.dropped_texts.labels(reason)
        for reason in REJECTED_REASONS:
            self.rejected.labels(reason)
        for reason in ("queue_full", "export_failed"):
            self.spans_dropped.labels(reason)
        for generation in range(3):
            self.gc_pause.labels(str(generation))

    def observe_request(self, route: str, method: str, status: int, seconds: float,
                        exemplar: dict[str, str] | None = None) -> None:
        """One answered request, counted by route, method and status and timed by route. The labelled
        children are looked up once per combination (`labels` takes a lock and builds a key every call)."""
        children = self._request_children.get((route, method, status))
        if children is None:
            children = self._request_children[route, method, status] = (
                self.requests.labels(route, method, str(status)), self.request_duration.labels(route))
        children[0].inc()
        children[1].observe(seconds, exemplar)
        if exemplar and self.shared_exemplars is not None:
            self.shared_exemplars.offer(route, seconds, exemplar)

    # the batcher's side (batching.BatchMetrics)
    def observe_batch(self, size: int, tokens: int, padded_tokens: int, seconds: float, here: bool = False) -> None:
        if here:
            self.batches_here.inc()
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)
        self.padding_ratio.observe(1 - tokens / padded_tokens)
        self.inference.observe(seconds)
        self.texts.inc(size)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self.gc_pause.labels(str(generation)).observe(seconds)

    def dropped(self, reason: str, count: int) -> None:
        self.dropped_texts.labels(reason).inc(count)


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc: each thread's children)."""
    pids, i = [root], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the process or thread ended meanwhile
                pass
        i += 1
    return pids


class ProcessTreeCollector(Collector):
    """CPU seconds and resident memory of the server: the process `root` and every process below it."""

    def __init__(self, root: int):
        self.root = root
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    def collect(self):
        cpu = rss = 0.0
        for pid in process_tree(self.root):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                statm = Path(f"/proc/{pid}/statm").read_text()
            except OSError:  # the process ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            cpu += (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
            rss += int(statm.split()[1]) * self.page
        yield CounterMetricFamily(PREFIX + "process_cpu_seconds", "CPU seconds (user + system) of the server's "
                                  "processes (launcher and workers).", value=cpu)
        yield GaugeMetricFamily(PREFIX + "process_resident_memory_bytes", "Resident memory of the server's "
                                "processes (launcher and workers).", value=rss)


def server_root() -> int:
    """The process at the top of the server: the launcher, which supervises the workers (it says so in
    ENCODER_SERVE_ROOT_PID); this process when the app runs on its own (in tests)."""
    return int(os.environ.get("ENCODER_SERVE_ROOT_PID") or os.getpid())


def wants_openmetrics(accept: str | None) -> bool:
    """The scraper asks for OpenMetrics (Prometheus does by default): the format that carries exemplars."""
    return "application/openmetrics-text" in (accept or "")


def render(registry: CollectorRegistry, process_root: int | None = None, accept: str | None = None
           ) -> tuple[bytes, str]:
    """The exposition: this app's registry, or every worker's samples in multiprocess mode, plus the process
    tree's CPU and memory when `process_root` is given (and /proc exists); OpenMetrics, exemplars included,
    when the scraper's Accept asks for it (in multiprocess mode, those `SharedExemplars` wrote)."""
    if directory := multiprocess_dir():
        registry = CollectorRegistry()
        registry.register(MergedWithExemplars(directory))
        if process_root is not None and Path("/proc").is_dir():
            registry.register(ProcessTreeCollector(process_root))
    if wants_openmetrics(accept):
        return openmetrics.generate_latest(registry), openmetrics.CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_this_process() -> None:
    """Remove this worker's live gauges from the shared directory (at worker shutdown)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())
