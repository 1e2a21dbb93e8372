"""One library, one row set, one mode, in its own process, started by ``run.py`` from the repository
root as ``python -m bench.peers.worker LIB ROWSET MODE PLAN.json OUT.json``.

For each capacity: make the buffer (one env), fill it (tickets 0 .. capacity - 1), then time
``sample(B)`` for each batch size (``sample(B, beta)`` for PER), PER's ``sample(B)`` then ``update_priorities``,
multi-threaded sampling (uniform, largest capacity: two Python threads calling ``sample``, and the library's own
background sampler where it has one), ``add`` of one transition, and ``add`` of a 16-row vector-env batch (in a
buffer made for 16 envs where the library needs one). Every timed operation is followed by a check of a batch it
(or a later sample) returned: see ``common.check_batch``.
"""
from __future__ import annotations

import gc
import importlib
import json
import resource
import sys
import time
import traceback
from typing import Any, Dict, List

import numpy as np

from .common import (batched_rows, check_batch, fill_chunks, loadavg, measure, measure_threads, row_bytes,
                     single_rows, stats)


def main() -> None:
    lib, rowset, mode, plan_path, out_path = sys.argv[1:6]
    with open(plan_path) as f:
        plan = json.load(f)
    prioritized = mode == "per"
    T = plan["timing"]
    spec = plan[rowset]
    n_vec = plan["n_vec"]
    results: List[Dict[str, Any]] = []
    group: Dict[str, Any] = {"lib": lib, "rowset": rowset, "mode": mode, "status": "ok", "notes": [],
                             "load_start": loadavg(), "started": time.time()}

    def dump() -> None:
        group["load_end"] = loadavg()
        group["wall_s"] = time.time() - group["started"]
        group["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out_path, "w") as f:
            json.dump({"group": group, "results": results}, f)

    try:
        mod = importlib.import_module(f".lib_{lib}", __package__)
        group["info"] = mod.info()
    except Exception as e:  # noqa: BLE001
        group["status"] = "skipped"
        group["notes"].append(f"not installed or does not import: {type(e).__name__}: {e}")
        dump()
        return
    A = mod.Adapter
    if prioritized and not A.per_supported:
        group["status"] = "n/a"
        group["notes"].append("the library has no prioritized replay buffer")
        dump()
        return
    checkable = getattr(A, "checkable", True)
    rb = row_bytes(rowset)
    rng = np.random.default_rng(1)

    def record(op: str, capacity: int, batch: int, stats: Dict[str, Any], problems, extra=None) -> None:
        r = {"lib": lib, "rowset": rowset, "mode": mode, "op": op, "capacity": capacity, "batch": batch}
        r.update({k: v for k, v in stats.items() if k != "last"})
        r["bytes_per_op"] = batch * rb + (8 * batch if op == "sample+update" else 0)
        if problems is None:
            r["check"] = "n/a"
        elif problems:
            r["check"] = "FAIL: " + "; ".join(problems)
        else:
            r["check"] = "ok"
        r.update(extra or {})
        results.append(r)
        status = r["check"] if r["check"] != "ok" else ""
        print(f"  {lib:10s} {rowset:5s} {mode:7s} {op:16s} C={capacity:<8d} B={batch:<5d} "
              f"{stats['median_s'] * 1e6:10.2f} us  iqr {stats['iqr_rel'] * 100:4.0f}%  {status}", flush=True)

    def fail(op: str, capacity: int, batch: int, e: BaseException) -> None:
        msg = f"{type(e).__name__}: {e}"
        results.append({"lib": lib, "rowset": rowset, "mode": mode, "op": op, "capacity": capacity, "batch": batch,
                        "error": msg[:500]})
        print(f"  {lib} {rowset} {mode} {op} C={capacity} B={batch}: ERROR {msg[:300]}", flush=True)
        traceback.print_exc(file=sys.stderr)

    def checked(a, res, batch, capacity, k_range, index_bound):
        if not checkable:
            return None
        return check_batch(rowset, a.to_check(res), batch, capacity, k_range, index_bound)

    def settle(a, C: int) -> None:
        """After filling a large buffer the machine stays slow for up to a second or so (seen here: the first
        samples after writing 5.6 GB take milliseconds, then drop to ~0.2 ms): sample, untimed, for a while."""
        secs = min(1.5, C * rb / 4e9)
        if secs < 0.05:
            return
        op, t_end = a.sample_op(spec["batch"]), time.perf_counter() + secs
        while time.perf_counter() < t_end:
            op()

    caps = spec["capacities"]
    for C in caps:
        try:
            a = A(rowset, C, prioritized, 1)
        except Exception as e:  # noqa: BLE001
            if C == caps[0]:
                group["status"] = "n/a"
                group["notes"].append(f"buffer could not be made: {type(e).__name__}: {str(e)[:300]}")
                dump()
                return
            fail("make", C, 0, e)
            continue
        t0 = time.time()
        a.fill(fill_chunks(rowset, 0, C) if checkable else iter(()))
        group.setdefault("fill_s", {})[str(C)] = time.time() - t0
        settle(a, C)
        hi = C  # tickets stored: [0, hi)
        batches = spec["batches"] if C == caps[-1] else [spec["batch"]]
        for B in batches:
            try:
                op = a.sample_op(B)
                st = measure(op, T["rounds"], T["round_s"])
                record("sample", C, B, st, checked(a, op(), B, C, (0, hi), C))
            except Exception as e:  # noqa: BLE001
                fail("sample", C, B, e)
        if prioritized:
            for B in batches:
                try:
                    td = rng.random(B) * 2 + 0.01
                    op = a.sample_update_op(B, td)
                    st = measure(op, T["rounds"], T["round_s"])
                    record("sample+update", C, B, st, checked(a, op(), B, C, (0, hi), C))
                except Exception as e:  # noqa: BLE001
                    fail("sample+update", C, B, e)
        if not prioritized and C == caps[-1]:
            B = spec["batch"]
            try:
                # rounds on 1 and on 2 threads alternate, so that both see the same competing load
                one, two, last = [], [], []
                for _ in range(T["mt_rounds"]):
                    one += measure_threads(lambda i: a.sample_op(B), 1, 1, T["mt_round_s"])["rounds_s"]
                    s2 = measure_threads(lambda i: a.sample_op(B), plan["threads"], 1, T["mt_round_s"])
                    two += s2["rounds_s"]
                    last = s2["last"]
                st = stats(two)
                st.update(rounds=len(two), calls_per_round=None, rounds_s=two)
                probs = None
                if checkable:
                    probs = [p for res in last for p in checked(a, res, B, C, (0, hi), C)]
                record("sample_mt", C, B, st, probs, {"threads": plan["threads"], "single_rounds_s": one})
            except Exception as e:  # noqa: BLE001
                fail("sample_mt", C, B, e)
            try:
                pf = a.prefetch_op(B, plan["threads"])
                if pf is not None:
                    op, close = pf
                    try:
                        st = measure(op, T["rounds"], T["round_s"])
                        record("prefetch", C, B, st, checked(a, op(), B, C, (0, hi), C),
                               {"threads": plan["threads"]})
                    finally:
                        close()
            except Exception as e:  # noqa: BLE001
                fail("prefetch", C, B, e)
        # add one transition (tickets hi .. hi + P - 1, cycled)
        P = 4096 if rowset == "small" else 256
        B = spec["batch"]
        try:
            op = a.add1_op(single_rows(rowset, hi, P))
            st = measure(op, T["rounds"], T["round_s"])
            hi += P
            record("add", C, 1, st, checked(a, a.sample_op(B)(), B, C, (0, hi), C))
        except Exception as e:  # noqa: BLE001
            fail("add", C, 1, e)
        # add a vector-env batch
        nb = 256 if rowset == "small" else 16
        try:
            if A.vector_buffer:
                a.close()
                a = None
                gc.collect()
                a = A(rowset, C, prioritized, n_vec)
                rows = A.vector_fill_rows(C) if hasattr(A, "vector_fill_rows") else C
                a.fill(fill_chunks(rowset, 0, rows) if checkable else iter(()))
                settle(a, C)
                lo, hi = 0, rows
                k0 = hi
            else:
                lo, k0 = 0, hi
            op = a.addn_op(batched_rows(rowset, k0, nb, n_vec))
            st = measure(op, T["rounds"], T["round_s"])
            hi = k0 + nb * n_vec
            record("add", C, n_vec, st, checked(a, a.sample_op(B)(), B, C, (lo, hi), C))
        except Exception as e:  # noqa: BLE001
            fail("add", C, n_vec, e)
        if a is not None:
            a.close()
        a = None
        gc.collect()
        dump()
    dump()


if __name__ == "__main__":
    main()
