"""The public buffer classes: thin Python shells over the compiled core (``fastreplay._core``).

Thread safety: ``add``, ``sample``, ``get`` and ``update_priorities`` may be called from any number of threads at
once; each releases the GIL while it works and none takes a global lock. A sampled row is always one whole
transition, never a mix of two and never one still being written. ``clear`` must not run concurrently with other
calls.

Arrays a caller passes in while another thread writes them: ``add`` copies a value that already has the field's
dtype and layout straight from the caller's array without the GIL, so a row being rewritten by the caller's own
thread meanwhile may be stored half old, half new (the caller's race; the call itself stays safe, since it holds a
reference to every array it reads). Indices, priorities and generations are copied before they are checked, so
what was checked is what is used. ``sample(out=batch)`` holds a reference to each array it fills: replacing
``batch[name]`` meanwhile leaves the rows in the old array.
"""
from __future__ import annotations

import atexit
import os
import secrets
import weakref
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from . import _args, _checkpoint, _core, _episodes, _memmap, _sequences, _tasks
from ._batch import Batch
from ._core import get_copy_threads, set_copy_threads  # noqa: F401 - re-exported by the package
from ._fields import FieldSpecs, check_capacity, fields_from_spaces, normalize_fields, spaces_of

_core._set_batch_type(Batch)

#: Casting rule for ``add``: numpy arrays and numpy scalars must cast to the field's dtype under numpy's
#: ``'same_kind'`` rule; plain Python values (int, float, bool, lists) may go into any field of a compatible kind
#: (bool anywhere, int into int/float, float into float), and a Python int must fit the field's range.
CASTING = "same_kind"


_live_prefetchers: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()


@atexit.register
def _close_prefetchers() -> None:  # worker threads must be stopped before the interpreter tears down
    for p in list(_live_prefetchers):
        p.close()


class Prefetcher(_core._Prefetcher):
    """Batches sampled ahead by C++ threads: ``for batch in prefetcher`` (endless) or ``next(prefetcher)``.

    Use it as a context manager, or call :meth:`close`, to stop the threads; it also stops when garbage
    collected and at interpreter exit. ``beta`` (prioritized buffers) can be changed while it runs; ``ready``
    is the number of batches waiting.
    """

    def __init__(self, buffer: "ReplayBuffer", batch_size: int, depth: int, threads: int, beta: float) -> None:
        super().__init__(buffer, batch_size, depth, threads, beta)
        _live_prefetchers.add(self)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ReplayBuffer(_sequences.SequenceMethods, _core._Buffer):
    """Uniform experience replay: a fixed-size ring of transitions stored column by column.

    Args:
        capacity: maximum number of transitions; the oldest are overwritten first.
        fields: ``{name: (shape, dtype)}``, e.g. ``{"obs": ((4,), np.float32), "action": ((), np.int64)}``.
            Any fixed-size numeric or bool dtype, any row shape (scalars and images included).
        seed: seed of the buffer's generator; ``None`` draws one from the OS. With a seed, a single-threaded
            sequence of calls gives the same batches every run.

        storage: ``"memory"`` (default) or ``"memmap"``: the columns live in files under the directory ``path``
            (created if needed), so a buffer larger than RAM works and reopening the same ``path`` with the same
            capacity and fields continues where it left off (see :meth:`flush`). One buffer at a time may open a
            directory (it holds a lock until garbage collected; another gets ``RuntimeError``), a missing or
            truncated file is a ``ValueError``, and a memmap buffer cannot be pickled (reopen it by path).
            ``"shared"``: every part of the buffer (columns, ring, trees, priorities) lives in one POSIX
            shared-memory object, so that several *processes* add and sample it at once, lock-free as threads do
            (see ``docs/multiprocess.md``). Pickling such a buffer (``multiprocessing`` with any start method)
            gives a handle on the same memory, not a copy; the creating buffer must outlive the processes that
            attach. Plain buffers only (no episode options); the memory is committed at construction.

    Episode options (keyword-only; any of them makes the buffer *episodic*, see ``docs/episodes.md``):
        num_envs: lanes K: every ``add`` takes exactly K rows, row k from sub-environment k; capacity must be a
            multiple of K. The fields must include ``obs`` (or Dict keys ``obs.<k>``), the matching ``next_obs``,
            ``reward`` (float32/float64 scalar), ``done`` (bool: terminated) and optionally ``truncated`` (bool).
        next_obs: ``"store"`` (a column) or ``"dedup"`` (read from the lane's next step; only episode ends keep
            their final observation). Default ``"dedup"`` when ``frame_stack > 1``, else ``"store"``.
        frame_stack: S: one frame stored per step; batches hold ``obs``/``next_obs`` as ``[B, S, *frame]`` stacks
            that never cross into the previous episode. ``stacked_input=True``: ``obs`` rows are already
            ``(S, *frame)`` stacks (e.g. ``FrameStackObservation``) and only the newest frame is stored.
        stack_padding: frames before an episode's first step: ``"reset"`` (repeat the first frame, default) or
            ``"zero"``.
        n_step, gamma: sample-time n-step returns (settable attributes): ``reward`` is the discounted sum over
            m <= n steps that stop at the episode's end and at the lane's newest step, ``next_obs`` the observation
            after them, ``done`` whether they terminated, and every batch carries ``discount`` (float32,
            ``gamma**m``, 0 if terminated). Defaults 1 and 0.99.
        autoreset: what a lane's row after an episode end is: ``"same_step"`` (default: the first step of the new
            episode; every row is a whole transition, ``next_obs`` of an end row its final observation) or
            ``"next_step"`` (gymnasium's default: the env's reset step, stored but never sampled).

    Multi-task options (keyword-only; see ``docs/tasks.md``):
        tasks: K: one buffer, K tasks, each with its own quota of slots (FIFO within the task, so a fast task never
            evicts a slow one). ``add(..., task=t)`` takes one task for every row or one per row (int[N]);
            ``sample(B, tasks=...)`` takes ``"proportional"`` (default: by stored size), ``"balanced"`` (B/K rows
            per task; for B not a multiple of K, the remainder goes to random tasks, one row each), a list of tasks
            (balanced over them) or a dict ``{task: weight}``; counts are stratified (each task gets floor or ceil
            of its share, exactly B in all), rows come grouped by task and ``batch["task"]`` (int64[B]) says whose.
            Indices are global slots: task t owns ``task_capacity[t]`` slots from ``sum(task_capacity[:t])``.
            Episode options apply per task (lanes, frame stacks, n-step); checkpoints and pickling keep every
            task; memmap storage keeps each task's files in ``path/task-<t>/``. Not yet with tasks: storage views
            and shared storage.
        task_capacity: the quotas (K ints adding up to capacity); default: equal shares.

    Storage layout (keyword-only; see ``docs/storage.md``):
        layout: ``"auto"`` (default): fields whose rows are at most 256 bytes are packed together into one record
            per transition (64 bytes for CartPole), so that a sampled transition is one or two cache lines instead
            of one line per field; larger rows (images) keep a column each. ``"columnar"``: every field in a column
            of its own. Batches are the same either way; ``storage`` views of packed fields are strided (a row
            every record, not C-contiguous). Memory-mapped storage is always columnar (one file per field).

    Adds to an episodic buffer are serialised (one at a time, so that each lane's steps stay in order); sampling
    runs concurrently with them as for any buffer. ``storage`` shows the stored columns (one frame per step;
    no ``next_obs`` with dedup); ``fields`` what ``add`` takes.

    Memory for all columns is reserved up front (lazily zeroed by the OS); a capacity that cannot be allocated
    raises ``MemoryError``. ``add`` casts values as described by :data:`CASTING`.
    """

    _prioritized = False

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, Any],
        seed: Optional[int] = None,
        storage: str = "memory",
        path: Any = None,
        *,
        num_envs: Optional[int] = None,
        next_obs: Optional[str] = None,
        frame_stack: Optional[int] = None,
        stacked_input: Optional[bool] = None,
        stack_padding: Optional[str] = None,
        n_step: Optional[int] = None,
        gamma: Optional[float] = None,
        autoreset: Optional[str] = None,
        tasks: Optional[int] = None,
        task_capacity: Optional[Sequence[int]] = None,
        layout: str = "auto",
    ) -> None:
        self._check_fresh("ReplayBuffer")
        self._init("ReplayBuffer", capacity, fields, seed, storage, path, episodes=dict(
            num_envs=num_envs, next_obs=next_obs, frame_stack=frame_stack, stacked_input=stacked_input,
            stack_padding=stack_padding, n_step=n_step, gamma=gamma, autoreset=autoreset),
            tasks=(tasks, task_capacity, "global"), layout=layout)

    def _check_fresh(self, where: str) -> None:
        """A second ``__init__`` would leave the C++ core as it was (pybind11 ignores it) while the Python state
        changed: refuse it before anything changes."""
        if self._initialized():
            raise TypeError(f"{where}.__init__: this buffer is already initialized; create a new {where} instead")

    #: Attributes that ``__init__`` sets; reading one on an object whose ``__init__`` never ran raises TypeError.
    _INIT_ATTRS = frozenset({"_fields", "_memmap", "_raise_stale", "_max_mode", "_episodes", "_stored",
                             "_task_quotas", "_task_weights", "_layout"})

    def __getattr__(self, name: str) -> Any:  # only reached when ordinary lookup fails
        if name in ReplayBuffer._INIT_ATTRS and not self._initialized():
            cls = type(self).__name__
            raise TypeError(
                f"{cls}: this buffer was never initialized (__init__ did not run, e.g. it was made by {cls}.__new__);"
                f" create buffers by calling {cls}(...)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _init(self, where, capacity, fields, seed, storage, path, alpha=0.0, eps=0.0, max_priority="all_time",
              episodes=None, attach=None, tasks=(None, None, "global"), layout="auto"):
        """Shared by both classes; alpha, eps and max_priority (already checked) matter to prioritized ones;
        ``episodes``: the episode options (docs/episodes.md), None values meaning not given; ``attach``: the name of
        another process's shared storage to attach to (unpickling, storage='shared')."""
        specs = normalize_fields(fields, where)
        cap = _args.capacity(capacity, where)
        check_capacity(specs, cap, where)
        seed = _args.seed(seed, where)
        _args.choice(storage, "storage", ("memory", "memmap", "shared"), where)
        _args.choice(layout, "layout", ("auto", "columnar"), where)
        columnar = layout == "columnar"
        if self._prioritized:
            _args.initial_leaf(alpha, eps, cap, where)
        cfg = _episodes.config(specs, cap, where, episodes or {})
        stored = _episodes.stored_fields(specs, cfg)
        names = list(specs)
        shapes = [specs[k][0] for k in names]
        dtypes = [specs[k][1] for k in names]
        quotas = _tasks.quotas(tasks[0], tasks[1], cap, specs, cfg.num_envs if cfg else None, where, tasks[2])
        if quotas is not None and storage == "shared":
            raise ValueError(f"{where}: storage='shared' holds single-task buffers only (tasks={tasks[0]} given)")
        self._fields = specs
        self._layout = layout
        self._stored = stored
        self._episodes = cfg
        self._memmap = None
        self._task_quotas = quotas
        self._task_weights = tasks[2]
        stored_max = max_priority == "stored"
        core_episodes = None if cfg is None else _core_episodes(specs, cfg)
        if quotas is not None:
            directory = ""
            if storage == "memmap":
                self._memmap = _memmap.open_tasks(where, path, self, quotas, tasks[2], specs)
                directory = self._memmap.directory
                if seed is None and self._memmap.existing:
                    seed = self._memmap.existing["seed"]
            elif path is not None:
                raise ValueError(f"{where}: path is only used with storage='memmap'")
            super().__init__(cap, names, shapes, dtypes, seed, self._prioritized, alpha, eps, stored_max, directory,
                             core_episodes, "", False, quotas, tasks[2] == "global", columnar)
            if self._memmap is not None:
                self._memmap.attach(self, self._task_parts())
            return
        if storage != "memmap" and path is not None:
            raise ValueError(f"{where}: path is only used with storage='memmap'")
        if storage == "memory":
            super().__init__(cap, names, shapes, dtypes, seed, self._prioritized, alpha, eps, stored_max, "",
                             core_episodes, columnar=columnar)
        elif storage == "shared":
            if cfg is not None:
                given = ", ".join(k for k, v in (episodes or {}).items() if v is not None)
                raise ValueError(f"{where}: storage='shared' holds plain buffers only; the episode options ({given}) "
                                 "need storage='memory' or 'memmap'")
            name = attach if attach is not None else f"/fastreplay-{os.getpid()}-{secrets.token_hex(8)}"
            super().__init__(cap, names, shapes, dtypes, seed, self._prioritized, alpha, eps, stored_max, "",
                             None, name, attach is not None, columnar=columnar)
        else:
            self._memmap = _memmap.open_dir(where, path, self, cap, specs)
            if seed is None and self._memmap.existing:
                seed = self._memmap.existing["seed"]
            super().__init__(cap, names, shapes, dtypes, seed, self._prioritized, alpha, eps, stored_max,
                             self._memmap.directory, core_episodes)
            self._memmap.attach(self)

    def flush(self) -> None:
        """Memory-mapped storage: write every column to disk and record the generator position (and, for
        prioritized buffers, the priorities), so that reopening continues exactly from here. No-op in memory."""
        if self._memmap is not None:
            if self._task_quotas is None:
                self._memmap.flush(self)
            else:
                self._memmap.flush(self, self._task_parts())

    def clear(self) -> None:
        """Remove every transition (memory is kept). Not safe concurrently with other calls."""
        super().clear()
        if self._memmap is not None:
            if self._task_quotas is None:
                self._memmap.write_manifest(self)
            else:
                self._memmap.write_manifest(self, self._task_parts())

    def _task_parts(self) -> List["_tasks.TaskPart"]:
        return [_tasks.TaskPart(self, t) for t in range(len(self._task_quotas))]

    @classmethod
    def from_env(cls, env_or_spaces: Any, capacity: int, seed: Optional[int] = None, **kwargs: Any) -> "ReplayBuffer":
        """An episodic buffer whose fields follow a gymnasium env's spaces (docs/episodes.md).

        ``env_or_spaces`` is an env, a vector env (its single-env spaces are used; ``num_envs`` lanes, so ``add``
        takes one row per sub-env, and ``autoreset`` follows the env's ``metadata["autoreset_mode"]``) or an
        ``(observation_space, action_space)`` tuple. Fields: ``obs``, ``action``, ``reward`` (float32),
        ``next_obs``, ``done`` (bool: ``terminated``), ``truncated`` (bool). Each space keeps its dtype (a uint8
        image stays uint8); Dict observation spaces give fields ``obs.<key>`` and ``next_obs.<key>``, and
        ``add(obs={...})`` accepts the dict as the env returns it. Other keyword arguments (``frame_stack``,
        ``n_step``, ``gamma``, ``next_obs``, ``alpha``, ...) go to the constructor.
        """
        obs_space, act_space = spaces_of(env_or_spaces)
        fields = fields_from_spaces(obs_space, act_space)
        fields["truncated"] = ((), np.dtype(np.bool_))
        kwargs.update(_episodes.from_env_options(env_or_spaces, kwargs))
        return cls(capacity, fields, seed=seed, **kwargs)

    def prefetch(self, batch_size: int, depth: int = 2, threads: int = 1, beta: Optional[float] = None) -> "Prefetcher":
        """Sample batches ahead of the training loop on background C++ threads.

        Returns a :class:`Prefetcher`: an endless iterator of :class:`Batch` (as ``sample(batch_size)`` would
        return) and a context manager that stops the threads on exit. ``depth`` batches are kept ready;
        ``threads`` C++ workers sample concurrently (with ``threads=1``, a seeded buffer and no ``add`` while the
        prefetcher runs, the batches are exactly those that the same number of ``sample`` calls would give; with
        concurrent adds, which rows a batch sees depends on timing). Each batch owns its memory, so
        nothing a caller holds is ever overwritten. Prioritized buffers take ``beta`` (default 0.4, settable
        later as ``prefetcher.beta``); their batches reflect priorities as of up to ``depth + threads``
        batches earlier, and ``update_priorities`` skips rows overwritten in between (see ``stale``).
        A worker's exception (e.g. sampling an empty buffer) is raised by the next ``next()``. Idle workers
        poll for free space every ~50 us rather than being woken per batch (a wake-up costs ~10 us on a VM), so
        prefetch pays off when the consumer computes between batches, as a learner does.
        """
        if self._prioritized:
            beta = 0.4 if beta is None else beta
        elif beta is not None:
            raise TypeError("prefetch: beta is only for PrioritizedReplayBuffer")
        return Prefetcher(self, batch_size, depth, threads, 0.0 if beta is None else beta)

    @property
    def fields(self) -> FieldSpecs:
        """``{name: (shape, dtype)}`` of the fields ``add`` takes."""
        return dict(self._fields)

    @property
    def episode_config(self) -> Optional[_episodes.EpisodeConfig]:
        """The episode options (docs/episodes.md), or None for a plain buffer."""
        return self._episodes

    @property
    def num_envs(self) -> Optional[int]:
        """Lanes: rows per add of an episodic buffer (None for a plain one)."""
        return None if self._episodes is None else self._episodes.num_envs

    @property
    def frame_stack(self) -> Optional[int]:
        """Frames per stacked observation of an episodic buffer (None for a plain one)."""
        return None if self._episodes is None else self._episodes.frame_stack

    @property
    def n_step(self) -> Optional[int]:
        """Steps per n-step return of an episodic buffer (None for a plain one); settable, effective from the
        next sample."""
        return None if self._episodes is None else self._n_step

    @n_step.setter
    def n_step(self, value: int) -> None:
        self._set_option("n_step", _episodes.n_step(value, "ReplayBuffer.n_step"))

    @property
    def gamma(self) -> Optional[float]:
        """Discount of n-step returns of an episodic buffer (None for a plain one); settable, effective from the
        next sample."""
        return None if self._episodes is None else self._gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._set_option("gamma", _episodes.gamma(value, "ReplayBuffer.gamma"))

    def _set_option(self, name: str, value: Any) -> None:
        """A checked episode option that may change after construction: the config and the core's copy."""
        self._episodes = _episodes.with_values(_episodes.require(self._episodes, name), **{name: value})
        setattr(self, "_" + name, value)  # the core's property (_n_step, _gamma)

    @property
    def layout(self) -> str:
        """The storage layout asked for: ``"auto"`` (small rows packed into records) or ``"columnar"``. Memory-mapped
        buffers are columnar whatever it says (one file per field)."""
        return self._layout

    @property
    def storage(self) -> Dict[str, np.ndarray]:
        """Read-only zero-copy views ``{name: array[len(self), *shape]}`` of the stored columns, in slot order
        (for an episodic buffer: one frame per step, and no ``next_obs`` with dedup).

        The views alias the buffer's memory: rows change as new transitions overwrite old ones, and a view keeps
        the buffer's memory alive. With ``layout="auto"`` the fields packed into records are strided views (one
        row every record; ``np.ascontiguousarray`` copies one out, ``torch.from_numpy`` takes it as it is).
        """
        self._single_task("storage")
        return {name: self._storage_view(i) for i, name in enumerate(self._stored)}

    def _single_task(self, what: str) -> None:
        """TypeError for what a multi-task buffer does not offer yet."""
        if self._task_quotas is not None:
            raise TypeError(f"{type(self).__name__}.{what} is not available for a multi-task buffer yet "
                            f"(tasks={len(self._task_quotas)}); get() reads any rows")

    @property
    def tasks(self) -> Optional[int]:
        """Number of tasks of a multi-task buffer (``tasks=K``); None otherwise."""
        return None if self._task_quotas is None else len(self._task_quotas)

    @property
    def task_capacity(self) -> Optional[List[int]]:
        """Slots of each task (a multi-task buffer's quotas; task t owns slots ``sum(quotas[:t])`` on); None
        otherwise."""
        return None if self._task_quotas is None else list(self._task_quotas)

    @property
    def task_sizes(self) -> Optional[List[int]]:
        """Transitions each task holds now; None for a single-task buffer."""
        return None if self._task_quotas is None else list(self._task_sizes)

    @property
    def full(self) -> bool:
        """True once ``capacity`` transitions are stored."""
        return len(self) == self.capacity

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {dt}{list(shape)}" for k, (shape, dt) in self._fields.items())
        cfg = self._episodes
        episodes = "" if cfg is None else (
            f", num_envs={cfg.num_envs}, frame_stack={cfg.frame_stack}, n_step={cfg.n_step}, gamma={cfg.gamma}")
        return f"{type(self).__name__}(size={len(self)}, capacity={self.capacity}, fields={{{fields}}}{episodes})"

    def save(self, path: Any) -> None:
        """Write the whole state (fields, contents, cursor, generations, priorities, generator state) to ``path``.

        One versioned file (see :mod:`fastreplay._checkpoint` for the format), written atomically: a crash at
        any moment leaves the previous checkpoint or the new one. Columns are streamed, so saving needs no second
        copy of the buffer. Must not run concurrently with ``add``/``update_priorities``: if an ``add`` runs
        while it writes, it raises ``RuntimeError`` and ``path`` keeps the previous checkpoint.
        """
        _checkpoint.save(self, path)

    @classmethod
    def load(cls, path: Any) -> "ReplayBuffer":
        """A buffer restored from ``save(path)``: same contents and state; with a seed, sampling continues
        exactly as the saved buffer would have. Raises ``ValueError`` for a truncated, corrupted, malformed or
        foreign file, checked before anything large is allocated. Called on a subclass, it returns an instance of
        that subclass (built without calling its ``__init__``, as unpickling does).
        """
        return _checkpoint.load(path, _classes(), cls)

    def __reduce__(self):
        """Pickles hold the checkpoint format (never code), the class (a subclass pickles by reference, so it must
        be importable where it is unpickled) and a subclass's own instance attributes. Memory-mapped buffers
        cannot be pickled: their transitions live in their directory (see the TypeError)."""
        if self._memmap is not None:
            raise TypeError(
                f"cannot pickle a {type(self).__name__} with storage='memmap': its transitions live in the files under "
                f"{self._memmap.directory!r}, which one buffer at a time may open. Pass that path instead and reopen it "
                "with the same capacity and fields once this buffer is gone, or save()/load() a checkpoint for an "
                "in-memory copy")
        cls = type(self)
        extra = {k: v for k, v in vars(self).items() if k not in _BASE_ATTRIBUTES}
        if self._shared_name:  # a handle on the same memory, not a copy
            options = {"max_priority": self._max_mode, "stale": "raise" if self._raise_stale else "skip",
                       "alpha": self.alpha, "eps": self.eps} if self._prioritized else {}
            options["layout"] = self._layout
            return (_attach_shared, (cls, self._shared_name, self.capacity, dict(self._fields), options, extra))
        data = _checkpoint.to_bytes(self)
        if cls in (ReplayBuffer, PrioritizedReplayBuffer):
            return (_from_checkpoint_bytes, (data,))
        return (_from_checkpoint_bytes, (data, cls, extra))


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized experience replay (Schaul et al. 2015) on C++ sum and min trees.

    Transition i is drawn with probability ``P(i) = (p_i + eps)**alpha / sum_j (p_j + eps)**alpha``.

    Args:
        capacity, fields, seed: as for :class:`ReplayBuffer`.
        alpha: priority exponent, >= 0 (0 is uniform). Settable later: the trees are rebuilt.
        eps: added to every priority before the exponent, so no stored transition has zero probability.
            Every leaf ``(p + eps) ** alpha`` must stay at most ``2**1022 / capacity``, so that the sum of all
            leaves is finite: construction (for the initial priority 1), the ``alpha`` setter and
            ``update_priorities`` raise ValueError for values that would pass it.
        max_priority: priority given to new transitions: ``"all_time"`` (default; the largest priority ever set,
            as in the paper's implementation) or ``"stored"`` (the largest among transitions stored now).
            Both start at 1.0.
        stale: what ``update_priorities`` does with a row whose slot was overwritten after it was sampled:
            ``"skip"`` (default) or ``"raise"``.

    ``sample(batch_size, beta)`` is stratified and returns ``weights`` normalised by the largest weight over all
    stored transitions (found through the min tree), so weights lie in (0, 1].

    With ``tasks=K`` (see :class:`ReplayBuffer`) every task has its own sum/min trees and its own maximum priority
    for new rows, so tasks whose TD errors have different scales do not crowd each other out. A row of task t is
    drawn with P(i) = P(t) * p_i / sum_task p, P(t) the task's share of the batch; ``task_weights="global"``
    (default) normalises (N P(i))**-beta by its maximum over every row of the tasks drawn, ``"task"`` gives each
    task's own PER weights ((p_min,t / p_i)**beta).
    """

    _prioritized = True

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, Any],
        alpha: float = 0.6,
        eps: float = 1e-6,
        seed: Optional[int] = None,
        max_priority: str = "all_time",
        stale: str = "skip",
        storage: str = "memory",
        path: Any = None,
        *,
        num_envs: Optional[int] = None,
        next_obs: Optional[str] = None,
        frame_stack: Optional[int] = None,
        stacked_input: Optional[bool] = None,
        stack_padding: Optional[str] = None,
        n_step: Optional[int] = None,
        gamma: Optional[float] = None,
        autoreset: Optional[str] = None,
        tasks: Optional[int] = None,
        task_capacity: Optional[Sequence[int]] = None,
        task_weights: str = "global",
        layout: str = "auto",
    ) -> None:
        where = "PrioritizedReplayBuffer"
        self._check_fresh(where)
        alpha, eps = _args.prioritized(alpha, eps, max_priority, stale, where)
        self._raise_stale = stale == "raise"
        self._max_mode = max_priority
        self._init(where, capacity, fields, seed, storage, path, alpha, eps, max_priority, episodes=dict(
            num_envs=num_envs, next_obs=next_obs, frame_stack=frame_stack, stacked_input=stacked_input,
            stack_padding=stack_padding, n_step=n_step, gamma=gamma, autoreset=autoreset),
            tasks=(tasks, task_capacity, task_weights), layout=layout)

    # The compiled method itself, not a Python wrapper around it: sample is the hot call, and a wrapper's frame
    # would cost about a third of a microsecond per batch. It takes (batch_size, beta=0.4, *, out=None).
    sample = _core._Buffer.__dict__["_sample_prioritized"]

    # update_priorities(indices, priorities, generations=None) -> int, the compiled method itself (like sample): a
    # Python wrapper's frame and argument unpacking cost about a microsecond of a 27 us sample-then-update loop.
    # Its docstring (help(PrioritizedReplayBuffer.update_priorities)) says what it takes; a Batch as ``indices``
    # gives its indices and generations, torch tensors are moved to numpy, stale rows follow ``stale``.
    update_priorities = _core._Buffer.__dict__["_update_priorities_fast"]

    @property
    def alpha(self) -> float:
        """Priority exponent. Setting it recomputes every leaf and rebuilds the trees (O(capacity)); ValueError if
        a leaf ``(p + eps) ** alpha`` of a stored priority (or of the one new transitions get) would pass the
        bound ``2**1022 / capacity`` that keeps the sum of all leaves finite."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = _args.real(value, "alpha", "PrioritizedReplayBuffer.alpha")

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def max_priority(self) -> float:
        """Priority that the next added transition receives (before eps and alpha)."""
        return self._max_priority

    @property
    def priorities(self) -> np.ndarray:
        """float64[len(self)]: the priority last set for each stored slot (before eps and alpha), a copy."""
        self._single_task("priorities")
        return self._priorities()

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", alpha={self.alpha}, eps={self.eps})"


def _core_episodes(fields: FieldSpecs, cfg: "_episodes.EpisodeConfig") -> Dict[str, Any]:
    """What the compiled core needs of an episode config: options, observation names and the stored and batch
    layouts as (names, shapes, dtypes)."""
    def layout(specs: FieldSpecs):
        names = list(specs)
        return (names, [specs[k][0] for k in names], [specs[k][1] for k in names])

    return {"lanes": cfg.num_envs, "dedup": cfg.dedup, "stack": cfg.frame_stack, "zero_pad": cfg.padding == "zero",
            "next_step": cfg.autoreset == "next_step", "n_step": cfg.n_step, "gamma": cfg.gamma,
            "stacked_input": cfg.stacked_input, "obs": list(cfg.obs), "next_obs": list(cfg.next_obs),
            "stored": layout(_episodes.stored_fields(fields, cfg)),
            "batch": layout(_episodes.batch_fields(fields, cfg))}


def _classes() -> Dict[str, type]:
    """The classes that rebuild each kind of buffer a checkpoint records (see fastreplay._persist.buffer_kind)."""
    return {"ReplayBuffer": ReplayBuffer, "PrioritizedReplayBuffer": PrioritizedReplayBuffer}


#: Instance attributes the base classes set themselves (a checkpoint restores them); a subclass's others are pickled.
_BASE_ATTRIBUTES = frozenset({"_fields", "_memmap", "_raise_stale", "_max_mode", "_task_quotas", "_task_weights",
                              "_layout"})


def _attach_shared(cls: type, name: str, capacity: int, fields: Dict[str, Any], options: Dict[str, Any],
                   extra: Dict[str, Any]) -> ReplayBuffer:
    """Unpickle a buffer with storage='shared': an instance of ``cls`` attached to the shared-memory object ``name``
    (the pickling process's buffer must still exist), with a subclass's own attributes ``extra``."""
    buf = cls.__new__(cls)
    where = cls.__name__
    if buf._prioritized:
        alpha, eps = _args.prioritized(options["alpha"], options["eps"], options["max_priority"], options["stale"], where)
        buf._raise_stale = options["stale"] == "raise"
        buf._max_mode = options["max_priority"]
        buf._init(where, capacity, fields, None, "shared", None, alpha, eps, options["max_priority"], attach=name,
                  layout=options.get("layout", "auto"))
    else:
        buf._init(where, capacity, fields, None, "shared", None, attach=name, layout=options.get("layout", "auto"))
    if extra:
        vars(buf).update(extra)
    return buf


def _from_checkpoint_bytes(data: bytes, cls: Optional[type] = None, extra: Optional[Dict[str, Any]] = None) -> ReplayBuffer:
    """Unpickle a buffer (pickles hold the checkpoint format, never code): an instance of ``cls`` (a subclass) if
    given, with its own attributes ``extra``."""
    buf = _checkpoint.from_bytes(data, _classes(), cls)
    if extra:
        vars(buf).update(extra)
    return buf
