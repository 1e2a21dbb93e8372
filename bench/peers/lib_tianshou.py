"""Tianshou: ``ReplayBuffer(size)`` / ``PrioritizedReplayBuffer(size, alpha, beta)`` for one environment and
``VectorReplayBuffer(size, 16)`` / ``PrioritizedVectorReplayBuffer(size, 16, alpha, beta)`` for a 16-env vector
batch, as its Collector uses them: ``add(Batch(obs, act, rew, terminated, truncated, obs_next))``,
``sample(B)`` -> ``(batch, indices)``, and for PER ``update_weight(indices, td)``. Rows are handed over as Batch
objects built before timing. Tianshou has no background sampler: multi-threaded sampling is two Python threads
calling ``sample``. Tianshou's PER draws indices with numpy's global generator (not stratified) and normalises
weights by the batch's largest weight.

Filling before timing: one-env buffers through the public ``update(ReplayBuffer.from_data(...))`` (vectorised),
vector buffers through ``add`` of 16-row batches.
"""
from __future__ import annotations

import importlib.metadata
import itertools
from typing import Any, Dict

import numpy as np

from .common import ALPHA, BETA


def info() -> Dict[str, Any]:
    import tianshou  # noqa: F401
    return {"version": importlib.metadata.version("tianshou"),
            "description": "tianshou ReplayBuffer / PrioritizedReplayBuffer (n_envs=1), "
                           "VectorReplayBuffer / PrioritizedVectorReplayBuffer (16 envs), Batch rows"}


def _batch(rows: Dict[str, np.ndarray]):
    from tianshou.data import Batch
    n = len(rows["action"])
    return Batch(obs=rows["obs"], act=rows["action"], rew=rows["reward"], terminated=rows["done"],
                 truncated=np.zeros(n, bool), obs_next=rows["next_obs"])


class Adapter:
    vector_buffer = True
    per_supported = True

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        from tianshou.data import (PrioritizedReplayBuffer, PrioritizedVectorReplayBuffer, ReplayBuffer,
                                   VectorReplayBuffer)
        self.prioritized, self.n_envs, self.capacity = prioritized, n_envs, capacity
        if n_envs == 1:
            self.rb = PrioritizedReplayBuffer(capacity, ALPHA, BETA) if prioritized else ReplayBuffer(capacity)
        elif prioritized:
            self.rb = PrioritizedVectorReplayBuffer(capacity, n_envs, alpha=ALPHA, beta=BETA)
        else:
            self.rb = VectorReplayBuffer(capacity, n_envs)

    def fill(self, chunks) -> None:
        from tianshou.data import ReplayBuffer
        for c in chunks:
            if self.n_envs == 1:
                src = ReplayBuffer.from_data(c["obs"], c["action"], c["reward"], c["done"],
                                             np.zeros(len(c["action"]), bool), c["done"], c["next_obs"])
                self.rb.update(src)
            else:
                n = self.n_envs
                for j in range(0, len(c["action"]), n):
                    self.rb.add(_batch({k: v[j:j + n] for k, v in c.items()}))

    @staticmethod
    def vector_fill_rows(capacity: int) -> int:
        # A vector buffer's add costs ~0.5 ms per 16 rows, so filling 1e6 rows would take half a minute. Its arrays
        # are allocated with np.full at the first add (every page touched), and nothing in add depends on how full
        # it is, so a partly filled vector buffer times the same; fill 16k rows.
        return min(capacity, 16 * 1024)

    def add1_op(self, rows):
        from tianshou.data import Batch
        items = [Batch(obs=o, act=a, rew=r, terminated=d, truncated=False, obs_next=o2) for o, a, r, o2, d in rows]
        it, add = itertools.cycle(items), self.rb.add
        return lambda: add(next(it))

    def addn_op(self, batches):
        items = [_batch(b) for b in batches]
        it, add = itertools.cycle(items), self.rb.add
        return lambda: add(next(it))

    def sample_op(self, batch_size: int):
        sample = self.rb.sample
        return lambda: sample(batch_size)

    def sample_update_op(self, batch_size: int, td: np.ndarray):
        sample, update = self.rb.sample, self.rb.update_weight

        def op():
            b, idx = sample(batch_size)
            update(idx, td)
            return b, idx
        return op

    def prefetch_op(self, batch_size: int, threads: int):
        return None

    def to_check(self, s) -> Dict[str, Any]:
        b, idx = s
        d = {"obs": b.obs, "action": b.act, "reward": b.rew, "next_obs": b.obs_next, "done": b.terminated,
             "indices": idx}
        if self.prioritized:
            d["weights"] = b.weight
        return d

    def close(self) -> None:
        self.rb = None
