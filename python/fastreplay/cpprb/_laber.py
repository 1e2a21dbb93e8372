"""cpprb's Large Batch Experience Replay helpers (Lahire et al. 2021, arXiv:2110.01528): ``LaBERmean``,
``LaBERlazy`` and ``LaBERmax``. Each is a functor: sample ``m * batch_size`` transitions from a ``ReplayBuffer``,
compute surrogate priorities for them, and call it with ``priorities=`` (and the large batch's values as keyword
arguments) to draw ``batch_size`` of them in proportion to ``priorities + eps``, with importance weights."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np


class _LaBER:
    def __init__(self, batch_size: int, m: int = 4, *, eps: float = 1e-6) -> None:
        self.rng = np.random.default_rng()
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise ValueError("``batch_size`` must be positive integer.")
        if m <= 0:
            raise ValueError("``m`` must be positive integer")
        self.idx = np.arange(int(self.batch_size * m))
        self.eps = float(eps)
        if self.eps < 0:
            raise ValueError("``eps`` must be non negative")

    def __call__(self, *, priorities: Any, **kwargs: Any) -> Dict[str, np.ndarray]:
        """The sub-batch: ``{name: kwargs[name][indexes]}`` plus ``indexes`` (positions in the large batch) and
        ``weights``. ``ValueError`` unless there are ``m * batch_size`` priorities."""
        p = np.asarray(priorities, dtype=np.float64) + self.eps
        if p.shape != self.idx.shape:
            raise ValueError("``priorities`` size must be ``batch_size * m``")
        p = p / p.sum()
        idx = self.rng.choice(self.idx, self.batch_size, p=p)
        out = {k: np.asarray(v)[idx] for k, v in kwargs.items()}
        out["weights"] = self._weights(p, idx)
        out["indexes"] = idx
        return out

    def _weights(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LaBERmean(_LaBER):
    """LaBER-mean (the paper's recommended variant): weights ``mean(p) / p[i]`` over the large batch."""

    def _weights(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return p.mean() / p[idx]


class LaBERlazy(_LaBER):
    """LaBER-lazy: unnormalised weights ``1 / p[i]``."""

    def _weights(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return 1.0 / p[idx]


class LaBERmax(_LaBER):
    """LaBER-max: weights ``1 / p[i]`` divided by their maximum over the sub-batch."""

    def _weights(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        w = 1.0 / p[idx]
        return w / w.max()
