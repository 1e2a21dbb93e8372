"""Shared pieces of the peer comparison (``python -m bench.peers.run``): the workload plan, self-describing rows,
the row checks, and timing.

Every row is derived from one integer k (its ticket):

- small rows (CartPole-like): ``obs = float32[4]`` with ``obs[i] = 4 * (k mod 2**20) + i``, ``action = k`` (int64),
  ``reward = 0.5 * (k mod 1000)`` (float32), ``next_obs`` = the obs of k + 1, ``done = (k mod 13 == 0)``;
- image rows: ``obs = uint8[4, 84, 84]`` whose first 8 bytes hold k (little-endian int64) and whose other bytes all
  equal ``k mod 251``; ``next_obs`` = the image of k + 1; action, reward and done as above.

All of these values are exact in float32, so a sampled row can be checked exactly: read k from ``action`` and
recompute every other field. A row mixing two transitions, a field from the wrong slot, a stale or never-written
row, or a batch that repeats a handful of rows is reported as a failed check next to the timing.
"""
from __future__ import annotations

import gc
import itertools
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

SMALL_OBS = (4,)
IMAGE_OBS = (4, 84, 84)
IMAGE_BYTES = int(np.prod(IMAGE_OBS))
ROWSETS = ("small", "image")
MODES = ("uniform", "per")
N_VEC = 16  # rows per vector-env add (16 sub-environments)
ALPHA, BETA = 0.6, 0.4


def obs_shape(rowset: str) -> tuple:
    return SMALL_OBS if rowset == "small" else IMAGE_OBS


def obs_dtype(rowset: str) -> np.dtype:
    return np.dtype(np.float32) if rowset == "small" else np.dtype(np.uint8)


def row_bytes(rowset: str) -> int:
    """Bytes of one transition: obs + action (8) + reward (4) + next_obs + done (1)."""
    ob = 16 if rowset == "small" else IMAGE_BYTES
    return 2 * ob + 8 + 4 + 1


# --------------------------------------------------------------------------------------------------------------
# The plan: which operations at which capacities and batch sizes.


def plan(quick: bool) -> Dict[str, Any]:
    if quick:
        small_caps, image_caps = [10_000, 100_000], [10_000]
        small_batches, image_batches = [32, 256, 1024], [32, 128]
        timing = dict(rounds=7, round_s=0.002, mt_rounds=3, mt_round_s=0.05)
    else:
        small_caps, image_caps = [10_000, 100_000, 1_000_000], [10_000, 100_000]
        small_batches, image_batches = [32, 64, 128, 256, 512, 1024], [32, 64, 128, 256]
        timing = dict(rounds=41, round_s=0.0015, mt_rounds=7, mt_round_s=0.05)
    return {
        "quick": quick,
        "small": dict(capacities=small_caps, batches=small_batches, batch=256),
        "image": dict(capacities=image_caps, batches=image_batches, batch=32),
        "timing": timing,
        "threads": 2,
        "n_vec": N_VEC,
        "alpha": ALPHA,
        "beta": BETA,
    }


# --------------------------------------------------------------------------------------------------------------
# Self-describing rows.


def _obs_of(rowset: str, k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, np.int64)
    if rowset == "small":
        return ((k % (1 << 20)) * 4)[:, None].astype(np.float32) + np.arange(4, dtype=np.float32)
    n = len(k)
    obs = np.empty((n, IMAGE_BYTES), np.uint8)
    obs[:] = (k % 251).astype(np.uint8)[:, None]
    obs[:, :8] = k.astype("<i8").view(np.uint8).reshape(n, 8)
    return obs.reshape(n, *IMAGE_OBS)


def make_rows(rowset: str, k0: int, n: int) -> Dict[str, np.ndarray]:
    """Rows k0 .. k0 + n - 1 as numpy arrays with a leading axis n (obs/next_obs own separate memory)."""
    k = np.arange(k0, k0 + n, dtype=np.int64)
    obs_all = _obs_of(rowset, np.arange(k0, k0 + n + 1, dtype=np.int64))
    return {
        "obs": np.ascontiguousarray(obs_all[:-1]),
        "action": k,
        "reward": ((k % 1000) * 0.5).astype(np.float32),
        "next_obs": np.ascontiguousarray(obs_all[1:]),
        "done": (k % 13) == 0,
    }


def single_rows(rowset: str, k0: int, n: int) -> List[tuple]:
    """n single transitions as an env loop would hand them: (obs ndarray, int action, float reward, next_obs, bool done)."""
    r = make_rows(rowset, k0, n)
    return [(r["obs"][i], int(r["action"][i]), float(r["reward"][i]), r["next_obs"][i], bool(r["done"][i]))
            for i in range(n)]


def batched_rows(rowset: str, k0: int, n_batches: int, n: int = N_VEC) -> List[Dict[str, np.ndarray]]:
    """n_batches vector-env batches of n consecutive rows each."""
    return [make_rows(rowset, k0 + j * n, n) for j in range(n_batches)]


def fill_chunks(rowset: str, k0: int, total: int, chunk: Optional[int] = None):
    """Yield make_rows chunks covering k0 .. k0 + total - 1."""
    chunk = chunk or (65_536 if rowset == "small" else 1024)
    k = k0
    while k < k0 + total:
        n = min(chunk, k0 + total - k)
        yield make_rows(rowset, k, n)
        k += n


def check_batch(rowset: str, b: Dict[str, Any], batch_size: int, capacity: int,
                k_range: Optional[Sequence[int]] = None, index_bound: Optional[int] = None) -> List[str]:
    """Problems with a sampled batch, given as numpy arrays: obs, action, reward, next_obs, done (+ indices, weights).

    ``k_range = (lo, hi)``: every sampled ticket must lie in [lo, hi) (the rows stored now).
    """
    problems: List[str] = []
    try:
        obs = np.asarray(b["obs"])
        act = np.asarray(b["action"]).reshape(-1)
        rew = np.asarray(b["reward"]).reshape(-1)
        nxt = np.asarray(b["next_obs"])
        done = np.asarray(b["done"]).reshape(-1)
    except Exception as e:  # noqa: BLE001
        return [f"batch unreadable: {type(e).__name__}: {e}"]
    n = len(act)
    if n != batch_size:
        problems.append(f"batch has {n} rows, expected {batch_size}")
    shape = obs_shape(rowset)
    if obs.shape[1:] != shape or nxt.shape[1:] != shape or len(obs) != n or len(nxt) != n:
        return problems + [f"obs/next_obs shapes {obs.shape}/{nxt.shape}, expected ({n}, {shape})"]
    if len(rew) != n or len(done) != n:
        return problems + [f"reward/done lengths {len(rew)}/{len(done)}, expected {n}"]
    k = act.astype(np.int64)
    if rowset == "small":
        bad_obs = ~np.all(obs == _obs_of(rowset, k), axis=1)
        bad_next = ~np.all(nxt == _obs_of(rowset, k + 1), axis=1)
    else:
        flat, flatn = obs.reshape(n, -1), nxt.reshape(n, -1)
        head = np.ascontiguousarray(flat[:, :8]).view("<i8").reshape(-1)
        headn = np.ascontiguousarray(flatn[:, :8]).view("<i8").reshape(-1)
        probe = slice(8, None, 97)  # every 97th byte after the header
        bad_obs = (head != k) | np.any(flat[:, probe] != (k % 251).astype(np.uint8)[:, None], axis=1)
        bad_next = (headn != k + 1) | np.any(flatn[:, probe] != ((k + 1) % 251).astype(np.uint8)[:, None], axis=1)
    bad_rew = rew.astype(np.float64) != (k % 1000) * 0.5
    bad_done = done.astype(bool) != ((k % 13) == 0)
    for what, bad in (("obs", bad_obs), ("next_obs", bad_next), ("reward", bad_rew), ("done", bad_done)):
        if bad.any():
            i = int(np.argmax(bad))
            problems.append(f"{int(bad.sum())}/{n} rows with {what} not matching their action (first: k={k[i]})")
    if k_range is not None:
        lo, hi = k_range
        out = (k < lo) | (k >= hi)
        if out.any():
            problems.append(f"{int(out.sum())}/{n} rows are not among the stored transitions "
                            f"(tickets {lo}..{hi - 1}; e.g. {int(k[np.argmax(out)])})")
    if capacity >= 8 * batch_size and n > 0:
        uniq = len(np.unique(k))
        if uniq < n // 4:
            problems.append(f"only {uniq} distinct rows in a batch of {n} from {capacity} stored")
    idx = b.get("indices")
    if idx is not None:
        idx = np.asarray(idx).reshape(-1)
        if len(idx) != n:
            problems.append(f"indices has {len(idx)} entries, expected {n}")
        elif index_bound is not None and ((idx.astype(np.int64) < 0).any() or (idx.astype(np.int64) >= index_bound).any()):
            problems.append(f"indices out of [0, {index_bound})")
    w = b.get("weights")
    if w is not None:
        w = np.asarray(w, np.float64).reshape(-1)
        if len(w) != n or not np.all(np.isfinite(w)) or (w <= 0).any() or (w > 1 + 1e-5).any():
            problems.append("importance weights not all finite and in (0, 1]")
    return problems


# --------------------------------------------------------------------------------------------------------------
# Timing.


def stats(per_call: List[float]) -> Dict[str, float]:
    a = np.asarray(per_call)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3), "min_s": float(a.min()),
            "iqr_rel": float((q3 - q1) / med) if med > 0 else 0.0}


def measure(op: Callable[[], Any], rounds: int, round_s: float, max_calls: int = 1_000_000) -> Dict[str, Any]:
    """Median (and spread) over ``rounds`` rounds of the mean time of one call, each round ~``round_s`` long."""
    t = time.perf_counter()
    op()
    t1 = time.perf_counter() - t
    calls = int(min(max(round_s / max(t1, 1e-9), 1), max_calls))
    # calibrate on a warm second pass, then warm up for about one round
    t = time.perf_counter()
    for _ in range(min(calls, 64)):
        op()
    t2 = (time.perf_counter() - t) / min(calls, 64)
    calls = int(min(max(round_s / max(t2, 1e-9), 1), max_calls))
    for _ in range(calls):
        op()
    gc_was = gc.isenabled()
    gc.disable()
    per_call: List[float] = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(calls):
                op()
            per_call.append((time.perf_counter() - t) / calls)
    finally:
        if gc_was:
            gc.enable()
    out = stats(per_call)
    out.update(rounds=rounds, calls_per_round=calls, rounds_s=per_call)
    return out


def measure_threads(make_op: Callable[[int], Callable[[], Any]], threads: int, rounds: int,
                    round_s: float) -> Dict[str, Any]:
    """Aggregate time per call with ``threads`` Python threads calling their own op in a loop for ~round_s each
    round: time per call = wall time of the round / calls completed by all threads. ``make_op(i)`` builds thread
    i's op; the ops' last results are returned in ``last`` for checking."""
    ops = [make_op(i) for i in range(threads)]
    counts = [0] * threads
    last: List[Any] = [None] * threads
    barrier = threading.Barrier(threads + 1)
    stop = [0.0]
    errors: List[BaseException] = []

    def worker(i: int) -> None:
        op = ops[i]
        try:
            for _ in range(rounds + 1):  # one warm-up round
                barrier.wait()
                n, deadline, res = 0, stop[0], None
                while time.perf_counter() < deadline:
                    res = op()
                    n += 1
                counts[i] = n
                last[i] = res
                barrier.wait()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            barrier.abort()

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for th in ts:
        th.start()
    per_call: List[float] = []
    try:
        for r in range(rounds + 1):
            stop[0] = time.perf_counter() + round_s
            t = time.perf_counter()
            barrier.wait()
            barrier.wait()
            wall = time.perf_counter() - t
            if r > 0:
                per_call.append(wall / max(sum(counts), 1))
    except threading.BrokenBarrierError:
        pass
    for th in ts:
        th.join(timeout=30)
    if errors:
        raise errors[0]
    out = stats(per_call)
    out.update(rounds=rounds, calls_per_round=None, threads=threads, last=last, rounds_s=per_call)
    return out


def cycle_op(items: Sequence[Any], fn: Callable[[Any], Any]) -> Callable[[], Any]:
    it = itertools.cycle(items)

    def op() -> Any:
        return fn(next(it))

    return op


def loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
