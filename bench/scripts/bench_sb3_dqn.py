"""Stable-Baselines3 DQN on CartPole: environment steps per second with SB3's replay buffer vs fastreplay's drop-in.

    nice -n 10 python -m bench.scripts.bench_sb3_dqn           # from the repository root; 50k steps, each buffer
                                                               # twice, interleaved
    nice -n 10 python -m bench.scripts.bench_sb3_dqn --steps 20000 --repeats 1 --per

Every run trains the same DQN (SB3's defaults for CartPole except a 50k buffer; seed 0) and reports the whole
``learn`` rate and the time spent inside the buffer's ``add`` and ``sample`` (timed by wrapping them), which is the
part a replay buffer can change: the rest is the environment, the Q-network and the optimizer. The best of the
repeats is kept, since other work on a shared machine only slows runs down.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env

import fastreplay.sb3 as fs


def timed(buffer_class: type) -> type:
    """A subclass of ``buffer_class`` that adds up the seconds spent in add and sample."""

    class Timed(buffer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seconds = {"add": 0.0, "sample": 0.0}
            self.calls = {"add": 0, "sample": 0}

        def add(self, *args, **kwargs):
            t = time.perf_counter()
            super().add(*args, **kwargs)
            self.seconds["add"] += time.perf_counter() - t
            self.calls["add"] += 1

        def sample(self, *args, **kwargs):
            t = time.perf_counter()
            out = super().sample(*args, **kwargs)
            self.seconds["sample"] += time.perf_counter() - t
            self.calls["sample"] += 1
            return out

    Timed.__name__ = buffer_class.__name__
    return Timed


def run(name: str, steps: int, n_envs: int, buffer_size: int) -> Dict[str, float]:
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    common = dict(buffer_size=buffer_size, learning_starts=1000, seed=0, device="cpu")
    if name == "PERDQN (fastreplay)":
        model = fs.PERDQN("MlpPolicy", env, replay_buffer_class=timed(fs.PrioritizedReplayBuffer), **common)
    else:
        cls = SB3ReplayBuffer if name == "SB3 ReplayBuffer" else fs.ReplayBuffer
        model = DQN("MlpPolicy", env, replay_buffer_class=timed(cls), **common)
    t = time.perf_counter()
    model.learn(steps)
    total = time.perf_counter() - t
    rb = model.replay_buffer
    return {
        "steps_per_s": model.num_timesteps / total,
        "total_s": total,
        "add_us": 1e6 * rb.seconds["add"] / max(rb.calls["add"], 1),
        "sample_us": 1e6 * rb.seconds["sample"] / max(rb.calls["sample"], 1),
        "buffer_share": (rb.seconds["add"] + rb.seconds["sample"]) / total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50_000, help="environment steps per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per buffer (interleaved); the best is reported")
    p.add_argument("--n-envs", type=int, default=1)
    p.add_argument("--buffer-size", type=int, default=50_000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids contention on small CPUs)")
    p.add_argument("--per", action="store_true", help="also time fastreplay.sb3.PERDQN")
    args = p.parse_args()
    th.set_num_threads(args.threads)
    names = ["SB3 ReplayBuffer", "fastreplay.sb3.ReplayBuffer"] + (["PERDQN (fastreplay)"] if args.per else [])
    best: Dict[str, Dict[str, float]] = {}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            res = run(name, args.steps, args.n_envs, args.buffer_size)
            print(f"  run {r + 1} {name:30s} {res['steps_per_s']:8.0f} steps/s", flush=True)
            if name not in best or res["steps_per_s"] > best[name]["steps_per_s"]:
                best[name] = res
    print(f"\nSB3 DQN, CartPole-v1, {args.steps} steps, n_envs={args.n_envs}, buffer {args.buffer_size}, "
          f"torch threads {args.threads}, best of {args.repeats}")
    print(f"{'buffer':30s} {'steps/s':>9s} {'learn s':>8s} {'add us':>8s} {'sample us':>10s} {'buffer share':>13s}")
    for name in names:
        r = best[name]
        print(f"{name:30s} {r['steps_per_s']:9.0f} {r['total_s']:8.1f} {r['add_us']:8.1f} {r['sample_us']:10.1f} "
              f"{100 * r['buffer_share']:12.1f}%")
    base = best[names[0]]["steps_per_s"]
    print(f"drop-in / SB3 steps per second: {best[names[1]]['steps_per_s'] / base:.3f}")


if __name__ == "__main__":
    main()
