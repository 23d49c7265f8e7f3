"""What tokenization costs: the tokenizer's full pipeline against the service's fast path, per text.

    python -m benchmarks.tokenize_cost [--package models/emotion] [--data data/emotion] [--passes 5]

The package's tokenizer as the service loads it, over the emotion test split in the benchmarks' fixed
shuffled order, in one thread (the service's workers run with TOKENIZERS_PARALLELISM=false): one text per
call, as a one-text request is tokenized, and batches of 8, as an eight-text request is. Each way is timed
as CPU time of this thread per text, the best of `--passes` whole passes, the ways interleaved pass by pass;
the ids are compared text for text first. Writes tokenize_cost.json and .md to --out (default
benchmarks/results/tokenize_cost).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.machine import CoreSplit, describe
from benchmarks.workload import DEFAULT_DATA, REPO, load_texts, shown

OUT = REPO / "benchmarks" / "results" / "tokenize_cost"


def ways(tokenizer) -> dict[str, Callable[[Sequence[str]], object]]:
    from encoder_serve.tokenization import Encoder

    encoder = Encoder(tokenizer)
    if not encoder.fast:
        raise SystemExit("this package's tokenizer has no fast path (not the BERT uncased pipeline)")
    return {"full pipeline (encode_batch)": lambda texts: [e.ids for e in tokenizer.encode_batch(list(texts))],
            "fast path (Encoder.ids)": lambda texts: encoder.ids(texts)[0]}


def measure(package: str, data: Path, passes: int, texts_per_call: Sequence[int] = (1, 8)) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from encoder_serve.package import load_package
    from encoder_serve.tokenization import load_tokenizer

    loaded = load_package(package)
    tokenizer = load_tokenizer(loaded.tokenizer_path, loaded.max_length)
    texts = load_texts(data)
    contenders = ways(tokenizer)
    full, fast = contenders.values()
    if full(texts) != fast(texts):
        raise SystemExit("the fast path's ids differ from the full pipeline's")
    rows = []
    for k in texts_per_call:
        calls = [texts[i: i + k] for i in range(0, len(texts) - k + 1, k)]
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(passes):
            for name, way in contenders.items():
                started = time.thread_time()
                for call in calls:
                    way(call)
                best[name] = min(best[name], (time.thread_time() - started) / (len(calls) * k))
        rows += [{"way": name, "texts_per_call": k, "us_per_text": 1e6 * s} for name, s in best.items()]
    return {"machine": describe(CoreSplit.default()), "package": shown(package), "texts": len(texts), "passes": passes,
            "ascii_share": sum(t.isascii() for t in texts) / len(texts), "rows": rows}


def report(results: dict) -> str:
    machine = results["machine"]
    setting = (f"Measured {machine['date']}, {machine['cpu_model']}, Python {machine['python']}, commit "
               f"{machine['git_commit']}; package `{results['package']}`, {results['texts']:,} emotion test texts "
               f"({100 * results['ascii_share']:.0f}% of them ASCII), best of {results['passes']} passes, one "
               "thread. `python -m benchmarks.tokenize_cost`")
    lines = ["# Tokenization: the full pipeline against the fast path", "", setting, "",
             "| way | texts per call | CPU µs per text |", "| --- | ---: | ---: |"]
    lines += [f"| {r['way']} | {r['texts_per_call']} | {r['us_per_text']:.1f} |" for r in results["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(REPO / "models" / "emotion"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = measure(args.package, args.data, args.passes)
    text = report(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenize_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "tokenize_cost.md").write_text(text)


if __name__ == "__main__":
    main()
