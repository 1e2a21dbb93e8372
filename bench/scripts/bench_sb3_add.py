"""Stable-Baselines3's ReplayBuffer against fastreplay.sb3.ReplayBuffer through SB3's API, add and sample, in
interleaved rounds (medians in us). Run from the repository root:

    OMP_NUM_THREADS=1 python -m bench.scripts.bench_sb3_add            # CartPole steps, capacity 10k, sample(128)
    OMP_NUM_THREADS=1 python -m bench.scripts.bench_sb3_add --atari    # Breakout frames, optimize_memory_usage

Default: add() of one CartPole step and sample(128) at capacity 10k, one env; 15 rounds of 5000 adds and 500 samples.

``--atari``: CleanRL's ``dqn_atari.py`` buffer (``optimize_memory_usage=True, handle_timeout_termination=False``,
batch 32) fed the way that script feeds it: real Breakout frames (gymnasium's AtariPreprocessing, 84x84 grayscale,
frame skip 4, a life loss terminates, FrameStackObservation(4): uint8 ``(1, 4, 84, 84)``), random actions, one
same-step autoreset vector env, ``add(obs, real_next_obs, action, reward, terminations, infos)`` with
``real_next_obs`` the final observation where an episode was truncated (episodes are cut at ``--max-episode-steps``),
``obs = next_obs``. The recorded steps are replayed in a loop into every buffer (the same arrays). Each buffer is
filled to capacity first (untimed: the first lap pays the OS's page faults), then ``--rounds`` rounds each time
``--adds`` adds and ``--samples`` sample(32) per buffer, alternating buffers; medians of the rounds' wall time
and of this thread's CPU time per call (which other processes on a loaded machine do not inflate). ``--old PACKAGE`` adds another
fastreplay.sb3-like package (e.g. an older checkout of the adapter) to the comparison.
"""
import argparse
import importlib
import statistics
import time

import gymnasium as gym
import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer

import fastreplay.sb3 as frs


def per_call(fn, n, clock=time.perf_counter_ns):
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n / 1e3


def cartpole() -> None:
    obs_space, act_space = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2)
    bufs = {"sb3": SB3Buffer(10000, obs_space, act_space, "cpu"), "fastreplay": frs.ReplayBuffer(10000, obs_space,
                                                                                                  act_space, "cpu")}
    o, a = np.zeros((1, 4), np.float32), np.zeros((1,), np.int64)
    r, d, infos = np.zeros(1, np.float32), np.zeros(1, bool), [{}]
    res = {f"{k} {op}": [] for k in bufs for op in ("add", "sample(128)")}
    for _ in range(15):
        for k, b in bufs.items():
            res[f"{k} add"].append(per_call(lambda: b.add(o, o, a, r, d, infos), 5000))
            res[f"{k} sample(128)"].append(per_call(lambda: b.sample(128), 500))
    for k, v in res.items():
        print(f"{k}: {statistics.median(v):.2f} us")


def record_breakout(steps: int, max_episode_steps: int, seed: int):
    """CleanRL's add() arguments for `steps` random-action steps of Breakout."""
    import ale_py

    gym.register_envs(ale_py)

    def make():
        env = gym.make("BreakoutNoFrameskip-v4", max_episode_steps=max_episode_steps * 4)
        env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84, terminal_on_life_loss=True,
                                              noop_max=30)
        return gym.wrappers.FrameStackObservation(env, 4)

    envs = gym.vector.SyncVectorEnv([make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    out, counts = [], {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        actions = envs.action_space.sample()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs.copy()
        for idx, trunc in enumerate(truncations):
            if trunc:
                real_next_obs[idx] = infos["final_obs"][idx]
        counts["terminated"] += int(terminations.sum())
        counts["truncated"] += int((truncations & ~terminations).sum())
        out.append((obs, real_next_obs, actions, rewards, terminations, infos))
        obs = next_obs
    return out, counts


def atari(args) -> None:
    steps, counts = record_breakout(args.record, args.max_episode_steps, args.seed)
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    act_space = gym.spaces.Discrete(4)
    kinds = {"sb3": SB3Buffer, "fastreplay": frs.ReplayBuffer}
    if args.old:
        kinds[args.old] = importlib.import_module(args.old).ReplayBuffer
    bufs = {k: cls(args.capacity, obs_space, act_space, "cpu", optimize_memory_usage=True,
                   handle_timeout_termination=False) for k, cls in kinds.items()}
    print(f"{len(steps)} recorded Breakout steps ({counts['terminated']} terminated, {counts['truncated']} truncated), "
          f"capacity {args.capacity}, {args.rounds} rounds of {args.adds} adds and {args.samples} sample(32)")
    cursor = {k: 0 for k in bufs}

    def adder(k, b):
        def add():
            i = cursor[k]
            b.add(*steps[i])
            cursor[k] = i + 1 if i + 1 < len(steps) else 0
        return add

    adds = {k: adder(k, b) for k, b in bufs.items()}
    for k in bufs:  # fill once, untimed
        per_call(adds[k], args.capacity)
    np.random.seed(0)
    res = {f"{k} {op}": [] for k in bufs for op in ("add", "sample(32)")}
    cpu = {k: [] for k in res}
    for _ in range(args.rounds):
        for k, b in bufs.items():
            for op, fn, n in (("add", adds[k], args.adds), ("sample(32)", lambda: b.sample(32), args.samples)):
                t0 = time.thread_time_ns()
                res[f"{k} {op}"].append(per_call(fn, n))
                cpu[f"{k} {op}"].append((time.thread_time_ns() - t0) / n / 1e3)
    for k, v in res.items():
        print(f"{k}: median {statistics.median(v):.2f} us wall (rounds: min {min(v):.2f}, max {max(v):.2f}), "
              f"CPU {statistics.median(cpu[k]):.2f} us")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atari", action="store_true", help="Breakout frames with optimize_memory_usage (see above)")
    p.add_argument("--capacity", type=int, default=10000)
    p.add_argument("--record", type=int, default=3000, help="Breakout steps recorded (replayed in a loop)")
    p.add_argument("--max-episode-steps", type=int, default=1000, help="agent steps before a truncation")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--adds", type=int, default=2000)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--old", default=None, help="module name of another fastreplay.sb3-like package to compare")
    args = p.parse_args()
    if args.atari:
        atari(args)
    else:
        cartpole()


if __name__ == "__main__":
    main()
