"""cpprb's ``ReverseReplayBuffer`` (Reverse Experience Replay): samples walk backwards from the newest
transition."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ._buffer import ReplayBuffer


class ReverseReplayBuffer(ReplayBuffer):
    """``sample(B)`` returns the transitions at ``t, t - stride, ..., t - (B - 1) * stride`` (modulo the stored
    size), where ``t`` starts at the newest transition and steps back by one per ``sample`` call; once ``t`` is
    ``2 * stride`` or more behind the newest transition it restarts there. Other arguments as ``ReplayBuffer``."""

    def __init__(self, size: Any, env_dict: Optional[Dict[str, Dict[str, Any]]] = None, *, stride: int = 300,
                 **kwargs: Any) -> None:
        super().__init__(size, env_dict, **kwargs)
        self.stride = int(stride)
        if self.stride < 1:
            raise ValueError(f"ReverseReplayBuffer: stride must be >= 1, got {stride}")
        self._last = 0  # slot of the previous sample's first transition

    def sample(self, batch_size: int) -> Dict[str, np.ndarray]:  # type: ignore[override]
        ssize, nidx = self.get_stored_size(), self.get_next_index()
        if ssize == 0:
            raise ValueError("ReverseReplayBuffer.sample: the buffer is empty")
        ahead = nidx + ssize if nidx <= self._last else nidx
        if ahead - self._last >= 2 * self.stride:
            self._last = (nidx or ssize) - 1
        else:
            self._last = (self._last or ssize) - 1
        idx = (self._last - self.stride * np.arange(int(batch_size), dtype=np.int64)) % ssize
        return self._encode(self._core.get(idx), idx)

    def clear(self) -> None:
        super().clear()
        self._last = 0
