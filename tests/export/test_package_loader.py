"""The loader serves a package only when every listed file is there and unchanged, and says which is not."""

from __future__ import annotations

import json
import shutil

import pytest

from encoder_serve.package import MANIFEST, PackageError, load_package


@pytest.fixture
def package(service_package, tmp_path):
    return shutil.copytree(service_package, tmp_path / "package")


def edit_manifest(package, change):
    manifest = json.loads((package / MANIFEST).read_text())
    change(manifest)
    (package / MANIFEST).write_text(json.dumps(manifest))


def test_an_untouched_package_loads_and_knows_what_it_serves(package):
    loaded = load_package(package)
    assert loaded.model_path("fp32") == package / "model.onnx"
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json"} <= set(loaded.manifest["files"])
    if loaded.attention_path is not None:
        assert loaded.attention_path.is_file() and loaded.attention_path.name in loaded.manifest["files"]


def test_a_tampered_file_is_named_with_its_hash_mismatch(package):
    data = bytearray((package / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    (package / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"model.int8.onnx: sha256 mismatch"):
        load_package(package)


def test_a_truncated_file_is_named(package):
    data = (package / "model.onnx").read_bytes()
    (package / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match=r"model.onnx: sha256 mismatch .* modified or truncated"):
        load_package(package)


def test_a_missing_file_is_named(package):
    (package / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match=r"tokenizer.json: missing \(listed in manifest.json\)"):
        load_package(package)


def test_a_directory_without_a_manifest_is_not_a_package(package):
    (package / MANIFEST).unlink()
    with pytest.raises(PackageError, match=r"manifest.json: missing \(not a model package\)"):
        load_package(package)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("labels"), r"labels: Field required"),
    (lambda m: m.update(format="something-else/9"), r"format: Input should be 'encoder-serve-package/1'"),
    (lambda m: m.update(labels=["joy", "joy"]), r"labels: labels must be distinct names"),
    (lambda m: m.update(labels=[]), r"labels: List should have at least 1 item"),
    (lambda m: m.update(max_length="64"), r"max_length: Input should be a valid integer"),
    (lambda m: m["files"].pop("model.onnx"), r"precision 'fp32': servable file 'model.onnx' is not in files"),
    (lambda m: m.update(attention={"file": "model.attention.onnx", "outputs": ["logits"]}),
     r"attention.outputs: the attention graph lacks the outputs \['attentions', 'queries', 'keys'\]"),
])
def test_a_bad_manifest_is_rejected_with_what_is_wrong(package, change, message):
    edit_manifest(package, change)
    with pytest.raises(PackageError, match=rf"manifest.json: {message}"):
        load_package(package)


def test_a_manifest_that_is_not_json_is_rejected(package):
    (package / MANIFEST).write_text('{"name": "emotion",')
    with pytest.raises(PackageError, match=r"manifest.json: not valid JSON"):
        load_package(package)


def test_a_precision_that_is_not_servable_says_why(package):
    edit_manifest(package, lambda m: m["precisions"]["int8"].update(servable=False, reason="failed its gate"))
    with pytest.raises(PackageError, match=r"precision 'int8' is not servable: failed its gate"):
        load_package(package).model_path("int8")
