"""fastreplay.reference on its own: small hand-computed examples of the ring, the sum tree, sampling and weights."""
import math

import numpy as np
import pytest

from fastreplay import Batch
from fastreplay.reference import PrioritizedReplayBuffer, ReplayBuffer, SumMinTree

X = {"x": ((), np.int64)}
ROW = {"obs": ((2,), np.float32), "action": ((), np.int64), "done": ((), np.bool_)}


def per(priorities, alpha=1.0, eps=0.0, **kw):
    """A prioritized buffer holding x = 0..n-1 with the given raw priorities."""
    buf = PrioritizedReplayBuffer(len(priorities), X, alpha=alpha, eps=eps, seed=0, **kw)
    buf.add(x=np.arange(len(priorities)))
    buf.update_priorities(np.arange(len(priorities)), priorities)
    return buf


def test_ring_wraps_around_and_counts_generations_by_lap():
    buf = ReplayBuffer(4, X, seed=0)
    for k in range(3):
        buf.add(x=k)
    buf.add(x=[3, 4, 5])  # tickets 3, 4, 5 -> slots 3, 0, 1
    assert buf.storage["x"].tolist() == [4, 5, 2, 3]
    assert (len(buf), buf.full, buf.next_index, buf.total_added) == (4, True, 2, 6)
    assert buf.generations(range(4)).tolist() == [2, 2, 1, 1]  # generation = ticket // capacity + 1
    buf.add(x=np.arange(10, 20))  # tickets 6..15: only the last 4 rows (tickets 12..15, lap 3) are kept
    assert buf.storage["x"].tolist() == [16, 17, 18, 19]
    assert buf.generations(range(4)).tolist() == [4, 4, 4, 4]
    assert (buf.next_index, buf.total_added) == (0, 16)


def test_clear_starts_a_new_epoch_and_keeps_generations():
    buf = ReplayBuffer(4, X, seed=0)
    buf.add(x=[0, 1, 2, 3, 4])  # tickets 0..4; slot 0 holds lap 1
    buf.clear()  # cursor 5 -> 8
    assert (len(buf), buf.next_index, buf.total_added) == (0, 0, 0)
    assert buf.generations(range(4)).tolist() == [2, 1, 1, 1]
    buf.add(x=7)  # ticket 8: slot 0, lap 2
    assert buf.storage["x"].tolist() == [7] and buf.generations([0, 1]).tolist() == [3, 1]
    with pytest.raises(IndexError, match=r"get: index 1 at position 0 is out of range for a buffer holding 1 transitions"):
        buf.get([1])


def test_add_forms_dicts_and_errors_leave_the_buffer_unchanged():
    buf = ReplayBuffer(3, {"obs.a": ((2,), np.float32), "obs.b": ((), np.uint8), "r": ((), np.float32)}, seed=0)
    buf.add(obs={"a": [1, 2], "b": 3}, r=0.5)
    buf.add(np.ones((2, 2)), [4, 5], np.zeros(2, np.float32))  # positional, two rows
    assert buf.storage["obs.b"].tolist() == [3, 4, 5] and buf.storage["obs.a"].dtype == np.float32
    before = {k: v.copy() for k, v in buf.storage.items()}
    bad = [
        (ValueError, r"add: field 'obs.a' expects shape \(2,\) or \(N, 2\), got \(3,\)", dict(obs={"a": [1, 2, 3], "b": 1}, r=0.0)),
        (ValueError, r"expects dtype uint8, got 256, which is out of its range", dict(obs={"a": [1, 2], "b": 256}, r=0.0)),
        (TypeError, r"add: field 'obs' is missing key 'b'", dict(obs={"a": [1, 2]}, r=0.0)),
        (TypeError, r"add: missing field 'r'", dict(obs={"a": [1, 2], "b": 1})),
        (TypeError, r"add: unknown field 'q'", dict(obs={"a": [1, 2], "b": 1}, r=0.0, q=1)),
        (TypeError, r"'same_kind'.*got float64", dict(obs={"a": [1, 2], "b": np.float64(1)}, r=0.0)),
        (ValueError, r"disagree on the number of rows: 'obs.a' has a single row, 'obs.b' has 2 rows",
         dict(obs={"a": [1, 2], "b": [1, 2]}, r=0.0)),
    ]
    for exc, match, kw in bad:
        with pytest.raises(exc, match=match):
            buf.add(**kw)
        assert all(np.array_equal(before[k], v) for k, v in buf.storage.items()) and buf.total_added == 3


def test_uniform_sample_only_returns_stored_rows_and_is_seeded():
    buf = ReplayBuffer(10, ROW, seed=3)
    buf.add(obs=[[0, 0], [1, 1], [2, 2]], action=[0, 1, 2], done=[False, True, False])
    b = buf.sample(200)
    assert isinstance(b, Batch) and b.weights is None and b.generations is None
    assert b.indices.dtype == np.int64 and set(b.indices.tolist()) == {0, 1, 2}  # every stored row, nothing else
    assert b["obs"].shape == (200, 2) and b["obs"].dtype == np.float32
    np.testing.assert_array_equal(b["action"], b.indices)
    np.testing.assert_array_equal(b["obs"][:, 0], b.indices.astype(np.float32))
    small = buf.sample(4)
    assert buf.sample(4, out=small) is small and set(small.indices.tolist()) <= {0, 1, 2}
    again = ReplayBuffer(10, ROW, seed=3)
    again.add(**{k: v for k, v in buf.storage.items()})
    np.testing.assert_array_equal(again.sample(200).indices, b.indices)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        buf.sample(0)
    with pytest.raises(TypeError, match="batch_size must be an int, got float"):
        buf.sample(2.0)
    with pytest.raises(ValueError, match="the buffer is empty"):
        ReplayBuffer(2, X).sample(1)


def test_sum_tree_prefix_search_on_a_hand_made_tree():
    tree = SumMinTree(6)  # P = 8: leaves are nodes 8..13, nodes 14 and 15 stay empty
    for i, v in enumerate([1.0, 0.0, 2.0, 3.0, 0.0, 4.0]):
        tree.set(i, v)
    assert tree.P == 8 and tree.total() == 10.0 and tree.min() == 1.0  # min over positive leaves only
    assert tree.sums[2:8] == [6.0, 4.0, 1.0, 5.0, 4.0, 0.0]
    # Prefix sums 1, 1, 3, 6, 6, 10: slot i owns [cumsum[i-1], cumsum[i]); empty slots own nothing.
    expect = {0.0: 0, 0.999: 0, 1.0: 2, 2.999: 2, 3.0: 3, 5.999: 3, 6.0: 5, 9.999: 5, 10.0: 5, 11.0: 5}
    assert {u: tree.find_prefix(u) for u in expect} == expect
    tree.set(0, 0.0)
    assert tree.min() == 2.0 and tree.total() == 9.0 and tree.find_prefix(0.0) == 2


def test_leaves_max_priority_and_alpha():
    buf = per([1.0, 4.0, 0.0, 9.0], alpha=0.5, eps=0.0)
    assert buf._leaves().tolist() == [1.0, 2.0, 0.0, 3.0] and buf._total == 6.0 and buf._min == 1.0
    buf.update_priorities([0, 0], [16.0, 4.0])  # the last of duplicates wins, but 16 was seen: all-time max 16
    assert buf.priorities.tolist() == [4.0, 4.0, 0.0, 9.0] and buf.max_priority == 16.0
    buf.alpha = 1.0
    assert buf._leaves().tolist() == [4.0, 4.0, 0.0, 9.0]
    buf.add(x=9)  # overwrites slot 0 with the max priority
    assert buf.priorities.tolist() == [16.0, 4.0, 0.0, 9.0]
    stored = per([1.0, 4.0, 0.0, 9.0], max_priority="stored")
    stored.update_priorities([3], [2.0])
    assert stored.max_priority == 4.0
    stored.clear()
    assert stored.max_priority == 1.0 and stored._total == 0.0 and stored._min == math.inf


def test_stratified_sample_and_weights_by_hand():
    buf = per([1.0, 2.0, 4.0])  # alpha 1, eps 0: leaves 1, 2, 4; total 7
    b = buf.sample(7, beta=0.5)  # strata [k, k+1): slot 0 owns [0, 1), slot 1 [1, 3), slot 2 [3, 7)
    assert b.indices.tolist() == [0, 1, 1, 2, 2, 2, 2]
    # weight_i = (leaf_min / leaf_i) ** beta = (1 / leaf_i) ** 0.5
    expected = np.array([1.0, 0.5**0.5, 0.5**0.5, 0.5, 0.5, 0.5, 0.5], np.float32)
    assert b.weights.dtype == np.float32 and np.array_equal(b.weights, expected)
    assert b["x"].tolist() == b.indices.tolist() and b.generations.tolist() == [1] * 7
    assert np.array_equal(buf.sample(7, beta=0.0).weights, np.ones(7, np.float32))
    assert buf.get([2, 0]).weights.tolist() == [1.0, 1.0]
    zero = per([0.0, 2.0])  # a zero priority (with eps 0) is never drawn
    assert set(zero.sample(50).indices.tolist()) == {1}


@pytest.mark.parametrize("stale", ["skip", "raise"])
def test_stale_rows_are_skipped_or_raise(stale):
    buf = PrioritizedReplayBuffer(3, X, alpha=1.0, eps=0.0, seed=0, stale=stale)
    buf.add(x=[0, 1, 2])
    b = buf.get([0, 1, 2])
    buf.add(x=3)  # overwrites slot 0: row 0 of b is stale
    if stale == "skip":
        assert buf.update_priorities(b, [5.0, 6.0, 7.0]) == 1  # the batch carries b.generations
        assert buf.priorities.tolist() == [1.0, 6.0, 7.0]
    else:
        with pytest.raises(ValueError, match=r"index 0 at position 0 is stale.*\(generation 1, now 2\)"):
            buf.update_priorities(b.indices, [5.0, 6.0, 7.0], generations=b.generations)
        assert buf.priorities.tolist() == [1.0, 1.0, 1.0]  # nothing was written
    assert buf.update_priorities(b.indices, [2.0, 2.0, 2.0]) == 0  # indices alone carry no generations
    assert buf.update_priorities([0], [3.0], generations=[2]) == 0
    assert buf.priorities.tolist() == [3.0, 2.0, 2.0]


def test_update_priorities_validates_everything_first():
    buf = per([1.0, 2.0, 3.0])
    for exc, match, args in [
        (IndexError, r"index 3 at position 1 is out of range for a buffer holding 3", ([0, 3], [1.0, 1.0])),
        (ValueError, r"priorities must be finite and >= 0, got -1.000000 at position 1", ([0, 1], [5.0, -1.0])),
        (ValueError, r"finite and >= 0, got nan", ([0], [np.nan])),
        (ValueError, r"same length, got 2 indices and 1 priorities", ([0, 1], [1.0])),
        (TypeError, r"indices must be integers, got dtype float64", ([0.0], [1.0])),
    ]:
        with pytest.raises(exc, match=match):
            buf.update_priorities(*args)
    assert buf.priorities.tolist() == [1.0, 2.0, 3.0]
