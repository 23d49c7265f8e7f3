"""The goals against the peers, results.md (one table) and throughput_latency.png of `make bench-peers`.

    throughput  at 64 clients, encoder-serve >= 1.5 x the best peer's throughput there
    latency     at 1 client, encoder-serve's p50 lower than every peer's

Peers are the other serving stacks (kind "peer"); the naive app and the in-process limit are shown for
reference and are not part of the goals. A peer that was not measured is named in the verdict's detail;
with no peer measured at all, a goal is "not measured", never a pass.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from benchmarks.goals import limit_name
from benchmarks.report import (
    VERDICT,
    busy_warning,
    clients_legend,
    concurrency_markers,
    log_latency_axis,
    machine_line,
)

THROUGHPUT_RATIO = 1.5
THROUGHPUT_CONCURRENCY = 64
LATENCY_CONCURRENCY = 1

__all__ = ["evaluate", "goal_lines", "machine_line", "plot", "runs_table", "write_markdown"]


def point_at(run: dict, concurrency: int) -> dict | None:
    return next((p for p in run["points"] if p["concurrency"] == concurrency), None)


def _goal(name: str, target: str, measured: float | None, passed: bool | None, detail: str) -> dict:
    return {"goal": name, "target": target, "measured": None if measured is None else round(measured, 3),
            "pass": passed, "detail": detail}


def _missing_note(not_measured: list[dict]) -> str:
    peers = [m["contender"] for m in not_measured if m.get("kind", "peer") == "peer"]
    return f"; not measured: {', '.join(peers)}" if peers else ""


def evaluate(runs: list[dict], not_measured: list[dict] | None = None) -> list[dict]:
    """The two goals from one run's contenders (dicts with kind, name, points)."""
    service = next((r for r in runs if r["kind"] == "service"), None)
    peers = [r for r in runs if r["kind"] == "peer"]
    naive = next((r for r in runs if r["kind"] == "naive"), None)
    missing = _missing_note(not_measured or [])
    goals = []

    target = f">= {THROUGHPUT_RATIO:g} x the best peer's throughput at {THROUGHPUT_CONCURRENCY} clients"
    ours = service and point_at(service, THROUGHPUT_CONCURRENCY)
    theirs = {r["name"]: p["throughput"] for r in peers if (p := point_at(r, THROUGHPUT_CONCURRENCY))}
    if not ours or not theirs:
        goals.append(_goal("throughput", target, None, None,
                           ("no encoder-serve point" if not ours else "no peer point")
                           + f" at {THROUGHPUT_CONCURRENCY} clients{missing}"))
    else:
        best = max(theirs, key=theirs.__getitem__)
        ratio = ours["throughput"] / theirs[best] if theirs[best] > 0 else float("inf")
        others = ", ".join(f"{name} {v:,.0f}" for name, v in theirs.items())
        naive_note = ""
        if naive and (p := point_at(naive, THROUGHPUT_CONCURRENCY)):
            naive_note = f"; naive {p['throughput']:,.0f}"
        goals.append(_goal("throughput", target, ratio, ratio >= THROUGHPUT_RATIO,
                           f"encoder-serve {ours['throughput']:,.0f} req/s against {best} {theirs[best]:,.0f}: "
                           f"{ratio:.2f}x (peers: {others}{naive_note}){missing}"))

    target = f"p50 at {LATENCY_CONCURRENCY} client below every peer's"
    ours = service and point_at(service, LATENCY_CONCURRENCY)
    theirs = {r["name"]: p["p50_ms"] for r in peers if (p := point_at(r, LATENCY_CONCURRENCY))}
    if not ours or not theirs:
        goals.append(_goal("latency", target, None, None,
                           ("no encoder-serve point" if not ours else "no peer point")
                           + f" at {LATENCY_CONCURRENCY} client{missing}"))
    else:
        fastest = min(theirs, key=theirs.__getitem__)
        margin = theirs[fastest] - ours["p50_ms"]
        others = ", ".join(f"{name} {v:.2f}" for name, v in theirs.items())
        goals.append(_goal("latency", target, margin, margin > 0,
                           f"encoder-serve {ours['p50_ms']:.2f} ms against {fastest} {theirs[fastest]:.2f} ms "
                           f"(peers, ms: {others}){missing}"))
    return goals


def goal_lines(goals: list[dict]) -> list[str]:
    """One line per goal, as printed at the end of a run: `goal throughput  PASS  detail`."""
    words = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
    return [f"goal {g['goal']:10} {words[g['pass']]:12} {g['detail']}" for g in goals]


def _measured(g: dict) -> str:
    if g["measured"] is None:
        return "–"
    return f"{g['measured']:.2f}x" if g["goal"] == "throughput" else f"{g['measured']:+.2f} ms"


def runs_table(runs: list[dict]) -> list[str]:
    lines = [("| contender | clients | req/s (2xx) | p50 ms | p90 ms | p99 ms | non-2xx + timeouts | socket errors "
              "| server CPU ms/req | client CPU |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        for p in run["points"]:
            sockets = p["errors"]["connect"] + p["errors"]["read"] + p["errors"]["write"]
            lines.append(f"| {run['name']} | {p['concurrency']} | {p['throughput']:,.0f} | {p['p50_ms']:.2f} "
                         f"| {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['requests'] - p['ok']} | {sockets} "
                         f"| {p['server_cpu_ms_per_request']:.2f} | {p['client_cpu_utilization']:.0%} |")
    return lines


def _limit_lines(limits: dict) -> list[str]:
    return [f"- ONNX Runtime in-process, {name}: **{limit['texts_per_s']:,.0f} texts/s** ({limit_name(limit)}), one text "
            f"{limit['single_text_p50_ms']:.2f} ms, {limit['cpu_ms_per_text']:.2f} ms CPU per text"
            for name, limit in limits.items()]


def _config_lines(runs: list[dict]) -> list[str]:
    return [f"- **{run['name']}**: " + "; ".join(f"{k}: {v}" for k, v in run["config"].items())
            + f"; `POST {run['route']}` with `{_json(run['request_body'])}`" for run in runs]


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(", ", ": "))


def write_markdown(results: dict, path: Path) -> Path:
    s = results["settings"]
    package = results["package"]
    lines = [
        "# encoder-serve against other serving stacks (`make bench-peers`)", "",
        f"Measured {machine_line(results)}.", "",
        *busy_warning(results),
        *([f"**Smoke run ({s['duration_s']} s per point): short and noisy, not a result.**", ""]
          if s["quick"] else []),
        (f"Package `{package['ref']}` ({package['size']}), `{package['file']}` ({package['precision']}) in every "
         f"contender; peers as model processes x ONNX Runtime threads: {', '.join(s.get('peer_shapes', []))}. "
         "Closed-loop wrk, one text per request "
         f"from the emotion test split, {s['duration_s']} s per point after {s['warmup_s']} s of warm-up; "
         "only 2xx responses count."), "",
        *[f"**Not measured: {m['contender']}** ({m['stage']}): {m['reason'][-400:]}" for m in
          results.get("not_measured", [])],
        *([""] if results.get("not_measured") else []),
        "## Goals", "",
        "| goal | target | measured | result | detail |", "| --- | --- | --- | --- | --- |",
        *[f"| {g['goal']} | {g['target']} | {_measured(g)} | {VERDICT[g['pass']]} | {g['detail']} |"
          for g in results["goals"]], "",
        "## Over HTTP", "", *runs_table(results["runs"]), "",
        "The in-process limit (no HTTP; tokenization included):", "", *_limit_lines(results["limits"]), "",
        "## Contenders", "", *_config_lines(results["runs"]), "",
        "![throughput against latency](throughput_latency.png)", "",
    ]
    path.write_text("\n".join(lines))
    return path


def plot(results: dict, path: Path) -> Path:
    """Throughput (x, from 0) against p50 and p99 latency (y, log) per contender; a colour per stack, a
    line style per shape of a peer (processes x threads), a marker shape per number of clients, the legends
    outside the axes; no text on the data."""
    marker = concurrency_markers(results["runs"])
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    xmax = max([p["throughput"] for run in results["runs"] for p in run["points"]]
               + [limit["texts_per_s"] for limit in results["limits"].values()] + [1.0])
    stacks = list(dict.fromkeys(run.get("stack", run["name"]) for run in results["runs"]))
    shapes: dict[str, list[str]] = {}  # a stack's shapes in order: solid line, then dashed, then dotted
    for run in results["runs"]:
        shapes.setdefault(run.get("stack", run["name"]), []).append(run["name"])
    handles = []
    for ax, key, title in ((axes[0], "p50_ms", "p50 latency"), (axes[1], "p99_ms", "p99 latency")):
        for run in results["runs"]:
            stack = run.get("stack", run["name"])
            colour = colours[stacks.index(stack) % len(colours)]
            style = ("-", "--", ":")[shapes[stack].index(run["name"]) % 3]
            points = sorted(run["points"], key=lambda p: p["concurrency"])
            xs, ys = [p["throughput"] for p in points], [p[key] for p in points]
            width = 2.4 if run["kind"] == "service" else 1.4
            ax.plot(xs, ys, color=colour, linestyle=style, linewidth=width,
                    zorder=3 if run["kind"] == "service" else 2)
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.scatter([x], [y], color=colour, marker=marker[p["concurrency"]], s=36, zorder=4,
                           edgecolors="white", linewidths=0.5)
            if ax is axes[0]:
                handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=width, label=run["name"]))
        for j, (name, limit) in enumerate(results["limits"].items()):
            style = ("--", ":")[j % 2]
            ax.axvline(limit["texts_per_s"], color="grey", linestyle=style, linewidth=1)
            if ax is axes[0]:
                handles.append(Line2D([], [], color="grey", linestyle=style, linewidth=1,
                                      label=f"ONNX Runtime in-process, {name}"))
        ax.set_xlim(0, xmax * 1.08)
        log_latency_axis(ax)
        ax.set_xlabel("throughput (requests/s, one text each; 2xx only)")
        ax.set_ylabel(f"{title} (ms, log scale)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    clients = clients_legend(marker)
    first = fig.legend(handles=handles, title="contender", loc="upper left", bbox_to_anchor=(0.80, 0.90),
                       fontsize=8, title_fontsize=8, frameon=False)
    fig.add_artist(first)
    fig.legend(handles=clients, title="closed-loop clients", loc="upper left", bbox_to_anchor=(0.80, 0.42),
               fontsize=8, title_fontsize=8, frameon=False)
    m, package = results["machine"], results["package"]
    fig.suptitle(f"{package['ref']} {package['precision']}, every contender on CPUs "
                 f"{','.join(map(str, m['server_cpus']))} (wrk on {','.join(map(str, m['client_cpus']))}), "
                 f"{m['date']}" + (" — smoke run" if results["settings"]["quick"] else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.79, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
