"""The performance goals, each a ratio of two numbers measured in the same run, on the whole machine.

    saturation    the service with its defaults, one text per request: best throughput >= 0.8 x the limit
    saturation_8  the same with 8 texts per request: >= 0.95 x the limit
    latency       the service's p50 at one connection <= the in-process single-text p50 + 1 ms

The limit is ONNX Runtime in-process on every server core, tokenization included, at its best batch size,
batch order and arrangement of the threads (one batch at a time on every thread, or one single-threaded
batch per thread at once, as the service runs them). Also reported, as comparisons rather than goals:
the service against itself with batching off, and against the naive FastAPI + PyTorch baseline.
Goals are checked per precision; one that lacks a measurement (a run skipped) is reported as such.
"""

from __future__ import annotations

SATURATION_RATIO = 0.8
SATURATION_8_RATIO = 0.95
LATENCY_SLACK_MS = 1.0
MULTI_TEXTS = 8
BATCHING_MIN_CONCURRENCY = 64


def arrangement(order: str, lanes: int, threads: int) -> str:
    """How the limit ran its batches: 'grouped by length, 2 at once (1 thread each)'."""
    name = {"arrival": "arrival order", "length": "grouped by length"}.get(order, order)
    if lanes > 1:
        return f"{name}, {lanes} at once ({threads // lanes} thread{'s' if threads // lanes > 1 else ''} each)"
    return f"{name}, one at a time ({threads} thread{'s' if threads > 1 else ''})"


def limit_name(limit: dict) -> str:
    """'batches of 32 grouped by length, 2 at once (1 thread each)'"""
    return (f"batches of {limit['best_batch_size']} "
            + arrangement(limit.get("best_order", "arrival"), limit.get("best_lanes", 1), limit.get("threads", 1)))


def best_throughput(run: dict) -> float:
    return max(p["throughput"] for p in run["points"])


def batching_ceiling(limit: dict) -> float:
    """What batching can buy at most on this model and hardware: the limit over the best that texts one at a
    time do, in-process."""
    single = max(r["texts_per_s"] for r in limit["sweep"] if r["batch_size"] == 1)
    return limit["texts_per_s"] / single


def find_run(runs: list[dict], kind: str, precision: str | None = None, batching: bool | None = None,
             texts_per_request: int | None = None):
    for run in runs:
        if run["kind"] == kind and (precision is None or run["precision"] == precision) and (
                batching is None or run["batching"] == batching) and (
                texts_per_request is None or run.get("texts_per_request", 1) == texts_per_request):
            return run
    return None


def goal(precision: str, name: str, target: str, measured: float | None, passed: bool | None, detail: str):
    return {"precision": precision, "goal": name, "target": target,
            "measured": None if measured is None else round(measured, 3),
            "pass": passed, "detail": detail}


def saturation(precision: str, name: str, ratio_goal: float, run: dict | None, limit: dict) -> dict:
    if run is None:
        return goal(precision, name, f">= {ratio_goal} x in-process limit", None, None, "not measured")
    best = best_throughput(run)
    ratio = best / limit["texts_per_s"]
    busiest = max(run["points"], key=lambda p: p["throughput"])
    return goal(precision, name, f">= {ratio_goal} x in-process limit", ratio, ratio >= ratio_goal,
                f"{best:,.0f} / {limit['texts_per_s']:,.0f} texts/s at c={busiest['concurrency']} "
                f"(limit: {limit_name(limit)}); CPU per text "
                f"{busiest['server_cpu_ms_per_request']:.2f} ms served vs {limit['cpu_ms_per_text']:.2f} ms in-process")


def evaluate(limits: dict[str, dict], runs: list[dict]) -> list[dict]:
    results = []
    for precision, limit in limits.items():
        service = find_run(runs, "service", precision, batching=True)
        if service is None:
            continue
        results.append(saturation(precision, "saturation", SATURATION_RATIO, service, limit))
        results.append(saturation(precision, f"saturation, {MULTI_TEXTS} texts/request", SATURATION_8_RATIO,
                                  find_run(runs, "service-multi", precision, texts_per_request=MULTI_TEXTS), limit))
        single = next((p for p in service["points"] if p["concurrency"] == 1), None)
        if single is not None:
            excess = single["p50_ms"] - limit["single_text_p50_ms"]
            results.append(goal(precision, "latency", f"p50 at c=1 <= in-process + {LATENCY_SLACK_MS:g} ms",
                                excess, excess <= LATENCY_SLACK_MS,
                                f"p50 {single['p50_ms']:.2f} ms vs in-process "
                                f"{limit['single_text_p50_ms']:.2f} ms: {excess:+.2f} ms"))
    return results


def comparisons(limits: dict[str, dict], runs: list[dict]) -> list[dict]:
    """Ratios worth knowing that are not goals: batching on vs off, the service against the limit's other
    arrangement of threads (one batch at a time on all of them) when the limit is the other, and against
    the naive baseline."""
    results = []
    naive = find_run(runs, "naive")
    for precision, limit in limits.items():
        service = find_run(runs, "service", precision, batching=True)
        if service is None:
            continue
        best = best_throughput(service)
        off = find_run(runs, "service", precision, batching=False)
        if off is not None:
            by_c = {p["concurrency"]: p["throughput"] for p in off["points"]}
            ratios = {p["concurrency"]: p["throughput"] / by_c[p["concurrency"]] for p in service["points"]
                      if p["concurrency"] >= BATCHING_MIN_CONCURRENCY and by_c.get(p["concurrency"])}
            if ratios:
                results.append(goal(precision, "batching on vs off", f"c >= {BATCHING_MIN_CONCURRENCY}",
                                    min(ratios.values()), None,
                                    ", ".join(f"c={c}: {r:.2f}x" for c, r in sorted(ratios.items()))
                                    + f"; in-process, best batch over batch 1: {batching_ceiling(limit):.2f}x"))
        serial = [r for r in limit["sweep"] if r.get("lanes", 1) == 1]
        if limit.get("best_lanes", 1) > 1 and serial:
            # what the ratios would be against the other arrangement alone (the only one until 2026-12-07)
            top = max(serial, key=lambda r: r["texts_per_s"])
            multi = find_run(runs, "service-multi", precision, texts_per_request=MULTI_TEXTS)
            shapes = [("1 text", best)] + ([(f"{MULTI_TEXTS} texts", best_throughput(multi))] if multi else [])
            results.append(goal(precision, "vs one batch at a time", "the limit's other arrangement",
                                best / top["texts_per_s"], None,
                                ", ".join(f"{name}/request: {rate / top['texts_per_s']:.2f}x" for name, rate in shapes)
                                + f" ({top['texts_per_s']:,.0f} texts/s: batches of {top['batch_size']} "
                                + arrangement(top["order"], 1, limit.get("threads", 1)) + ")"))
        if naive is not None:
            results.append(goal(precision, "vs naive baseline", "best throughput", best / best_throughput(naive),
                                None, f"{best:,.0f} / {best_throughput(naive):,.0f} texts/s"))
    return results
