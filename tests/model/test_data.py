"""Data loading: any dataset and label set works, and bad data stops with the file and line to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoder_serve.model.data import DataError, length_bucketed_batches, load_dataset


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def dataset_dir(tmp_path: Path, train=None, test=None, validation=None) -> Path:
    rows = [{"text": f"text {i}", "label": ["pos", "neg", "mid"][i % 3]} for i in range(30)]
    write_jsonl(tmp_path / "train.jsonl", train if train is not None else rows)
    write_jsonl(tmp_path / "test.jsonl", test if test is not None else rows[:6])
    if validation is not None:
        write_jsonl(tmp_path / "validation.jsonl", validation)
    return tmp_path


def test_labels_come_from_train_in_alphabetical_order_and_validation_is_carved_when_absent(tmp_path):
    data = load_dataset(dataset_dir(tmp_path), seed=3)
    assert data.label_names == ["mid", "neg", "pos"]
    assert (len(data.train), len(data.validation), len(data.test)) == (27, 3, 6)
    assert set(data.train.texts).isdisjoint(data.validation.texts)
    again = load_dataset(tmp_path, seed=3)
    assert again.validation.texts == data.validation.texts  # seeded: the same carve every time


def test_integer_labels_sort_numerically(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 11} for i in range(44)]
    data = load_dataset(dataset_dir(tmp_path, train=rows, test=rows[:11]))
    assert data.label_names == [str(i) for i in range(11)]


def test_csv_with_other_column_names_loads(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text('review,stars\n"good, really",5\nbad,1\n"meh",3\nfine,5\n'
                                               'awful,1\nok,3\ngreat,5\nworse,1\nso so,3\nyes,5\n')
    data = load_dataset(tmp_path, text_column="review", label_column="stars")
    assert data.label_names == ["1", "3", "5"]
    assert "good, really" in data.train.texts + data.validation.texts


@pytest.mark.parametrize("case,expected", [
    ("missing train file", r"no train\.jsonl or train\.csv"),
    ("empty train file", r"train\.jsonl: no examples"),
    ("invalid JSON line", r"train\.jsonl:3: invalid JSON"),
    ("missing text column", r"train\.jsonl:2: missing column 'text'"),
    ("label not in train", r"test\.jsonl:2: label 'angry' does not appear in the training data"),
    ("validation label not in train", r"validation\.jsonl:1: label 'x' does not appear"),
    ("missing csv column", r"train\.csv:1: missing column 'label'"),
    ("no such path", r"no such file or directory"),
])
def test_bad_data_stops_with_an_error_naming_file_and_line(tmp_path, case, expected):
    good = {"text": "hello", "label": "pos"}
    data = tmp_path
    if case == "missing train file":
        write_jsonl(tmp_path / "test.jsonl", [good])
    elif case == "empty train file":
        (tmp_path / "train.jsonl").write_text("")
        write_jsonl(tmp_path / "test.jsonl", [good])
    elif case == "invalid JSON line":
        dataset_dir(tmp_path, train=[good, good, '{"text": "oops", label: 1}'] + [good] * 10)
    elif case == "missing text column":
        dataset_dir(tmp_path, train=[good, {"sentence": "x", "label": "pos"}] + [good] * 10)
    elif case == "label not in train":
        dataset_dir(tmp_path, test=[good, {"text": "grr", "label": "angry"}])
    elif case == "validation label not in train":
        dataset_dir(tmp_path, validation=[{"text": "?", "label": "x"}])
    elif case == "missing csv column":
        (tmp_path / "train.csv").write_text("text,stars\nhello,5\n")
        (tmp_path / "test.csv").write_text("text,stars\nhello,5\n")
    elif case == "no such path":
        data = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(data)
    if case != "no such path":
        assert str(tmp_path) in str(error.value)  # the full path, not just a file name


def test_length_bucketed_batches_cover_every_index_once_with_similar_lengths():
    import random

    rng = random.Random(0)
    lengths = [rng.randrange(3, 60) for _ in range(1000)]
    batches = list(length_bucketed_batches(lengths, batch_size=32, rng=random.Random(1)))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 32 would span most of 3..60


def test_a_hub_name_without_datasets_installed_says_what_to_install():
    try:
        import datasets  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(DataError, match=r"dair-ai/emotion.*pip install 'encoder-serve\[hub\]'"):
            load_dataset("dair-ai/emotion")
    else:
        pytest.skip("datasets is installed; this test covers installs without it")
