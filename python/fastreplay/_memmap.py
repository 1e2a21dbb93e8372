"""Memory-mapped storage: a buffer's columns and slot bookkeeping kept in files under one directory.

Directory layout: ``manifest.json`` (format, version, class, capacity, fields, epoch base, seed, generator
stream), ``field-<i>.bin`` (capacity rows of field i, raw), ``seq.bin`` (capacity uint64 sequence numbers) and,
for prioritized buffers, ``priorities.npy`` (written by ``flush``).

Writes go straight to the mapped files, so they survive a crash of the process: reopening recovers the ring's
cursor from the sequence numbers. Rows caught mid-write by a crash are replaced by a copy of the newest whole
row (a warning says how many), so every stored row is still one real transition. ``flush()`` makes the data
durable on disk and records the generator position and priorities; without it, a reopened prioritized buffer
gives every stored transition priority 1.0 and sampling resumes from the last flushed generator position.

One buffer at a time: opening takes an exclusive advisory lock (``flock``) on the file ``lock`` in the directory
and holds it for the buffer's lifetime (until it is garbage collected); a second buffer, in this process or
another, gets a ``RuntimeError`` naming the directory and the holder's process id. The files are untrusted:
when a manifest exists, every field of it is type-checked and every column file must exist at exactly its size
(a missing or truncated file is an error, never zeros). A directory with data files but no manifest (for example
one whose manifest was deleted) is refused rather than reused, since its sequence numbers would hide new rows.
Memory-mapped buffers cannot be pickled (reopen the directory by path instead).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ._persist import MAX_COUNT, MAX_MANIFEST_BYTES, Manifest, atomic_write, buffer_kind, parse_manifest

FORMAT = "fastreplay-memmap"
VERSION = 1


LOCK_FILE = "lock"
_DATA_FILE = re.compile(r"(field-[0-9]+\.bin|seq\.bin|priorities\.npy)\Z")


class DirLock:
    """An exclusive flock on ``<directory>/lock``, held until :meth:`release` or garbage collection."""

    fd: Optional[int] = None

    def __init__(self, where: str, directory: str) -> None:
        path = os.path.join(directory, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeError(
                f"{where}: the memmap directory {directory} is in use: another buffer (process id {holder}) holds "
                f"its lock {path}. One buffer at a time may open a directory; delete the other buffer, or use "
                "another path") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    def __del__(self) -> None:
        self.release()


@dataclass
class MemmapDir:
    directory: str
    existing: Optional[Dict[str, Any]]
    lock: DirLock

    def manifest(self, buf: Any) -> Dict[str, Any]:
        st = buf._export_state()
        return {
            "format": FORMAT,
            "version": VERSION,
            "class": buffer_kind(buf._prioritized),
            "capacity": buf.capacity,
            "fields": [[k, list(shape), dt.str] for k, (shape, dt) in buf._fields.items()],
            "base": int(st["base"]),
            "seed": int(st["seed"]),
            "stream": int(st["stream"]),
            "max_all_time": float(st.get("max_all_time", 1.0)),
            "episodes": _structure(buf),
        }

    def write_manifest(self, buf: Any) -> None:
        atomic_write(os.path.join(self.directory, "manifest.json"), json.dumps(self.manifest(buf), indent=1).encode())

    def attach(self, buf: Any) -> None:
        """After the core mapped the files: recover the ring (reopen) or record a new manifest."""
        if self.existing is None:
            self.write_manifest(buf)
            return
        try:
            torn = buf._reopen(self.existing["base"])
        except ValueError as e:
            raise ValueError(f"{self.directory} holds damaged memmap storage: seq.bin: {e}") from None
        if torn:
            warnings.warn(f"memmap storage at {self.directory}: {torn} row(s) were being written when the process "
                          "stopped (or reserved and not yet written); they were replaced by copies of the newest "
                          "whole row", RuntimeWarning, stacklevel=3)
        buf._stream = self.existing["stream"]
        if buf._prioritized:
            p = os.path.join(self.directory, "priorities.npy")
            try:
                prio = np.load(p, allow_pickle=False) if os.path.exists(p) else None
            except (ValueError, OSError, EOFError) as e:
                raise ValueError(f"{self.directory} holds damaged memmap storage: priorities.npy is unreadable "
                                 f"({e}); remove it to reopen with every priority at 1.0") from None
            if prio is None or prio.shape != (len(buf),) or prio.dtype != np.float64:
                prio = np.ones(len(buf))
            buf._restore_priorities(prio, self.existing["max_all_time"])

    def flush(self, buf: Any) -> None:
        buf._flush()
        if buf._prioritized:
            priorities = buf.priorities
            atomic_write(os.path.join(self.directory, "priorities.npy"), lambda f: np.save(f, priorities))
        self.write_manifest(buf)


def _check_manifest(where: str, directory: str, existing: Dict[str, Any], capacity: int) -> Dict[str, Any]:
    """Type- and range-check the fields of an existing manifest that reopening uses."""
    m = Manifest(existing, lambda why: ValueError(f"{where}: {directory} holds damaged memmap storage: {why}"))
    base = m.int("base", 0, MAX_COUNT)
    if base % capacity:
        raise m.fail("base", f"a multiple of the capacity {capacity}", base)
    return dict(existing, base=base, seed=m.int("seed", 0, 2**63 - 1), stream=m.int("stream", 0, 2**64 - 1, 0),
                max_all_time=m.real("max_all_time", 1.0))


def _structure(buf: Any) -> Any:
    """The episode options that shape the files (None for a plain buffer); n_step and gamma may differ on reopen."""
    cfg = buf._episodes
    if cfg is None:
        return None
    return {k: v for k, v in cfg.manifest().items() if k not in ("n_step", "gamma")}


def _row_bytes(spec: Any) -> int:
    shape, dt = spec
    return int(np.prod(shape, dtype=object)) * np.dtype(dt).itemsize


def _check_files(where: str, directory: str, capacity: int, buf: Any) -> None:
    """Every block file (one per stored column, then the episode index's: starts and finals) and seq.bin exists
    at exactly its size: a missing or truncated one is an error, since mapping it would silently recreate it as
    zeros."""
    rows = [_row_bytes(spec) for spec in buf._stored.values()]
    cfg = buf._episodes
    if cfg is not None:
        rows.append(8)
        if cfg.dedup:
            rows += [_row_bytes(buf._stored[name]) for name in cfg.obs]
    want = [(f"field-{i}.bin", capacity * r) for i, r in enumerate(rows)] + [("seq.bin", capacity * 8)]
    for name, nbytes in want:
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ValueError(f"{where}: {directory} holds damaged memmap storage: {name} is missing "
                             f"(expected {nbytes} bytes)") from None
        if not os.path.isfile(path) or st.st_size != nbytes:
            what = "is not a regular file" if not os.path.isfile(path) else f"has {st.st_size} bytes"
            raise ValueError(f"{where}: {directory} holds damaged memmap storage: {name} {what}, expected "
                             f"{nbytes} bytes")


def open_dir(where: str, path: Any, buf: Any, capacity: int, fields: Dict[str, Any]) -> MemmapDir:
    """Lock, then check (or create) the storage directory for a buffer of this class, capacity and fields."""
    if path is None:
        raise ValueError(f"{where}: storage='memmap' needs path=<directory>")
    directory = os.path.abspath(os.fspath(path))
    os.makedirs(directory, exist_ok=True)
    lock = DirLock(where, directory)
    try:
        return MemmapDir(directory, _open_locked(where, directory, buf, capacity, fields), lock)
    except BaseException:
        lock.release()
        raise


def _read_manifest(where: str, path: str) -> Dict[str, Any]:
    """A manifest file, its size and nesting bounded before it is parsed (ValueError naming it otherwise)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{where}: {path} is unreadable ({e})") from None
    return parse_manifest(data, lambda why: ValueError(f"{where}: {path} is not a valid manifest: {why}"))


def _open_locked(where: str, directory: str, buf: Any, capacity: int, fields: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    mpath = os.path.join(directory, "manifest.json")
    if not os.path.exists(mpath):
        leftovers = sorted(n for n in os.listdir(directory) if _DATA_FILE.match(n))
        if leftovers:
            raise ValueError(
                f"{where}: {directory} has no manifest.json but holds data files ({', '.join(leftovers)}), perhaps of "
                "another buffer whose manifest was removed; reusing them would serve their old rows and drop new "
                "ones. Remove them (or the whole directory) to start afresh, or use another path")
        return None
    existing = _read_manifest(where, mpath)
    if existing.get("format") != FORMAT or existing.get("version") != VERSION:
        raise ValueError(f"{where}: {directory} does not hold fastreplay memmap storage (version {VERSION})")
    want_cls = buffer_kind(buf._prioritized)
    have = [[k, list(shape), dt.str] for k, (shape, dt) in fields.items()]
    if existing.get("capacity") != capacity or existing.get("fields") != have or existing.get("class") != want_cls:
        raise ValueError(
            f"{where}: {directory} holds a {existing.get('class')} of capacity {existing.get('capacity')} with "
            f"fields {existing.get('fields')}; asked for a {want_cls} of capacity {capacity} with fields {have}"
        )
    if existing.get("episodes") != _structure(buf):
        raise ValueError(f"{where}: {directory} holds a buffer with episode options {existing.get('episodes')}; "
                         f"asked for {_structure(buf)}")
    existing = _check_manifest(where, directory, existing, capacity)
    _check_files(where, directory, capacity, buf)
    return existing


TASKS_FORMAT = "fastreplay-memmap-tasks"


class TaskMemmap:
    """Memory-mapped storage of a multi-task buffer: ``<path>/task-<t>/`` is each task's own memmap directory (its
    manifest, files and lock, as for one buffer), and ``<path>/tasks.json`` records the quotas, task_weights and the
    seed and stream of the generator that splits batches among tasks."""

    def __init__(self, directory: str, parts: List[MemmapDir], existing: Optional[Dict[str, Any]]) -> None:
        self.directory, self.parts, self.existing = directory, parts, existing

    def _record(self, buf: Any) -> None:
        data = {"format": TASKS_FORMAT, "version": VERSION, "quotas": buf.task_capacity,
                "task_weights": buf._task_weights, "seed": int(buf.seed), "stream": int(buf._task_stream)}
        atomic_write(os.path.join(self.directory, "tasks.json"), json.dumps(data, indent=1).encode())

    def attach(self, buf: Any, parts: List[Any]) -> None:
        for d, part in zip(self.parts, parts):
            d.attach(part)
        if self.existing is not None:
            buf._task_stream = self.existing["stream"]
        self._record(buf)

    def write_manifest(self, buf: Any, parts: List[Any]) -> None:
        for d, part in zip(self.parts, parts):
            d.write_manifest(part)
        self._record(buf)

    def flush(self, buf: Any, parts: List[Any]) -> None:
        for d, part in zip(self.parts, parts):
            d.flush(part)
        self._record(buf)


def open_tasks(where: str, path: Any, buf: Any, quotas: List[int], task_weights: str,
               fields: Dict[str, Any]) -> TaskMemmap:
    """Lock and check (or create) every task's directory under ``path``, and check ``tasks.json`` against the
    quotas asked for."""
    if path is None:
        raise ValueError(f"{where}: storage='memmap' needs path=<directory>")
    directory = os.path.abspath(os.fspath(path))
    os.makedirs(directory, exist_ok=True)
    existing = None
    tpath = os.path.join(directory, "tasks.json")
    if os.path.exists(tpath):
        raw = _read_manifest(where, tpath)
        m = Manifest(raw, lambda why: ValueError(f"{where}: {directory} holds damaged memmap storage: {why}"))
        if raw.get("format") != TASKS_FORMAT or raw.get("version") != VERSION:
            raise ValueError(f"{where}: {directory} does not hold fastreplay multi-task memmap storage")
        if raw.get("quotas") != list(quotas) or raw.get("task_weights") != task_weights:
            raise ValueError(f"{where}: {directory} holds tasks with quotas {raw.get('quotas')} and task_weights "
                             f"{raw.get('task_weights')!r}; asked for {list(quotas)} and {task_weights!r}")
        existing = {"seed": m.int("seed", 0, 2**63 - 1), "stream": m.int("stream", 0, 2**64 - 1)}
    elif any(n.startswith("task-") for n in os.listdir(directory)):
        raise ValueError(f"{where}: {directory} has task directories but no tasks.json; remove them to start "
                         "afresh, or use another path")
    parts: List[MemmapDir] = []
    try:
        for t, q in enumerate(quotas):
            parts.append(open_dir(where, os.path.join(directory, f"task-{t}"), buf, q, fields))
    except BaseException:
        for d in parts:
            d.lock.release()
        raise
    if existing is None and any(d.existing is not None for d in parts):
        raise ValueError(f"{where}: {directory} has task directories but no tasks.json")
    return TaskMemmap(directory, parts, existing)
