"""Persistence helpers shared by checkpoints, memory-mapped storage and the trainer.

:func:`atomic_write` (and :func:`atomic_open`) is the one way this package replaces a file: write a temporary
file in the same directory, fsync it, rename it over the target, fsync the directory. A crash at any moment leaves
the old file or the new one, never a torn one, and once it returns the new file survives power loss.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, BinaryIO, Callable, Iterator, Union

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
