"""Concurrency benchmarks (issue 4): multi-threaded sampling, writers under load, and prefetch in a training loop.

Run from the repository root: python -m bench.scripts.bench_concurrency [--quick]
(prints a markdown table; --json PATH writes the figures)
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np

import fastreplay as fr
from tests._rows import ATARI, CARTPOLE, run_for


def rows(fields, n, rng):
    out = {}
    for k, (shape, dt) in fields.items():
        if np.dtype(dt) == np.uint8:
            out[k] = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
        else:
            out[k] = np.zeros((n,) + shape, dt)
    return out


def atari_buffer(fill=50_000):
    buf = fr.ReplayBuffer(100_000, ATARI, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(fill // 1000):
        buf.add(**rows(ATARI, 1000, rng))
    return buf


def sampling_threads(buf, threads, seconds, batch=32):
    """Batches per second from `threads` Python threads sampling at once."""
    counts = [0] * threads

    def work(stop, i):
        while not stop.is_set():
            buf.sample(batch)
            counts[i] += 1

    elapsed = run_for(seconds, [functools.partial(work, i=i) for i in range(threads)])
    return sum(counts) / elapsed


def writers_and_sampler(seconds, batch=256):
    """Two writer threads add CartPole rows (16 per call) while a third thread samples; rows/s and latency."""
    buf = fr.ReplayBuffer(1_000_000, CARTPOLE, seed=0)
    rng = np.random.default_rng(0)
    buf.add(**rows(CARTPOLE, 100_000, rng))
    added = [0, 0]
    lat = []
    chunk = rows(CARTPOLE, 16, rng)

    def writer(stop, i):
        while not stop.is_set():
            buf.add(**chunk)
            added[i] += 16

    def sampler(stop):
        while not stop.is_set():
            t = time.perf_counter_ns()
            buf.sample(batch)
            lat.append(time.perf_counter_ns() - t)

    el = run_for(seconds, [functools.partial(writer, i=0), functools.partial(writer, i=1), sampler])
    lat_us = np.array(lat) / 1e3
    # Baseline: the same sampler alone.
    alone = []
    for _ in range(20000):
        t = time.perf_counter_ns()
        buf.sample(batch)
        alone.append(time.perf_counter_ns() - t)
    alone_us = np.array(alone) / 1e3
    return {
        "rows_per_s": sum(added) / el,
        "samples_per_s": len(lat) / el,
        "p50_us": float(np.percentile(lat_us, 50)),
        "p99_us": float(np.percentile(lat_us, 99)),
        "alone_p50_us": float(np.percentile(alone_us, 50)),
        "alone_p99_us": float(np.percentile(alone_us, 99)),
    }


def make_compute(target_ms=1.0):
    """A CPU-bound step that releases the GIL (a single-threaded float32 matmul), sized to ~target_ms."""
    n = 64
    while True:
        a = np.ones((n, n), np.float32)
        t = time.perf_counter()
        for _ in range(20):
            a @ a
        ms = (time.perf_counter() - t) / 20 * 1e3
        if ms >= target_ms or n > 2048:
            break
        n = int(n * 1.25)
    reps = max(1, round(target_ms / ms))
    return lambda: [a @ a for _ in range(reps)]


def training_loop(buf, steps, prefetch, compute, batch=32, **kw):
    """Fraction of each step spent waiting for the buffer, with and without prefetch."""
    wait = 0.0
    t0 = time.perf_counter()
    if prefetch:
        with buf.prefetch(batch, depth=4, threads=1, **kw) as it:
            for _ in range(steps):
                t = time.perf_counter()
                b = next(it)
                wait += time.perf_counter() - t
                compute()
    else:
        for _ in range(steps):
            t = time.perf_counter()
            b = buf.sample(batch, **kw)
            wait += time.perf_counter() - t
            compute()
    total = time.perf_counter() - t0
    return {"wait_share": wait / total, "step_ms": total / steps * 1e3, "wait_us_per_step": wait / steps * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--json", help="write the figures to this path")
    a = ap.parse_args()
    secs = 1.0 if a.quick else 3.0
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(1)
    except ImportError:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = {}
    buf = atari_buffer()
    one = sampling_threads(buf, 1, secs)
    two = sampling_threads(buf, 2, secs)
    res["atari_sample32_1_thread_per_s"] = one
    res["atari_sample32_2_threads_per_s"] = two
    res["two_thread_ratio"] = two / one
    res["writers_and_sampler"] = writers_and_sampler(secs)
    compute = make_compute(1.0)
    steps = 500 if a.quick else 2000
    res["loop_atari_no_prefetch"] = training_loop(buf, steps, False, compute)
    res["loop_atari_prefetch"] = training_loop(buf, steps, True, compute)
    per = fr.PrioritizedReplayBuffer(100_000, ATARI, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        per.add(**rows(ATARI, 1000, rng))
    res["loop_atari_per_no_prefetch"] = training_loop(per, steps, False, compute, beta=0.4)
    res["loop_atari_per_prefetch"] = training_loop(per, steps, True, compute, beta=0.4)
    ws = res["writers_and_sampler"]
    print("| benchmark | figure |\n|---|---|")
    print(f"| Atari sample(32), 1 Python thread | {one:,.0f} batches/s |")
    print(f"| Atari sample(32), 2 Python threads | {two:,.0f} batches/s ({two / one:.2f}x) |")
    print(f"| 2 writer threads (16 rows/add) + 1 sampler (256) | {ws['rows_per_s'] / 1e6:.2f} M rows/s added, "
          f"{ws['samples_per_s']:,.0f} samples/s |")
    print(f"| sample(256) latency under that load, p50 / p99 | {ws['p50_us']:.1f} / {ws['p99_us']:.1f} us "
          f"(alone: {ws['alone_p50_us']:.1f} / {ws['alone_p99_us']:.1f} us) |")
    for name in ["loop_atari_no_prefetch", "loop_atari_prefetch", "loop_atari_per_no_prefetch", "loop_atari_per_prefetch"]:
        r = res[name]
        print(f"| {name} (1 ms compute/step) | waiting {100 * r['wait_share']:.1f}% of the step, "
              f"{r['wait_us_per_step']:.0f} us/step |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
