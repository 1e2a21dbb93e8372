"""Sequence replay (docs/sequences.md): the compiled buffers against fastreplay.reference, the oracle.

Every expected value comes from the reference (which builds each sequence step by step from the episode index's
single-step rows and scans every slot for admissible starts) or from numpy, never from the compiled output.
"""
import threading

import numpy as np
import pytest

import fastreplay as fr
from fastreplay import reference as ref
from fastreplay._sequences import eta_mix

from conftest import assert_unchanged, snapshot


def fields(frame=None, h=0):
    obs = ((3,), np.float32) if frame is None else (frame, np.float32)
    f = {"obs": obs, "action": ((), np.int64), "reward": ((), np.float32), "next_obs": obs,
         "done": ((), np.bool_), "truncated": ((), np.bool_)}
    if h:
        f["h"] = ((h,), np.float32)
    return f


def fill(bufs, steps, lanes, mean_len, seed, frame=None, h=0):
    """The same random episodes into every buffer of `bufs`: `steps` adds of `lanes` rows; episodes end
    (terminated or truncated) with probability 1 / mean_len per step. Observation values are unique per step."""
    rng = np.random.default_rng(seed)
    shape = (3,) if frame is None else frame
    for i in range(steps):
        base = rng.standard_normal((lanes, *shape)).astype(np.float32) + i
        end = rng.random(lanes) < 1.0 / mean_len
        trunc = end & (rng.random(lanes) < 0.3)
        row = dict(obs=base, action=rng.integers(0, 5, lanes), reward=rng.standard_normal(lanes).astype(np.float32),
                   next_obs=base + 0.5, done=end & ~trunc, truncated=trunc)
        if h:
            row["h"] = rng.standard_normal((lanes, h)).astype(np.float32)
        for b in bufs:
            b.add(**row)


def reference_rows(r):
    """{field: array[capacity, ...]} of the reference's row for every sampleable slot (others zero), the
    sampleable mask, and per slot its episode start ticket (-1: none)."""
    cap = r.capacity
    rows = {k: np.zeros((cap, *shape), dtype) for k, (shape, dtype) in r._batch.items()}
    ok = np.zeros(cap, bool)
    start = np.full(cap, -1, np.int64)
    for s in range(len(r)):
        if r._start[s] is not None:
            start[s] = r._start[s]
        if r._is_sampleable(s):
            ok[s] = True
            for k, v in r._episode_row(s).items():
                rows[k][s] = v
    return rows, ok, start


def check_batch(batch, r, rows, ok, length, burn_in, period, end, admissible, gens=True):
    """Every property of one compiled sequence batch against the reference."""
    B = len(batch.indices)
    mask, first, slots = batch["mask"], batch["is_first"], batch.slots
    T = mask.shape[1]
    assert batch.lengths.shape == (B,)
    want_len = np.array([admissible[int(s)] for s in batch.indices])  # KeyError: not an admissible start
    np.testing.assert_array_equal(batch.lengths, want_len)
    assert T == (want_len.max() if end == "truncate" else length)
    if end == "drop":
        assert mask.all()
    np.testing.assert_array_equal(mask, np.arange(T)[None, :] < want_len[:, None])  # masks exactly
    # Steps: consecutive tickets of one lane (slot + K each step, mod capacity), one episode, all sampleable.
    K, cap = r.num_envs, r.capacity
    real_slots = slots[mask]
    assert ok[real_slots].all()
    expect = (batch.indices[:, None] + K * np.arange(T)[None, :]) % cap
    np.testing.assert_array_equal(np.where(mask, slots, -1), np.where(mask, expect, -1))
    starts = np.array([r._start[s] if s >= 0 else -1 for s in slots.ravel()], dtype=object).reshape(slots.shape)
    for b in range(B):
        assert len(set(starts[b][mask[b]])) == 1  # never crosses an episode boundary
        t0 = r._ticket(int(batch.indices[b]))
        assert ((t0 - r._start[int(batch.indices[b])]) // K) % period == 0
    assert (slots[~mask] == -1).all()
    # Every sampled step equals the reference's row for that slot; padding is zeros.
    for k in rows:
        np.testing.assert_array_equal(batch[k][mask], rows[k][real_slots], err_msg=k)
        assert not batch[k][~mask].any()
    is_first = np.zeros_like(mask)
    for b in range(B):
        for i in range(int(want_len[b])):
            s = int(slots[b, i])
            is_first[b, i] = r._ticket(s) == r._start[s]
    np.testing.assert_array_equal(first, is_first)
    if gens:
        np.testing.assert_array_equal(batch.generations, [r._gen[int(s)] for s in batch.indices])


def twins(capacity, lanes, prioritized=False, **kw):
    if prioritized:
        return (fr.PrioritizedReplayBuffer(capacity, fields(kw.pop("frame", None), kw.pop("h", 0)), alpha=0.9,
                                           seed=3, num_envs=lanes, **kw),)
    f = fields(kw.pop("frame", None), kw.pop("h", 0))
    return fr.ReplayBuffer(capacity, f, seed=3, num_envs=lanes, **kw), ref.ReplayBuffer(capacity, f, seed=3,
                                                                                           num_envs=lanes, **kw)


@pytest.mark.parametrize("end", ["truncate", "pad", "drop"])
def test_r2d2_settings_differential(end):
    """R2D2's settings (length 80, burn-in 40, period 40) over 10^5 sampled sequences per end mode, on a wrapped
    buffer with 2 lanes, 5-step returns and truncations."""
    c, r = twins(4096, 2, n_step=5, gamma=0.97)
    fill([c, r], 3000, 2, 250, seed=1)
    rows, ok, _ = reference_rows(r)
    length, burn_in, period = 80, 40, 40
    admissible = {t % r.capacity: len(r._sequence_steps(t, length)) for t in r._admissible(length, period, end)}
    assert len(admissible) > 20
    seen = np.zeros(r.capacity, np.int64)
    total = 0
    while total < 100_000:
        batch = c.sample_sequences(64, length, burn_in=burn_in, period=period, end=end)
        check_batch(batch, r, rows, ok, length, burn_in, period, end, admissible)
        np.add.at(seen, batch.indices, 1)
        total += 64
    # Uniform over the admissible starts: every one drawn, none far from its share.
    counts = seen[list(admissible)]
    assert (counts > 0).all() and seen.sum() == total
    expected = total / len(admissible)
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)


@pytest.mark.parametrize("kw", [
    dict(frame=(2, 2), frame_stack=3, next_obs="dedup", n_step=3),
    dict(frame=(2, 2), frame_stack=2, stack_padding="zero", autoreset="next_step", n_step=2),
    dict(next_obs="dedup", n_step=4, gamma=0.9),
])
@pytest.mark.parametrize("end", ["truncate", "pad", "drop"])
def test_frame_stacks_lanes_dedup(kw, end):
    """Frame stacks, dedup, next-step autoreset and n-step windows inside sequences, 3 lanes, a wrapped ring."""
    c, r = twins(600, 3, **kw)
    fill([c, r], 260, 3, 12, seed=2, frame=kw.get("frame"))
    rows, ok, _ = reference_rows(r)
    for length, burn_in, period in [(8, 2, 3), (5, 0, 1), (12, 4, None)]:
        p = length - burn_in if period is None else period
        starts = r._admissible(length, p, end)
        admissible = {t % r.capacity: len(r._sequence_steps(t, length)) for t in starts}
        for _ in range(40):
            batch = c.sample_sequences(16, length, burn_in=burn_in, period=period, end=end)
            check_batch(batch, r, rows, ok, length, burn_in, p, end, admissible)
        # The reference's own batches satisfy the same checks.
        batch = r.sample_sequences(16, length, burn_in=burn_in, period=period, end=end)
        check_batch(batch, r, rows, ok, length, burn_in, p, end, admissible)


def test_admissible_count_and_errors_match_reference():
    """B up to the number of admissible starts works, one more raises the same ValueError in both; bad arguments
    raise clear errors and change nothing (the next sample is the one a twin buffer gives)."""
    c, r = twins(300, 2, next_obs="dedup", n_step=2)
    fill([c, r], 140, 2, 15, seed=4)
    for length, period, end in [(10, 5, "drop"), (10, 5, "truncate"), (30, 1, "drop"), (4, 2, "pad")]:
        n = len(r._admissible(length, period, end))
        assert n > 0
        c.sample_sequences(n, length, period=period, end=end)
        r.sample_sequences(n, length, period=period, end=end)
        with pytest.raises(ValueError) as ec:
            c.sample_sequences(n + 1, length, period=period, end=end)
        with pytest.raises(ValueError) as er:
            r.sample_sequences(n + 1, length, period=period, end=end)
        assert str(ec.value) == str(er.value)
        assert f"larger than the number of admissible starts ({n} " in str(ec.value)
    bad = [((0, 10), {}, ValueError, "batch_size must be >= 1"),
           ((4, 0), {}, ValueError, "length must be >= 1"),
           ((4, 10), {"burn_in": 10}, ValueError, "burn_in must be smaller than length"),
           ((4, 10), {"burn_in": -1}, ValueError, "burn_in must be >= 0"),
           ((4, 10), {"period": 0}, ValueError, "period must be >= 1"),
           ((4, 10), {"end": "zero"}, ValueError, "end must be 'truncate', 'pad' or 'drop'"),
           ((4, 10.0), {}, TypeError, "length must be an int"),
           ((10**6, 10), {}, ValueError, "larger than the number of admissible starts")]
    twin, _ = twins(300, 2, next_obs="dedup", n_step=2)
    fill([twin], 140, 2, 15, seed=4)
    c2, _ = twins(300, 2, next_obs="dedup", n_step=2)
    fill([c2], 140, 2, 15, seed=4)
    before = snapshot(c2)
    for args, kw, exc, text in bad:
        for buf in (c2, r):
            with pytest.raises(exc, match=text):
                buf.sample_sequences(*args, **kw)
    assert_unchanged(c2, before)
    a, b = c2.sample_sequences(8, 10), twin.sample_sequences(8, 10)
    np.testing.assert_array_equal(a.indices, b.indices)  # the generator did not move
    plain = fr.ReplayBuffer(10, {"x": ((), np.float32)})
    plain.add(x=1.0)
    with pytest.raises(TypeError, match="needs an episodic buffer"):
        plain.sample_sequences(1, 1)
    with pytest.raises(TypeError, match="needs an episodic buffer"):
        ref.ReplayBuffer(10, {"x": ((), np.float32)}).sample_sequences(1, 1)


def test_sequence_priorities_eta_mix_against_numpy():
    """update_sequence_priorities stores (eta*max + (1-eta)*mean over trained steps + eps)**alpha, computed in C++,
    equal to numpy's; sampling follows the leaves; stale sequences are skipped; the reference agrees."""
    (c,) = twins(2000, 2, prioritized=True, n_step=3)
    rp = ref.PrioritizedReplayBuffer(2000, fields(), alpha=0.9, seed=3, num_envs=2, n_step=3)
    fill([c, rp], 700, 2, 60, seed=5)
    length, burn_in, period = 20, 5, 10
    rng = np.random.default_rng(0)
    for eta in (0.9, 0.0, 1.0):
        batch = c.sample_sequences(32, length, burn_in=burn_in, period=period, beta=0.6)
        td = rng.random(batch["mask"].shape) * 5
        assert c.update_sequence_priorities(batch, td, eta=eta) == 0
        mix = eta_mix(td, batch.trained, eta)
        leaves = c._sequence_leaves(length, period, "truncate")
        last = {}  # the last of duplicate rows wins
        for b, item in enumerate(batch.sequence_ids):
            if np.isfinite(mix[b]):
                last[int(item)] = mix[b]
        for item, m in last.items():
            assert leaves[item] == pytest.approx((m + c.eps) ** 0.9, rel=1e-12)
        # the reference, given the same batch shape, computes the same mix
        rb = rp.sample_sequences(32, length, burn_in=burn_in, period=period, beta=0.6)
        rtd = rng.random(rb["mask"].shape) * 5
        rp.update_sequence_priorities(rb, rtd, eta=eta)
        rleaves = rp._sequence_leaves(length, period, "truncate")
        rmix = eta_mix(rtd, rb.trained, eta)
        for b, t in enumerate(rb.sequence_ids):
            if np.isfinite(rmix[b]) and list(rb.sequence_ids).index(t) == b and list(rb.sequence_ids[::-1]).index(t) == 31 - b:
                assert rleaves[int(t)] == pytest.approx((rmix[b] + rp.eps) ** 0.9, rel=1e-12)
    # Sampling follows the leaves: one sequence with a huge priority takes almost every draw.
    batch = c.sample_sequences(1, length, burn_in=burn_in, period=period)
    td = np.zeros(batch["mask"].shape)
    td[0, burn_in:] = 1e6
    c.update_sequence_priorities(batch, td)
    hits = sum((c.sample_sequences(64, length, burn_in=burn_in, period=period).indices == batch.indices[0]).sum()
               for _ in range(20))
    assert hits > 0.95 * 64 * 20
    w = c.sample_sequences(64, length, burn_in=burn_in, period=period, beta=1.0).weights
    assert w.dtype == np.float32 and (w > 0).all() and (w <= 1).all()
    # Stale: overwrite every stored step, then update the old batch.
    old = c.sample_sequences(16, length, burn_in=burn_in, period=period)
    fill([c], 1000, 2, 60, seed=6)
    before = c._sequence_leaves(length, period, "truncate")
    assert c.update_sequence_priorities(old, np.ones(old["mask"].shape)) == 16
    np.testing.assert_array_equal(before, c._sequence_leaves(length, period, "truncate"))


def test_alpha_change_and_clear_keep_sequence_leaves_right():
    """buf.alpha = a recomputes the sequence leaves from their priorities; after clear() an old batch is stale."""
    (c,) = twins(800, 2, prioritized=True)
    fill([c], 300, 2, 40, seed=10)
    batch = c.sample_sequences(16, 10, burn_in=2)
    td = np.random.default_rng(1).random(batch["mask"].shape) * 3
    c.update_sequence_priorities(batch, td)
    mix = eta_mix(td, batch.trained, 0.9)
    last = {int(i): m for i, m in zip(batch.sequence_ids, mix) if np.isfinite(m)}  # the last of duplicates wins
    assert last
    c.alpha = 0.5
    leaves = c._sequence_leaves(10, 8, "truncate")
    for item, m in last.items():
        assert leaves[item] == pytest.approx((m + c.eps) ** 0.5, rel=1e-12)
    c.clear()
    assert c.update_sequence_priorities(batch, td) == 16
    assert not c._sequence_leaves(10, 8, "truncate").any()


def test_sequence_priority_errors_change_nothing():
    c = fr.PrioritizedReplayBuffer(500, fields(), alpha=1.0, seed=3, num_envs=1)
    fill([c], 300, 1, 30, seed=7)
    batch = c.sample_sequences(8, 10, burn_in=2)
    before = c._sequence_leaves(10, 8, "truncate").copy()
    shape = batch["mask"].shape
    bad = [(np.ones((8, shape[1] + 1)), {}, ValueError, "must have the batch's shape"),
           (-np.ones(shape), {}, ValueError, "finite and >= 0"),
           (np.full(shape, np.nan), {}, ValueError, "finite and >= 0"),
           (np.ones(shape), {"eta": 1.5}, ValueError, "eta must be in"),
           (np.ones(shape), {"eta": "x"}, TypeError, "eta must be a real number"),
           (np.full(shape, 1e308), {}, ValueError, "beyond 2\\*\\*1022")]
    for td, kw, exc, text in bad:
        with pytest.raises(exc, match=text):
            c.update_sequence_priorities(batch, td, **kw)
    with pytest.raises(TypeError, match="SequenceBatch"):
        c.update_sequence_priorities(dict(batch), np.ones(shape))
    np.testing.assert_array_equal(before, c._sequence_leaves(10, 8, "truncate"))
    u, _ = twins(500, 1)
    fill([u], 50, 1, 30, seed=7)
    with pytest.raises(TypeError, match="needs a PrioritizedReplayBuffer"):
        u.update_sequence_priorities(u.sample_sequences(2, 5), np.ones((2, 5)))


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_update_field_recurrent_state(impl):
    """A stored recurrent state h: written at add time, refreshed by index after a learner pass; sequences and
    get() return the new values, generations (and so priorities) are kept; bad input changes nothing."""
    c, r = twins(400, 2, h=4, n_step=2)
    buf = c if impl == "compiled" else r
    fill([buf], 150, 2, 20, seed=8, h=4)
    batch = buf.sample_sequences(8, 12, burn_in=4)
    slots = batch.slots[batch["mask"]]
    uniq = np.unique(slots)
    fresh = np.arange(len(uniq) * 4, dtype=np.float32).reshape(-1, 4)
    gens = buf.generations(uniq)
    assert buf.update_field("h", uniq, fresh, generations=gens) == 0
    np.testing.assert_array_equal(buf.get(uniq)["h"], fresh)
    np.testing.assert_array_equal(buf.generations(uniq), gens)
    again = buf.get(batch.indices)
    np.testing.assert_array_equal(again["h"], fresh[np.searchsorted(uniq, batch.indices)])
    # A stale generation is skipped.
    assert buf.update_field("h", uniq[:2], np.zeros((2, 4)), generations=gens[:2] + 1) == 2
    np.testing.assert_array_equal(buf.get(uniq[:2])["h"], fresh[:2])
    before = {k: v.copy() for k, v in buf.get(uniq).items()}
    bad = [(("x", uniq, fresh), ValueError, "no stored field 'x'"),
           (("h", uniq, fresh[:-1]), ValueError, "must have shape"),
           (("h", uniq, fresh.astype(np.complex64)), TypeError, "cannot be cast"),
           (("h", uniq.astype(float), fresh), TypeError, "indices must be a 1-d array of ints"),
           (("h", np.append(uniq[:-1], 10_000), fresh), IndexError, "out of range")]
    for args, exc, text in bad:
        with pytest.raises(exc, match=text):
            buf.update_field(*args)
    after = buf.get(uniq)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_concurrent_adds_never_tear_a_sequence():
    """A writer adds (and wraps the ring) while samplers draw sequences: every sequence is consecutive tickets
    of one lane and one episode, and every step's columns agree with each other (obs, next_obs and action all
    encode the same ticket)."""
    K, cap = 2, 512
    f = {"obs": ((2,), np.float64), "action": ((), np.int64), "reward": ((), np.float32),
         "next_obs": ((2,), np.float64), "done": ((), np.bool_)}
    buf = fr.ReplayBuffer(cap, f, seed=1, num_envs=K)
    ep = [0, 0]
    rng = np.random.default_rng(0)

    def add(t0):
        done = rng.random(K) < 0.05
        obs = np.array([[t0 + k, ep[k]] for k in range(K)], np.float64)
        buf.add(obs=obs, action=obs[:, 0].astype(np.int64), reward=np.zeros(K, np.float32), next_obs=obs + 0.5,
                done=done)
        for k in range(K):
            ep[k] += int(done[k])

    t = 0
    for _ in range(cap // K):
        add(t)
        t += K
    stop = threading.Event()
    errors = []

    def writer():
        nonlocal t
        while not stop.is_set():
            add(t)
            t += K

    def sampler():
        try:
            for _ in range(300):
                b = buf.sample_sequences(16, 10, period=3)
                m = b["mask"]
                o = b["obs"]
                for i in range(16):
                    n = int(m[i].sum())
                    tick = o[i, :n, 0]
                    assert (np.diff(tick) == K).all()
                    assert (o[i, :n, 1] == o[i, 0, 1]).all()
                    assert (b["action"][i, :n] == tick).all()
                    assert (b["next_obs"][i, :n, 0] == tick + 0.5).all()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    w = threading.Thread(target=writer)
    ss = [threading.Thread(target=sampler) for _ in range(2)]
    w.start()
    for s in ss:
        s.start()
    for s in ss:
        s.join()
    stop.set()
    w.join()
    assert not errors, errors[0]


def test_clear_and_checkpoint_rebuild_the_index(tmp_path):
    c, r = twins(300, 2, n_step=2)
    fill([c, r], 100, 2, 15, seed=9)
    c.sample_sequences(4, 6)
    c.clear()
    with pytest.raises(ValueError, match="admissible starts \\(0 "):
        c.sample_sequences(1, 6)
    fill([c], 100, 2, 15, seed=9)
    c.save(tmp_path / "b.frb")
    d = fr.ReplayBuffer.load(tmp_path / "b.frb")
    rr = ref.ReplayBuffer(300, fields(), seed=3, num_envs=2, n_step=2)
    fill([rr], 100, 2, 15, seed=9)
    rows, ok, _ = reference_rows(rr)
    starts = rr._admissible(6, 6, "pad")
    admissible = {t % 300: len(rr._sequence_steps(t, 6)) for t in starts}
    for buf in (c, d):
        check_batch(buf.sample_sequences(len(starts), 6, end="pad"), rr, rows, ok, 6, 0, 6, "pad", admissible, False)
        with pytest.raises(ValueError, match="admissible starts"):
            buf.sample_sequences(len(starts) + 1, 6, end="pad")
