"""Stable-Baselines3's ReplayBuffer against fastreplay.sb3.ReplayBuffer through SB3's API: add() of one CartPole step
and sample(128) at capacity 10k, one env; 15 interleaved rounds (5000 adds, 500 samples each), medians in us.
Run from the repository root:

    OMP_NUM_THREADS=1 python -m bench.scripts.bench_sb3_add
"""
import statistics
import time

import gymnasium as gym
import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer

import fastreplay.sb3 as frs


def main() -> None:
    obs_space, act_space = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2)
    bufs = {"sb3": SB3Buffer(10000, obs_space, act_space, "cpu"), "fastreplay": frs.ReplayBuffer(10000, obs_space,
                                                                                                  act_space, "cpu")}
    o, a = np.zeros((1, 4), np.float32), np.zeros((1,), np.int64)
    r, d, infos = np.zeros(1, np.float32), np.zeros(1, bool), [{}]

    def per_call(fn, n):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return (time.perf_counter_ns() - t0) / n / 1e3

    res = {f"{k} {op}": [] for k in bufs for op in ("add", "sample(128)")}
    for _ in range(15):
        for k, b in bufs.items():
            res[f"{k} add"].append(per_call(lambda: b.add(o, o, a, r, d, infos), 5000))
            res[f"{k} sample(128)"].append(per_call(lambda: b.sample(128), 500))
    for k, v in res.items():
        print(f"{k}: {statistics.median(v):.2f} us")


if __name__ == "__main__":
    main()
