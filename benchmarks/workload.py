"""The workload every contender gets: emotion test-split texts, shuffled with a fixed seed.

The same list in the same order feeds the in-process limit and the HTTP load generator, so padding
(batches padded to their longest text) costs the same everywhere.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "emotion"  # filled by `make data`


def shown(path: str | Path) -> str:
    """A path as the reader's checkout would have it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def load_texts(data_dir: str | Path = DEFAULT_DATA, seed: int = 0) -> list[str]:
    path = Path(data_dir) / "test.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"emotion test split not found: {path} (run `make data`, or pass --data)")
    with open(path) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    random.Random(seed).shuffle(texts)
    return texts


def write_bodies(texts: list[str], path: str | Path, texts_per_request: int = 1) -> Path:
    """One request body per line (what wrk_rotate.lua sends): one text, or a list of `texts_per_request`
    consecutive texts."""
    path = Path(path)
    if texts_per_request == 1:
        bodies = [{"inputs": t} for t in texts]
    else:
        bodies = [{"inputs": texts[i: i + texts_per_request]}
                  for i in range(0, len(texts) - texts_per_request + 1, texts_per_request)]
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path
