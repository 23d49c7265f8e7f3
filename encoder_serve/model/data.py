"""Text-classification data: read it, check all of it, then batch it.

Any dataset with any label set works: a directory with train / test (/ validation) as .jsonl or .csv,
one file (validation and test carved from it), or a Hugging Face hub dataset name. Every file is read and
checked before training starts, so bad data stops the run in seconds with the file and line to fix,
not an hour later. Labels are the set seen in train, in a deterministic order (numeric when every label
is a number, else alphabetical), so the same data always gives the same id -> label map.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")
FORMATS = (".jsonl", ".csv")


class DataError(ValueError):
    """Bad training data; the message names the file and line."""


@dataclass
class Split:
    """One split: texts, their label names, and where each example came from (for error messages)."""

    name: str
    texts: list[str]
    labels: list[str]
    sources: list[str]  # "path:line" per example

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int], name: str | None = None) -> Split:
        return Split(name or self.name, [self.texts[i] for i in indices], [self.labels[i] for i in indices],
                     [self.sources[i] for i in indices])


@dataclass
class Dataset:
    train: Split
    validation: Split
    test: Split
    label_names: list[str]  # id -> label

    def label_ids(self, split: Split) -> list[int]:
        index = {label: i for i, label in enumerate(self.label_names)}
        return [index[label] for label in split.labels]


def label_order(labels: set[str]) -> list[str]:
    """Numeric order when every label is an integer ("0", "1", "10"), else alphabetical."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _label(value, where: str, column: str) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 from a numeric CSV/JSON column is label "3"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: label column {column!r} must be a string or an integer, got {value!r}")
    label = str(value).strip()
    if not label:
        raise DataError(f"{where}: empty label in column {column!r}")
    return label


def _text(value, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: text column {column!r} must be a string, got {type(value).__name__}")
    return value


def read_jsonl(path: Path, text_column: str = "text", label_column: str = "label") -> Split:
    """One JSON object per line; blank lines are skipped."""
    texts, labels, sources = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for column in (text_column, label_column):
                if column not in row:
                    raise DataError(f"{where}: missing column {column!r} (has {sorted(row)})")
            texts.append(_text(row[text_column], where, text_column))
            labels.append(_label(row[label_column], where, label_column))
            sources.append(where)
    return _non_empty(Split(path.stem, texts, labels, sources), path)


def read_csv(path: Path, text_column: str = "text", label_column: str = "label") -> Split:
    """A CSV file with a header row naming the columns."""
    texts, labels, sources = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (text_column, label_column):
            if header and column not in header:
                raise DataError(f"{path}:1: missing column {column!r} (header has {header})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in (text_column, label_column)):
                raise DataError(f"{where}: row has {len(row) - (None in row)} fields, header has {len(header)}")
            texts.append(_text(row[text_column], where, text_column))
            labels.append(_label(row[label_column], where, label_column))
            sources.append(where)
    return _non_empty(Split(path.stem, texts, labels, sources), path)


def _non_empty(split: Split, path: Path) -> Split:
    if not split.texts:
        raise DataError(f"{path}: no examples (the file is empty)")
    return split


def read_file(path: Path, text_column: str = "text", label_column: str = "label") -> Split:
    if path.suffix == ".jsonl":
        return read_jsonl(path, text_column, label_column)
    if path.suffix == ".csv":
        return read_csv(path, text_column, label_column)
    raise DataError(f"{path}: unsupported format {path.suffix!r} (use {' or '.join(FORMATS)})")


def find_split(directory: Path, name: str) -> Path | None:
    found = [directory / f"{name}{ext}" for ext in FORMATS if (directory / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{directory}: both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def carve(split: Split, fraction: float, seed: int, name: str) -> tuple[Split, Split]:
    """Split off a seeded random `fraction` of `split` as a new split called `name`."""
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    n = max(1, round(len(split) * fraction))
    if n >= len(split):
        raise DataError(f"{split.sources[0].rsplit(':', 1)[0]}: too few examples ({len(split)}) "
                        f"to carve a {name} split from")
    return split.subset(sorted(order[n:])), split.subset(sorted(order[:n]), name)


def check_labels(train: Split, other: Split) -> None:
    """Every validation/test label must be one the model can predict, i.e. one seen in train."""
    known = set(train.labels)
    for label, where in zip(other.labels, other.sources):
        if label not in known:
            raise DataError(f"{where}: label {label!r} does not appear in the training data "
                            f"(train labels: {label_order(known)})")


def load_dataset(data: str | Path, text_column: str = "text", label_column: str = "label",
                 validation_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Read and check every split of `data` (directory, file or hub name) before anything trains."""
    path = Path(data)
    if path.is_dir():
        train_path = find_split(path, "train")
        test_path = find_split(path, "test")
        for name, found in (("train", train_path), ("test", test_path)):
            if found is None:
                raise DataError(f"{path}: no {name}.jsonl or {name}.csv")
        train = read_file(train_path, text_column, label_column)
        test = read_file(test_path, text_column, label_column)
        validation_path = find_split(path, "validation")
        if validation_path is not None:
            validation = read_file(validation_path, text_column, label_column)
        else:
            train, validation = carve(train, validation_fraction, seed, "validation")
    elif path.is_file():
        everything = read_file(path, text_column, label_column)
        train, test = carve(everything, validation_fraction, seed, "test")
        train, validation = carve(train, validation_fraction, seed + 1, "validation")
    elif path.suffix in FORMATS or path.is_absolute() or str(data).startswith("."):
        raise DataError(f"{path}: no such file or directory")
    else:
        return load_hub_dataset(str(data), text_column, label_column, validation_fraction, seed)
    train.name, validation.name, test.name = SPLITS
    for other in (validation, test):
        check_labels(train, other)
    return Dataset(train, validation, test, label_order(set(train.labels)))


def load_hub_dataset(name: str, text_column: str, label_column: str, validation_fraction: float,
                     seed: int) -> Dataset:
    """A Hugging Face hub dataset ("dair-ai/emotion"); ClassLabel ids become their names."""
    try:
        import datasets
    except ModuleNotFoundError:
        raise DataError(f"{name!r} is not a local file or directory, and loading it from the Hugging Face hub "
                        f"needs `datasets`: pip install 'encoder-serve[hub]'") from None
    hub = datasets.load_dataset(name)
    splits: dict[str, Split] = {}
    for split_name in hub:
        part = hub[split_name]
        for column in (text_column, label_column):
            if column not in part.column_names:
                raise DataError(f"{name}[{split_name}]: missing column {column!r} (has {part.column_names})")
        feature = part.features[label_column]
        names = getattr(feature, "names", None)
        labels = [names[v] if names else _label(v, f"{name}[{split_name}]:{i + 1}", label_column)
                  for i, v in enumerate(part[label_column])]
        texts = [_text(t, f"{name}[{split_name}]:{i + 1}", text_column) for i, t in enumerate(part[text_column])]
        sources = [f"{name}[{split_name}]:{i + 1}" for i in range(len(texts))]
        splits[split_name] = Split(split_name, texts, labels, sources)
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{name}: needs train and test splits, has {sorted(splits)}")
    train, test = splits["train"], splits["test"]
    validation = splits.get("validation") or splits.get("valid")
    if validation is None:
        train, validation = carve(train, validation_fraction, seed, "validation")
    validation.name = "validation"
    for other in (validation, test):
        check_labels(train, other)
    return Dataset(train, validation, test, label_order(set(train.labels)))


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                            pool_batches: int = 50) -> Iterator[list[int]]:
    """Shuffled batches of indices whose texts have similar lengths, so padding costs little.

    Indices are shuffled, cut into pools of `pool_batches` batches, each pool sorted by length and cut
    into batches, and the batches shuffled: every epoch sees a new random order, but each batch is padded
    only to its own longest text (dynamic padding), which on CPU is most of the speed.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start: start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    yield from batches
