"""Every model variant we trained, side by side: accuracy against latency, size as the marker.

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
import re
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


DISTILLATION_KEYS = ("temperature", "alpha", "attention_distill", "hidden_distill")


@dataclass
class Recipe:
    """Checkpoints trained by the same command but for the seed: mean and spread of their numbers."""

    name: str
    variants: list[str]
    seeds: list[int]
    accuracy_mean: float  # INT8 test accuracy, %
    accuracy_std: float  # sample standard deviation over seeds (0 for one seed)
    accuracy_min: float
    accuracy_max: float
    fp32_mean: float | None
    macro_f1_mean: float
    latency_p50_ms: float
    throughput_texts_per_s: float
    speedup_vs_teacher: float | None
    size_mb: float
    command: str  # with SEED in place of the seed


def flags(options: dict) -> list[str]:
    """--key=value for each recorded option; booleans as bare flags (only when set), None left out."""
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append(f"--{key.replace('_', '-')}" if value is True else f"--{key.replace('_', '-')}={value}")
    return out


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
        args += ["--pooler"] if model.get("pooler") else []
    else:
        args += flags({k: v for k, v in model.items() if k != "pretrained"})
    teachers = record.get("teachers") or ([record["teacher"]] if record.get("teacher") else [])
    args += flags({k: v for k, v in record["train"].items() if k not in NOT_FLAGS
                   and (teachers or k not in DISTILLATION_KEYS) and not (k in DISTILLATION_KEYS[2:] and not v)})
    for teacher in teachers:
        args += ["--teacher", teacher]
    if teachers:
        args.append(f"--augment={record.get('augment', 0)}")
        kinds = record.get("augment_kinds")
        if kinds and record.get("augment") and list(kinds) != ["dropout", "shuffle", "mix"]:
            args.append(f"--augment-kinds={','.join(kinds)}")
        if record.get("augment") and record.get("augment_seed") is not None:
            args.append(f"--augment-seed={record['augment_seed']}")
    return shlex.join(args)


def recipe_of(command: str) -> str:
    """The command without --out and --seed: checkpoints that share it differ only by their seed."""
    argv = shlex.split(command)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--out", "--seed"):
            skip = True
            continue
        if arg.startswith("--seed="):
            continue
        kept.append(arg)
    return shlex.join(kept)


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
    from encoder_serve import onnx_runtime as runtime
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


def group_recipes(variants: list[Variant]) -> list[Recipe]:
    """Variants grouped by recipe_of(command), named after their checkpoints without a -sN seed suffix."""
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(recipe_of(v.command), []).append(v)
    out = []
    for members in groups.values():
        names = sorted({re.sub(r"-s\d+$", "", v.name) for v in members})
        seeds = [int(json.loads((Path(v.checkpoint) / "config.json").read_text())["training"]["train"]["seed"])
                 for v in members]
        accuracies = np.array([v.accuracy for v in members])
        fp32 = [v.fp32_test_accuracy for v in members if v.fp32_test_accuracy is not None]
        speedups = [v.speedup_vs_teacher for v in members if v.speedup_vs_teacher is not None]
        command = re.sub(r"--seed[= ]\d+", "--seed=SEED", re.sub(r"(--out) \S+", r"\1 " + (
            Path(members[0].checkpoint).parent / f"{names[0]}-sSEED").as_posix(), members[0].command)) \
            if len(members) > 1 else members[0].command
        out.append(Recipe(
            name=" / ".join(names), variants=[v.name for v in members], seeds=sorted(seeds),
            accuracy_mean=float(accuracies.mean()),
            accuracy_std=float(accuracies.std(ddof=1)) if len(members) > 1 else 0.0,
            accuracy_min=float(accuracies.min()), accuracy_max=float(accuracies.max()),
            fp32_mean=float(np.mean(fp32)) if fp32 else None,
            macro_f1_mean=float(np.mean([v.macro_f1 for v in members])),
            latency_p50_ms=float(np.mean([v.latency_p50_ms for v in members])),
            throughput_texts_per_s=float(np.mean([v.throughput_texts_per_s for v in members])),
            speedup_vs_teacher=float(np.mean(speedups)) if speedups else None,
            size_mb=float(np.mean([v.size_mb for v in members])), command=command))
    return sorted(out, key=lambda r: -r.accuracy_mean)


def mark_frontier(variants: list[Variant]) -> None:
    """A variant is on the frontier when no other is both at least as fast and at least as accurate."""
    for v in variants:
        v.pareto = not any(o is not v and o.latency_p50_ms <= v.latency_p50_ms and o.accuracy >= v.accuracy
                           and (o.latency_p50_ms, o.accuracy) != (v.latency_p50_ms, v.accuracy)
                           for o in variants)


def recipe_table(recipes: list[Recipe], shipped: str | None) -> str:
    lines = [("| recipe | seeds | test acc. ORT INT8: mean ± std (min–max) | PyTorch fp32 mean | macro-F1 mean "
             "| texts/s (batch 32) | vs teacher | MB (INT8) |"),
             "| --- | :---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in recipes:
        name = f"**{r.name}** (shipped)" if shipped in r.variants else r.name
        fp32 = "–" if r.fp32_mean is None else f"{r.fp32_mean:.2f}%"
        speed = "–" if r.speedup_vs_teacher is None else f"{r.speedup_vs_teacher:.2f}x"
        spread = f"{r.accuracy_mean:.2f}% ± {r.accuracy_std:.2f} ({r.accuracy_min:.2f}–{r.accuracy_max:.2f})" \
            if len(r.seeds) > 1 else f"{r.accuracy_mean:.2f}%"
        lines.append(f"| {name} | {', '.join(map(str, r.seeds))} | {spread} | {fp32} | {r.macro_f1_mean:.1f} | "
                     f"{r.throughput_texts_per_s:,.0f} | {speed} | {r.size_mb:.1f} |")
    return "\n".join(lines) + "\n"


def table(variants: list[Variant], shipped: str | None) -> str:
    lines = [("| variant | params | test acc. PyTorch fp32 | test acc. ORT INT8 | macro-F1 | p50 ms (1 text) "
             "| texts/s (batch 32) | vs teacher | MB (INT8) | frontier |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for v in sorted(variants, key=lambda v: -v.accuracy):
        name = f"**{v.name}** (shipped)" if v.name == shipped else v.name
        fp32 = "–" if v.fp32_test_accuracy is None else f"{v.fp32_test_accuracy:.2f}%"
        speed = "–" if v.speedup_vs_teacher is None else f"{v.speedup_vs_teacher:.2f}x"
        lines.append(f"| {name} | {v.params_m:.1f} M | {fp32} | {v.accuracy:.2f}% | {v.macro_f1:.1f} | "
                     f"{v.latency_p50_ms:.2f} | {v.throughput_texts_per_s:,.0f} | {speed} | {v.size_mb:.1f} | "
                     f"{'yes' if v.pareto else ''} |")
    lines += ["", ("Commands that reproduce each checkpoint (then `encoder-serve export CHECKPOINT PACKAGE "
              "--data DATA` for its package):"), ""]
    lines += [f"- {v.name}: `{v.command}`" for v in sorted(variants, key=lambda v: -v.accuracy)]
    return "\n".join(lines) + "\n"


def spread_labels(y: list[float], gap: float) -> list[float]:
    """Label heights (axes fraction) as close to `y` as possible, in the same order, at least `gap` apart,
    inside [0, 1]."""
    order = sorted(range(len(y)), key=lambda i: y[i])
    placed = [0.0] * len(y)
    previous = -1.0
    for i in order:
        placed[i] = max(y[i], previous + gap)
        previous = placed[i]
    following = 1.0 + gap  # then down from the top, so nothing passes 1 and only crowded labels move
    for i in reversed(order):
        placed[i] = min(placed[i], following - gap)
        following = placed[i]
    return placed


def plot(variants: list[Variant], recipes: list[Recipe], teacher: Variant | None, path: Path, title: str) -> None:
    """Each recipe's mean over seeds (error bar: min to max), each seed a faint dot; labels in a column to
    the right of the axes, joined to their points, so no two overlap however close the points are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(12, 6.5))
    fig.subplots_adjust(left=0.07, right=0.64, top=0.88, bottom=0.1)
    frontier = {v.name for v in variants if v.pareto}
    for v in variants:
        ax.scatter(v.latency_p50_ms, v.accuracy, s=10, color="gray", alpha=0.4, zorder=2)
    for r in recipes:
        on_frontier = any(name in frontier for name in r.variants)
        ax.errorbar(r.latency_p50_ms, r.accuracy_mean,
                    yerr=[[r.accuracy_mean - r.accuracy_min], [r.accuracy_max - r.accuracy_mean]],
                    fmt="o", ms=4 + 0.6 * r.size_mb ** 0.5 * 3, capsize=3, alpha=0.8, zorder=3,
                    color="tab:red" if on_frontier else "tab:blue", mec="black", mew=0.5)
    frontier_points = sorted((v for v in variants if v.pareto), key=lambda v: v.latency_p50_ms)
    ax.plot([v.latency_p50_ms for v in frontier_points], [v.accuracy for v in frontier_points], color="tab:red",
            lw=1, label="Pareto frontier (single checkpoints)")
    ax.axhline(ACCURACY_GOAL, color="gray", ls="--", lw=1, label=f"goal: {ACCURACY_GOAL:g}% test accuracy")
    low = min(v.accuracy for v in variants)
    ax.set_ylim(low - 0.4, max(ACCURACY_GOAL, *(v.accuracy for v in variants)) + 0.4)
    if teacher is not None:
        ax.axvline(teacher.latency_p50_ms / SPEED_GOAL, color="gray", ls=":", lw=1,
                   label=f"teacher latency / {SPEED_GOAL:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("latency p50, one text per call, ONNX Runtime INT8 (ms, log scale)")
    ax.set_ylabel("test accuracy, INT8 (%)")
    ax.set_title(title + "\nrecipe: mean over seeds, bar: min–max, marker size: INT8 graph size; "
                 "gray dots: single seeds", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    y0, y1 = ax.get_ylim()
    heights = spread_labels([(r.accuracy_mean - y0) / (y1 - y0) for r in recipes], gap=0.045)
    for r, height in zip(recipes, heights):
        speed = "" if r.speedup_vs_teacher is None else f", {r.speedup_vs_teacher:.1f}x"
        seeds = f" ±{r.accuracy_std:.2f} ({len(r.seeds)} seeds)" if len(r.seeds) > 1 else ""
        ax.annotate(f"{r.name}: {r.accuracy_mean:.2f}%{seeds}{speed}", xy=(r.latency_p50_ms, r.accuracy_mean),
                    xycoords="data", xytext=(1.02, height), textcoords="axes fraction", fontsize=7.5,
                    va="center", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5, "alpha": 0.7})
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories (encoder-serve train)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pareto")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "pareto", help="cache of exported graphs")
    parser.add_argument("--teacher", default="teacher",
                        help="the variant the speed-ups are relative to; if none has this name, every variant "
                             "whose name starts with it (several seeds of one teacher: their mean throughput)")
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
    teachers = [v for v in variants if v.name == args.teacher] or \
        [v for v in variants if v.name.startswith(args.teacher)]
    teacher = None
    if teachers:  # several fine-tunes of the same teacher model: their mean is the reference
        teacher = Variant(", ".join(t.name for t in teachers), "", "", teachers[0].params_m, None,
                          latency_p50_ms=float(np.mean([t.latency_p50_ms for t in teachers])),
                          throughput_texts_per_s=float(np.mean([t.throughput_texts_per_s for t in teachers])))
        for v in variants:
            v.speedup_vs_teacher = v.throughput_texts_per_s / teacher.throughput_texts_per_s
    mark_frontier(variants)
    recipes = group_recipes(variants)
    shipped = None
    manifest = args.shipped / "manifest.json"
    if manifest.is_file():
        source = json.loads(manifest.read_text()).get("source", {}).get("checkpoint")
        shipped = Path(source).name if source else None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(args.threads), "rounds": args.rounds, "batch": BATCH,
              "latency_texts": LATENCY_TEXTS, "teacher": teacher.name if teacher else None,
              "teacher_throughput_texts_per_s": teacher.throughput_texts_per_s if teacher else None, "shipped": shipped,
              "variants": [asdict(v) for v in variants], "recipes": [asdict(r) for r in recipes]}
    (args.out / "pareto.json").write_text(json.dumps(report, indent=2) + "\n")
    md = "## Recipes over seeds\n\n" + recipe_table(recipes, shipped) + "\n## Every checkpoint\n\n" + \
        table(variants, shipped)
    (args.out / "pareto.md").write_text(md)
    plot(variants, recipes, teacher, args.out / "pareto.png",
         f"emotion test split, {args.threads} thread(s), {report['machine']['date'][:10]}")
    print(md)
    print(f"wrote {args.out}/pareto.json, pareto.md, pareto.png")


if __name__ == "__main__":
    main()
