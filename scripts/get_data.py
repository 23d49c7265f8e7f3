"""Put the emotion dataset (dair-ai/emotion) into a directory as train/validation/test JSONL: `make data`.

    python3 scripts/get_data.py --out data/emotion                  # from $EMOTION_DATA, else the hub
    python3 scripts/get_data.py --out data/emotion --from DIR       # copy DIR/{train,validation,test}.jsonl
    python3 scripts/get_data.py --out data/emotion --check-hub      # exit 0 only if the hub answers

Each line is {"text": ..., "label": <label name>}, the format `encoder-serve train --data` reads. Copying
needs nothing beyond the standard library; downloading needs the `datasets` package (the `hub` extra).
Every file is checked (JSON per line, the two keys, six label names) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HUB_NAME = "dair-ai/emotion"
HUB_CONFIG = "split"
HUB = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")  # `datasets` honours it too
HUB_PROBE = f"{HUB}/api/datasets/{HUB_NAME}"
SPLITS = ("train", "validation", "test")
LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # the hub's integer ids, in order
HOW = ("set EMOTION_DATA to a directory holding train.jsonl, validation.jsonl and test.jsonl (one "
       '{"text": ..., "label": ...} object per line) and run `make data` again, or run it where '
       "huggingface.co is reachable")


def fail(message: str) -> None:
    print(f"make data: {message}", file=sys.stderr)
    sys.exit(2)


def check(path: Path) -> int:
    """Rows in a split file, after checking every line; exits with the file and line on the first bad one."""
    rows = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not JSON ({e})")
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or row.get("label") not in LABELS:
                fail(f"{path}:{number}: expected {{\"text\": str, \"label\": one of {list(LABELS)}}}")
            rows += 1
    if not rows:
        fail(f"{path}: empty")
    return rows


def copy_from(source: Path, staging: Path) -> None:
    missing = [s for s in SPLITS if not (source / f"{s}.jsonl").is_file()]
    if missing:
        fail(f"{source} has no {', '.join(s + '.jsonl' for s in missing)}; {HOW}")
    for split in SPLITS:
        shutil.copyfile(source / f"{split}.jsonl", staging / f"{split}.jsonl")


def hub_reachable(timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(HUB_PROBE, method="HEAD"), timeout=timeout):
            return True
    except (urllib.error.URLError, OSError):
        return False


def download(staging: Path) -> None:
    try:
        import datasets
    except ImportError:
        fail(f"downloading {HUB_NAME} needs the `datasets` package (pip install 'encoder-serve[hub]'); "
             f"or {HOW}")
    try:
        loaded = datasets.load_dataset(HUB_NAME, HUB_CONFIG)
    except Exception as e:  # noqa: BLE001 (network, hub and cache errors all end the same way)
        fail(f"could not download {HUB_NAME} from the Hugging Face hub ({type(e).__name__}: {e}); {HOW}")
    for split in SPLITS:
        with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in loaded[split]:
                f.write(json.dumps({"text": row["text"], "label": LABELS[row["label"]]}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to fill (replaced when complete)")
    parser.add_argument("--from", dest="source", type=Path, default=os.environ.get("EMOTION_DATA") or None,
                        help="copy from this directory (default: $EMOTION_DATA; unset: download)")
    parser.add_argument("--check-hub", action="store_true", help="only check that the hub answers")
    args = parser.parse_args(argv)
    if args.check_hub:
        if not hub_reachable():
            fail(f"EMOTION_DATA is not set and {HUB_PROBE} is not reachable: {HOW}")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=f".{args.out.name}.") as tmp:
        staging = Path(tmp) / args.out.name
        staging.mkdir()
        if args.source is not None:
            copy_from(args.source, staging)
            origin = f"copied from {args.source}"
        else:
            download(staging)
            origin = f"downloaded {HUB_NAME} ({HUB_CONFIG}) from the Hugging Face hub"
        counts = {split: check(staging / f"{split}.jsonl") for split in SPLITS}
        if args.out.exists():
            shutil.rmtree(args.out)
        staging.rename(args.out)
    print(f"{args.out}: {origin}; " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
