"""cpprb's ``cpprb.PyReplayBuffer`` module path: the buffer classes (as exported by ``fastreplay.cpprb``) and
``dict2buffer``, the helper with which cpprb allocates its arrays, for code that imports them from there."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from . import (MPPrioritizedReplayBuffer, MPReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer,  # noqa: F401
               ReverseReplayBuffer, SelectiveReplayBuffer)


def dict2buffer(buffer_size: Any, env_dict: Optional[Dict[str, Dict[str, Any]]], *, stack_compress: Any = None,
                default_dtype: Any = None, mmap_prefix: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Zeroed arrays ``{name: (buffer_size, *shape)}`` for ``env_dict``, as cpprb allocates them.

    A name in ``stack_compress`` gets cpprb's compressed layout: its rows are overlapping windows along the last
    axis of one ``(buffer_size + stack - 1, *shape[:-1])`` array (``a[i, ..., k] == base[i + k, ...]``), so a
    frame stack stores each frame once. ``mmap_prefix`` maps each array to ``<mmap_prefix>_<name>.dat``.
    """
    size = int(buffer_size)
    if size <= 0:
        raise ValueError(f"dict2buffer: buffer_size must be positive, got {buffer_size!r}")
    default = np.dtype(default_dtype or np.single)
    compress = set([stack_compress] if isinstance(stack_compress, str) else (stack_compress or []))
    out: Dict[str, np.ndarray] = {}
    for name, defs in (env_dict or {}).items():
        defs = defs or {}
        shape = defs.get("shape", 1)
        shape = tuple(int(x) for x in (np.atleast_1d(shape)))
        dtype = np.dtype(defs.get("dtype", default))
        if name in compress and len(shape) >= 1 and shape[-1] > 1:
            stack = shape[-1]
            base_shape = (size + stack - 1,) + shape[:-1]
            base = _zeros(base_shape, dtype, mmap_prefix, name)
            out[name] = np.lib.stride_tricks.as_strided(
                base, shape=(size,) + shape, strides=(base.strides[0],) + base.strides[1:] + (base.strides[0],))
        else:
            out[name] = _zeros((size,) + shape, dtype, mmap_prefix, name)
    return out


def _zeros(shape: tuple, dtype: np.dtype, mmap_prefix: Optional[str], name: str) -> np.ndarray:
    if mmap_prefix:
        return np.memmap(f"{mmap_prefix}_{name}.dat", dtype=dtype, mode="w+", shape=shape)
    return np.zeros(shape, dtype=dtype)
