"""cpprb's API: add and sample speed of fastreplay.cpprb vs cpprb itself, on the same calls.

    nice -n 10 python -m bench.scripts.bench_cpprb             # from the repository root
    nice -n 10 python -m bench.scripts.bench_cpprb --quick     # fewer repetitions

Cases: CartPole-sized rows (obs float32[4]) and Atari-sized rows (uint8[84, 84, 4] with ``next_of="obs"``, so each
frame stack is stored once) in a buffer of 100k (CartPole) or 20k (Atari) rows, filled once before timing (the
steady state of a long run: no first-touch page faults); uniform and prioritized. Timed calls:
``add`` of one row (the usual loop), ``add`` of 64 rows, ``sample(32)`` and ``sample(256)``, and, for prioritized
buffers, ``sample(256)`` followed by ``update_priorities`` of its 256 rows. Each figure is the median over several
timing rounds of the mean time per call, in microseconds.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List

import numpy as np

import cpprb
import fastreplay.cpprb as fc

CASES = {
    "cartpole": dict(size=100_000, env={"obs": {"shape": 4}, "act": {"dtype": np.int64}, "rew": {},
                                        "next_obs": {"shape": 4}, "done": {}}, next_of=None),
    "atari": dict(size=20_000, env={"obs": {"shape": (84, 84, 4), "dtype": np.uint8}, "act": {"dtype": np.int64},
                                     "rew": {}, "done": {}}, next_of="obs"),
}


def rows(case: str, n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    if case == "cartpole":
        obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    else:
        obs = rng.integers(0, 255, size=(n + 1, 84, 84, 4), dtype=np.uint8)
    single = n == 1
    out = {"obs": obs[0] if single else obs[:-1], "act": rng.integers(0, 4, n), "rew": rng.random(n).astype(np.float32),
           "next_obs": obs[1] if single else obs[1:], "done": np.zeros(n, np.float32)}
    if single:
        out = {k: (v[0] if k in ("act", "rew", "done") else v) for k, v in out.items()}
    return out


def per_call_us(fn: Callable[[], object], calls: int, rounds: int) -> float:
    times: List[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return 1e6 * float(np.median(times))


def bench(lib, case: str, prioritized: bool, calls: int, rounds: int) -> Dict[str, float]:
    spec = CASES[case]
    rb = lib.create_buffer(spec["size"], {k: dict(v) for k, v in spec["env"].items()}, next_of=spec["next_of"],
                           prioritized=prioritized)
    rng = np.random.default_rng(0)
    one, many = rows(case, 1, rng), rows(case, 64, rng)
    while rb.get_stored_size() < spec["size"]:  # steady state: a full ring (and every page touched once)
        rb.add(**many)
    res = {"add 1": per_call_us(lambda: rb.add(**one), calls, rounds),
           "add 64": per_call_us(lambda: rb.add(**many), max(calls // 16, 1), rounds)}
    for _ in range(5):  # leave a few episode ends in the next_of cache
        rb.add(**one)
        rb.on_episode_end()
    res["sample 32"] = per_call_us(lambda: rb.sample(32), calls, rounds)
    res["sample 256"] = per_call_us(lambda: rb.sample(256), max(calls // 4, 1), rounds)
    if prioritized:
        td = rng.random(256)

        def sample_update() -> None:
            s = rb.sample(256)
            rb.update_priorities(s["indexes"], td)

        res["sample+update 256"] = per_call_us(sample_update, max(calls // 4, 1), rounds)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = p.parse_args()
    calls, rounds = (200, 3) if args.quick else (2000, 7)
    print(f"cpprb {cpprb.__version__ if hasattr(cpprb, '__version__') else ''} vs fastreplay.cpprb; "
          f"microseconds per call (median of {rounds} rounds), lower is better")
    print(f"{'case':28s} {'call':18s} {'cpprb':>9s} {'fastreplay':>11s} {'speed-up':>9s}")
    for case in CASES:
        for prioritized in (False, True):
            label = f"{case} {'PER' if prioritized else 'uniform'}"
            a = bench(cpprb, case, prioritized, calls if case == "cartpole" else max(calls // 10, 20), rounds)
            b = bench(fc, case, prioritized, calls if case == "cartpole" else max(calls // 10, 20), rounds)
            for k in a:
                print(f"{label:28s} {k:18s} {a[k]:9.1f} {b[k]:11.1f} {a[k] / b[k]:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
