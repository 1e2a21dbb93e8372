"""The powers of prioritized replay (csrc/fastreplay/powers.h): the exact shortcuts for alpha in {0, 0.5, 1} and
beta in {0, 1} against numpy, and the general exponents (a vectorised exp2/log2 with a stated error bound, pow at
the edges) on priorities spanning many magnitudes. tests/cpp/powers_check.cpp checks the bound on 10**6 points per
exponent against long double."""
import numpy as np
import pytest

import fastreplay as fr

X = {"x": ((2,), np.float32)}
F32_TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


def priorities(n, seed=0):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(-30, 30, n))  # 1e-13 .. 1e13
    p[::7] = 0.0
    p[1::11] = rng.integers(0, 5, len(p[1::11]))  # small integers, exact
    return p


def filled(alpha, eps, n=200, seed=0):
    buf = fr.PrioritizedReplayBuffer(n, X, alpha=alpha, eps=eps, seed=seed)
    buf.add(x=np.zeros((n, 2), np.float32))
    p = priorities(n, seed)
    buf.update_priorities(np.arange(n), p)
    return buf, p


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.01])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_leaves_alpha_exact(alpha, eps):
    """pow(x, 1) = x and pow(x, 0) = 1 exactly: the shortcuts must give the same bits."""
    buf, p = filled(alpha, eps)
    np.testing.assert_array_equal(buf._leaves(), np.power(p + eps, alpha))


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.01])
def test_leaves_alpha_half(eps):
    """alpha = 0.5 uses sqrt: correctly rounded, so within 1 ulp of numpy's power (and equal to numpy's sqrt)."""
    buf, p = filled(0.5, eps)
    leaves = buf._leaves()
    np.testing.assert_array_equal(leaves, np.sqrt(p + eps))
    np.testing.assert_array_max_ulp(leaves, np.power(p + eps, 0.5), maxulp=1)


def pow_rtol(alpha):
    """powers.h's error bound for a general exponent: relative 2**-51 * max(1, alpha)."""
    return 2.0 ** -51 * max(1.0, alpha)


@pytest.mark.parametrize("alpha", [0.6, 0.25, 0.7, 2.0])
def test_leaves_alpha_general(alpha):
    buf, p = filled(alpha, 1e-6)
    np.testing.assert_allclose(buf._leaves(), np.power(p + 1e-6, alpha), rtol=pow_rtol(alpha), atol=0)


@pytest.mark.parametrize("alpha", [0.6, 0.05, 3.0])
def test_leaves_alpha_general_edges(alpha):
    """The vectorised power hands 0, subnormals and results near the exponent range to pow: numpy's value (within
    1 ulp: numpy's pow and the C library's may differ in the last bit); every other leaf within the bound. The
    rows go through update_priorities in batches of every length 1..9, so that every lane position of the
    vector kernel (and its padded last group) sees the edge values."""
    n = 45
    tiny = np.finfo(np.float64).smallest_subnormal
    edge = np.array([0.0, tiny, 1e-310, np.finfo(np.float64).tiny, 1e-300, 1e-200, 0.5, 1.0, 3.0, 1e10, 1e100])
    p = np.resize(edge, n)
    buf = fr.PrioritizedReplayBuffer(n, X, alpha=alpha, eps=0.0, seed=0)
    buf.add(x=np.zeros((n, 2), np.float32))
    start = 0
    for length in range(1, 10):
        buf.update_priorities(np.arange(start, start + length), p[start:start + length])
        start += length
    want = np.power(p, alpha)
    leaves = buf._leaves()
    special = (p < np.finfo(np.float64).tiny) | (np.abs(alpha * np.log2(np.maximum(p, tiny))) > 999)
    np.testing.assert_array_max_ulp(leaves[special], want[special], maxulp=1)
    np.testing.assert_allclose(leaves[~special], want[~special], rtol=pow_rtol(alpha), atol=0)
    assert np.all(leaves[p == 0] == 0)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 0.6])
def test_alpha_setter_and_new_rows(alpha):
    """The setter recomputes every leaf, and new rows enter at the maximum priority, through the same power."""
    buf, p = filled(0.3, 1e-3)
    buf.alpha = alpha
    np.testing.assert_allclose(buf._leaves(), np.power(p + 1e-3, alpha), rtol=pow_rtol(alpha), atol=0)
    buf.add(x=np.zeros((3, 2), np.float32))  # overwrites slots 0..2 at the all-time maximum priority
    want = np.power(max(p.max(), 1.0) + 1e-3, alpha)
    np.testing.assert_allclose(buf._leaves()[:3], want, rtol=pow_rtol(alpha), atol=0)


@pytest.mark.parametrize("alpha", [0.5, 0.6, 1.0])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.4, 0.7])
def test_weights(alpha, beta):
    """beta = 1 gives p_min / p_i as float32 (clamped to the smallest float), beta = 0 gives 1: bit for bit what
    powf gives for them; other betas through powf, within float32 tolerance of the float64 formula."""
    buf, _ = filled(alpha, 1e-6, n=500)
    b = buf.sample(256, beta=beta)
    leaves = buf._leaves()
    ratio = np.minimum(buf._min / leaves[b.indices], 1.0)
    assert b.weights.dtype == np.float32
    if beta == 0.0:
        np.testing.assert_array_equal(b.weights, np.ones(256, np.float32))
    elif beta == 1.0:
        np.testing.assert_array_equal(b.weights, np.maximum(ratio.astype(np.float32), F32_TINY))
    else:
        np.testing.assert_allclose(b.weights, np.maximum(ratio ** beta, F32_TINY), rtol=2e-6)
    assert np.all(b.weights > 0) and np.all(b.weights <= 1)


@pytest.mark.parametrize("beta", [0.4, 0.05])
def test_weights_of_ratios_below_float_range(beta):
    """p_min / p_i = 1e-60 is below the smallest float32: the weight 1e-60**beta (1e-24 or 1e-3) is still a float
    and must not collapse to the smallest float, as it would if the ratio were rounded to float32 first."""
    buf = fr.PrioritizedReplayBuffer(2, X, alpha=1.0, eps=0.0, seed=0)
    buf.add(x=np.zeros((2, 2), np.float32))
    buf.update_priorities([0, 1], [1e-30, 1e30])
    b = buf.sample(8, beta=beta)
    assert np.all(b.indices == 1)  # slot 0 has probability 1e-60
    np.testing.assert_allclose(b.weights, np.full(8, 1e-60 ** beta), rtol=2e-6)
