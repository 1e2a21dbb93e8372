"""cpprb's ``ReplayBuffer`` on fastreplay's core: env_dict specs, cpprb's reshapes and casts on ``add``,
``next_of`` (each value stored once, ``next_<name>`` served from the following row, the latest ``add`` or the
episode-end cache), the ``Nstep`` window, and ``save_transitions``/``load_transitions`` in cpprb's ``.npz`` format.
``PrioritizedReplayBuffer`` (``_prioritized.py``) reuses all of it; the semantics are described in the package
docstring (``__init__.py``)."""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..buffer import PrioritizedReplayBuffer as _CorePER
from ..buffer import ReplayBuffer as _CoreReplay

_RESERVED = ("indices", "weights", "generations")  # names fastreplay's Batch keeps for itself
_FORMAT_VERSION = 1


def _names(x: Any) -> List[str]:
    """cpprb's "str or array like of str" arguments as a list."""
    if x is None:
        return []
    return [str(v) for v in np.array(x, ndmin=1).ravel()]


def _shape(defs: Dict[str, Any]) -> Tuple[int, ...]:
    return tuple(int(d) for d in np.array(defs.get("shape", 1), ndmin=1, dtype=np.int64))


def _check_nstep(Nstep: Any, where: str) -> Dict[str, Any]:
    """cpprb's ``Nstep`` dict, checked: ``size`` an integer >= 1, ``gamma`` a finite real number, ``rew`` and
    ``next`` names (checked against env_dict by the caller)."""
    if not isinstance(Nstep, dict):
        raise TypeError(
            f"{where}: Nstep must be a dict such as {{'size': 3, 'gamma': 0.99}}, got {type(Nstep).__name__}")
    unknown = sorted(set(Nstep) - {"size", "gamma", "rew", "next"}, key=str)
    if unknown:
        raise ValueError(f"{where}: Nstep has unknown keys {unknown}; it takes 'size', 'gamma', 'rew' and 'next'")
    if "size" not in Nstep:
        raise KeyError(f"{where}: Nstep needs 'size' (the number of steps n >= 1)")
    size = Nstep["size"]
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{where}: Nstep['size'] must be an integer >= 1, got {size!r}")
    if size < 1:
        raise ValueError(f"{where}: Nstep['size'] must be an integer >= 1, got {size}")
    gamma = Nstep.get("gamma", 0.99)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: Nstep['gamma'] must be a real number, got {gamma!r}")
    if not np.isfinite(gamma):
        raise ValueError(f"{where}: Nstep['gamma'] must be finite, got {gamma}")
    return {"size": int(size), "gamma": float(gamma), "rew": _names(Nstep.get("rew")),
            "next": _names(Nstep.get("next"))}


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
            for buffers larger than RAM; the buffer starts empty, as in cpprb. Each value's rows are also reachable
            under cpprb's file name ``<mmap_prefix>_<name>.dat`` (a hard link to the column file).
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

    def _setup(self, size, env_dict, next_of, stack_compress, default_dtype, Nstep, mmap_prefix, per_kwargs,
               shared: bool = False) -> None:
        where = type(self).__name__
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        self._buffer_size = int(size)
        # cpprb maps each value to "<prefix>_<name>.dat", recreated empty; here the core maps its columns into one
        # directory, "<prefix>_fastreplay", likewise recreated.
        storage: Dict[str, Any] = {}
        if mmap_prefix:
            storage = {"storage": "memmap", "path": f"{mmap_prefix}_fastreplay"}
            shutil.rmtree(storage["path"], ignore_errors=True)
        if shared:  # the multi-process buffers (_mp.py)
            storage = {"storage": "shared"}
        self.default_dtype = np.dtype(default_dtype or np.single)
        self._env_dict = {str(k): dict(v or {}) for k, v in (env_dict or {}).items()}
        # (user name, core field name, shape, dtype) of every stored value, in env_dict order.
        self._specs: List[Tuple[str, str, Tuple[int, ...], np.dtype]] = []
        for name, defs in self._env_dict.items():
            dtype = np.dtype(defs.get("dtype", self.default_dtype))
            self._specs.append((name, f"_cpprb.{name}" if name in _RESERVED else name, _shape(defs), dtype))
        self._spec = {s[0]: s for s in self._specs}
        # cpprb counts the rows of an add on its last env_dict entry; without any, add raises KeyError(None) as
        # cpprb's does (a buffer without env_dict stores nothing: cpprb's old create_buffer(obs_shape=...) calls)
        self._count_name = self._specs[-1][0] if self._specs else None
        self._stack_compress = _names(stack_compress)

        self._nstep: Optional[Dict[str, Any]] = None
        self._next_of = _names(next_of)
        for name in self._next_of:
            if name not in self._spec:
                raise KeyError(name)
        if Nstep:
            self._nstep = _check_nstep(Nstep, where)
            if "done" not in self._spec:
                raise KeyError(f"{where}: Nstep needs a 'done' entry in env_dict (n-step sums stop at episode ends)")
            # n-step next values are n steps ahead, not one: store them as ordinary values.
            for name in self._next_of:
                _, core, shape, dtype = self._spec[name]
                spec = ("next_" + name, "next_" + core, shape, dtype)
                self._specs.append(spec)
                self._spec[spec[0]] = spec
            self._next_of = []
            for role in ("rew", "next"):
                for name in self._nstep[role]:
                    if name not in self._spec:
                        raise KeyError(f"{where}: Nstep['{role}'] names {name!r}, which is not in env_dict")
        fields = {core: (shape, dtype) for _, core, shape, dtype in self._specs}
        if not fields:  # the core needs a field: one byte that nothing reads
            fields = {"_cpprb.none": ((), np.dtype(np.uint8))}
        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # np.random.seed(...) keeps runs reproducible
        if self._prioritized:
            self._core: _CoreReplay = _CorePER(self._buffer_size, fields, seed=seed, **per_kwargs, **storage)
        else:
            self._core = _CoreReplay(self._buffer_size, fields, seed=seed, **storage)
        if mmap_prefix:
            self._link_mmap_files(mmap_prefix, storage["path"])
        self._reset_state()

    def _link_mmap_files(self, prefix: str, directory: str) -> None:
        """cpprb's file names for the mapped columns: ``<prefix>_<name>.dat``, each a hard link to the core's
        column file (``field-<i>.bin``, the same raw ``(size, *shape)`` rows cpprb's ``np.memmap`` holds)."""
        stored = list(self._core._stored)
        for i, (name, core, _, _) in enumerate(self._specs):
            if stored[i] != core:  # the core's column order is the fields' order
                raise RuntimeError(f"mmap_prefix: column {i} is {stored[i]!r}, expected {core!r}")
            link = f"{prefix}_{name}.dat"
            try:
                os.unlink(link)  # cpprb recreates its files; a stale link would show old rows
            except FileNotFoundError:
                pass
            os.link(os.path.join(directory, f"field-{i}.bin"), link)

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
        """Transitions t < count, each summing over steps t .. min(t + n, len) - 1 and stopping after a done.

        ``done`` follows cpprb (its own tests assert it, test_issue.py TestIssue137): it is set when a step among
        the window's first n - 1 ends the episode, so a window whose n-th step is the terminal one has done = 0
        and its next values are that terminal step's."""
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
            done_sum += np.where(live & (j < n - 1), done[pos], 0.0)  # cpprb's rule: see _nstep_window
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
            got = self._rows(np.where(latest, idx, nxt))
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

    def _encode_sample(self, idx: Any) -> Dict[str, np.ndarray]:
        """The transitions at slots ``idx`` (cpprb's helper behind ``sample``, used by its tests)."""
        idx = np.array(idx, dtype=np.int64, ndmin=1).ravel()
        return self._encode(self._rows(idx), idx)

    def _rows(self, idx: np.ndarray) -> Any:
        """The core's rows at slots ``idx``. As in cpprb, a slot not written yet (or since ``clear``) may be read
        too and gives what its memory holds (zeros until first written); only slots outside the buffer raise."""
        core = self._core
        if not len(idx) or (idx.min() >= 0 and idx.max() < len(core)):
            return core.get(idx)
        bad = idx[(idx < 0) | (idx >= self._buffer_size)]
        if len(bad):
            raise IndexError(f"_encode_sample: index {int(bad[0])} is out of range for a buffer of size "
                             f"{self._buffer_size}")
        return {name: np.array(core._raw_view(i, self._buffer_size)[idx]) for i, name in enumerate(core._stored)}

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

    def load_transitions(self, file: Any, *, allow_pickle: bool = False) -> None:
        """Add the transitions of a file written by ``save_transitions`` (this module's or cpprb's).

        cpprb's ``.npz`` format stores the transitions (``data``) and the episode-end cache (``cache``) as pickled
        Python objects, and unpickling a file runs whatever code it names. So this refuses such members with a
        ``ValueError`` unless the caller passes ``allow_pickle=True`` (which cpprb's own ``load_transitions`` always
        does): pass it only for files you wrote yourself or otherwise trust, never for a downloaded one.
        """
        name = str(getattr(file, "name", file))
        why = ("unpickling can run arbitrary code, so it is refused by default: pass allow_pickle=True only for a "
               "file you wrote or trust")
        refusal = (f"load_transitions: {name!r} stores %r as a pickled Python object (cpprb's .npz format keeps the "
                   f"transitions and the episode-end cache that way); {why}")
        try:
            data = np.load(file, allow_pickle=bool(allow_pickle))
        except ValueError as e:
            if allow_pickle or "allow_pickle" not in str(e):
                raise
            raise ValueError(f"load_transitions: {name!r} is a pickle, not an .npz file; {why}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"load_transitions: {name!r} is not an .npz file written by save_transitions")

        def member(key: str) -> Any:
            try:
                return data[key]
            except ValueError as e:
                if allow_pickle or "allow_pickle" not in str(e):
                    raise
                raise ValueError(refusal % key) from None

        with data:
            version = member("version")
            stored_nstep = bool(member("Nstep"))
            if stored_nstep != self.is_Nstep():
                raise ValueError("Stored data and Buffer mismatch for Nstep")
            if version != _FORMAT_VERSION:
                raise ValueError(f"Unknown Format Version: {version}")
            d = member("data")[np.newaxis][0]
            if member("safe"):
                self._add_raw(d)
                return
            cache = member("cache")[np.newaxis][0]
            next_of = member("next_of")[np.newaxis][0]
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
