"""Read-only arrays (what Ray's object store hands out, zero-copy): accepted by add and update_priorities, and
never given to torch as writable memory by Batch.to_torch."""
import warnings

import numpy as np
import pytest

import fastreplay as fr

FIELDS = {"obs": ((2, 3), np.uint8), "action": ((), np.int64)}


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_add_and_update_priorities_accept_read_only_arrays():
    buf = fr.PrioritizedReplayBuffer(16, FIELDS, seed=0)
    obs = readonly(np.arange(24, dtype=np.uint8).reshape(4, 2, 3))
    buf.add(obs=obs, action=readonly(np.arange(4)))
    np.testing.assert_array_equal(buf.get(np.arange(4))["obs"], obs)
    b = buf.sample(4)
    assert buf.update_priorities(readonly(b.indices), readonly(np.full(4, 2.0)), readonly(b.generations)) == 0
    np.testing.assert_allclose(buf.priorities[np.unique(b.indices)], 2.0)


def test_to_torch_copies_read_only_arrays_and_shares_writable_ones():
    torch = pytest.importorskip("torch")
    b = fr.Batch({"obs": readonly(np.ones((3, 2, 3), np.uint8)), "action": np.arange(3)})
    b.indices = readonly(np.arange(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy warns for non-writable arrays
        t = b.to_torch()
    t["obs"][0, 0, 0] = 9
    assert b["obs"][0, 0, 0] == 1          # a copy: the read-only memory is untouched
    t["action"][0] = 7
    assert b["action"][0] == 7             # writable arrays stay zero-copy
    assert t["indices"].dtype == torch.int64 and t["obs"].dtype == torch.uint8
