"""Prioritized replay: fastreplay.PrioritizedReplayBuffer against the pure-Python reference, CartPole rows.

Buffers are filled to capacity and given random heavy-tailed priorities (Pareto, so the tree is far from flat).
At capacities 1e4, 1e5 and 1e6 with batch 256: sample(256, beta) alone, update_priorities of 256 alone, and the
training loop's sample-then-update; at 1e6 also batch 32 and 1024 to show how the cost scales with the batch, and
batch 1 for the fixed cost of a call (Python, bindings, validation).
Updates and loops cycle through pools of 64 pre-drawn batches and priority arrays, so consecutive calls touch
different tree paths, as in training, and no random number generation is timed.
"""
import itertools

import numpy as np
import pytest

from .conftest import CAPACITIES, IMPLS, cap_id, one_cartpole_step, run

BETA = 0.4
POOL = 64
impls = pytest.mark.parametrize("impl", list(IMPLS))
# (capacity, batch size): batch 256 at every capacity, plus 32 and 1024 at 1e6, and 1 (the fixed cost of a call).
CASES = [(c, 256) for c in CAPACITIES] + [(1_000_000, 1), (1_000_000, 32), (1_000_000, 1024)]
cases = pytest.mark.parametrize("capacity,batch_size", CASES, ids=[f"{cap_id(c)}-B{b}" for c, b in CASES])


def _per(impl, capacity, op, rows, **kw):
    return dict(group=f"per {op} @ {cap_id(capacity)}", op=op, kind="per", impl=impl, capacity=capacity,
                rows=rows, **kw)


def _td_errors(batch_size: int):
    """A pool of |TD error| arrays, float32 as a learner hands them over."""
    rng = np.random.default_rng(batch_size)
    return [np.abs(rng.standard_normal(batch_size)).astype(np.float32) for _ in range(POOL)]


@cases
@impls
def test_sample(benchmark, buffers, impl, capacity, batch_size):
    """sample(B, beta): stratified descent of the sum tree, weights from the min tree, gather of the rows."""
    buf = buffers.get(impl, "cartpole", capacity, prioritized=True)
    run(benchmark, buf.sample, batch_size, BETA, **_per(impl, capacity, f"sample({batch_size})", batch_size))


@cases
@impls
def test_update_priorities(benchmark, buffers, impl, capacity, batch_size):
    """update_priorities(batch, td_errors) of a batch sampled earlier (stale check through its generations)."""
    buf = buffers.get(impl, "cartpole", capacity, prioritized=True)
    pool = list(zip([buf.sample(batch_size, BETA) for _ in range(POOL)], _td_errors(batch_size)))
    it = itertools.cycle(pool)

    def update():
        batch, prio = next(it)
        buf.update_priorities(batch, prio)

    run(benchmark, update, **_per(impl, capacity, f"update_priorities({batch_size})", batch_size))


@cases
@impls
def test_sample_then_update(benchmark, buffers, impl, capacity, batch_size):
    """One training step's buffer work: batch = sample(B, beta); update_priorities(batch, td_errors)."""
    buf = buffers.get(impl, "cartpole", capacity, prioritized=True)
    it = itertools.cycle(_td_errors(batch_size))

    def step():
        batch = buf.sample(batch_size, BETA)
        buf.update_priorities(batch, next(it))

    run(benchmark, step, **_per(impl, capacity, f"sample+update({batch_size})", batch_size))


@pytest.mark.parametrize("capacity", CAPACITIES, ids=cap_id)
@impls
def test_add_one(benchmark, buffers, impl, capacity):
    """One transition through the keyword API; it enters the trees with the maximum priority. Runs last: it
    overwrites slots (and their heavy-tailed priorities) with the maximum priority."""
    buf = buffers.get(impl, "cartpole", capacity, prioritized=True)
    run(benchmark, buf.add, **one_cartpole_step(), **_per(impl, capacity, "add(1)", 1))
