"""Differential tests: random operation sequences on the compiled buffers and on fastreplay.reference must give
exactly the same contents, lengths, cursors, generations, priorities and tree values."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastreplay as fr
from fastreplay import reference as ref

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64"]

field_st = st.tuples(st.lists(st.integers(1, 3), max_size=2).map(tuple), st.sampled_from(DTYPES))
fields_st = st.dictionaries(st.sampled_from(["a", "b", "obs", "x"]), field_st, min_size=1, max_size=3)


def make_rows(fields, n, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, 100, size=(n,) + shape).astype(dt) for k, (shape, dt) in fields.items()}


def assert_same(a, b):
    assert len(a) == len(b) and a.next_index == b.next_index and a.total_added == b.total_added
    sa, sb = a.storage, b.storage
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        np.testing.assert_array_equal(sa[k], sb[k])
    slots = np.arange(a.capacity)
    np.testing.assert_array_equal(a.generations(slots), b.generations(slots))
    if len(a):
        idx = np.arange(len(a))[::-1]
        ga, gb = a.get(idx), b.get(idx)
        for k in ga:
            np.testing.assert_array_equal(ga[k], gb[k])
        np.testing.assert_array_equal(ga.generations, gb.generations)


op_st = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 25), st.booleans()),
    st.tuples(st.just("clear"), st.just(0), st.just(False)),
    st.tuples(st.just("prio"), st.integers(1, 20), st.booleans()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=fields_st, capacity=st.integers(1, 12), ops=st.lists(op_st, max_size=25), data=st.data())
def test_uniform_matches_reference(fields, capacity, ops, data):
    a, b = fr.ReplayBuffer(capacity, fields, seed=0), ref.ReplayBuffer(capacity, fields, seed=0)
    for i, (op, n, single) in enumerate(ops):
        if op == "add":
            rows = make_rows(fields, max(n, 1), i)
            if single:
                rows = {k: v[0] for k, v in rows.items()}
            a.add(**rows)
            b.add(**rows)
        elif op == "clear":
            a.clear()
            b.clear()
        assert_same(a, b)
    if len(a):
        s = a.sample(16)
        for k in s:  # every sampled row is the stored row at its index
            np.testing.assert_array_equal(s[k], a.storage[k][s.indices])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 12), alpha=st.sampled_from([0.0, 0.5, 1.0]), eps=st.sampled_from([0.0, 1e-3]),
       mode=st.sampled_from(["all_time", "stored"]), ops=st.lists(op_st, max_size=25), data=st.data())
def test_prioritized_matches_reference(capacity, alpha, eps, mode, ops, data):
    fields = {"x": ((2,), np.float32)}
    kw = dict(alpha=alpha, eps=eps, seed=0, max_priority=mode)
    a, b = fr.PrioritizedReplayBuffer(capacity, fields, **kw), ref.PrioritizedReplayBuffer(capacity, fields, **kw)
    for i, (op, n, flag) in enumerate(ops):
        if op == "add":
            rows = make_rows(fields, max(n, 1), i)
            a.add(**rows)
            b.add(**rows)
        elif op == "clear":
            a.clear()
            b.clear()
        elif op == "prio" and len(a):
            idx = data.draw(st.lists(st.integers(0, len(a) - 1), min_size=n, max_size=n))
            pr = data.draw(st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.5, 100.0]), min_size=n, max_size=n))
            assert a.update_priorities(idx, pr) == b.update_priorities(idx, pr) == 0
        assert_same(a, b)
        np.testing.assert_array_equal(a.priorities, b.priorities)
        np.testing.assert_allclose(a._leaves(), b._leaves(), rtol=1e-12)
        assert a.max_priority == b.max_priority
        np.testing.assert_allclose([a._total, a._min], [b._total, b._min], rtol=1e-12)
    if len(a) and a._total > 0:
        s = a.sample(8, beta=0.7)  # weights follow the formula from the reference's tree values
        leaves = b._leaves()
        np.testing.assert_allclose(s.weights, (b._min / leaves[s.indices]) ** 0.7, rtol=2e-6)
