"""Batch recycling (csrc/bindings/batch_recycler.h): a small batch that nobody holds any more is refilled by the next
sample instead of rebuilt. What the user sees must be exactly what fresh batches give, and nothing anyone still
holds (the batch, an array of it, a view, a memoryview, a tensor, a weak reference) may ever change."""
import gc
import threading
import warnings
import weakref

import numpy as np
import pytest

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows


def filled(cls=fr.ReplayBuffer, n=500, **kw):
    buf = cls(1000, CARTPOLE, seed=7, **kw)
    buf.add(**cartpole_rows(0, n))
    return buf


def snapshot(batch):
    extra = {"indices": batch.indices.copy()}
    if batch.weights is not None:
        extra["weights"] = batch.weights.copy()
        extra["generations"] = batch.generations.copy()
    return {**{k: v.copy() for k, v in batch.items()}, **extra}


def assert_rows_match_storage(buf, batch):
    ref = buf.get(batch.indices)
    assert set(batch) == set(CARTPOLE)
    for k in CARTPOLE:
        np.testing.assert_array_equal(batch[k], ref[k])


def test_a_dropped_batch_is_refilled_and_correct():
    buf = filled()
    b = buf.sample(32)
    first = id(b)
    before = snapshot(b)
    del b
    b = buf.sample(32)
    assert id(b) == first  # recycled: the same object
    assert not np.array_equal(b.indices, before["indices"])  # with the new draw's rows
    assert_rows_match_storage(buf, b)
    assert b.weights is None and b.generations is None


@pytest.mark.parametrize("kind", ["uniform", "prioritized", "tasks"])
def test_recycled_batches_equal_fresh_ones(kind):
    """Two identical buffers with one seed: one drops every batch (recycled), one keeps them all (always fresh)."""
    def make():
        if kind == "uniform":
            return filled()
        if kind == "prioritized":
            buf = filled(fr.PrioritizedReplayBuffer, alpha=0.6)
            buf.update_priorities(np.arange(100), np.linspace(0.1, 3.0, 100))
            return buf
        buf = fr.ReplayBuffer(1000, CARTPOLE, seed=7, tasks=2)
        buf.add(**cartpole_rows(0, 300), task=0)
        buf.add(**cartpole_rows(300, 200), task=1)
        return buf

    recycled, fresh = make(), make()
    held = []
    for i in range(40):
        n = (16, 32)[i % 2]  # alternating sizes: each size has its own recycled batches
        kw = {"beta": 0.5} if kind == "prioritized" else {}
        a = recycled.sample(n, **kw)
        b = fresh.sample(n, **kw)
        held.append(b)
        sa, sb = snapshot(a), snapshot(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"call {i}, {k}")
        if kind == "prioritized":
            recycled.update_priorities(a, np.full(n, 0.5 + i))
            fresh.update_priorities(b, np.full(n, 0.5 + i))
        del a


@pytest.mark.parametrize("hold", ["batch", "array", "view", "memoryview", "weights", "indices", "weakref", "torch"])
def test_what_anyone_holds_never_changes(hold):
    buf = filled(fr.PrioritizedReplayBuffer)
    b = buf.sample(64, beta=0.4)
    want = snapshot(b)
    if hold == "batch":
        keep, check = b, lambda: snapshot(keep)
    elif hold == "array":
        keep = b["obs"]
        check = lambda: {"obs": keep}  # noqa: E731
    elif hold == "view":
        keep = b["obs"][1:]
        want["obs"] = want["obs"][1:]
        check = lambda: {"obs": keep}  # noqa: E731
    elif hold == "memoryview":
        keep = memoryview(b["reward"])
        check = lambda: {"reward": np.asarray(keep)}  # noqa: E731
    elif hold in ("weights", "indices"):
        keep = getattr(b, hold)
        check = lambda: {hold: keep}  # noqa: E731
    elif hold == "weakref":
        keep = weakref.ref(b["obs"])
        check = lambda: {"obs": keep()} if keep() is not None else {}  # noqa: E731
    else:
        torch = pytest.importorskip("torch")
        keep = torch.from_numpy(b["next_obs"])
        check = lambda: {"next_obs": keep.numpy()}  # noqa: E731
    first = id(b)
    del b
    gc.collect()
    for _ in range(20):
        c = buf.sample(64, beta=0.4)
        if hold != "batch":
            assert id(c) != first or hold == "weakref" and keep() is None
        buf.update_priorities(c, np.random.default_rng(0).random(64) + 0.1)
        del c
    got = check()
    assert got or hold == "weakref"
    for k, v in got.items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)


@pytest.mark.parametrize("change", ["add_key", "replace_array", "delete_key", "reshape", "readonly", "set_weights",
                                   "dtype", "subclass_attr"])
def test_a_changed_batch_is_not_reused(change):
    buf = filled(fr.PrioritizedReplayBuffer)
    b = buf.sample(16, beta=0.4)
    if change == "add_key":
        b["extra"] = np.zeros(3)
    elif change == "replace_array":
        b["obs"] = np.zeros((16, 4), np.float32)
    elif change == "delete_key":
        del b["done"]
    elif change == "reshape":
        with warnings.catch_warnings():  # deprecated since numpy 2.5, still possible
            warnings.simplefilter("ignore", DeprecationWarning)
            b["obs"].shape = (64,)
    elif change == "readonly":
        b["reward"].flags.writeable = False
    elif change == "set_weights":
        b.weights = np.ones(16, np.float32)
    elif change == "dtype":
        with warnings.catch_warnings():  # deprecated since numpy 2.5, still possible
            warnings.simplefilter("ignore", DeprecationWarning)
            b["action"].dtype = np.float64
    else:
        b.indices = b.indices.copy()
    del b
    c = buf.sample(16, beta=0.4)
    assert set(c) == set(CARTPOLE)
    for k, (shape, dtype) in CARTPOLE.items():
        assert c[k].shape == (16, *shape) and c[k].dtype == dtype and c[k].flags.writeable
    assert c.weights.shape == (16,) and c.weights.dtype == np.float32
    assert_rows_match_storage(buf, c)


def test_large_batches_are_not_kept():
    buf = fr.ReplayBuffer(100, {"x": ((300_000,), np.uint8)}, seed=0)  # a batch of 4 rows is 1.2 MB
    buf.add(x=np.ones((10, 300_000), np.uint8))
    b = buf.sample(4)
    r = weakref.ref(b["x"])
    del b
    gc.collect()
    assert r() is None  # freed at once: the recycler does not hold it


def test_threads_sampling_and_dropping_never_touch_held_batches():
    buf = filled(n=1000)
    stop = threading.Event()
    errors = []

    def churn():
        try:
            while not stop.is_set():
                b = buf.sample(32)
                assert_rows_match_storage(buf, b)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            b = buf.sample(32)
            want = snapshot(b)
            for _ in range(3):
                buf.sample(32)
            got = snapshot(b)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


def test_out_batch_with_an_unset_slot_is_refused():
    buf = filled(fr.PrioritizedReplayBuffer)
    for slot in ("indices", "generations", "weights"):
        b = buf.sample(4, beta=0.4)
        delattr(b, slot)
        with pytest.raises(TypeError, match=f"sample: out has no array '{slot}'"):
            buf.sample(4, beta=0.4, out=b)
