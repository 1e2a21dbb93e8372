"""Samples-per-insert rate limiting (Reverb's ``RateLimiter`` semantics) for local buffers and Ray shards.

A :class:`RateLimiter` counts inserted rows and sampled rows and keeps ``error = inserts * spi - samples`` inside
``[min_diff, max_diff]`` by blocking whichever side runs ahead:

- an insert of n rows proceeds while ``inserts + n <= min_size_to_sample`` (filling up is always allowed), or when
  ``(inserts + n) * spi - samples <= max_diff``;
- a sample of n rows proceeds once ``inserts >= min_size_to_sample`` and ``inserts * spi - (samples + n) >= min_diff``.

So after every sample the error is at least ``min_diff`` and after every insert past the minimum at most
``max_diff``. Blocked calls wait in C++ with the GIL released (other Python threads run) and can be interrupted
with Ctrl-C. :class:`RateLimitedBuffer` applies a limiter to a local buffer (``add`` and ``sample`` from any
threads); ``fastreplay.ray`` applies one per shard.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import warnings
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core
from ._persist import fsync_dir

#: Name of the archive member that holds a limiter's state in a checkpoint (see :meth:`RateLimitedBuffer.save`).
CHECKPOINT_MEMBER = "rate_limiter.json"

_WOULD_BLOCK, _TIMED_OUT, _CANCELLED = 1, 2, 3


class RateLimitCancelled(RuntimeError):
    """Raised by a blocked (or later) call of a limiter whose :meth:`RateLimiter.cancel` was called."""


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{where}: {name} must be a finite real number, got {value!r}")
    return float(value)


def _count(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{where}: {name} must be an int >= 0, got {value!r}")
    return int(value)


def _timeout(block: bool, timeout: Optional[float], where: str) -> float:
    if not block:
        return 0.0
    if timeout is None:
        return -1.0
    t = _number(timeout, "timeout", where)
    if t < 0:
        raise ValueError(f"{where}: timeout must be >= 0 seconds or None, got {timeout!r}")
    return t


class RateLimiter(_core._RateLimiter):
    """Samples-per-insert rate limiter (Reverb's ``RateLimiter`` / ``SampleToInsertRatio``).

    Args:
        samples_per_insert: target number of sampled rows per inserted row (spi), > 0.
        min_size_to_sample: rows that must be inserted before any sample proceeds (>= 1).
        error_buffer: half-width of the band, centred on ``min_size_to_sample * spi`` as Reverb's
            ``SampleToInsertRatio`` does: ``min_diff = offset - error_buffer``, ``max_diff = offset + error_buffer``.
            Alternatively pass ``min_diff`` and ``max_diff`` (keyword-only) directly.

    Raises ``ValueError`` for configurations Reverb rejects: spi not > 0, ``min_size_to_sample < 1``, or a band
    ``max_diff - min_diff`` narrower than ``2 * max(1, spi)`` (a single-row insert and a single-row sample could
    both block: deadlock). Warns (``RuntimeWarning``) when ``max_diff < min_size_to_sample * spi``: inserts then
    block as soon as the minimum is reached, until something samples, so a program that inserts and samples from
    one thread deadlocks there. Calls larger than the band (a sample of more than ``max_diff - min_diff`` rows,
    an insert of more than ``(max_diff - min_diff) / spi`` rows past the minimum) raise ``ValueError``; for
    batched calls pick ``max_diff - min_diff >= B + n * spi`` (B rows per sample, n per insert), or both sides
    can block at once.

    ``insert(n)`` and ``sample(n)`` count n rows once they may proceed: they block (``block=True``; ``timeout``
    seconds at most, then ``TimeoutError``) or return ``False`` at once without counting (``block=False``).
    ``cancel()`` wakes every blocked call (``RateLimitCancelled``), e.g. at shutdown.
    """

    def __init__(self, samples_per_insert: float, min_size_to_sample: int, error_buffer: Optional[float] = None, *,
                 min_diff: Optional[float] = None, max_diff: Optional[float] = None) -> None:
        where = "RateLimiter"
        spi = _number(samples_per_insert, "samples_per_insert", where)
        if isinstance(min_size_to_sample, bool) or not isinstance(min_size_to_sample, numbers.Integral):
            raise ValueError(f"{where}: min_size_to_sample must be an int >= 1, got {min_size_to_sample!r}")
        min_size = int(min_size_to_sample)
        if (error_buffer is None) == (min_diff is None or max_diff is None) or (
                error_buffer is not None and (min_diff is not None or max_diff is not None)):
            raise ValueError(f"{where}: give either error_buffer or both min_diff and max_diff")
        if error_buffer is not None:
            eb = _number(error_buffer, "error_buffer", where)
            offset = spi * min_size
            lo, hi = offset - eb, offset + eb
        else:
            lo, hi = _number(min_diff, "min_diff", where), _number(max_diff, "max_diff", where)
        super().__init__(spi, min_size, lo, hi)  # the C++ core checks the configuration (ValueError)
        if hi < spi * min_size:
            warnings.warn(f"{where}: max_diff={hi} is below min_size_to_sample * samples_per_insert = {spi * min_size}: "
                          "inserts block once the minimum is reached until something samples, so inserting and "
                          "sampling from one thread deadlocks", RuntimeWarning, stacklevel=2)

    def _acquire_rows(self, insert: bool, n: Any, block: bool, timeout: Optional[float], where: str) -> bool:
        n = _count(n, "n", where)
        r = self._acquire(insert, n, _timeout(block, timeout, where))
        if r == 0:
            return True
        if r == _WOULD_BLOCK:
            return False
        if r == _TIMED_OUT:
            c = self.counters
            raise TimeoutError(f"{where}: {n} rows could not proceed within {timeout} s (inserts={c['inserts']}, "
                               f"samples={c['samples']}, error={self.error}, band=[{self.min_diff}, {self.max_diff}])")
        raise RateLimitCancelled(f"{where}: the rate limiter was cancelled")

    def insert(self, n: int = 1, *, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Count ``n`` inserted rows once allowed; see the class docstring. Returns True, or False when
        ``block=False`` and the insert would have to wait (nothing counted)."""
        return self._acquire_rows(True, n, block, timeout, "RateLimiter.insert")

    def sample(self, n: int = 1, *, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Count ``n`` sampled rows once allowed; see the class docstring. Returns True, or False when
        ``block=False`` and the sample would have to wait (nothing counted)."""
        return self._acquire_rows(False, n, block, timeout, "RateLimiter.sample")

    def can_insert(self, n: int = 1) -> bool:
        """Whether an insert of ``n`` rows would proceed now (counts nothing)."""
        return self._can(True, _count(n, "n", "RateLimiter.can_insert"))

    def can_sample(self, n: int = 1) -> bool:
        """Whether a sample of ``n`` rows would proceed now (counts nothing)."""
        return self._can(False, _count(n, "n", "RateLimiter.can_sample"))

    @property
    def samples_per_insert(self) -> float:
        """Target sampled rows per inserted row; settable live (checked as at construction)."""
        return self._spi

    @samples_per_insert.setter
    def samples_per_insert(self, value: float) -> None:
        self._set_spi(_number(value, "samples_per_insert", "RateLimiter.samples_per_insert"))

    @property
    def counters(self) -> Dict[str, int]:
        """``{"inserts": rows inserted, "samples": rows sampled}`` (one consistent snapshot)."""
        i, s = self._counters()
        return {"inserts": i, "samples": s}

    @property
    def error(self) -> float:
        """``inserts * samples_per_insert - samples`` now."""
        i, s = self._counters()
        return i * self._spi - s

    def state(self) -> Dict[str, Any]:
        """The configuration and counters, JSON-serialisable (what checkpoints store)."""
        i, s = self._counters()
        return {"samples_per_insert": self._spi, "min_size_to_sample": self.min_size_to_sample,
                "min_diff": self.min_diff, "max_diff": self.max_diff, "inserts": i, "samples": s}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "RateLimiter":
        """A limiter rebuilt from :meth:`state` (every entry checked; ValueError otherwise)."""
        where = "RateLimiter.from_state"
        if not isinstance(state, dict):
            raise ValueError(f"{where}: expected a dict, got {type(state).__name__}")
        try:
            rl = cls(state["samples_per_insert"], state["min_size_to_sample"], min_diff=state["min_diff"],
                     max_diff=state["max_diff"])
        except KeyError as e:
            raise ValueError(f"{where}: missing entry {e}") from None
        rl.restore_counters(state.get("inserts"), state.get("samples"))
        return rl

    def restore_counters(self, inserts: int, samples: int) -> None:
        """Set the counters (e.g. from a checkpoint); wakes blocked calls whose condition now holds."""
        where = "RateLimiter.restore_counters"
        self._set_counters(_count(inserts, "inserts", where), _count(samples, "samples", where))

    def __repr__(self) -> str:
        i, s = self._counters()
        return (f"RateLimiter(samples_per_insert={self._spi}, min_size_to_sample={self.min_size_to_sample}, "
                f"min_diff={self.min_diff}, max_diff={self.max_diff}, inserts={i}, samples={s})")


def rows_of(buffer: Any, values: Tuple[Any, ...], fields: Dict[str, Any]) -> int:
    """Rows one ``add(*values, **fields)`` call writes: the leading dimension of the first field's value when it
    has one more dimension than the field's row shape, else 1 (as the buffer's ``add`` decides)."""
    specs = buffer.fields
    name = next(iter(specs))
    if values:
        value = values[0]
    elif name in fields:
        value = fields[name]
    else:
        return 1  # the buffer's add will reject the call
    if isinstance(value, dict):  # Dict observations: any key decides
        value = next(iter(value.values()))
    shape = np.shape(value)
    row = specs[name][0] if name in specs else ()
    if len(shape) == len(row) + 1:
        return int(shape[0])
    return 1


class RateLimitedBuffer:
    """A local buffer whose ``add`` and ``sample`` go through a :class:`RateLimiter` (any number of threads).

    ``add(*values, block=True, timeout=None, **fields)`` waits until the rows may be inserted, then adds them;
    ``sample(batch_size, *args, block=True, timeout=None, **kwargs)`` waits until ``batch_size`` rows may be
    sampled, then samples. With ``block=False`` they return ``False`` / ``None`` instead of waiting; a
    ``timeout`` raises ``TimeoutError`` and counts nothing. The limiter counts the rows before the buffer call, so
    a rejected call (bad input) takes its rows back. Other attributes are the buffer's.
    :meth:`save` writes the buffer's checkpoint with the limiter's state as an extra member, :meth:`load` restores
    both (a plain ``ReplayBuffer.load`` of the same file ignores the member). Not limited: the wrapped buffer's
    ``prefetch()`` threads (they sample in C++ without asking the limiter) and calls made on ``.buffer`` directly.
    """

    def __init__(self, buffer: Any, limiter: RateLimiter) -> None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"RateLimitedBuffer: limiter must be a RateLimiter, got {type(limiter).__name__}")
        self.buffer = buffer
        self.limiter = limiter

    def add(self, *values: Any, block: bool = True, timeout: Optional[float] = None, **fields: Any) -> bool:
        """Add rows once the limiter allows them; returns True, or False when ``block=False`` and it would wait."""
        n = rows_of(self.buffer, values, fields)
        if not self.limiter.insert(n, block=block, timeout=timeout):
            return False
        try:
            self.buffer.add(*values, **fields)
        except BaseException:
            self._uncount(n, 0)
            raise
        return True

    def sample(self, batch_size: int, *args: Any, block: bool = True, timeout: Optional[float] = None,
               **kwargs: Any) -> Any:
        """A batch once the limiter allows ``batch_size`` more sampled rows; None when ``block=False`` and it
        would wait."""
        if not self.limiter.sample(batch_size, block=block, timeout=timeout):
            return None
        try:
            return self.buffer.sample(batch_size, *args, **kwargs)
        except BaseException:
            self._uncount(0, batch_size)
            raise

    def _uncount(self, inserts: int, samples: int) -> None:
        if inserts:
            self.limiter._release(True, inserts)
        if samples:
            self.limiter._release(False, samples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.buffer, name)

    def __len__(self) -> int:
        return len(self.buffer)

    def save(self, path: Any) -> None:
        """The buffer's checkpoint (``save``) plus the limiter's :meth:`RateLimiter.state`, written atomically."""
        save_with_limiter(self.buffer, self.limiter, path)

    @classmethod
    def load(cls, path: Any, buffer_class: Any = None) -> "RateLimitedBuffer":
        """Buffer and limiter restored from :meth:`save` (``buffer_class``: the class whose ``load`` reads the
        buffer, default ``fastreplay.PrioritizedReplayBuffer`` or ``ReplayBuffer`` as the file records)."""
        if buffer_class is None:
            from .buffer import ReplayBuffer as buffer_class
        buffer = buffer_class.load(path)
        state = read_limiter_state(path)
        if state is None:
            raise ValueError(f"RateLimitedBuffer.load: {os.fspath(path)!r} holds no {CHECKPOINT_MEMBER} member "
                             "(it was not written by RateLimitedBuffer.save)")
        return cls(buffer, RateLimiter.from_state(state))


def save_with_limiter(buffer: Any, limiter: Optional[RateLimiter], path: Any) -> None:
    """``buffer.save(path)`` with the limiter's state added as the member ``rate_limiter.json``; atomic: the
    checkpoint is completed in a temporary file that replaces ``path`` only once written and synced."""
    path = os.fspath(path)
    tmp = f"{path}.limiter-tmp"
    state = None if limiter is None else limiter.state()
    buffer.save(tmp)
    try:
        if state is not None:
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_STORED) as z:
                z.writestr(CHECKPOINT_MEMBER, json.dumps(state))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_limiter_state(path: Any) -> Optional[Dict[str, Any]]:
    """The limiter state a checkpoint holds (None if it has none); ValueError for an oversized or malformed one."""
    with zipfile.ZipFile(os.fspath(path)) as z:
        try:
            info = z.getinfo(CHECKPOINT_MEMBER)
        except KeyError:
            return None
        if info.file_size > 4096 or info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"load: {CHECKPOINT_MEMBER} in {os.fspath(path)!r} is malformed ({info.file_size} bytes)")
        try:
            state = json.loads(z.read(CHECKPOINT_MEMBER))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"load: {CHECKPOINT_MEMBER} in {os.fspath(path)!r} is not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"load: {CHECKPOINT_MEMBER} in {os.fspath(path)!r} is not a JSON object")
    return state
