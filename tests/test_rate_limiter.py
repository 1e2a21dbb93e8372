"""RateLimiter (Reverb's samples-per-insert semantics) and RateLimitedBuffer: checks, blocking, band, checkpoints."""
import threading
import time

import numpy as np
import pytest

import fastreplay as fr
from fastreplay.rate_limiter import RateLimitCancelled, read_limiter_state

FIELDS = {"obs": ((3,), np.float32), "action": ((), np.int64)}


def rows(n, start=0):
    return {"obs": np.full((n, 3), start, np.float32), "action": np.arange(start, start + n, dtype=np.int64)}


@pytest.mark.parametrize("args, kwargs, match", [
    ((0.0, 1, 10), {}, "samples_per_insert"),
    ((-1.0, 1, 10), {}, "samples_per_insert"),
    ((float("nan"), 1, 10), {}, "samples_per_insert"),
    ((1.0, 0, 10), {}, "min_size_to_sample"),
    ((1.0, 1.5, 10), {}, "min_size_to_sample"),
    ((4.0, 10, 3.9), {}, "2 \\* max"),          # band 7.8 < 2 * 4: Reverb's deadlock check
    ((0.5, 10, 0.99), {}, "2 \\* max"),         # band 1.98 < 2 * 1
    ((1.0, 1), {}, "either error_buffer"),
    ((1.0, 1, 5), {"min_diff": 0, "max_diff": 9}, "either error_buffer"),
    ((1.0, 1), {"min_diff": 5, "max_diff": 5}, "min_diff < max_diff"),
])
def test_rejects_configurations_reverb_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fr.RateLimiter(*args, **kwargs)


def test_warns_when_band_is_below_the_minimum_times_spi():
    with pytest.warns(RuntimeWarning, match="deadlock"):
        fr.RateLimiter(1.0, 100, min_diff=-10, max_diff=10)


def test_semantics_match_reverb_single_thread():
    # SampleToInsertRatio(spi=2, min_size=3, error_buffer=4): band [2, 10].
    rl = fr.RateLimiter(2.0, 3, 4.0)
    assert (rl.min_diff, rl.max_diff) == (2.0, 10.0)
    assert not rl.sample(1, block=False)           # below the minimum size
    assert rl.insert(3, block=False)               # free up to the minimum
    assert rl.insert(1, block=False) and rl.insert(1, block=False)  # error 8, then 10 <= max_diff
    assert not rl.insert(1, block=False)           # 12 > 10
    assert rl.counters == {"inserts": 5, "samples": 0}
    assert rl.sample(8, block=False)               # 10 - 8 = 2 >= min_diff
    assert not rl.sample(1, block=False)
    assert rl.error == 2.0
    assert rl.can_insert(4) and not rl.can_insert(5)
    with pytest.raises(ValueError, match="more than the band"):
        rl.sample(9)
    with pytest.raises(ValueError, match="n must be an int"):
        rl.insert(-1)


def test_timeout_and_gil_released_while_blocked():
    rl = fr.RateLimiter(1.0, 5, 3.0)
    ticks = []
    stop = threading.Event()

    def spin():  # a Python thread that must keep running while the main thread is blocked in C++
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="within 0.3 s"):
        rl.sample(1, timeout=0.3)
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    assert 0.3 <= elapsed < 0.35 + 0.2
    assert len(ticks) > 50
    assert rl.counters == {"inserts": 0, "samples": 0}


def test_blocked_sample_proceeds_when_a_thread_inserts():
    rl = fr.RateLimiter(1.0, 4, 3.0)
    got = []
    t = threading.Thread(target=lambda: got.append(rl.sample(2, timeout=5)))
    t.start()
    time.sleep(0.05)
    assert not got
    rl.insert(4)
    t.join()
    assert got == [True] and rl.counters == {"inserts": 4, "samples": 2}


def test_cancel_wakes_blocked_calls():
    rl = fr.RateLimiter(1.0, 4, 3.0)
    errors = []

    def blocked():
        try:
            rl.sample(1)
        except RateLimitCancelled as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.05)
    rl.cancel()
    t.join(2)
    assert not t.is_alive() and len(errors) == 1 and rl.cancelled
    with pytest.raises(RateLimitCancelled):
        rl.insert(1)


def test_samples_per_insert_settable_live_and_checked():
    rl = fr.RateLimiter(1.0, 2, min_diff=-4, max_diff=4)
    rl.samples_per_insert = 2.0
    assert rl.samples_per_insert == 2.0
    with pytest.raises(ValueError, match="2 \\* max"):
        rl.samples_per_insert = 5.0
    assert rl.samples_per_insert == 2.0


@pytest.mark.parametrize("prioritized", [False, True])
def test_fast_writer_keeps_the_band_at_every_call(prioritized):
    """A writer thread ~10x faster than the sampler: after every insert error <= max_diff, after every sample
    error >= min_diff; the counters equal the rows the buffer saw."""
    spi, min_size, eb, B, n = 4.0, 64, 64.0, 16, 4    # band 128 >= B + n * spi = 32
    rl = fr.RateLimiter(spi, min_size, eb)
    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    buf = fr.RateLimitedBuffer(cls(4096, FIELDS, seed=0), rl)
    lock = threading.Lock()
    log = []
    stop = threading.Event()
    # Violations are checked on snapshots taken under a lock that both sides hold around (call + snapshot); the
    # limiter itself takes no Python lock, so this only serialises the test's bookkeeping.
    inserted = [0]

    def writer():
        k = 0
        while not stop.is_set():
            if buf.add(**rows(n, k), block=False):
                k += n
                with lock:
                    c = rl.counters
                    log.append(("i", c["inserts"], c["samples"]))
            else:
                time.sleep(0.0001)
        inserted[0] = k

    sampled = 0
    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        batch = buf.sample(B, timeout=5)
        sampled += B
        assert batch.batch_size == B
        with lock:
            c = rl.counters
            log.append(("s", c["inserts"], c["samples"]))
        time.sleep(0.002)  # the learner's work
    stop.set()
    t.join()
    assert sampled >= 100
    c = rl.counters
    assert c["samples"] == sampled and c["inserts"] == inserted[0] == buf.total_added
    for kind, i, s in log:
        err = i * spi - s
        if i > min_size:
            assert err <= rl.max_diff, (kind, i, s)
        if s > 0:
            assert err >= rl.min_diff, (kind, i, s)
    # The writer could have inserted far more: it is the limiter that held it back (about spi rows sampled each).
    assert abs(c["inserts"] * spi - c["samples"]) <= max(abs(rl.min_diff), abs(rl.max_diff))


def test_rejected_add_takes_its_rows_back():
    rl = fr.RateLimiter(1.0, 2, 3.0)
    buf = fr.RateLimitedBuffer(fr.ReplayBuffer(16, FIELDS), rl)
    with pytest.raises((ValueError, TypeError)):
        buf.add(obs=np.zeros((2, 5), np.float32), action=np.zeros(2, np.int64))
    assert rl.counters == {"inserts": 0, "samples": 0} and len(buf) == 0


def test_counters_survive_a_checkpoint(tmp_path):
    rl = fr.RateLimiter(0.5, 8, 16.0)
    buf = fr.RateLimitedBuffer(fr.PrioritizedReplayBuffer(64, FIELDS, seed=1), rl)
    buf.add(**rows(20))
    buf.sample(4)
    buf.update_priorities(np.arange(5), np.linspace(0.1, 2, 5))
    path = tmp_path / "ckpt.zip"
    buf.save(path)
    back = fr.RateLimitedBuffer.load(path, fr.PrioritizedReplayBuffer)
    assert back.limiter.state() == rl.state()
    np.testing.assert_array_equal(back.buffer.priorities, buf.buffer.priorities)
    assert read_limiter_state(path)["inserts"] == 20
    plain = fr.PrioritizedReplayBuffer.load(path)  # the extra member does not disturb a plain load
    assert len(plain) == 20


def test_malformed_limiter_state_is_a_clear_error():
    with pytest.raises(ValueError, match="missing entry"):
        fr.RateLimiter.from_state({"samples_per_insert": 1.0})
    with pytest.raises(ValueError, match="inserts must be an int"):
        fr.RateLimiter.from_state({"samples_per_insert": 1.0, "min_size_to_sample": 1, "min_diff": -2,
                                   "max_diff": 2, "inserts": -5, "samples": 0})
