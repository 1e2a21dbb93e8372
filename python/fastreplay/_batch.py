"""The Batch type returned by every buffer's ``sample`` and ``get``."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np


class Batch(dict):
    """A sampled batch: a ``dict`` mapping each field name to an array of shape ``(B, *field_shape)``.

    The arrays own their memory (or share one block that lives as long as any of them), so nothing the buffer does
    later changes them. Attributes:

    - ``indices``: ``int64[B]``, the slot of each row (pass it to ``update_priorities``);
    - ``weights``: ``float32[B]`` importance weights for prioritized buffers, ``None`` for uniform ones;
    - ``generations``: ``uint64[B]`` for prioritized buffers and ``get`` (``None`` for uniform samples): the lap
      of the ring in which each row's slot was written; ``update_priorities`` uses it to skip rows that were
      overwritten since they were sampled.
    """

    __slots__ = ("indices", "weights", "generations")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.indices = np.empty(0, np.int64)
        self.weights: Optional[np.ndarray] = None
        self.generations = np.empty(0, np.uint64)

    @property
    def batch_size(self) -> int:
        """Number of rows B."""
        return int(len(self.indices))

    def to_torch(self, device: Any = "cpu", non_blocking: bool = True) -> Dict[str, Any]:
        """The fields (and ``weights``/``indices`` when present) as torch tensors.

        On the CPU this is zero-copy (``torch.from_numpy``); for a CUDA device the rows are copied through pinned
        memory with ``non_blocking`` transfers. Read-only arrays (e.g. the zero-copy views of a batch that came
        through Ray's object store, fastreplay.ray) cannot back a writable tensor: on the CPU they are copied, for a
        CUDA device they are copied into pinned memory as usual (never handed to torch as writable memory).
        Needs ``pip install fastreplay[torch]``.
        """
        import torch

        dev = torch.device(device)
        out: Dict[str, Any] = {}
        items = list(self.items())
        if self.weights is not None:
            items.append(("weights", self.weights))
        items.append(("indices", self.indices))
        for k, v in items:
            if v.flags.writeable:
                t = torch.from_numpy(v)
                if dev.type != "cpu":
                    t = t.pin_memory().to(dev, non_blocking=non_blocking)
            elif dev.type == "cpu":
                t = torch.from_numpy(v.copy())
            else:
                t = torch.empty(v.shape, dtype=torch.from_numpy(v[:0].copy()).dtype).pin_memory()
                t.numpy()[...] = v
                t = t.to(dev, non_blocking=non_blocking)
            out[k] = t
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.items())
        w = "" if self.weights is None else ", weights"
        return f"Batch(B={self.batch_size}, {parts}{w})"

    def __reduce__(self):  # pickle the contents and the attributes, not the slots' memory tricks
        return (_rebuild_batch, (dict(self), self.indices, self.weights, self.generations))


def _rebuild_batch(data, indices, weights, generations) -> Batch:
    b = Batch(data)
    b.indices, b.weights, b.generations = indices, weights, generations
    return b
