"""Threads: concurrent add/sample/update_priorities from Python threads, and background prefetch."""
import functools
import gc
import os
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows, check_self_consistent, run_for


def run_threads(buf, writers, samplers, seconds, rows_per_add=(1, 7), per=False):
    """Writers add self-describing rows from disjoint counter ranges; samplers check every sampled row."""
    counter = iter(range(0, 10**12, 1000))  # each add takes a fresh block of 1000 counters
    lock = threading.Lock()
    added, sampled = [], [0]

    def writer(stop, n):
        while not stop.is_set():
            with lock:
                start = next(counter)
            buf.add(**cartpole_rows(start, n))
            with lock:
                added.extend(range(start, start + n))

    def sampler(stop):
        while not stop.is_set():
            if len(buf) == 0:
                continue
            b = buf.sample(64, 0.4) if per else buf.sample(64)
            k = check_self_consistent(b)  # raises on a torn row; run_for raises it here
            if per:
                buf.update_priorities(b.indices, (k % 13) + 0.5)
            sampled[0] += len(k)

    workers = [functools.partial(writer, n=rows_per_add[i % len(rows_per_add)]) for i in range(writers)]
    run_for(seconds, workers + [sampler] * samplers)
    assert sampled[0] > 0
    return added


@pytest.mark.parametrize("per", [False, True])
def test_no_torn_lost_or_duplicated_rows_without_wraparound(per):
    cls = fr.PrioritizedReplayBuffer if per else fr.ReplayBuffer
    buf = cls(2_000_000, CARTPOLE, seed=0)
    added = run_threads(buf, writers=2, samplers=2, seconds=1.5, per=per)
    stored = check_self_consistent(buf.get(np.arange(len(buf))))
    assert len(buf) == len(added)
    assert len(np.unique(stored)) == len(stored)  # no duplicates
    np.testing.assert_array_equal(np.sort(stored), np.sort(added))  # nothing lost
    if per:
        leaves = buf._leaves()
        assert abs(buf._total - leaves.sum()) <= 1e-9 * leaves.sum()


@pytest.mark.parametrize("per", [False, True])
def test_no_torn_rows_while_writers_lap_samplers(per):
    cls = fr.PrioritizedReplayBuffer if per else fr.ReplayBuffer
    buf = cls(50, CARTPOLE, seed=1)  # tiny ring: every sample races with overwrites
    run_threads(buf, writers=2, samplers=2, seconds=1.5, rows_per_add=(1, 16), per=per)
    stored = check_self_consistent(buf.get(np.arange(len(buf))))
    assert len(np.unique(stored)) == len(stored) == 50
    if per:
        leaves = buf._leaves()
        assert abs(buf._total - leaves.sum()) <= 1e-9 * leaves.sum()


def filled(n=1000, seed=0, cls=fr.ReplayBuffer):
    buf = cls(n, CARTPOLE, seed=seed)
    buf.add(**cartpole_rows(0, n))
    return buf


def test_prefetch_follows_the_seed_with_one_thread():
    a, b = filled(seed=9), filled(seed=9)
    with a.prefetch(32, depth=4, threads=1) as it:
        got = [next(it) for _ in range(20)]
    for x in got:
        y = b.sample(32)
        np.testing.assert_array_equal(x.indices, y.indices)
        for k in CARTPOLE:
            np.testing.assert_array_equal(x[k], y[k])


def test_prefetch_batches_are_correct_and_never_overwritten():
    buf = filled()
    held = []
    with buf.prefetch(64, depth=2, threads=2) as it:
        for i, batch in enumerate(it):
            check_self_consistent(batch)
            held.append((batch, {k: v.copy() for k, v in batch.items()}))
            if i == 50:
                break
    gc.collect()
    for _ in range(20):
        buf.sample(64)  # pooled blocks are reused only once their arrays are gone
    for batch, snap in held:
        for k in snap:
            np.testing.assert_array_equal(batch[k], snap[k])


def test_prefetch_prioritized_beta_and_weights():
    buf = filled(cls=fr.PrioritizedReplayBuffer)
    buf.update_priorities(np.arange(1000), np.linspace(0.1, 5, 1000))
    with buf.prefetch(32, beta=0.0) as it:
        b = next(it)
        assert np.all(b.weights == 1.0) and it.beta == 0.0
        it.beta = 1.0
        for b in it:  # batches sampled after the change use the new beta
            if np.any(b.weights < 1.0):
                break
        assert buf.update_priorities(b.indices, np.ones(32)) == 0
    with pytest.raises(ValueError, match="beta must be finite"):
        buf.prefetch(8, beta=-1.0)


def test_prefetch_refills_promptly_for_a_slow_consumer():
    # A consumer slower than the workers' polls (a trainer that learns every few ms) lets their poll interval
    # grow, but only to kMaxPoll (1.6 ms, prefetch.h): after the queue has stayed full for 0.25 s, a worker must
    # still find the space the consumer frees within 0.1 s (an interval that kept doubling would be ~0.25 s by then).
    buf = filled()
    with buf.prefetch(16, depth=3, threads=1) as it:
        for _ in range(4):
            time.sleep(0.25)  # the workers have filled the queue and backed off their polls
            assert it.ready == 3
            next(it)
            deadline = time.monotonic() + 0.1
            while it.ready < 3 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert it.ready == 3, "a prefetch worker did not refill the queue within 0.1 s of the consumer taking an item"


def test_prefetch_errors_raise_in_consumer_then_stop():
    empty = fr.ReplayBuffer(10, CARTPOLE)
    it = empty.prefetch(4)
    with pytest.raises(ValueError, match="sample: the buffer is empty"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(batch_size=0), ValueError, "prefetch: batch_size must be positive, got 0"),
    (dict(batch_size=4, depth=0), ValueError, "prefetch: depth must be positive"),
    (dict(batch_size=4, threads=0), ValueError, r"prefetch: threads must be in \[1, 64\]"),
    (dict(batch_size=4.0), TypeError, "prefetch: batch_size must be an int"),
    (dict(batch_size=4, beta=0.5), TypeError, "beta is only for PrioritizedReplayBuffer"),
])
def test_prefetch_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        filled(10).prefetch(**kw)


def test_prefetch_close_is_clean_and_idempotent():
    buf = filled()
    before = threading.active_count()
    it = buf.prefetch(16, depth=3, threads=2)
    next(it)
    it.close()
    it.close()
    assert it.closed
    with pytest.raises(StopIteration):
        next(it)
    del it
    gc.collect()
    assert threading.active_count() == before  # C++ workers are not Python threads; nothing Python leaked


def os_threads() -> int:
    """Threads of this process, the C++ workers included (they are not Python threads)."""
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts OS threads through /proc (Linux)")
def test_prefetch_stopped_by_garbage_collection_and_buffer_kept_alive():
    buf = filled()
    buffer_alive = weakref.ref(buf)
    before = os_threads()
    it = buf.prefetch(8, threads=2)
    del buf  # the only reference to the buffer is the prefetcher's
    for _ in range(20):
        check_self_consistent(next(it))  # the workers still sample the whole buffer
    assert buffer_alive() is not None
    assert os_threads() >= before + 2
    del it
    gc.collect()
    deadline = time.monotonic() + 10
    while os_threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os_threads() <= before  # both workers stopped and were joined
    assert buffer_alive() is None  # and the buffer went with its last reference


def test_interpreter_exits_cleanly_with_prefetchers_open():
    code = (
        "import numpy as np, fastreplay as fr\n"
        "b = fr.PrioritizedReplayBuffer(1000, {'x': ((8,), np.float32)}, seed=0)\n"
        "b.add(x=np.ones((1000, 8), np.float32))\n"
        "its = [b.prefetch(64, depth=4, threads=2) for _ in range(3)]\n"
        "next(its[0])\n"
        "print('done')\n"
    )
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
