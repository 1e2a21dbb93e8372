"""Memory-mapped storage: reopen after restart, crash recovery, mismatches, and a buffer larger than RAM."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows, check_self_consistent


def test_memmap_behaves_like_memory_and_reopens(tmp_path):
    mem = fr.ReplayBuffer(50, CARTPOLE, seed=3)
    mm = fr.ReplayBuffer(50, CARTPOLE, seed=3, storage="memmap", path=tmp_path / "buf")
    for start, n in [(0, 30), (30, 35), (65, 1)]:
        mem.add(**cartpole_rows(start, n))
        mm.add(**cartpole_rows(start, n))
    for _ in range(3):
        np.testing.assert_array_equal(mem.sample(16).indices, mm.sample(16).indices)
    mm.flush()
    del mm
    again = fr.ReplayBuffer(50, CARTPOLE, storage="memmap", path=tmp_path / "buf")  # seed comes from the files
    assert len(again) == 50 and again.next_index == mem.next_index and again.total_added == mem.total_added
    for k, v in mem.storage.items():
        np.testing.assert_array_equal(again.storage[k], v)
    np.testing.assert_array_equal(again.generations(np.arange(50)), mem.generations(np.arange(50)))
    for _ in range(3):  # the generator continues where it was flushed
        np.testing.assert_array_equal(mem.sample(16).indices, again.sample(16).indices)
    again.clear()
    del again
    assert len(fr.ReplayBuffer(50, CARTPOLE, storage="memmap", path=tmp_path / "buf")) == 0


def test_prioritized_memmap_keeps_priorities_after_flush(tmp_path):
    b = fr.PrioritizedReplayBuffer(20, CARTPOLE, alpha=1.0, seed=0, storage="memmap", path=tmp_path)
    b.add(**cartpole_rows(0, 20))
    b.update_priorities(np.arange(20), np.arange(20.0))
    b.flush()
    leaves = b._leaves()
    del b
    c = fr.PrioritizedReplayBuffer(20, CARTPOLE, alpha=1.0, storage="memmap", path=tmp_path)
    np.testing.assert_allclose(c._leaves(), leaves)
    assert c.max_priority == 19.0


def test_mismatched_reopen_is_refused(tmp_path):
    fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=tmp_path)
    with pytest.raises(ValueError, match="holds a ReplayBuffer of capacity 10"):
        fr.ReplayBuffer(11, CARTPOLE, storage="memmap", path=tmp_path)
    with pytest.raises(ValueError, match="asked for a ReplayBuffer of capacity 10 with fields"):
        fr.ReplayBuffer(10, {"obs": ((4,), np.float64)}, storage="memmap", path=tmp_path)
    with pytest.raises(ValueError, match="asked for a PrioritizedReplayBuffer"):
        fr.PrioritizedReplayBuffer(10, CARTPOLE, storage="memmap", path=tmp_path)
    with pytest.raises(ValueError, match="storage='memmap' needs path"):
        fr.ReplayBuffer(10, CARTPOLE, storage="memmap")
    with pytest.raises(ValueError, match="storage must be 'memory' or 'memmap'"):
        fr.ReplayBuffer(10, CARTPOLE, storage="disk")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="does not hold fastreplay memmap storage"):
        fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=tmp_path / "other")


WRITER = r"""
import sys, numpy as np, fastreplay as fr
sys.path.insert(0, sys.argv[2])
from _rows import CARTPOLE, cartpole_rows
buf = fr.ReplayBuffer(5000, CARTPOLE, seed=0, storage="memmap", path=sys.argv[1])
k = 0
print("ready", flush=True)
while True:
    buf.add(**cartpole_rows(k, 64))
    k += 64
"""


def test_process_killed_while_adding_recovers_whole_rows(tmp_path):
    tests_dir = os.path.dirname(__file__)
    for trial in range(5):
        with subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tests_dir], stdout=subprocess.PIPE,
                              text=True) as p:
            p.stdout.readline()
            time.sleep(0.2 + 0.1 * trial)
            p.send_signal(signal.SIGKILL)
            p.wait()
        with _maybe_warns():
            buf = fr.ReplayBuffer(5000, CARTPOLE, storage="memmap", path=tmp_path)
        assert len(buf) > 0
        k = check_self_consistent(buf.get(np.arange(len(buf))))  # every stored row is one whole transition
        last = (buf.next_index - 1) % buf.capacity
        assert k[last] == k.max()  # the cursor was recovered at the newest row
        del buf  # releases the directory for the next trial's writer (one buffer per directory)


class _maybe_warns:
    """A row may or may not have been mid-write at the kill; either is fine, but only our RuntimeWarning."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._w = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        for w in self._w:
            assert issubclass(w.category, RuntimeWarning) and "being written" in str(w.message)


def test_buffer_larger_than_ram(tmp_path):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    row = 84 * 84 * 4
    capacity = int(1.25 * ram) // row + 1  # sparse files: only written pages take disk
    buf = fr.ReplayBuffer(capacity, {"obs": ((4, 84, 84), np.uint8), "i": ((), np.int64)}, seed=0,
                          storage="memmap", path=tmp_path)
    assert capacity * row > ram
    imgs = np.broadcast_to(np.arange(64, dtype=np.uint8)[:, None, None, None], (64, 4, 84, 84))
    buf.add(obs=imgs, i=np.arange(64))
    b = buf.sample(32)
    np.testing.assert_array_equal(b["obs"][:, 0, 0, 0], b["i"].astype(np.uint8))


class _MyBuffer(fr.ReplayBuffer):
    """A user's subclass: its storage records the kind of buffer (ReplayBuffer), so it reopens."""


class _MyPrioritized(fr.PrioritizedReplayBuffer):
    pass


@pytest.mark.parametrize("cls", [_MyBuffer, _MyPrioritized])
def test_a_subclass_reopens_its_memmap_storage(tmp_path, cls):
    first = cls(20, CARTPOLE, seed=1, storage="memmap", path=tmp_path / "buf")
    first.add(**cartpole_rows(0, 7))
    first.flush()
    want = {k: v.copy() for k, v in first.storage.items()}
    del first
    again = cls(20, CARTPOLE, storage="memmap", path=tmp_path / "buf")
    assert type(again) is cls and len(again) == 7
    for k, v in want.items():
        np.testing.assert_array_equal(again.storage[k], v)
    # and the base class opens the same storage, since the subclass adds no state of its own
    base = cls.__mro__[1]
    del again
    assert len(base(20, CARTPOLE, storage="memmap", path=tmp_path / "buf")) == 7
