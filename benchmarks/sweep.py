"""`python -m benchmarks.sweep`: one service setting tried at several values, interleaved, on the whole machine.

    python -m benchmarks.sweep MAX_PADDING_RATIO=0.05,0.1,0.2 --concurrency 64,256 --rounds 2

Each round starts the service once per value (its defaults otherwise, as `make bench` runs it) and
measures every concurrency with wrk (with several texts per request, only the client counts whose texts
in flight stay within half the queue, as in `make bench`); rounds repeat the values, so that a host that
gets busier or quieter during the run moves every value alike, each round in the order opposite to the
round before (the value measured second in a round had measured faster at one client, whatever it was).
Besides throughput and latency it reads the service's own /metrics around each point: mean texts per
model call and mean padding ratio over the point and its warm-up, which is what batch settings change;
and the share of answers that were not 2xx (what a refusing setting costs). Writes `sweep-<NAME>.json`
and `.md` under benchmarks/results/sweeps/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks import report
from benchmarks.loadgen import measure_point
from benchmarks.machine import CoreSplit, add_core_arguments, describe
from benchmarks.run import contenders, levels
from benchmarks.servers import serve
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies
from encoder_serve.package import load_package

HISTOGRAMS = ("encoder_serve_batch_size", "encoder_serve_padding_ratio")  # their means over a point (warm-up too)


def histogram_totals(url: str, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """(sum, count) of unlabelled histograms, from the service's /metrics."""
    samples = {s.name: s.value for family in text_string_to_metric_families(
        urllib.request.urlopen(url + "/metrics").read().decode()) for s in family.samples}
    return {name: (samples.get(name + "_sum", 0.0), samples.get(name + "_count", 0.0)) for name in names}


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float:
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count else 0.0


def refused_share(rows: list[dict]) -> float:
    """Answers that were not 2xx (429s, for a setting that refuses), over every round of a point."""
    return sum(r["errors"]["status"] for r in rows) / max(1, sum(r["requests"] for r in rows))


def round_order(values: list[str], round_: int) -> list[str]:
    """The values as given in even rounds, reversed in odd ones."""
    return values if round_ % 2 == 0 else values[::-1]


def p50(rows: list[dict]) -> str:
    """The median over rounds of each round's median latency, and their range."""
    values = [r["p50_ms"] for r in rows]
    digits = 2 if max(values) < 10 else 0
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def markdown(results: dict) -> str:
    """One row per request shape, client count and value (values side by side), medians over the rounds."""
    lines = [f"# {results['setting']}: {', '.join(results['values'])}", "",
             f"Measured {report.machine_line(results)}.", "",
             (f"`{results['command']}`: {results['precision']}, {results['rounds']} interleaved rounds (each in the "
              f"order opposite to the one before), "
             f"{results['duration_s']} s per point; the median over rounds, the rounds' range in brackets."), "",
             ("| texts/request | clients | value | texts/s | p50 ms | p99 ms | refused (non-2xx) | CPU ms/text "
              "| mean batch | mean padding |"),
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = results["rows"]
    shapes = sorted({(r["texts_per_request"], r["concurrency"]) for r in rows})
    for tpr, c in shapes:
        for value in results["values"]:
            same = [r for r in rows if (r["texts_per_request"], r["concurrency"], r["value"]) == (tpr, c, value)]
            if not same:
                continue
            rate = [r["throughput"] for r in same]
            lines.append(f"| {tpr} | {c} | {value} | {statistics.median(rate):,.0f} "
                         f"[{min(rate):,.0f}–{max(rate):,.0f}] "
                         f"| {p50(same)} "
                         f"| {statistics.median(r['p99_ms'] for r in same):.0f} "
                         f"| {refused_share(same):.1%} "
                         f"| {statistics.median(r['server_cpu_ms_per_request'] for r in same):.3f} "
                         f"| {statistics.median(r['mean_batch'] for r in same):.1f} "
                         f"| {statistics.median(r['mean_padding'] for r in same):.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("setting", help="NAME=V1,V2,... (a service environment variable and its values)")
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--texts-per-request", default="1", help="comma-separated, e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per point, after 2 s of warm-up")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweeps"))
    add_core_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name, _, values = args.setting.partition("=")
    if not name or not values:
        print("benchmarks.sweep: error: the setting is NAME=V1,V2,...", file=sys.stderr)
        return 2
    split = CoreSplit.from_args(args)
    package = load_package(args.package)
    service = next(c for c in contenders(package, [args.precision], None, split.threads, [])
                   if c.kind == "service")
    texts = load_texts(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for value in round_order(values.split(","), round_):
                service.env = {**service.env, name: value}
                with serve(service, split.server, Path(tmp) / "server.log") as s:
                    for tpr in (int(t) for t in args.texts_per_request.split(",")):
                        bodies = write_bodies(texts, Path(tmp) / f"bodies-{tpr}.txt", tpr)
                        for c in levels(tuple(int(c) for c in args.concurrency.split(",")), tpr):
                            before = histogram_totals(s.url, HISTOGRAMS)
                            point = measure_point(s.url, s.pid, bodies, c, args.duration, 2, split.client,
                                                  split.server, tpr)
                            after = histogram_totals(s.url, HISTOGRAMS)
                            batch, padding = (mean_between(before[h], after[h]) for h in HISTOGRAMS)
                            row = {"round": round_, "value": value, "texts_per_request": tpr, **point.as_dict(),
                                   "mean_batch": batch, "mean_padding": padding}
                            rows.append(row)
                            print(f"round {round_} {name}={value:8} {tpr} text(s)/request c={c:<4} "
                                  f"{point.throughput:7,.0f} texts/s  p50 {point.p50_ms:7.2f} ms  p99 "
                                  f"{point.p99_ms:7.2f} ms  CPU {point.server_cpu_ms_per_request:.3f} ms/text  "
                                  f"mean batch {row['mean_batch']:.1f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": describe(split), "setting": name, "values": values.split(","), "precision": args.precision,
               "rounds": args.rounds, "duration_s": args.duration,
               "command": f"python -m benchmarks.sweep {args.setting} --concurrency {args.concurrency} "
                          f"--texts-per-request {args.texts_per_request} --rounds {args.rounds}"
                          + (f" --duration {args.duration}" if args.duration != 10 else ""), "rows": rows}
    (out / f"sweep-{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"sweep-{name}.md").write_text(markdown(results))
    print(f"wrote {out / f'sweep-{name}.json'}, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
