"""PrioritizedReplayBuffer: tree invariants, proportional and stratified sampling, weights, updates, staleness."""
import numpy as np
import pytest
from scipy import stats

import fastreplay as fr
from fastreplay import reference
from _rows import CARTPOLE, cartpole_rows, check_self_consistent
from conftest import assert_unchanged, snapshot

X = {"x": ((), np.int64)}


def filled(cap, n=None, alpha=0.6, eps=1e-6, seed=0, **kw):
    buf = fr.PrioritizedReplayBuffer(cap, X, alpha=alpha, eps=eps, seed=seed, **kw)
    buf.add(x=np.arange(cap if n is None else n))
    return buf


def test_new_transitions_get_max_priority_all_time_and_stored():
    a = filled(4, alpha=1.0, eps=0.0)
    a.update_priorities([0, 1], [5.0, 2.0])
    a.update_priorities([0], [0.5])  # the all-time max stays 5
    a.add(x=[9])  # overwrites slot 0
    assert a.priorities.tolist() == [5.0, 2.0, 1.0, 1.0] and a.max_priority == 5.0
    s = filled(4, alpha=1.0, eps=0.0, max_priority="stored")
    s.update_priorities([0, 1], [5.0, 2.0])
    s.update_priorities([0], [0.5])
    assert s.max_priority == 2.0
    s.add(x=[9])
    assert s.priorities.tolist() == [2.0, 2.0, 1.0, 1.0]


def test_leaves_are_p_plus_eps_to_alpha_and_root_is_their_sum():
    rng = np.random.default_rng(0)
    buf = filled(1000, alpha=0.7, eps=0.01)
    p = rng.exponential(size=1000)
    buf.update_priorities(np.arange(1000), p)
    np.testing.assert_allclose(buf._leaves(), (p + 0.01) ** 0.7, rtol=1e-12)
    assert buf._total == pytest.approx(np.sum((p + 0.01) ** 0.7), rel=1e-12)
    assert buf._min == pytest.approx(np.min((p + 0.01) ** 0.7), rel=1e-12)


@pytest.mark.parametrize("cap", [1, 3, 7, 100, 1000, 4097])
def test_tree_invariants_after_random_updates(cap):
    rng = np.random.default_rng(cap)
    buf = filled(cap, alpha=1.0, eps=0.0)
    leaves = np.ones(cap)
    for _ in range(50):
        k = rng.integers(1, 2 * cap + 1)
        idx = rng.integers(0, cap, k)
        pr = rng.choice([0.0, 1e-3, 1.0, 50.0], k) * rng.random(k)
        buf.update_priorities(idx, pr)
        for i, v in zip(idx, pr):  # last duplicate wins
            leaves[i] = v
    np.testing.assert_array_equal(buf._leaves()[:cap], leaves)
    assert buf._total == pytest.approx(leaves.sum(), rel=1e-12, abs=1e-300)
    positive = leaves[leaves > 0]
    assert buf._min == (positive.min() if positive.size else np.inf)
    if leaves.sum() > 0:  # every sample lands where cumsum + searchsorted says, and never on a zero leaf
        b = buf.sample(min(4 * cap, 4096), beta=0.5)
        assert np.all(leaves[b.indices] > 0)


def test_sampling_frequencies_chi_square_several_distributions():
    rng = np.random.default_rng(1)
    for cap, prio in [(37, rng.random(37)), (300, rng.pareto(1.2, 300)), (129, np.r_[np.zeros(64), np.ones(65)])]:
        buf = filled(cap, alpha=0.6, eps=1e-6, seed=cap)
        buf.update_priorities(np.arange(cap), prio)
        leaf = (prio + 1e-6) ** 0.6
        expected_p = leaf / leaf.sum()
        counts = np.zeros(cap)
        for _ in range(200):
            counts += np.bincount(buf.sample(1000, beta=0.4).indices, minlength=cap)
        mask = expected_p * counts.sum() >= 5
        f_exp = expected_p[mask] * counts.sum()
        f_obs = counts[mask]
        f_exp *= f_obs.sum() / f_exp.sum()
        chi2, p = stats.chisquare(f_obs, f_exp)
        assert p > 1e-4, (cap, chi2, p)
        assert counts[expected_p * counts.sum() < 1e-3].sum() <= 2


def test_stratified_each_sample_in_its_own_slice():
    rng = np.random.default_rng(2)
    cap, B = 500, 64
    buf = filled(cap, alpha=1.0, eps=0.0)
    p = rng.random(cap) + 0.01
    buf.update_priorities(np.arange(cap), p)
    cum = np.cumsum(p)
    total = cum[-1]
    for _ in range(20):
        idx = buf.sample(B, beta=0.0).indices
        lo, hi = np.r_[0, cum][idx], cum[idx]  # mass interval covered by each leaf
        for k in range(B):  # leaf k's interval intersects stratum k
            s0, s1 = k * total / B, (k + 1) * total / B
            assert lo[k] <= s1 * (1 + 1e-12) and hi[k] >= s0 * (1 - 1e-12)
        assert np.all(np.diff(idx) >= 0)


def test_weights_match_formula_float32():
    rng = np.random.default_rng(3)
    cap, n = 256, 200
    buf = fr.PrioritizedReplayBuffer(cap, X, alpha=0.6, eps=1e-3, seed=0)
    buf.add(x=np.arange(n))
    p = rng.exponential(size=n)
    buf.update_priorities(np.arange(n), p)
    leaf = (p + 1e-3) ** 0.6
    P = leaf / leaf.sum()
    for beta in [0.0, 0.4, 1.0]:
        b = buf.sample(128, beta=beta)
        w = (n * P[b.indices]) ** -beta / ((n * P.min()) ** -beta)
        assert b.weights.dtype == np.float32
        np.testing.assert_allclose(b.weights, w, rtol=2e-6)
        assert np.all(b.weights <= 1.0) and np.all(b.weights > 0)


def test_stale_indices_skip_or_raise():
    buf = fr.PrioritizedReplayBuffer(4, X, alpha=1.0, eps=0.0, seed=0)
    buf.add(x=np.arange(4))
    b = buf.sample(8, beta=0.4)
    overwritten = set(range(2))
    buf.add(x=[10, 11])  # slots 0 and 1 now hold new transitions
    skipped = buf.update_priorities(b, np.full(8, 7.0))  # the batch carries its generations
    assert skipped == sum(i in overwritten for i in b.indices)
    pr = buf.priorities
    for slot in range(4):
        assert pr[slot] == (7.0 if slot not in overwritten and slot in b.indices else 1.0)
    # explicit generations with a copy of the indices (as from torch) detect the same rows
    b2 = buf.sample(8, beta=0.4)
    buf.add(x=[12])
    assert buf.update_priorities(b2.indices.copy(), np.ones(8), generations=b2.generations) == int((b2.indices == 2).sum())
    b4 = buf.sample(8, beta=0.4)
    buf.add(x=[13])
    assert buf.update_priorities(b4, np.ones(8)) == int((b4.indices == 3).sum())
    strict = fr.PrioritizedReplayBuffer(4, X, seed=0, stale="raise")
    strict.add(x=np.arange(4))
    b3 = strict.sample(4, beta=0.4)
    strict.add(x=np.arange(4))
    before = snapshot(strict)
    with pytest.raises(ValueError, match=r"update_priorities: index \d at position 0 is stale"):
        strict.update_priorities(b3, np.ones(4))
    assert_unchanged(strict, before)


def test_stale_after_clear():
    buf = filled(4)
    b = buf.sample(4, beta=0.4)
    buf.clear()
    buf.add(x=np.arange(4))
    assert buf.update_priorities(b, np.full(4, 3.0)) == 4


@pytest.mark.parametrize("make", [fr.PrioritizedReplayBuffer, reference.PrioritizedReplayBuffer])
@pytest.mark.parametrize("indices", ["own", "copy", "list", "torch"])
def test_stale_detection_is_the_same_for_every_form_of_the_indices(make, indices):
    """One mechanism: generations travel with the batch or through generations=; the indices alone carry none,
    whether they are the batch's own array, a copy, a list or a tensor."""
    buf = make(4, X, alpha=1.0, eps=0.0, seed=0)
    buf.add(x=np.arange(4))
    b = buf.get([0, 1, 2, 3])
    buf.add(x=[10])  # slot 0 now holds a new transition: row 0 of b is stale
    idx = {"own": lambda: b.indices, "copy": lambda: b.indices.copy(), "list": lambda: b.indices.tolist(),
           "torch": lambda: pytest.importorskip("torch").from_numpy(b.indices.copy())}[indices]()
    assert buf.update_priorities(idx, np.full(4, 2.0), generations=b.generations) == 1
    assert buf.priorities.tolist() == [1.0, 2.0, 2.0, 2.0]
    assert buf.update_priorities(idx, np.full(4, 3.0)) == 0  # no generations: no check, every row is updated
    assert buf.priorities.tolist() == [3.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize("args,exc,match", [
    (([0, 1], [1.0, -1.0]), ValueError, r"priorities must be finite and >= 0, got -1\.0+ at position 1"),
    (([0], [np.nan]), ValueError, r"priorities must be finite and >= 0, got nan"),
    (([0], [np.inf]), ValueError, r"priorities must be finite and >= 0, got inf"),
    (([0, 9], [1.0, 1.0]), IndexError, r"update_priorities: index 9 at position 1 is out of range for a buffer holding 6"),
    (([7], [1.0]), IndexError, r"index 7 at position 0 is out of range"),  # never written
    (([-1], [1.0]), IndexError, r"index -1"),
    (([0, 1], [1.0]), ValueError, r"indices and priorities must have the same length, got 2 indices and 1 priorities"),
    (([0.5], [1.0]), TypeError, r"indices must be integers"),
    (([0], ["a"]), TypeError, r"priorities must be real numbers"),
    (([0], [1.0], [1, 2]), ValueError, r"generations must have one entry per index"),
])
def test_bad_update_priorities_change_nothing(args, exc, match):
    buf = filled(8, n=6)
    buf.update_priorities([2], [3.0])
    before = snapshot(buf)
    with pytest.raises(exc, match=match):
        buf.update_priorities(*args)
    assert_unchanged(buf, before)


def _forms(a):
    """The same 1-d values as arrays the bindings take as they are (contiguous, native, of the core's dtype) and as
    arrays they convert (another dtype, strided, byte-swapped, read-only, a list)."""
    strided = np.repeat(a, 2)[::2]
    ro = a.copy()
    ro.flags.writeable = False
    return {"same": a, "strided": strided, "swapped": a.astype(a.dtype.newbyteorder()), "readonly": ro,
            "list": a.tolist()}


@pytest.mark.parametrize("pdtype", [np.float64, np.float32, np.float16, np.int32])
def test_every_form_of_indices_and_priorities_stores_the_same_priorities(pdtype):
    rng = np.random.default_rng(3)
    idx = rng.permutation(50)[:20].astype(np.int64)
    p = (rng.random(20) * 100).astype(pdtype)
    want = np.zeros(50)
    want[idx] = p.astype(np.float64)  # the priorities as float64 values, whatever dtype they came in
    for iname, i in _forms(idx).items():
        for pname, q in _forms(p).items():
            buf = filled(50, alpha=1.0, eps=0.0)
            buf.update_priorities(np.arange(50), np.zeros(50))
            assert buf.update_priorities(i, q, generations=_forms(buf.generations(idx))[iname]) == 0
            np.testing.assert_array_equal(buf.priorities, want, err_msg=f"indices {iname}, priorities {pname}")


@pytest.mark.parametrize("bad", [np.float32(np.nan), np.float32(np.inf), np.float32(-1.0)])
def test_bad_float32_priorities_change_nothing(bad):
    buf = filled(8, n=6)
    before = snapshot(buf)
    with pytest.raises(ValueError, match=r"priorities must be finite and >= 0, got .* at position 2"):
        buf.update_priorities(np.arange(4), np.array([1, 2, bad, 3], np.float32))
    assert_unchanged(buf, before)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(alpha=-0.1), ValueError, r"alpha must be finite and >= 0, got -0.1"),
    (dict(alpha=float("nan")), ValueError, r"alpha must be finite"),
    (dict(eps=-1.0), ValueError, r"eps must be finite and >= 0"),
    (dict(alpha="x"), TypeError, r"alpha must be a real number, got str"),
    (dict(max_priority="median"), ValueError, r"max_priority must be 'all_time' or 'stored'"),
    (dict(stale="ignore"), ValueError, r"stale must be 'skip' or 'raise'"),
])
def test_bad_constructor(kw, exc, match):
    with pytest.raises(exc, match=match):
        fr.PrioritizedReplayBuffer(8, X, **kw)


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf")])
def test_bad_beta(beta):
    buf = filled(8)
    with pytest.raises(ValueError, match="sample: beta must be finite and >= 0"):
        buf.sample(4, beta=beta)


def test_alpha_change_rebuilds():
    buf = filled(16, alpha=0.5, eps=0.0)
    p = np.arange(1, 17, dtype=float)
    buf.update_priorities(np.arange(16), p)
    buf.alpha = 1.0
    np.testing.assert_allclose(buf._leaves(), p)
    assert buf._total == pytest.approx(p.sum())
    with pytest.raises(ValueError, match="alpha must be finite"):
        buf.alpha = -1
    assert buf.alpha == 1.0


def test_zero_alpha_is_uniform_and_weights_one():
    buf = filled(10, alpha=0.0)
    buf.update_priorities(np.arange(10), np.arange(10.0))
    b = buf.sample(100, beta=1.0)
    np.testing.assert_array_equal(b.weights, np.ones(100, np.float32))


def test_per_rows_are_whole_transitions_and_torch_priorities():
    buf = fr.PrioritizedReplayBuffer(64, CARTPOLE, seed=5)
    buf.add(**cartpole_rows(0, 100))
    b = buf.sample(32, beta=0.4)
    check_self_consistent(b)
    torch = pytest.importorskip("torch")
    assert buf.update_priorities(torch.as_tensor(b.indices), torch.rand(32, requires_grad=True)) == 0


def test_beta_schedule():
    s = fr.beta_schedule(0.4, 100)
    assert s(0) == 0.4 and s(50) == pytest.approx(0.7) and s(100) == 1.0 and s(10**6) == 1.0


@pytest.mark.slow
def test_root_exact_after_ten_million_updates():
    cap = 1_000_000
    buf = filled(cap, alpha=1.0, eps=0.0)
    rng = np.random.default_rng(4)
    for _ in range(10):  # 10 x 1e6 = 1e7 random leaf updates, heavy-tailed values
        buf.update_priorities(rng.integers(0, cap, 1_000_000), rng.pareto(1.0, 1_000_000))
    leaves = buf._leaves()
    exact = np.sum(np.sort(leaves))  # pairwise summation of sorted values
    assert abs(buf._total - exact) <= 1e-9 * exact
