"""Checkpoints: the whole state of a buffer in one versioned file, written atomically.

Format (version 1): an uncompressed ZIP archive (ZIP64 for large buffers) holding

- ``manifest.json``: ``{"format": "fastreplay-checkpoint", "version": 1, "class": "ReplayBuffer" |
  "PrioritizedReplayBuffer", "capacity", "size", "fields": {name: [shape, dtype.str]}, "state": {"cursor",
  "base", "stream", "seed"}, and for prioritized buffers "alpha", "eps", "max_priority", "stale",
  "max_all_time"}``;
- ``fields/<name>.npy``: the first ``size`` rows of each field, in slot order (numpy's .npy format);
- ``seq.npy``: uint64[capacity], each slot's sequence number (its generation times two);
- ``priorities.npy``: float64[size], prioritized buffers only.

Every member carries a CRC-32 that is verified on load, so a truncated, corrupted or foreign file gives a clear
``ValueError``. ``save`` writes to a temporary file next to the target, fsyncs it, renames it over the target and
fsyncs the directory: a crash or kill at any moment leaves the old checkpoint or the new one, never a broken one.
Columns are streamed from the buffer's memory in chunks, so saving never needs a second copy of the buffer.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, BinaryIO, Dict, Optional, Union

import numpy as np

from ._persist import atomic_open, buffer_kind

FORMAT = "fastreplay-checkpoint"
VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]


_CHUNK = 64 << 20  # bytes per write: large enough to stream at disk speed, small enough to never double memory


def _write_npy(z: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """A .npy member written straight from the array's memory in chunks (no temporary copies)."""
    array = np.ascontiguousarray(array)
    with z.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(fh, np.lib.format.header_data_from_array_1_0(array))
        flat = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        for start in range(0, len(flat), _CHUNK):
            fh.write(flat[start:start + _CHUNK])


def _read_npy_into(fh: Any, out: np.ndarray, where: str, name: str) -> None:
    """Read a .npy member whose header must describe exactly `out`'s shape and dtype, into `out`'s memory."""
    version = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(fh)
    if tuple(shape) != out.shape or np.dtype(dtype) != out.dtype or fortran:
        raise _bad(where, f"member {name} holds {np.dtype(dtype)}{list(shape)}, expected {out.dtype}{list(out.shape)}")
    flat = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(bytearray())
    pos = 0
    while pos < len(flat):
        got = fh.readinto(flat[pos:pos + _CHUNK])
        if not got:
            raise _bad(where, f"member {name} is truncated")
        pos += got
    if fh.read(1):
        raise _bad(where, f"member {name} has trailing data")


def write(buf: Any, f: BinaryIO) -> None:
    """Write a checkpoint of ``buf`` to the binary file object ``f``."""
    state = buf._export_state()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "class": buffer_kind(buf._prioritized),
        "capacity": buf.capacity,
        "size": len(buf),
        "fields": {k: [list(shape), dt.str] for k, (shape, dt) in buf._fields.items()},
        "state": {k: int(state[k]) for k in ("cursor", "base", "stream", "seed")},
    }
    if buf._prioritized:
        manifest.update(alpha=buf.alpha, eps=buf.eps, max_priority=buf._max_mode,
                        stale="raise" if buf._raise_stale else "skip", max_all_time=state["max_all_time"])
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for i, name in enumerate(buf._fields):
            _write_npy(z, f"fields/{name}.npy", buf._storage_view(i))
        _write_npy(z, "seq.npy", state["seq"])
        if buf._prioritized:
            _write_npy(z, "priorities.npy", state["priorities"])


def save(buf: Any, path: PathLike) -> None:
    """Atomically write a checkpoint of ``buf`` to ``path`` (see the module docstring)."""
    with atomic_open(path) as f:
        write(buf, f)


def _bad(where: str, why: str) -> ValueError:
    return ValueError(f"load: {where} is not a valid fastreplay checkpoint: {why}")


def read(f: Union[BinaryIO, PathLike], where: str, classes: Dict[str, type], expect_class: Optional[type] = None) -> Any:
    """Rebuild a buffer from a checkpoint (a path or a binary file object). ``classes`` maps the kinds a manifest
    may record (:func:`fastreplay._persist.buffer_kind`) to the classes that rebuild them."""
    try:
        z = zipfile.ZipFile(f, "r")
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _bad(where, f"{type(e).__name__}: {e}") from None
    with z:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except KeyError:
            raise _bad(where, "it has no manifest.json") from None
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise _bad(where, f"its manifest is unreadable ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _bad(where, "its manifest does not name the fastreplay-checkpoint format")
        if manifest.get("version") != VERSION:
            raise ValueError(f"load: {where} has checkpoint format version {manifest.get('version')!r}; "
                             f"this fastreplay reads version {VERSION}")
        try:
            cls_name = manifest["class"]
            fields = {k: (tuple(shape), np.dtype(dt)) for k, (shape, dt) in manifest["fields"].items()}
            capacity, size, st = int(manifest["capacity"]), int(manifest["size"]), manifest["state"]
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(where, f"its manifest is incomplete ({e!r})") from None
        cls = classes.get(cls_name)
        if cls is None:
            raise _bad(where, f"unknown buffer class {cls_name!r}")
        if expect_class is not None and not issubclass(cls, expect_class):
            raise TypeError(f"load: {where} holds a {cls_name}, not a {expect_class.__name__}")
        if cls_name == buffer_kind(True):
            buf = cls(capacity, fields, alpha=manifest["alpha"], eps=manifest["eps"], seed=st["seed"],
                      max_priority=manifest["max_priority"], stale=manifest["stale"])
        else:
            buf = cls(capacity, fields, seed=st["seed"])

        def member(name: str) -> np.ndarray:
            try:
                with z.open(name) as fh:
                    return np.lib.format.read_array(fh, allow_pickle=False)
            except KeyError:
                raise _bad(where, f"member {name} is missing") from None
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:  # CRC mismatch, truncation
                raise _bad(where, f"member {name} is corrupted ({e})") from None

        if not 0 <= size <= capacity:
            raise _bad(where, f"size {size} does not fit capacity {capacity}")
        try:
            for i, name in enumerate(fields):  # straight into the buffer's memory: no second copy
                member_name = f"fields/{name}.npy"
                try:
                    with z.open(member_name) as fh:
                        _read_npy_into(fh, buf._raw_view(i, size), where, member_name)
                except KeyError:
                    raise _bad(where, f"member {member_name} is missing") from None
                except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC mismatch, truncation
                    raise _bad(where, f"member {member_name} is corrupted ({e})") from None
            prio = member("priorities.npy") if buf._prioritized else None
            buf._restore_state(st["cursor"], st["base"], st["stream"], member("seq.npy"), prio,
                               float(manifest.get("max_all_time", 1.0)))
        except (TypeError, KeyError) as e:
            raise _bad(where, f"inconsistent contents ({e})") from None
        if len(buf) != size:
            raise _bad(where, f"manifest says {size} transitions, state gives {len(buf)}")
        return buf


def load(path: PathLike, classes: Dict[str, type], expect_class: Optional[type] = None) -> Any:
    path = os.fspath(path)
    return read(path, repr(path), classes, expect_class)


def to_bytes(buf: Any) -> bytes:
    bio = io.BytesIO()
    write(buf, bio)
    return bio.getvalue()


def from_bytes(data: bytes, classes: Dict[str, type]) -> Any:
    return read(io.BytesIO(data), "pickled data", classes)
