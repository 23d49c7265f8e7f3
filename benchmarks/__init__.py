"""Benchmarks: the service against the hardware's limit, itself with batching off, and a naive baseline.

`python -m benchmarks.run` (= `make bench`) measures everything in one run on one machine and writes
benchmarks/results/{results.json, results.md, *.png}; `python -m benchmarks.profile` samples the service
with py-spy under load. Modules:

    machine     what ran where: CPU model, the server/client core split, process CPU accounting
    workload    the texts every contender is fed (emotion test split, shuffled with a fixed seed)
    inprocess   the limit: ONNX Runtime in-process on the same cores, tokenization included, one batch on
                every thread or one single-threaded batch per thread at once
    naive_app   the naive baseline: FastAPI running the PyTorch model once per request
    servers     start a contender as a pinned subprocess and wait until it answers
    loadgen     closed-loop load with wrk (wrk_rotate.lua), client and server CPU accounted
    goals       the performance goals as ratios of numbers from the same run
    report      results.md and the throughput-latency plots
    sweep       one service setting at several values, interleaved rounds (python -m benchmarks.sweep)
"""
