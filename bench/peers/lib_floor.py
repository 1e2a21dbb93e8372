"""The floor: a plain memory copy of the same bytes, with no replay-buffer logic.

Storage is one uint8 array of capacity x row_bytes (every row's bytes together). ``add`` of N rows copies N x
row_bytes into the slots at the cursor; ``sample(B)`` copies B x row_bytes from one random contiguous place into a
preallocated output (a gather of random rows can only be slower: it touches B places instead of one);
``sample+update`` also writes B float64 priorities. Each is one ``np.copyto`` call, so the floor includes numpy's
call overhead (a few hundred ns), which dominates for small rows. Multi-threaded: two Python threads copying
(numpy releases the GIL for large copies only).
"""
from __future__ import annotations

import itertools
from typing import Any, Dict

import numpy as np

from .common import row_bytes


def info() -> Dict[str, Any]:
    return {"version": np.__version__, "description": "np.copyto of the same number of bytes (contiguous)"}


class Adapter:
    vector_buffer = False
    per_supported = True
    checkable = False

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        self.rb_bytes = row_bytes(rowset)
        self.capacity = capacity
        self.store = np.zeros((capacity, self.rb_bytes), np.uint8)
        self.prio = np.zeros(capacity, np.float64)
        self.rng = np.random.default_rng(0)

    def fill(self, chunks) -> None:
        self.store[:] = 1  # touch every page, as a filled buffer has

    def _addn(self, n: int, count: int):
        src = [np.full((n, self.rb_bytes), i % 251, np.uint8) for i in range(count)]  # as many sources as peers get
        slots = itertools.cycle(range(0, self.capacity - n, n))
        it, store, copyto = itertools.cycle(src), self.store, np.copyto

        def op():
            s = next(slots)
            copyto(store[s:s + n], next(it))
        return op

    def add1_op(self, rows):
        src = [np.full(self.rb_bytes, i % 251, np.uint8) for i in range(len(rows))]  # as many sources as peers get
        slots = itertools.cycle(range(self.capacity))
        it, store, copyto = itertools.cycle(src), self.store, np.copyto

        def op():
            copyto(store[next(slots)], next(it))
        return op

    def addn_op(self, batches):
        return self._addn(len(batches[0]["action"]), len(batches))

    def _offsets(self, batch_size: int):
        return itertools.cycle(self.rng.integers(0, self.capacity - batch_size + 1, 4096).tolist())

    def sample_op(self, batch_size: int):
        out = np.empty((batch_size, self.rb_bytes), np.uint8)
        offs, store, copyto = self._offsets(batch_size), self.store, np.copyto

        def op():
            i = next(offs)
            copyto(out, store[i:i + batch_size])
        return op

    def sample_update_op(self, batch_size: int, td: np.ndarray):
        out = np.empty((batch_size, self.rb_bytes), np.uint8)
        td = td.astype(np.float64)
        offs, store, prio, copyto = self._offsets(batch_size), self.store, self.prio, np.copyto

        def op():
            i = next(offs)
            copyto(out, store[i:i + batch_size])
            copyto(prio[i:i + batch_size], td)
        return op

    def prefetch_op(self, batch_size: int, threads: int):
        return None

    def to_check(self, s) -> Dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self.store = None
