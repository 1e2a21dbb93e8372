"""Adversarial input to the buffers' public calls (reliability review 2026-11: D2, D7, D8, D9, D20, D25-D28).

Scenarios that crashed the interpreter run in their own process (tests/_isolated.py), so a regression fails one test
instead of the run. Rules shared with the pure-Python reference are checked on both, with the same messages.
"""
import math
import pickle
import re

import numpy as np
import pytest

import fastreplay as fr
from fastreplay import reference as ref

from _isolated import assert_clean_exit, run_isolated

BOTH = pytest.mark.parametrize("mod", [fr, ref], ids=["compiled", "reference"])
F = {"x": ((), np.float32)}


def error_of(fn):
    """(type, message) of the exception fn raises (the test fails if it raises none)."""
    with pytest.raises(Exception) as e:
        fn()
    return e.type, str(e.value)


# --- D2: numpy scalars into complex256 fields -------------------------------------------------------------------


def test_numpy_scalar_into_clongdouble_field_is_stored_exactly():
    """D2: a numpy scalar into a 32-byte clongdouble field overran the 16-byte scratch (heap corruption, abort, or a
    garbage imaginary part). Every kind of scalar, numpy or Python, must be stored exactly, first or last field."""
    assert_clean_exit(
        """
        import numpy as np, fastreplay as fr
        b = fr.ReplayBuffer(4, {"y": ((), np.float32), "x": ((), np.clongdouble)})
        for i in range(1000):
            b.add(y=np.float32(i), x=np.float64(i))
        assert b.storage["x"].tolist() == [996, 997, 998, 999], b.storage["x"]
        b = fr.ReplayBuffer(8, {"x": ((), np.clongdouble), "y": ((), np.float32)})
        values = [np.float64(1.5), np.float32(2), np.int64(3), np.complex128(4 + 5j), np.clongdouble(6 - 7j),
                  np.longdouble(8), 9, 10.5, 11 + 12j, True]
        for v in values[:8]:
            b.add(x=v, y=np.float32(5))
        want = np.array([complex(v) for v in values[:8]], np.clongdouble)
        assert (b.storage["x"] == want).all(), b.storage["x"]
        for v in values[8:]:
            b.add(x=v, y=np.float32(5))
        assert b.storage["x"][:2].tolist() == [11 + 12j, 1], b.storage["x"]
        assert (b.storage["y"] == 5).all()
        # A longdouble (16-byte) field still takes the fast path, and stores exactly.
        c = fr.ReplayBuffer(2, {"z": ((), np.longdouble)})
        c.add(z=np.float32(0.5)); c.add(z=np.longdouble(1) / 3)
        assert c.storage["z"][0] == 0.5 and c.storage["z"][1] == np.longdouble(1) / 3
        print("ok")
        """,
        timeout=120,
        expect_stdout="ok",
    )


# --- D7: caller memory read without the GIL ---------------------------------------------------------------------


def test_update_priorities_and_get_with_indices_rewritten_by_another_thread_do_not_crash():
    """D7: update_priorities checked the caller's int64 indices, then used them in place without the GIL, so a
    thread rewriting them (to 1 << 40) made the core write out of bounds. get had the same window. Both must copy
    what they check; each call either succeeds or raises IndexError, and the tree stays consistent."""
    assert_clean_exit(
        """
        import threading, time, numpy as np, fastreplay as fr
        b = fr.PrioritizedReplayBuffer(64, {"x": ((), np.float32)}, seed=0)
        b.add(x=np.zeros(64, np.float32))
        idx = np.zeros(200_000, np.int64)
        pr = np.ones(200_000)
        small = np.zeros(64, np.int64)
        stop = threading.Event()
        def flip():
            while not stop.is_set():
                idx[:] = 1 << 40; idx[:] = 0
                pr[:] = np.nan; pr[:] = 1.0
                small[:] = 1 << 40; small[:] = 0
        t = threading.Thread(target=flip); t.start()
        ok = errors = 0
        end = time.time() + 1.5
        while time.time() < end:
            for call in (lambda: b.update_priorities(idx, pr), lambda: b.get(small)):
                try:
                    call(); ok += 1
                except (IndexError, ValueError):
                    errors += 1
        stop.set(); t.join()
        leaves = b._leaves()
        assert np.isfinite(leaves).all() and np.isfinite(b.priorities).all(), "a NaN entered the tree"
        assert abs(b._total - leaves.sum()) <= 1e-9 * leaves.sum()
        print("ok", ok, errors)
        """,
        timeout=120,
        expect_stdout="ok",
    )


def test_add_keeps_a_dict_value_alive_when_a_conversion_removes_it():
    """D7 (add): values found in a caller's dict (obs={...}) were borrowed references; Python code run while
    converting another field could drop the last reference, and add then read a freed array."""
    assert_clean_exit(
        """
        import gc, numpy as np, fastreplay as fr
        b = fr.ReplayBuffer(2, {"obs.a": ((), np.float64), "obs.b": ((300_000,), np.float64)})
        class Evil:
            def __array__(self, dtype=None, copy=None):
                d.pop("b"); gc.collect()
                return np.array(1.0)
        for k in range(5):
            d = {"a": Evil(), "b": np.full(300_000, float(k))}
            b.add(obs=d)
            assert (b.storage["obs.b"][k % 2] == k).all()
        print("ok")
        """,
        timeout=120,
        expect_stdout="ok",
    )


def test_update_priorities_uses_its_own_copy_of_fresh_arrays_and_views():
    """D7: whatever form the indices take (the caller's own int64 array, a view, a list), the values checked are
    the values written; nothing the call returns aliases the caller's arrays."""
    b = fr.PrioritizedReplayBuffer(8, F, seed=0)
    b.add(x=np.zeros(8, np.float32))
    base = np.arange(16, dtype=np.int64)
    b.update_priorities(base[::2][:4], np.array([1.0, 2.0, 3.0, 4.0])[::-1])
    b.update_priorities([5], [6.0])
    np.testing.assert_array_equal(b.priorities[[0, 2, 4, 6, 5]], [4.0, 3.0, 2.0, 1.0, 6.0])
    idx = np.array([1, 3], np.int64)
    batch = b.get(idx)
    assert not np.shares_memory(batch.indices, idx)


# --- D8: sample(out=batch) and arrays replaced meanwhile --------------------------------------------------------


def test_sample_into_out_survives_another_thread_replacing_its_arrays():
    """D8: sample(out=batch) kept borrowed pointers to the batch's arrays; replacing batch["x"] from another thread
    freed the array the core was writing (SIGSEGV, heap corruption). Every array written is now held."""
    assert_clean_exit(
        """
        import threading, time, numpy as np, fastreplay as fr
        b = fr.PrioritizedReplayBuffer(1000, {"x": ((64,), np.float32)}, seed=0)
        b.add(x=np.ones((1000, 64), np.float32))
        batch = b.sample(50_000)
        stop = threading.Event()
        def swap():
            while not stop.is_set():
                batch["x"] = np.zeros((50_000, 64), np.float32)
                batch.weights = np.zeros(50_000, np.float32)
        t = threading.Thread(target=swap); t.start()
        end = time.time() + 1.5
        n = 0
        while time.time() < end:
            b.sample(50_000, out=batch); n += 1
        stop.set(); t.join()
        print("ok", n)
        """,
        timeout=120,
        expect_stdout="ok",
    )


def test_sample_into_out_fills_the_arrays_it_checked():
    """D8: the arrays sample(out=) fills are the batch's own (refilled in place, not replaced)."""
    b = fr.ReplayBuffer(4, F, seed=0)
    b.add(x=np.arange(4, dtype=np.float32))
    batch = b.sample(8)
    x, idx = batch["x"], batch.indices
    assert b.sample(8, out=batch) is batch
    assert batch["x"] is x and batch.indices is idx
    np.testing.assert_array_equal(x, idx.astype(np.float32))


# --- D9: objects made by __new__ --------------------------------------------------------------------------------

UNINITIALIZED_CALLS = [
    "len(b)", "b.capacity", "b.next_index", "b.total_added", "b.seed", "b.full", "b.fields", "b.storage", "repr(b)",
    "b.add(x=1.0)", "b.add(1.0)", "b.sample(1)", "b.get([0])", "b.generations([0])", "b.clear()", "b.flush()",
    "b.prefetch(1)", "b.save(path)", "pickle.dumps(b)",
]
PRIORITIZED_CALLS = [
    "b.sample(1, beta=0.4)", "b.update_priorities([0], [1.0])", "b.alpha", "b.eps", "b.max_priority",
    "b.priorities", "setattr(b, 'alpha', 0.5)",
]


def assert_each_call_raises_never_initialized(setup: str, make: str, calls: list) -> None:
    """In a subprocess (a regression may crash): for each call, a fresh object made by ``make`` (after ``setup``)
    must raise TypeError saying it was never initialized."""
    out = run_isolated(
        f"""
        import pickle, sys, numpy as np, fastreplay as fr
        {setup}
        for call in {calls!r}:
            {make}
            try:
                eval(call)
                print("NO ERROR", call)
            except TypeError as e:
                print("TypeError" if "never initialized" in str(e) else f"OTHER TypeError {{call}}: {{e}}")
            except Exception as e:
                print(f"WRONG {{type(e).__name__}} {{call}}: {{e}}")
            sys.stdout.flush()
        print("done")
        """,
        timeout=120,
    )
    assert out.returncode == 0 and "done" in out.stdout, out
    lines = out.stdout.split("\n")[: len(calls)]
    assert lines == ["TypeError"] * len(calls), [x for x in lines if x != "TypeError"]


@pytest.mark.parametrize("cls", ["ReplayBuffer", "PrioritizedReplayBuffer"])
def test_every_method_of_a_buffer_made_by_new_raises_type_error(cls, tmp_path):
    """D9: fr.ReplayBuffer.__new__(fr.ReplayBuffer) gave an object whose len, capacity, sample, get... read
    uninitialised memory (SIGSEGV, or a 'capacity' of 1.4e14). Every public method and property raises TypeError."""
    calls = UNINITIALIZED_CALLS + (PRIORITIZED_CALLS if cls == "PrioritizedReplayBuffer" else [])
    assert_each_call_raises_never_initialized(f"path = {str(tmp_path / 'ckpt')!r}", f"b = fr.{cls}.__new__(fr.{cls})",
                                              calls)


def test_every_method_of_a_prefetcher_made_by_new_raises_type_error():
    """D9 (same cause): Prefetcher.__new__(Prefetcher) read uninitialised memory too ('RuntimeError: Invalid
    argument', or worse)."""
    calls = ["p.ready", "p.closed", "p.beta", "next(p)", "p.close()", "setattr(p, 'beta', 0.5)", "p.__exit__()"]
    assert_each_call_raises_never_initialized("from fastreplay.buffer import Prefetcher",
                                              "p = Prefetcher.__new__(Prefetcher)", calls)


def test_uninitialized_message_names_the_class():
    """D9: the error says what happened and what to do."""
    b = fr.PrioritizedReplayBuffer.__new__(fr.PrioritizedReplayBuffer)
    with pytest.raises(TypeError, match=r"PrioritizedReplayBuffer: this buffer was never initialized "
                                        r"\(__init__ did not run.*create buffers by calling "
                                        r"PrioritizedReplayBuffer\(\.\.\.\)"):
        len(b)
    assert not b._initialized()
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        b.nonexistent


# --- D20: leaves that overflow ----------------------------------------------------------------------------------

def g(x):
    """x as the messages print numbers (C's and Python's %g), escaped for a regex."""
    return re.escape(f"{x:g}")


LIMIT = r"above the limit 2\*\*1022 / capacity = \S+ that keeps the sum of all leaves finite"


@BOTH
@pytest.mark.parametrize("alpha,eps,leaf", [(1e300, 1e-6, "inf"), (1.0, 1e308, "1e\\+308"), (2000.0, 2.0, "inf")])
def test_construction_rejects_alpha_and_eps_whose_initial_leaf_passes_the_bound(mod, alpha, eps, leaf):
    """D20: alpha=1e300 (or eps=1e308) made the leaf of the initial priority 1 infinite or the total overflow."""
    with pytest.raises(ValueError, match=rf"^PrioritizedReplayBuffer: alpha={g(alpha)} and eps={g(eps)} give the leaf "
                                         rf"\(p \+ eps\)\*\*alpha = {leaf} for the initial priority p=1, {LIMIT}$"):
        mod.PrioritizedReplayBuffer(4, F, alpha=alpha, eps=eps)


@BOTH
@pytest.mark.parametrize("alpha,p", [(2.0, 1e200), (1.0, 1e308), (1.0, 2.0**1021)])
def test_update_priorities_rejects_a_priority_whose_leaf_passes_the_bound(mod, alpha, p):
    """D20: alpha=2 and a priority of 1e200 gave total=inf (every draw went to slot 0); alpha=1 and two priorities of
    1e308 gave weights 0.0. Such a call is rejected before anything is written."""
    b = mod.PrioritizedReplayBuffer(4, F, alpha=alpha, seed=0)
    b.add(x=np.zeros(4, np.float32))
    before = (b._leaves().tolist(), b.priorities.tolist(), b.max_priority)
    with pytest.raises(ValueError, match=rf"^update_priorities: priority {g(p)} at position 1 gives the leaf "
                                         rf"\(p \+ eps\)\*\*alpha = \S+ \(alpha={g(alpha)}, eps=1e-06\), {LIMIT}$"):
        b.update_priorities([0, 1, 2], [1.0, p, p])
    assert (b._leaves().tolist(), b.priorities.tolist(), b.max_priority) == before


@BOTH
def test_alpha_setter_rejects_an_alpha_whose_leaves_pass_the_bound(mod):
    """D20: the alpha setter accepted 1e300, giving total=inf. The stored priorities (and the one new transitions
    get) are checked with the new alpha, and a rejected alpha changes nothing."""
    b = mod.PrioritizedReplayBuffer(4, F, alpha=1.0, seed=0)
    b.add(x=np.zeros(2, np.float32))
    b.update_priorities([1], [1e10])
    with pytest.raises(ValueError, match=rf"^PrioritizedReplayBuffer.alpha: alpha=1e\+300 gives the leaf "
                                         r"\(p \+ eps\)\*\*alpha = inf for the priority p=1e\+10 "
                                         rf"\(eps=1e-06\), {LIMIT}$"):
        b.alpha = 1e300
    assert b.alpha == 1.0 and b._leaves()[1] == 1e10 + 1e-6
    b.alpha = 30.0  # (1e10)**30 = 1e300 fits for capacity 4
    assert math.isfinite(b._total)


def test_sum_of_many_leaves_at_the_bound_stays_finite_and_sampling_works():
    """D20: the bound is per leaf, 2**1022 / capacity, so even every slot at the bound sums to a finite total: the
    draws stay spread over the slots and the weights in (0, 1]."""
    cap = 16
    b = fr.PrioritizedReplayBuffer(cap, F, alpha=1.0, eps=0.0, seed=0)
    b.add(x=np.zeros(cap, np.float32))
    top = math.ldexp(1.0, 1022) / cap
    b.update_priorities(np.arange(cap), np.full(cap, top))
    assert math.isfinite(b._total) and b._total == pytest.approx(top * cap)
    b.update_priorities([0], [top / 4])
    batch = b.sample(1000, beta=1.0)
    assert len(set(batch.indices.tolist())) == cap
    assert (batch.weights > 0).all() and (batch.weights <= 1).all()
    with pytest.raises(ValueError, match="above the limit"):
        b.update_priorities([3], [np.nextafter(top, np.inf)])


def test_restore_rejects_priorities_whose_leaves_pass_the_bound():
    """D20: a checkpoint's priorities go through the same bound (the core's restore)."""
    b = fr.PrioritizedReplayBuffer(4, F, alpha=2.0, seed=0)
    b.add(x=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"^restore: priority 1e\+200 gives the leaf"):
        b._restore_priorities(np.array([1.0, 1e200]), 1.0)


# --- D25: NUL in field names ------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("name", ["a\x00b", "\x00", "obs\x00"])
def test_field_names_with_nul_are_rejected(mod, name):
    """D25: "a\\x00b" and "a\\x00c" were accepted and truncated by the core to a single key 'a'."""
    with pytest.raises(ValueError, match=r"field names must not contain the NUL character '\\x00', got "):
        mod.ReplayBuffer(4, {name: ((), np.float32), "a\x00c": ((), np.float32)})


@BOTH
def test_field_names_that_are_not_unicode_text_are_rejected(mod):
    """D25: a lone surrogate cannot be encoded for the core either."""
    with pytest.raises(ValueError, match=r"field names must be valid Unicode text"):
        mod.ReplayBuffer(4, {"\ud800": ((), np.float32)})


# --- D26: a second __init__ -------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("cls", ["ReplayBuffer", "PrioritizedReplayBuffer"])
def test_second_init_raises_and_leaves_the_buffer_as_it_was(mod, cls):
    """D26: a second __init__ swapped the Python field map but not the C++ core (fields said 'y', storage['y'] was
    the old obs column). It now raises before anything changes."""
    b = getattr(mod, cls)(4, {"obs": ((2,), np.float32)}, seed=0)
    b.add(obs=np.ones(2, np.float32))
    with pytest.raises(TypeError, match=rf"^{cls}.__init__: this buffer is already initialized; create a new {cls} "
                                        "instead$"):
        b.__init__(8, {"y": ((), np.int64)})
    assert list(b.fields) == ["obs"] and b.capacity == 4 and len(b) == 1
    b.add(obs=np.zeros(2, np.float32))
    np.testing.assert_array_equal(b.storage["obs"], [[1, 1], [0, 0]])


def test_init_after_a_failed_init_still_works():
    """D26: only a completed __init__ counts: an object whose first __init__ raised can still be initialised."""
    b = fr.ReplayBuffer.__new__(fr.ReplayBuffer)
    with pytest.raises(ValueError):
        b.__init__(0, F)
    b.__init__(4, F)
    b.add(x=1.0)
    assert len(b) == 1


# --- D27: shapes the buffer cannot serve ------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("shape", [(2**61 + 1,), (2**62,), (2**64,), (2**32, 2**32)])
def test_rows_of_more_than_2_63_bytes_are_rejected(mod, shape):
    """D27: (2**61+1,) float64 was accepted (the row byte count wrapped to 8), (2**62,) said 'zero bytes per row',
    (2**64,) gave pybind11's 'Unable to cast'. The byte count is computed with Python ints."""
    with pytest.raises(ValueError, match=r"field 'x' has \d+ bytes per row \(shape .*float64\), more than the "
                                         r"2\*\*63 - 1 a buffer can address"):
        mod.ReplayBuffer(4, {"x": (shape, np.float64)})


@BOTH
def test_columns_of_more_than_2_63_bytes_are_a_memory_error_naming_the_sizes(mod):
    """D27: capacity * row bytes past what a buffer can address (the reference would otherwise try to build it)."""
    with pytest.raises(MemoryError, match=r"^ReplayBuffer: field 'x' needs capacity \* bytes per row = "
                                          r"1099511627776 \* 8589934592 = \d+ bytes"):
        mod.ReplayBuffer(2**40, {"x": ((2**30,), np.float64)})


@BOTH
def test_rows_of_more_than_32_dimensions_are_rejected(mod):
    """D27: 64-dimensional rows were accepted and add worked, but sample, get, storage and save failed after."""
    with pytest.raises(ValueError, match=r"field 'x' shape has 33 dimensions; at most 32 are supported"):
        mod.ReplayBuffer(4, {"x": ((1,) * 33, np.float32)})


def test_rows_of_32_dimensions_work_in_every_call(tmp_path):
    """D27: the largest accepted row rank is served by add, sample, get, storage and save/load."""
    shape = (1,) * 31 + (2,)
    b = fr.ReplayBuffer(4, {"x": (shape, np.float32)}, seed=0)
    b.add(x=np.ones((3,) + shape, np.float32))
    assert b.sample(2)["x"].shape == (2,) + shape
    assert b.get([0, 2])["x"].shape == (2,) + shape
    assert b.storage["x"].shape == (3,) + shape
    b.save(tmp_path / "b.frb")
    np.testing.assert_array_equal(fr.ReplayBuffer.load(tmp_path / "b.frb").storage["x"], b.storage["x"])
    r = ref.ReplayBuffer(4, {"x": (shape, np.float32)}, seed=0)
    r.add(x=np.ones((3,) + shape, np.float32))
    assert r.sample(2)["x"].shape == (2,) + shape


# --- D28: beta of the wrong type --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("beta,name", [(None, "NoneType"), ("0.5", "str"), ([0.5], "list"), (1j, "complex")])
def test_sample_beta_of_the_wrong_type_is_a_clear_type_error(mod, beta, name):
    """D28: sample(4, beta=None) and beta="0.5" gave pybind11's 'incompatible function arguments' dump."""
    b = mod.PrioritizedReplayBuffer(4, F, seed=0)
    b.add(x=1.0)
    with pytest.raises(TypeError, match=rf"^sample: beta must be a real number, got {name}$"):
        b.sample(4, beta=beta)
    with pytest.raises(TypeError, match=rf"^sample: beta must be a real number, got {name}$"):
        b.sample(4, beta)


@BOTH
def test_sample_beta_accepts_every_real_number_type(mod):
    """D28: ints, bools, numpy scalars and 0-d arrays are real numbers; the range check stays the core's."""
    b = mod.PrioritizedReplayBuffer(4, F, seed=0)
    b.add(x=1.0)
    for beta in (1, True, np.float32(0.5), np.int64(0), np.array(0.25)):
        assert b.sample(2, beta=beta).weights.shape == (2,)
    with pytest.raises(ValueError, match=r"^sample: beta must be finite and >= 0, got -1"):
        b.sample(2, beta=-1)


def test_prefetcher_beta_of_the_wrong_type_is_a_clear_type_error():
    """D28: prefetcher.beta = None (and prefetch(beta="0.5")) gave the pybind11 dump too."""
    b = fr.PrioritizedReplayBuffer(4, F, seed=0)
    b.add(x=1.0)
    with pytest.raises(TypeError, match=r"^prefetch: beta must be a real number, got str$"):
        b.prefetch(2, beta="0.5")
    with b.prefetch(2) as p:
        with pytest.raises(TypeError, match=r"^prefetch: beta must be a real number, got NoneType$"):
            p.beta = None
        p.beta = np.float64(0.7)
        assert p.beta == 0.7
        with pytest.raises(ValueError, match=r"^prefetch: beta must be finite and >= 0"):
            p.beta = -1
        assert next(p).weights.shape == (2,)


def test_pickled_buffers_still_round_trip():
    """The __getattr__ guard for uninitialised buffers leaves ordinary attribute errors and pickling alone."""
    b = fr.PrioritizedReplayBuffer(4, F, seed=0)
    b.add(x=np.arange(3, dtype=np.float32))
    c = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(c.storage["x"], b.storage["x"])
    with pytest.raises(AttributeError):
        b.no_such_attribute
    assert re.match(r"PrioritizedReplayBuffer\(size=3", repr(c))
