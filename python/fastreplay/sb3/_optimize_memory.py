"""``optimize_memory_usage=True`` for the SB3 buffers, on the core's next-observation dedup (``docs/episodes.md``).

The core is episodic (one lane per env, ``next_obs="dedup"``): each observation is stored once, the next observation
of a step is the observation of the same env one step later, and at an episode end (the core's bool ``done``, SB3's
``done != 0``) the true final observation is kept in the core's finals column. SB3's float ``dones`` are a column of
their own (``sb3_done``), so writes into ``rb.dones`` never move the core's episode ends. The adapter adds two things
the core cannot know:

- the latest step's rows that are not episode ends: their next observation arrives with the next ``add``, so the
  core does not sample them yet; SB3 does (``observations[pos]``). The adapter keeps their next observations
  (``_pend``) and mixes those rows into uniform samples with their exact probability.
- a reset without ``done`` (SB3's second ``learn()``, CleanRL's truncations with ``done=terminations``): the next
  ``add`` shows an observation other than the ``next_obs`` given before, byte for byte. The core cannot mark a stored
  step as an end afterwards, so the true next observation of that row is kept here (``_resets``, slot-indexed, dropped
  when the slot is written again) and patched into samples.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from .._batch import Batch


class _OptimizeMemory:
    """Mixin of :class:`~fastreplay.sb3.ReplayBuffer` for ``optimize_memory_usage=True``.

    Uses the buffer's ``_core``, ``_capacity``, ``n_envs``, ``_obs_specs``, ``_seed``, ``_prioritized``,
    ``handle_timeout_termination``, ``_step_rows``, ``_timeouts`` and ``_field_index``; its own state is set by
    ``_reset_optimized_state``.
    """

    def _reset_optimized_state(self) -> None:
        k = self.n_envs
        self._pend: Optional[List[bytes]] = None  # per observation key: the latest step's next observations (bytes)
        self._pend_rows = np.zeros(k, dtype=bool)  # latest rows whose next observation is in _pend (not core ends)
        self._n_pend = 0
        self._pend_check: Optional[np.ndarray] = None  # rows whose next add's observation is compared with _pend
        self._resets: Dict[int, List[np.ndarray]] = {}  # slot -> true next observations (per key) of a reset row
        self._resets_mask: Optional[np.ndarray] = None  # bool[capacity]: slots in _resets (allocated at first use)
        self._all_rows, self._no_rows = np.ones(k, dtype=bool), np.zeros(k, dtype=bool)
        self._zero_lane = np.zeros(1, dtype=np.int64)
        self._rng = np.random.default_rng(self._seed ^ 0x5DEECE66D)  # draws of the latest rows in sample
        spec = self._obs_specs[0]
        # add()'s fast path: one Box-like observation key, arrays of exactly the stored dtype and shape
        self._fast_obs = None if len(self._obs_specs) > 1 or spec[5] else ((k,) + spec[3], spec[4])

    # ---------------------------------------------------------------------------------------------- adding
    def _add_optimized(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: Any) -> None:
        fast = self._fast_obs
        if (fast is not None and type(obs) is np.ndarray and type(next_obs) is np.ndarray and type(done) is np.ndarray
                and obs.dtype == fast[1] and next_obs.dtype == fast[1] and done.dtype == np.bool_
                and obs.shape == fast[0] and next_obs.shape == fast[0] and done.shape == self._scalar_shape):
            # The common case: the caller's arrays go to the core as they are, done as the core's episode end and
            # (cast by the core) as SB3's float done. The core checks every value before it writes any.
            broken = None
            if self._pend_check is not None:
                got = obs.tobytes()
                if got != self._pend[0]:  # type: ignore[index]
                    broken = self._broken([got])
            try:
                if self.handle_timeout_termination:
                    self._core.add(obs, next_obs, action, reward, done, done, self._timeouts(infos))
                else:
                    self._core.add(obs, next_obs, action, reward, done, done)
            except (TypeError, ValueError):
                pass  # SB3's reshaping and casts below
            else:
                if broken is not None or self._resets:
                    self._commit_resets(broken)
                if self.n_envs == 1:  # the latest step's next observation, unless the core has it (an end)
                    if done[0]:
                        self._no_pending()
                    else:
                        self._pend = [next_obs.tobytes()]
                        self._pend_rows = self._pend_check = self._all_rows
                        self._n_pend = 1
                else:
                    self._set_pending(done, (next_obs,))
                return
        rows, next_rows = self._step_rows(obs, next_obs, action, reward, done, infos)
        sb3_done = rows.pop("done")
        ended = sb3_done != 0
        rows["done"], rows["sb3_done"] = ended, sb3_done
        broken = None
        if self._pend_check is not None:
            got = [rows[name].tobytes() for _, name, *_ in self._obs_specs]
            if got != self._pend:
                broken = self._broken(got)
        rows.update(next_rows)
        self._core.add(**rows)
        if broken is not None or self._resets:
            self._commit_resets(broken)
        self._set_pending(ended, [next_rows[nn] for _, _, nn, *_ in self._obs_specs])

    def _broken(self, got: List[bytes]) -> Optional[np.ndarray]:
        """Lanes whose new observation differs from the ``next_obs`` the previous step gave (resets without done)."""
        k = self.n_envs
        if k == 1:  # the bytes differ: the one lane is broken (if it is checked at all: _pend_check is set)
            return self._zero_lane
        same = np.ones(k, dtype=bool)
        for old, new in zip(self._pend, got):  # type: ignore[arg-type]
            same &= (np.frombuffer(old, np.uint8).reshape(k, -1) == np.frombuffer(new, np.uint8).reshape(k, -1)).all(1)
        lanes = np.flatnonzero(self._pend_check & ~same)  # type: ignore[operator]
        return lanes if len(lanes) else None

    def _commit_resets(self, broken: Optional[np.ndarray]) -> None:
        """After the core stored a step: forget the rows it overwrote, keep the true next observations of the
        previous step's rows that ``broken`` lists (resets without done)."""
        k, cap = self.n_envs, self._capacity
        p = (self._core.next_index - k) % cap  # the slots just written
        if self._resets:
            mask = self._resets_mask
            if mask[p] if k == 1 else mask[p:p + k].any():  # type: ignore[index]
                for s in range(p, p + k):
                    if mask[s]:  # type: ignore[index]
                        del self._resets[s]
                        mask[s] = False  # type: ignore[index]
        if broken is not None and cap > k:  # the previous step's slots, unless this add overwrote them
            if self._resets_mask is None:
                self._resets_mask = np.zeros(cap, dtype=bool)
            prev = (p - k) % cap
            rows = self._pend_arrays()
            for lane in broken.tolist():
                self._resets[prev + lane] = [r[lane].copy() for r in rows]
                self._resets_mask[prev + lane] = True

    def _set_pending(self, ended: np.ndarray, next_values: Any) -> None:
        """The latest step's rows that are not episode ends wait for the next add: keep their next observations."""
        if not ended.any():
            pend = self._all_rows
        else:
            pend = ~ended
            if not pend.any():
                self._no_pending()
                return
        self._pend = [v.tobytes() for v in next_values]
        self._pend_rows = self._pend_check = pend
        self._n_pend = int(pend.sum())

    def _no_pending(self) -> None:
        self._pend, self._pend_check, self._n_pend = None, None, 0
        self._pend_rows = self._no_rows

    def _pend_arrays(self) -> List[np.ndarray]:
        """The latest step's next observations, per key ``(n_envs, *shape)`` (read-only)."""
        return [np.frombuffer(b, dtype).reshape((self.n_envs,) + shape)
                for b, (_, _, _, shape, dtype, _) in zip(self._pend, self._obs_specs)]  # type: ignore[arg-type]

    # -------------------------------------------------------------------------------------------- sampling
    def _latest_slots(self) -> np.ndarray:
        """Slots of the latest step's rows whose next observation is pending."""
        start = (self._core.next_index - self.n_envs) % self._capacity
        return start + np.flatnonzero(self._pend_rows)

    def _sample_optimized(self, batch_size: int) -> Any:
        """Uniform over every stored row, as SB3 (whose latest step is sampleable): the core draws uniformly among
        the rows it can sample; each row of the batch is instead one of the ``L`` pending latest rows with
        probability ``L / size``, so each stored row has probability ``1 / size``."""
        core, n_pend = self._core, self._n_pend
        if not n_pend:
            return core.sample(batch_size)
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            return core.sample(batch_size)  # the core's error for a bad batch size
        size = len(core)
        m = batch_size if n_pend >= size else int(self._rng.binomial(batch_size, n_pend / size))
        if not m:
            return core.sample(batch_size)
        slots = self._latest_slots()[self._rng.integers(0, n_pend, m)]
        if m == batch_size:
            return self._rows_batch(slots, with_generations=False)
        batch = core.sample(batch_size)
        self._fill_rows(batch, self._rng.choice(batch_size, m, replace=False), slots)
        return batch

    def _get_optimized(self, slots: np.ndarray) -> Any:
        """``core.get(slots)``, and the latest step's pending rows (which the core cannot give yet) from storage."""
        core, k, cap = self._core, self.n_envs, self._capacity
        if not self._n_pend or len(slots) == 0 or slots.min() < 0 or slots.max() >= len(core):
            return core.get(slots)  # the core's own errors for slots out of range
        latest = (((core.next_index - 1 - slots) % cap) < k) & self._pend_rows[slots % k]
        if not latest.any():
            return core.get(slots)
        if latest.all():
            return self._rows_batch(slots, with_generations=True)
        other = slots[np.argmin(latest)]  # a row the core can give, in place of the latest rows, then replaced
        batch = core.get(np.where(latest, other, slots))
        self._fill_rows(batch, np.flatnonzero(latest), slots[latest])
        return batch

    def _rows_batch(self, slots: np.ndarray, with_generations: bool) -> Batch:
        """A batch of the latest step's pending rows, read from the core's storage and ``_pend``."""
        core = self._core
        batch = Batch({name: np.array(core._storage_view(i)[slots]) for i, name in enumerate(core._stored)})
        pend = self._pend_arrays()
        for (_, _, nn, *_), rows in zip(self._obs_specs, pend):
            batch[nn] = rows[slots % self.n_envs]
        batch.indices = np.asarray(slots, dtype=np.int64)
        batch.generations = core.generations(slots) if with_generations else None  # type: ignore[assignment]
        return batch

    def _fill_rows(self, batch: Any, where: np.ndarray, slots: np.ndarray) -> None:
        """Rows ``where`` of a core batch become the latest step's pending rows ``slots``."""
        core = self._core
        for i, name in enumerate(core._stored):
            batch[name][where] = core._storage_view(i)[slots]
        for (_, _, nn, *_), rows in zip(self._obs_specs, self._pend_arrays()):
            batch[nn][where] = rows[slots % self.n_envs]
        batch.indices[where] = slots
        if batch.generations is not None and len(batch.generations):
            batch.generations[where] = core.generations(slots)

    def _patch_resets(self, batch: Any) -> None:
        """Rows whose episode did not continue into the lane's next step: their true next observations."""
        idx = batch.indices
        hit = np.flatnonzero(self._resets_mask[idx])  # type: ignore[index]
        for i in hit.tolist():
            rows = self._resets[int(idx[i])]
            for (_, _, nn, *_), row in zip(self._obs_specs, rows):
                batch[nn][i] = row

    # ---------------------------------------------------------------------------------- pos/full assignment
    def _rebase_optimized(self, base: int, old_cursor: int, old_size: int) -> None:
        """After a ``pos``/``full`` assignment (``ReplayBuffer._set_ring``): kept rows keep their true next
        observations; if ``pos`` moved, the latest step's next observation is the observation stored at step
        ``pos`` (as SB3 reads it: ``observations[pos]``), until the next ``add`` writes that step."""
        core, k, cap = self._core, self.n_envs, self._capacity
        size = len(core)
        for s in [s for s in self._resets if s >= size]:
            del self._resets[s]
            self._resets_mask[s] = False  # type: ignore[index]
        p = core.next_index
        if p == old_cursor % cap and (self._pend is not None or old_size == size):
            return  # the latest step is the same: its next observation too
        self._no_pending()
        if size == 0:
            return
        latest = (p - k) % cap
        ended = core._raw_view(self._field_index("done"), cap)[latest:latest + k]
        pend = ~ended
        if pend.any():
            self._pend = [np.array(core._raw_view(self._field_index(name), cap)[p:p + k]).tobytes()
                          for _, name, *_ in self._obs_specs]
            self._pend_rows = pend
            self._n_pend = int(pend.sum())
