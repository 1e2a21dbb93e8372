"""cpprb drop-in: cpprb's replay-buffer API with storage and sampling in fastreplay's C++ core.

One-line swap::

    from fastreplay.cpprb import ReplayBuffer, PrioritizedReplayBuffer   # was: from cpprb import ...

    rb = ReplayBuffer(1e6, {"obs": {"shape": 4}, "act": {}, "rew": {}, "next_obs": {"shape": 4}, "done": {}})
    rb.add(obs=o, act=a, rew=r, next_obs=o2, done=d)      # one row, or many with a leading axis
    sample = rb.sample(256)                               # dict: name -> array (B, *shape); scalars are (B, 1)

Semantics follow cpprb 10/11: ``env_dict`` entries ``{"shape": int or tuple (default 1), "dtype": ...}`` with
``default_dtype`` (float32) for the rest; values are reshaped to ``(-1, *shape)`` and cast as numpy assignment
casts; the number of rows of an ``add`` is that of the last ``env_dict`` entry; ``next_of`` stores each named value
once and serves ``next_<name>`` from the following row, from the latest ``add``'s ``next_<name>``, or, for the
last transition of an episode closed by ``on_episode_end()``, from a small cache; ``Nstep`` sums discounted rewards
over ``Nstep["size"]`` steps and moves ``Nstep["next"]`` values; prioritized sampling is proportional and
stratified with ``(p + eps) ** alpha`` leaves and max-normalised weights; ``save_transitions`` and
``load_transitions`` read and write cpprb's ``.npz`` format (version 1, ``safe`` and unsafe ``next_of`` layouts).
The remaining differences, including two cpprb ``Nstep`` bugs that this module does not reproduce, are listed in
``docs/dropin.md``.
"""
from __future__ import annotations

import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .buffer import PrioritizedReplayBuffer as _CorePER
from .buffer import ReplayBuffer as _CoreReplay

__all__ = [
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "create_before_add_func",
    "create_buffer",
    "create_env_dict",
]

_RESERVED = ("indices", "weights", "generations")  # names fastreplay's Batch keeps for itself
_FORMAT_VERSION = 1


def _names(x: Any) -> List[str]:
    """cpprb's "str or array like of str" arguments as a list."""
    if x is None:
        return []
    return [str(v) for v in np.array(x, ndmin=1).ravel()]


def _shape(defs: Dict[str, Any]) -> Tuple[int, ...]:
    return tuple(int(d) for d in np.array(defs.get("shape", 1), ndmin=1, dtype=np.int64))


class ReplayBuffer:
    """Replay buffer with cpprb's ``ReplayBuffer`` API: uniform random sampling with replacement.

    Args:
        size: capacity (cpprb accepts floats such as ``1e6``; so does this).
        env_dict: ``{name: {"shape": ..., "dtype": ...}}``; both keys optional.
        next_of: names whose ``next_<name>`` shares storage with ``<name>`` (pass ``next_<name>`` to ``add``).
        stack_compress: accepted for compatibility; values are stored uncompressed (same samples, more memory).
        default_dtype: dtype of entries without one (``np.float32``).
        Nstep: ``{"size": n, "gamma": 0.99, "rew": names, "next": names}`` for n-step transitions (needs ``done``).
        mmap_prefix: map the columns to files (in the directory ``<mmap_prefix>_fastreplay``) instead of memory,
            for buffers larger than RAM; the buffer starts empty, as in cpprb.
    """

    _prioritized = False

    def __init__(
        self,
        size: Any,
        env_dict: Optional[Dict[str, Dict[str, Any]]] = None,
        next_of: Any = None,
        *,
        stack_compress: Any = None,
        default_dtype: Any = None,
        Nstep: Optional[Dict[str, Any]] = None,
        mmap_prefix: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        self._setup(size, env_dict, next_of, stack_compress, default_dtype, Nstep, mmap_prefix, {})

    def _setup(self, size, env_dict, next_of, stack_compress, default_dtype, Nstep, mmap_prefix, per_kwargs) -> None:
        where = type(self).__name__
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        self._buffer_size = int(size)
        if not env_dict:
            raise ValueError(f"{where}: env_dict must name at least one value")
        # cpprb maps each value to "<prefix>_<name>.dat", recreated empty; here the core maps its columns into one
        # directory, "<prefix>_fastreplay", likewise recreated.
        storage: Dict[str, Any] = {}
        if mmap_prefix:
            storage = {"storage": "memmap", "path": f"{mmap_prefix}_fastreplay"}
            shutil.rmtree(storage["path"], ignore_errors=True)
        self.default_dtype = np.dtype(default_dtype or np.single)
        self._env_dict = {str(k): dict(v or {}) for k, v in env_dict.items()}
        # (user name, core field name, shape, dtype) of every stored value, in env_dict order.
        self._specs: List[Tuple[str, str, Tuple[int, ...], np.dtype]] = []
        for name, defs in self._env_dict.items():
            dtype = np.dtype(defs.get("dtype", self.default_dtype))
            self._specs.append((name, f"_cpprb.{name}" if name in _RESERVED else name, _shape(defs), dtype))
        self._spec = {s[0]: s for s in self._specs}
        self._count_name = self._specs[-1][0]  # cpprb counts the rows of an add on its last env_dict entry
        self._stack_compress = _names(stack_compress)

        self._nstep: Optional[Dict[str, Any]] = None
        self._next_of = _names(next_of)
        for name in self._next_of:
            if name not in self._spec:
                raise KeyError(name)
        if Nstep:
            n = int(Nstep["size"])
            if "done" not in self._spec:
                raise KeyError("done")
            self._nstep = {
                "size": n,
                "gamma": float(Nstep.get("gamma", 0.99)),
                "rew": _names(Nstep.get("rew")),
                "next": _names(Nstep.get("next")),
            }
            # n-step next values are n steps ahead, not one: store them as ordinary values.
            for name in self._next_of:
                _, core, shape, dtype = self._spec[name]
                spec = ("next_" + name, "next_" + core, shape, dtype)
                self._specs.append(spec)
                self._spec[spec[0]] = spec
            self._next_of = []
        fields = {core: (shape, dtype) for _, core, shape, dtype in self._specs}
        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # np.random.seed(...) keeps runs reproducible
        if self._prioritized:
            self._core: _CoreReplay = _CorePER(self._buffer_size, fields, seed=seed, **per_kwargs, **storage)
        else:
            self._core = _CoreReplay(self._buffer_size, fields, seed=seed, **storage)
        self._reset_state()

    def _reset_state(self) -> None:
        self._episode_len = 0
        self._next_latest: Dict[str, np.ndarray] = {}  # next_<name> of the latest add (next_of)
        self._cache: Dict[int, Dict[str, np.ndarray]] = {}  # slot -> next values of an episode's last transition
        self._cached = np.zeros(self._buffer_size if self._next_of else 0, dtype=bool)
        self._pending: Optional[Dict[str, np.ndarray]] = None  # Nstep: rows waiting for their n-step window
        self._pending_priorities: Optional[np.ndarray] = None

    # ------------------------------------------------------------------------------------------- adding
    def _convert(self, kwargs: Dict[str, Any], names: Any = None) -> Tuple[Dict[str, np.ndarray], int]:
        """Values of one add as ``{name: array (N, *shape)}`` of the stored dtypes (cpprb's reshape and casts)."""
        _, _, shape, _ = self._spec[self._count_name]
        n = np.reshape(np.asarray(kwargs[self._count_name]), (-1,) + shape).shape[0]
        rows: Dict[str, np.ndarray] = {}
        for name, _, shape, dtype in (self._specs if names is None else names):
            a = np.asarray(kwargs[name])
            target = (n,) + shape
            if a.shape != target:
                a = a.reshape((-1,) + shape)
                if a.shape[0] != n:
                    a = np.broadcast_to(a, target)
            if a.dtype != dtype:
                a = a.astype(dtype)
            rows[name] = a
        return rows, n

    def add(self, **kwargs: Any) -> Optional[int]:
        """Store one transition, or N with a leading axis. Returns the first slot written (``None`` when all rows
        went into the Nstep window and none reached the buffer). Missing values raise ``KeyError``; extra ones are
        ignored."""
        return self._add(kwargs, None)

    def _add(self, kwargs: Dict[str, Any], priorities: Optional[np.ndarray]) -> Optional[int]:
        rows, n = self._convert(kwargs)
        if self._next_of:
            for name in self._next_of:
                _, _, shape, dtype = self._spec[name]
                nxt = np.reshape(np.asarray(kwargs["next_" + name]), (-1,) + shape)
                self._next_latest[name] = np.array(nxt[-1], dtype=dtype)
        if priorities is not None and len(priorities) != n:
            raise ValueError("`priorities` shape is incompatible")
        if self._nstep is not None:
            if self._prioritized and priorities is None:
                priorities = np.full(n, self._core.max_priority, dtype=np.float64)
            out = self._nstep_push(rows, priorities)
            if out is None:
                return None
            rows, priorities = out
        return self._store(rows, priorities)

    def _store(self, rows: Dict[str, np.ndarray], priorities: Optional[np.ndarray]) -> Optional[int]:
        core = self._core
        n = len(next(iter(rows.values())))
        if n == 0:
            return None
        index = core.next_index
        if self._cache:  # slots about to be overwritten lose their cached next values
            slots = (index + np.arange(n)) % self._buffer_size
            for s in slots[self._cached[slots]].tolist():
                del self._cache[s]
            self._cached[slots] = False
        core.add(**{self._spec[name][1]: v for name, v in rows.items()})
        if priorities is not None:
            self._set_priorities((index + np.arange(n)) % self._buffer_size, priorities)
        self._episode_len += n
        return index

    def _set_priorities(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        raise TypeError("priorities need a PrioritizedReplayBuffer")

    # -------------------------------------------------------------------------------------------- Nstep
    def _nstep_push(self, rows, priorities):
        """Append rows to the n-step window; return the transitions whose n steps are complete, if any."""
        if self._pending is not None:
            rows = {k: np.concatenate([self._pending[k], v]) for k, v in rows.items()}
            if priorities is not None:
                priorities = np.concatenate([self._pending_priorities, priorities])
        n = self._nstep["size"]
        m = len(rows["done"])
        if m < n:
            self._pending, self._pending_priorities = rows, priorities
            return None
        count = m - (n - 1)
        out = self._nstep_window(rows, count)
        self._pending = {k: v[count:].copy() for k, v in rows.items()}
        self._pending_priorities = None if priorities is None else priorities[count:].copy()
        return out, (None if priorities is None else priorities[:count])

    def _nstep_window(self, rows: Dict[str, np.ndarray], count: int) -> Dict[str, np.ndarray]:
        """Transitions t < count, each summing over steps t .. min(t + n, len) - 1 and stopping after a done."""
        n, gamma = self._nstep["size"], self._nstep["gamma"]
        m = len(rows["done"])
        done = rows["done"].reshape(m, -1)[:, 0].astype(np.float64)
        t = np.arange(count)
        last = np.minimum(t + n, m) - 1
        out = {k: v[:count] for k, v in rows.items()}
        factor = np.ones(count)
        done_sum = np.zeros(count)
        sums = {k: np.zeros(rows[k][:count].shape) for k in self._nstep["rew"]}
        for j in range(n):
            pos = np.minimum(t + j, m - 1)
            live = (t + j) <= last
            for k, acc in sums.items():
                r = rows[k][pos].astype(np.float64)
                acc += (factor * live).reshape((-1,) + (1,) * (r.ndim - 1)) * r
            done_sum += np.where(live, done[pos], 0.0)
            factor = factor * np.where(live, gamma * (1.0 - done[pos]), 1.0)
        for k, acc in sums.items():
            out[k] = acc.astype(rows[k].dtype)
        out["done"] = done_sum.reshape(rows["done"][:count].shape).astype(rows["done"].dtype)
        for k in self._nstep["next"]:
            out[k] = rows[k][last]
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def _encode(self, batch: Any, idx: np.ndarray) -> Dict[str, np.ndarray]:
        out = {name: batch[core] for name, core, _, _ in self._specs}
        if self._next_of and len(idx):
            core, size = self._core, self._buffer_size
            nxt = (idx + 1) % size
            latest = nxt == core.next_index
            got = core.get(np.where(latest, idx, nxt))
            cached = np.flatnonzero(self._cached[idx]) if self._cache else ()
            for name in self._next_of:
                v = got[self._spec[name][1]]
                if latest.any():
                    v[latest] = self._next_latest[name]
                for i in cached:
                    v[i] = self._cache[int(idx[i])]["next_" + name]
                out["next_" + name] = v
        return out

    def sample(self, batch_size: int) -> Dict[str, np.ndarray]:
        """``batch_size`` random transitions (with replacement): ``{name: array (B, *shape)}``."""
        batch = self._core.sample(int(batch_size))
        return self._encode(batch, batch.indices)

    def get_all_transitions(self, shuffle: bool = False) -> Dict[str, np.ndarray]:
        """Every stored transition in slot order (shuffled with ``np.random`` when ``shuffle``)."""
        idx = np.arange(len(self._core), dtype=np.int64)
        if shuffle:
            np.random.shuffle(idx)
        return self._encode(self._core.get(idx), idx)

    # -------------------------------------------------------------------------------------- bookkeeping
    def clear(self) -> None:
        """Remove every transition (and the Nstep window and next_of cache)."""
        self._core.clear()
        self._reset_state()

    def get_stored_size(self) -> int:
        return len(self._core)

    def get_buffer_size(self) -> int:
        return self._buffer_size

    def get_next_index(self) -> int:
        return self._core.next_index

    def get_current_episode_len(self) -> int:
        return self._episode_len

    def is_Nstep(self) -> bool:
        return self._nstep is not None

    def on_episode_end(self) -> None:
        """Close the episode: flush the Nstep window and cache the last transition's ``next_<name>`` values."""
        if self._nstep is not None and self._pending is not None and len(self._pending["done"]):
            rows, pri = self._pending, self._pending_priorities
            self._pending, self._pending_priorities = None, None
            self._store(self._nstep_window(rows, len(rows["done"])), pri)
        self._pending, self._pending_priorities = None, None
        self._cache_latest()
        self._episode_len = 0

    def _cache_latest(self) -> None:
        if not self._next_of or len(self._core) == 0 or self._episode_len == 0 or not self._next_latest:
            return
        slot = (self._core.next_index - 1) % self._buffer_size
        if slot not in self._cache:
            self._cache[slot] = {"next_" + k: v.copy() for k, v in self._next_latest.items()}
            self._cached[slot] = True

    # ------------------------------------------------------------------------------------------ files
    def save_transitions(self, file: Any, *, safe: bool = True) -> None:
        """Write the stored transitions to ``file`` in cpprb's ``.npz`` format (version 1).

        ``safe=True`` (default) writes ``get_all_transitions()``; ``safe=False`` with ``next_of`` writes each
        stored value once plus the cache of episode ends, as cpprb does. ``numpy.savez_compressed`` adds ``.npz``
        to a file name without it.
        """
        if safe or not (self._next_of or self._stack_compress):
            np.savez_compressed(
                file, safe=True, version=_FORMAT_VERSION, data=self.get_all_transitions(), Nstep=self.is_Nstep(),
                cache=None, next_of=None,
            )
            return
        n = len(self._core)
        storage = self._core.storage
        data = {name: np.array(storage[core][:n]) for name, core, _, _ in self._specs}
        cache = {k: {kk: vv.copy() for kk, vv in v.items()} for k, v in self._cache.items()}
        if n and self._episode_len and self._next_latest:  # cpprb caches the latest transition before saving
            slot = (self._core.next_index - 1) % self._buffer_size
            cache.setdefault(slot, {"next_" + k: v.copy() for k, v in self._next_latest.items()})
        np.savez_compressed(
            file, safe=False, version=_FORMAT_VERSION, data=data, Nstep=self.is_Nstep(), cache=cache,
            next_of=np.array(self._next_of),
        )

    def load_transitions(self, file: Any) -> None:
        """Add the transitions of a file written by ``save_transitions`` (this module's or cpprb's).

        The file is unpickled (cpprb's format stores dicts as objects): never load an untrusted file.
        """
        with np.load(file, allow_pickle=True) as data:
            version = data["version"]
            stored_nstep = bool(data["Nstep"])
            if stored_nstep != self.is_Nstep():
                raise ValueError("Stored data and Buffer mismatch for Nstep")
            if version != _FORMAT_VERSION:
                raise ValueError(f"Unknown Format Version: {version}")
            d = data["data"][np.newaxis][0]
            if data["safe"]:
                self._add_raw(d)
                return
            cache = data["cache"][np.newaxis][0]
            next_of = data["next_of"][np.newaxis][0]
        self._load_unsafe(d, cache, None if next_of is None else _names(next_of))

    def _add_raw(self, values: Dict[str, Any]) -> None:
        """add() without the Nstep window (the values are finished transitions)."""
        nstep, self._nstep = self._nstep, None
        try:
            self.add(**values)
        finally:
            self._nstep = nstep

    def _load_unsafe(self, d: Dict[str, np.ndarray], cache: Dict[int, Dict[str, Any]], next_of) -> None:
        """Rebuild transitions from stored values plus episode-end cache: each cached slot closes an episode."""
        size = len(next(iter(d.values())))
        begin = 0

        def run(lo: int, hi: int, next_from: Callable[[str], Any]) -> None:
            if lo < hi:
                values = {k: v[lo:hi] for k, v in d.items()}
                for k in next_of or ():
                    values["next_" + k] = next_from(k)
                self._add_raw(values)

        for i in sorted(int(k) for k in cache):
            run(begin, i, lambda k: d[k][begin + 1:i + 1])
            self._add_raw({**{k: v[i] for k, v in d.items()}, **cache[i]})
            self.on_episode_end()
            begin = i + 1
        if begin < size:
            run(begin, size - 1, lambda k: d[k][begin + 1:size])
            run(size - 1, size, lambda k: d[k][0:1])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self._buffer_size}, stored={len(self._core)}, "
                f"env_dict={self._env_dict!r})")


class PrioritizedReplayBuffer(ReplayBuffer):
    """cpprb's ``PrioritizedReplayBuffer``: proportional PER with ``(p + eps) ** alpha`` leaves.

    New transitions get the largest priority given so far (1 at the start) unless ``add(priorities=...)`` says
    otherwise. ``sample(batch_size, beta=0.4)`` adds ``weights`` (float32 ``(B,)``, max-normalised) and
    ``indexes`` (uint64 ``(B,)``). With ``check_for_update=True``, ``update_priorities`` skips slots written since
    the last ``sample``.
    """

    _prioritized = True

    def __init__(
        self,
        size: Any,
        env_dict: Optional[Dict[str, Dict[str, Any]]] = None,
        alpha: float = 0.6,
        *,
        Nstep: Optional[Dict[str, Any]] = None,
        eps: float = 1e-4,
        check_for_update: bool = False,
        next_of: Any = None,
        stack_compress: Any = None,
        default_dtype: Any = None,
        mmap_prefix: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        self._check_for_update = bool(check_for_update)
        self._setup(size, env_dict, next_of, stack_compress, default_dtype, Nstep, mmap_prefix,
                    {"alpha": float(alpha), "eps": float(eps)})

    def _reset_state(self) -> None:
        super()._reset_state()
        self._mark = (0, 0)  # (total_added, next_index) at the last sample, for check_for_update

    def add(self, *, priorities: Any = None, **kwargs: Any) -> Optional[int]:  # type: ignore[override]
        """As ``ReplayBuffer.add``; ``priorities`` (one per row) replace the default maximum priority."""
        if priorities is not None:
            priorities = np.ravel(np.asarray(priorities, dtype=np.float64))
        return self._add(kwargs, priorities)

    def _set_priorities(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._core.update_priorities(slots.astype(np.int64), np.asarray(priorities, dtype=np.float64))

    def sample(self, batch_size: int, beta: float = 0.4) -> Dict[str, np.ndarray]:  # type: ignore[override]
        """A prioritized batch with ``weights`` and ``indexes`` (stratified over the priority mass)."""
        batch = self._core.sample(int(batch_size), float(beta))
        out = self._encode(batch, batch.indices)
        out["weights"] = batch.weights
        out["indexes"] = batch.indices.astype(np.uint64)
        if self._check_for_update:
            self._mark = (self._core.total_added, self._core.next_index)
        return out

    def update_priorities(self, indexes: Any, priorities: Any) -> None:
        """Set the priorities of ``indexes``; skips slots written since the last sample if ``check_for_update``."""
        if priorities is None:
            raise TypeError("``properties`` must not be ``None``")
        idx = np.array(indexes, dtype=np.int64, ndmin=1).ravel()
        ps = np.array(priorities, dtype=np.float64, ndmin=1).ravel()
        if self._check_for_update:
            written = self._core.total_added - self._mark[0]
            if written >= self._buffer_size:
                return
            keep = ((idx - self._mark[1]) % self._buffer_size) >= written
            idx, ps = idx[keep], ps[keep]
        if len(idx):
            self._core.update_priorities(idx, ps)

    def get_max_priority(self) -> float:
        """The largest priority given so far (1 after construction or ``clear``)."""
        return float(self._core.max_priority)


def create_buffer(size: Any, env_dict: Optional[Dict[str, Any]] = None, *, prioritized: bool = False,
                  **kwargs: Any) -> ReplayBuffer:
    """``PrioritizedReplayBuffer`` if ``prioritized`` else ``ReplayBuffer``, with the other arguments passed on."""
    cls = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    return cls(size, env_dict, **kwargs)


def _space_defs(space: Any, int_type: Any, float_type: Any) -> Dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"dtype": int_type, "shape": 1}
    if isinstance(space, spaces.MultiDiscrete):
        return {"dtype": int_type, "shape": space.nvec.shape}
    if isinstance(space, spaces.Box):
        return {"dtype": float_type, "shape": space.shape}
    if isinstance(space, spaces.MultiBinary):
        return {"dtype": int_type, "shape": space.n}
    raise NotImplementedError(f"Error: Unknown Space {space}")


def create_env_dict(env: Any, *, int_type: Any = None, float_type: Any = None) -> Dict[str, Dict[str, Any]]:
    """``env_dict`` for a gymnasium env, as cpprb builds it: ``rew`` and ``done`` (float), ``obs``/``next_obs``
    and ``act`` from the spaces (Discrete/MultiDiscrete/MultiBinary as ``int_type`` (int32), Box as
    ``float_type`` (float32)); Tuple spaces give ``obs0, obs1, ...``; Dict spaces give their keys and
    ``next_<key>``."""
    from gymnasium import spaces

    int_type = int_type or np.int32
    float_type = float_type or np.float32
    env_dict: Dict[str, Dict[str, Any]] = {
        "rew": {"shape": 1, "dtype": float_type},
        "done": {"shape": 1, "dtype": float_type},
    }
    obs, act = env.observation_space, env.action_space
    if isinstance(obs, spaces.Tuple):
        for i, s in enumerate(obs.spaces):
            env_dict[f"obs{i}"] = _space_defs(s, int_type, float_type)
            env_dict[f"next_obs{i}"] = _space_defs(s, int_type, float_type)
    elif isinstance(obs, spaces.Dict):
        for k, s in obs.spaces.items():
            env_dict[k] = _space_defs(s, int_type, float_type)
            env_dict[f"next_{k}"] = _space_defs(s, int_type, float_type)
    else:
        env_dict["obs"] = _space_defs(obs, int_type, float_type)
        env_dict["next_obs"] = _space_defs(obs, int_type, float_type)
    if isinstance(act, spaces.Tuple):
        for i, s in enumerate(act.spaces):
            env_dict[f"act{i}"] = _space_defs(s, int_type, float_type)
    elif isinstance(act, spaces.Dict):
        for k, s in act.spaces.items():
            env_dict[k] = _space_defs(s, int_type, float_type)
    else:
        env_dict["act"] = _space_defs(act, int_type, float_type)
    return env_dict


def create_before_add_func(env: Any) -> Callable[..., Dict[str, Any]]:
    """``before_add(obs, act, next_obs, rew, done) -> dict`` for ``add(**...)``, as cpprb builds it: Tuple values
    become ``obs0, obs1, ...``; Dict values become ``obs_<key>``, ``next_obs_<key>`` and ``act_<key>``."""
    from gymnasium import spaces

    def pick(space: Any) -> Callable[[str, Any], Dict[str, Any]]:
        if isinstance(space, spaces.Tuple):
            return lambda name, v: {f"{name}{i}": x for i, x in enumerate(v)}
        if isinstance(space, spaces.Dict):
            return lambda name, v: {f"{name}_{k}": x for k, x in v.items()}
        return lambda name, v: {name: v}

    obs_f, act_f = pick(env.observation_space), pick(env.action_space)

    def before_add(obs: Any, act: Any, next_obs: Any, rew: Any, done: Any) -> Dict[str, Any]:
        return {**obs_f("obs", obs), **act_f("act", act), **obs_f("next_obs", next_obs), "rew": rew, "done": done}

    return before_add
