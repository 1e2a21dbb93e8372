"""Timing shared by the stand-alone benchmarks (bench/scripts): interleaved rounds of several variants."""
from __future__ import annotations

import time
from typing import Callable, Dict, List

import numpy as np


def rounds(calls: Dict[str, Callable[[], object]], budget: float, warm: int, n_rounds: int) -> Dict[str, Dict[str, float]]:
    """Median over rounds of the mean seconds per call of each variant; the variants alternate round by round (in
    rotating order), so that other load on the machine hits all of them alike."""
    per_round = {}
    for k, call in calls.items():
        for _ in range(warm):
            call()
        t0 = time.perf_counter()
        call()
        one = max(time.perf_counter() - t0, 1e-7)
        per_round[k] = max(1, int(budget / n_rounds / one))
    means: Dict[str, List[float]] = {k: [] for k in calls}
    keys = list(calls)
    for r in range(n_rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            call, m = calls[k], per_round[k]
            t0 = time.perf_counter_ns()
            for _ in range(m):
                call()
            means[k].append((time.perf_counter_ns() - t0) / m / 1e9)
    out = {}
    for k, v in means.items():
        med = float(np.median(v))
        q1, q3 = np.percentile(v, [25, 75])
        out[k] = {"seconds": med, "iqr_pct": float(100 * (q3 - q1) / med), "calls": per_round[k] * n_rounds}
    return out
