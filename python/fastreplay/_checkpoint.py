"""Checkpoints: the whole state of a buffer in one versioned file, written atomically.

Format (version 1): an uncompressed ZIP archive (ZIP64 for large buffers) holding

- ``manifest.json``: ``{"format": "fastreplay-checkpoint", "version": 1, "class": "ReplayBuffer" |
  "PrioritizedReplayBuffer", "capacity", "size", "fields": {name: [shape, dtype.str]}, "layout" ("auto" or
  "columnar", optional: the storage layout to rebuild with), "state": {"cursor",
  "base", "stream", "seed"}, and for prioritized buffers "alpha", "eps", "max_priority", "stale",
  "max_all_time"}``;
- ``fields/<name>.npy``: the first ``size`` rows of each field, in slot order (numpy's .npy format);
- ``seq.npy``: uint64[capacity], each slot's sequence number (its generation times two);
- ``priorities.npy``: float64[size], prioritized buffers only.

Every member carries a CRC-32 that is verified on load, so a truncated, corrupted or foreign file gives a clear
``ValueError``. A checkpoint is untrusted data: before anything is allocated, the manifest's size and nesting are
bounded, every manifest field is type- and range-checked, and every member must be stored uncompressed, lie inside
the file and have exactly the size the manifest implies (``seq.npy`` holds ``capacity`` numbers, so a small file
cannot claim a large buffer). Nothing is ever unpickled. ``seq.npy`` is read straight into the new ring. ``save`` writes to a temporary file next to the target, fsyncs it, renames it over the target and
fsyncs the directory: a crash or kill at any moment leaves the old checkpoint or the new one, never a broken one.
``save`` raises ``RuntimeError`` and leaves the old file in place if an ``add`` ran while it was writing.
Columns are streamed from the buffer's memory in chunks, so saving never needs a second copy of the buffer.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, BinaryIO, Dict, List, Optional, Union

import numpy as np

from . import _episodes
from ._persist import MAX_COUNT, Manifest, _short, atomic_open, buffer_kind, parse_manifest

FORMAT = "fastreplay-checkpoint"
VERSION = 1
#: Episodic buffers (docs/episodes.md) are written as version 2: the manifest adds "episodes" (the options) and
#: the archive ``episodes/start.npy`` (uint64[size], each slot's episode start ticket, 2**64-1 for a reset row) and,
#: with next-observation dedup, ``episodes/finals/<obs field>.npy``: the final observations of the stored episode
#: ends, in slot order (the ends follow from start, done and truncated, so their number is checked exactly).
EPISODIC_VERSION = 2
#: Multi-task buffers (docs/tasks.md) are written as version 3: the manifest's "size", "state" and "max_all_time"
#: move into "parts" (one per task, in task order) beside "tasks" (quotas, task_weights, and the seed and stream of
#: the generator that splits batches among tasks), and each task's members are those of one buffer under
#: ``tasks/<t>/``.
TASKS_VERSION = 3
PathLike = Union[str, "os.PathLike[str]"]


_CHUNK = 64 << 20  # bytes per write: large enough to stream at disk speed, small enough to never double memory


def _write_npy(z: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """A .npy member written straight from the array's memory in chunks (no temporary copies); a strided field of
    packed records (docs/storage.md) goes through one bounded chunk of whole rows at a time."""
    with z.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(fh, np.lib.format.header_data_from_array_1_0(array))
        if array.flags.c_contiguous:
            flat = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
            for start in range(0, len(flat), _CHUNK):
                fh.write(flat[start:start + _CHUNK])
            return
        step = max(1, _CHUNK // max(array[0].nbytes if len(array) else 1, 1))
        for lo in range(0, len(array), step):
            fh.write(memoryview(np.ascontiguousarray(array[lo:lo + step]).reshape(-1).view(np.uint8)))


def _read_exactly(fh: Any, flat: memoryview, where: str, name: str) -> None:
    """Fill ``flat`` from ``fh`` in chunks; ValueError if the member ends first."""
    pos = 0
    while pos < len(flat):
        got = fh.readinto(flat[pos:pos + _CHUNK])
        if not got:
            raise _bad(where, f"member {name} is truncated")
        pos += got


def _read_npy_into(fh: Any, out: np.ndarray, where: str, name: str) -> None:
    """Read a .npy member whose header must describe exactly `out`'s shape and dtype, into `out`'s memory."""
    try:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
    except (ValueError, TypeError, SyntaxError) as e:
        raise _bad(where, f"member {name} has no valid .npy header ({e})") from None
    if fortran and len(shape) > 1:
        raise _bad(where, f"member {name} is stored in Fortran order; checkpoints hold C-order arrays")
    if tuple(shape) != out.shape or np.dtype(dtype) != out.dtype:
        raise _bad(where, f"member {name} holds {np.dtype(dtype)}{list(shape)}, expected {out.dtype}{list(out.shape)}")
    if out.flags.c_contiguous:
        _read_exactly(fh, memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(bytearray()),
                      where, name)
    else:  # a field of packed records (strided rows): whole rows through a bounded contiguous chunk
        row_bytes = max(out[0].nbytes if len(out) else 1, 1)
        step = max(1, _CHUNK // row_bytes)
        chunk = np.empty((min(step, len(out)),) + out.shape[1:], out.dtype)
        for lo in range(0, len(out), step):
            part = chunk[:min(step, len(out) - lo)]
            _read_exactly(fh, memoryview(part.reshape(-1).view(np.uint8)), where, name)
            out[lo:lo + len(part)] = part
    if fh.read(1):
        raise _bad(where, f"member {name} has trailing data")


def write(buf: Any, f: BinaryIO, where: str = "save") -> None:
    """Write a checkpoint of ``buf`` to the binary file object ``f``.

    The ring's state is read once and exactly the rows it describes are written. An ``add`` running during the
    write would make the members disagree, so the ring's write counters are compared before and after and
    ``RuntimeError`` is raised (``save`` then leaves the old file in place). A multi-task buffer is written as
    version 3: each task's ring as its own part (``tasks/<t>/...`` members, ``parts`` in the manifest)."""
    quotas = buf._task_quotas
    parts = [buf] if quotas is None else [buf._task_view(t) for t in range(len(quotas))]
    before = [p._writes() for p in parts]
    if not all(quiet for _, quiet in before):
        raise _concurrent(where)
    states = [p._export_state() for p in parts]
    sizes = [min(int(st["cursor"]) - int(st["base"]), p.capacity) for p, st in zip(parts, states)]
    cfg = buf._episodes
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION if cfg is None else EPISODIC_VERSION,
        "class": buffer_kind(buf._prioritized),
        "capacity": buf.capacity,
        "fields": {k: [list(shape), dt.str] for k, (shape, dt) in buf._fields.items()},
        "layout": buf._layout,
    }
    if cfg is not None:
        manifest["episodes"] = cfg.manifest()
    if buf._prioritized:
        manifest.update(alpha=buf.alpha, eps=buf.eps, max_priority=buf._max_mode,
                        stale="raise" if buf._raise_stale else "skip")
        if any(len(st["priorities"]) != n for st, n in zip(states, sizes)):
            raise _concurrent(where)

    def part_state(st: Dict[str, Any], n: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {"size": n, "state": {k: int(st[k]) for k in ("cursor", "base", "stream", "seed")}}
        if buf._prioritized:
            out["max_all_time"] = st["max_all_time"]
        return out

    if quotas is None:
        manifest.update(part_state(states[0], sizes[0]))
    else:
        manifest["version"] = TASKS_VERSION
        manifest["tasks"] = {"quotas": list(quotas), "task_weights": buf._task_weights, "seed": int(buf.seed),
                             "stream": int(buf._task_stream)}
        manifest["parts"] = [part_state(st, n) for st, n in zip(states, sizes)]
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for t, (part, st, size) in enumerate(zip(parts, states, sizes)):
            _write_part(z, "" if quotas is None else f"tasks/{t}/", part, buf._stored, cfg, st, size, where)
    if [p._writes() for p in parts] != [(begun, True) for begun, _ in before]:
        raise _concurrent(where)


def _write_part(z: zipfile.ZipFile, prefix: str, part: Any, stored: Any, cfg: Any, state: Dict[str, Any], size: int,
                where: str) -> None:
    """The members of one ring (a buffer, or one task of a multi-task buffer) under ``prefix``."""
    for i, name in enumerate(stored):
        view = part._storage_view(i)
        if len(view) < size:
            raise _concurrent(where)
        _write_npy(z, f"{prefix}fields/{name}.npy", view[:size])
    if cfg is not None:
        start = part._episode_view(-1)[:size]
        _write_npy(z, f"{prefix}episodes/start.npy", start)
        if cfg.dedup:
            ends = _end_slots(part, stored, start, size)
            for j, name in enumerate(cfg.obs):
                _write_npy(z, f"{prefix}episodes/finals/{name}.npy", part._episode_view(j)[ends])
    _write_npy(z, f"{prefix}seq.npy", state["seq"])
    if "priorities" in state and state["priorities"] is not None:
        _write_npy(z, f"{prefix}priorities.npy", state["priorities"])


def _end_slots(buf: Any, stored: Any, start: np.ndarray, size: int) -> np.ndarray:
    """The stored slots that end an episode (a step, terminated or truncated): those with a final observation."""
    cols = list(stored)
    end = np.asarray(buf._raw_view(cols.index("done"), size), bool).copy()
    if "truncated" in stored:
        end |= np.asarray(buf._raw_view(cols.index("truncated"), size), bool)
    return np.flatnonzero(end & (start != np.uint64(2**64 - 1)))


def _concurrent(where: str) -> RuntimeError:
    return RuntimeError(f"{where}: transitions were added while the checkpoint was being written; {where} must not "
                        "run concurrently with add, and nothing was written")


def save(buf: Any, path: PathLike) -> None:
    """Atomically write a checkpoint of ``buf`` to ``path`` (see the module docstring); on any error, including
    a concurrent ``add``, ``path`` is left as it was."""
    with atomic_open(path) as f:
        write(buf, f)


def _bad(where: str, why: str) -> ValueError:
    return ValueError(f"load: {where} is not a valid fastreplay checkpoint: {why}")


#: Bytes a .npy header may take (numpy writes 64 to a few hundred; read_array_header caps it at 10000 too).
_MAX_NPY_HEADER = 1 << 16


def _archive_length(f: Union[BinaryIO, PathLike]) -> int:
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.path.getsize(f)
    pos = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(pos)
    return end


def _check_member(z: zipfile.ZipFile, name: str, nbytes: int, length: int, where: str) -> None:
    """Member `name` exists, is stored uncompressed inside the archive, and holds a .npy header plus `nbytes`."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise _bad(where, f"member {name} is missing") from None
    extra = info.file_size - nbytes
    if info.compress_size != info.file_size or info.header_offset + info.compress_size > length:
        raise _bad(where, f"member {name} claims {info.file_size} bytes, more than the file holds")
    if not 10 <= extra <= _MAX_NPY_HEADER:
        raise _bad(where, f"member {name} has {info.file_size} bytes; the manifest implies {nbytes} bytes of data "
                          "plus a .npy header")


def _fields(m: Manifest) -> Dict[str, Any]:
    raw = m.raw("fields")
    if not isinstance(raw, dict) or not raw:
        raise m.fail("fields", "a non-empty object {name: [shape, dtype]}", raw)
    fields = {}
    for name, spec in raw.items():
        ok = isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], list) and isinstance(spec[1], str)
        if ok and all(not isinstance(d, bool) and isinstance(d, int) and 0 <= d <= MAX_COUNT for d in spec[0]):
            try:
                fields[name] = (tuple(spec[0]), np.dtype(spec[1]))
                continue
            except (TypeError, ValueError):
                pass
        raise m.fail(f"fields.{name}", "[shape (a list of ints >= 0), dtype string]", spec)
    return fields


def read(f: Union[BinaryIO, PathLike], where: str, classes: Dict[str, type], expect_class: Optional[type] = None) -> Any:
    """Rebuild a buffer from a checkpoint (a path or a binary file object). ``classes`` maps the kinds a manifest
    may record (:func:`fastreplay._persist.buffer_kind`) to the classes that rebuild them; ``expect_class``, if
    given, must be that class or a superclass, or a subclass of it (then the buffer is an ``expect_class``)."""
    try:
        length = _archive_length(f)
        z = zipfile.ZipFile(f, "r")
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _bad(where, f"{type(e).__name__}: {e}") from None
    with z:
        for info in z.infolist():  # only stored members are ever read: no decompression bombs
            if info.compress_type != zipfile.ZIP_STORED:
                raise _bad(where, f"member {info.filename} is compressed (method {info.compress_type}); "
                                  "checkpoints are stored uncompressed")
        try:
            info = z.getinfo("manifest.json")
        except KeyError:
            raise _bad(where, "it has no manifest.json") from None
        if info.file_size > 1 << 20 or info.header_offset + info.compress_size > length:
            raise _bad(where, f"its manifest.json claims {info.file_size} bytes")
        try:
            data = z.read("manifest.json")
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError) as e:
            raise _bad(where, f"its manifest is unreadable ({e})") from None
        manifest = parse_manifest(data, lambda why: _bad(where, why))
        if manifest.get("format") != FORMAT:
            raise _bad(where, "its manifest does not name the fastreplay-checkpoint format")
        version = manifest.get("version")
        if version not in (VERSION, EPISODIC_VERSION, TASKS_VERSION):
            raise ValueError(f"load: {where} has checkpoint format version {_short(version)}; "
                             f"this fastreplay reads versions {VERSION} to {TASKS_VERSION}")
        m = Manifest(manifest, lambda why: _bad(where, why))
        cls_name = m.choice("class", sorted(classes))
        base_cls = classes[cls_name]
        cls = base_cls
        if expect_class is not None:
            same_kind = getattr(expect_class, "_prioritized", None) == getattr(base_cls, "_prioritized", None)
            if issubclass(expect_class, base_cls) and same_kind:
                cls = expect_class  # a subclass's own file (the manifest records its base kind)
            elif not issubclass(base_cls, expect_class):
                raise TypeError(f"load: {where} holds a {cls_name}, not a {expect_class.__name__}")
        capacity = m.int("capacity", 1, MAX_COUNT)
        fields = _fields(m)
        # the storage layout (a speed choice, not the data's format); checkpoints written before it existed: "auto"
        layout = m.choice("layout", ("auto", "columnar")) if "layout" in manifest else "auto"
        prioritized = cls_name == buffer_kind(True)
        if prioritized:
            kwargs = dict(alpha=m.real("alpha"), eps=m.real("eps"), max_priority=m.choice("max_priority",
                          ("all_time", "stored")), stale=m.choice("stale", ("skip", "raise")))
        else:
            kwargs = {}
        cfg = None
        if version == EPISODIC_VERSION or (version == TASKS_VERSION and "episodes" in manifest):
            e = m.object("episodes")
            options = {k: e.raw(k) for k in _episodes.OPTIONS}
            try:  # the same checks as the constructor's, before anything is allocated
                cfg = _episodes.config(fields, capacity, "load", options)
            except (TypeError, ValueError) as err:
                raise _bad(where, f"its episode options are invalid ({err})") from None
            kwargs.update(options)
        stored = _episodes.stored_fields(fields, cfg)
        quotas: Optional[List[int]] = None
        if version == TASKS_VERSION:  # one part per task
            tm = m.object("tasks")
            quotas = _int_list(tm.raw("quotas"), 1, capacity, lambda why: _bad(where, f"tasks.quotas {why}"))
            if sum(quotas) != capacity:
                raise _bad(where, f"its task quotas add up to {sum(quotas)}, not the capacity {capacity}")
            kwargs.update(tasks=len(quotas), task_capacity=quotas)
            weights = tm.choice("task_weights", ("global", "task"))
            if prioritized:
                kwargs["task_weights"] = weights
            seed, task_stream = tm.int("seed", 0, 2**63 - 1), tm.int("stream", 0, 2**64 - 1)
            raw_parts = m.raw("parts")
            if not isinstance(raw_parts, list) or len(raw_parts) != len(quotas) or not all(
                    isinstance(x, dict) for x in raw_parts):
                raise _bad(where, f"its manifest needs one part (an object) per task, {len(quotas)} in all")
            parts = [Manifest(x, lambda why: _bad(where, why), f"parts[{t}].") for t, x in enumerate(raw_parts)]
            caps = quotas
        else:
            parts, caps = [m], [capacity]
        infos = []  # (prefix, size, cursor, base, stream, max_all_time) of each part
        for t, (pm, cap) in enumerate(zip(parts, caps)):
            size = pm.int("size", 0, cap)
            st = pm.object("state")
            cursor = st.int("cursor", 0, MAX_COUNT)
            base = st.int("base", 0, cursor)
            stream, part_seed = st.int("stream", 0, 2**64 - 1), st.int("seed", 0, 2**63 - 1)
            if quotas is None:
                seed = part_seed
            infos.append(("" if quotas is None else f"tasks/{t}/", size, cursor, base, stream,
                          pm.real("max_all_time", 1.0) if prioritized else 1.0))

        # Every member's size follows from the manifest; check them all before allocating anything.
        for prefix, size, _, _, _, _ in infos:
            if cfg is not None:
                _check_member(z, f"{prefix}episodes/start.npy", size * 8, length, where)
            for name, (shape, dt) in stored.items():
                _check_member(z, f"{prefix}fields/{name}.npy",
                              size * int(np.prod(shape, dtype=object)) * dt.itemsize, length, where)
        for (prefix, size, _, _, _, _), cap in zip(infos, caps):
            _check_member(z, f"{prefix}seq.npy", cap * 8, length, where)
            if prioritized:
                _check_member(z, f"{prefix}priorities.npy", size * 8, length, where)

        buf = cls.__new__(cls)  # a subclass is rebuilt without its __init__, as pickle rebuilds any object
        try:
            base_cls.__init__(buf, capacity, fields, seed=seed, layout=layout, **kwargs)
        except (TypeError, ValueError, OverflowError) as e:
            raise _bad(where, f"its manifest describes no valid buffer ({e})") from None

        def read_into(name: str, out: np.ndarray) -> None:
            try:
                with z.open(name) as fh:
                    _read_npy_into(fh, out, where, name)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:  # CRC mismatch, truncation
                raise _bad(where, f"member {name} is corrupted ({e})") from None

        for t, (prefix, size, cursor, base, stream, max_all_time) in enumerate(infos):
            part = buf if quotas is None else buf._task_view(t)
            for i, name in enumerate(stored):  # straight into the buffer's memory: no second copy
                read_into(f"{prefix}fields/{name}.npy", part._raw_view(i, size))
            if cfg is not None:
                start = part._episode_view(-1)
                read_into(f"{prefix}episodes/start.npy", start[:size])
                if cfg.dedup:
                    ends = _end_slots(part, stored, start[:size], size)
                    for j, name in enumerate(cfg.obs):
                        finals = part._episode_view(j)
                        member = f"{prefix}episodes/finals/{name}.npy"
                        _check_member(z, member, len(ends) * finals[0].nbytes, length, where)
                        rows = np.empty((len(ends),) + finals.shape[1:], finals.dtype)
                        read_into(member, rows)
                        finals[ends] = rows
            read_into(f"{prefix}seq.npy", part._seq_view())  # straight into the ring; _restore_state checks it
            prio = None
            if prioritized:
                prio = np.empty(size, np.float64)
                read_into(f"{prefix}priorities.npy", prio)
            try:
                part._restore_state(cursor, base, stream, None, prio, max_all_time)
            except (TypeError, ValueError, IndexError) as e:
                raise _bad(where, f"inconsistent contents ({e})") from None
            if len(part) != size:
                raise _bad(where, f"manifest says {size} transitions, state gives {len(part)}")
        if quotas is not None:
            buf._task_stream = task_stream
        return buf


def _int_list(value: Any, lo: int, hi: int, bad: Any) -> List[int]:
    """A non-empty JSON list of ints in [lo, hi] (bools refused), or the ValueError ``bad(why)``."""
    if not isinstance(value, list) or not value:
        raise bad(f"must be a non-empty list, got {_short(value)}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(f"must hold ints in [{lo}, {hi}], got {_short(v)}")
    return list(value)


def load(path: PathLike, classes: Dict[str, type], expect_class: Optional[type] = None) -> Any:
    path = os.fspath(path)
    return read(path, repr(path), classes, expect_class)


def to_bytes(buf: Any) -> bytes:
    bio = io.BytesIO()
    write(buf, bio, "pickle")
    return bio.getvalue()


def from_bytes(data: bytes, classes: Dict[str, type], cls: Optional[type] = None) -> Any:
    return read(io.BytesIO(data), "pickled data", classes, cls)
