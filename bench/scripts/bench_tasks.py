"""Multi-task sampling cost: balanced sample(256) over 10 tasks against a plain sample(256) of one buffer.

    nice -n 10 python -m bench.scripts.bench_tasks            # from the repository root

CartPole rows (obs float32[4], action int64, reward float32, next_obs float32[4], done bool), 1e6 rows in all: a
plain ReplayBuffer(1e6) against ReplayBuffer(1e6, tasks=10) holding 1e5 per task, both full; the same for
PrioritizedReplayBuffer (priorities random, beta 0.4), where the multi-task batch also computes two-level weights.
Each figure: the median over rounds (which alternate the two buffers) of the mean time of a sample(256) call, in
microseconds; the ratio multi-task / plain is the figure of merit (issue 16's target: <= 1.3).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import fastreplay as fr

FIELDS = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
          "next_obs": ((4,), np.float32), "done": ((), np.bool_)}
N, K, B = 1_000_000, 10, 256


def rows(n, rng):
    return {"obs": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.integers(0, 2, n),
            "reward": rng.random(n).astype(np.float32), "next_obs": rng.normal(size=(n, 4)).astype(np.float32),
            "done": rng.random(n) < 0.01}


def build(prioritized, tasks):
    rng = np.random.default_rng(0)
    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    buf = cls(N, FIELDS, seed=0, **({"tasks": tasks} if tasks else {}))
    for t in range(tasks or 1):
        for _ in range(10):
            r = rows(N // (tasks or 1) // 10, rng)
            buf.add(**r, **({"task": t} if tasks else {}))
    if prioritized:
        idx = np.arange(N)
        buf.update_priorities(idx, rng.uniform(0.1, 10.0, N))
    return buf


def time_calls(fn, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json")
    args = ap.parse_args()
    out = []
    for prioritized in (False, True):
        plain, multi = build(prioritized, None), build(prioritized, K)
        if prioritized:
            f_plain = lambda: plain.sample(B, 0.4)  # noqa: E731
            f_multi = lambda: multi.sample(B, 0.4, tasks="balanced")  # noqa: E731
        else:
            f_plain = lambda: plain.sample(B)  # noqa: E731
            f_multi = lambda: multi.sample(B, tasks="balanced")  # noqa: E731
        tp, tm = [], []
        for _ in range(args.rounds):
            tp.append(time_calls(f_plain, args.calls))
            tm.append(time_calls(f_multi, args.calls))
        p, m = statistics.median(tp), statistics.median(tm)
        kind = "prioritized" if prioritized else "uniform"
        print(f"{kind:>11}: plain sample({B}) {p:7.1f} us   balanced over {K} tasks {m:7.1f} us   ratio {m / p:.2f}")
        out.append({"kind": kind, "plain_us": p, "tasks_us": m, "ratio": m / p})
        del plain, multi
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
