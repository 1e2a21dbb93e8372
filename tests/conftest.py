"""Shared test helpers: snapshots of a buffer's observable state. Rows, the row check and the thread harness live
in ``_rows.py``, which the benchmarks use too."""
import numpy as np

import fastreplay as fr


def snapshot(buf) -> dict:
    """Everything observable about a buffer's contents: copies of the columns, the counters, and for a prioritized
    buffer its tree leaves and priorities."""
    state = {k: v.copy() for k, v in buf.storage.items()}
    state["_meta"] = (len(buf), buf.next_index, buf.total_added)
    if isinstance(buf, fr.PrioritizedReplayBuffer):
        state["_leaves"] = buf._leaves()
        state["_prio"] = buf.priorities
    return state


def assert_unchanged(buf, before: dict) -> None:
    """Assert that ``snapshot(buf)`` still equals ``before``."""
    after = snapshot(buf)
    assert before.keys() == after.keys()
    for k in before:
        if isinstance(before[k], np.ndarray):
            np.testing.assert_array_equal(before[k], after[k])
        else:
            assert before[k] == after[k]
