"""TorchRL: ``ReplayBuffer(storage=LazyTensorStorage(capacity))`` holding TensorDicts (the in-memory storage
TorchRL recommends for speed; ``LazyMemmapStorage`` is for larger-than-RAM data), and for PER
``PrioritizedReplayBuffer(alpha, beta, storage=LazyTensorStorage(capacity))`` with
``sample(B, return_info=True)`` and ``update_priority(info["index"], td)``. One transition: ``add(td)`` with a
TensorDict of batch size []; a vector-env batch: ``extend(td)`` with batch size [16]. Rows are handed over as
TensorDicts built before timing (TorchRL's envs produce TensorDicts). Multi-threaded sampling uses TorchRL's own
``prefetch=2`` (a thread pool sampling ahead) on a second ReplayBuffer over the same storage.

The plain ``ReplayBuffer`` is used rather than ``TensorDictReplayBuffer`` because it was the faster of the two in a
pilot (TensorDictReplayBuffer also writes the sampled indices into each batch). TorchRL's prioritized sampler
needs its compiled extension (``torchrl._torchrl``, C++ segment trees); where that extension does not load
against the installed torch, the PER workloads are reported as not available, with the error.
"""
from __future__ import annotations

import importlib.metadata
import itertools
from typing import Any, Dict

import numpy as np

from .common import ALPHA, BETA


def info() -> Dict[str, Any]:
    import logging

    import torch
    import torchrl  # noqa: F401
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    d = {"version": importlib.metadata.version("torchrl"), "tensordict": importlib.metadata.version("tensordict"),
         "torch_threads": torch.get_num_threads(),
         "description": "torchrl ReplayBuffer + LazyTensorStorage (TensorDict rows); PER: PrioritizedReplayBuffer"}
    try:
        import torchrl._torchrl  # noqa: F401
        d["extension"] = "loaded"
    except Exception as e:  # noqa: BLE001
        d["extension"] = f"does not load: {type(e).__name__}: {str(e)[:160]}"
    return d


def _td(rows: Dict[str, np.ndarray]):
    import torch
    from tensordict import TensorDict
    n = len(rows["action"])
    return TensorDict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()}, batch_size=[n])


class Adapter:
    vector_buffer = False
    per_supported = True

    def __init__(self, rowset: str, capacity: int, prioritized: bool, n_envs: int = 1) -> None:
        import logging
        logging.getLogger("torchrl").setLevel(logging.WARNING)
        from torchrl.data import LazyTensorStorage, PrioritizedReplayBuffer, ReplayBuffer
        self.prioritized = prioritized
        self.storage = LazyTensorStorage(capacity)
        if prioritized:
            try:
                self.rb = PrioritizedReplayBuffer(alpha=ALPHA, beta=BETA, storage=self.storage)
            except RuntimeError as e:
                ext = info().get("extension", "")
                raise RuntimeError(f"{e} (torchrl's C++ extension {ext})") from e
        else:
            self.rb = ReplayBuffer(storage=self.storage)

    def fill(self, chunks) -> None:
        for c in chunks:
            self.rb.extend(_td(c))

    def add1_op(self, rows):
        tds = [_td({"obs": o[None], "action": np.array([a]), "reward": np.array([r], np.float32),
                    "next_obs": o2[None], "done": np.array([d])})[0].clone() for o, a, r, o2, d in rows]
        it, add = itertools.cycle(tds), self.rb.add
        return lambda: add(next(it))

    def addn_op(self, batches):
        tds = [_td(b) for b in batches]
        it, extend = itertools.cycle(tds), self.rb.extend
        return lambda: extend(next(it))

    def sample_op(self, batch_size: int):
        sample = self.rb.sample
        if self.prioritized:
            return lambda: sample(batch_size, return_info=True)
        return lambda: sample(batch_size)

    def sample_update_op(self, batch_size: int, td: np.ndarray):
        import torch
        prio = torch.from_numpy(td.astype(np.float32))
        sample, update = self.rb.sample, self.rb.update_priority

        def op():
            s, info = sample(batch_size, return_info=True)
            update(info["index"], prio)
            return s, info
        return op

    def prefetch_op(self, batch_size: int, threads: int):
        if self.prioritized:
            return None
        from torchrl.data import ReplayBuffer
        rb = ReplayBuffer(storage=self.storage, batch_size=batch_size, prefetch=threads)
        self._prefetch_rb = rb
        return rb.sample, (lambda: None)

    def to_check(self, s) -> Dict[str, Any]:
        info = None
        if isinstance(s, tuple):
            s, info = s
        d = {k: s[k].numpy() for k in ("obs", "action", "reward", "next_obs", "done")}
        if info is not None:
            d["indices"] = np.asarray(info["index"])
            w = info.get("_weight", info.get("priority_weight"))
            if w is not None:
                w = np.asarray(w, np.float64)
                d["weights"] = w / w.max()  # TorchRL returns unnormalised weights
        return d

    def close(self) -> None:
        self.rb = None
        self._prefetch_rb = None
        self.storage = None
