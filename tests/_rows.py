"""Rows and threads shared by the tests and the benchmarks: the CartPole and Atari field specs, self-describing
CartPole rows with their consistency check, and the harness that runs worker threads for a fixed time.

The tests import it as ``_rows`` (pytest puts ``tests/`` on ``sys.path``, as it does for ``conftest``); the
benchmarks, run from the repository root (``python -m pytest bench``, ``python -m bench.scripts.<name>``), import
it as ``tests._rows``.
"""
import threading
import time
from typing import Callable, Sequence

import numpy as np

CARTPOLE = {
    "obs": ((4,), np.float32),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": ((4,), np.float32),
    "done": ((), np.bool_),
}
ATARI = {
    "obs": ((4, 84, 84), np.uint8),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": ((4, 84, 84), np.uint8),
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


def run_for(seconds: float, workers: Sequence[Callable[[threading.Event], None]]) -> float:
    """Run each worker in its own thread as ``worker(stop)`` for ``seconds``, then set ``stop`` and join them all.

    A worker loops until ``stop.is_set()``. Returns the wall time from before the first start to after the last
    join. If a worker raises, ``stop`` is set at once, so the others wind down, and the first exception is raised
    here: a failure in a thread fails the caller instead of vanishing with the thread.
    """
    stop = threading.Event()
    errors = []

    def guarded(worker):
        try:
            worker(stop)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(w,)) for w in workers]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed
