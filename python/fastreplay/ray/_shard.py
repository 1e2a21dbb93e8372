"""ReplayShard: one shard of a sharded replay service, run as a threaded Ray actor (see fastreplay.ray).

The buffer is built inside the actor from plain constructor arguments, so the native object is never pickled.
``add`` and ``sample`` run concurrently on the actor's threads (the compiled buffer releases the GIL); writes
(``add``, ``update_priorities``, checkpoints) are serialised by one lock, so a checkpoint never races an add and
an add's initial priorities are set on exactly the slots it wrote. This module does not import Ray: the client
(fastreplay.ray._client) wraps the class with ``ray.remote``.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..rate_limiter import RateLimiter, read_limiter_state, save_with_limiter


class ReplayShard:
    """A fastreplay buffer plus an optional rate limiter, serving writers and the learner.

    Args:
        shard_id: this shard's number (0..N-1).
        capacity: slots of this shard.
        fields: ``{name: (shape, dtype)}``, plain data (dtypes as strings or numpy dtypes).
        prioritized: a PrioritizedReplayBuffer (True) or a ReplayBuffer.
        buffer_options: other keyword arguments of the buffer's constructor (alpha, eps, max_priority, ...).
        limiter: a :meth:`RateLimiter.state` dict (config and counters) or None; rows inserted and sampled on this
            shard are counted by it.
        checkpoint_path: where ``checkpoint()`` writes (``save`` plus the limiter's state). If the file exists
            when the shard starts, the shard resumes from it (a restarted shard).
        checkpoint_every: seconds between automatic checkpoints (a background thread); None for none.
        backend: ``"fastreplay"`` (the compiled buffer) or ``"reference"`` (fastreplay.reference, pure Python; the
            baseline of bench/scripts/bench_ray.py).
        seed: the buffer's seed.
    """

    def __init__(self, shard_id: int, capacity: int, fields: Mapping[str, Any], prioritized: bool = True,
                 buffer_options: Optional[Dict[str, Any]] = None, limiter: Optional[Dict[str, Any]] = None,
                 checkpoint_path: Optional[str] = None, checkpoint_every: Optional[float] = None,
                 backend: str = "fastreplay", seed: Optional[int] = None) -> None:
        self.shard_id = int(shard_id)
        self.prioritized = bool(prioritized)
        self._path = checkpoint_path
        self._lock = threading.Lock()
        self.restored = False
        options = dict(buffer_options or {})
        if backend == "reference":
            from .. import reference as lib
        elif backend == "fastreplay":
            from .. import buffer as lib
        else:
            raise ValueError(f"ReplayShard: backend must be 'fastreplay' or 'reference', got {backend!r}")
        cls = lib.PrioritizedReplayBuffer if prioritized else lib.ReplayBuffer
        if checkpoint_path is not None and os.path.exists(checkpoint_path):
            if backend != "fastreplay":
                raise ValueError("ReplayShard: only backend='fastreplay' shards resume from checkpoints")
            self.buffer = cls.load(checkpoint_path)
            state = read_limiter_state(checkpoint_path)
            self.limiter = RateLimiter.from_state(state) if state is not None else (
                RateLimiter.from_state(limiter) if limiter is not None else None)
            self.restored = True
        else:
            self.buffer = cls(capacity, fields, seed=seed, **options)
            self.limiter = RateLimiter.from_state(limiter) if limiter is not None else None
        self._capacity = self.buffer.capacity
        # Episodic shards (num_envs, frame_stack, n_step, ... in buffer_options): each add takes one step of every
        # lane, in order, so such a shard serves exactly one writer (the first to send).
        self._lanes = getattr(self.buffer, "num_envs", None)
        self._writer: Optional[str] = None
        self._stop = threading.Event()
        self.checkpoints = 0
        if checkpoint_every is not None and checkpoint_path is not None:
            t = threading.Thread(target=self._checkpoint_loop, args=(float(checkpoint_every),), daemon=True)
            t.start()

    # -- writers --------------------------------------------------------------------------------------------
    def add(self, columns: Dict[str, np.ndarray], priorities: Optional[np.ndarray] = None,
            block: bool = False, timeout: Optional[float] = None, writer: Optional[str] = None) -> Dict[str, Any]:
        """Add ``n`` rows (``columns``: ``{field: array[n, *shape]}``, read-only arrays accepted) with optional
        initial priorities (float[n]). With a rate limiter that holds inserts back: by default (``block=False``)
        nothing is added and the stats say ``"accepted": False`` (the writer then tries another shard, so a
        shard that needs rows for a waiting sample always gets them); ``block=True`` waits (``timeout`` seconds at
        most: TimeoutError). An episodic shard takes whole steps (n a multiple of its num_envs K, rows in step
        order, lane k of each step at position k) from one writer only (``writer``, its id). Returns the shard's
        stats with ``"accepted"``."""
        n = int(len(next(iter(columns.values())))) if columns else 0
        if priorities is not None and len(priorities) != n:
            raise ValueError(f"ReplayShard.add: {len(priorities)} priorities for {n} rows")
        if self._lanes is not None:
            if n % self._lanes:
                raise ValueError(f"ReplayShard.add: an episodic shard (num_envs={self._lanes}) takes whole steps, "
                                 f"got {n} rows")
            with self._lock:
                if self._writer is None:
                    self._writer = writer
            if writer is None or writer != self._writer:
                raise ValueError(f"ReplayShard.add: shard {self.shard_id} is episodic and serves one writer "
                                 f"({self._writer}); got writer {writer}: give each writer its own shard "
                                 "(ShardedReplay.writer(shards=[i]))")
        if self.limiter is not None and not self.limiter.insert(n, block=block, timeout=timeout):
            return dict(self.stats(), accepted=False)
        try:
            with self._lock:
                start = self.buffer.next_index
                if self._lanes is None:
                    self.buffer.add(**columns)
                else:
                    for k in range(0, n, self._lanes):
                        self.buffer.add(**{f: v[k:k + self._lanes] for f, v in columns.items()})
                if priorities is not None and self.prioritized:
                    idx = (start + np.arange(n, dtype=np.int64)) % self._capacity
                    self.buffer.update_priorities(idx, priorities)
        except BaseException:
            if self.limiter is not None:
                self.limiter._release(True, n)
            raise
        return dict(self.stats(), accepted=True)

    # -- learner --------------------------------------------------------------------------------------------
    def sample(self, n: int, beta: float = 0.4, timeout: Optional[float] = None,
               updates: Optional[tuple] = None) -> Dict[str, Any]:
        """``n`` rows (n may be 0: stats only), as ``{"columns": {field: array}, "indices", "generations",
        "leaves" (float64[n], the rows' tree leaves, prioritized), "skipped", "stats"}``; the arrays travel
        zero-copy through Ray's object store. ``updates``: priority updates ``(indices, priorities, generations)``
        the learner queued for this shard, applied first (one call instead of two; ``skipped`` counts their stale
        rows). Waits for the rate limiter before sampling."""
        out: Dict[str, Any] = {"columns": None, "indices": None, "generations": None, "leaves": None, "skipped": 0}
        if updates is not None:
            out["skipped"] = self.update_priorities(*updates)
        if n > 0:
            if self.limiter is not None:
                self.limiter.sample(n, timeout=timeout)
            b = self.buffer.sample(n, beta) if self.prioritized else self.buffer.sample(n)
            out["columns"] = dict(b)
            out["indices"] = b.indices
            if self.prioritized:
                out["generations"] = b.generations
                out["leaves"] = self._leaves_at(b.indices)
        out["stats"] = self.stats()
        return out

    def _leaves_at(self, indices: np.ndarray) -> np.ndarray:
        if hasattr(self.buffer, "_leaves_at"):
            return self.buffer._leaves_at(indices)
        tree = self.buffer._tree  # fastreplay.reference
        return np.array([tree.leaf(int(i)) for i in indices], np.float64)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray,
                          generations: Optional[np.ndarray] = None) -> int:
        """Set priorities of local slots; rows overwritten since they were sampled are skipped (their
        generations differ). Returns the number skipped."""
        with self._lock:
            return int(self.buffer.update_priorities(indices, priorities, generations))

    def stats(self) -> Dict[str, Any]:
        """``{"shard", "size", "total_added", "mass" (sum of leaves; size for uniform), "min_leaf"}``."""
        size = len(self.buffer)
        if self.prioritized:
            mass, min_leaf = float(self.buffer._total), float(self.buffer._min)
        else:
            mass, min_leaf = float(size), 1.0
        s = {"shard": self.shard_id, "size": size, "total_added": int(self.buffer.total_added), "mass": mass,
             "min_leaf": min_leaf, "restored": self.restored, "checkpoints": self.checkpoints}
        if self.limiter is not None:
            s["limiter"] = self.limiter.counters
        return s

    # -- faults ---------------------------------------------------------------------------------------------
    def checkpoint(self) -> str:
        """Write the buffer (``save``) and the limiter's state to ``checkpoint_path``, atomically."""
        if self._path is None:
            raise ValueError("ReplayShard.checkpoint: this shard has no checkpoint_path")
        with self._lock:
            save_with_limiter(self.buffer, self.limiter, self._path)
            self.checkpoints += 1
        return self._path

    def _checkpoint_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.checkpoint()
            except Exception:  # a failed periodic checkpoint leaves the previous one; the next try may succeed
                pass

    def priorities(self) -> np.ndarray:
        """float64[size]: the stored priorities (a copy)."""
        return self.buffer.priorities

    def ping(self) -> int:
        return self.shard_id

    def close(self) -> None:
        """Stop the checkpoint thread and wake calls blocked in the limiter."""
        self._stop.set()
        if self.limiter is not None:
            self.limiter.cancel()
