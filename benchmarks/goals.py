"""The performance goals of issue 6, each a ratio of two numbers measured in the same run.

    saturation  encoder-serve's best throughput >= 0.9 x the in-process limit
    batching    encoder-serve >= 3 x itself with batching off, at every concurrency >= 64
    naive       encoder-serve's best throughput >= 10 x the naive baseline's best
    latency     encoder-serve's p50 at concurrency 1 <= the in-process single-text latency + 2 ms

Goals are checked per precision; one that lacks a measurement (a run skipped) is reported as such.
"""

from __future__ import annotations

SATURATION_RATIO = 0.9
BATCHING_RATIO = 3.0
BATCHING_MIN_CONCURRENCY = 64
NAIVE_RATIO = 10.0
LATENCY_SLACK_MS = 2.0


def best_throughput(run: dict) -> float:
    return max(p["throughput"] for p in run["points"])


def batching_ceiling(limit: dict) -> float:
    """What batching can buy at most on this model and hardware: best batch size over batch size 1,
    in-process. If this is below the goal, no server can meet it."""
    single = next(r for r in limit["sweep"] if r["batch_size"] == 1)
    return limit["texts_per_s"] / single["texts_per_s"]


def find_run(runs: list[dict], kind: str, precision: str | None = None, batching: bool | None = None):
    for run in runs:
        if run["kind"] == kind and (precision is None or run["precision"] == precision) and (
                batching is None or run["batching"] == batching):
            return run
    return None


def goal(precision: str, name: str, target: str, measured: float | None, passed: bool | None, detail: str):
    return {"precision": precision, "goal": name, "target": target,
            "measured": None if measured is None else round(measured, 3),
            "pass": passed, "detail": detail}


def evaluate(limits: dict[str, dict], runs: list[dict]) -> list[dict]:
    results = []
    naive = find_run(runs, "naive")
    for precision, limit in limits.items():
        service = find_run(runs, "service", precision, batching=True)
        if service is None:
            continue
        best = best_throughput(service)
        ratio = best / limit["texts_per_s"]
        busiest = max(service["points"], key=lambda p: p["throughput"])
        results.append(goal(precision, "saturation", f">= {SATURATION_RATIO} x in-process limit", ratio,
                            ratio >= SATURATION_RATIO,
                            f"{best:,.0f} / {limit['texts_per_s']:,.0f} texts/s "
                            f"(limit at batch size {limit['best_batch_size']}"
                            f"{', grouped by length' if limit.get('best_order') == 'length' else ''}); CPU per text "
                            f"{busiest['server_cpu_ms_per_request']:.2f} ms served vs "
                            f"{limit['cpu_ms_per_text']:.2f} ms in-process"))

        off = find_run(runs, "service", precision, batching=False)
        if off is not None:
            by_c = {p["concurrency"]: p["throughput"] for p in off["points"]}
            ratios = {p["concurrency"]: p["throughput"] / by_c[p["concurrency"]] for p in service["points"]
                      if p["concurrency"] >= BATCHING_MIN_CONCURRENCY and by_c.get(p["concurrency"])}
            worst = min(ratios.values()) if ratios else None
            results.append(goal(precision, "batching", f">= {BATCHING_RATIO:g} x batching off at c >= "
                                f"{BATCHING_MIN_CONCURRENCY}", worst,
                                None if worst is None else worst >= BATCHING_RATIO,
                                (", ".join(f"c={c}: {r:.2f}x" for c, r in sorted(ratios.items()))
                                 or "no concurrency >= 64 measured")
                                + f"; in-process ceiling {batching_ceiling(limit):.2f}x"))

        if naive is not None:
            ratio = best / best_throughput(naive)
            results.append(goal(precision, "naive", f">= {NAIVE_RATIO:g} x naive baseline", ratio,
                                ratio >= NAIVE_RATIO,
                                f"{best:,.0f} / {best_throughput(naive):,.0f} texts/s; in-process ceiling "
                                f"{limit['texts_per_s'] / best_throughput(naive):.2f}x"))

        single = next((p for p in service["points"] if p["concurrency"] == 1), None)
        if single is not None:
            excess = single["p50_ms"] - limit["single_text_p50_ms"]
            results.append(goal(precision, "latency", f"p50 at c=1 <= in-process + {LATENCY_SLACK_MS:g} ms",
                                excess, excess <= LATENCY_SLACK_MS,
                                f"p50 {single['p50_ms']:.2f} ms vs in-process "
                                f"{limit['single_text_p50_ms']:.2f} ms: +{excess:.2f} ms"))
    return results
