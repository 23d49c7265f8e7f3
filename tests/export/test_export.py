"""Export + verification: every encoder variant exports, verifies against PyTorch and keeps its shape
contract; verification fails loudly, with the numbers, when a graph computes something else."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from encoder_serve import onnx_runtime
from encoder_serve.export import onnx_export, verify
from encoder_serve.export.build import build_package, portable
from encoder_serve.model.checkpoint import load_checkpoint, save_checkpoint
from encoder_serve.model.encoder import NORM_PLACEMENTS, POSITION_KINDS, EncoderClassifier, EncoderConfig
from encoder_serve.package import load_package

VARIANTS = [(position, norm) for position in POSITION_KINDS for norm in NORM_PLACEMENTS]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    torch.set_num_threads(1)
    return load_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize(("position", "norm"), VARIANTS)
def test_every_encoder_variant_exports_verified_and_records_its_fusions(tiny, tmp_path, position, norm):
    _, tokenizer, raw = tiny
    config = EncoderConfig(**{**raw["encoder"], "position": position, "norm": norm, "d_model": 32, "d_ff": 64})
    torch.manual_seed(1)
    checkpoint = save_checkpoint(EncoderClassifier(config).eval(), tokenizer, tmp_path / "checkpoint")

    manifest = build_package(checkpoint, tmp_path / "package", name="variant", version="1").manifest

    checks = manifest["export"]["verification"]
    for stage in ("exported", "optimized"):
        assert checks[stage]["onnx_checker"] == "passed"
        assert checks[stage]["max_abs_logit_diff_vs_pytorch"] <= verify.FP32_TOLERANCE
        assert checks[stage]["max_abs_logit_diff_alone_vs_batched"] <= verify.BATCH_TOLERANCE
    fusions = manifest["export"]["fusions"]
    assert fusions.get("SkipLayerNormalization", 0) >= 2 * config.n_layers - (norm == "pre")
    assert fusions.get("BiasGelu", 0) == config.n_layers
    # absolute positions give the BERT attention pattern ORT fuses; relative ones add a bias it does not know
    assert fusions.get("Attention", 0) == (config.n_layers if position != "relative" else 0)


def test_graph_has_dynamic_batch_and_sequence_axes_and_the_serving_names(tiny_package):
    graph = onnx.load(tiny_package / "model.onnx").graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [
        ("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in graph.output] == [("logits", onnx.TensorProto.FLOAT)]
    for tensor in graph.input:
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    opset = {o.domain: o.version for o in onnx.load(tiny_package / "model.onnx").opset_import}[""]
    assert opset >= 17


@pytest.mark.parametrize("graph", ["model.onnx", "model.int8.onnx"])
def test_every_batch_size_and_sequence_length_runs_and_fp32_matches_pytorch(tiny, tiny_package, graph):
    model, _, _ = tiny
    sess = onnx_runtime.session(tiny_package / graph)
    generator = torch.Generator().manual_seed(0)
    T_max, worst = model.config.max_length, 0.0
    for B, T in [*zip(range(1, 65), range(1, T_max + 1)), *zip(range(64, 0, -1), range(1, T_max + 1))]:
        ids = torch.randint(5, model.config.vocab_size, (B, T), generator=generator)
        lengths = torch.randint(1, T + 1, (B,), generator=generator)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        ids = ids * mask
        logits = onnx_runtime.run(sess, ids.numpy(), mask.numpy())
        assert logits.shape == (B, model.config.num_labels) and np.isfinite(logits).all()
        with torch.no_grad():
            worst = max(worst, float((torch.from_numpy(logits) - model(ids, mask)).abs().max()))
    if graph == "model.onnx":  # INT8's distance to fp32 is the gate's business, not a tolerance's
        assert worst <= verify.FP32_TOLERANCE


def test_fp32_scores_do_not_depend_on_padding_or_batch_neighbours(tiny, tiny_package, emotion_test_rows):
    _, tokenizer, _ = tiny
    texts = verify.probe_texts([r["text"] for r in emotion_test_rows[:200]], n=48)
    alone, batched = verify.alone_and_batched(onnx_runtime.session(tiny_package / "model.onnx"), tokenizer, texts)
    assert abs(alone - batched).max() <= verify.BATCH_TOLERANCE


def test_verification_fails_loudly_with_the_numbers_when_onnx_and_pytorch_disagree(tiny, tmp_path):
    model, tokenizer, _ = tiny
    path = onnx_export.export_onnx(model, tmp_path / "model.onnx")
    drifted = EncoderClassifier(model.config).eval()
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.head.classifier.bias += 0.01  # what a stale export of an older checkpoint looks like
    texts = verify.synthetic_texts(tokenizer, model.config.max_length, n=8)
    with pytest.raises(verify.VerificationError, match=r"model.onnx: .*max \|Δlogits\| = 0.01 > 0.0001"):
        verify.verify_fp32(drifted, path, tokenizer, texts)


def test_onnx_checker_rejection_names_the_graph(tiny_package, tmp_path):
    model = onnx.load(tiny_package / "model.onnx")
    model.graph.node[0].input[0] = "no_such_tensor"
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    with pytest.raises(verify.VerificationError, match=r"broken.onnx: onnx.checker rejected the graph"):
        verify.check_graph(path)


def test_a_package_without_labelled_data_ships_fp32_only_and_says_why(tiny_checkpoint, tmp_path):
    package = build_package(tiny_checkpoint, tmp_path / "package", name="p", version="2")
    assert package.servable("fp32") and not package.servable("int8")
    assert not (package.path / "model.int8.onnx").exists()
    assert "no labelled validation data" in package.precision("int8").reason
    assert load_package(package.path).manifest["metrics"] == {}


def test_export_refuses_to_overwrite_a_directory_that_is_not_a_package(tiny_checkpoint, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model package"):
        build_package(tiny_checkpoint, target, name="p", version="1")
    assert (target / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]  # no staging directory left behind


def test_the_manifest_describes_where_the_package_came_from(tiny_package, tiny_checkpoint):
    manifest = load_package(tiny_package).manifest
    assert manifest["source"]["checkpoint"] == str(tiny_checkpoint.resolve())  # outside the working directory
    assert len(manifest["source"]["weights_sha256"]) == 64
    assert manifest["encoder"]["labels"] == manifest["labels"]
    assert manifest["export"]["opset"] >= 17
    assert {"torch", "onnx", "onnxruntime", "tokenizers"} <= set(manifest["libraries"])
    for precision in ("fp32", "int8"):
        for split in ("validation", "test"):
            scores = manifest["metrics"][precision][split]
            assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["macro_f1"] <= 1


def test_sources_inside_the_working_directory_are_named_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "runs" / "student").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable("runs/student") == portable(tmp_path / "runs" / "student") == "runs/student"
    assert portable(tmp_path.parent) == str(tmp_path.parent.resolve())
