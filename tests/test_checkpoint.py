"""Checkpoints: round trips for every dtype and for prioritized buffers, corrupted files, atomicity under SIGKILL."""
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows
from test_buffer import ALL_DTYPES


def same_state(a, b):
    assert type(a) is type(b) and len(a) == len(b) and a.capacity == b.capacity and a.next_index == b.next_index
    assert a.fields == b.fields and a.total_added == b.total_added
    for k, v in a.storage.items():
        np.testing.assert_array_equal(v, b.storage[k])
    np.testing.assert_array_equal(a.generations(np.arange(a.capacity)), b.generations(np.arange(b.capacity)))
    if isinstance(a, fr.PrioritizedReplayBuffer):
        np.testing.assert_array_equal(a.priorities, b.priorities)
        np.testing.assert_array_equal(a._leaves(), b._leaves())
        assert (a.alpha, a.eps, a.max_priority) == (b.alpha, b.eps, b.max_priority)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype):
    fields = {"x": ((2, 3), dtype), "y": ((), dtype)}
    buf = fr.ReplayBuffer(7, fields, seed=4)
    rng = np.random.default_rng(0)
    buf.add(x=rng.integers(0, 50, (10, 2, 3)).astype(dtype), y=rng.integers(0, 50, 10).astype(dtype))
    buf.save(tmp_path / "c.frb")
    same_state(buf, fr.ReplayBuffer.load(tmp_path / "c.frb"))


@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_sampling_after_load_continues_identically(tmp_path, cls):
    kw = dict(alpha=0.7, eps=1e-3, max_priority="stored") if cls is fr.PrioritizedReplayBuffer else {}
    buf = cls(100, CARTPOLE, seed=11, **kw)
    buf.add(**cartpole_rows(0, 130))
    args = (32, 0.5) if kw else (32,)
    if kw:
        b = buf.sample(*args)
        buf.update_priorities(b.indices, np.linspace(0.1, 9, 32))
    buf.sample(*args)
    buf.save(tmp_path / "c")
    loaded = cls.load(tmp_path / "c")
    same_state(buf, loaded)
    for _ in range(5):
        x, y = buf.sample(*args), loaded.sample(*args)
        np.testing.assert_array_equal(x.indices, y.indices)
        if kw:
            np.testing.assert_array_equal(x.weights, y.weights)
    loaded.add(**cartpole_rows(500, 3))  # a loaded buffer keeps working
    assert loaded.storage["action"][30:33].tolist() == [500, 501, 502]


def test_stale_detection_survives_a_checkpoint(tmp_path):
    buf = fr.PrioritizedReplayBuffer(4, {"x": ((), np.int64)}, seed=0)
    buf.add(x=np.arange(4))
    b = buf.sample(4, beta=0.4)
    buf.save(tmp_path / "c")
    loaded = fr.PrioritizedReplayBuffer.load(tmp_path / "c")
    loaded.add(x=np.arange(4))
    assert loaded.update_priorities(b.indices.copy(), np.ones(4), generations=b.generations) == 4


def test_pickle_round_trip():
    buf = fr.PrioritizedReplayBuffer(50, CARTPOLE, seed=1)
    buf.add(**cartpole_rows(0, 60))
    same_state(buf, pickle.loads(pickle.dumps(buf)))


def test_empty_buffer_round_trip(tmp_path):
    buf = fr.ReplayBuffer(5, CARTPOLE)
    buf.save(tmp_path / "e")
    assert len(fr.ReplayBuffer.load(tmp_path / "e")) == 0


def test_load_wrong_class(tmp_path):
    fr.ReplayBuffer(5, CARTPOLE).save(tmp_path / "u")
    with pytest.raises(TypeError, match="holds a ReplayBuffer, not a PrioritizedReplayBuffer"):
        fr.PrioritizedReplayBuffer.load(tmp_path / "u")
    assert isinstance(fr.ReplayBuffer.load(tmp_path / "u"), fr.ReplayBuffer)


def test_truncated_corrupted_and_foreign_files(tmp_path):
    buf = fr.ReplayBuffer(1000, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 1000))
    good = tmp_path / "good"
    buf.save(good)
    data = good.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a valid fastreplay checkpoint"):
        fr.ReplayBuffer.load(tmp_path / "trunc")
    # flip one byte inside the obs column: the CRC check must catch it
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("fields/obs.npy")
    corrupt = bytearray(data)
    pos = info.header_offset + 30 + len(info.filename) + 200
    corrupt[pos] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"member fields/obs.npy is corrupted"):
        fr.ReplayBuffer.load(tmp_path / "corrupt")
    (tmp_path / "foreign").write_bytes(b"hello, world" * 100)
    with pytest.raises(ValueError, match="is not a valid fastreplay checkpoint"):
        fr.ReplayBuffer.load(tmp_path / "foreign")
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="has no manifest.json"):
        fr.ReplayBuffer.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        fr.ReplayBuffer.load(tmp_path / "missing")


def test_future_version_is_refused(tmp_path):
    import json

    p = tmp_path / "v4"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "fastreplay-checkpoint", "version": 4}))
    with pytest.raises(ValueError, match="format version 4; this fastreplay reads versions 1 to 3"):
        fr.ReplayBuffer.load(p)


WRITER = r"""
import sys, numpy as np, fastreplay as fr
path = sys.argv[1]
buf = fr.PrioritizedReplayBuffer(20000, {"x": ((16,), np.float32), "k": ((), np.int64)}, seed=0)
state = 0
while True:  # alternate between two states, A (k == 0) and B (k == 1), saving each
    buf.add(x=np.full((20000, 16), state, np.float32), k=np.full(20000, state))
    buf.update_priorities(np.arange(20000), np.full(20000, 1.0 + state))
    buf.save(path)
    print(state, flush=True)
    state = 1 - state
"""


def test_sigkill_during_save_leaves_old_or_new(tmp_path):
    path = tmp_path / "ckpt"
    rng = random.Random(0)
    seen = set()
    for trial in range(12):
        with subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True) as p:
            p.stdout.readline()  # at least one checkpoint exists
            time.sleep(rng.uniform(0.0, 0.4))
            p.send_signal(signal.SIGKILL)
            p.wait()
        buf = fr.PrioritizedReplayBuffer.load(path)
        k = buf.storage["k"]
        state = int(k[0])
        assert state in (0, 1)
        assert np.all(k == state) and np.all(buf.storage["x"] == state)
        np.testing.assert_array_equal(buf.priorities, np.full(20000, 1.0 + state))
        seen.add(state)
    assert seen == {0, 1}  # both moments of the cycle were hit
    leftovers = [f for f in os.listdir(tmp_path) if f != "ckpt"]
    assert all(".tmp-" in f for f in leftovers)  # only temporary files of killed saves remain
