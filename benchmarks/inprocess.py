"""The limit: what ONNX Runtime does with the package in-process, with no HTTP, queue or event loop.

Texts are tokenized and padded with the package's tokenizer (`encoder_serve.tokenization.Encoder`, as the
service does) and run through ONNX Runtime on the server's cores. For every batch size we time
tokenization + inference over consecutive batches of the test texts, twice: in arrival order (each batch
padded to its longest text, as a naive batcher would) and grouped by length (texts sorted by token count,
cut into batches, the batches shuffled: almost no padding, which is what an offline job can do and the
best a server's length-aware batcher can hope for). And in two arrangements of the threads: one batch at
a time on every thread (one session, as many intra-op threads), and as many batches at once as there are
threads, each on one thread (what the service does; on a small encoder on CPU it does more per second).
The limit is the best throughput over orders, arrangements and batch sizes; single-text latency is the
median of batch size 1, one batch at a time on every thread.

Run pinned to the server's cores, as a subprocess of benchmarks.run:
    taskset -c 0 python -m benchmarks.inprocess --package models/emotion --precision fp32 --threads 1
It prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import threading
import time

from benchmarks.workload import DEFAULT_DATA, load_texts
from encoder_serve import onnx_runtime
from encoder_serve.package import load_package
from encoder_serve.tokenization import Encoder, load_tokenizer

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
ORDERS = ("arrival", "length")


def time_batch_size(session, encoder: Encoder, texts: list[str], batch_size: int, seconds: float,
                    order: str = "arrival", lanes: int = 1) -> dict:
    """Tokenize + infer consecutive batches for about `seconds`; per-batch wall times in ms.
    `order` "length" groups texts of similar token counts into the same batches; `lanes` > 1 runs that many
    batches at once, each in a thread of its own (ONNX Runtime releases the GIL)."""
    if order == "length":
        lengths = {t: len(ids) for t, ids in zip(texts, encoder.ids(texts)[0])}
        texts = sorted(texts, key=lengths.__getitem__)
    batches = [texts[i: i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    if order == "length":
        random.Random(0).shuffle(batches)  # every length in turn, not a warm run of short ones

    def batch(i: int) -> list[str]:
        return batches[i % len(batches)]

    for i in range(3):  # warm-up: first runs allocate and pick kernels
        ids, mask = encoder.encode(batch(i))
        onnx_runtime.run(session, ids, mask)
    if lanes > 1:
        return time_lanes(session, encoder, batches, batch_size, seconds, order, lanes)
    times, n, begin, cpu = [], 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - begin < seconds or n < 5 or n % len(batches):  # whole passes: every length
        t0 = time.perf_counter()
        ids, mask = encoder.encode(batch(n))
        onnx_runtime.run(session, ids, mask)
        times.append((time.perf_counter() - t0) * 1000)
        n += 1
    cpu_ms_per_text = (time.process_time() - cpu) * 1000 / (n * batch_size)  # robust to a busy machine
    return {"batch_size": batch_size, "order": order, "lanes": 1, "batches": n,
            "texts_per_s": n * batch_size / (sum(times) / 1000), "p50_ms": statistics.median(times),
            "cpu_ms_per_text": cpu_ms_per_text}


def time_lanes(session, encoder: Encoder, batches: list[list[str]], batch_size: int, seconds: float, order: str,
               lanes: int) -> dict:
    """`lanes` threads take the next batch as soon as theirs is done, for whole passes over `batches`;
    throughput is texts over wall time (the batches overlap, so their own times do not add up)."""
    taken = itertools.count()  # next() on a count is atomic under the GIL
    stop_at = [float("inf")]  # the first pass boundary drawn after `seconds`: no batch from there on runs
    times: list[float] = []
    begin, cpu = time.perf_counter(), time.process_time()

    def lane() -> None:
        while True:
            n = next(taken)
            if n >= stop_at[0]:
                return
            if n % len(batches) == 0 and n and time.perf_counter() - begin >= seconds:
                stop_at[0] = n
                return
            t0 = time.perf_counter()
            ids, mask = encoder.encode(batches[n % len(batches)])
            onnx_runtime.run(session, ids, mask)
            times.append((time.perf_counter() - t0) * 1000)

    workers = [threading.Thread(target=lane) for _ in range(lanes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - begin
    n = len(times)
    return {"batch_size": batch_size, "order": order, "lanes": lanes, "batches": n,
            "texts_per_s": n * batch_size / wall, "p50_ms": statistics.median(times),
            "cpu_ms_per_text": (time.process_time() - cpu) * 1000 / (n * batch_size)}


def measure(package_dir: str, precision: str, threads: int, seconds: float, data=DEFAULT_DATA,
            batch_sizes=BATCH_SIZES) -> dict:
    # as the service's launcher sets it: texts the fast path leaves to the tokenizer are tokenized in the
    # calling thread, not by the library's thread pool on the cores the batches need
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    package = load_package(package_dir)
    encoder = Encoder(load_tokenizer(package.tokenizer_path, package.max_length))
    texts = load_texts(data)
    sweep = []
    for lanes in sorted({1, threads}):  # one batch on every thread; one single-threaded batch per thread
        session = onnx_runtime.session(package.model_path(precision), threads // lanes)
        sweep += [time_batch_size(session, encoder, texts, b, seconds, order, lanes)
                  for order in ORDERS for b in batch_sizes if order == "arrival" or b > 1]
    best = max(sweep, key=lambda r: r["texts_per_s"])
    single = next(r for r in sweep if r["batch_size"] == 1 and r["lanes"] == 1)
    return {"precision": precision, "threads": threads, "sweep": sweep, "best_batch_size": best["batch_size"],
            "best_order": best["order"], "best_lanes": best["lanes"],
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
