"""Stable-Baselines3: ``stable_baselines3.common.buffers.ReplayBuffer`` as its off-policy algorithms use it,
with numpy arrays and ``device="cpu"``: ``add(obs, next_obs, action, reward, done, infos)`` with a leading n_envs
axis (``n_envs=1`` for one transition, a buffer made with ``n_envs=16`` for a vector-env batch) and
``sample(B)``, which returns torch tensors (``ReplayBufferSamples``). ``handle_timeout_termination=False`` (the
fastest setting: no per-step scan of ``infos``); ``optimize_memory_usage=False`` (default). SB3 has no prioritized
buffer (PER workloads: n/a) and no background sampler (multi-threaded sampling: two Python threads calling
``sample``).

Filling before timing writes SB3's public storage arrays (``observations``, ``actions``, ...; ``pos``, ``full``)
directly instead of a million ``add`` calls; the timed calls are the public ``add`` and ``sample``.
"""
from __future__ import annotations

import importlib.metadata
import itertools
from typing import Any, Dict

import numpy as np

from .common import obs_dtype, obs_shape


def info() -> Dict[str, Any]:
    import stable_baselines3  # noqa: F401
    return {"version": importlib.metadata.version("stable-baselines3"),
            "description": "stable_baselines3 ReplayBuffer (numpy storage, torch tensors out), device='cpu'"}


class Adapter:
    vector_buffer = True  # add of N rows needs a buffer made with n_envs=N
    per_supported = False

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer
        dt = obs_dtype(rowset)
        if dt == np.uint8:
            obs_space = spaces.Box(0, 255, obs_shape(rowset), np.uint8)
        else:
            obs_space = spaces.Box(-np.inf, np.inf, obs_shape(rowset), np.float32)
        act_space = spaces.Discrete(2**62)
        self.n_envs = n_envs
        self.rb = ReplayBuffer(capacity, obs_space, act_space, device="cpu", n_envs=n_envs,
                               handle_timeout_termination=False)
        self.infos = [{} for _ in range(n_envs)]

    def fill(self, chunks) -> None:
        rb, n = self.rb, self.n_envs
        t = 0  # row t goes to (t // n_envs, t % n_envs)
        for c in chunks:
            m = len(c["action"])
            assert t % n == 0 and m % n == 0
            p0, p1 = t // n, (t + m) // n
            rb.observations[p0:p1] = c["obs"].reshape(p1 - p0, n, *c["obs"].shape[1:])
            rb.next_observations[p0:p1] = c["next_obs"].reshape(p1 - p0, n, *c["obs"].shape[1:])
            rb.actions[p0:p1] = c["action"].reshape(p1 - p0, n, 1)
            rb.rewards[p0:p1] = c["reward"].reshape(p1 - p0, n)
            rb.dones[p0:p1] = c["done"].reshape(p1 - p0, n)
            t += m
        rb.pos = (t // n) % rb.buffer_size
        rb.full = t // n >= rb.buffer_size

    def add1_op(self, rows):
        # as an SB3 algorithm calls it with a one-env VecEnv: arrays with a leading axis of 1
        items = [(o[None], o2[None], np.array([[a]], np.int64), np.array([r], np.float32), np.array([d]))
                 for o, a, r, o2, d in rows]
        return self._op(items)

    def addn_op(self, batches):
        items = [(b["obs"], b["next_obs"], b["action"].reshape(-1, 1), b["reward"], b["done"]) for b in batches]
        return self._op(items)

    def _op(self, items):
        it, add, infos = itertools.cycle(items), self.rb.add, self.infos

        def op():
            o, o2, a, r, d = next(it)
            add(o, o2, a, r, d, infos)
        return op

    def sample_op(self, batch_size: int):
        sample = self.rb.sample
        return lambda: sample(batch_size)

    def sample_update_op(self, batch_size: int, td):
        return None

    def prefetch_op(self, batch_size: int, threads: int):
        return None

    def to_check(self, s) -> Dict[str, Any]:
        return {"obs": s.observations.numpy(), "action": s.actions.numpy(), "reward": s.rewards.numpy(),
                "next_obs": s.next_observations.numpy(), "done": s.dones.numpy()}

    def close(self) -> None:
        self.rb = None
