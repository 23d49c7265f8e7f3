"""`python -m benchmarks.run` (= `make bench`): every contender measured side by side in one run.

1. The limit: ONNX Runtime in-process on the server cores, per precision, at every batch size, with
   batches in arrival order and grouped by length, with one intra-op thread per server core.
2. Over HTTP, closed-loop wrk clients at each concurrency: encoder-serve as `make serve` runs it (its
   default settings: MODEL_THREADS batches at once on one ONNX Runtime thread each), per precision, with one
   text per request and with 8; encoder-serve with batching off (MAX_BATCH_SIZE=1); the naive baseline
   (FastAPI + PyTorch, one thread per server core).
3. The goals and comparisons (benchmarks.goals) from those numbers; results.json, results.md and
   throughput_latency.png.

The default run takes about 12 minutes; --quick is a 1-2 minute smoke run written to results/quick/.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import goals, report
from benchmarks.loadgen import measure_point, mode_from_args
from benchmarks.machine import CoreSplit, add_core_arguments, describe, taskset
from benchmarks.servers import Contender, serve
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, write_bodies
from encoder_serve.package import ModelPackage, PackageError, load_package

FULL = {"concurrency": (1, 8, 32, 64, 128, 256), "duration_s": 10, "warmup_s": 2, "limit_s": 2.0}
QUICK = {"concurrency": (1, 8, 64), "duration_s": 2, "warmup_s": 1, "limit_s": 0.3}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def servable_precisions(package: ModelPackage) -> tuple[list[str], list[str]]:
    """(precisions the service will serve, reasons for the others), by the service's own rule."""
    from encoder_serve.service.backend import choose_precision

    served, skipped = [], []
    for precision in ("fp32", "int8"):
        try:
            served.append(choose_precision(package, precision))
        except PackageError as e:
            skipped.append(f"{precision}: {e}")
    return served, skipped


def naive_checkpoint(package: ModelPackage, explicit: str | None) -> Path:
    """The PyTorch checkpoint the package was exported from: --checkpoint, else the manifest's source."""
    path = Path(explicit or (package.manifest.get("source") or {}).get("checkpoint") or "")
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"naive baseline needs the package's PyTorch checkpoint; {path or 'none'} has no "
                                "model.safetensors (pass --checkpoint)")
    config = json.loads((path / "config.json").read_text())["encoder"]
    if config != package.manifest.get("encoder", config):
        raise ValueError(f"checkpoint {path} is not the model of package {package.path} (encoder configs differ)")
    return path


def measure_limit(package: ModelPackage, precision: str, split: CoreSplit, seconds: float, data: str,
                  threads: int | None = None) -> dict:
    argv = taskset(split.server, [sys.executable, "-m", "benchmarks.inprocess", "--package", str(package.path),
                                  "--precision", precision, "--threads", str(threads or split.threads),
                                  "--seconds", str(seconds), "--data", data])
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"in-process limit for {precision} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def levels(concurrency: tuple[int, ...], texts_per_request: int) -> list[int]:
    """The concurrency levels to measure: with several texts per request, only those whose texts in flight
    stay within half the service's default queue (1,024), so the point measures throughput, not 429s."""
    if texts_per_request == 1:
        return list(concurrency)
    return [c for c in concurrency if c * texts_per_request <= 512] or [min(concurrency)]


def contenders(package: ModelPackage, precisions: list[str], checkpoint: Path | None, threads: int,
               batching_off: list[str], texts_per_request: int = 0) -> list[Contender]:
    # the service's own defaults, as `make serve` runs it: its threads, and LOG_LEVEL=info, an access line
    # per request (written to the contender's log file under logs/)
    base = {"MODEL_DIR": str(package.path), "WORKERS": "", "LOG_LEVEL": "info", "API_KEY": "",
            "MODEL_THREADS": "", "ORT_INTRA_OP_THREADS": ""}
    out = []
    for precision in precisions:
        env = {**base, "PRECISION": precision}
        out.append(Contender(f"encoder-serve {precision}", "encoder_serve.service", env, precision))
        if precision in batching_off:
            out.append(Contender(f"encoder-serve {precision}, batching off", "encoder_serve.service",
                                 {**env, "MAX_BATCH_SIZE": "1"}, precision, batching=False))
        if texts_per_request > 1:
            out.append(Contender(f"encoder-serve {precision}, {texts_per_request} texts/request",
                                 "encoder_serve.service", env, precision, kind="service-multi",
                                 texts_per_request=texts_per_request))
    if checkpoint is not None:
        out.append(Contender("naive FastAPI + PyTorch", "benchmarks.naive_app",
                             {"CHECKPOINT_DIR": str(checkpoint), "TORCH_THREADS": str(threads)},
                             "fp32", batching=False, kind="naive"))
    return out


def package_summary(package: ModelPackage) -> dict:
    enc = package.manifest.get("encoder", {})
    size_mb = package.model_path("fp32").stat().st_size / 1e6
    return {"path": str(package.path), "ref": package.ref, "encoder": enc,
            "size": f"{enc.get('n_layers')} layers, d_model {enc.get('d_model')}, "
                    f"fp32 ONNX {size_mb:.1f} MB"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"), help="model package directory")
    parser.add_argument("--checkpoint", help="PyTorch checkpoint for the naive baseline "
                                             "(default: the package manifest's source checkpoint)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="emotion data directory (test.jsonl)")
    parser.add_argument("--out", help="results directory (default benchmarks/results, or .../quick)")
    parser.add_argument("--quick", action="store_true", help="1-2 minute smoke run")
    parser.add_argument("--concurrency", help="comma-separated client counts")
    parser.add_argument("--duration", type=int, help="seconds per measured point")
    parser.add_argument("--precisions", help="comma-separated subset of fp32,int8 (default: all servable)")
    parser.add_argument("--batching-off", default="fp32,int8",
                        help="precisions also measured with MAX_BATCH_SIZE=1 (default: all)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--texts-per-request", type=int, default=goals.MULTI_TEXTS,
                        help="also measure every precision with this many texts per request (a goal at 8; "
                             "0: skip)")
    add_core_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("benchmarks.run: error: wrk not found (apt-get install wrk)")
        return 2
    mode = mode_from_args(args, QUICK, FULL)
    split = CoreSplit.from_args(args)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    package = load_package(args.package)
    precisions, skipped = servable_precisions(package)
    if args.precisions:
        precisions = [p for p in precisions if p in args.precisions.split(",")]
    checkpoint = None
    if not args.no_naive:
        try:
            checkpoint = naive_checkpoint(package, args.checkpoint)
        except (FileNotFoundError, ValueError) as e:
            skipped.append(f"naive baseline: {e}")
    results = {"machine": describe(split), "package": package_summary(package),
               "settings": {**mode, "quick": args.quick, "threads": split.threads,
                            "loadgen": "wrk, closed loop, one text per request unless the contender says otherwise "
                                       "(benchmarks/wrk_rotate.lua)"},
               "limits": {}, "runs": [], "skipped": skipped}
    log(f"machine: {report.machine_line(results)}")
    for why in skipped:
        log(f"skipped: {why}")

    for precision in precisions:
        limit = measure_limit(package, precision, split, mode["limit_s"], args.data)
        results["limits"][precision] = limit
        log(f"limit {precision}: {limit['texts_per_s']:,.0f} texts/s ({goals.limit_name(limit)}), "
            f"single text {limit['single_text_p50_ms']:.2f} ms")

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        texts = load_texts(args.data)
        for contender in contenders(package, precisions, checkpoint, split.threads,
                                    args.batching_off.split(","), args.texts_per_request):
            bodies = write_bodies(texts, Path(tmp) / f"bodies-{contender.texts_per_request}.txt",
                                  contender.texts_per_request)
            run = {"name": contender.name, "kind": contender.kind, "precision": contender.precision,
                   "batching": contender.batching, "texts_per_request": contender.texts_per_request,
                   "env": contender.env, "points": []}
            try:
                with serve(contender, split.server, logs / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', contender.name)}.log") as s:
                    for c in levels(mode["concurrency"], contender.texts_per_request):
                        point = measure_point(s.url, s.pid, bodies, c, mode["duration_s"], mode["warmup_s"],
                                              split.client, split.server, contender.texts_per_request)
                        run["points"].append(point.as_dict())
                        log(f"{contender.name:36} c={c:<4} {point.throughput:8,.0f} texts/s  p50 "
                            f"{point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms  errors "
                            f"{point.requests - point.ok}  client CPU {point.client_cpu_utilization:.0%}")
            except (RuntimeError, TimeoutError) as e:
                failed = True
                results["skipped"].append(f"{contender.name}: {e}")
                log(f"{contender.name} failed: {e}")
            if run["points"]:
                results["runs"].append(run)

    results["goals"] = goals.evaluate(results["limits"], results["runs"])
    results["comparisons"] = goals.comparisons(results["limits"], results["runs"])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write_markdown(results, out / "results.md")
    report.plot(results, out / "throughput_latency.png")
    for g in results["goals"]:
        log(f"goal {g['precision']} {g['goal']:10} {report.VERDICT[g['pass']]:14} {g['detail']}")
    log(f"wrote {out / 'results.json'}, results.md, throughput_latency.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
