"""Shared fixtures: the two row types used across tests and benchmarks."""
import numpy as np
import pytest

CARTPOLE = {
    "obs": ((4,), np.float32),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": ((4,), np.float32),
    "done": ((), np.bool_),
}


def cartpole_rows(start: int, n: int) -> dict:
    """n self-describing CartPole rows: every field is derived from the row's counter k = start + i."""
    k = np.arange(start, start + n)
    return {
        "obs": np.stack([k, k + 1, k + 2, k + 3], axis=1).astype(np.float32),
        "action": k.astype(np.int64),
        "reward": (k * 0.5).astype(np.float32),
        "next_obs": np.stack([k + 4, k + 5, k + 6, k + 7], axis=1).astype(np.float32),
        "done": (k % 3 == 0),
    }


def check_self_consistent(batch) -> np.ndarray:
    """Assert every row of a batch of cartpole_rows is one whole transition; return the counters."""
    k = batch["action"]
    np.testing.assert_array_equal(batch["obs"][:, 0], k.astype(np.float32))
    np.testing.assert_array_equal(batch["obs"], np.stack([k, k + 1, k + 2, k + 3], 1).astype(np.float32))
    np.testing.assert_array_equal(batch["next_obs"], np.stack([k + 4, k + 5, k + 6, k + 7], 1).astype(np.float32))
    np.testing.assert_array_equal(batch["reward"], (k * 0.5).astype(np.float32))
    np.testing.assert_array_equal(batch["done"], k % 3 == 0)
    return k


@pytest.fixture
def cartpole_fields():
    return dict(CARTPOLE)
