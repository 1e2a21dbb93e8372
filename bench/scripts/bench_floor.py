"""How far ``sample(256)`` is from the memory floor (issue 19): CartPole rows at capacities 1e4, 1e5 and 1e6, in one
run, packed records (``layout="auto"``, the default) against one column per field (``layout="columnar"``, the
layout before row groups), against two floors of the same rows:

- numpy gather: ``np.take`` of 256 random rows from each of the five columns (what a numpy buffer does);
- record gather: ``np.take`` of 256 random rows from one array of 64-byte records (256 random cache lines, the
  fewest a batch can touch; numpy's per-call overhead included);

(the gathers take a new batch of random rows at each call, from 1,024 batches drawn in advance, as ``sample``
draws new ones: a fixed batch of rows would stay in the cache);
- copy: a plain copy of the same 11,520 bytes (256 x 45), contiguous and in cache.

Run from the repository root:

    python -m bench.scripts.bench_floor [--quick] [--out PREFIX]

writes ``bench/results/floor.md`` and ``.json`` (``--out PREFIX``: ``PREFIX.md``/``.json``; ``--quick``: fewer
rounds, nothing written unless ``--out`` is given). Timing: every variant of one capacity is measured in
interleaved rounds (rotating order, 15 rounds); each figure is the median over rounds of the mean time per call.
``sample(256, out=batch)`` refills one batch (no allocation), as a training loop that keeps its batch does; the
plain ``sample(256)`` (a new batch each call) is given three ways: the batch dropped at once, the usual loop
``b = buf.sample(256)`` (the previous batch is alive during the call), both of which the batch recycler serves
(csrc/bindings/batch_recycler.h), and with the last 8 batches held (nothing recyclable: a fresh batch each call).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import itertools
import json
import os
import platform
from typing import Dict

import numpy as np

import fastreplay as fr
from bench.timing import rounds

FIELDS = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
          "next_obs": ((4,), np.float32), "done": ((), np.bool_)}
ROW_BYTES = 45
B = 256


def filled(cap: int, layout: str) -> fr.ReplayBuffer:
    buf = fr.ReplayBuffer(cap, FIELDS, seed=0, layout=layout)
    rng = np.random.default_rng(0)
    n = min(cap, 100_000)
    for _ in range(0, cap, n):
        buf.add(obs=rng.random((n, 4), np.float32), action=rng.integers(0, 2, n), reward=rng.random(n, np.float32),
                next_obs=rng.random((n, 4), np.float32), done=rng.random(n) < 0.05)
    return buf


def measure(cap: int, n_rounds: int, budget: float) -> Dict[str, float]:
    packed, columnar = filled(cap, "auto"), filled(cap, "columnar")
    out_p, out_c = packed.sample(B), columnar.sample(B)
    cols = [np.ascontiguousarray(v) for v in columnar.storage.values()]
    records = np.ones(cap * 64, np.uint8).view(np.dtype("V64"))  # written: np.zeros would map one zero page
    # fresh random rows at every call, as sample draws them (a fixed batch of indices would stay in the cache):
    # 1024 batches drawn in advance, taken in turn
    pool = np.random.default_rng(1).integers(0, cap, (1024, B))
    turn = itertools.cycle(range(1024))
    src = np.ones(B * ROW_BYTES, np.uint8)
    dst = np.empty_like(src)
    held = [None]  # b = buf.sample(B): the previous batch lives until the call returns
    last8 = collections.deque(maxlen=8)  # more batches held than the recycler keeps: every call builds a new one

    def numpy_gather():
        idx = pool[next(turn)]
        return [np.take(c, idx, axis=0) for c in cols]

    calls = {
        "sample_packed": lambda: packed.sample(B, out=out_p),
        "sample_columnar": lambda: columnar.sample(B, out=out_c),
        "sample_packed_new": lambda: packed.sample(B),
        "sample_packed_loop": lambda: held.__setitem__(0, packed.sample(B)),
        "sample_packed_fresh": lambda: last8.append(packed.sample(B)),
        "numpy_gather": numpy_gather,
        "record_gather": lambda: np.take(records, pool[next(turn)]),
        "copy": lambda: np.copyto(dst, src),
    }
    return {k: v["seconds"] for k, v in rounds(calls, budget, 200, n_rounds).items()}


def us(s: float) -> str:
    return f"{s * 1e6:.2f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    caps = [10_000, 100_000, 1_000_000]
    n_rounds, budget = (5, 1.0) if a.quick else (15, 6.0)
    results = []
    for cap in caps:
        r = measure(cap, n_rounds, budget)
        results.append({"capacity": cap, **r})
        print(json.dumps(results[-1]), flush=True)
    lines = [
        "# sample(256) against the memory floor (CartPole rows)",
        "",
        f"`python -m bench.scripts.bench_floor` ({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, shared VM; load average "
        f"{os.getloadavg()[0]:.1f} at the end). Setup: the script's docstring. Median of 15 interleaved rounds.",
        "",
        "| capacity | sample(256, out=) packed | columnar | packed, new batch (dropped) | `b = sample(256)` loop | "
        "new batch, last 8 held (no recycling) | numpy gather (5 columns) | "
        "record gather (256 lines, numpy) | copy of the same bytes | columnar / packed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['capacity']:.0e} | {us(r['sample_packed'])} | {us(r['sample_columnar'])} | "
                     f"{us(r['sample_packed_new'])} | {us(r['sample_packed_loop'])} | {us(r['sample_packed_fresh'])} | "
                     f"{us(r['numpy_gather'])} | {us(r['record_gather'])} | "
                     f"{us(r['copy'])} | {r['sample_columnar'] / r['sample_packed']:.2f}x |")
    md = "\n".join(lines) + "\n"
    print(md)
    prefix = a.out or (None if a.quick else "bench/results/floor")
    if prefix:
        with open(prefix + ".md", "w") as f:
            f.write(md)
        with open(prefix + ".json", "w") as f:
            json.dump({"results": results, "python": platform.python_version(), "numpy": np.__version__,
                       "cpus": os.cpu_count(), "fastreplay": fr.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
