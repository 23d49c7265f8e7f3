"""The model package: the one directory the service loads (torch-free).

    PACKAGE_DIR/
      manifest.json         what this is (the `Manifest` model below is its schema): name, version, labels,
                            max_length, encoder config, files + sha256, precisions (fp32 / int8, servable or
                            not and why), the attention graph, metrics, source, versions
      model.onnx            fp32 graph, ONNX Runtime offline-optimized; inputs input_ids, attention_mask
                            (int64, [batch, sequence]); output logits (float32, [batch, num_labels])
      model.int8.onnx       INT8 graph, present only when it passed its quality gate
      model.attention.onnx  fp32 graph, unfused, with every layer's attention next to the logits (explain)
      tokenizer.json        Hugging Face tokenizers file; truncation to max_length is applied on load

`load_package` validates the manifest and the sha256 of every file it lists, so a missing, tampered or
truncated file fails loudly, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PACKAGE_FORMAT = "encoder-serve-package/1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
ATTENTION_OUTPUTS = ("logits", "attentions", "queries", "keys")


class PackageError(ValueError):
    """A model package that cannot be served: the message names the file and what is wrong with it."""


class Precision(BaseModel):
    """One way to run the model: its graph, whether it may be served, and why (or why not)."""
    model_config = ConfigDict(extra="allow")
    file: str | None = Field(None, description="The ONNX graph, or null when none was built.")
    servable: bool = False
    reason: str = Field("", description="Why it is (not) servable: a gate's verdict, a verification.")
    batch_invariant: bool | None = Field(None, description="A text's scores do not depend on its batch.")


class AttentionGraph(BaseModel):
    """The explain graph: fp32, unfused, every layer's attention probabilities next to the logits."""
    model_config = ConfigDict(extra="allow")
    file: str
    outputs: list[str] = Field(description="logits (B, labels); attentions, (L, B, H, T, T); queries and keys "
                                           "(L, B, H, T, head size), as the attention scores are formed from them")
    verification: dict[str, Any] = Field(default_factory=dict)

    @field_validator("outputs")
    @classmethod
    def _has_every_output(cls, outputs: list[str]) -> list[str]:
        missing = [name for name in ATTENTION_OUTPUTS if name not in outputs]
        if missing:
            raise ValueError(f"the attention graph lacks the outputs {missing}")
        return outputs


class Manifest(BaseModel):
    """manifest.json. Fields beyond these (metrics, source, export, libraries, created_at) are kept as read."""
    model_config = ConfigDict(extra="allow")
    format: Literal["encoder-serve-package/1"]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    labels: list[str] = Field(min_length=1, description="Logit i is labels[i].")
    max_length: int = Field(ge=2, strict=True, description="Tokens per text, special tokens included.")
    encoder: dict[str, Any]
    files: dict[str, str] = Field(description="Every file of the package (but this one) and its sha256.")
    precisions: dict[str, Precision]
    attention: AttentionGraph | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct names")
        return labels

    @model_validator(mode="after")
    def _files_listed(self) -> Manifest:
        if TOKENIZER not in self.files:
            raise ValueError(f"files must list {TOKENIZER}")
        for name, precision in self.precisions.items():
            if precision.servable and precision.file not in self.files:
                raise ValueError(f"precision {name!r}: servable file {precision.file!r} is not in files")
        if self.attention is not None and self.attention.file not in self.files:
            raise ValueError(f"attention file {self.attention.file!r} is not in files")
        return self


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(package_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Fill `files` with the sha256 of tokenizer.json and every graph the manifest names, check the result
    against `Manifest`, and write it."""
    package_dir = Path(package_dir)
    names = {TOKENIZER} | {p["file"] for p in manifest["precisions"].values() if p.get("file")}
    if manifest.get("attention"):
        names.add(manifest["attention"]["file"])
    manifest = {"format": PACKAGE_FORMAT, **manifest}
    manifest["files"] = {name: sha256_file(package_dir / name) for name in sorted(names)}
    Manifest.model_validate(manifest)
    path = package_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    manifest: dict[str, Any]  # as read (what /v1/models shows); `spec` is the same, validated
    spec: Manifest

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @property
    def max_length(self) -> int:
        return self.spec.max_length

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    @property
    def attention_path(self) -> Path | None:
        """The explain graph, or None for a package built without one."""
        return self.path / self.spec.attention.file if self.spec.attention else None

    def precision(self, name: str) -> Precision:
        if name not in self.spec.precisions:
            raise PackageError(f"{self.path / MANIFEST}: no precision {name!r} (has {sorted(self.spec.precisions)})")
        return self.spec.precisions[name]

    def servable(self, name: str) -> bool:
        p = self.spec.precisions.get(name)
        return bool(p and p.servable and p.file)

    def model_path(self, precision: str = "fp32") -> Path:
        """The ONNX file for `precision`; raises PackageError, with the manifest's reason, if not servable."""
        p = self.precision(precision)
        if not self.servable(precision):
            raise PackageError(f"{self.path}: precision {precision!r} is not servable: "
                               f"{p.reason or 'no reason recorded'}")
        return self.path / p.file


def describe(error: ValidationError) -> str:
    """One line per problem, naming the field as it is spelled in manifest.json."""
    lines = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"])
        lines.append(f"{where}: {e['msg']}" if where else e["msg"].removeprefix("Value error, "))
    return "; ".join(line.replace("Value error, ", "") for line in lines)


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
    try:
        spec = Manifest.model_validate(manifest)
    except ValidationError as e:
        raise PackageError(f"{manifest_path}: {describe(e)}") from None
    for name, expected in spec.files.items():
        path = package_dir / name
        if not path.is_file():
            raise PackageError(f"{path}: missing (listed in {MANIFEST})")
        if verify_hashes:
            actual = sha256_file(path)
            if actual != expected:
                raise PackageError(f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...):"
                                   " the file was modified or truncated")
    return ModelPackage(path=package_dir, manifest=manifest, spec=spec)
