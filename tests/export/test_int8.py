"""INT8: the gate refuses a quantized model that disagrees with fp32, and batch dependence is measured,
not assumed: dynamic INT8 moves a text's scores with its neighbours, static INT8 does not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from encoder_serve import onnx_runtime
from encoder_serve.export import quantize, verify
from encoder_serve.export.build import GATE_BATCH_SIZE, load_eval_data
from encoder_serve.package import load_package
from encoder_serve.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def package(tiny_package):
    return load_package(tiny_package)


@pytest.fixture(scope="module")
def tokenizer(package):
    return load_tokenizer(package.tokenizer_path, package.max_length)


@pytest.fixture(scope="module")
def validation(package, tiny_data_dir):
    return load_eval_data(tiny_data_dir, package.labels, calibration_size=0).validation


def validation_logits(path, tokenizer, validation):
    return onnx_runtime.logits(onnx_runtime.session(path), tokenizer, validation.texts, GATE_BATCH_SIZE)


def corrupt_classifier(src, dst):
    """The INT8 graph with its classifier's output columns rotated: label i scored with label i+1's weights."""
    model = onnx.load(src)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for name in gemm.input[1:]:
        init = next(i for i in model.graph.initializer if i.name == name)
        array = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.roll(array, 1, axis=0), name))
    onnx.save(model, dst)
    return dst


def test_gate_refuses_a_quantized_model_that_disagrees_with_fp32(package, tokenizer, validation, tmp_path):
    fp32 = validation_logits(package.model_path("fp32"), tokenizer, validation)
    broken = corrupt_classifier(package.model_path("int8"), tmp_path / "broken.int8.onnx")
    result = quantize.gate(fp32, validation_logits(broken, tokenizer, validation), validation.labels)
    assert not result["passed"]
    assert result["top1_agreement"] < quantize.MIN_AGREEMENT
    assert "top-1 agreement with fp32" in result["reason"] and "< 99%" in result["reason"]


def test_gate_refuses_an_accuracy_drop_even_when_agreement_is_high():
    labels = np.zeros(1000, dtype=np.int64)
    fp32 = np.tile([5.0, 0.0], (1000, 1))
    int8 = fp32.copy()
    int8[:8] = [0.0, 5.0]  # 99.2% agreement, but every flip is a correct answer turned wrong: -0.8 points
    result = quantize.gate(fp32, int8, labels)
    assert result["top1_agreement"] == pytest.approx(0.992)
    assert not result["passed"] and result["reason"] == "accuracy drop 0.80 points > 0.5"


def test_the_shipped_int8_passed_its_gate_on_the_validation_split(package, tokenizer, validation):
    entry = package.manifest["precisions"]["int8"]
    fp32 = validation_logits(package.model_path("fp32"), tokenizer, validation)
    result = quantize.gate(fp32, validation_logits(package.model_path("int8"), tokenizer, validation),
                           validation.labels)
    assert result["passed"]
    assert entry["gate"]["top1_agreement"] == result["top1_agreement"]
    assert entry["mode"] == "static"
    assert quantize.quantized_ops(package.model_path("int8")) == entry["candidates"]["static"]["quantized_ops"] > 0


def test_dynamic_int8_scores_depend_on_batch_neighbours_but_static_int8_scores_do_not(
        package, tokenizer, validation, tmp_path):
    texts = verify.probe_texts(validation.texts, n=32)
    dynamic = quantize.quantize_dynamic_int8(package.model_path("fp32"), tmp_path / "dynamic.onnx")
    dynamic_dependence = verify.batch_dependence(onnx_runtime.session(dynamic), tokenizer, texts, scores=True)
    static_dependence = verify.batch_dependence(onnx_runtime.session(package.model_path("int8")), tokenizer, texts,
                                                scores=True)
    assert dynamic_dependence > quantize.BATCH_INVARIANCE_TOLERANCE
    assert static_dependence <= quantize.BATCH_INVARIANCE_TOLERANCE
    candidates = package.manifest["precisions"]["int8"]["candidates"]
    assert candidates["dynamic"]["batch_invariant"] is False
    assert candidates["static"]["batch_invariant"] is True


@pytest.mark.parametrize(("static", "dynamic", "shipped"), [
    ((True, True), (True, False), "static"),
    ((False, True), (True, False), "dynamic"),  # ships, marked batch_invariant=false: never batched
    ((False, True), (False, False), None),
    ((True, False), (True, True), "dynamic"),  # hypothetical: an invariant one always wins
])
def test_a_batch_invariant_passing_int8_is_preferred_and_a_failing_one_never_ships(static, dynamic, shipped):
    def candidate(passed_and_invariant):
        return dict(zip(("passed", "batch_invariant"), passed_and_invariant))
    assert quantize.choose({"static": candidate(static), "dynamic": candidate(dynamic)}) == shipped


def test_without_a_train_split_static_int8_is_skipped_with_the_reason(tiny_checkpoint, tiny_data_dir, tmp_path):
    from encoder_serve.export.build import build_package

    data = tmp_path / "data"
    data.mkdir()
    for split in ("validation", "test"):  # no train split: nothing to calibrate static scales with
        (data / f"{split}.jsonl").write_text((tiny_data_dir / f"{split}.jsonl").read_text())
    package = build_package(tiny_checkpoint, tmp_path / "package", name="p", version="1", data_dir=data)
    entry = package.manifest["precisions"]["int8"]
    assert entry["candidates"]["static"] == {"passed": False,
                                             "reason": "no train split to calibrate the static scales"}
    assert "static: no train split" in entry["reason"] or entry["mode"] == "dynamic"
    assert package.servable("int8") == (package.path / "model.int8.onnx").is_file()
