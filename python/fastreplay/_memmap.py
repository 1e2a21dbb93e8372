"""Memory-mapped storage: a buffer's columns and slot bookkeeping kept in files under one directory.

Directory layout: ``manifest.json`` (format, version, class, capacity, fields, epoch base, seed, generator
stream), ``field-<i>.bin`` (capacity rows of field i, raw), ``seq.bin`` (capacity uint64 sequence numbers) and,
for prioritized buffers, ``priorities.npy`` (written by ``flush``).

Writes go straight to the mapped files, so they survive a crash of the process: reopening recovers the ring's
cursor from the sequence numbers. Rows caught mid-write by a crash are replaced by a copy of the newest whole
row (a warning says how many), so every stored row is still one real transition. ``flush()`` makes the data
durable on disk and records the generator position and priorities; without it, a reopened prioritized buffer
gives every stored transition priority 1.0 and sampling resumes from the last flushed generator position.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from ._persist import atomic_write, buffer_kind

FORMAT = "fastreplay-memmap"
VERSION = 1


@dataclass
class MemmapDir:
    directory: str
    existing: Optional[Dict[str, Any]]

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
        }

    def write_manifest(self, buf: Any) -> None:
        atomic_write(os.path.join(self.directory, "manifest.json"), json.dumps(self.manifest(buf), indent=1).encode())

    def attach(self, buf: Any) -> None:
        """After the core mapped the files: recover the ring (reopen) or record a new manifest."""
        if self.existing is None:
            self.write_manifest(buf)
            return
        torn = buf._reopen(int(self.existing["base"]))
        if torn:
            warnings.warn(f"memmap storage at {self.directory}: {torn} row(s) were being written when the process "
                          "stopped; they were replaced by copies of the newest whole row", RuntimeWarning, stacklevel=3)
        buf._stream = int(self.existing.get("stream", 0))
        if buf._prioritized:
            p = os.path.join(self.directory, "priorities.npy")
            prio = np.load(p) if os.path.exists(p) else None
            if prio is None or prio.shape != (len(buf),) or prio.dtype != np.float64:
                prio = np.ones(len(buf))
            buf._restore_priorities(prio, float(self.existing.get("max_all_time", 1.0)))

    def flush(self, buf: Any) -> None:
        buf._flush()
        if buf._prioritized:
            priorities = buf.priorities
            atomic_write(os.path.join(self.directory, "priorities.npy"), lambda f: np.save(f, priorities))
        self.write_manifest(buf)


def open_dir(where: str, path: Any, buf: Any, capacity: int, fields: Dict[str, Any]) -> MemmapDir:
    """Check (or create) the storage directory for a buffer of this class, capacity and fields."""
    if path is None:
        raise ValueError(f"{where}: storage='memmap' needs path=<directory>")
    directory = os.path.abspath(os.fspath(path))
    os.makedirs(directory, exist_ok=True)
    mpath = os.path.join(directory, "manifest.json")
    existing = None
    if os.path.exists(mpath):
        try:
            with open(mpath) as f:
                existing = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: {mpath} is unreadable ({e})") from None
        if not isinstance(existing, dict) or existing.get("format") != FORMAT or existing.get("version") != VERSION:
            raise ValueError(f"{where}: {directory} does not hold fastreplay memmap storage (version {VERSION})")
        want_cls = buffer_kind(buf._prioritized)
        have = [[k, list(shape), dt.str] for k, (shape, dt) in fields.items()]
        if existing.get("capacity") != capacity or existing.get("fields") != have or existing.get("class") != want_cls:
            raise ValueError(
                f"{where}: {directory} holds a {existing.get('class')} of capacity {existing.get('capacity')} with "
                f"fields {existing.get('fields')}; asked for a {want_cls} of capacity {capacity} with fields {have}"
            )
    return MemmapDir(directory, existing)
