"""Every model variant we trained, side by side: accuracy against latency, size as the marker (issue 8).

    python -m benchmarks.pareto runs/teacher runs/student-* runs/table-* [--out benchmarks/results/pareto]

Each checkpoint is exported the way the service gets it (verified ONNX, static INT8 with scales
calibrated on 512 training texts, as `encoder-serve export` builds) and all of them are timed in one
run, in interleaved rounds, with the same thread count: test accuracy of the INT8 graph, latency p50 of
one text per call, throughput in batches of 32, size on disk. Every row carries the command that
reproduces its checkpoint, rebuilt from the training record in its config.json. Writes pareto.json,
pareto.md (the table) and pareto.png (frontier drawn, the 93% goal and 5x-the-teacher's-speed marked).
Exported graphs are cached under --work, keyed to the checkpoint's weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.workload import DEFAULT_DATA, REPO

BATCH = 32
LATENCY_TEXTS = 200
ACCURACY_GOAL = 93.0
SPEED_GOAL = 5.0
# training-record keys that are not `encoder-serve train` flags, or do not change the model
NOT_FLAGS = {"threads", "eval_batch_size", "grad_clip"}


@dataclass
class Variant:
    name: str
    checkpoint: str
    command: str
    params_m: float
    fp32_test_accuracy: float | None  # from the checkpoint's metrics.json (PyTorch)
    accuracy: float = 0.0  # INT8 static, ONNX Runtime, test split
    macro_f1: float = 0.0
    latency_p50_ms: float = 0.0
    cpu_ms_per_text: float = 0.0
    throughput_texts_per_s: float = 0.0
    size_mb: float = 0.0
    speedup_vs_teacher: float | None = None
    pareto: bool = False


def train_command(checkpoint: Path) -> str:
    """`encoder-serve train ...` that reproduces the checkpoint, from the record `train` wrote."""
    record = json.loads((checkpoint / "config.json").read_text())["training"]
    args = ["encoder-serve", "train", "--data", record["data"], "--out", str(checkpoint)]
    for column, default in (("text_column", "text"), ("label_column", "label")):
        if record.get(column, default) != default:
            args.append(f"--{column.replace('_', '-')}={record[column]}")
    model = record["model"]
    if model.get("pretrained"):
        args += ["--pretrained", model["pretrained"], "--max-length", str(model["max_length"])]
    else:
        args += [f"--{k.replace('_', '-')}={v}" for k, v in model.items() if k != "pretrained" and v is not None]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in record["train"].items()
             if k not in NOT_FLAGS and (record.get("teacher") or k not in ("temperature", "alpha"))]
    if record.get("teacher"):
        args += ["--teacher", record["teacher"], f"--augment={record.get('augment', 0)}"]
    return shlex.join(args)


def weights_digest(checkpoint: Path) -> str:
    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()[:16]


def int8_graph(checkpoint: Path, work: Path, calibration: list[str]) -> Path:
    """Static INT8 graph of `checkpoint` (exported, verified by the exporter), cached by weights."""
    from encoder_serve.export import onnx_export, quantize
    from encoder_serve.model.checkpoint import load_checkpoint

    out = work / f"{checkpoint.name}-{weights_digest(checkpoint)}"
    int8 = out / "int8.onnx"
    if not int8.is_file():
        out.mkdir(parents=True, exist_ok=True)
        model, tokenizer, _ = load_checkpoint(checkpoint)
        exported = onnx_export.export_onnx(model, out / "exported.onnx")
        quantize.quantize_static_int8(exported, int8, tokenizer, calibration)
    return int8


def measure(variants: list[Variant], graphs: list[Path], datas: list, threads: int, rounds: int) -> None:
    """Fill in each variant's numbers (`datas`: each one's EvalData); rounds interleave the variants so load
    falls on all alike."""
    from encoder_serve.export import runtime
    from encoder_serve.export.bench import timed
    from encoder_serve.model.evaluation import classification_report
    from encoder_serve.tokenization import encode, load_tokenizer

    prepared = []
    for variant, graph, data in zip(variants, graphs, datas):
        config = json.loads((Path(variant.checkpoint) / "config.json").read_text())["encoder"]
        tokenizer = load_tokenizer(Path(variant.checkpoint) / "tokenizer.json", config["max_length"])
        texts = data.test.texts
        batches = [encode(tokenizer, texts[i: i + BATCH]) for i in range(0, len(texts), BATCH)]
        single = [encode(tokenizer, [t]) for t in texts[:LATENCY_TEXTS]]
        sess = runtime.session(graph, threads)

        def predict(ids, mask, sess=sess):
            return runtime.run(sess, ids, mask)

        prepared.append((predict, batches, single, data.test.labels, config["labels"]))
    singles = [[] for _ in variants]
    best_batch_s = [float("inf")] * len(variants)
    predicted = [None] * len(variants)
    for _ in range(rounds):
        for i, (predict, batches, single, _, _) in enumerate(prepared):
            for ids, mask in single[:20]:  # warm-up
                predict(ids, mask)
            singles[i] += [timed(predict, ids, mask)[1:] for ids, mask in single]
            runs = [timed(predict, ids, mask) for ids, mask in batches]
            best_batch_s[i] = min(best_batch_s[i], sum(r[1] for r in runs))
            predicted[i] = np.concatenate([out.argmax(-1) for out, _, _ in runs])
    for i, (variant, graph) in enumerate(zip(variants, graphs)):
        _, _, _, labels, label_names = prepared[i]
        report = classification_report(labels, predicted[i], label_names)
        times = np.array(singles[i])
        variant.accuracy = 100 * report["accuracy"]
        variant.macro_f1 = 100 * report["macro_f1"]
        variant.latency_p50_ms = float(np.percentile(times[:, 0], 50) * 1000)
        variant.cpu_ms_per_text = float(np.median(times[:, 1]) * 1000)
        variant.throughput_texts_per_s = len(labels) / best_batch_s[i]
        variant.size_mb = graph.stat().st_size / 1e6


def mark_frontier(variants: list[Variant]) -> None:
    """A variant is on the frontier when no other is both at least as fast and at least as accurate."""
    for v in variants:
        v.pareto = not any(o is not v and o.latency_p50_ms <= v.latency_p50_ms and o.accuracy >= v.accuracy
                           and (o.latency_p50_ms, o.accuracy) != (v.latency_p50_ms, v.accuracy)
                           for o in variants)


def table(variants: list[Variant], shipped: str | None) -> str:
    lines = [("| variant | params | test acc. PyTorch fp32 | test acc. ORT INT8 | macro-F1 | p50 ms (1 text) "
             "| texts/s (batch 32) | vs teacher | MB (INT8) | frontier |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for v in sorted(variants, key=lambda v: -v.accuracy):
        name = f"**{v.name}** (shipped)" if v.name == shipped else v.name
        fp32 = "–" if v.fp32_test_accuracy is None else f"{v.fp32_test_accuracy:.2f}%"
        speed = "–" if v.speedup_vs_teacher is None else f"{v.speedup_vs_teacher:.1f}x"
        lines.append(f"| {name} | {v.params_m:.1f} M | {fp32} | {v.accuracy:.2f}% | {v.macro_f1:.1f} | "
                     f"{v.latency_p50_ms:.2f} | {v.throughput_texts_per_s:,.0f} | {speed} | {v.size_mb:.1f} | "
                     f"{'yes' if v.pareto else ''} |")
    lines += ["", ("Commands that reproduce each checkpoint (then `encoder-serve export CHECKPOINT PACKAGE "
              "--data ../shared/data/emotion` for its package):"), ""]
    lines += [f"- {v.name}: `{v.command}`" for v in sorted(variants, key=lambda v: -v.accuracy)]
    return "\n".join(lines) + "\n"


def plot(variants: list[Variant], teacher: Variant | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for v in variants:
        ax.scatter(v.latency_p50_ms, v.accuracy, s=12 * v.size_mb + 15, alpha=0.55,
                   color="tab:red" if v.pareto else "tab:blue", edgecolors="black", linewidths=0.5)
        ax.annotate(v.name, (v.latency_p50_ms, v.accuracy), fontsize=7, xytext=(5, 3), textcoords="offset points")
    frontier = sorted((v for v in variants if v.pareto), key=lambda v: v.latency_p50_ms)
    ax.plot([v.latency_p50_ms for v in frontier], [v.accuracy for v in frontier], color="tab:red", lw=1,
            label="Pareto frontier")
    ax.axhline(ACCURACY_GOAL, color="gray", ls="--", lw=1, label=f"goal: {ACCURACY_GOAL:g}% test accuracy")
    ax.set_ylim(top=max(ACCURACY_GOAL, *(v.accuracy for v in variants)) + 0.4)
    if teacher is not None:
        ax.axvline(teacher.latency_p50_ms / SPEED_GOAL, color="gray", ls=":", lw=1,
                   label=f"teacher latency / {SPEED_GOAL:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("latency p50, one text per call, ONNX Runtime INT8 (ms, log scale)")
    ax.set_ylabel("test accuracy, INT8 (%)")
    ax.set_title(title + "\nmarker area: INT8 graph size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories (encoder-serve train)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pareto")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "pareto", help="cache of exported graphs")
    parser.add_argument("--teacher", default="teacher", help="the variant the speed-ups are relative to")
    parser.add_argument("--shipped", type=Path, default=REPO / "models" / "emotion",
                        help="the shipped package: its source checkpoint is marked in the table")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from safetensors import safe_open

    from encoder_serve.export.bench import machine
    from encoder_serve.export.build import data_options, load_eval_data

    torch.set_num_threads(args.threads)
    checkpoints = [c for c in args.checkpoints if (c / "model.safetensors").is_file() and (c / "config.json").is_file()]
    variants, graphs, datas = [], [], []
    for checkpoint in checkpoints:
        config = json.loads((checkpoint / "config.json").read_text())
        if "training" not in config:
            print(f"skipping {checkpoint}: no training record")
            continue
        metrics_file = checkpoint / "metrics.json"
        fp32 = json.loads(metrics_file.read_text()).get("test", {}).get("accuracy") if metrics_file.is_file() else None
        with safe_open(str(checkpoint / "model.safetensors"), "np") as f:
            params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118 (not a dict)
        data = load_eval_data(args.data, config["encoder"]["labels"], calibration_size=512,
                              **data_options(checkpoint))
        print(f"exporting {checkpoint} ...", flush=True)
        graphs.append(int8_graph(checkpoint, args.work, data.calibration))
        datas.append(data)
        variants.append(Variant(checkpoint.name, str(checkpoint), train_command(checkpoint), params / 1e6,
                                None if fp32 is None else 100 * fp32))
    print(f"timing {len(variants)} variants, {args.rounds} interleaved rounds, {args.threads} thread(s) ...", flush=True)
    measure(variants, graphs, datas, args.threads, args.rounds)
    teacher = next((v for v in variants if v.name == args.teacher), None)
    if teacher is not None:
        for v in variants:
            v.speedup_vs_teacher = v.throughput_texts_per_s / teacher.throughput_texts_per_s
    mark_frontier(variants)
    shipped = None
    manifest = args.shipped / "manifest.json"
    if manifest.is_file():
        source = json.loads(manifest.read_text()).get("source", {}).get("checkpoint")
        shipped = Path(source).name if source else None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(args.threads), "rounds": args.rounds, "batch": BATCH,
              "latency_texts": LATENCY_TEXTS, "teacher": args.teacher, "shipped": shipped,
              "variants": [asdict(v) for v in variants]}
    (args.out / "pareto.json").write_text(json.dumps(report, indent=2) + "\n")
    md = table(variants, shipped)
    (args.out / "pareto.md").write_text(md)
    plot(variants, teacher, args.out / "pareto.png",
         f"emotion test split, {args.threads} thread(s), {report['machine']['date'][:10]}")
    print(md)
    print(f"wrote {args.out}/pareto.json, pareto.md, pareto.png")


if __name__ == "__main__":
    main()
