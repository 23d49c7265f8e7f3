"""The shipped default package (models/emotion): it loads, its hashes verify, and it reads emotions right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoder_serve import onnx_runtime
from encoder_serve.export import quantize, verify
from encoder_serve.package import load_package
from encoder_serve.tokenization import load_tokenizer

DEFAULT_PACKAGE = Path(__file__).resolve().parents[2] / "models" / "emotion"

CLEAR = {
    "i feel so sad and lonely since my best friend moved away": "sadness",
    "i am thrilled and happy that we won the championship today": "joy",
    "i feel so much love and tenderness for my sweet little daughter": "love",
    "i am furious and angry that they lied to me again": "anger",
    "i feel scared and terrified walking alone at night": "fear",
    "i was amazed and shocked to find out the surprise party was for me": "surprise",
}


@pytest.fixture(scope="module")
def package():
    return load_package(DEFAULT_PACKAGE)


@pytest.fixture(scope="module")
def tokenizer(package):
    return load_tokenizer(package.tokenizer_path, package.max_length)


def servable_precisions(package):
    return [p for p in ("fp32", "int8") if package.servable(p)]


def test_default_package_verifies_and_fits_the_repository_budget(package):
    assert package.servable("fp32")
    if package.servable("int8"):  # an "INT8" graph the quantizer left untouched is fp32 under a false name
        assert quantize.quantized_ops(package.model_path("int8")) > 0
    # fp32 and INT8 graphs and the attention graph (the fp32 weights again, unfused, for /v1/explain)
    assert sum(f.stat().st_size for f in DEFAULT_PACKAGE.iterdir()) <= 30 * 2**20
    assert package.manifest["attention"]["file"] == "model.attention.onnx"
    assert package.manifest["metrics"]["fp32"]["test"]["accuracy"] >= 0.85


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_default_package_classifies_clear_emotion_texts_correctly(package, tokenizer, precision):
    if not package.servable(precision):
        pytest.skip(f"{precision} not servable: {package.precision(precision).reason}")
    texts = list(CLEAR)
    logits = onnx_runtime.logits(onnx_runtime.session(package.model_path(precision)), tokenizer, texts)
    assert [package.labels[i] for i in logits.argmax(-1)] == list(CLEAR.values())


def test_default_package_scores_do_not_depend_on_batch_neighbours(package, tokenizer):
    texts = list(CLEAR) + ["ok", "i feel " + "really " * 200 + "tired"]  # unpadded, short, truncated
    for precision in servable_precisions(package):
        if package.precision(precision).batch_invariant is False:
            continue  # a dynamic INT8 marked as such is refused batching by the service
        alone, batched = verify.alone_and_batched(onnx_runtime.session(package.model_path(precision)), tokenizer, texts)
        assert np.abs(onnx_runtime.softmax(alone) - onnx_runtime.softmax(batched)).max() <= 1e-5, precision
