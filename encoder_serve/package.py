"""The model package: the one directory the service loads (torch-free).

    PACKAGE_DIR/
      manifest.json      what this is: name, version, labels, max_length, encoder config, files + sha256,
                         precisions (fp32 / int8, servable or not and why), metrics, source, versions
      model.onnx         fp32 graph, ONNX Runtime offline-optimized; inputs input_ids, attention_mask
                         (int64, [batch, sequence]); output logits (float32, [batch, num_labels])
      model.int8.onnx    INT8 graph, present only when it passed its quality gate
      tokenizer.json     Hugging Face tokenizers file; truncation to max_length is applied on load

`load_package` validates the manifest and the sha256 of every file it lists, so a missing, tampered or
truncated file fails loudly, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_FORMAT = "encoder-serve-package/1"
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("format", "name", "version", "labels", "max_length", "encoder", "files", "precisions")
PRECISIONS = ("fp32", "int8")


class PackageError(ValueError):
    """A model package that cannot be served: the message names the file and what is wrong with it."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(package_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Fill `files` with the sha256 of every file named in `precisions` plus tokenizer.json, and write it."""
    package_dir = Path(package_dir)
    names = {"tokenizer.json"} | {p["file"] for p in manifest["precisions"].values() if p.get("file")}
    manifest = {"format": PACKAGE_FORMAT, **manifest}
    manifest["files"] = {name: sha256_file(package_dir / name) for name in sorted(names)}
    path = package_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    def precision(self, name: str) -> dict[str, Any]:
        if name not in self.manifest["precisions"]:
            raise PackageError(f"{self.path / MANIFEST}: no precision {name!r} "
                               f"(has {sorted(self.manifest['precisions'])})")
        return self.manifest["precisions"][name]

    def servable(self, name: str) -> bool:
        p = self.manifest["precisions"].get(name)
        return bool(p and p.get("servable") and p.get("file"))

    def model_path(self, precision: str = "fp32") -> Path:
        """The ONNX file for `precision`; raises PackageError, with the manifest's reason, if not servable."""
        p = self.precision(precision)
        if not self.servable(precision):
            raise PackageError(f"{self.path}: precision {precision!r} is not servable: "
                               f"{p.get('reason', 'no reason recorded')}")
        return self.path / p["file"]


def load_package(package_dir: str | Path, verify_hashes: bool = True) -> ModelPackage:
    """Load and validate a model package; raises PackageError naming the offending file."""
    package_dir = Path(package_dir)
    manifest_path = package_dir / MANIFEST
    if not package_dir.is_dir():
        raise PackageError(f"model package directory not found: {package_dir}")
    if not manifest_path.is_file():
        raise PackageError(f"{manifest_path}: missing (not a model package)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{manifest_path}: must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise PackageError(f"{manifest_path}: missing keys {missing}")
    if manifest["format"] != PACKAGE_FORMAT:
        raise PackageError(f"{manifest_path}: format {manifest['format']!r}, expected {PACKAGE_FORMAT!r}")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels or len(set(labels)) != len(labels):
        raise PackageError(f"{manifest_path}: labels must be a non-empty list of distinct names")
    if not isinstance(manifest["max_length"], int) or manifest["max_length"] < 2:
        raise PackageError(f"{manifest_path}: max_length must be an integer >= 2")
    files = manifest["files"]
    if "tokenizer.json" not in files:
        raise PackageError(f"{manifest_path}: files must list tokenizer.json")
    for precision in manifest["precisions"].values():
        if precision.get("servable") and precision.get("file") not in files:
            raise PackageError(f"{manifest_path}: servable file {precision.get('file')!r} is not in files")
    for name, expected in files.items():
        path = package_dir / name
        if not path.is_file():
            raise PackageError(f"{path}: missing (listed in {MANIFEST})")
        if verify_hashes:
            actual = sha256_file(path)
            if actual != expected:
                raise PackageError(f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...):"
                                   " the file was modified or truncated")
    return ModelPackage(path=package_dir, manifest=manifest)
