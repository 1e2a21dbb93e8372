"""fastreplay (compiled core) and fastreplay.reference (the pure-Python baseline): the same API.

Used as documented: ``ReplayBuffer(capacity, fields)`` / ``PrioritizedReplayBuffer(capacity, fields, alpha)``,
``add(obs=..., action=..., reward=..., next_obs=..., done=...)`` with one row or N rows, ``sample(B)`` /
``sample(B, beta)``, ``update_priorities(batch, td)``, and for multi-threaded sampling
``prefetch(B, depth, threads)`` (C++ sampler threads; the reference has none).
"""
from __future__ import annotations

import itertools
from typing import Any, Dict

import numpy as np

from .common import ALPHA, BETA, obs_dtype, obs_shape

REFERENCE = False  # lib_reference flips this


def _module():
    if REFERENCE:
        import fastreplay.reference as m
    else:
        import fastreplay as m
    return m


def info() -> Dict[str, Any]:
    import fastreplay
    import fastreplay._core as core
    import datetime
    import os
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(core.__file__), datetime.timezone.utc)
    d = {"version": fastreplay.__version__, "module": core.__file__, "module_mtime": mtime.isoformat(timespec="seconds")}
    if REFERENCE:
        d["description"] = "fastreplay.reference: pure Python (lists of rows, Python sum tree)"
    else:
        d["description"] = "fastreplay ReplayBuffer / PrioritizedReplayBuffer (C++ core)"
    return d


def fields(rowset: str) -> Dict[str, Any]:
    return {"obs": (obs_shape(rowset), obs_dtype(rowset)), "action": ((), np.int64), "reward": ((), np.float32),
            "next_obs": (obs_shape(rowset), obs_dtype(rowset)), "done": ((), np.bool_)}


class Adapter:
    vector_buffer = False  # the same buffer takes one row or N rows
    per_supported = True

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        m = _module()
        self.prioritized = prioritized
        if prioritized:
            self.buf = m.PrioritizedReplayBuffer(capacity, fields(rowset), alpha=ALPHA, seed=0)
        else:
            self.buf = m.ReplayBuffer(capacity, fields(rowset), seed=0)

    def fill(self, chunks) -> None:
        for c in chunks:
            self.buf.add(**c)

    def add1_op(self, rows):
        it, add = itertools.cycle(rows), self.buf.add

        def op():
            o, a, r, o2, d = next(it)
            add(obs=o, action=a, reward=r, next_obs=o2, done=d)
        return op

    def addn_op(self, batches):
        items = [(b["obs"], b["action"], b["reward"], b["next_obs"], b["done"]) for b in batches]
        it, add = itertools.cycle(items), self.buf.add

        def op():
            o, a, r, o2, d = next(it)
            add(obs=o, action=a, reward=r, next_obs=o2, done=d)
        return op

    def sample_op(self, batch_size: int):
        sample = self.buf.sample
        if self.prioritized:
            return lambda: sample(batch_size, BETA)
        return lambda: sample(batch_size)

    def sample_update_op(self, batch_size: int, td: np.ndarray):
        sample, update = self.buf.sample, self.buf.update_priorities

        def op():
            b = sample(batch_size, BETA)
            update(b, td)  # the batch carries its generations: stale rows are skipped
            return b
        return op

    def prefetch_op(self, batch_size: int, threads: int):
        if REFERENCE:
            return None
        pf = self.buf.prefetch(batch_size, depth=4, threads=threads)
        return (lambda: next(pf)), pf.close

    def to_check(self, b) -> Dict[str, Any]:
        d = {k: b[k] for k in ("obs", "action", "reward", "next_obs", "done")}
        d["indices"] = b.indices
        if b.weights is not None:
            d["weights"] = b.weights
        return d

    def close(self) -> None:
        self.buf = None
