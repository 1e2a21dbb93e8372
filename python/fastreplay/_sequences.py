"""Sequence replay for recurrent agents (``docs/sequences.md``): the public methods ``sample_sequences``,
``update_sequence_priorities`` and ``update_field``, their argument rules (one place, shared by the compiled buffers
and :mod:`fastreplay.reference`) and the :class:`SequenceBatch` they return.

The work is done in C++ (``csrc/fastreplay/sequences.h``) over the episode index: admissible starts are kept per
(period, need) in ticket order, so a sample is a few random reads and a gather whatever the capacity.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._batch import Batch

#: How sequences end at their episode's end (or the lane's newest step).
ENDS = ("truncate", "pad", "drop")
#: Keys a SequenceBatch adds to the buffer's batch fields.
MASK, IS_FIRST = "mask", "is_first"


class SequenceBatch(Batch):
    """A batch of B sequences of T steps: a ``dict`` mapping each batch field to ``array[B, T, *field_shape]``
    (C-contiguous), plus ``mask`` (bool[B, T]: real steps; False for padding) and ``is_first`` (bool[B, T]: the
    step is its episode's first). Step t of sequence b holds exactly what ``get`` returns for that step (frame
    stacks, the n-step ``reward``/``next_obs``/``done``/``discount``); padding is all zeros.

    Attributes (besides ``indices``: int64[B], the slot of each sequence's first step; ``generations``:
    uint64[B], that slot's generation; ``weights``: float32[B] for prioritized buffers, else None):

    - ``slots``: int64[B, T], the slot of every real step (-1 for padding): pass it to ``update_field``;
    - ``lengths``: int64[B], real steps per sequence; ``trained``: bool[B, T], real steps at t >= burn_in;
    - ``sequence_ids``: int64[B] (prioritized): the sequences' leaves, for ``update_sequence_priorities``;
    - ``length``, ``burn_in``, ``period``, ``end``: the arguments of the call.
    """

    __slots__ = ("slots", "lengths", "sequence_ids", "length", "burn_in", "period", "end")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = np.empty((0, 0), np.int64)
        self.lengths = np.empty(0, np.int64)
        self.sequence_ids: Optional[np.ndarray] = None
        self.length = self.burn_in = self.period = 0
        self.end = "truncate"

    @property
    def trained(self) -> np.ndarray:
        """bool[B, T]: the steps a learner trains on: real steps after the burn-in."""
        mask = self[MASK]
        return mask & (np.arange(mask.shape[1]) >= self.burn_in)[None, :]

    def __repr__(self) -> str:
        return "Sequence" + super().__repr__()

    def __reduce__(self):
        attrs = {k: getattr(self, k) for k in SequenceBatch.__slots__}
        return (_rebuild, (dict(self), self.indices, self.weights, self.generations, attrs))


def _rebuild(data, indices, weights, generations, attrs) -> SequenceBatch:
    b = SequenceBatch(data)
    b.indices, b.weights, b.generations = indices, weights, generations
    for k, v in attrs.items():
        setattr(b, k, v)
    return b


def _int(value: Any, name: str, where: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    if int(value) < lo:
        raise ValueError(f"{where}: {name} must be >= {lo}, got {int(value)}")
    if int(value) > 2**31 - 1:
        raise ValueError(f"{where}: {name} must be at most 2**31 - 1, got {int(value)}")
    return int(value)


def check_args(batch_size: Any, length: Any, burn_in: Any, period: Any, end: Any,
               where: str = "sample_sequences") -> Tuple[int, int, int, int, str]:
    """``sample_sequences``' arguments checked (TypeError/ValueError naming the argument); period None becomes
    ``length - burn_in`` (the trained parts of consecutive sequences tile the episode)."""
    b = _int(batch_size, "batch_size", where, 1)
    n = _int(length, "length", where, 1)
    k = _int(burn_in, "burn_in", where, 0)
    if k >= n:
        raise ValueError(f"{where}: burn_in must be smaller than length, got burn_in={k} and length={n}")
    p = n - k if period is None else _int(period, "period", where, 1)
    if end not in ENDS:
        raise ValueError(f"{where}: end must be 'truncate', 'pad' or 'drop', got {end!r}")
    return b, n, k, p, end


def check_beta(beta: Any, where: str = "sample_sequences") -> float:
    """beta of a prioritized sequence sample: a finite real number >= 0."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (beta >= 0.0 and np.isfinite(beta)):
        raise ValueError(f"{where}: beta must be finite and >= 0, got {beta}")
    return beta


def check_fields(batch_fields: Any, where: str = "sample_sequences") -> None:
    """A buffer with a field named ``mask`` or ``is_first`` cannot return sequence batches (the keys clash)."""
    for key in (MASK, IS_FIRST):
        if key in batch_fields:
            raise ValueError(f"{where}: the buffer has a field named '{key}', which sequence batches use for their "
                             "own array")


def eta_mix(abs_td: np.ndarray, trained: np.ndarray, eta: float) -> np.ndarray:
    """float64[B]: ``eta * max + (1 - eta) * mean`` of ``abs_td`` over each row's trained steps (NaN if none).
    The definition, in numpy; the compiled buffers compute it in C++."""
    td = np.asarray(abs_td, np.float64)
    n = trained.sum(axis=1)
    mx = np.where(trained, td, 0.0).max(axis=1)  # abs_td >= 0: 0 never passes a trained value
    mean = np.where(trained, td, 0.0).sum(axis=1) / np.maximum(n, 1)
    return np.where(n > 0, eta * mx + (1.0 - eta) * mean, np.nan)


def check_update(batch: Any, abs_td: Any, eta: Any, where: str = "update_sequence_priorities") -> Tuple[np.ndarray, float]:
    """``update_sequence_priorities``' arguments: a SequenceBatch of a prioritized buffer, abs_td float[B, T]
    (torch tensors accepted), eta in [0, 1]. Returns (abs_td as float64[B, T], eta)."""
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"{where}: batch must be the SequenceBatch that sample_sequences returned, got "
                        f"{type(batch).__name__}")
    if batch.sequence_ids is None:
        raise TypeError(f"{where}: the batch comes from a uniform buffer (no sequence priorities)")
    if hasattr(abs_td, "detach"):
        abs_td = abs_td.detach().cpu().numpy()
    td = np.asarray(abs_td)
    if td.dtype.kind not in "biuf":
        raise TypeError(f"{where}: abs_td must be real numbers, got dtype {td.dtype}")
    shape = batch[MASK].shape
    if td.shape != shape:
        raise ValueError(f"{where}: abs_td must have the batch's shape [B, T] = {list(shape)}, got {list(td.shape)}")
    td = np.ascontiguousarray(td, np.float64)
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: eta must be a real number, got {type(eta).__name__}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"{where}: eta must be in [0, 1], got {eta}")
    bad = ~(np.isfinite(td) & (td >= 0))
    if bad.any():
        b, t = map(int, np.argwhere(bad)[0])
        raise ValueError(f"{where}: abs_td must be finite and >= 0, got {td[b, t]} at row {b}, step {t}")
    return td, float(eta)


def update_values(stored: Any, name: Any, indices: Any, values: Any, where: str = "update_field") -> Tuple[np.ndarray, np.ndarray]:
    """``update_field``' arguments: ``name`` a stored field, ``indices`` int[n] (1-d), ``values`` [n, *shape] cast
    to the field's dtype under numpy's 'same_kind' rule. Returns (indices int64[n], values)."""
    if not isinstance(name, str) or name not in stored:
        raise ValueError(f"{where}: no stored field {name!r}; stored fields: {', '.join(stored)}")
    shape, dtype = stored[name]
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu().numpy()
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise TypeError(f"{where}: indices must be a 1-d array of ints, got dtype {idx.dtype} and shape "
                        f"{list(idx.shape)}")
    vals = np.asarray(values)
    want = (len(idx), *shape)
    if vals.shape != want:
        raise ValueError(f"{where}: values for field '{name}' must have shape {list(want)} (one row per index), "
                         f"got {list(vals.shape)}")
    if not np.can_cast(vals.dtype, dtype, "same_kind"):
        raise TypeError(f"{where}: values of dtype {vals.dtype} cannot be cast to field '{name}' ({dtype}) under "
                        "the 'same_kind' rule")
    return idx.astype(np.int64), np.ascontiguousarray(vals, dtype)


def batch_of(parts: Tuple[Any, ...], length: int, burn_in: int, period: int, end: str) -> SequenceBatch:
    """The SequenceBatch of the compiled core's output."""
    fields, mask, first, slots, starts, gens, lengths, items, weights = parts
    b = SequenceBatch(fields)
    b[MASK] = mask
    b[IS_FIRST] = first
    b.indices, b.generations, b.weights = starts, gens, weights
    b.slots, b.lengths, b.sequence_ids = slots, lengths, items
    b.length, b.burn_in, b.period, b.end = length, burn_in, period, end
    return b


class SequenceMethods:
    """Sequence replay methods of the compiled buffers (mixed into ``fastreplay.ReplayBuffer``)."""

    def sample_sequences(self, batch_size: int, length: int, burn_in: int = 0, period: Optional[int] = None,
                         end: str = "truncate", beta: float = 0.4) -> SequenceBatch:
        """Draw ``batch_size`` sequences of up to ``length`` consecutive steps of one lane and one episode
        (with replacement); returns a :class:`SequenceBatch` (fields ``[B, T, ...]``, ``mask``, ``is_first``).

        Admissible starts: stored steps whose position in their episode is a multiple of ``period`` (default
        ``length - burn_in``) and that are sampleable (docs/episodes.md). ``end``: ``"truncate"`` (a sequence stops
        at its episode's end or its lane's newest step; T is the longest real sequence in the batch, shorter ones
        padded with zeros and ``mask`` False), ``"pad"`` (the same, T = length) or ``"drop"`` (only starts with
        ``length`` steps in their episode; T = length, mask all True). ``burn_in`` steps (< length) lead each
        sequence; they are returned like the others and only ``batch.trained`` and the priorities leave them out.
        Uniform buffers draw starts uniformly; prioritized buffers draw them in proportion to their sequence
        priority (``update_sequence_priorities``) and set ``weights`` ``(leaf_min / leaf)**beta``.
        Episodic, single-task buffers only (TypeError otherwise). ValueError if ``batch_size`` exceeds the number
        of admissible starts; a rejected call changes nothing. O(B * length * row bytes), whatever the capacity.
        """
        b, n, k, p, end = check_args(batch_size, length, burn_in, period, end)
        check_fields(self._episodes_batch_fields())
        beta = check_beta(beta) if self._prioritized else 0.0
        return batch_of(self._sample_sequences(b, n, p, end, beta), n, k, p, end)

    def _episodes_batch_fields(self) -> Any:
        from . import _episodes
        if self._episodes is None:
            raise TypeError("sample_sequences needs an episodic buffer (give num_envs=..., or any episode option; "
                            "see docs/episodes.md)")
        return _episodes.batch_fields(self._fields, self._episodes)

    def update_sequence_priorities(self, batch: SequenceBatch, abs_td: Any, eta: float = 0.9) -> int:
        """Set each sampled sequence's priority to ``eta * max + (1 - eta) * mean`` of ``abs_td`` (float[B, T],
        finite, >= 0) over its trained steps (``batch.trained``: real steps at t >= burn_in), computed in C++;
        stored as the leaf ``(p + eps) ** alpha`` (the buffer's alpha and eps). Sequences whose first step was
        overwritten since sampling (so some step was) are skipped, as are sequences without a trained step.
        Everything is validated first: a rejected call changes nothing. Returns the number of stale sequences.
        PrioritizedReplayBuffer only."""
        if not self._prioritized:
            raise TypeError("update_sequence_priorities needs a PrioritizedReplayBuffer")
        td, eta = check_update(batch, abs_td, eta)
        return self._update_sequence_priorities(batch.length, batch.period, batch.end, batch.sequence_ids, batch.indices,
                                                batch.generations, td, np.ascontiguousarray(batch.trained), eta)

    def update_field(self, name: str, indices: Any, values: Any, generations: Any = None) -> int:
        """Overwrite stored field ``name`` at the slots ``indices`` (int[n], stored slots) with ``values``
        ([n, *shape], cast under 'same_kind'), e.g. fresh recurrent states ``h`` after a learner pass
        (``indices = batch.slots[batch.mask]``). The rows keep their generation (priorities stay valid). With
        ``generations`` (uint64[n]) a row whose slot was overwritten since is skipped; returns how many were.
        Serialised with adds; a sample running at the same time may see the old or the new values of a row being
        updated (for a field of several elements possibly some of each). Validated first: a rejected call
        changes nothing. Single-task buffers."""
        if self._task_quotas is not None:
            raise TypeError("update_field is not available for a multi-task buffer yet")
        idx, vals = update_values(self._stored, name, indices, values)
        return self._update_field(name, idx, vals, generations)
