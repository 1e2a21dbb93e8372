"""SB3's ``ReplayBuffer`` and ``DictReplayBuffer`` on fastreplay's core, and the column views SB3 code reads."""
from __future__ import annotations

import operator
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common import buffers as _sb3
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples

from ..buffer import PrioritizedReplayBuffer as _CorePER
from ..buffer import ReplayBuffer as _CoreReplay
from ._optimize_memory import _OptimizeMemory


class _Column(np.ndarray):
    """A column attribute: a read-only view of core storage shaped ``(steps, n_envs, ...)``.

    Item assignment (``rb.dones[pos] = True``, as SB3's ``_setup_learn`` does) goes through the owning buffer's
    ``_write_column``, which writes into the core's storage, so samples see it at once. Every other write (through a
    slice, ``np.copyto``, ``out=``) fails with "read-only", as the view is read-only.
    """

    def __new__(cls, arr: np.ndarray, owner: "ReplayBuffer", field: str):
        obj = arr.view(cls)
        obj.flags.writeable = False
        obj._owner, obj._field = owner, field
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self._owner, self._field = None, None  # slices and results are plain arrays as far as writes go

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._owner is None:
            return super().__setitem__(key, value)
        self._owner._write_column(self._field, key, value)

    def __reduce__(self):  # pickle/deepcopy as a plain array
        return np.asarray(self).copy().__reduce__()


class ReplayBuffer(_OptimizeMemory, _sb3.ReplayBuffer):
    """SB3's ``ReplayBuffer`` with storage and sampling in fastreplay's C++ core (same constructor and methods).

    Args:
        buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
        handle_timeout_termination: as for SB3 (``buffer_size`` is split over ``n_envs``: ``buffer_size // n_envs``
            steps of ``n_envs`` rows). ``optimize_memory_usage`` and ``handle_timeout_termination`` may be combined.
        seed: seed of the core's sampler. ``None`` (default) draws it from ``np.random``, which SB3 seeds from the
            algorithm's ``seed``, so a seeded SB3 run stays reproducible.

    Dict observation spaces work here too (samples are then ``DictReplayBufferSamples``); SB3 picks
    :class:`DictReplayBuffer` for them, which is the same class under SB3's Dict type.
    """

    _prioritized = False

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        seed: Optional[int] = None,
        **core_kwargs: Any,
    ) -> None:
        # BaseBuffer only: SB3's ReplayBuffer.__init__ would allocate its own numpy arrays.
        _sb3.BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = bool(optimize_memory_usage)
        self.handle_timeout_termination = bool(handle_timeout_termination)
        if seed is None:
            seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        self._seed = int(seed)
        self._core_kwargs = dict(core_kwargs)
        self._layout()
        self._core = self._new_core()
        self._reset_python_state()

    # ----------------------------------------------------------------------------------------------- layout
    def _layout(self) -> None:
        """Field names, shapes and dtypes of the core buffer (pure function of the constructor arguments)."""
        space = self.observation_space
        self._is_dict = isinstance(space, spaces.Dict)
        if self._is_dict:
            subspaces = list(space.spaces.items())
            obs_shapes = {k: tuple(s) for k, s in self.obs_shape.items()}  # type: ignore[union-attr]
        else:
            subspaces = [(None, space)]
            obs_shapes = {None: tuple(self.obs_shape)}
        # (key, core field of obs, core field of next_obs, shape, dtype, is Discrete)
        self._obs_specs: List[Tuple[Optional[str], str, str, Tuple[int, ...], np.dtype, bool]] = []
        for key, sub in subspaces:
            name = "obs" if key is None else f"obs.{key}"
            self._obs_specs.append(
                (key, name, "next_" + name, obs_shapes[key], np.dtype(sub.dtype), isinstance(sub, spaces.Discrete))
            )
        self._action_dtype = np.dtype(self._maybe_cast_dtype(self.action_space.dtype))
        fields: Dict[str, Any] = {}
        for _, name, next_name, shape, dtype, _ in self._obs_specs:
            fields[name] = (shape, dtype)
        for _, name, next_name, shape, dtype, _ in self._obs_specs:
            fields[next_name] = (shape, dtype)  # not stored with optimize_memory_usage (the core's dedup)
        fields["action"] = ((self.action_dim,), self._action_dtype)
        fields["reward"] = ((), np.float32)
        if self.optimize_memory_usage:
            # The core's episode end (bool): where its dedup keeps a final observation. SB3's done is a column apart.
            fields["done"] = ((), np.bool_)
            fields["sb3_done"] = ((), np.float32)
        else:
            fields["done"] = ((), np.float32)
        if self.handle_timeout_termination:
            fields["timeout"] = ((), np.float32)
        self._fields = fields
        self._done_field = "sb3_done" if self.optimize_memory_usage else "done"  # SB3's dones, float32
        self._capacity = self.buffer_size * self.n_envs
        self._action_shape = (self.n_envs, self.action_dim)
        self._scalar_shape = (self.n_envs,)
        self._scratch = np.zeros((3, self.n_envs), np.float32)  # reward and done casts; zero timeouts
        # add()'s fast path: values go to the core as they are (its casting rule and shape checks), when the fields
        # are exactly obs, next_obs, action, reward, done[, timeout]; anything the core refuses takes SB3's path.
        self._fast_add = list(fields)[:5] == ["obs", "next_obs", "action", "reward", "done"]

    def _new_core(self) -> _CoreReplay:
        kwargs = dict(self._core_kwargs)
        if self.optimize_memory_usage:  # one lane per env; next observations read from the lane's next step
            kwargs.update(num_envs=self.n_envs, next_obs="dedup")
        if self._prioritized:
            return _CorePER(self._capacity, self._fields, seed=self._seed, **kwargs)
        return _CoreReplay(self._capacity, self._fields, seed=self._seed, **kwargs)

    def _reset_python_state(self) -> None:
        if self.optimize_memory_usage:
            self._reset_optimized_state()

    # ---------------------------------------------------------------------------------- SB3's attributes
    @property
    def pos(self) -> int:  # type: ignore[override]
        """Next step to write, ``0 <= pos < buffer_size`` (derived from the core's ring)."""
        core = self.__dict__.get("_core")
        return 0 if core is None else core.next_index // self.n_envs

    @pos.setter
    def pos(self, value: int) -> None:
        if "_core" in self.__dict__:  # BaseBuffer.__init__ assigns pos = 0 before the core exists
            self._set_ring(value, self.full)

    @property
    def full(self) -> bool:  # type: ignore[override]
        """True once ``buffer_size`` steps are stored (derived from the core's ring)."""
        core = self.__dict__.get("_core")
        return False if core is None else len(core) == self._capacity

    @full.setter
    def full(self, value: bool) -> None:
        if "_core" in self.__dict__:
            self._set_ring(self.pos, bool(value))

    def _set_ring(self, pos: Any, full: bool) -> None:
        """SB3's ``pos``/``full`` assignment: steps ``[0, pos)`` are stored (every step if ``full``) and the next
        ``add`` writes step ``pos``. A step that becomes stored holds what the core's memory holds there: zeros if it
        was never written (SB3's arrays start as zeros), else the rows last written to it.

        Goes through the core's checkpoint restore (``_restore_state``), which accepts any consistent ring state;
        O(capacity), for a rare assignment. Rows that stay stored keep their generations (and priorities); new ones
        get generations of the new lap and, when prioritized, the priority a new transition gets."""
        try:
            pos = operator.index(pos)
        except TypeError:
            raise TypeError(f"pos must be an integer, not {type(pos).__name__}") from None
        if not 0 <= pos < self.buffer_size:
            raise ValueError(f"pos must be in [0, buffer_size={self.buffer_size}), got {pos}")
        if (pos, full) == (self.pos, self.full):
            return
        core, cap = self._core, self._capacity
        st = core._export_state()
        base, old_cursor = int(st["base"]), int(st["cursor"])
        old_size = len(core)
        laps = max((old_cursor - base) // cap, 1) if full else 0
        cursor = base + laps * cap + pos * self.n_envs
        size = min(cursor - base, cap)
        slots = np.arange(cap, dtype=np.int64)
        newest = 2 * ((cursor - 1 - slots) // cap + 1)  # lap of the slot's last ticket below the cursor (if stored)
        seq = np.asarray(st["seq"]).astype(np.int64)  # tickets stay below 2**62
        first = 2 * (base // cap) + 2  # the lowest generation of this epoch
        keep = (seq >= first) & (seq <= newest)
        seq = np.where(slots < size, np.where(keep, seq, newest), np.minimum(seq, first - 2)).astype(np.uint64)
        prio, max_all_time = None, 0.0
        if self._prioritized:
            prio = np.full(size, float(core.max_priority))  # type: ignore[attr-defined]
            kept = min(old_size, size)
            prio[:kept] = st["priorities"][:kept]
            max_all_time = float(st["max_all_time"])
        if getattr(core, "_episodes", None) is not None:
            self._rebuild_episode_starts(cursor, size)
        core._restore_state(cursor, base, int(st["stream"]), np.ascontiguousarray(seq), prio, max_all_time)
        if self.optimize_memory_usage:
            self._rebase_optimized(base, old_cursor, old_size)

    def _rebuild_episode_starts(self, cursor: int, size: int) -> None:
        """Episodic core (NStepReplayBuffer): the episode start of each stored step under the new cursor, from the
        stored done/truncated flags (a lane's oldest stored step, and each step after an end, starts an episode).
        The restore that follows checks them and rebuilds the lanes from them."""
        core, cap, k = self._core, self._capacity, self.n_envs
        tickets = np.arange(cursor - size, cursor, dtype=np.int64)  # oldest first; size and cursor: whole adds
        slots = tickets % cap
        ends = core._raw_view(self._field_index("done"), cap)[slots] != 0
        if "truncated" in self._fields:
            ends |= core._raw_view(self._field_index("truncated"), cap)[slots] != 0
        first = np.ones(size, dtype=bool)
        first[k:] = ends[:-k]  # the lane's previous step ended
        starts = np.maximum.accumulate(np.where(first, tickets, -1).reshape(-1, k), axis=0).reshape(-1)
        core._episode_view(-1)[slots] = starts.astype(np.uint64)

    def _column_rows(self) -> int:
        """Rows of the core's storage that the column attributes show: the stored ones."""
        return len(self._core)

    def _column_array(self, field: str, writable: bool = False) -> np.ndarray:
        """The column ``(rows // n_envs, n_envs, ...)`` of core field ``field``: a view of the core's storage."""
        i = self._field_index(field)
        view = self._core._raw_view(i, self._column_rows()) if writable else self._core._storage_view(i)
        if not writable and len(view) != self._column_rows():
            view = self._core._raw_view(i, self._column_rows())
        return view.reshape((len(view) // self.n_envs, self.n_envs) + view.shape[1:])

    def _column(self, field: str) -> np.ndarray:
        return _Column(self._column_array(field), self, field)

    def _field_index(self, field: str) -> int:
        """Index of ``field`` among the core's stored columns (with the core's dedup, next observations are not)."""
        return list(self._core._stored).index(field)

    def _obs_columns(self, prefix: str) -> Any:
        names = {key: (name if prefix == "obs" else next_name) for key, name, next_name, *_ in self._obs_specs}
        if self._is_dict:
            return {key: self._column(name) for key, name in names.items()}
        return self._column(names[None])

    @property
    def observations(self) -> Any:  # type: ignore[override]
        """Stored observations ``(steps, n_envs, *obs_shape)`` (a dict of those for Dict spaces), zero-copy."""
        return self._obs_columns("obs")

    @property
    def next_observations(self) -> Any:  # type: ignore[override]
        """Stored next observations; absent (AttributeError) with ``optimize_memory_usage``, as in SB3."""
        if self.optimize_memory_usage:
            raise AttributeError("next_observations is not stored when optimize_memory_usage=True")
        return self._obs_columns("next_obs")

    @property
    def actions(self) -> np.ndarray:  # type: ignore[override]
        return self._column("action")

    @property
    def rewards(self) -> np.ndarray:  # type: ignore[override]
        return self._column("reward")

    @property
    def dones(self) -> np.ndarray:  # type: ignore[override]
        return self._column(self._done_field)

    @property
    def timeouts(self) -> np.ndarray:  # type: ignore[override]
        if self.handle_timeout_termination:
            return self._column("timeout")
        return _Column(np.zeros(self.dones.shape, np.float32), self, "timeout")

    def _write_column(self, field: str, key: Any, value: Any) -> None:
        """``column[key] = value`` for a column attribute: written into the core's storage, with numpy's
        assignment rules (SB3's columns are numpy arrays). The value is converted and broadcast into a copy of the
        target rows first, so a value numpy refuses raises and leaves the buffer unchanged."""
        if field == "timeout" and not self.handle_timeout_termination:
            raise ValueError("timeouts are not stored when handle_timeout_termination=False")
        target = self._column_array(field, writable=True)
        region = np.array(target[key])  # IndexError for a bad key, before anything is written
        region[...] = value
        target[key] = region

    # -------------------------------------------------------------------------------------------- adding
    def _rows(self, value: Any, shape: Tuple[int, ...], dtype: np.dtype, reshape: bool = False) -> np.ndarray:
        a = value if type(value) is np.ndarray else np.asarray(value)
        target = (self.n_envs,) + shape
        if a.shape != target:
            if reshape:
                a = a.reshape(target)
            else:  # numpy assignment: drop leading length-1 axes, then broadcast
                while a.ndim > len(target) and a.shape[0] == 1:
                    a = a[0]
                a = np.broadcast_to(a, target)
        if a.dtype != dtype:
            a = a.astype(dtype)  # SB3 assigns into its arrays, which casts unsafely; so do we
        return a

    def _scalars(self, value: Any, scratch: np.ndarray) -> np.ndarray:
        """Reward or done as float32 ``(n_envs,)``. A cast goes through a scratch row that the core copies at once
        (cheaper than a new array per step)."""
        if type(value) is np.ndarray and value.shape == self._scalar_shape:
            if value.dtype == np.float32:
                return value
            if value.dtype.kind in "biuf":
                np.copyto(scratch, value, casting="unsafe")
                return scratch
        return self._rows(value, (), np.dtype(np.float32))

    def add(  # type: ignore[override]
        self,
        obs: Any,
        next_obs: Any,
        action: Any,
        reward: Any,
        done: Any,
        infos: List[Dict[str, Any]],
    ) -> None:
        """Store one step: ``n_envs`` transitions, with SB3's reshaping and casting rules."""
        if self.optimize_memory_usage:
            self._add_optimized(obs, next_obs, action, reward, done, infos)
            return
        if self._fast_add:
            # The common case (arrays of the buffer's dtypes and shapes) costs one core call. The core checks
            # everything before it writes anything, so a value it refuses leaves the buffer as it was and goes the
            # general way below, which reshapes and casts as SB3 does.
            try:
                if self.handle_timeout_termination:
                    self._core.add(obs, next_obs, action, reward, done, self._timeouts(infos))
                else:
                    self._core.add(obs, next_obs, action, reward, done)
                return
            except (TypeError, ValueError):
                pass
        rows, next_rows = self._step_rows(obs, next_obs, action, reward, done, infos)
        rows.update(next_rows)
        self._core.add(**rows)

    def _step_rows(
        self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: List[Dict[str, Any]]
    ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """The rows of one step (``done`` and ``timeout`` as float32) and, apart, its next observations."""
        rows: Dict[str, np.ndarray] = {}
        next_rows: Dict[str, np.ndarray] = {}
        for key, name, next_name, shape, dtype, discrete in self._obs_specs:
            if key is None:
                rows[name] = self._rows(obs, shape, dtype, discrete)
                next_rows[next_name] = self._rows(next_obs, shape, dtype, discrete)
            else:
                rows[name] = self._rows(obs[key], shape, dtype, discrete)
                next_rows[next_name] = self._rows(next_obs[key], shape, dtype, discrete)
        a = action if type(action) is np.ndarray else np.asarray(action)
        a = a.reshape(self._action_shape)  # SB3 reshapes actions to (n_envs, action_dim)
        rows["action"] = a if a.dtype == self._action_dtype else a.astype(self._action_dtype)
        rows["reward"] = self._scalars(reward, self._scratch[0])
        rows["done"] = self._scalars(done, self._scratch[1])
        if self.handle_timeout_termination:
            rows["timeout"] = self._timeouts(infos)
        return rows, next_rows

    def _timeouts(self, infos: List[Dict[str, Any]]) -> np.ndarray:
        """float32 ``(n_envs,)``: each env's ``TimeLimit.truncated``."""
        flags = [info.get("TimeLimit.truncated", False) for info in infos]
        if any(f is not False for f in flags):
            return self._rows(np.array(flags), (), np.dtype(np.float32))
        return self._scratch[2]  # all zeros, never written

    # optimize_memory_usage (_add_optimized, the latest step's rows, rows reset without done): _optimize_memory.py

    # ------------------------------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, env: Optional[Any] = None) -> Any:  # type: ignore[override]
        """A uniform batch of transitions as SB3's ``ReplayBufferSamples`` (``DictReplayBufferSamples``)."""
        if self.optimize_memory_usage:
            return self._to_samples(self._sample_optimized(batch_size), env)
        return self._to_samples(self._core.sample(batch_size), env)

    def _get_samples(self, batch_inds: np.ndarray, env: Optional[Any] = None) -> Any:  # type: ignore[override]
        """SB3's hook: the given steps, each with a random env (as SB3 does)."""
        batch_inds = np.asarray(batch_inds, dtype=np.int64)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        return self._to_samples(self._get(batch_inds * self.n_envs + env_indices), env)

    def _get(self, slots: np.ndarray) -> Any:
        """The core's ``get`` (with optimize_memory_usage also for the latest step's rows)."""
        return self._get_optimized(slots) if self.optimize_memory_usage else self._core.get(slots)

    def _to_samples(self, batch: Any, env: Optional[Any]) -> Any:
        if self.optimize_memory_usage and self._resets:
            self._patch_resets(batch)
        done = batch[self._done_field]
        if self.handle_timeout_termination:
            done = done * (1 - batch["timeout"])  # only dones that are not time-limit truncations
        to_torch = self.to_torch
        if self._is_dict:
            obs = self._normalize_obs({key: batch[name] for key, name, *_ in self._obs_specs}, env)
            next_obs = self._normalize_obs({key: batch[nn] for key, _, nn, *_ in self._obs_specs}, env)
            fields = (
                {k: to_torch(v, copy=False) for k, v in obs.items()},  # type: ignore[union-attr]
                to_torch(batch["action"], copy=False),
                {k: to_torch(v, copy=False) for k, v in next_obs.items()},  # type: ignore[union-attr]
            )
        else:
            fields = (
                to_torch(self._normalize_obs(batch["obs"], env), copy=False),  # type: ignore[arg-type]
                to_torch(batch["action"], copy=False),
                to_torch(self._normalize_obs(batch["next_obs"], env), copy=False),  # type: ignore[arg-type]
            )
        dones = to_torch(done.reshape(-1, 1), copy=False)
        rewards = to_torch(self._normalize_reward(batch["reward"].reshape(-1, 1), env), copy=False)
        return self._make_samples(batch, fields + (dones, rewards))

    def _make_samples(self, batch: Any, values: Tuple[Any, ...]) -> Any:
        cls = DictReplayBufferSamples if self._is_dict else ReplayBufferSamples
        return cls(*values)

    # ----------------------------------------------------------------------------------- size and reset
    def reset(self) -> None:
        """Empty the buffer (memory is kept)."""
        self._core.clear()
        self._reset_python_state()
        super().reset()

    # -------------------------------------------------------------------------------------------- pickle
    # SB3's save_replay_buffer pickles the whole object. The core buffers pickle themselves through fastreplay's
    # checkpoint format (rows, ring position, generations, sampler state, priorities), so the default
    # __dict__ pickling is exact; only the column views, which are built on demand, are never stored.

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Also loads buffers pickled before optimize_memory_usage ran on the core's dedup: their column-write
        overlay is written into the core's storage. Such a buffer with optimize_memory_usage (an aside store) has
        another layout and is refused with a ValueError."""
        patches = state.pop("_patches", None) if "_done_field" not in state else None
        if "_done_field" not in state:
            if state.get("optimize_memory_usage"):
                raise ValueError(
                    "this replay buffer was saved by an older fastreplay.sb3 with optimize_memory_usage=True, whose "
                    "storage layout (an aside store) this version does not read; load it with that version, or "
                    "refill a new buffer")
            state["_done_field"] = "done"
        parent = getattr(super(), "__setstate__", None)  # e.g. SB3's HerReplayBuffer (it sets env = None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        for field, rows in (patches or {}).items():
            raw = self._core._raw_view(self._field_index(field), len(self._core))
            for slot, row in rows.items():
                if slot < len(raw):
                    raw[slot] = row


class DictReplayBuffer(ReplayBuffer, _sb3.DictReplayBuffer):
    """SB3's ``DictReplayBuffer`` backed by fastreplay's core. Unlike SB3's, it supports ``optimize_memory_usage``."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise AssertionError("DictReplayBuffer must be used with Dict obs space only")  # SB3's own check
        super().__init__(
            buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination, **kwargs
        )
