"""Persistence helpers shared by checkpoints, memory-mapped storage and the trainer.

:func:`atomic_write` (and :func:`atomic_open`) is the one way this package replaces a file: write a temporary
file in the same directory, fsync it, rename it over the target, fsync the directory. A crash at any moment leaves
the old file or the new one, never a torn one, and once it returns the new file survives power loss.

Files are untrusted data: :func:`parse_manifest` bounds a manifest's size and nesting before parsing it, and
:class:`Manifest` reads each field with its type and range checked, so a malformed manifest gives a ``ValueError``
that names the field, never a ``KeyError``, ``TypeError`` or ``RecursionError``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from typing import Any, BinaryIO, Callable, Dict, Iterator, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(directory: str) -> None:
    """Make a rename or file creation inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` is replaced atomically and durably on success;
    on any exception the temporary file is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write(path: PathLike, data: Union[bytes, Callable[[BinaryIO], Any]]) -> None:
    """Replace ``path`` atomically and durably with ``data``: bytes, or a function that writes to a binary file."""
    with atomic_open(path) as f:
        if callable(data):
            data(f)
        else:
            f.write(data)


def buffer_kind(prioritized: bool) -> str:
    """The kind of buffer a checkpoint or memmap manifest records: the public class a buffer is an instance of
    (a subclass records its base class, so it reopens and reloads like one)."""
    return "PrioritizedReplayBuffer" if prioritized else "ReplayBuffer"


#: A manifest is a few hundred bytes; a longer or deeper one is not ours (and could make parsing costly).
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 16
#: Tickets and sequence numbers stay below 2**62 (ring.h, kMaxTicket); capacities too.
MAX_COUNT = 1 << 62
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings skipped), without parsing it. O(len)"""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_manifest(data: bytes, bad: Callable[[str], Exception]) -> Dict[str, Any]:
    """A manifest's JSON object; ``bad(why)`` builds the error raised for anything else."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise bad(f"its manifest has {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"its manifest is not UTF-8 text ({e})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise bad(f"its manifest nests {depth} levels deep, more than the {MAX_JSON_DEPTH} a manifest may")
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise bad(f"its manifest is unreadable ({e})") from None
    if not isinstance(manifest, dict):
        raise bad(f"its manifest is a JSON {type(manifest).__name__}, expected an object")
    return manifest


class Manifest:
    """Typed, range-checked reads of a parsed manifest (or of one of its objects, ``prefix`` naming it)."""

    _MISSING = object()

    def __init__(self, data: Dict[str, Any], bad: Callable[[str], Exception], prefix: str = "") -> None:
        self.data, self.bad, self.prefix = data, bad, prefix

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is not Manifest._MISSING:
            return default
        raise self.bad(f"its manifest has no field {self.prefix + key!r}")

    def fail(self, key: str, expected: str, value: Any) -> Exception:
        return self.bad(f"manifest field {self.prefix + key!r} must be {expected}, got {_short(value)}")

    def int(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(key, f"an integer in [{lo}, {hi}]", v)
        return v

    def real(self, key: str, default: Any = _MISSING) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise self.fail(key, "a finite number >= 0", v)
        return float(v)

    def choice(self, key: str, options: Sequence[str]) -> str:
        v = self.raw(key)
        if not isinstance(v, str) or v not in options:
            raise self.fail(key, " or ".join(repr(o) for o in options), v)
        return v

    def object(self, key: str) -> "Manifest":
        v = self.raw(key)
        if not isinstance(v, dict):
            raise self.fail(key, "an object", v)
        return Manifest(v, self.bad, f"{self.prefix}{key}.")
