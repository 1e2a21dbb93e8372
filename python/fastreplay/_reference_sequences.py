"""Sequence replay of :mod:`fastreplay.reference` (``docs/sequences.md``), written to be read.

:class:`SequenceReplay` is a mixin of ``reference.ReplayBuffer``. Admissible starts are found by scanning every
stored slot with the rules of the contract, and each sequence is built step by step from the episode index's
single-step rows (``_episode_row``), so this is the oracle of the compiled buffers' C++ gather.

Sequence priorities (prioritized buffers): a dict per (period, need) from start ticket to raw priority. A start
not in it yet gets the largest priority set so far (1 at first) when a call first sees it. (The compiled buffers
give it that maximum as of the add that made it admissible: the two differ only if an update raised the maximum
in between.)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from . import _args
from ._sequences import (IS_FIRST, MASK, SequenceBatch, check_args, check_beta, check_fields, check_update, eta_mix,
                         update_values)


class SequenceReplay:
    """``sample_sequences``, ``update_sequence_priorities`` and ``update_field`` of the reference buffers."""

    # --- the contract -------------------------------------------------------------------------------------------

    def _sequence_steps(self, ticket: int, length: int) -> List[int]:
        """Tickets of the real steps of the sequence from the stored step ``ticket``: consecutive steps of its lane,
        stored, in its episode and sampleable, at most ``length``; empty if ``ticket``'s step is not sampleable."""
        K = self._episode_config.num_envs
        start = self._start[ticket % self._capacity]
        steps = []
        for i in range(length):
            t = ticket + i * K
            slot = t % self._capacity
            if not self._held(t) or self._start[slot] != start or not self._is_sampleable(slot):
                break
            steps.append(t)
        return steps

    def _admissible(self, length: int, period: int, end: str) -> List[int]:
        """Tickets of the admissible starts, ascending: sampleable stored steps whose position in their episode
        is a multiple of ``period`` (with end="drop": that have ``length`` real steps)."""
        K = self._episode_config.num_envs
        need = length if end == "drop" else 1
        out = []
        lo = max(self._base, self._cursor - self._capacity)
        for ticket in range(lo, self._cursor):
            start = self._start[ticket % self._capacity]
            if start is None or ((ticket - start) // K) % period:
                continue
            if len(self._sequence_steps(ticket, need)) == need:
                out.append(ticket)
        return out

    # --- sample ---------------------------------------------------------------------------------------------------

    def sample_sequences(self, batch_size: int, length: int, burn_in: int = 0, period: Optional[int] = None,
                         end: str = "truncate", beta: float = 0.4) -> SequenceBatch:
        """See :meth:`fastreplay.ReplayBuffer.sample_sequences`."""
        where = "sample_sequences"
        if "_children" in self.__dict__:  # a multi-task reference buffer
            raise TypeError(f"{where} is not available for a multi-task buffer yet")
        b, n, k, p, end = check_args(batch_size, length, burn_in, period, end)
        if self._episode_config is None:
            raise TypeError(f"{where} needs an episodic buffer (give num_envs=..., or any episode option; see "
                            "docs/episodes.md)")
        check_fields(self._batch)
        if self._prioritized:
            beta = check_beta(beta)
        starts = self._admissible(n, p, end)
        if b > len(starts):
            raise ValueError(f"{where}: batch_size {b} is larger than the number of admissible starts "
                             f"({len(starts)} for length={n}, period={p}, end='{end}')")
        weights = None
        if self._prioritized:
            prio = self._sequence_priorities(n, p, end, starts)
            leaves = [self._leaf(prio[s]) for s in starts]
            total = sum(leaves)
            if total <= 0.0:
                raise ValueError(f"{where}: every admissible start has priority 0, so none can be drawn")
            chosen = []
            for i in range(b):  # stratified, as the compiled buffers draw
                u = (i + self._rng.random()) * (total / b)
                acc, pick = 0.0, len(starts) - 1
                for j, v in enumerate(leaves):
                    acc += v
                    if u < acc and v > 0.0:
                        pick = j
                        break
                chosen.append(pick)
            drawn = [starts[j] for j in chosen]
            leaf_min = min(self._leaf(v) for v in prio.values() if self._leaf(v) > 0.0)
            tiny = float(np.finfo(np.float32).smallest_subnormal)
            weights = np.array([max(min(leaf_min / leaves[j], 1.0) ** beta, tiny) for j in chosen], np.float32)
        else:
            drawn = [starts[self._rng.randrange(len(starts))] for _ in range(b)]
        seqs = [self._sequence_steps(t, n) for t in drawn]
        T = max(len(s) for s in seqs) if end == "truncate" else n
        return self._sequence_batch(drawn, seqs, T, weights, n, k, p, end)

    def _sequence_batch(self, drawn: List[int], seqs: List[List[int]], T: int, weights: Optional[np.ndarray],
                        length: int, burn_in: int, period: int, end: str) -> SequenceBatch:
        B = len(drawn)
        data: Dict[str, np.ndarray] = {}
        for name, (shape, dtype) in self._batch.items():
            data[name] = np.zeros((B, T, *shape), dtype)
        mask = np.zeros((B, T), np.bool_)
        first = np.zeros((B, T), np.bool_)
        slots = np.full((B, T), -1, np.int64)
        for b, steps in enumerate(seqs):
            for i, t in enumerate(steps):
                slot = t % self._capacity
                row = self._episode_row(slot)
                for name in data:
                    data[name][b, i] = row[name]
                mask[b, i] = True
                first[b, i] = t == self._start[slot]
                slots[b, i] = slot
        batch = SequenceBatch(data)
        batch[MASK] = mask
        batch[IS_FIRST] = first
        batch.indices = np.array([t % self._capacity for t in drawn], np.int64)
        batch.generations = np.array([self._gen[t % self._capacity] for t in drawn], np.uint64)
        batch.weights = weights
        batch.slots = slots
        batch.lengths = np.array([len(s) for s in seqs], np.int64)
        batch.sequence_ids = np.array(drawn, np.int64) if self._prioritized else None  # start tickets
        batch.length, batch.burn_in, batch.period, batch.end = length, burn_in, period, end
        return batch

    # --- priorities -------------------------------------------------------------------------------------------------

    def _sequence_priorities(self, length: int, period: int, end: str, starts: List[int]) -> Dict[int, float]:
        """The raw priorities of (period, need)'s admissible starts (new ones get the largest set so far)."""
        key = (period, length if end == "drop" else 1)
        table = self.__dict__.setdefault("_seq_priorities", {})
        prio, top = table.setdefault(key, ({}, [1.0]))
        for s in starts:
            prio.setdefault(s, top[0])
        return {s: prio[s] for s in starts}

    def update_sequence_priorities(self, batch: SequenceBatch, abs_td: Any, eta: float = 0.9) -> int:
        """See :meth:`fastreplay.PrioritizedReplayBuffer.update_sequence_priorities`."""
        if not self._prioritized:
            raise TypeError("update_sequence_priorities needs a PrioritizedReplayBuffer")
        td, eta = check_update(batch, abs_td, eta)
        mix = eta_mix(td, batch.trained, eta)
        for v in mix:
            if np.isfinite(v) and not self._leaf(float(v)) <= _args.LEAF_LIMIT / self._capacity:
                raise ValueError("update_sequence_priorities: abs_td gives a leaf (p + eps)**alpha beyond "
                                 "2**1022 / capacity")
        key = (batch.period, batch.length if batch.end == "drop" else 1)
        prio, top = self.__dict__.setdefault("_seq_priorities", {}).setdefault(key, ({}, [1.0]))
        stale = 0
        for b, ticket in enumerate(batch.sequence_ids):
            slot = int(batch.indices[b])
            if self._gen[slot] != int(batch.generations[b]) or not self._held(int(ticket)):
                stale += 1
                continue
            if not np.isfinite(mix[b]):  # no trained step
                continue
            prio[int(ticket)] = float(mix[b])
            top[0] = max(top[0], float(mix[b]))
        return stale

    def _sequence_leaves(self, length: int, period: int, end: str) -> Dict[int, float]:
        """{start ticket: leaf} of the admissible starts (tests)."""
        starts = self._admissible(length, period, end)
        return {s: self._leaf(p) for s, p in self._sequence_priorities(length, period, end, starts).items()}

    # --- stored fields --------------------------------------------------------------------------------------------

    def update_field(self, name: str, indices: Any, values: Any, generations: Any = None) -> int:
        """See :meth:`fastreplay.ReplayBuffer.update_field`."""
        if "_children" in self.__dict__:
            raise TypeError("update_field is not available for a multi-task buffer yet")
        idx, vals = update_values(self._stored, name, indices, values)
        self._check_indices("update_field", [int(i) for i in idx])
        gens = None
        if generations is not None:
            gens = np.asarray(generations)
            if gens.shape != idx.shape:
                raise ValueError("update_field: generations must have one entry per index")
        skipped = 0
        for k, i in enumerate(idx):
            if gens is not None and int(gens[k]) != self._gen[int(i)]:
                skipped += 1
                continue
            self._rows[name][int(i)] = np.array(vals[k])
        return skipped
