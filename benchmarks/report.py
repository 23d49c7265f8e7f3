"""results.md (tables) and the plots: throughput against p50 / p99 latency as concurrency grows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

VERDICT = {True: "**pass**", False: "**FAIL**", None: "not measured"}


def machine_line(results: dict) -> str:
    m = results["machine"]
    return (f"{m['date']}, {m['cpu_model']}, {m['cpus']} CPUs (server on CPU {_cpus(m['server_cpus'])}, "
            f"client on CPU {_cpus(m['client_cpus'])}), load average at start {m['load_average_at_start']}, "
            f"onnxruntime {m['onnxruntime']}, {m['wrk']}, commit {m['git_commit']}")


def _cpus(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def busy_warning(results: dict) -> list[str]:
    """Other work on the machine skews every number and the ratios between runs measured minutes apart."""
    load = results["machine"]["load_average_at_start"][0]
    if load <= 1.0:
        return []
    return [(f"**Warning: the machine was busy (1-minute load average {load} before the run started); "
            "these numbers are not representative.**"), ""]


ORDER_NAMES = {"arrival": "arrival order", "length": "grouped by length"}


def goals_table(goals: list[dict]) -> list[str]:
    lines = ["| precision | goal | target | measured | result | detail |", "| --- | --- | --- | --- | --- | --- |"]
    for g in goals:
        measured = "–" if g["measured"] is None else (
            f"+{g['measured']:.2f} ms" if g["goal"] == "latency" else f"{g['measured']:.2f}x")
        lines.append(f"| {g['precision']} | {g['goal']} | {g['target']} | {measured} | {VERDICT[g['pass']]} "
                     f"| {g['detail']} |")
    return lines


def limits_table(limits: dict[str, dict]) -> list[str]:
    """One row per precision and batch order (arrival order, or grouped by length); the limit in bold."""
    sizes = sorted({r["batch_size"] for limit in limits.values() for r in limit["sweep"]})
    lines = ["| precision | batches | " + " | ".join(f"batch {b}" for b in sizes)
             + " | single text p50 | CPU ms/text at the limit |", "| --- | --- |" + " --- |" * (len(sizes) + 2)]
    for precision, limit in limits.items():
        orders = dict.fromkeys(r.get("order", "arrival") for r in limit["sweep"])
        for order in orders:
            rows = {r["batch_size"]: r for r in limit["sweep"] if r.get("order", "arrival") == order}
            best = limit.get("best_order", "arrival") == order
            cells = ["–" if b not in rows else f"**{rows[b]['texts_per_s']:,.0f}**"
                     if best and b == limit["best_batch_size"] else f"{rows[b]['texts_per_s']:,.0f}" for b in sizes]
            lines.append(f"| {precision} | {ORDER_NAMES.get(order, order)} | " + " | ".join(cells)
                         + f" | {limit['single_text_p50_ms']:.2f} ms | {limit['cpu_ms_per_text']:.2f} |")
    return lines


def whole_machine_note(results: dict) -> list[str]:
    """The limit with ONNX Runtime on every server core: not a goal (the service gives the model fewer
    threads and the event loop the rest), but what a reader needs to see what the split costs."""
    whole = results.get("limits_all_cores") or {}
    if not whole:
        return []
    threads = next(iter(whole.values()))["threads"]
    parts = [f"{precision} {w['texts_per_s']:,.0f} texts/s (batch {w['best_batch_size']}, "
             f"{ORDER_NAMES.get(w['best_order'], w['best_order'])})" for precision, w in whole.items()]
    lines = [(f"For reference, ONNX Runtime with {threads} threads on all {len(results['machine']['server_cpus'])} "
              f"server cores: {'; '.join(parts)}. The goals compare with the service's own compute thread count "
              f"({results['settings']['threads']}), since the service keeps a core for its event loop."), ""]
    for run in results["runs"]:
        if run["kind"] == "service-all-cores" and run["precision"] in whole:
            best = max(p["throughput"] for p in run["points"])
            limit = whole[run["precision"]]["texts_per_s"]
            lines += [(f"Served with {threads} threads too (`{run['name']}`), HTTP sharing the model's cores: "
                      f"{best:,.0f} texts/s, {best / limit:.2f} x that limit ({limit:,.0f})."), ""]
    return lines


def runs_table(runs: list[dict]) -> list[str]:
    lines = ["| contender | concurrency | texts/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/text | client CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        for p in run["points"]:
            errors = p["requests"] - p["ok"] + p["errors"]["connect"] + p["errors"]["read"]
            lines.append(f"| {run['name']} | {p['concurrency']} | {p['throughput']:,.0f} | {p['p50_ms']:.2f} "
                         f"| {p['p95_ms']:.2f} | {p['p99_ms']:.2f} | {errors} "
                         f"| {p['server_cpu_ms_per_request']:.2f} | {p['client_cpu_utilization']:.0%} |")
    return lines


def write_markdown(results: dict, path: Path) -> Path:
    s = results["settings"]
    lines = [
        "# encoder-serve benchmark results", "",
        f"Measured {machine_line(results)}.", "",
        *busy_warning(results),
        f"Package `{results['package']['ref']}` ({results['package']['size']}), {s['threads']} compute "
        f"thread(s) for every contender; closed-loop wrk clients, one text per request sampled from the "
        f"emotion test split, {s['duration_s']} s per point after {s['warmup_s']} s of warm-up"
        + (" (quick smoke run: short and noisy)" if s["quick"] else "") + ".", "",
        "## Goals", "", *goals_table(results["goals"]), "",
        "## The limit: ONNX Runtime in-process (texts/s, tokenization included)", "",
        *limits_table(results["limits"]), "",
        *whole_machine_note(results),
        "## Over HTTP", "", *runs_table(results["runs"]), "",
        *[f"Skipped: {why}" for why in results.get("skipped", [])], "",
        "![throughput against latency](throughput_latency.png)", "",
    ]
    path.write_text("\n".join(lines))
    return path


def plot(results: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    for ax, key, title in ((axes[0], "p50_ms", "p50 latency"), (axes[1], "p99_ms", "p99 latency")):
        for run in results["runs"]:
            xs = [p["throughput"] for p in run["points"]]
            ys = [p[key] for p in run["points"]]
            (line,) = ax.plot(xs, ys, marker="o", label=run["name"])
            for p, x, y in zip(run["points"], xs, ys, strict=True):
                ax.annotate(str(p["concurrency"]), (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=line.get_color())
        for precision, limit in results["limits"].items():
            ax.axvline(limit["texts_per_s"], linestyle="--", linewidth=1, color="grey")
            ax.text(limit["texts_per_s"], 0.02, f"in-process limit, {precision}", rotation=90, fontsize=7,
                    color="grey", va="bottom", ha="right", transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_xlabel("throughput (texts/s; one text per request unless the legend says otherwise)")
        ax.set_ylabel(f"{title} (ms, log scale)")
        ax.set_title(f"{title} as concurrency grows (labels: concurrent clients)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"{results['package']['ref']} ({results['package']['size']}), {m['date']}, {m['cpu_model']}, "
                 f"server on CPU {_cpus(m['server_cpus'])}, wrk on CPU {_cpus(m['client_cpus'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
