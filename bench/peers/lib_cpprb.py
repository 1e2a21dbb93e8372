"""cpprb: ``ReplayBuffer(size, env_dict)`` / ``PrioritizedReplayBuffer(size, env_dict, alpha)``, used as its
documentation shows: ``add(**transition)`` for one row or N rows at once, ``sample(B)`` / ``sample(B, beta)``,
``update_priorities(sample["indexes"], td)``. Both obs and next_obs are stored as fields (``next_of`` would halve
image memory but changes what is stored; the other libraries store both too). cpprb has no background sampler:
multi-threaded sampling is two Python threads calling ``sample``.
"""
from __future__ import annotations

import importlib.metadata
import itertools
from typing import Any, Dict

import numpy as np

from .common import ALPHA, BETA, obs_dtype, obs_shape


def info() -> Dict[str, Any]:
    import cpprb  # noqa: F401
    return {"version": importlib.metadata.version("cpprb"),
            "description": "cpprb ReplayBuffer / PrioritizedReplayBuffer (Cython), env_dict with obs and next_obs"}


class Adapter:
    vector_buffer = False
    per_supported = True

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        import cpprb
        shape = obs_shape(rowset)
        env = {"obs": {"shape": shape, "dtype": obs_dtype(rowset)}, "act": {"dtype": np.int64},
               "rew": {"dtype": np.float32}, "next_obs": {"shape": shape, "dtype": obs_dtype(rowset)},
               "done": {"dtype": np.bool_}}
        self.prioritized = prioritized
        if prioritized:
            self.rb = cpprb.PrioritizedReplayBuffer(capacity, env, alpha=ALPHA)
        else:
            self.rb = cpprb.ReplayBuffer(capacity, env)

    def fill(self, chunks) -> None:
        for c in chunks:
            self.rb.add(obs=c["obs"], act=c["action"], rew=c["reward"], next_obs=c["next_obs"], done=c["done"])

    def add1_op(self, rows):
        it, add = itertools.cycle(rows), self.rb.add

        def op():
            o, a, r, o2, d = next(it)
            add(obs=o, act=a, rew=r, next_obs=o2, done=d)
        return op

    def addn_op(self, batches):
        items = [(b["obs"], b["action"], b["reward"], b["next_obs"], b["done"]) for b in batches]
        it, add = itertools.cycle(items), self.rb.add

        def op():
            o, a, r, o2, d = next(it)
            add(obs=o, act=a, rew=r, next_obs=o2, done=d)
        return op

    def sample_op(self, batch_size: int):
        sample = self.rb.sample
        if self.prioritized:
            return lambda: sample(batch_size, beta=BETA)
        return lambda: sample(batch_size)

    def sample_update_op(self, batch_size: int, td: np.ndarray):
        sample, update = self.rb.sample, self.rb.update_priorities

        def op():
            s = sample(batch_size, beta=BETA)
            update(s["indexes"], td)
            return s
        return op

    def prefetch_op(self, batch_size: int, threads: int):
        return None

    def to_check(self, s) -> Dict[str, Any]:
        d = {"obs": s["obs"], "action": s["act"], "reward": s["rew"], "next_obs": s["next_obs"], "done": s["done"]}
        if "indexes" in s:
            d["indices"] = s["indexes"]
            d["weights"] = s["weights"]
        return d

    def close(self) -> None:
        self.rb = None
