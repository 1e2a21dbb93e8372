"""cpprb's ``PrioritizedReplayBuffer`` on fastreplay's prioritized core, and ``create_buffer``, which picks it or
``ReplayBuffer``."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ._buffer import ReplayBuffer


class PrioritizedReplayBuffer(ReplayBuffer):
    """cpprb's ``PrioritizedReplayBuffer``: proportional PER with ``(p + eps) ** alpha`` leaves.

    New transitions get the largest priority given so far (1 at the start) unless ``add(priorities=...)`` says
    otherwise. ``sample(batch_size, beta=0.4)`` adds ``weights`` (float32 ``(B,)``, max-normalised) and
    ``indexes`` (uint64 ``(B,)``). With ``check_for_update=True``, ``update_priorities`` skips slots written since
    the last ``sample``.
    """

    _prioritized = True

    def __init__(
        self,
        size: Any,
        env_dict: Optional[Dict[str, Dict[str, Any]]] = None,
        alpha: float = 0.6,
        *,
        Nstep: Optional[Dict[str, Any]] = None,
        eps: float = 1e-4,
        check_for_update: bool = False,
        next_of: Any = None,
        stack_compress: Any = None,
        default_dtype: Any = None,
        mmap_prefix: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        self._check_for_update = bool(check_for_update)
        self._setup(size, env_dict, next_of, stack_compress, default_dtype, Nstep, mmap_prefix,
                    {"alpha": float(alpha), "eps": float(eps)})

    def _reset_state(self) -> None:
        super()._reset_state()
        self._mark = (0, 0)  # (total_added, next_index) at the last sample, for check_for_update

    def add(self, *, priorities: Any = None, **kwargs: Any) -> Optional[int]:  # type: ignore[override]
        """As ``ReplayBuffer.add``; ``priorities`` (one per row) replace the default maximum priority."""
        if priorities is not None:
            priorities = np.ravel(np.asarray(priorities, dtype=np.float64))
        return self._add(kwargs, priorities)

    def _set_priorities(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._core.update_priorities(slots.astype(np.int64), np.asarray(priorities, dtype=np.float64))

    def sample(self, batch_size: int, beta: float = 0.4) -> Dict[str, np.ndarray]:  # type: ignore[override]
        """A prioritized batch with ``weights`` and ``indexes`` (stratified over the priority mass).

        An empty buffer gives what cpprb's does: every row from the last slot (never written: zeros), weights NaN.
        """
        if len(self._core) == 0:
            idx = np.full(int(batch_size), self._buffer_size - 1, dtype=np.int64)
            out = self._encode(self._rows(idx), idx)
            out["weights"] = np.full(len(idx), np.nan, dtype=np.float32)
            out["indexes"] = idx.astype(np.uint64)
            return out
        batch = self._core.sample(int(batch_size), float(beta))
        out = self._encode(batch, batch.indices)
        out["weights"] = batch.weights
        out["indexes"] = batch.indices.astype(np.uint64)
        if self._check_for_update:
            self._mark = (self._core.total_added, self._core.next_index)
        return out

    def update_priorities(self, indexes: Any, priorities: Any) -> None:
        """Set the priorities of ``indexes`` (one priority for all of them, or one each); skips slots written since
        the last sample if ``check_for_update``."""
        if priorities is None:
            raise TypeError("``properties`` must not be ``None``")
        idx = np.array(indexes, dtype=np.int64, ndmin=1).ravel()
        ps = np.array(priorities, dtype=np.float64, ndmin=1).ravel()
        if len(ps) == 1 and len(idx) != 1:
            # One priority for every index (cpprb's train passes update_policy's scalar return on; cpprb itself
            # reads past the end of a short priorities array).
            ps = np.full(len(idx), ps[0])
        if self._check_for_update:
            written = self._core.total_added - self._mark[0]
            if written >= self._buffer_size:
                return
            keep = ((idx - self._mark[1]) % self._buffer_size) >= written
            idx, ps = idx[keep], ps[keep]
        if len(idx):
            self._core.update_priorities(idx, ps)

    def get_max_priority(self) -> float:
        """The largest priority given so far (1 after construction or ``clear``)."""
        return float(self._core.max_priority)


def create_buffer(size: Any, env_dict: Optional[Dict[str, Any]] = None, *, prioritized: bool = False,
                  **kwargs: Any) -> ReplayBuffer:
    """``PrioritizedReplayBuffer`` if ``prioritized`` else ``ReplayBuffer``, with the other arguments passed on."""
    cls = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    return cls(size, env_dict, **kwargs)
