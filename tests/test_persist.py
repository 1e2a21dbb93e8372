"""The one atomic-write helper: the target is replaced whole or not at all, and no temporary file is left."""
import os

import pytest

from fastreplay._persist import atomic_open, atomic_write


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    atomic_write(path, lambda f: f.write(b"new contents"))
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")

    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_open_syncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.isdir(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    with atomic_open(tmp_path / "g.bin") as f:
        f.write(b"x")
    assert synced == [False, True]  # the file's data, then the directory entry of the rename
