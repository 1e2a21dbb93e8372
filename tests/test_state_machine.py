"""Hypothesis state machine: random sequences of every operation (valid and invalid) on the compiled
PrioritizedReplayBuffer and on fastreplay.reference must agree after every step."""
import pickle

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fastreplay as fr
from fastreplay import reference as ref

FIELDS = {"obs": ((3,), np.float32), "a": ((), np.int16), "done": ((), np.bool_)}


class BufferMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.cap = 9
        kw = dict(alpha=0.8, eps=1e-3, seed=0)
        self.fast = fr.PrioritizedReplayBuffer(self.cap, FIELDS, **kw)
        self.ref = ref.PrioritizedReplayBuffer(self.cap, FIELDS, **kw)
        self.counter = 0

    def rows(self, n):
        k = np.arange(self.counter, self.counter + n)
        self.counter += n
        return {"obs": np.stack([k, -k, k * 2], 1).astype(np.float32), "a": k.astype(np.int16), "done": k % 2 == 0}

    def both(self, fn):
        """Run fn on both buffers: same result type, or the same exception type and message."""
        out = []
        for b in (self.fast, self.ref):
            try:
                out.append(("ok", fn(b)))
            except Exception as e:  # noqa: BLE001 - compared below
                out.append(("err", (type(e), str(e))))
        assert out[0][0] == out[1][0], out
        if out[0][0] == "err":
            assert out[0][1] == out[1][1], out
        return out

    @rule(n=st.integers(1, 20), single=st.booleans())
    def add(self, n, single):
        r = self.rows(1 if single else n)
        if single:
            r = {k: v[0] for k, v in r.items()}
        self.both(lambda b: b.add(**r))

    @rule(bad=st.sampled_from(["shape", "dtype", "missing", "rows", "unknown"]))
    def bad_add(self, bad):
        r = self.rows(2)
        if bad == "shape":
            r["obs"] = r["obs"][:, :2]
        elif bad == "dtype":
            r["a"] = r["a"].astype(np.float64)
        elif bad == "missing":
            del r["done"]
        elif bad == "rows":
            r["done"] = r["done"][:1]
        else:
            r["extra"] = r["a"]
        assert self.both(lambda b: b.add(**r))[0][0] == "err"

    @rule()
    def clear(self):
        self.both(lambda b: b.clear())

    @rule(data=st.data())
    def update(self, data):
        n = data.draw(st.integers(0, 12))
        hi = max(len(self.fast), 1) + 2  # sometimes out of range
        idx = data.draw(st.lists(st.integers(-1, hi), min_size=n, max_size=n))
        pr = data.draw(st.lists(st.sampled_from([0.0, 0.5, 2.0, 7.0, -1.0, float("nan")]), min_size=n, max_size=n))
        self.both(lambda b: b.update_priorities(idx, pr))

    @precondition(lambda self: len(self.fast) > 0)
    @rule(beta=st.sampled_from([0.0, 0.5, 1.0]))
    def sample_then_update_stale(self, beta):
        b = self.fast.sample(8, beta=beta)
        for k in FIELDS:  # rows are the stored rows at their indices
            np.testing.assert_array_equal(b[k], self.fast.storage[k][b.indices])
        self.both(lambda buf: buf.update_priorities(b.indices.copy(), np.full(8, 3.0), generations=b.generations))

    @rule()
    def checkpoint(self):
        self.fast = pickle.loads(pickle.dumps(self.fast))

    @rule(alpha=st.sampled_from([0.0, 0.5, 1.0]))
    def set_alpha(self, alpha):
        self.fast.alpha = alpha
        self.ref.alpha = alpha

    @invariant()
    def agree(self):
        f, r = self.fast, self.ref
        assert (len(f), f.next_index, f.total_added) == (len(r), r.next_index, r.total_added)
        for k, v in f.storage.items():
            np.testing.assert_array_equal(v, r.storage[k])
        np.testing.assert_array_equal(f.priorities, r.priorities)
        np.testing.assert_allclose(f._leaves(), r._leaves(), rtol=1e-12)
        np.testing.assert_array_equal(f.generations(np.arange(self.cap)), r.generations(np.arange(self.cap)))
        assert f.max_priority == r.max_priority


BufferMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestBufferMachine = BufferMachine.TestCase
