"""The reference's multi-task buffers (``tasks=K``): one reference buffer per task, and the rules that span tasks,
written plainly (the compiled ones are ``csrc/fastreplay/tasks.h`` and ``csrc/bindings/tasks.cpp``).

- Task t owns the global slots ``[offset_t, offset_t + quota_t)``; its own buffer numbers them from 0.
- Batch counts: n rows over task weights w (sum W > 0) are stratified: with one uniform u, the points
  ``(k + u) / n * W`` (k < n) fall into the tasks' cumulative weight intervals. ``tasks=None`` or
  ``"proportional"``: w = stored sizes; ``"balanced"``: 1 for every task; a list: 1 for the tasks listed; a dict:
  the weights given. A task given rows must hold some.
- Prioritized: each task samples on its own (stratified over its priority mass) with weights (m_t / p_i)^beta;
  ``task_weights="global"`` rescales them by ``f_t^beta``, ``f_t = min_s(P(s) m_s / S_s) / (P(t) m_t / S_t)``, so
  that they are the two-level weights (N P(i))^-beta / max, P(i) = P(t) p_i / S_t.
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional

import numpy as np

from . import _args, _tasks
from ._batch import Batch
from ._fields import normalize_fields
from ._reference_convert import as_int, index_array, real_array, uint_array

SEED_STEP = 0x9E3779B97F4A7C15  # task t's seed: (seed + SEED_STEP * (t + 1)) mod 2**63, as the compiled buffers


def stratified_counts(w: List[float], n: int, u: float) -> List[int]:
    """Rows per task for n rows over weights w (see the module docstring)."""
    k, total = len(w), sum(w)
    last = max(t for t in range(k) if w[t] > 0) if total > 0 else k - 1
    counts, t, upper = [0] * k, 0, w[0]
    for j in range(n):
        x = (j + u) / n * total
        while t < last and (x >= upper or w[t] == 0.0):
            t += 1
            upper += w[t]
        counts[t] += 1
    return counts


class TaskBuffers:
    """The multi-task part of a reference buffer: set up by ``_setup_tasks``, used by the classes in
    :mod:`fastreplay.reference` when ``tasks`` is given."""

    def _setup_tasks(self, where: str, capacity: Any, fields: Any, seed: Any, tasks: Any, task_capacity: Any,
                     task_weights: Any, options: Dict[str, Any], make: Any) -> None:
        specs = normalize_fields(fields, where)
        cap = _args.capacity(capacity, where)
        seed = _args.seed(seed, where)
        quotas = _tasks.quotas(tasks, task_capacity, cap, specs, options.get("num_envs"), where, task_weights)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        self._task_rng = random.Random(self.seed)
        self._task_global = task_weights == "global"
        self._quotas = quotas
        self._offsets = [0]
        for q in quotas:
            self._offsets.append(self._offsets[-1] + q)
        self._children = [make(q, (self.seed + SEED_STEP * (t + 1)) % 2**63) for t, q in enumerate(quotas)]
        self._fields = self._children[0]._fields
        self._batch = dict(self._children[0]._batch, task=((), np.dtype(np.int64)))

    # --- sizes ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(c) for c in self._children)

    @property
    def capacity(self) -> int:
        return self._offsets[-1]

    @property
    def total_added(self) -> int:
        return sum(c.total_added for c in self._children)

    @property
    def tasks(self) -> int:
        return len(self._children)

    @property
    def task_capacity(self) -> List[int]:
        return list(self._quotas)

    @property
    def task_sizes(self) -> List[int]:
        return [len(c) for c in self._children]

    def clear(self) -> None:
        for c in self._children:
            c.clear()

    def _task_of(self, slot: int) -> int:
        t = 0
        while t + 1 < len(self._children) and slot >= self._offsets[t + 1]:
            t += 1
        return t

    # --- add ------------------------------------------------------------------------------------------------
    def add(self, *values: Any, task: Any = None, **fields: Any) -> None:
        k = len(self._children)
        want = "add: task must be an int or one int per row"
        if task is None:
            raise TypeError("add: a multi-task buffer needs task=... (an int, or one per row)")
        if isinstance(task, bool):
            raise TypeError(f"{want}, got bool")
        if isinstance(task, (int, np.integer)):
            t = int(task)
            if not 0 <= t < k:
                raise ValueError(f"add: task {t} is out of range: the buffer has tasks 0..{k - 1}")
            return self._children[t].add(*values, **fields)
        given = dict(zip(self._fields, values), **fields)
        first, (shape, _) = next(iter(self._fields)), next(iter(self._fields.values()))
        a0 = np.asarray(given.get(first, 0))
        rows = a0.shape[0] if a0.ndim > len(shape) else 1
        arr = np.asarray(task)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{want}, got dtype {arr.dtype.str}")
        if arr.ndim != 1 or len(arr) != rows:
            raise ValueError(f"{want} ({rows}), got shape {arr.shape}")
        tv = index_array("add", task)
        for r, t in enumerate(tv):
            if not 0 <= t < k:
                raise ValueError(f"add: task {t} at row {r} is out of range: the buffer has tasks 0..{k - 1}")
        arrays = {name: np.asarray(v) for name, v in given.items()}
        for t in range(k):
            rows = [r for r, x in enumerate(tv) if x == t]
            if rows:
                self._children[t].add(**{name: a[rows] for name, a in arrays.items()})

    # --- sample ---------------------------------------------------------------------------------------------
    def _task_weights(self, tasks: Any) -> Optional[List[float]]:
        k, fn = len(self._children), "sample"
        modes = "tasks must be 'balanced', 'proportional', a list of tasks or a dict {task: weight}"

        def need_rows(t: int) -> None:
            if len(self._children[t]) == 0:
                raise ValueError(f"{fn}: task {t} holds no transitions, but the tasks argument gives it rows")

        def index(o: Any) -> int:
            if isinstance(o, bool) or not isinstance(o, (int, np.integer)):
                raise TypeError(f"{fn}: tasks are ints, got {o!r}")
            if not 0 <= int(o) < k:
                raise ValueError(f"{fn}: task {int(o)} is out of range: the buffer has tasks 0..{k - 1}")
            return int(o)

        if tasks is None or tasks == "proportional":
            return None
        w = [0.0] * k
        if isinstance(tasks, str):
            if tasks != "balanced":
                raise ValueError(f"{fn}: {modes}, got '{tasks}'")
            for t in range(k):
                need_rows(t)
            return [1.0] * k
        if isinstance(tasks, dict):
            for key, v in tasks.items():
                t = index(key)
                v = float(v)
                if not (v >= 0.0 and math.isfinite(v)):
                    raise ValueError(f"{fn}: the weight of task {t} must be finite and >= 0, got {v}")
                w[t] = v
        elif isinstance(tasks, (list, tuple)):
            for o in tasks:
                w[index(o)] = 1.0
        else:
            raise TypeError(f"{fn}: {modes}, got {tasks!r}")
        for t in range(k):
            if w[t] > 0.0:
                need_rows(t)
        if not sum(w) > 0.0:
            raise ValueError(f"{fn}: tasks gives no task a positive weight")
        return w

    def _sample_tasks(self, n: int, beta: Optional[float], tasks: Any) -> Batch:
        w = self._task_weights(tasks)
        if w is None:
            w = [float(len(c)) for c in self._children]
            if not sum(w) > 0:
                raise ValueError("sample: the buffer is empty; add transitions first")
        counts = stratified_counts(w, n, self._task_rng.random())
        total = sum(w)
        parts, factors = [], []
        for t, c in enumerate(counts):
            if c:
                b = self._children[t].sample(c) if beta is None else self._children[t].sample(c, beta)
                b.indices = b.indices + self._offsets[t]
                parts.append((t, b))
        if beta is not None and self._task_global:
            prob = [x / total for x in w]
            own = [prob[t] * self._children[t]._min / self._children[t]._total
                   if prob[t] > 0 and len(self._children[t]) else math.inf for t in range(len(w))]
            lo = min(own)
            factors = [min(lo / o, 1.0) if 0 < o < math.inf else 1.0 for o in own]
        data = {name: np.concatenate([b[name] for _, b in parts]) for name in self._children[0]._batch}
        data["task"] = np.concatenate([np.full(len(b.indices), t, np.int64) for t, b in parts])
        batch = Batch(data)
        batch.indices = np.concatenate([b.indices for _, b in parts]).astype(np.int64)
        if beta is None:
            batch.generations, batch.weights = None, None
        else:
            batch.generations = np.concatenate([b.generations for _, b in parts])
            tiny = float(np.finfo(np.float32).smallest_subnormal)
            ws = []
            for t, b in parts:
                f = factors[t] ** beta if factors else 1.0
                ws.append(np.maximum(b.weights.astype(np.float64) * np.float32(f), tiny))
            batch.weights = np.concatenate(ws).astype(np.float32)
        return batch

    # --- get, generations, priorities -----------------------------------------------------------------------
    def _locate(self, fn: str, idx: List[int], stored: bool) -> List[tuple]:
        out = []
        for k, i in enumerate(idx):
            if not 0 <= i < self.capacity:
                raise IndexError(f"{fn}: index {i} at position {k} is outside the buffer's {self.capacity} slots")
            t = self._task_of(i)
            s = i - self._offsets[t]
            held = self._children[t].total_added if stored else None
            if stored and s >= min(held, self._quotas[t]):
                raise IndexError(f"{fn}: index {i} at position {k} is slot {s} of task {t}, which holds "
                                 f"{min(held, self._quotas[t])} transitions")
            out.append((t, s))
        return out

    def get(self, indices: Any) -> Batch:
        idx = index_array("get", indices)
        where = self._locate("get", idx, True)
        rows = [self._children[t].get([s]) for t, s in where]
        data = {name: np.concatenate([r[name] for r in rows]) if rows else
                np.zeros((0, *shape), dtype) for name, (shape, dtype) in self._children[0]._batch.items()}
        data["task"] = np.array([t for t, _ in where], np.int64)
        batch = Batch(data)
        batch.indices = np.array(idx, np.int64).reshape(-1)
        batch.generations = np.array([self._children[t]._gen[s] for t, s in where], np.uint64)
        batch.weights = np.ones(len(idx), np.float32) if self._prioritized else None
        return batch

    def generations(self, indices: Any) -> np.ndarray:
        idx = index_array("generations", indices)
        return np.array([self._children[t]._gen[s] for t, s in self._locate("generations", idx, False)], np.uint64)

    def update_priorities(self, indices: Any, priorities: Any, generations: Any = None) -> int:
        indices, priorities, generations = _args.update_arrays(indices, priorities, generations)
        fn = "update_priorities"
        idx = index_array(fn, indices)
        prio = real_array(fn, "priorities", priorities)
        if len(prio) != len(idx):
            raise ValueError(f"{fn}: indices and priorities must have the same length, got {len(idx)} indices and "
                             f"{len(prio)} priorities")
        gens = None if generations is None else uint_array(fn, "generations", generations)
        if gens is not None and len(gens) != len(idx):
            raise ValueError(f"{fn}: generations must have one entry per index, got {len(gens)} for {len(idx)}")
        where = self._locate(fn, idx, True)
        for k, p in enumerate(prio):
            if not (math.isfinite(p) and p >= 0.0):
                raise ValueError(f"{fn}: priorities must be finite and >= 0, got {p:f} at position {k}")
        per: Dict[int, tuple] = {}
        for k, (t, s) in enumerate(where):
            i, p, g = per.setdefault(t, ([], [], []))
            i.append(s)
            p.append(prio[k])
            if gens is not None:
                g.append(int(gens[k]))
        return sum(self._children[t].update_priorities(i, p, g if gens is not None else None)
                   for t, (i, p, g) in per.items())
