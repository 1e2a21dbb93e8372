"""Bad input: every case raises a clear error naming the call and field, and leaves the buffer exactly as it was."""
import numpy as np
import pytest

import fastreplay as fr
from fastreplay import reference
from _rows import CARTPOLE, cartpole_rows
from conftest import assert_unchanged, snapshot


def good_row(**override):
    row = {k: v[0] for k, v in cartpole_rows(5, 1).items()}
    row.update(override)
    return row


ADD_CASES = [
    ("wrong shape", good_row(obs=np.ones(3, np.float32)), ValueError,
     r"add: field 'obs' expects shape \(4,\) or \(N, 4\), got \(3,\)"),
    ("wrong batched shape", good_row(obs=np.ones((2, 5), np.float32)), ValueError, r"field 'obs' expects shape"),
    ("unknown field", dict(good_row(), extra=1), TypeError, r"add: unknown field 'extra'; the fields are obs, action"),
    ("missing field", {k: v for k, v in good_row().items() if k != "done"}, TypeError, r"add: missing field 'done'"),
    ("float into int field", good_row(action=1.5), TypeError, r"field 'action' expects dtype int64, got a Python float"),
    ("float array into int field", good_row(action=np.float64(1.0)), TypeError,
     r"field 'action' expects dtype int64 .*same_kind.*got float64"),
    ("int into bool field", good_row(done=1), TypeError, r"field 'done' expects dtype bool"),
    ("string value", good_row(reward="high"), TypeError, r"field 'reward' expects dtype float32"),
    ("object value", good_row(obs=[1, None, 2, 3]), TypeError, r"field 'obs' expects dtype float32"),
    ("ragged list", good_row(obs=[[1, 2], [3]]), TypeError, r"field 'obs'"),
    ("rows disagree", dict(cartpole_rows(0, 3), reward=np.ones(2, np.float32)), ValueError,
     r"add: fields disagree on the number of rows: 'obs' has 3 rows, 'reward' has 2 rows"),
    ("single vs batch", dict(cartpole_rows(0, 3), reward=np.float32(1.0)), ValueError, r"fields disagree"),
    ("too many positionals", None, TypeError, r"add: takes at most 5 positional values"),
    ("twice", None, TypeError, r"add: field 'obs' given twice"),
    ("out of range int", good_row(action=2**63), ValueError,
     r"^add: field 'action' expects dtype int64, got 9223372036854775808, which is out of its range$"),
    ("fake array", good_row(obs=type("Fake", (), {"__array__": lambda self, *a, **k: 1 / 0})()), TypeError,
     r"field 'obs' expects an array of float32 with shape \(4,\) or \(N, 4\), got Fake that numpy cannot convert"),
]


@pytest.mark.parametrize("name,row,exc,match", ADD_CASES, ids=[c[0] for c in ADD_CASES])
@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_bad_add_raises_and_changes_nothing(cls, name, row, exc, match):
    buf = cls(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 6))
    before = snapshot(buf)
    with pytest.raises(exc, match=match):
        if name == "too many positionals":
            buf.add(*cartpole_rows(0, 1).values(), 1)
        elif name == "twice":
            r = cartpole_rows(0, 1)
            buf.add(r["obs"], **r)
        else:
            buf.add(**row)
    assert_unchanged(buf, before)


@pytest.mark.parametrize("value", [-2**63 - 1, 2**64, 2**70])
@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_int_beyond_64_bits_is_out_of_range_like_any_other(cls, value):
    buf = cls(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 6))
    before = snapshot(buf)
    with pytest.raises(ValueError, match=rf"^add: field 'action' expects dtype int64, got {value}, which is out of"):
        buf.add(**good_row(action=value))
    with pytest.raises(ValueError, match=rf"^add: field 'action' expects dtype int64, got {value}, which is out of"):
        buf.add(**{**cartpole_rows(0, 2), "action": [1, value]})
    assert_unchanged(buf, before)


@pytest.mark.parametrize("make", [fr.ReplayBuffer, reference.ReplayBuffer])
def test_python_ints_beyond_64_bits_go_into_float_fields(make):
    buf = make(4, {"x": ((), np.float64), "v": ((2,), np.float32)}, seed=0)
    buf.add(x=2**70, v=[2**64, -2**65])
    assert buf.storage["x"].tolist() == [float(2**70)]
    assert buf.storage["v"].tolist() == [[np.float32(2**64), np.float32(-2**65)]]


@pytest.mark.parametrize("bad,exc,match", [
    (0, ValueError, r"sample: batch_size must be positive, got 0"),
    (-3, ValueError, r"batch_size must be positive, got -3"),
    (2.5, TypeError, r"sample: batch_size must be an int, got float"),
    ("8", TypeError, r"batch_size must be an int, got str"),
    (None, TypeError, r"batch_size must be an int"),
])
def test_bad_batch_size(bad, exc, match):
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 3))
    before = snapshot(buf)
    with pytest.raises(exc, match=match):
        buf.sample(bad)
    assert_unchanged(buf, before)


def test_sample_empty_buffer():
    with pytest.raises(ValueError, match=r"sample: the buffer is empty"):
        fr.ReplayBuffer(8, CARTPOLE).sample(4)
    with pytest.raises(ValueError, match=r"sample: the buffer is empty"):
        fr.PrioritizedReplayBuffer(8, CARTPOLE).sample(4, 0.4)


@pytest.mark.parametrize("cap,exc,match", [
    (0, ValueError, r"capacity must be positive, got 0"),
    (-5, ValueError, r"capacity must be positive, got -5"),
    (3.0, TypeError, r"capacity must be an int, got float"),
    (True, TypeError, r"capacity must be an int"),
])
def test_bad_capacity(cap, exc, match):
    with pytest.raises(exc, match=match):
        fr.ReplayBuffer(cap, CARTPOLE)


def test_capacity_too_large_for_memory_is_memory_error():
    with pytest.raises(MemoryError):
        fr.ReplayBuffer(10**12, {"obs": ((84, 84), np.uint8)})  # 7 PB
    with pytest.raises(MemoryError):
        fr.ReplayBuffer(2**62, {"x": ((4,), np.float64)})  # bytes overflow size_t


@pytest.mark.parametrize("fields,exc,match", [
    ({}, ValueError, r"at least one field"),
    ([("obs", 4)], TypeError, r"fields must be a mapping"),
    ({"obs": ((0,), np.float32)}, ValueError, r"field 'obs' shape must have positive dimensions, got \(0,\)"),
    ({"obs": ((4,), object)}, TypeError, r"field 'obs' needs a fixed-size numeric or bool dtype"),
    ({"obs": ((4,), "U5")}, TypeError, r"field 'obs' needs a fixed-size numeric"),
    ({"obs": (("a",), np.float32)}, TypeError, r"field 'obs' shape must be a tuple of ints"),
    ({"obs": ((4,), "notadtype")}, TypeError, r"field 'obs' dtype 'notadtype' is not a numpy dtype"),
    ({"indices": ((), np.int64)}, ValueError, r"reserved"),
    ({1: ((), np.int64)}, TypeError, r"field names must be non-empty strings"),
])
def test_bad_fields(fields, exc, match):
    with pytest.raises(exc, match=match):
        fr.ReplayBuffer(4, fields)


def test_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int or None"):
        fr.ReplayBuffer(4, CARTPOLE, seed=1.5)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*63\)"):
        fr.ReplayBuffer(4, CARTPOLE, seed=-1)


@pytest.mark.parametrize("idx,exc,match", [
    ([0, 8], IndexError, r"get: index 8 at position 1 is out of range for a buffer holding 6 transitions"),
    ([-1], IndexError, r"get: index -1 at position 0 is out of range"),
    ([[0, 1]], ValueError, r"get: indices must be 1-d, got shape \(1, 2\)"),
    ([0.5], TypeError, r"get: indices must be integers, got dtype float64"),
    (["a"], TypeError, r"get: indices must be integers"),
])
def test_bad_get(idx, exc, match):
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 6))
    with pytest.raises(exc, match=match):
        buf.get(idx)


def test_out_batch_that_is_not_a_batch():
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 6))
    with pytest.raises(TypeError, match=r"sample: out must be a Batch returned by sample\(\), got list"):
        buf.sample(4, out=[])
    b = buf.sample(4)
    b["obs"] = b["obs"][:, :2]
    with pytest.raises(ValueError, match=r"out\['obs'\] must be float32 with shape \(4, 4\), got float32 with shape \(4, 2\)"):
        buf.sample(4, out=b)


@pytest.mark.parametrize("value", [[300, 2], [-1, 0], np.array([1, 2]).tolist()[:1] + [256]])
def test_python_ints_out_of_a_small_fields_range(value):
    buf = fr.ReplayBuffer(4, {"u": ((2,), np.uint8)})
    buf.add(u=[1, 2])
    before = snapshot(buf)
    with pytest.raises(ValueError, match=r"add: field 'u' expects dtype uint8, got -?\d+, which is out of its range"):
        buf.add(u=value)
    assert_unchanged(buf, before)


def test_prioritized_sample_with_no_mass_raises_instead_of_hanging():
    buf = fr.PrioritizedReplayBuffer(3, {"x": ((), np.int64)}, eps=0.0, seed=0)
    buf.add(x=[1, 2])
    buf.update_priorities([0, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="every stored transition has priority 0"):
        buf.sample(2, beta=0.4)


def test_absurd_batch_size_is_memory_error_not_a_crash():
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 3))
    for n in (2**62, 2**40):
        with pytest.raises(MemoryError):
            buf.sample(n)


def test_sample_argument_errors_name_the_call():
    """sample is a vectorcall method (bindings/fastcall.cpp): a wrong call is a TypeError as for a Python
    function, and keywords work for every parameter."""
    b = fr.ReplayBuffer(10, CARTPOLE, seed=0)
    b.add(**cartpole_rows(0, 5))
    p = fr.PrioritizedReplayBuffer(10, CARTPOLE, seed=0)
    p.add(**cartpole_rows(0, 5))
    cases = [
        (lambda: b.sample(), "sample\\(\\) missing required argument 'batch_size'"),
        (lambda: b.sample(2, 3), "sample\\(\\) takes at most 1 positional argument \\(2 given\\)"),
        (lambda: b.sample(2, outt=None), "unexpected keyword argument 'outt'"),
        (lambda: b.sample(2, batch_size=3), "multiple values for argument 'batch_size'"),
        (lambda: p.sample(2, 0.5, 1), "takes at most 2 positional arguments \\(3 given\\)"),
        (lambda: p.sample(2, beta="x"), "sample: beta must be a real number, got str"),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()
    assert len(b.sample(batch_size=3).indices) == 3
    got = p.sample(batch_size=4, beta=0.0, out=None)
    assert len(got.indices) == 4 and np.all(got.weights == 1.0)
