"""Multi-process replay, Ape-X style: explorer processes add while a learner process samples, one shared buffer.

    nice -n 10 python -m bench.scripts.bench_mp            # from the repository root
    nice -n 10 python -m bench.scripts.bench_mp --quick

cpprb's ``MPReplayBuffer``/``MPPrioritizedReplayBuffer`` against ``fastreplay.cpprb``'s (fastreplay's shared storage:
lock-free across processes; cpprb serialises its processes with locks), through the same cpprb API, so the same
code drives both. CartPole-sized rows (obs float32[4], capacity 100k, filled once before timing). Each explorer
adds one row per ``add`` call (cpprb's own test pattern) or 50 rows per call (Ape-X's batched sends); the learner
samples 256 rows per call and, for prioritized buffers, writes 256 priorities back. All processes start timing at
once (an event) and run for ``--seconds``; reported: rows added per second (all explorers) and batches sampled per
second, median over ``--rounds`` rounds that alternate the two libraries. On a 2-core machine 2 explorers + 1
learner oversubscribe the cores: compare the two libraries at equal settings, not the absolute figures.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from typing import Dict, List

import numpy as np

ENV = {"obs": {"shape": 4}, "act": {"dtype": np.int64}, "rew": {}, "next_obs": {"shape": 4}, "done": {}}
SIZE = 100_000


def _rows(n: int, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    return {"obs": obs, "act": rng.integers(0, 2, n), "rew": rng.random(n).astype(np.float32), "next_obs": obs,
            "done": np.zeros(n, np.float32)}


def explorer(rb, chunk: int, seconds: float, go, out) -> None:
    rows = _rows(chunk, 1)
    if chunk == 1:
        rows = {k: v[0] for k, v in rows.items()}
    go.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rb.add(**rows)
        n += chunk
    out.put(("add", n / (time.perf_counter() - t0)))


def learner(rb, prioritized: bool, seconds: float, go, out) -> None:
    go.wait()
    n, t0 = 0, time.perf_counter()
    pr = np.ones(256)
    while time.perf_counter() - t0 < seconds:
        if prioritized:
            s = rb.sample(256, beta=0.4)
            rb.update_priorities(s["indexes"], pr)
        else:
            rb.sample(256)
        n += 1
    out.put(("sample", n / (time.perf_counter() - t0)))


def run(lib: str, prioritized: bool, explorers: int, chunk: int, seconds: float) -> Dict[str, float]:
    if lib == "cpprb":
        import cpprb as m
    else:
        import fastreplay.cpprb as m
    ctx = mp.get_context("fork")
    cls = m.MPPrioritizedReplayBuffer if prioritized else m.MPReplayBuffer
    rb = cls(SIZE, ENV, ctx=ctx)
    fill = _rows(SIZE, 0)
    rb.add(**fill)
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=explorer, args=(rb, chunk, seconds, go, out)) for _ in range(explorers)]
    procs.append(ctx.Process(target=learner, args=(rb, prioritized, seconds, go, out)))
    for p in procs:
        p.start()
    time.sleep(0.5)
    go.set()
    res: Dict[str, float] = {"add": 0.0, "sample": 0.0}
    for _ in procs:
        k, v = out.get(timeout=seconds + 120)
        res[k] += v
    for p in procs:
        p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s, 1 round")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    table: List[Dict[str, object]] = []
    print(f"{'buffer':>5} {'expl':>4} {'rows/add':>8} | {'lib':>10} {'rows added/s':>13} {'batches/s':>10}")
    for prioritized in (False, True):
        for explorers, chunk in ((1, 1), (2, 1), (2, 50)):
            got: Dict[str, List[Dict[str, float]]] = {"cpprb": [], "fastreplay": []}
            for _ in range(args.rounds):
                for lib in ("cpprb", "fastreplay"):
                    got[lib].append(run(lib, prioritized, explorers, chunk, args.seconds))
            for lib, rs in got.items():
                add = statistics.median(r["add"] for r in rs)
                smp = statistics.median(r["sample"] for r in rs)
                kind = "PER" if prioritized else "uni"
                print(f"{kind:>5} {explorers:>4} {chunk:>8} | {lib:>10} {add:>13,.0f} {smp:>10,.0f}")
                table.append({"prioritized": prioritized, "explorers": explorers, "chunk": chunk, "lib": lib,
                              "rows_added_per_s": add, "batches_per_s": smp})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
