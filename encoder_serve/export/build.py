"""The export pipeline: checkpoint -> verified ONNX -> fused fp32 graph -> gated INT8 -> model package.

    build_package(checkpoint_dir, package_dir, name=..., version=..., data_dir=...)

Every graph is verified before it is written; a failed step raises and leaves no package behind (the
package is assembled in a staging directory and moved into place at the end). With `data_dir` (a directory
holding validation and test splits, and train for INT8 calibration) the package also carries accuracy and
macro-F1 per precision and an INT8 graph when one passed its gate; without it, verification runs on
synthetic texts and INT8 is not built, because nothing could gate it.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from encoder_serve import onnx_runtime
from encoder_serve.export import onnx_export, optimize, quantize, verify
from encoder_serve.model.checkpoint import load_checkpoint
from encoder_serve.model.data import find_split, load_dataset, read_file
from encoder_serve.model.evaluation import classification_report
from encoder_serve.package import (
    ATTENTION_OUTPUTS,
    MANIFEST,
    ModelPackage,
    load_package,
    sha256_file,
    write_manifest,
)

log = logging.getLogger(__name__)

LIBRARIES = ("encoder-serve", "torch", "onnx", "onnxruntime", "tokenizers", "numpy")
GATE_BATCH_SIZE = 32  # the gate and the metrics score texts in batches, as the service does
ATTENTION_PROBE_TEXTS = 24  # texts the attention graph is checked on, one by one (as explain runs)


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # label ids in the model's logit order


@dataclass
class EvalData:
    validation: Labelled
    test: Labelled | None
    calibration: list[str]  # training texts for static INT8 scales


def load_eval_data(data: str | Path, labels: list[str], calibration_size: int, seed: int = 0,
                   text_column: str = "text", label_column: str = "label") -> EvalData:
    """The validation and test splits of `data`, labels mapped to logit ids, and training texts to calibrate.

    Read by the loader `encoder-serve train` uses (a directory of JSONL/CSV splits, one file, or a hub
    name; any column names), with the training seed, so a validation split carved from train at training
    time is carved the same way here. A directory without a train split still serves for verification and
    metrics (validation required, test optional), but gives nothing to calibrate static INT8 with."""
    index = {label: i for i, label in enumerate(labels)}

    def labelled(split) -> Labelled | None:
        if split is None:
            return None
        unknown = sorted(set(split.labels) - set(index))
        if unknown:
            raise ValueError(f"{data}: {split.name} labels {unknown} are not the model's labels {labels}")
        return Labelled(split.texts, np.array([index[label] for label in split.labels]))

    path = Path(data)
    if path.is_dir() and find_split(path, "train") is None:
        splits = {name: find_split(path, name) for name in ("validation", "test")}
        if splits["validation"] is None:
            raise FileNotFoundError(f"{path}: no validation.jsonl or validation.csv (and no train split to "
                                    "carve one from)")
        validation, test = (read_file(f, text_column, label_column) if f else None for f in splits.values())
        return EvalData(labelled(validation), labelled(test), [])
    dataset = load_dataset(data, text_column, label_column, seed=seed)
    calibration = dataset.train.texts
    calibration = random.Random(seed).sample(calibration, min(calibration_size, len(calibration)))
    return EvalData(labelled(dataset.validation), labelled(dataset.test), calibration)


def data_options(checkpoint_dir: str | Path, text_column: str | None = None,
                 label_column: str | None = None) -> dict:
    """seed, text_column and label_column as the checkpoint's training run read its data (defaults if the
    checkpoint has no training record), so export and bench-model read the same splits the same way;
    columns given here win."""
    config = json.loads((Path(checkpoint_dir) / "config.json").read_text())
    record = config.get("training") or {}
    return {"seed": (record.get("train") or {}).get("seed", 0),
            "text_column": text_column or record.get("text_column", "text"),
            "label_column": label_column or record.get("label_column", "label")}


def evaluate(sess, tokenizer: Tokenizer, data: EvalData, labels: list[str]) -> dict:
    """{"validation": {accuracy, macro_f1}, "test": {...}} for one ONNX session."""
    out = {}
    for split, part in (("validation", data.validation), ("test", data.test)):
        if part is not None:
            predicted = onnx_runtime.logits(sess, tokenizer, part.texts, GATE_BATCH_SIZE).argmax(-1)
            report = classification_report(part.labels, predicted, labels)
            out[split] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "texts": len(part.texts)}
    return out


def build_int8(exported: Path, fp32_path: Path, work: Path, tokenizer: Tokenizer, data: EvalData,
               labels: list[str], probe: list[str], threads: int) -> tuple[Path | None, dict, dict]:
    """Build, gate and measure every INT8 mode; returns (chosen graph or None, manifest entry, its metrics).

    Static INT8 starts from the graph as exported (see quantize_static_int8), dynamic from the fused one
    (its fused Attention becomes QAttention); `quantize.choose` picks what ships.
    """
    fp32_validation = onnx_runtime.logits(onnx_runtime.session(fp32_path, threads), tokenizer, data.validation.texts,
                                     GATE_BATCH_SIZE)
    candidates, paths, metrics = {}, {}, {}
    for mode in quantize.MODES:
        if mode == "static" and not data.calibration:
            candidates[mode] = {"passed": False, "reason": "no train split to calibrate the static scales"}
            continue
        path = work / f"model.int8.{mode}.onnx"
        if mode == "static":
            quantize.quantize_static_int8(exported, path, tokenizer, data.calibration)
        else:
            quantize.quantize_dynamic_int8(fp32_path, path)
        verify.check_graph(path)
        sess = onnx_runtime.session(path, threads)
        result = quantize.gate(fp32_validation, onnx_runtime.logits(sess, tokenizer, data.validation.texts,
                                                               GATE_BATCH_SIZE), data.validation.labels)
        dependence = verify.batch_dependence(sess, tokenizer, probe[:verify.BATCH_SIZES[-1]], scores=True)
        result["batch_dependence"] = dependence
        result["batch_invariant"] = dependence <= quantize.BATCH_INVARIANCE_TOLERANCE
        result["size_bytes"] = path.stat().st_size
        result["quantized_ops"] = quantize.quantized_ops(path)
        if not result["quantized_ops"]:
            result["passed"], result["reason"] = False, "the quantizer quantized no operator"
        candidates[mode], paths[mode] = result, path
        if result["passed"]:
            metrics[mode] = evaluate(sess, tokenizer, data, labels)
        log.info("int8 %s: %s, agreement %.4f, drop %.2f points, batch dependence %.2g", mode,
                 result["reason"], result["top1_agreement"], result["accuracy_drop_points"], dependence)

    chosen = quantize.choose(candidates)
    if chosen is None:
        entry = {"file": None, "servable": False, "mode": None, "batch_invariant": None,
                 "reason": "; ".join(f"{m}: {candidates[m]['reason']}" for m in quantize.MODES)}
        return None, {**entry, "candidates": candidates}, {}
    c = candidates[chosen]
    reason = (f"{chosen} INT8 passed the gate (agreement {100 * c['top1_agreement']:.2f}%, "
              f"drop {c['accuracy_drop_points']:.2f} points)")
    if not c["batch_invariant"]:
        reason += f"; its scores depend on batch neighbours (max {c['batch_dependence']:.2g}): do not batch it"
    entry = {"file": "model.int8.onnx", "servable": True, "reason": reason, "mode": chosen,
             "batch_invariant": c["batch_invariant"], "batch_dependence": c["batch_dependence"],
             "gate": {k: c[k] for k in ("texts", "top1_agreement", "accuracy_fp32", "accuracy_int8",
                                        "accuracy_drop_points", "min_top1_agreement", "max_accuracy_drop_points")},
             "candidates": candidates}
    return paths[chosen], entry, metrics[chosen]


def checkpoint_baseline(checkpoint_dir: Path) -> dict | None:
    """The bag-of-words baseline `encoder-serve train` scored on the same splits (its metrics.json), if any."""
    metrics = checkpoint_dir / "metrics.json"
    return json.loads(metrics.read_text()).get("baseline") if metrics.is_file() else None


def portable(path: str | Path) -> str:
    """A path for the manifest: relative to the working directory when inside it (runs/..., data/...), so
    that a package built in a checkout names its sources the same way in every clone; else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_replaceable(package_dir: Path) -> None:
    """An older package may be replaced, an unrelated directory never."""
    if package_dir.exists() and any(package_dir.iterdir()) and not (package_dir / MANIFEST).is_file():
        raise ValueError(f"{package_dir} exists and is not a model package; not overwriting it")


def install(staging: Path, package_dir: Path) -> None:
    """Move the finished package into place, replacing an older one."""
    check_replaceable(package_dir)
    if package_dir.exists():
        shutil.rmtree(package_dir)
    staging.rename(package_dir)


def build_attention(model, path: Path, tokenizer: Tokenizer, probe: list[str], threads: int) -> dict:
    """The explain graph at `path`, verified against PyTorch; its manifest entry."""
    onnx_export.export_attention_onnx(model, path)
    checks = verify.verify_attention(model, path, tokenizer, probe[:ATTENTION_PROBE_TEXTS], threads)
    log.info("attention graph verified: max |Δattention| vs PyTorch %.2g", checks["max_abs_attention_diff_vs_pytorch"])
    return {"file": path.name, "outputs": list(ATTENTION_OUTPUTS), "size_bytes": path.stat().st_size,
            "verification": checks}


def build_package(checkpoint_dir: str | Path, package_dir: str | Path, *, name: str, version: str,
                  data_dir: str | Path | None = None, int8: bool = True, attention: bool = True,
                  calibration_size: int = 512, threads: int = 1, text_column: str | None = None,
                  label_column: str | None = None) -> ModelPackage:
    """Export, verify, optimize, quantize and gate `checkpoint_dir` into the model package `package_dir`;
    with `attention`, the explain graph too."""
    checkpoint_dir, package_dir = Path(checkpoint_dir), Path(package_dir)
    check_replaceable(package_dir)  # before minutes of work, not after
    model, tokenizer, _ = load_checkpoint(checkpoint_dir)
    config = model.config
    options = data_options(checkpoint_dir, text_column, label_column)
    data = load_eval_data(data_dir, config.labels, calibration_size, **options) if data_dir else None
    probe = (verify.probe_texts(data.validation.texts) if data
             else verify.synthetic_texts(tokenizer, config.max_length))

    package_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=package_dir.parent, prefix=f".{package_dir.name}.") as tmp:
        work, staging = Path(tmp) / "work", Path(tmp) / "package"
        work.mkdir(), staging.mkdir()
        exported = onnx_export.export_onnx(model, work / "exported.onnx")
        exported_checks = verify.verify_fp32(model, exported, tokenizer, probe, threads)
        fp32_path = staging / "model.onnx"
        fusions = optimize.optimize_onnx(exported, fp32_path, config)
        optimized_checks = verify.verify_fp32(model, fp32_path, tokenizer, probe, threads)
        log.info("exported and verified; fusions %s, max |Δlogits| vs PyTorch %.2g", fusions,
                 optimized_checks["max_abs_logit_diff_vs_pytorch"])

        precisions = {"fp32": {"file": "model.onnx", "servable": True, "batch_invariant": True,
                               "reason": "verified against PyTorch"}}
        metrics = {}
        if data is not None:
            metrics["fp32"] = evaluate(onnx_runtime.session(fp32_path, threads), tokenizer, data, config.labels)
        if not int8:
            precisions["int8"] = {"file": None, "servable": False, "reason": "INT8 not built (int8=False)"}
        elif data is None:
            precisions["int8"] = {"file": None, "servable": False,
                                  "reason": "INT8 not built: no labelled validation data to gate it"}
        else:
            chosen, precisions["int8"], int8_metrics = build_int8(exported, fp32_path, work, tokenizer, data,
                                                                  config.labels, probe, threads)
            if chosen is not None:
                shutil.copyfile(chosen, staging / "model.int8.onnx")
                metrics["int8"] = int8_metrics
        shutil.copyfile(checkpoint_dir / "tokenizer.json", staging / "tokenizer.json")
        attention_entry = build_attention(model, staging / "model.attention.onnx", tokenizer, probe, threads) \
            if attention else None

        write_manifest(staging, {
            "name": name,
            "version": version,
            "labels": config.labels,
            "max_length": config.max_length,
            "encoder": config.to_dict(),
            "precisions": precisions,
            "attention": attention_entry,
            "metrics": metrics,
            "baseline": checkpoint_baseline(checkpoint_dir),
            "source": {"checkpoint": portable(checkpoint_dir),
                       "weights_sha256": sha256_file(checkpoint_dir / "model.safetensors"),
                       "data": (portable(data_dir) if Path(data_dir).exists() else str(data_dir))
                       if data_dir else None},
            "export": {"opset": onnx_export.OPSET, "exporter": onnx_export.EXPORTER,
                       "optimizer": {"model_type": "bert", "opt_level": optimize.OPT_LEVEL,
                                     "attention_mask": "raw 0/1 mask (any padding side)"},
                       "fusions": fusions,
                       "verification": {"exported": exported_checks, "optimized": optimized_checks}},
            "libraries": library_versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        install(staging, package_dir)
    return load_package(package_dir)
