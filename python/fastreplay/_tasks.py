"""Multi-task buffers: the checks of ``tasks``, ``task_capacity`` and ``task_weights`` (one place, shared by the
compiled buffers and the reference), and the quotas they give. The rules that span tasks at sampling time (batch
counts, two-level weights) are in ``csrc/fastreplay/tasks.h`` and, for the reference, in
``fastreplay.reference``."""
from __future__ import annotations

import numbers
from typing import Any, List, Optional

#: The field name a multi-task buffer keeps for itself (``add(task=...)``, ``batch["task"]``).
TASK_FIELD = "task"


def quotas(tasks: Any, task_capacity: Any, capacity: int, fields: Any, num_envs: Optional[int], where: str,
           task_weights: Any = "global") -> Optional[List[int]]:
    """The slots of each task (a list of ``tasks`` ints adding up to ``capacity``), or None without ``tasks``.
    Raises TypeError/ValueError naming the argument, before anything is built."""
    if tasks is None:
        if task_capacity is not None:
            raise ValueError(f"{where}: task_capacity needs tasks=K")
        return None
    if isinstance(tasks, bool) or not isinstance(tasks, numbers.Integral):
        raise TypeError(f"{where}: tasks must be an int (the number of tasks), got {type(tasks).__name__}")
    k = int(tasks)
    if k < 1:
        raise ValueError(f"{where}: tasks must be >= 1, got {k}")
    if task_weights not in ("global", "task"):
        raise ValueError(f"{where}: task_weights must be 'global' or 'task', got {task_weights!r}")
    if TASK_FIELD in fields:
        raise ValueError(f"{where}: a multi-task buffer keeps the field name {TASK_FIELD!r} for the task of each row "
                         "(add(task=...), batch['task']); rename that field")
    if task_capacity is None:
        if capacity % k:
            raise ValueError(f"{where}: capacity {capacity} does not split into {k} equal task quotas; pass "
                             f"task_capacity=[...] with {k} quotas that add up to it")
        q = [capacity // k] * k
    else:
        q = list(task_capacity) if not isinstance(task_capacity, (str, bytes)) else None
        if q is None or len(q) != k:
            raise ValueError(f"{where}: task_capacity must list {k} quotas (one per task), got {task_capacity!r}")
        for t, v in enumerate(q):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{where}: task_capacity[{t}] must be a positive int, got {v!r}")
        q = [int(v) for v in q]
        if sum(q) != capacity:
            raise ValueError(f"{where}: task_capacity adds up to {sum(q)}, but capacity is {capacity}")
    if num_envs:
        for t, v in enumerate(q):
            if v % num_envs:
                raise ValueError(f"{where}: task {t}'s quota {v} is not a multiple of num_envs={num_envs} (each task "
                                 "keeps num_envs lanes)")
    return q


class TaskPart:
    """Task t of a multi-task buffer as the per-buffer code (memory-mapped storage) sees a buffer: the multi-task
    buffer's Python attributes (fields, layouts, kind), the task's own compiled core (``_task_view``)."""

    def __init__(self, buf: Any, t: int) -> None:
        self._core = buf._task_view(t)
        self._prioritized, self._fields = buf._prioritized, buf._fields
        self._episodes, self._stored = buf._episodes, buf._stored

    @property
    def capacity(self) -> int:
        return self._core.capacity

    @property
    def priorities(self) -> Any:
        return self._core._priorities()

    @property
    def _stream(self) -> int:
        return self._core._stream

    @_stream.setter
    def _stream(self, value: int) -> None:
        self._core._stream = value

    def __len__(self) -> int:
        return len(self._core)

    def __getattr__(self, name: str) -> Any:  # the compiled methods: _export_state, _reopen, _flush, ...
        return getattr(self._core, name)
