"""Two builds of fastreplay side by side, in one run: CartPole add(1), sample(256) and the PER sample+update loop
at capacity 1e6, each build in its own subprocess, rounds alternating A, B, A, B, ... so that both see the same
machine load. Prints the median per-call time of each build and the ratio B / A.

Run from the repository root, with A a directory holding an importable ``fastreplay`` package (its compiled
``_core`` included), e.g. a copy of an older installed build:

    python -m bench.scripts.bench_ab --a /tmp/base_pkg [--b DIR] [--rounds 7]

``--b`` defaults to the fastreplay this interpreter imports.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
PKG = sys.argv[1]
if PKG:  # import fastreplay from PKG, also when an editable install would redirect the import
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, PKG)
import numpy as np
import fastreplay as fr
assert not PKG or fr.__file__.startswith(PKG), (fr.__file__, PKG)
CARTPOLE = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
            "next_obs": ((4,), np.float32), "done": ((), np.bool_)}
CAP = 1_000_000
rng = np.random.default_rng(0)
rows = {"obs": rng.standard_normal((CAP, 4), dtype=np.float32), "action": rng.integers(0, 2, CAP),
        "reward": np.ones(CAP, np.float32), "next_obs": rng.standard_normal((CAP, 4), dtype=np.float32),
        "done": np.zeros(CAP, bool)}
uni = fr.ReplayBuffer(CAP, CARTPOLE, seed=0); uni.add(**rows)
per = fr.PrioritizedReplayBuffer(CAP, CARTPOLE, seed=0); per.add(**rows)
o, a, r, o2 = np.zeros(4, np.float32), 1, 1.0, np.zeros(4, np.float32)
td = np.abs(rng.standard_normal(256))

def per_call(fn, n):
    for _ in range(min(n, 1000)):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6

def loop():
    b = per.sample(256, 0.4)
    per.update_priorities(b, td)

print(json.dumps({
    "add(1)": per_call(lambda: uni.add(obs=o, action=a, reward=r, next_obs=o2, done=False), 200_000),
    "sample(256)": per_call(lambda: uni.sample(256), 20_000),
    "PER sample+update(256)": per_call(loop, 5_000),
}))
"""


def run(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="directory with build A's fastreplay package (the baseline)")
    ap.add_argument("--b", default="", help="directory with build B's package (default: the installed one)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    results = {"A": [], "B": []}
    for _ in range(args.rounds):
        results["A"].append(run(args.a))
        results["B"].append(run(args.b))
    print("| operation (1e6, CartPole rows) | A | B | B / A |")
    print("|---|---|---|---|")
    for op in results["A"][0]:
        a = statistics.median(r[op] for r in results["A"])
        b = statistics.median(r[op] for r in results["B"])
        print(f"| {op} | {a:.2f} µs | {b:.2f} µs | {b / a:.3f} |")
    print(f"\nmedians over {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
