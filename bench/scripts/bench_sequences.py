"""Sequence sampling benchmark (docs/sequences.md, issue 18): ``sample_sequences(64, 80)`` at 1e5, 1e6 and 1e7
stored steps, against TorchRL's ``SliceSampler`` (torchrl 0.14.1) at the same sizes, in one run.

Run from the repository root:

    OMP_NUM_THREADS=1 python -m bench.scripts.bench_sequences [--quick] [--out PREFIX]

Prints one markdown table; a full run writes ``bench/results/sequences.md`` and ``.json`` (``--out PREFIX``
writes ``PREFIX.md``/``.json``; ``--quick`` uses 1e4, 1e5, 1e6 and writes nothing unless ``--out`` is given).

Data: small CartPole-like rows (obs float32[4], action int64, reward float32, done/truncated bool), episodes of
10-1000 steps (uniform), 10% of the ends truncations. fastreplay: ``ReplayBuffer(N, num_envs=8,
next_obs="dedup")`` filled by adds of 8 rows (8 lanes, as from a vector env; a sequence's steps are 8 rows apart),
the ring wrapped once (1.2 N steps added). TorchRL: ``ReplayBuffer(storage=LazyTensorStorage(N),
sampler=SliceSampler(num_slices=64, traj_key="episode"), batch_size=64*80)``, filled with the same steps laid out
one episode after another (TorchRL's layout; ``extend`` in chunks of 1e5), wrapped likewise. Variants:

- fastreplay ``sample_sequences(64, 80)`` (end="truncate", period 80) and ``end="drop"``;
- TorchRL ``SliceSampler`` default (``strict_length=True``: whole slices of 80 only, like "drop"; it finds the
  trajectories in storage at every sample) and with ``cache_values=True`` (the boundaries computed once; meant
  for static data, so not valid once the buffer is extended again).

Timing: ``time.perf_counter_ns`` around rounds of calls after a warm-up; each figure is the median over rounds of
the mean time per call, with the interquartile range as % of the median. The three fastreplay buffers are held at
once and measured in interleaved rounds (rotating order, 21 rounds), so that load from other processes hits every
size alike; TorchRL's buffers are built, measured and freed one size at a time. Single-threaded
(``torch.set_num_threads(1)``; run with OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
from typing import List

import numpy as np

from bench.timing import rounds

LANES = 8


def episodes(total: int, rng: np.random.Generator) -> List[int]:
    """Episode lengths (10-1000 steps) adding up to `total`."""
    out, n = [], 0
    while n < total:
        e = int(min(rng.integers(10, 1001), total - n))
        out.append(e)
        n += e
    return out


def fill_fastreplay(n: int, rng: np.random.Generator, lanes: int = LANES):
    import fastreplay as fr
    f = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
         "next_obs": ((4,), np.float32), "done": ((), np.bool_), "truncated": ((), np.bool_)}
    buf = fr.ReplayBuffer(n, f, seed=0, num_envs=lanes, next_obs="dedup")
    steps = int(1.2 * n) // lanes
    left = np.array([int(rng.integers(10, 1001)) for _ in range(lanes)])
    obs = rng.standard_normal((1024, lanes, 4)).astype(np.float32)
    act = np.zeros(lanes, np.int64)
    rew = np.ones(lanes, np.float32)
    for i in range(steps):
        left -= 1
        end = left <= 0
        trunc = end & (rng.random(lanes) < 0.1) if end.any() else end
        buf.add(obs=obs[i & 1023], action=act, reward=rew, next_obs=obs[(i + 1) & 1023], done=end & ~trunc,
                truncated=trunc)
        if end.any():
            left[end] = rng.integers(10, 1001, int(end.sum()))
    return buf


def fill_torchrl(n: int, rng: np.random.Generator, cache: bool):
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler
    sampler = SliceSampler(num_slices=64, traj_key="episode", cache_values=cache)
    rb = ReplayBuffer(storage=LazyTensorStorage(n), sampler=sampler, batch_size=64 * 80)
    total = int(1.2 * n)
    lens = episodes(total, rng)
    ep = np.repeat(np.arange(len(lens)), lens)
    chunk = 100_000
    for a in range(0, total, chunk):
        b = min(total, a + chunk)
        m = b - a
        done = np.zeros(m, bool)
        ends = np.cumsum(lens) - 1
        e = ends[(ends >= a) & (ends < b)] - a
        done[e] = True
        td = TensorDict({"obs": torch.randn(m, 4), "action": torch.zeros(m, dtype=torch.int64),
                         "reward": torch.ones(m), "episode": torch.from_numpy(ep[a:b].copy()),
                         "next": TensorDict({"done": torch.from_numpy(done)[:, None],
                                             "truncated": torch.zeros(m, 1, dtype=torch.bool)}, [m])}, [m])
        rb.extend(td)
    return rb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--lanes", type=int, default=LANES, help="fastreplay's num_envs (8: a sequence's steps are 8 "
                    "rows apart; 1: contiguous)")
    ap.add_argument("--no-peers", action="store_true", help="fastreplay only")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    sizes = [10**4, 10**5, 10**6] if args.quick else [10**5, 10**6, 10**7]
    # fastreplay: every size held at once (1e7 small rows take about 0.5 GB), measured in interleaved rounds.
    bufs = {n: fill_fastreplay(n, np.random.default_rng(n), args.lanes) for n in sizes}
    calls = {}
    for n, buf in bufs.items():
        calls[(n, "fastreplay_truncate")] = (lambda b=buf: b.sample_sequences(64, 80))
        calls[(n, "fastreplay_drop")] = (lambda b=buf: b.sample_sequences(64, 80, end="drop"))
    fast = rounds(calls, 2.0, 50, 21)
    del bufs, calls
    gc.collect()
    results = []
    for n in sizes:
        row = {"size": n, "fastreplay_truncate": fast[(n, "fastreplay_truncate")],
               "fastreplay_drop": fast[(n, "fastreplay_drop")]}
        rng = np.random.default_rng(n)
        for cache in () if args.no_peers else (False, True):  # TorchRL: one size at a time (its times differ by orders of magnitude)
            rb = fill_torchrl(n, rng, cache)
            key = "torchrl_cached" if cache else "torchrl"
            row[key] = rounds({key: lambda: rb.sample()}, 4.0 if n < 10**7 else 8.0, 2, 5)[key]
            del rb
            gc.collect()
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    base = results[0]
    lines = ["| stored steps | fastreplay sample_sequences(64, 80) | fastreplay end='drop' | TorchRL SliceSampler "
             "| TorchRL SliceSampler cache_values=True | TorchRL / fastreplay |",
             "|---|---|---|---|---|---|"]
    for r in results:
        def cell(k):
            v = r[k]
            rel = v["seconds"] / base[k]["seconds"]
            return f"{v['seconds'] * 1e6:,.0f} us (x{rel:.2f}, IQR {v['iqr_pct']:.0f}%)"
        if "torchrl" in r:
            ratio = r["torchrl"]["seconds"] / r["fastreplay_truncate"]["seconds"]
            lines.append(f"| {r['size']:.0e} | {cell('fastreplay_truncate')} | {cell('fastreplay_drop')} | "
                         f"{cell('torchrl')} | {cell('torchrl_cached')} | {ratio:,.0f}x |")
        else:
            lines.append(f"| {r['size']:.0e} | {cell('fastreplay_truncate')} | {cell('fastreplay_drop')} | - | - | - |")
    table = "\n".join(lines)
    print(table)
    cmd = "OMP_NUM_THREADS=1 python -m bench.scripts.bench_sequences" + (" --quick" if args.quick else "") + (
        f" --lanes {args.lanes}" if args.lanes != LANES else "") + (" --no-peers" if args.no_peers else "") + (
        f" --out {args.out}" if args.out else "")
    meta = {"lanes": args.lanes, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": cmd,
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "omp": os.environ.get("OMP_NUM_THREADS")}
    out = args.out or (None if args.quick else "bench/results/sequences")
    if out:
        with open(out + ".json", "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
        last = results[-1]
        flat = last["fastreplay_truncate"]["seconds"] / base["fastreplay_truncate"]["seconds"]
        with open(out + ".md", "w") as fh:
            fh.write(f"# Sequence sampling: fastreplay vs TorchRL SliceSampler\n\n`{cmd}` (fastreplay num_envs="
                     f"{args.lanes}; {meta['date']}, Python "
                     f"{meta['python']}, {meta['cpus']} CPUs, shared VM). Setup: see the script's docstring. "
                     "(xN: time relative to the smallest size.)\n\n" + table + "\n\n"
                     f"fastreplay at {last['size']:.0e} / at {base['size']:.0e}: x{flat:.2f} (target <= 1.2).\n")


if __name__ == "__main__":
    main()
