"""``optimize_memory_usage=True`` for the SB3 buffers: each observation is stored once, and the next observations
that the following row cannot supply are kept in a small aside store."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..buffer import ReplayBuffer as _CoreReplay

_ASIDE_START = 1024  # initial rows of the aside store for optimize_memory_usage (it doubles as needed)


class _OptimizeMemory:
    """Mixin of :class:`~fastreplay.sb3.ReplayBuffer`: the aside store and the next observations it derives.

    Uses the buffer's ``_core``, ``_capacity``, ``n_envs``, ``_obs_specs``, ``_seed``, ``_patches`` and
    ``_apply_patches``; its own state (``_aside*``, ``_pending*``) is set by ``_reset_aside_state``.
    """

    def _new_aside(self, capacity: int) -> _CoreReplay:
        fields = {next_name: (shape, dtype) for _, _, next_name, shape, dtype, _ in self._obs_specs}
        fields["owner"] = ((), np.int64)  # total_added index of the main row the next observation belongs to
        return _CoreReplay(capacity, fields, seed=self._seed ^ 0x5DEECE66D)

    def _reset_aside_state(self) -> None:
        self._aside: Optional[_CoreReplay] = None
        self._aside_cap = 0
        self._aside_base = 0  # serial stored at slot 0 of the aside core
        self._aside_next = 0  # serial of the next aside row
        self._aside_oldest = 0  # no row older than this serial is still referenced
        self._pending: Optional[Dict[str, np.ndarray]] = None  # next obs of the latest step, per env
        self._pending_valid = np.zeros(self.n_envs, dtype=bool)  # rows whose next obs is pending, not aside

    def _add_optimized(self, rows: Dict[str, np.ndarray], next_rows: Dict[str, np.ndarray]) -> None:
        core, n = self._core, self.n_envs
        total = core.total_added  # serial of this step's first row
        # 1. The previous step's rows whose next obs was pending: did the episode continue into this obs?
        if self._pending is not None and self._pending_valid.any():
            same = self._pending_valid.copy()
            for _, name, next_name, *_ in self._obs_specs:
                prev = self._pending[next_name].reshape(n, -1)
                same &= (prev == rows[name].reshape(n, -1)).all(axis=1)
            broken = np.flatnonzero(self._pending_valid & ~same)
            if len(broken):  # e.g. a reset without done: keep the true next obs aside, point the row at it
                serials = self._aside_append(
                    {k: v[broken] for k, v in self._pending.items()}, total - n + broken, total + n
                )
                prev_start = (core.next_index - n) % self._capacity
                patch = self._patches.setdefault("aside", {})
                for e, s in zip(broken.tolist(), serials.tolist()):
                    patch[prev_start + e] = np.asarray(s, dtype=np.int64)
        # 2. This step: episode ends keep their next obs aside now; the others wait for the next step's obs.
        ended = np.flatnonzero(rows["done"] != 0)
        aside = np.full(n, -1, dtype=np.int64)
        if len(ended):
            aside[ended] = self._aside_append({k: v[ended] for k, v in next_rows.items()}, total + ended, total + n)
        rows["aside"] = aside
        self._pending = {k: np.array(v) for k, v in next_rows.items()}
        self._pending_valid = aside < 0

    def _aside_append(self, values: Dict[str, np.ndarray], owners: np.ndarray, total_after: int) -> np.ndarray:
        """Store next observations aside; returns their serials. Grows the store so that no live row is lost."""
        k = len(owners)
        if self._aside is None:
            self._aside_cap = min(self._capacity, max(_ASIDE_START, k))
            self._aside = self._new_aside(self._aside_cap)
        # Rows whose main row has been overwritten are dead; owners grow with serials, so scan from the oldest.
        if self._aside_oldest < self._aside_next:
            owner_col = self._aside._storage_view(len(self._obs_specs))
            oldest_alive = total_after - self._capacity
            while self._aside_oldest < self._aside_next and owner_col[
                (self._aside_oldest - self._aside_base) % self._aside_cap
            ] < oldest_alive:
                self._aside_oldest += 1
        live = self._aside_next - self._aside_oldest
        if live + k > self._aside_cap:  # grow: copy the live rows, oldest first, into a store twice as large
            new_cap = max(2 * self._aside_cap, live + k)
            new = self._new_aside(new_cap)
            if live:
                slots = (np.arange(self._aside_oldest, self._aside_next) - self._aside_base) % self._aside_cap
                new.add(**dict(self._aside.get(slots)))
            self._aside, self._aside_cap, self._aside_base = new, new_cap, self._aside_oldest
        self._aside.add(**values, owner=np.asarray(owners, dtype=np.int64))
        serials = np.arange(self._aside_next, self._aside_next + k, dtype=np.int64)
        self._aside_next += k
        return serials

    def _next_obs_optimized(self, batch: Any, idx: np.ndarray) -> Dict[str, np.ndarray]:
        core, n, cap = self._core, self.n_envs, self._capacity
        aside = batch["aside"]
        latest = ((core.next_index - 1 - idx) % cap) < n  # rows of the latest step: their next obs is not stored
        from_aside = aside >= 0
        from_pending = latest & ~from_aside
        from_core = ~(from_aside | from_pending)
        nxt = np.where(from_core, (idx + n) % cap, idx)
        got = core.get(nxt) if from_core.any() else None
        if got is not None and self._patches:
            self._apply_patches(got, nxt)
        out: Dict[str, np.ndarray] = {}
        for _, name, next_name, shape, dtype, _ in self._obs_specs:
            out[next_name] = got[name] if got is not None else np.empty((len(idx),) + shape, dtype)
        if from_pending.any():
            envs = idx[from_pending] % n
            for k, v in self._pending.items():  # type: ignore[union-attr]
                out[k][from_pending] = v[envs]
        if from_aside.any():
            slots = (aside[from_aside] - self._aside_base) % self._aside_cap
            rows = self._aside.get(slots)  # type: ignore[union-attr]
            for k in out:
                out[k][from_aside] = rows[k]
        return out

    def _rebase_optimized(self, base: int, old_cursor: int, old_size: int) -> None:
        """After a ``pos``/``full`` assignment (``ReplayBuffer._set_ring``): slots that became stored have no aside
        row, the aside rows' owners are renumbered to the serials their slots hold now, and, if ``pos`` moved, the
        latest step's next observation is the observation stored at step ``pos``, as SB3 reads it
        (``observations[pos]``), until the next ``add`` writes that step."""
        core, n, cap = self._core, self.n_envs, self._capacity
        size, cursor = len(core), base + core.total_added
        if size > old_size:
            core._raw_view(self._field_index("aside"), cap)[old_size:size] = -1
        if self._aside is not None and self._aside_oldest < self._aside_next:
            owners = self._aside._raw_view(len(self._obs_specs), self._aside_cap)
            rows = (np.arange(self._aside_oldest, self._aside_next) - self._aside_base) % self._aside_cap
            slot = owners[rows] % cap  # serials count tickets from base, a multiple of cap
            ticket = slot + cap * ((cursor - 1 - slot) // cap)  # the slot's newest ticket in the new ring
            owners[rows] = np.where(slot < size, ticket - base, -(2**62))  # a slot no longer stored: dead
        p = core.next_index
        if p == old_cursor % cap and self._pending is not None:
            return  # the latest step is the same: its next observation is still the pending one (SB3 keeps it at pos)
        self._pending = {
            next_name: np.array(core._raw_view(self._field_index(name), cap)[p:p + n])
            for _, name, next_name, *_ in self._obs_specs
        }
        self._pending_valid = np.zeros(n, dtype=bool)  # the next add's observations are the next observations
