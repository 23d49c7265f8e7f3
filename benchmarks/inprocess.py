"""The limit: what ONNX Runtime does with the package in-process, with no HTTP, queue or event loop.

Texts are tokenized and padded with the package's tokenizer (`encoder_serve.tokenization.encode`, as the
service does) and run through one InferenceSession with the thread count the service gets. For every
batch size we time tokenization + inference over consecutive batches of the test texts, twice: in
arrival order (each batch padded to its longest text, as a naive batcher would) and grouped by length
(texts sorted by token count, cut into batches, the batches shuffled: almost no padding, which is what
an offline job can do and the best a server's length-aware batcher can hope for). The limit is the best
throughput over both orders and all batch sizes; single-text latency is the median of batch size 1.

Run pinned to the server's cores, as a subprocess of benchmarks.run:
    taskset -c 0 python -m benchmarks.inprocess --package models/emotion --precision fp32 --threads 1
It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from benchmarks.workload import DEFAULT_DATA, load_texts
from encoder_serve import onnx_runtime
from encoder_serve.package import load_package
from encoder_serve.tokenization import encode, load_tokenizer

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
ORDERS = ("arrival", "length")


def time_batch_size(session, tokenizer, texts: list[str], batch_size: int, seconds: float,
                    order: str = "arrival") -> dict:
    """Tokenize + infer consecutive batches for about `seconds`; per-batch wall times in ms.
    `order` "length" groups texts of similar token counts into the same batches."""
    if order == "length":
        lengths = {t: len(ids) for t, ids in zip(texts, tokenizer.encode_batch(texts))}
        texts = sorted(texts, key=lengths.__getitem__)
    batches = [texts[i: i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    if order == "length":
        random.Random(0).shuffle(batches)  # every length in turn, not a warm run of short ones

    def batch(i: int) -> list[str]:
        return batches[i % len(batches)]

    for i in range(3):  # warm-up: first runs allocate and pick kernels
        ids, mask = encode(tokenizer, batch(i))
        onnx_runtime.run(session, ids, mask)
    times, n, begin, cpu = [], 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - begin < seconds or n < 5 or n % len(batches):  # whole passes: every length
        t0 = time.perf_counter()
        ids, mask = encode(tokenizer, batch(n))
        onnx_runtime.run(session, ids, mask)
        times.append((time.perf_counter() - t0) * 1000)
        n += 1
    cpu_ms_per_text = (time.process_time() - cpu) * 1000 / (n * batch_size)  # robust to a busy machine
    return {"batch_size": batch_size, "order": order, "batches": n, "texts_per_s": n * batch_size / (sum(times) / 1000),
            "p50_ms": statistics.median(times), "cpu_ms_per_text": cpu_ms_per_text}


def measure(package_dir: str, precision: str, threads: int, seconds: float, data=DEFAULT_DATA,
            batch_sizes=BATCH_SIZES) -> dict:
    package = load_package(package_dir)
    session = onnx_runtime.session(package.model_path(precision), threads)
    tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
    texts = load_texts(data)
    sweep = [time_batch_size(session, tokenizer, texts, b, seconds, order)
             for order in ORDERS for b in batch_sizes if order == "arrival" or b > 1]
    best = max(sweep, key=lambda r: r["texts_per_s"])
    single = next(r for r in sweep if r["batch_size"] == 1)
    return {"precision": precision, "threads": threads, "sweep": sweep, "best_batch_size": best["batch_size"],
            "best_order": best["order"],
            "texts_per_s": best["texts_per_s"], "cpu_ms_per_text": best["cpu_ms_per_text"],
            "single_text_p50_ms": single["p50_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per batch size")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    args = parser.parse_args()
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    print(json.dumps(measure(args.package, args.precision, args.threads, args.seconds, args.data, sizes)))


if __name__ == "__main__":
    main()
