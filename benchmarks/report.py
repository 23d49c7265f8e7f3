"""results.md (tables) and the plots: throughput against p50 / p99 latency as concurrency grows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks.goals import arrangement

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


def goals_table(goals: list[dict]) -> list[str]:
    lines = ["| precision | goal | target | measured | result | detail |", "| --- | --- | --- | --- | --- | --- |"]
    for g in goals:
        measured = "–" if g["measured"] is None else (
            f"+{g['measured']:.2f} ms" if g["goal"] == "latency" else f"{g['measured']:.2f}x")
        lines.append(f"| {g['precision']} | {g['goal']} | {g['target']} | {measured} | {VERDICT[g['pass']]} "
                     f"| {g['detail']} |")
    return lines


def comparisons_table(comparisons: list[dict]) -> list[str]:
    lines = ["| precision | comparison | measured | detail |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['precision']} | {c['goal']} ({c['target']}) | {c['measured']:.2f}x | {c['detail']} |"
              for c in comparisons]
    return lines


def limits_table(limits: dict[str, dict]) -> list[str]:
    """One row per precision, batch order (arrival order, or grouped by length) and arrangement (one batch
    at a time on every thread, or one single-threaded batch per thread at once); the limit in bold."""
    sizes = sorted({r["batch_size"] for limit in limits.values() for r in limit["sweep"]})
    lines = ["| precision | batches | " + " | ".join(f"batch {b}" for b in sizes)
             + " | single text p50 | CPU ms/text at the limit |", "| --- | --- |" + " --- |" * (len(sizes) + 2)]
    for precision, limit in limits.items():
        kinds = dict.fromkeys((r.get("order", "arrival"), r.get("lanes", 1)) for r in limit["sweep"])
        for order, lanes in kinds:
            rows = {r["batch_size"]: r for r in limit["sweep"]
                    if (r.get("order", "arrival"), r.get("lanes", 1)) == (order, lanes)}
            best = (limit.get("best_order", "arrival"), limit.get("best_lanes", 1)) == (order, lanes)
            cells = ["–" if b not in rows else f"**{rows[b]['texts_per_s']:,.0f}**"
                     if best and b == limit["best_batch_size"] else f"{rows[b]['texts_per_s']:,.0f}" for b in sizes]
            lines.append(f"| {precision} | {arrangement(order, lanes, limit.get('threads', 1))} | " + " | ".join(cells)
                         + f" | {limit['single_text_p50_ms']:.2f} ms | {limit['cpu_ms_per_text']:.2f} |")
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
        f"Package `{results['package']['ref']}` ({results['package']['size']}). encoder-serve with its default "
        f"settings; the in-process limit and the naive baseline with {s['threads']} compute thread(s). "
        f"Closed-loop wrk clients, texts sampled from the emotion test split (one per request unless the "
        f"contender says otherwise), {s['duration_s']} s per point after {s['warmup_s']} s of warm-up"
        + (" (quick smoke run: short and noisy)" if s["quick"] else "") + ".", "",
        "## Goals", "", *goals_table(results["goals"]), "",
        "## Comparisons", "", *comparisons_table(results.get("comparisons", [])), "",
        "## The limit: ONNX Runtime in-process (texts/s, tokenization included)", "",
        *limits_table(results["limits"]), "",
        "## Over HTTP", "", *runs_table(results["runs"]), "",
        *[f"Skipped: {why}" for why in results.get("skipped", [])], "",
        "![throughput against latency](throughput_latency.png)", "",
    ]
    path.write_text("\n".join(lines))
    return path


CONCURRENCY_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def concurrency_markers(runs: list[dict]) -> dict[int, str]:
    """A marker shape per number of clients, the same in every line of a plot."""
    levels = sorted({p["concurrency"] for run in runs for p in run["points"]})
    return {c: CONCURRENCY_MARKERS[i % len(CONCURRENCY_MARKERS)] for i, c in enumerate(levels)}


def clients_legend(markers: dict[int, str]) -> list[Line2D]:
    return [Line2D([], [], color="black", marker=m, linestyle="", label=f"{c} client{'s' * (c > 1)}")
            for c, m in markers.items()]


def log_latency_axis(ax) -> None:
    """A log latency axis labelled in plain milliseconds (1, 2, 5, 10, 20, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot(results: dict, path: Path) -> Path:
    """Throughput (from 0) against p50 and p99 latency (log), a line per contender, a marker shape per number
    of clients, the in-process limits as vertical lines; the legends beside the axes, no text on the data."""
    markers = concurrency_markers(results["runs"])
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    handles = []
    for ax, key, title in ((axes[0], "p50_ms", "p50 latency"), (axes[1], "p99_ms", "p99 latency")):
        for i, run in enumerate(results["runs"]):
            colour = colours[i % len(colours)]
            points = sorted(run["points"], key=lambda p: p["concurrency"])
            xs, ys = [p["throughput"] for p in points], [p[key] for p in points]
            ax.plot(xs, ys, color=colour, linewidth=1.6, zorder=2)
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.scatter([x], [y], color=colour, marker=markers[p["concurrency"]], s=32, zorder=3,
                           edgecolors="white", linewidths=0.5)
            if ax is axes[0]:
                handles.append(Line2D([], [], color=colour, linewidth=1.6, label=run["name"]))
        for j, (precision, limit) in enumerate(results["limits"].items()):
            style = ("--", ":")[j % 2]
            ax.axvline(limit["texts_per_s"], linestyle=style, linewidth=1, color="grey")
            if ax is axes[0]:
                handles.append(Line2D([], [], color="grey", linestyle=style, linewidth=1,
                                      label=f"ONNX Runtime in-process, {precision}"))
        log_latency_axis(ax)
        ax.set_xlim(left=0)
        ax.set_xlabel("throughput (texts/s, 2xx only)")
        ax.set_ylabel(f"{title} (ms, log scale)")
        ax.set_title(f"{title} as concurrency grows")
        ax.grid(True, which="both", alpha=0.3)
    first = fig.legend(handles=handles, title="contender", loc="upper left", bbox_to_anchor=(0.78, 0.90),
                       fontsize=8, title_fontsize=8, frameon=False)
    fig.add_artist(first)
    fig.legend(handles=clients_legend(markers), title="closed-loop clients", loc="upper left",
               bbox_to_anchor=(0.78, 0.40), fontsize=8, title_fontsize=8, frameon=False)
    m = results["machine"]
    fig.suptitle(f"{results['package']['ref']} ({results['package']['size']}), {m['date']}, {m['cpu_model']}, "
                 f"server on CPU {_cpus(m['server_cpus'])}, wrk on CPU {_cpus(m['client_cpus'])}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.77, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
