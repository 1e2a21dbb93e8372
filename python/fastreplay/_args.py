"""Constructor argument checks shared by the compiled buffers (:mod:`fastreplay.buffer`) and the pure-Python
reference (:mod:`fastreplay.reference`), so that each rule and its message live here once.

Rules about values seen at run time (beta, an empty buffer, indices, priorities, prefetch sizes) belong to the C++
core, which throws; the reference mirrors those messages and the differential tests keep the two in step.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ._batch import Batch


def capacity(value: Any, where: str) -> int:
    """A positive int (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: capacity must be an int, got {type(value).__name__}")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{where}: capacity must be positive, got {value}")
    return value


def seed(value: Any, where: str) -> Optional[int]:
    """None (draw one from the OS) or an int in [0, 2**63)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: seed must be an int or None, got {type(value).__name__}")
    if not 0 <= int(value) < 2**63:
        raise ValueError(f"{where}: seed must be in [0, 2**63), got {value}")
    return int(value)


def real(value: Any, name: str, where: str) -> float:
    """A finite real number >= 0 (alpha, eps)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int past float's range
        raise ValueError(f"{where}: {name} must be finite and >= 0, got an int too large for a float") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be finite and >= 0, got {value}")
    return value


def choice(value: Any, name: str, options: Sequence[str], where: str) -> str:
    """One of ``options`` (max_priority, stale, storage)."""
    if value not in options:
        allowed = " or ".join(repr(o) for o in options)
        raise ValueError(f"{where}: {name} must be {allowed}, got {value!r}")
    return value


def prioritized(alpha: Any, eps: Any, max_priority: Any, stale: Any, where: str) -> Tuple[float, float]:
    """The prioritized buffers' own arguments; returns (alpha, eps) as floats."""
    alpha, eps = real(alpha, "alpha", where), real(eps, "eps", where)
    choice(max_priority, "max_priority", ("all_time", "stored"), where)
    choice(stale, "stale", ("skip", "raise"), where)
    return alpha, eps


#: Every leaf ``(p + eps) ** alpha`` of a prioritized buffer is at most ``LEAF_LIMIT / capacity``, so the sum of all
#: leaves (each node of the sum tree) stays below 2**1022, finite. The C++ core enforces the same bound.
LEAF_LIMIT = math.ldexp(1.0, 1022)


def leaf(p: float, eps: float, alpha: float) -> float:
    """``(p + eps) ** alpha`` as C's pow computes it: ``inf`` where Python's ``**`` raises OverflowError."""
    try:
        return (p + eps) ** alpha
    except OverflowError:
        return math.inf


def limit_text(capacity: int) -> str:
    """The end of every leaf-bound error message (the C++ core's text, numbers as C's ``%g``)."""
    return f", above the limit 2**1022 / capacity = {LEAF_LIMIT / capacity:g} that keeps the sum of all leaves finite"


def initial_leaf(alpha: float, eps: float, capacity: int, where: str) -> None:
    """New transitions enter with priority 1 until a larger one is set: ValueError unless its leaf respects the
    bound (checked before anything is created; the C++ core checks it again)."""
    value = leaf(1.0, eps, alpha)
    if not value <= LEAF_LIMIT / capacity:
        raise ValueError(
            f"{where}: alpha={alpha:g} and eps={eps:g} give the leaf (p + eps)**alpha = {value:g} for the initial "
            f"priority p=1{limit_text(capacity)}"
        )


def update_arrays(indices: Any, priorities: Any, generations: Any) -> Tuple[Any, Any, Any]:
    """``update_priorities``' arguments with a Batch unpacked (its indices and generations) and torch tensors
    (CPU or GPU) moved to numpy; everything else is passed on unchanged for the implementation to check."""
    if isinstance(indices, Batch):
        if generations is None:
            generations = indices.generations
        indices = indices.indices
    if hasattr(priorities, "detach"):
        priorities = priorities.detach().cpu().numpy()
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu().numpy()
    return indices, priorities, generations
