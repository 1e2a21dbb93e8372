"""storage='shared': one buffer in POSIX shared memory, added to and sampled by several processes at once.

Every row written is self-describing (obs = [v, v + 1, v + 2] with v = writer * 1e6 + step, act = writer), so a
torn row (a mix of two transitions) or a row nobody wrote is detected wherever it is read.
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

import fastreplay as fr

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory under /dev/shm (Linux)")

FIELDS = {"obs": ((3,), np.float64), "act": ((), np.int64)}
METHODS = ["fork", "spawn", "forkserver"]


def row(writer, step):
    v = writer * 1_000_000 + step
    return {"obs": np.array([v, v + 1, v + 2], np.float64), "act": writer}


def check_rows(batch):
    """Number of rows that are not a whole transition some writer added."""
    obs, act = batch["obs"], batch["act"]
    whole = (obs[:, 1] == obs[:, 0] + 1) & (obs[:, 2] == obs[:, 0] + 2) & (obs[:, 0] // 1_000_000 == act)
    return int((~whole).sum())


def writer_proc(rb, writer, steps, chunk):
    for s in range(0, steps, chunk):
        rows = [row(writer, s + k) for k in range(chunk)]
        rb.add(obs=np.stack([r["obs"] for r in rows]), act=np.array([r["act"] for r in rows]))


def sampler_proc(rb, rounds, out):
    bad = 0
    for _ in range(rounds):
        b = rb.sample(64)
        bad += check_rows(b)
        if isinstance(rb, fr.PrioritizedReplayBuffer):
            rb.update_priorities(b, (b["obs"][:, 0] % 7) + 0.5)
    out.put(bad)


def make(prioritized, capacity=512, **kw):
    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    return cls(capacity, FIELDS, storage="shared", seed=3, **kw)


def shm_path(rb):
    return "/dev/shm" + rb._shared_name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("prioritized", [False, True])
def test_processes_add_and_sample_one_buffer(method, prioritized):
    ctx = mp.get_context(method)
    rb = make(prioritized)
    rb.add(**row(0, 0))
    q = ctx.Queue()
    writers = [ctx.Process(target=writer_proc, args=(rb, w, 3000, 1 + 3 * w)) for w in (1, 2)]
    samplers = [ctx.Process(target=sampler_proc, args=(rb, 300, q)) for _ in range(2)]
    procs = writers + samplers
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert [q.get(timeout=10) for _ in samplers] == [0, 0]
    # Every writer's rows arrived: 3000 steps each, in whole chunks of 1 + 3w rows
    chunks = [1 + 3 * w for w in (1, 2)]
    assert rb.total_added == 1 + sum(-(-3000 // c) * c for c in chunks) and len(rb) == 512
    stored = rb.get(np.arange(len(rb)))
    assert check_rows(stored) == 0
    assert set(np.unique(stored["act"])) <= {0, 1, 2}
    if prioritized:  # the trees the processes updated are consistent: root == sum of leaves
        leaves = rb._leaves()
        assert rb._total == pytest.approx(leaves.sum(), rel=1e-9)
        assert rb._min == pytest.approx(leaves[leaves > 0].min())


def test_pickle_is_a_handle_on_the_same_memory():
    rb = make(True, capacity=16, stale="raise", max_priority="stored")
    other = pickle.loads(pickle.dumps(rb))
    assert type(other) is fr.PrioritizedReplayBuffer and other is not rb
    assert other._shared_name == rb._shared_name and other.seed == rb.seed == 3
    assert other._raise_stale and other._max_mode == "stored"
    rb.add(**row(1, 5))
    assert len(other) == 1 and other.get([0])["obs"][0, 0] == 1_000_005
    other.add(**row(2, 6))
    assert len(rb) == 2 and rb.total_added == 2
    other.update_priorities([1], [4.0])
    assert rb.max_priority == 4.0 and rb.priorities[1] == 4.0
    rb.alpha = 0.3
    assert other.alpha == 0.3
    # the generator counter is shared too: the two handles never draw the same stream
    a, b = rb.sample(4), other.sample(4)
    assert rb._stream == other._stream == 2
    assert a.indices.shape == b.indices.shape == (4,)


def test_subclass_attributes_travel_with_the_handle():
    class Tagged(fr.ReplayBuffer):
        pass

    globals()["Tagged"] = Tagged  # picklable by reference
    Tagged.__qualname__ = "Tagged"
    rb = Tagged(8, FIELDS, storage="shared")
    rb.tag = "learner"
    other = pickle.loads(pickle.dumps(rb))
    assert type(other) is Tagged and other.tag == "learner"


def test_name_is_removed_with_the_creator_not_with_a_handle():
    rb = make(False, capacity=8)
    path = shm_path(rb)
    assert os.path.exists(path)
    other = pickle.loads(pickle.dumps(rb))
    del other
    gc.collect()
    assert os.path.exists(path)
    data = pickle.dumps(rb)
    del rb
    gc.collect()
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="does not exist"):
        pickle.loads(data)


def _drop_copy(rb):
    del rb
    gc.collect()


def test_forked_child_dropping_its_copy_keeps_the_name():
    rb = make(False, capacity=8)
    p = mp.get_context("fork").Process(target=_drop_copy, args=(rb,))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and os.path.exists(shm_path(rb))


def test_save_load_and_prefetch_of_a_shared_buffer(tmp_path):
    rb = make(True, capacity=32)
    for s in range(40):
        rb.add(**row(1, s))
    rb.update_priorities(np.arange(5), np.arange(5) + 1.0)
    rb.save(tmp_path / "ckpt")
    copy = fr.PrioritizedReplayBuffer.load(tmp_path / "ckpt")
    assert copy._shared_name == "" and len(copy) == 32
    np.testing.assert_array_equal(copy.get(np.arange(32))["obs"], rb.get(np.arange(32))["obs"])
    np.testing.assert_array_equal(copy.priorities, rb.priorities)
    with rb.prefetch(8, depth=2) as it:
        for _ in range(5):
            assert check_rows(next(it)) == 0


def test_bad_arguments_are_refused_before_anything_is_created():
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(ValueError, match="storage='shared' holds plain buffers only.*num_envs"):
        fr.ReplayBuffer(8, {"obs": ((2,), np.float32), "next_obs": ((2,), np.float32), "reward": ((), np.float32),
                            "done": ((), bool)}, storage="shared", num_envs=2)
    with pytest.raises(ValueError, match="path is only used with storage='memmap'"):
        fr.ReplayBuffer(8, FIELDS, storage="shared", path="/tmp/x")
    with pytest.raises(ValueError, match="storage"):
        fr.ReplayBuffer(8, FIELDS, storage="sharedd")
    assert set(os.listdir("/dev/shm")) == before


def test_attaching_with_another_layout_or_to_garbage_is_refused():
    from fastreplay.buffer import _attach_shared

    rb = make(False, capacity=8)
    name = rb._shared_name
    with pytest.raises(ValueError, match="another capacity, fields or kind"):
        _attach_shared(fr.ReplayBuffer, name, 9, FIELDS, {}, {})
    with pytest.raises(ValueError, match="another capacity, fields or kind"):
        _attach_shared(fr.ReplayBuffer, name, 8, {"obs": ((3,), np.float32), "act": ((), np.int64)}, {}, {})
    with pytest.raises(ValueError, match="another capacity, fields or kind"):
        _attach_shared(fr.PrioritizedReplayBuffer, name, 8, FIELDS,
                       {"alpha": 0.6, "eps": 1e-6, "max_priority": "all_time", "stale": "skip"}, {})
    with pytest.raises(ValueError, match="bad name"):
        _attach_shared(fr.ReplayBuffer, "/a/b", 8, FIELDS, {}, {})
    # an object in /dev/shm that is not a finished fastreplay buffer: wrong magic, too small
    junk = f"/fastreplay-test-junk-{os.getpid()}"
    with open("/dev/shm" + junk, "wb") as f:
        f.write(b"x" * 8192)
    try:
        with pytest.raises(ValueError, match="not a fastreplay buffer"):
            _attach_shared(fr.ReplayBuffer, junk, 8, FIELDS, {}, {})
        with open("/dev/shm" + junk, "wb") as f:
            f.write(b"x" * 10)
        with pytest.raises(ValueError, match="too small"):
            _attach_shared(fr.ReplayBuffer, junk, 8, FIELDS, {}, {})
    finally:
        os.unlink("/dev/shm" + junk)
    assert len(rb) == 0  # the refused attaches changed nothing


def cpprb_learner_update(rb, q):
    s = rb.sample(16, beta=0.4)
    rb.update_priorities(s["indexes"], np.full(16, 9.0))
    q.put(rb.get_max_priority())


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_cpprb_mp_buffers_share_across_processes(method):
    from fastreplay.cpprb import MPPrioritizedReplayBuffer, MPReplayBuffer

    ctx = mp.get_context(method)
    rb = MPReplayBuffer(64, {"obs": {"dtype": np.int64}}, ctx=ctx)
    p = ctx.Process(target=_cpprb_add, args=(rb, 40))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and rb.get_stored_size() == 40 and rb.get_next_index() == 40
    np.testing.assert_array_equal(rb.get_all_transitions()["obs"].ravel(), np.arange(40))
    prb = MPPrioritizedReplayBuffer(64, {"obs": {"dtype": np.int64}}, ctx=ctx)
    prb.add(obs=np.arange(10))
    q = ctx.Queue()
    p = ctx.Process(target=cpprb_learner_update, args=(prb, q))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and q.get(timeout=10) == 9.0 and prb.get_max_priority() == 9.0


def _cpprb_add(rb, n):
    for i in range(n):
        rb.add(obs=i)


def test_cpprb_mp_arguments_are_checked_as_cpprb_does():
    from multiprocessing.context import ProcessError
    from multiprocessing.managers import SyncManager

    from fastreplay.cpprb import MPPrioritizedReplayBuffer, MPReplayBuffer

    with pytest.raises(ValueError, match="unknown backend"):
        MPReplayBuffer(4, {"done": {}}, backend="UNKNOWN")
    with SyncManager() as m:
        MPPrioritizedReplayBuffer(4, {"done": {}}, ctx=m)
    with pytest.raises(ProcessError):
        MPReplayBuffer(4, {"done": {}}, ctx=m)
    MPReplayBuffer(4, {"done": {}}, ctx=SyncManager(), backend="SharedMemory")  # never started: fine
