"""The model benchmark (in the spirit of *NLP with Transformers*, ch. 8): one package, every engine.

For the source checkpoint in PyTorch and each ONNX Runtime variant of it, measured in one run with one
fixed thread count: test accuracy and macro-F1, latency p50/p95 for one text at a time, throughput in
batches of 32, and size on disk. Inputs are tokenized beforehand, so the numbers are the model's alone
(the service adds tokenization and HTTP on top). Results: a printed table, bench-model.json and a
scatter of latency against accuracy, marker area proportional to size (bench-model.png).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from encoder_serve import onnx_runtime
from encoder_serve.export import onnx_export, quantize
from encoder_serve.export.build import data_options, library_versions, load_eval_data
from encoder_serve.model.checkpoint import load_checkpoint
from encoder_serve.model.evaluation import classification_report
from encoder_serve.package import load_package
from encoder_serve.tokenization import encode, load_tokenizer

BATCH = 32
LATENCY_TEXTS = 200
WARMUP = 20
ROUNDS = 3

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Result:
    engine: str
    accuracy: float
    macro_f1: float
    latency_p50_ms: float  # wall clock, one text per call
    latency_p95_ms: float
    cpu_ms_per_text: float  # median process CPU time of one single-text call
    throughput_texts_per_s: float  # wall clock, batches of 32
    throughput_texts_per_cpu_s: float  # texts per second of process CPU time, batches of 32
    size_mb: float


def timed(predict: Predict, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(logits, wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = predict(ids, mask)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def measure(engines: list, batches: list, single: list, labels: np.ndarray, label_names: list[str],
            rounds: int = ROUNDS) -> list[Result]:
    """Time every engine in interleaved rounds, so load from other processes falls on all of them alike.

    Wall clock is what a user sees; CPU time is what the model costs, and stays meaningful when other
    processes share the cores (wall-clock tails then measure the scheduler, not the model). Latencies pool
    every round; throughput takes each engine's best round, as timeit does.
    """
    single_times = {name: [] for name, _, _ in engines}
    batch_times = {name: [] for name, _, _ in engines}
    predicted = {}
    for round_ in range(rounds):
        for name, predict, _ in engines:
            if round_ == 0:
                for ids, mask in single[:WARMUP]:
                    predict(ids, mask)
            single_times[name] += [timed(predict, ids, mask)[1:] for ids, mask in single]
            runs = [timed(predict, ids, mask) for ids, mask in batches]
            batch_times[name].append((sum(r[1] for r in runs), sum(r[2] for r in runs)))
            predicted[name] = np.concatenate([out.argmax(-1) for out, _, _ in runs])
    results = []
    for name, _, size_bytes in engines:
        report = classification_report(labels, predicted[name], label_names)
        times = np.array(single_times[name])
        p50, p95 = np.percentile(times[:, 0], [50, 95]) * 1000
        wall, cpu = np.array(batch_times[name]).min(axis=0)
        results.append(Result(name, report["accuracy"], report["macro_f1"], float(p50), float(p95),
                              float(np.median(times[:, 1]) * 1000), len(labels) / wall,
                              len(labels) / max(cpu, 1e-9), size_bytes / 1e6))
    return results


def onnx_engine(path: Path, threads: int, optimize: bool = True) -> Predict:
    sess = onnx_runtime.session(path, threads, optimize=optimize)
    return lambda ids, mask: onnx_runtime.run(sess, ids, mask)


def torch_engine(model) -> Predict:
    @torch.no_grad()
    def predict(ids, mask):
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return predict


def engines(package, checkpoint_dir: Path, work: Path, calibration: list[str], tokenizer, threads: int):
    """(name, predict, size in bytes) for every engine, building the graphs the package does not keep."""
    model, _, _ = load_checkpoint(checkpoint_dir)
    exported = onnx_export.export_onnx(model, work / "exported.onnx")
    fp32 = package.model_path("fp32")
    int8 = {"static": work / "static.onnx", "dynamic": work / "dynamic.onnx"}
    quantize.quantize_static_int8(exported, int8["static"], tokenizer, calibration)
    quantize.quantize_dynamic_int8(fp32, int8["dynamic"])
    return [
        ("PyTorch fp32", torch_engine(model), (checkpoint_dir / "model.safetensors").stat().st_size),
        ("ORT fp32, as exported, no graph opt.", onnx_engine(exported, threads, optimize=False),
         exported.stat().st_size),
        ("ORT fp32, as exported", onnx_engine(exported, threads), exported.stat().st_size),
        ("ORT fp32, fused (model.onnx)", onnx_engine(fp32, threads), fp32.stat().st_size),
        ("ORT INT8 static", onnx_engine(int8["static"], threads), int8["static"].stat().st_size),
        ("ORT INT8 dynamic", onnx_engine(int8["dynamic"], threads), int8["dynamic"].stat().st_size),
    ]


def machine(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "threads": threads,
            "load_average": os.getloadavg(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "libraries": library_versions()}


def table(results: list[Result]) -> str:
    rows = [("| engine | test accuracy | macro-F1 | p50 ms | p95 ms | CPU ms/text | texts/s (batch 32) "
            "| texts per CPU-s (batch 32) | MB |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows += [f"| {r.engine} | {100 * r.accuracy:.2f}% | {100 * r.macro_f1:.1f} | {r.latency_p50_ms:.2f} | "
             f"{r.latency_p95_ms:.2f} | {r.cpu_ms_per_text:.2f} | {r.throughput_texts_per_s:,.0f} | "
             f"{r.throughput_texts_per_cpu_s:,.0f} | {r.size_mb:.1f} |" for r in results]
    return "\n".join(rows)


def plot(results: list[Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        ax.scatter(r.latency_p50_ms, 100 * r.accuracy, s=40 * r.size_mb + 20, alpha=0.5)
        ax.annotate(r.engine, (r.latency_p50_ms, 100 * r.accuracy), fontsize=8, xytext=(6, 4),
                    textcoords="offset points")
    ax.set_xlabel("latency p50, one text (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_model(package_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                checkpoint_dir: str | Path | None = None, threads: int = 1,
                latency_texts: int = LATENCY_TEXTS, rounds: int = ROUNDS, text_column: str | None = None,
                label_column: str | None = None) -> list[Result]:
    """Benchmark every engine on the test split of `data_dir`; writes JSON and PNG to `out_dir`."""
    package = load_package(package_dir)
    checkpoint_dir = Path(checkpoint_dir or package.manifest["source"]["checkpoint"])
    data = load_eval_data(data_dir, package.labels, calibration_size=512,
                          **data_options(checkpoint_dir, text_column, label_column))
    if data.test is None:
        raise FileNotFoundError(f"{data_dir}: bench-model needs a test split")
    tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
    texts = data.test.texts
    batches = [encode(tokenizer, texts[i: i + BATCH]) for i in range(0, len(texts), BATCH)]
    single = [encode(tokenizer, [t]) for t in texts[:latency_texts]]
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        results = measure(engines(package, checkpoint_dir, Path(work), data.calibration, tokenizer, threads),
                          batches, single, data.test.labels, package.labels, rounds)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": package.ref, "package": str(Path(package_dir).resolve()), "test_texts": len(texts),
              "batch": BATCH, "latency_texts": len(single), "rounds": rounds, "machine": machine(threads),
              "results": [asdict(r) for r in results]}
    (out_dir / "bench-model.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, out_dir / "bench-model.png", f"{package.ref}, {threads} thread(s)")
    print(table(results))
    return results
