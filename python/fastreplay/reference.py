"""Pure-Python replay buffers with the same API and semantics as :mod:`fastreplay`'s compiled classes.

This module is the specification: the baseline every benchmark compares against and the oracle tests compare
with. It is written to be read, not to be fast: storage is one Python list of rows per field, sampling uses
``random.Random(seed)``, and prioritized replay walks a binary sum tree kept in a Python list. Only the random
numbers differ from the compiled classes; contents, priorities, generations, weights and errors (type and
message) are the same.

Bookkeeping, as in the C++ ring (``csrc/fastreplay/ring.h``): every row ever added gets a ticket t = 0, 1, 2, ...
and goes to slot ``t % capacity``. A slot's *generation* is ``t // capacity + 1`` for the last ticket written to it
(0: never written), so it grows each time the ring laps over the slot. ``clear()`` does not rewind: it moves the
cursor up to the next multiple of capacity and starts a new, empty epoch, so generations keep growing and an index
sampled before ``clear()`` is recognisably stale once its slot is written again.

Episode options (``num_envs``, ``frame_stack``, ``n_step``, ...; ``docs/episodes.md``) make a buffer *episodic*: the
episode index, sampleability and the batch rows live in :mod:`fastreplay._reference_episodes`.
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from . import _args, _episodes
from ._batch import Batch
from ._reference_episodes import EpisodeIndex, env_fields, episode_options, prioritized_draw
from ._fields import FieldSpecs, check_capacity, fields_from_spaces, normalize_fields, spaces_of
from ._reference_convert import (
    as_int, convert, index_array, put, real_array, rows_text, stack, type_name, uint_array,
)
from ._reference_sequences import SequenceReplay
from ._reference_tasks import TaskBuffers
from ._sum_min_tree import SumMinTree

__all__ = ["ReplayBuffer", "PrioritizedReplayBuffer", "SumMinTree"]


class ReplayBuffer(SequenceReplay, EpisodeIndex):
    """Uniform experience replay on a ring of ``capacity`` slots; see :class:`fastreplay.ReplayBuffer`.
    ``tasks=K`` makes a multi-task buffer (:mod:`fastreplay._reference_tasks`)."""

    _prioritized = False

    _ready = False  # set once __init__ has completed

    def __new__(cls, *args: Any, tasks: Any = None, **kwargs: Any):
        if tasks is not None and not issubclass(cls, TaskBuffers):
            cls = TaskPrioritizedReplayBuffer if cls._prioritized else TaskReplayBuffer
        return super().__new__(cls)

    def __init__(self, capacity: int, fields: Mapping[str, Any], seed: Optional[int] = None, *,
                 num_envs: Optional[int] = None, next_obs: Optional[str] = None, frame_stack: Optional[int] = None,
                 stacked_input: Optional[bool] = None, stack_padding: Optional[str] = None,
                 n_step: Optional[int] = None, gamma: Optional[float] = None, autoreset: Optional[str] = None) -> None:
        self._check_fresh("ReplayBuffer")
        options = dict(num_envs=num_envs, next_obs=next_obs, frame_stack=frame_stack, stacked_input=stacked_input,
                       stack_padding=stack_padding, n_step=n_step, gamma=gamma, autoreset=autoreset)
        self._setup("ReplayBuffer", capacity, fields, seed, options)
        self._ready = True

    def _check_fresh(self, where: str) -> None:
        """A second ``__init__`` is refused, as by the compiled classes (whose C++ core cannot be re-made)."""
        if self._ready:
            raise TypeError(f"{where}.__init__: this buffer is already initialized; create a new {where} instead")

    def _setup(self, where: str, capacity: Any, fields: Any, seed: Any, options: Mapping[str, Any]) -> None:
        self._fields: FieldSpecs = normalize_fields(fields, where)  # what add takes
        self._capacity = _args.capacity(capacity, where)
        check_capacity(self._fields, self._capacity, where)
        seed = _args.seed(seed, where)
        self._setup_episodes(where, options)  # the episode config; self._stored and self._batch: the layouts
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        self._rng = random.Random(self.seed)
        # One list per field; slot i of field f is self._rows[f][i] (None until first written).
        self._rows: Dict[str, List[Any]] = {name: [None] * self._capacity for name in self._stored}
        self._gen = [0] * self._capacity  # generation of each slot
        self._cursor = 0  # ticket of the next row
        self._base = 0  # first ticket of the current epoch (a multiple of capacity)

    @classmethod
    def from_env(cls, env_or_spaces: Any, capacity: int, seed: Optional[int] = None, **kwargs: Any):
        """An episodic buffer whose fields follow a gymnasium env's spaces, plus a bool ``truncated`` after
        ``done``; ``num_envs`` and ``autoreset`` come from the (vector) env unless given (see
        :meth:`fastreplay.ReplayBuffer.from_env`)."""
        obs_space, act_space = spaces_of(env_or_spaces)
        options, rest = episode_options(kwargs)
        options = _episodes.from_env_options(env_or_spaces, options)
        return cls(capacity, env_fields(fields_from_spaces(obs_space, act_space)), seed=seed, **rest, **options)

    # --- size and cursor --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return min(self._cursor - self._base, self._capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def fields(self) -> FieldSpecs:
        return dict(self._fields)

    @property
    def next_index(self) -> int:
        """Slot the next transition is written to."""
        return self._cursor % self._capacity

    @property
    def total_added(self) -> int:
        """Transitions added since creation or the last clear() (rows dropped by an oversized add included)."""
        return self._cursor - self._base

    @property
    def full(self) -> bool:
        return len(self) == self._capacity

    @property
    def storage(self) -> Dict[str, np.ndarray]:
        """Read-only copies ``{name: array[len(self), *shape]}`` of the stored rows, in slot order."""
        out = {}
        for name, (shape, dtype) in self._stored.items():
            out[name] = stack(self._rows[name][: len(self)], shape, dtype)
            out[name].flags.writeable = False
        return out

    def clear(self) -> None:
        """Empty the buffer: start a new epoch at the next multiple of capacity (generations are kept)."""
        self._cursor = -(-self._cursor // self._capacity) * self._capacity
        self._base = self._cursor
        self._clear_episodes()

    def generations(self, indices: Any) -> np.ndarray:
        """uint64[B]: the generation of each slot (any slot in [0, capacity), stored or not)."""
        idx = index_array("generations", indices)  # the same parsing as get() and update_priorities()
        for k, i in enumerate(idx):
            if not 0 <= i < self._capacity:
                raise IndexError(
                    f"generations: index {i} at position {k} is out of range for capacity {self._capacity}"
                )
        return np.array([self._gen[i] for i in idx], np.uint64)

    # --- add --------------------------------------------------------------------------------------------------

    def add(self, *values: Any, **fields: Any) -> None:
        """Store one transition, or N with a leading axis. Positional values in field order, or by name; a dict
        given for a name ``g`` supplies the fields ``g.<key>``. Everything is checked before anything is written."""
        names = list(self._fields)
        if len(values) > len(names):
            raise TypeError(f"add: takes at most {len(names)} positional values (one per field), got {len(values)}")
        given: Dict[str, Any] = dict(zip(names, values))
        for key, value in fields.items():
            if key in self._fields:
                put(given, key, value)
            elif isinstance(value, dict) and self._expand_dict(key, value, given):
                pass
            else:
                raise TypeError(f"add: unknown field '{key}'; the fields are {', '.join(names)}")
        for n in names:
            if n not in given:
                raise TypeError(f"add: missing field '{n}'; every add needs all of {', '.join(names)}")

        converted = {n: convert(n, *self._fields[n], given[n]) for n in names}  # name -> (rows array, batched)
        first = names[0]
        for n in names[1:]:
            if len(converted[n][0]) != len(converted[first][0]):
                raise ValueError(
                    "add: fields disagree on the number of rows: "
                    f"{rows_text(first, *converted[first])}, {rows_text(n, *converted[n])}"
                )

        # All checked: write. Only the last `capacity` of the N rows survive, so only those are copied.
        n_rows = len(converted[first][0])
        if self._episode_config is not None:  # exactly K rows, checked before anything is written
            self._add_episodic({n: rows for n, (rows, _) in converted.items()}, n_rows)
            return
        if n_rows == 0:
            return
        written = []
        for k in range(max(0, n_rows - self._capacity), n_rows):
            ticket = self._cursor + k
            slot = ticket % self._capacity
            for n in names:
                self._rows[n][slot] = np.array(converted[n][0][k])  # an owned copy of the row
            self._gen[slot] = ticket // self._capacity + 1
            written.append(slot)
        self._on_written(written)  # before the cursor moves: len(self) is still the size before this add
        self._cursor += n_rows

    def _expand_dict(self, group: str, value: Dict[Any, Any], given: Dict[str, Any]) -> bool:
        """A dict given for ``group`` supplies the fields ``group.<key>``, recursing into dict values (nested
        gymnasium Dict observations); False when no field starts with ``group.`` (as ``Buffer::expand_dict``)."""
        prefix = group + "."
        members = [n for n in self._fields if n.startswith(prefix)]
        if not members:
            return False
        for sub, v in value.items():
            if not isinstance(sub, str):
                raise TypeError(f"add: field '{group}' has key {sub!r} that is not a field")
            name = prefix + sub
            if name in self._fields:
                put(given, name, v)
            elif not (isinstance(v, dict) and self._expand_dict(name, v, given)):
                if any(n.startswith(name + ".") for n in self._fields):
                    raise TypeError(f"add: field '{name}' must be a dict of its keys, got {type(v).__name__}")
                raise TypeError(f"add: field '{group}' has key '{sub}' that is not a field")
        for n in members:
            if n not in given:
                raise TypeError(f"add: field '{group}' is missing key '{n[len(prefix):]}'")
        return True

    def _on_written(self, slots: List[int]) -> None:
        """Hook for prioritized replay: `slots` now hold new transitions."""

    # --- sample and get ---------------------------------------------------------------------------------------

    def sample(self, batch_size: int, *, out: Optional[Batch] = None, tasks: Any = None) -> Batch:
        """``batch_size`` rows drawn uniformly, with replacement, from the stored transitions."""
        if tasks is not None:
            raise TypeError("sample: tasks=... needs a multi-task buffer (tasks=K)")
        n = self._check_batch_size(batch_size)
        out = self._check_out(out, n)
        self._check_not_empty()
        if self._episode_config is None:
            indices = [self._rng.randrange(len(self)) for _ in range(n)]
        else:  # uniformly among the sampleable steps
            slots = self._sampleable_or_raise()
            indices = [slots[self._rng.randrange(len(slots))] for _ in range(n)]
        return self._gather(indices, out, with_generations=False)  # uniform batches: generations None

    def get(self, indices: Any) -> Batch:
        """The transitions at the given slots (int[B], each in [0, len(self)))."""
        idx = index_array("get", indices)
        self._check_indices("get", idx)
        self._check_get_sampleable(idx)
        weights = [1.0] * len(idx) if self._prioritized else None
        return self._gather(idx, None, with_generations=True, weights=weights)

    def _check_batch_size(self, batch_size: Any) -> int:
        n = as_int(batch_size, "sample: batch_size")
        if n <= 0:
            raise ValueError(f"sample: batch_size must be positive, got {n}")
        return n

    def _check_not_empty(self) -> None:
        if len(self) == 0:
            raise ValueError("sample: the buffer is empty; add transitions first")

    def _check_indices(self, fn: str, idx: List[int]) -> None:
        for k, i in enumerate(idx):
            if not 0 <= i < len(self):
                raise IndexError(
                    f"{fn}: index {i} at position {k} is out of range for a buffer holding {len(self)} transitions"
                )

    def _check_out(self, out: Any, n: int) -> Optional[Batch]:
        """An ``out=`` batch needs writeable C-contiguous arrays of the shapes and dtypes a fresh batch would have
        (generations and weights only for prioritized buffers, since uniform samples leave them alone)."""
        if out is None:
            return None
        if not isinstance(out, dict):
            raise TypeError(f"sample: out must be a Batch returned by sample(), got {type_name(out)}")
        wanted = [(name, out.get(name), dtype, shape) for name, (shape, dtype) in self._batch.items()]
        wanted.append(("indices", getattr(out, "indices", None), np.dtype(np.int64), ()))
        if self._prioritized:
            wanted.append(("generations", getattr(out, "generations", None), np.dtype(np.uint64), ()))
            wanted.append(("weights", getattr(out, "weights", None), np.dtype(np.float32), ()))
        for what, a, dtype, shape in wanted:
            if not isinstance(a, np.ndarray):
                raise TypeError(f"sample: out has no array '{what}'")
            if a.dtype != dtype or a.shape != (n, *shape):
                raise ValueError(
                    f"sample: out['{what}'] must be {dtype} with shape {(n, *shape)}, got {a.dtype} with shape {a.shape}"
                )
            if not (a.flags.c_contiguous and a.flags.writeable and a.dtype.isnative):
                raise ValueError(f"sample: out['{what}'] must be writeable and C-contiguous")
        return out

    def _gather(self, indices: List[int], out: Optional[Batch], with_generations: bool,
                weights: Optional[List[float]] = None) -> Batch:
        """Copy the rows at `indices` into `out` (refilled in place) or a new Batch."""
        if self._episode_config is None:
            data = {name: stack([self._rows[name][i] for i in indices], shape, dtype)
                    for name, (shape, dtype) in self._fields.items()}
        else:
            data = self._episode_batch(indices)
        gens = np.array([self._gen[i] for i in indices], np.uint64) if with_generations else None
        if out is not None:
            for name in data:
                out[name][...] = data[name]
            out.indices[...] = indices
            if gens is not None:
                out.generations[...] = gens
            if weights is not None:
                out.weights[...] = weights
            return out
        batch = Batch(data)
        batch.indices = np.array(indices, np.int64).reshape(-1)
        batch.generations = gens
        batch.weights = None if weights is None else np.array(weights, np.float32)
        return batch

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {dt}{list(shape)}" for k, (shape, dt) in self._fields.items())
        return f"{type(self).__name__}(size={len(self)}, capacity={self.capacity}, fields={{{fields}}})"


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay; see :class:`fastreplay.PrioritizedReplayBuffer`.

    Slot i holds a raw priority p_i and the leaf ``(p_i + eps) ** alpha``; it is drawn with probability
    leaf_i / sum(leaves). Episodic: a non-step's leaf is always 0, and only sampleable steps are drawn.
    """

    _prioritized = True

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, Any],
        alpha: float = 0.6,
        eps: float = 1e-6,
        seed: Optional[int] = None,
        max_priority: str = "all_time",
        stale: str = "skip",
        *,
        num_envs: Optional[int] = None,
        next_obs: Optional[str] = None,
        frame_stack: Optional[int] = None,
        stacked_input: Optional[bool] = None,
        stack_padding: Optional[str] = None,
        n_step: Optional[int] = None,
        gamma: Optional[float] = None,
        autoreset: Optional[str] = None,
    ) -> None:
        where = "PrioritizedReplayBuffer"
        self._check_fresh(where)
        alpha, eps = _args.prioritized(alpha, eps, max_priority, stale, where)
        options = dict(num_envs=num_envs, next_obs=next_obs, frame_stack=frame_stack, stacked_input=stacked_input,
                       stack_padding=stack_padding, n_step=n_step, gamma=gamma, autoreset=autoreset)
        self._setup(where, capacity, fields, seed, options)
        _args.initial_leaf(alpha, eps, self._capacity, where)
        self._alpha, self._eps = alpha, eps
        self._mode, self._stale = max_priority, stale
        self._raw = [0.0] * self._capacity  # priority last set for each slot, before eps and alpha
        self._tree = SumMinTree(self._capacity)
        self._max_all_time = 1.0  # largest priority ever passed to update_priorities, at least 1
        self._ready = True

    def _leaf(self, p: float) -> float:
        """(p + eps) ** alpha; at most 2**1022 / capacity for every value accepted (see _args.LEAF_LIMIT)."""
        return _args.leaf(p, self._eps, self._alpha)

    @property
    def max_priority(self) -> float:
        """Priority the next added transition receives (before eps and alpha)."""
        if self._mode == "all_time":
            return self._max_all_time
        return max(self._raw[: len(self)]) if len(self) else 1.0  # "stored": O(len), kept simple on purpose

    def _on_written(self, slots: List[int]) -> None:
        # New transitions get the max priority as it was before this add (overwritten rows' priorities included).
        p = self.max_priority
        for slot in slots:
            self._raw[slot] = p
            self._tree.set(slot, self._leaf(p) if self._is_step(slot) else 0.0)

    def clear(self) -> None:
        super().clear()
        self._raw = [0.0] * self._capacity
        self._tree = SumMinTree(self._capacity)
        self._max_all_time = 1.0

    def sample(self, batch_size: int, beta: float = 0.4, *, out: Optional[Batch] = None, tasks: Any = None) -> Batch:
        """Stratified proportional sample with importance weights ``(leaf_min / leaf_i) ** beta`` (float32)."""
        if tasks is not None:
            raise TypeError("sample: tasks=... needs a multi-task buffer (tasks=K)")
        n = self._check_batch_size(batch_size)
        if (not hasattr(beta, "__float__") and not hasattr(beta, "__index__")) or isinstance(beta, complex):
            raise TypeError(f"sample: beta must be a real number, got {type(beta).__name__}")
        try:
            beta = float(beta)
        except OverflowError:  # an int past float's range: infinite, which the range check below names
            beta = math.inf if beta > 0 else -math.inf
        out = self._check_out(out, n)
        if not (beta >= 0.0 and math.isfinite(beta)):
            raise ValueError(f"sample: beta must be finite and >= 0, got {beta}")
        self._check_not_empty()
        if self._episode_config is not None:
            indices, weights = prioritized_draw(self._rng, self._sampleable_or_raise(), self._tree.leaf, n, beta,
                                                 self._tree.min())
            return self._gather(indices, out, with_generations=True, weights=weights)
        total = self._tree.total()
        if total <= 0.0:  # only with eps = 0 and every stored priority 0 (the compiled sample hangs there)
            raise ValueError("sample: every stored transition has zero probability (priorities 0 and eps 0)")
        # Cut [0, total) into n equal strata and draw one point uniformly in each.
        indices = [self._tree.find_prefix((k + self._rng.random()) * (total / n)) for k in range(n)]
        leaf_min = self._tree.min()
        # Clamped to the smallest positive float32 (weights are float32), so they stay in (0, 1].
        tiny = float(np.finfo(np.float32).smallest_subnormal)
        weights = [max(min(leaf_min / self._tree.leaf(i), 1.0) ** beta, tiny) for i in indices]
        return self._gather(indices, out, with_generations=True, weights=weights)

    def update_priorities(self, indices: Any, priorities: Any, generations: Any = None) -> int:
        """Set ``priorities`` (finite, >= 0) at ``indices``; the last of duplicate indices wins. Rows whose slot was
        overwritten since they were sampled are skipped (or raise, with stale="raise"); they are recognised by
        ``generations`` (the batch's, which passing the Batch itself as ``indices`` supplies); without generations
        nothing is checked. Returns the number of rows skipped as stale. A rejected call changes nothing."""
        indices, priorities, generations = _args.update_arrays(indices, priorities, generations)
        fn = "update_priorities"
        idx = index_array(fn, indices)
        prio = real_array(fn, "priorities", priorities)
        if len(prio) != len(idx):
            raise ValueError(
                f"{fn}: indices and priorities must have the same length, got {len(idx)} indices and {len(prio)} priorities"
            )
        gens = None
        if generations is not None:
            gens = uint_array(fn, "generations", generations)
            if len(gens) != len(idx):
                raise ValueError(f"{fn}: generations must have one entry per index, got {len(gens)} for {len(idx)}")
        self._check_indices(fn, idx)
        for k, p in enumerate(prio):
            if not (math.isfinite(p) and p >= 0.0):
                raise ValueError(f"{fn}: priorities must be finite and >= 0, got {p:f} at position {k}")
        for k, p in enumerate(prio):
            if not self._leaf(p) <= _args.LEAF_LIMIT / self._capacity:
                raise ValueError(
                    f"{fn}: priority {p:g} at position {k} gives the leaf (p + eps)**alpha = {self._leaf(p):g} "
                    f"(alpha={self._alpha:g}, eps={self._eps:g}){_args.limit_text(self._capacity)}"
                )

        keep, skipped = [], 0  # (slot, priority, leaf)
        for k, (i, p) in enumerate(zip(idx, prio)):
            if gens is not None and int(gens[k]) != self._gen[i]:
                if self._stale == "raise":
                    raise ValueError(
                        f"{fn}: index {i} at position {k} is stale: its slot was overwritten after it was sampled "
                        f"(generation {int(gens[k])}, now {self._gen[i]})"
                    )
                skipped += 1
            else:
                keep.append((i, p, self._leaf(p)))
        for i, p, leaf in keep:  # in order, so the last of duplicate indices wins
            self._raw[i] = p
            self._max_all_time = max(self._max_all_time, p)
            self._tree.set(i, leaf if self._is_step(i) else 0.0)
        return skipped

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        alpha = _args.real(value, "alpha", "PrioritizedReplayBuffer.alpha")
        p = max([self.max_priority, *self._raw[: len(self)]])  # the largest stored or given to new transitions
        leaf = _args.leaf(p, self._eps, alpha)
        if not leaf <= _args.LEAF_LIMIT / self._capacity:
            raise ValueError(
                f"PrioritizedReplayBuffer.alpha: alpha={alpha:g} gives the leaf (p + eps)**alpha = {leaf:g} for the "
                f"priority p={p:g} (eps={self._eps:g}){_args.limit_text(self._capacity)}"
            )
        self._alpha = alpha
        for i in range(self._capacity):  # recompute every leaf from the stored raw priorities
            self._tree.set(i, self._leaf(self._raw[i]) if i < len(self) and self._is_step(i) else 0.0)

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def priorities(self) -> np.ndarray:
        """float64[len(self)]: the raw priority of each stored slot, a copy."""
        return np.array(self._raw[: len(self)], np.float64)

    def _leaves(self) -> np.ndarray:
        """float64[capacity]: every leaf of the sum tree."""
        return np.array([self._tree.leaf(i) for i in range(self._capacity)], np.float64)

    @property
    def _total(self) -> float:
        return self._tree.total()

    @property
    def _min(self) -> float:
        return self._tree.min()

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", alpha={self.alpha}, eps={self.eps})"


def _beta_arg(beta: Any) -> float:
    if (not hasattr(beta, "__float__") and not hasattr(beta, "__index__")) or isinstance(beta, complex):
        raise TypeError(f"sample: beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"sample: beta must be finite and >= 0, got {beta}")
    return beta


class TaskReplayBuffer(TaskBuffers, ReplayBuffer):
    """``ReplayBuffer(..., tasks=K)``: one uniform buffer per task (:mod:`fastreplay._reference_tasks`)."""

    def __init__(self, capacity: int, fields: Mapping[str, Any], seed: Optional[int] = None, *, tasks: Any = None,
                 task_capacity: Any = None, **options: Any) -> None:
        self._check_fresh("ReplayBuffer")
        self._setup_tasks("ReplayBuffer", capacity, fields, seed, tasks, task_capacity, "global", options,
                          lambda q, s: ReplayBuffer(q, fields, s, **options))
        self._ready = True

    def sample(self, batch_size: int, *, out: Optional[Batch] = None, tasks: Any = None) -> Batch:
        n = self._check_batch_size(batch_size)
        if out is not None:
            raise TypeError("sample: the reference's multi-task buffers take no out=")
        return self._sample_tasks(n, None, tasks)


class TaskPrioritizedReplayBuffer(TaskBuffers, PrioritizedReplayBuffer):
    """``PrioritizedReplayBuffer(..., tasks=K)``: one prioritized buffer per task, two-level weights."""

    def __init__(self, capacity: int, fields: Mapping[str, Any], alpha: float = 0.6, eps: float = 1e-6,
                 seed: Optional[int] = None, max_priority: str = "all_time", stale: str = "skip", *,
                 tasks: Any = None, task_capacity: Any = None, task_weights: str = "global", **options: Any) -> None:
        where = "PrioritizedReplayBuffer"
        self._check_fresh(where)
        _args.prioritized(alpha, eps, max_priority, stale, where)
        self._setup_tasks(where, capacity, fields, seed, tasks, task_capacity, task_weights, options,
                          lambda q, s: PrioritizedReplayBuffer(q, fields, alpha, eps, s, max_priority, stale,
                                                               **options))
        self._ready = True

    def sample(self, batch_size: int, beta: float = 0.4, *, out: Optional[Batch] = None, tasks: Any = None) -> Batch:
        n = self._check_batch_size(batch_size)
        if out is not None:
            raise TypeError("sample: the reference's multi-task buffers take no out=")
        return self._sample_tasks(n, _beta_arg(beta), tasks)

    @property
    def alpha(self) -> float:
        return self._children[0].alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        for c in self._children:
            c.alpha = value

    @property
    def eps(self) -> float:
        return self._children[0].eps

    @property
    def max_priority(self) -> float:
        return max(c.max_priority for c in self._children)
