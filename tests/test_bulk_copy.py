"""The large-row gather (csrc/fastreplay/bulk_copy.h: rows over 256 bytes, copied as several interleaved streams)
against the pure-Python reference: rows of odd sizes and sizes around multiples of 64 and 4096, every batch size
from 1 to 40 and some larger, next to small-row fields, in uniform and prioritized buffers, before and after the
ring wraps."""
import numpy as np
import pytest

import fastreplay as fr
from fastreplay import reference as ref

LARGE = {  # row bytes in the comment
    "u8_257": ((257,), np.uint8),  # 257: just above the small-row limit
    "u8_4095": ((4095,), np.uint8),
    "u8_4097": ((4097,), np.uint8),
    "f32_1025": ((1025,), np.float32),  # 4100
    "u16_3x1001": ((3, 1001), np.uint16),  # 6006
    "c64_513": ((513,), np.complex64),  # 4104
    "atari": ((4, 84, 84), np.uint8),  # 28224
}
SMALL = {"action": ((), np.int64), "done": ((), np.bool_), "s3": ((3,), np.uint8)}


def rows(fields, n, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for k, (shape, dt) in fields.items():
        if np.dtype(dt).kind == "c":
            out[k] = (rng.standard_normal((n,) + shape) + 1j * rng.standard_normal((n,) + shape)).astype(dt)
        elif np.dtype(dt) == np.bool_:
            out[k] = rng.random((n,) + shape) < 0.5
        elif np.dtype(dt).kind == "f":
            out[k] = rng.standard_normal((n,) + shape).astype(dt)
        else:
            out[k] = rng.integers(0, np.iinfo(dt).max, (n,) + shape, dtype=dt, endpoint=True)
    return out


def filled(cls_pair, fields, capacity, added, **kw):
    a, b = cls_pair[0](capacity, fields, seed=1, **kw), cls_pair[1](capacity, fields, seed=1, **kw)
    for s in range(0, added, 50):
        r = rows(fields, min(50, added - s), s)
        a.add(**r)
        b.add(**r)
    return a, b


BATCH_SIZES = list(range(1, 41)) + [64, 100, 257]


@pytest.mark.parametrize("field", list(LARGE))
@pytest.mark.parametrize("added", [90, 230])  # 230 > capacity: the ring has wrapped
def test_get_matches_reference(field, added):
    fields = {field: LARGE[field], **SMALL}
    a, b = filled((fr.ReplayBuffer, ref.ReplayBuffer), fields, 150, added)
    rng = np.random.default_rng(5)
    for n in BATCH_SIZES:
        idx = rng.integers(0, len(a), n)
        idx[0], idx[-1] = 0, len(a) - 1  # the first and last stored rows
        ga, gb = a.get(idx), b.get(idx)
        for k in fields:
            assert ga[k].dtype == gb[k].dtype and ga[k].shape == (n,) + fields[k][0]
            np.testing.assert_array_equal(ga[k], gb[k], err_msg=f"{k}, batch size {n}")


@pytest.fixture(params=[1, 2, 3], ids=["1 thread", "2 copy threads", "3 copy threads"])
def copy_threads(request):
    """Each test with the copy crew off and with helpers (fr.set_copy_threads), restored afterwards."""
    before = fr.get_copy_threads()
    fr.set_copy_threads(request.param)
    yield request.param
    fr.set_copy_threads(before)


@pytest.mark.parametrize("prioritized", [False, True])
def test_sample_rows_are_stored_rows(prioritized, copy_threads):
    fields = {**LARGE, **SMALL}
    if prioritized:
        pair, kw = (fr.PrioritizedReplayBuffer, ref.PrioritizedReplayBuffer), dict(alpha=0.6)
    else:
        pair, kw = (fr.ReplayBuffer, ref.ReplayBuffer), {}
    a, b = filled(pair, fields, 120, 200, **kw)
    out = None
    for n in BATCH_SIZES:
        batch = a.sample(n)
        want = b.get(batch.indices)
        for k in fields:
            np.testing.assert_array_equal(batch[k], want[k], err_msg=f"{k}, batch size {n}")
        out = a.sample(n, out=batch)  # refilled in place: the same path into a kept batch
        want = b.get(out.indices)
        for k in fields:
            np.testing.assert_array_equal(out[k], want[k], err_msg=f"{k}, batch size {n}, out=")


def test_copy_threads_setting():
    before = fr.get_copy_threads()
    assert before == 1  # off by default
    try:
        fr.set_copy_threads(4)
        assert fr.get_copy_threads() == 4
        for bad, err, msg in [(0, ValueError, r"set_copy_threads: n must be in \[1, 64\], got 0"),
                              (65, ValueError, r"got 65"), (-1, ValueError, r"got -1"),
                              (2**70, ValueError, r"got 1180591620717411303424"),
                              (2.0, TypeError, r"set_copy_threads: n must be an int, got float"),
                              (True, TypeError, r"got bool"), ("2", TypeError, r"got str")]:
            with pytest.raises(err, match=msg):
                fr.set_copy_threads(bad)
            assert fr.get_copy_threads() == 4  # unchanged by a rejected value
    finally:
        fr.set_copy_threads(before)


def test_threads_sampling_with_copy_helpers(copy_threads):
    """Python threads sampling Atari batches at once (one owns the crew, the others copy alone) while rows are
    added: every sampled row is a stored row, whole."""
    import threading

    fields = {"obs": ((4, 84, 84), np.uint8), "k": ((), np.int64)}
    buf = fr.ReplayBuffer(300, fields, seed=0)

    def rows_of(k):  # every byte of row k's frame derived from k
        k = np.asarray(k)
        return np.broadcast_to((k % 251).astype(np.uint8)[:, None, None, None], (len(k), 4, 84, 84))

    buf.add(obs=rows_of(np.arange(300)), k=np.arange(300))
    stop, errors = threading.Event(), []

    def sampler():
        try:
            while not stop.is_set():
                b = buf.sample(32)
                np.testing.assert_array_equal(b["obs"], rows_of(b["k"]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=sampler) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(300, 3000, 10):
        buf.add(obs=rows_of(np.arange(start, start + 10)), k=np.arange(start, start + 10))
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
