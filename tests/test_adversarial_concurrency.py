"""Adversarial concurrency: many threads adding multi-row batches onto small rings while others sample, get and
update priorities (reliability review 2026-11, D1). Each scenario runs in its own process with a timeout, so a
deadlock fails one test instead of stalling the run."""
import pytest

from _isolated import run_isolated

# Shared by the scenarios: writers add self-describing multi-row batches (every field derived from a counter, so a
# torn row is detectable) for a fixed time, then every thread must finish within JOIN seconds.
PRELUDE = """
import sys, threading, time
import numpy as np
import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows, check_self_consistent

JOIN = 20.0
counter = iter(range(0, 10**15, 1000))
lock = threading.Lock()
errors = []

def guarded(f):
    def run(*a):
        try:
            f(*a)
        except BaseException as e:  # reported by the main thread
            errors.append(repr(e))
    return run

stop = threading.Event()

def writer_of(b, rows):  # a thread body adding batches of `rows` self-describing rows to `b` until `stop`
    @guarded
    def writer():
        while not stop.is_set():
            with lock:
                start = next(counter)
            b.add(**cartpole_rows(start, rows))
    return writer

def finish(threads, stop, seconds):
    [t.start() for t in threads]
    time.sleep(seconds)
    stop.set()
    deadline = time.monotonic() + JOIN
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    print("stuck", stuck, "errors", len(errors), errors[:3], flush=True)
    return stuck
"""


def _check(out):
    assert not out.timed_out, f"hung: {out!r}"
    assert out.returncode == 0, out
    assert "stuck 0 errors 0" in out.stdout, out
    return out


@pytest.mark.parametrize("capacity,rows,writers", [(8, 5, 4), (8, 3, 16), (64, 40, 16), (8, 20, 4)])
def test_multi_row_adds_overlapping_laps_finish(capacity, rows, writers):
    """D1: writers whose rows in flight exceed the capacity (on the old build an ABBA deadlock in Ring::claim:
    every writer spun forever) all finish, and every stored row is whole. (8, 20, 4): each add alone exceeds the
    capacity."""
    code = PRELUDE + f"""
b = fr.ReplayBuffer({capacity}, CARTPOLE, seed=0)
ts = [threading.Thread(target=writer_of(b, {rows}), daemon=True) for _ in range({writers})]
if finish(ts, stop, 3.0) == 0:
    check_self_consistent(b.get(np.arange(len(b))))
    assert len(b) == {capacity}
"""
    _check(run_isolated(code, timeout=60))


@pytest.mark.parametrize("capacity", [8, 64])
def test_prioritized_hammer_16_threads_small_ring(capacity):
    """D1 (the scenario that first showed it): 16 threads add multi-row batches, sample, get and update priorities
    on a tiny prioritized ring. No thread may hang, no sampled row may be torn, and once they stop the tree's root
    equals the sum of its leaves."""
    code = PRELUDE + f"""
b = fr.PrioritizedReplayBuffer({capacity}, CARTPOLE, seed=0)
b.add(**cartpole_rows(10**14, {capacity}))
sampled = [0]

@guarded
def learner():
    while not stop.is_set():
        batch = b.sample(32, 0.4)
        k = check_self_consistent(batch)  # raises on a torn row
        b.update_priorities(batch.indices, (k % 7) + 0.5)
        sampled[0] += len(k)

@guarded
def reader():
    while not stop.is_set():
        check_self_consistent(b.get(np.arange(len(b))))

ts = [threading.Thread(target=writer_of(b, n), daemon=True) for n in (1, 3, 5, 7, 9, 12, {capacity} // 2 + 3, 40)]
ts += [threading.Thread(target=learner, daemon=True) for _ in range(6)]
ts += [threading.Thread(target=reader, daemon=True) for _ in range(2)]
if finish(ts, stop, 2.0) == 0:
    leaves = b._leaves()
    assert abs(b._total - leaves.sum()) <= 1e-9 * leaves.sum(), (b._total, leaves.sum())
    check_self_consistent(b.get(np.arange(len(b))))
    assert sampled[0] > 0
"""
    _check(run_isolated(code, timeout=60))


def test_prefetch_workers_with_writers_on_small_ring():
    """D1 with background sampling: 4 prefetch workers sample a prioritized ring of 8 while 8 writers add
    batches of 5 and the consumer updates priorities; everything finishes and no prefetched row is torn."""
    code = PRELUDE + """
b = fr.PrioritizedReplayBuffer(8, CARTPOLE, seed=0)
b.add(**cartpole_rows(10**14, 8))

@guarded
def consumer():
    with b.prefetch(16, depth=4, threads=4, beta=0.4) as it:
        while not stop.is_set():
            batch = next(it)
            k = check_self_consistent(batch)
            b.update_priorities(batch.indices, (k % 5) + 1.0)

ts = [threading.Thread(target=writer_of(b, 5), daemon=True) for _ in range(8)]
ts.append(threading.Thread(target=consumer, daemon=True))
finish(ts, stop, 1.5)
"""
    _check(run_isolated(code, timeout=60))
