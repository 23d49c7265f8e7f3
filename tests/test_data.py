"""`make data` (scripts/get_data.py): the emotion dataset copied from EMOTION_DATA, checked line by line,
and a clear way out when there is neither a copy nor a reachable hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, SPLITS

SCRIPT = REPO / "scripts" / "get_data.py"
UNREACHABLE_HUB = "http://127.0.0.1:9"  # the discard port: nothing answers there


def make_data(out: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "EMOTION_DATA"} | {"HF_ENDPOINT": UNREACHABLE_HUB,
                                                                                   **env}
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "data", f"DATA={out}"],
                          env=environment, capture_output=True, text=True, timeout=120, check=False)


def test_make_data_copies_the_directory_named_by_emotion_data(emotion_dir, tmp_path):
    result = make_data(tmp_path / "emotion", EMOTION_DATA=str(emotion_dir))
    assert result.returncode == 0, result.stderr
    for split in SPLITS:
        assert (tmp_path / "emotion" / f"{split}.jsonl").read_bytes() == (emotion_dir / f"{split}.jsonl").read_bytes()
    assert "16000 train, 2000 validation, 2000 test" in result.stdout


def test_without_a_copy_or_a_reachable_hub_make_data_stops_at_once_naming_the_way_out(tmp_path):
    result = make_data(tmp_path / "emotion")
    assert result.returncode != 0
    assert "EMOTION_DATA" in result.stderr and "make data" in result.stderr
    assert not (tmp_path / "emotion").exists()


def test_a_bad_line_is_named_by_file_and_line_and_nothing_is_written(emotion_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(emotion_dir, source)
    with open(source / "validation.jsonl", "a") as f:
        f.write(json.dumps({"text": "fine", "label": "bored"}) + "\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "emotion"), "--from", str(source)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "validation.jsonl:2001" in result.stderr
    assert not (tmp_path / "emotion").exists()


def test_a_source_without_the_three_splits_says_which_are_missing(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "emotion"), "--from", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "train.jsonl, validation.jsonl, test.jsonl" in result.stderr and "EMOTION_DATA" in result.stderr
