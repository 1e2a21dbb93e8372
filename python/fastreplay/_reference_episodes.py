"""The episode index of :mod:`fastreplay.reference` (``docs/episodes.md``), written to be read.

:class:`EpisodeIndex` is a mixin of ``reference.ReplayBuffer``: it keeps, per slot, the episode start of the step
stored there (``None`` for a non-step: a next-step reset row) and, with ``next_obs="dedup"``, the final observation
of end rows; per lane, what the lane's next row is. Sampleability and batch rows are computed from tickets on
demand, straight from the rules of the contract, with no cache to keep in step.

Tickets: the ring holds tickets ``max(base, cursor - capacity) .. cursor - 1`` (the current epoch), and a stored
slot s holds ticket ``(generation(s) - 1) * capacity + s``. Lane k's rows are tickets ``k, k + K, k + 2K, ...``.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import _episodes
from ._episodes import EpisodeConfig
from ._fields import FieldSpecs
from ._reference_convert import stack

#: A lane's next row starts a new episode (after clear(), the first add, a same-step end or a reset row).
NEW = "new"
#: A lane's next row is a next-step reset row (after an end with autoreset="next_step"): stored, not a step.
RESET = "reset"

NOTHING_SAMPLEABLE = (
    "sample: no stored step can be sampled yet: a step needs its next observation (with next_obs='dedup', the "
    "lane's next step) and every frame of its stack"
)


def env_fields(fields: FieldSpecs) -> FieldSpecs:
    """``fields`` (from :func:`fields_from_spaces`) with a bool scalar ``truncated`` right after ``done``."""
    out: FieldSpecs = {}
    for name, spec in fields.items():
        out[name] = spec
        if name == "done":
            out["truncated"] = ((), np.dtype(np.bool_))
    return out


def episode_options(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``kwargs`` split into (episode options, the rest)."""
    options = {k: v for k, v in kwargs.items() if k in _episodes.OPTIONS}
    rest = {k: v for k, v in kwargs.items() if k not in _episodes.OPTIONS}
    return options, rest


class EpisodeIndex:
    """Episode bookkeeping for the reference buffers; inert (``_episode_config is None``) for a plain buffer.

    Uses the ring of its host class: ``_fields`` (input fields), ``_rows`` (the stored columns), ``_gen``,
    ``_capacity``, ``_cursor``, ``_base``.
    """

    _episode_config: Optional[EpisodeConfig] = None

    def _setup_episodes(self, where: str, options: Mapping[str, Any]) -> None:
        """Check the options (before anything is made) and derive the stored and batch layouts."""
        cfg = _episodes.config(self._fields, self._capacity, where, options)
        self._episode_config = cfg
        self._stored: FieldSpecs = _episodes.stored_fields(self._fields, cfg)
        self._batch: FieldSpecs = _episodes.batch_fields(self._fields, cfg)
        if cfg is None:
            return
        self._start: List[Optional[int]] = [None] * self._capacity  # episode start ticket; None: a non-step
        self._finals = {name: [None] * self._capacity for name in cfg.next_obs} if cfg.dedup else {}
        self._lanes: List[Any] = [NEW] * cfg.num_envs  # NEW, RESET or the start ticket of the lane's episode

    # --- options ----------------------------------------------------------------------------------------------

    @property
    def episode_config(self) -> Optional[EpisodeConfig]:
        """The episode options (None for a plain buffer)."""
        return self._episode_config

    @property
    def num_envs(self) -> Optional[int]:
        return None if self._episode_config is None else self._episode_config.num_envs

    @property
    def frame_stack(self) -> Optional[int]:
        return None if self._episode_config is None else self._episode_config.frame_stack

    @property
    def n_step(self) -> Optional[int]:
        return None if self._episode_config is None else self._episode_config.n_step

    @n_step.setter
    def n_step(self, value: Any) -> None:
        n = _episodes.n_step(value, "ReplayBuffer.n_step")
        self._episode_config = _episodes.with_values(self._episodic_config("n_step"), n_step=n)

    @property
    def gamma(self) -> Optional[float]:
        return None if self._episode_config is None else self._episode_config.gamma

    @gamma.setter
    def gamma(self, value: Any) -> None:
        g = _episodes.gamma(value, "ReplayBuffer.gamma")
        self._episode_config = _episodes.with_values(self._episodic_config("gamma"), gamma=g)

    def _episodic_config(self, name: str) -> EpisodeConfig:
        return _episodes.require(self._episode_config, name)

    # --- add and clear ----------------------------------------------------------------------------------------

    def _add_episodic(self, rows: Dict[str, np.ndarray], n_rows: int) -> None:
        """Store one add of K rows (already converted to the input fields' dtypes and shapes): the stored columns,
        each row's episode start and, for ends with dedup, their final observation."""
        cfg = self._episode_config
        K = cfg.num_envs
        if n_rows != K:
            raise ValueError(f"add: a buffer with num_envs={K} takes exactly {K} rows per add (one per lane), "
                             f"got {n_rows}")
        written = []
        for lane in range(K):
            ticket = self._cursor + lane  # the cursor is a multiple of K, so ticket % K == lane
            slot = ticket % self._capacity
            for name in self._stored:
                self._rows[name][slot] = np.array(self._newest(name, rows[name][lane]))  # an owned copy
            self._gen[slot] = ticket // self._capacity + 1
            state = self._lanes[lane]
            if state == RESET:  # the env's reset row: stored, not a step; the next row starts the episode
                self._start[slot] = None
                self._lanes[lane] = NEW
            else:
                start = ticket if state == NEW else state
                self._start[slot] = start
                if self._is_end(ticket):
                    for o, no in zip(cfg.obs, cfg.next_obs):
                        if cfg.dedup:
                            self._finals[no][slot] = np.array(self._newest(o, rows[no][lane]))
                    self._lanes[lane] = RESET if cfg.autoreset == "next_step" else NEW
                else:
                    self._lanes[lane] = start
            written.append(slot)
        self._on_written(written)  # before the cursor moves, as for a plain add
        self._cursor += K

    def _newest(self, name: str, row: np.ndarray) -> np.ndarray:
        """The frame stored for an observation row: its newest frame ``row[S-1]`` with stacked_input."""
        cfg = self._episode_config
        if cfg.stacked_input and (name in cfg.obs or name in cfg.next_obs):
            return row[cfg.frame_stack - 1]
        return row

    def _clear_episodes(self) -> None:
        """After clear() every lane starts a new episode."""
        if self._episode_config is not None:
            self._lanes = [NEW] * self._episode_config.num_envs

    # --- tickets ----------------------------------------------------------------------------------------------

    def _held(self, ticket: int) -> bool:
        """Whether ``ticket`` is stored (in the current epoch, not overwritten)."""
        return max(self._base, self._cursor - self._capacity) <= ticket < self._cursor

    def _ticket(self, slot: int) -> int:
        """The ticket a stored slot holds."""
        return (self._gen[slot] - 1) * self._capacity + slot

    def _is_step(self, slot: int) -> bool:
        """False only for a next-step reset row (a plain buffer's rows are all steps)."""
        return self._episode_config is None or self._start[slot] is not None

    def _is_end(self, ticket: int) -> bool:
        slot = ticket % self._capacity
        trunc = self._episode_config.truncated and bool(self._rows["truncated"][slot])
        return bool(self._rows["done"][slot]) or trunc

    def _has_next(self, ticket: int) -> bool:
        """Rule 2: the next observation of the step at ``ticket`` exists."""
        cfg = self._episode_config
        return not cfg.dedup or self._is_end(ticket) or self._held(ticket + cfg.num_envs)

    def _is_sampleable(self, slot: int) -> bool:
        """Rules 1-3 for the step stored at ``slot`` (which must be in [0, len(self)))."""
        cfg = self._episode_config
        if cfg is None:  # a plain buffer: every stored row
            return True
        start = self._start[slot]
        if start is None:  # rule 1
            return False
        ticket = self._ticket(slot)
        oldest = max(start, ticket - (cfg.frame_stack - 1) * cfg.num_envs)
        return self._has_next(ticket) and self._held(oldest)  # rules 2 and 3

    def _sampleable(self) -> List[int]:
        """The sampleable slots, ascending."""
        return [slot for slot in range(len(self)) if self._is_sampleable(slot)]

    def _sampleable_or_raise(self) -> List[int]:
        slots = self._sampleable()
        if not slots:
            raise ValueError(NOTHING_SAMPLEABLE)
        return slots

    def _check_get_sampleable(self, indices: List[int]) -> None:
        """get(): ValueError naming the first slot (already in range) that holds no sampleable step."""
        if self._episode_config is None:
            return
        for k, slot in enumerate(indices):
            if not self._is_sampleable(slot):
                raise ValueError(f"get: slot {slot} at position {k} holds no sampleable step")

    # --- batch rows -------------------------------------------------------------------------------------------

    def _window(self, ticket: int) -> int:
        """m: the length of the n-step window starting at the step at ``ticket``."""
        cfg = self._episode_config
        K = cfg.num_envs
        m, last = 1, ticket
        while m < cfg.n_step and not self._is_end(last) and self._held(last + K) and self._has_next(last + K):
            m, last = m + 1, last + K
        return m

    def _frame(self, name: str, ticket: int, start: int) -> np.ndarray:
        """The stored frame of observation field ``name`` at ``ticket``, padded before the episode's start."""
        if ticket >= start:
            return self._rows[name][ticket % self._capacity]
        if self._episode_config.padding == "reset":
            return self._rows[name][start % self._capacity]
        shape, dtype = self._stored[name]
        return np.zeros(shape, dtype)

    def _next_frame(self, o: str, no: str, last: int) -> np.ndarray:
        """The observation (newest frame) after the step at ticket ``last``."""
        cfg = self._episode_config
        slot = last % self._capacity
        if not cfg.dedup:
            return self._rows[no][slot]
        if self._is_end(last):
            return self._finals[no][slot]
        return self._rows[o][(last + cfg.num_envs) % self._capacity]

    def _episode_row(self, slot: int) -> Dict[str, np.ndarray]:
        """The batch fields (in batch order) for the sampleable step stored at ``slot``."""
        cfg = self._episode_config
        assert self._is_sampleable(slot), f"slot {slot} holds no sampleable step"
        K, S = cfg.num_envs, cfg.frame_stack
        ticket, start = self._ticket(slot), self._start[slot]
        m = self._window(ticket)
        last = ticket + (m - 1) * K  # E, the window's last step
        row: Dict[str, Any] = {}
        for o, no in zip(cfg.obs, cfg.next_obs):
            if S == 1:
                row[o] = self._rows[o][slot]
                row[no] = self._next_frame(o, no, last)
            else:
                row[o] = np.stack([self._frame(o, ticket - (S - 1 - i) * K, start) for i in range(S)])
                frames = [self._frame(o, last - (S - 2 - i) * K, start) for i in range(S - 1)]
                row[no] = np.stack(frames + [self._next_frame(o, no, last)])
        reward = 0.0  # float64
        for j in range(m):
            reward += math.pow(cfg.gamma, j) * float(self._rows["reward"][(ticket + j * K) % self._capacity])
        row["reward"] = reward
        done = bool(self._rows["done"][last % self._capacity])
        row["done"] = done
        if cfg.truncated:
            row["truncated"] = bool(self._rows["truncated"][last % self._capacity])
        row[_episodes.DISCOUNT] = _episodes.discount(cfg.gamma, m, done)
        out = {}
        for name, (shape, dtype) in self._batch.items():
            value = row[name] if name in row else self._rows[name][slot]
            out[name] = np.array(value, dtype).reshape(shape)
        return out

    def _episode_batch(self, indices: List[int]) -> Dict[str, np.ndarray]:
        """``{name: array[B, *shape]}`` of the batch fields for the given sampleable slots."""
        rows = [self._episode_row(slot) for slot in indices]
        return {name: stack([r[name] for r in rows], shape, dtype) for name, (shape, dtype) in self._batch.items()}


def prioritized_draw(rng: random.Random, slots: List[int], leaf: Callable[[int], float], n: int,
                     beta: float, leaf_min: float) -> Tuple[List[int], List[float]]:
    """A stratified proportional draw of ``n`` slots among ``slots`` (the sampleable ones) by their leaves, and
    the weights ``(leaf_min / leaf_i) ** beta`` with leaf_min the smallest positive leaf of all stored slots (the
    min tree's, as for a plain buffer: steps not sampleable yet count too)."""
    leaves = [leaf(s) for s in slots]
    total = sum(leaves)
    if total <= 0.0:
        raise ValueError("sample: every stored transition has zero probability (priorities 0 and eps 0)")
    positive = [(s, v) for s, v in zip(slots, leaves) if v > 0.0]

    def find(u: float) -> int:  # the slot where the running sum passes u (never a zero leaf)
        acc = 0.0
        for s, v in positive:
            acc += v
            if u < acc:
                return s
        return positive[-1][0]  # u at the very top (rounding)

    indices = [find((k + rng.random()) * (total / n)) for k in range(n)]
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    weights = [max(min(leaf_min / leaf(i), 1.0) ** beta, tiny) for i in indices]
    return indices, weights
