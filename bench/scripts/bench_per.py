"""Prioritized replay (issue 19): batched add and the sample/update loop, side by side in one run.

    nice -n 5 python -m bench.scripts.bench_per             # from the repository root; writes bench/results/per.{json,md}
    nice -n 5 python -m bench.scripts.bench_per --quick     # fewer rounds
    python -m bench.scripts.bench_per --no-write            # print only

Cases (CartPole rows: obs/next_obs float32[4], action int64, reward float32, done bool; capacity 10**6):
- Fill: a fresh buffer filled with 10**6 rows in chunks of 10,000 (``add(**chunk)``), then a second lap over the
  full buffer (the steady state, without the first-touch page faults of fresh memory): fastreplay
  PrioritizedReplayBuffer, fastreplay ReplayBuffer and cpprb PrioritizedReplayBuffer (and cpprb ReplayBuffer), the
  rounds interleaved so that every library sees the same machine load. Rows/s of the median round.
- Loop: ``b = buf.sample(256, beta=0.4)`` then ``buf.update_priorities(b, td)`` at 10**6 (td float32[256] in
  [0, 1)), and its parts through the API (sample alone, update alone, the bindings without the core); cpprb's
  loop (``sample(256, beta)`` + ``update_priorities(indexes, td)``) in the same run.
- Breakdown inside the core: bench/cpp/per_bench.cpp (built here with g++ if there is one, the same flags as the
  extension's release build) times each stage of sample and update_priorities in isolation.
Every loop figure is the median over rounds of the mean time per call, in microseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np

import fastreplay as fr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP = 1_000_000
CHUNK = 10_000
B = 256
BETA = 0.4
ALPHA = 0.6
FIELDS = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
          "next_obs": ((4,), np.float32), "done": ((), np.bool_)}


def chunk_rows(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    return {"obs": obs[:-1], "action": rng.integers(0, 2, n), "reward": rng.random(n).astype(np.float32),
            "next_obs": obs[1:], "done": rng.random(n) < 0.05}


class FrLib:
    def __init__(self, prioritized: bool) -> None:
        self.prioritized = prioritized
        self.name = "fastreplay " + ("PrioritizedReplayBuffer" if prioritized else "ReplayBuffer")

    def make(self):
        if self.prioritized:
            return fr.PrioritizedReplayBuffer(CAP, FIELDS, alpha=ALPHA, seed=0)
        return fr.ReplayBuffer(CAP, FIELDS, seed=0)

    @staticmethod
    def add(buf, c) -> None:
        buf.add(obs=c["obs"], action=c["action"], reward=c["reward"], next_obs=c["next_obs"], done=c["done"])


class CpprbLib:
    def __init__(self, prioritized: bool) -> None:
        self.prioritized = prioritized
        self.name = "cpprb " + ("PrioritizedReplayBuffer" if prioritized else "ReplayBuffer")

    def make(self):
        import cpprb
        env = {"obs": {"shape": 4, "dtype": np.float32}, "act": {"dtype": np.int64}, "rew": {"dtype": np.float32},
               "next_obs": {"shape": 4, "dtype": np.float32}, "done": {"dtype": np.bool_}}
        if self.prioritized:
            return cpprb.PrioritizedReplayBuffer(CAP, env, alpha=ALPHA)
        return cpprb.ReplayBuffer(CAP, env)

    @staticmethod
    def add(buf, c) -> None:
        buf.add(obs=c["obs"], act=c["action"], rew=c["reward"], next_obs=c["next_obs"], done=c["done"])


def have_cpprb() -> bool:
    try:
        import cpprb  # noqa: F401
        return True
    except ImportError:
        return False


def bench_fill(libs: List[Any], rounds: int) -> Dict[str, Any]:
    chunks = [chunk_rows(CHUNK, s) for s in range(4)]
    res: Dict[str, Any] = {lib.name: {"first_s": [], "lap_s": []} for lib in libs}
    for _ in range(rounds):
        for lib in libs:  # interleaved: every library sees the same load
            buf = lib.make()
            add = lib.add
            t0 = time.perf_counter()
            for k in range(CAP // CHUNK):
                add(buf, chunks[k % 4])
            t1 = time.perf_counter()
            for k in range(CAP // CHUNK):
                add(buf, chunks[k % 4])
            t2 = time.perf_counter()
            res[lib.name]["first_s"].append(t1 - t0)
            res[lib.name]["lap_s"].append(t2 - t1)
            del buf
    for r in res.values():
        r["first_mrows_s"] = CAP / float(np.median(r["first_s"])) / 1e6
        r["lap_mrows_s"] = CAP / float(np.median(r["lap_s"])) / 1e6
    return res


def per_call_us(fn: Callable[[], object], calls: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return 1e6 * float(np.median(times))


def filled(lib) -> Any:
    buf = lib.make()
    for k in range(CAP // CHUNK):
        lib.add(buf, chunk_rows(CHUNK, k % 4) if k < 4 else _CACHE[k % 4])
    return buf


_CACHE = [chunk_rows(CHUNK, s) for s in range(4)]


def bench_loop(calls: int, rounds: int, cpprb_too: bool) -> Dict[str, Any]:
    rng = np.random.default_rng(1)
    td = rng.random(B).astype(np.float32)
    out: Dict[str, Any] = {}
    buf = filled(FrLib(True))
    buf.update_priorities(np.arange(CAP), rng.random(CAP))  # spread priorities, as after training for a while
    sample, update = buf.sample, buf.update_priorities
    core_update = buf._update_priorities
    batches = [sample(B, BETA) for _ in range(64)]
    it = [0]

    def loop():
        b = sample(B, BETA)
        update(b, td)

    def update_only():  # a batch drawn earlier (its rows are no longer in cache after a few loops)
        b = batches[it[0] & 63]
        it[0] += 1
        update(b, td)

    def update_core():  # the compiled method: skips the Python wrapper (_args.update_arrays)
        b = batches[it[0] & 63]
        it[0] += 1
        core_update(b.indices, td, b.generations, False)

    def empty_update():  # the bindings and the Python wrapper with nothing to write
        update(batches[0].indices[:0], td[:0])

    for name, fn in (("loop", loop), ("sample", lambda: sample(B, BETA)), ("update", update_only),
                     ("update_compiled", update_core), ("update_empty", empty_update),
                     ("sample_1", lambda: sample(1, BETA))):
        fn()
        out[name] = per_call_us(fn, calls, rounds)
    del buf
    if cpprb_too:
        lib = CpprbLib(True)
        cb = filled(lib)
        cb.update_priorities(np.arange(CAP), rng.random(CAP))

        def cloop():
            s = cb.sample(B, BETA)
            cb.update_priorities(s["indexes"], td)
        cloop()
        out["cpprb_loop"] = per_call_us(cloop, calls, rounds)
    return out


def core_breakdown() -> Dict[str, Any]:
    """Build and run bench/cpp/per_bench.cpp --breakdown (JSON on stdout); {} without a C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return {"note": "no C++ compiler: core breakdown not measured"}
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "per_bench")
        subprocess.run([cxx, "-O2", "-std=c++17", "-DNDEBUG", "-I", os.path.join(ROOT, "csrc"),
                        os.path.join(ROOT, "bench", "cpp", "per_bench.cpp"), "-o", exe, "-lpthread"], check=True)
        r = subprocess.run([exe, "--json", "1e6"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def markdown(res: Dict[str, Any]) -> str:
    f, lp, core = res["fill"], res["loop"], res.get("core", {})
    lines = ["# Prioritized replay: batched add and the sample/update loop (issue 19)", "",
             f"One run of `{res['command']}` on {res['machine']} ({res['date']}); "
             "CartPole rows, capacity 10^6.", "",
             "## Fill in chunks of 10,000 rows", "",
             "| buffer | fresh buffer (M rows/s) | second lap (M rows/s) |", "|---|---|---|"]
    for name, r in f.items():
        lines.append(f"| {name} | {r['first_mrows_s']:.2f} | {r['lap_mrows_s']:.2f} |")
    uni = f.get("fastreplay ReplayBuffer", {}).get("first_mrows_s")
    per = f.get("fastreplay PrioritizedReplayBuffer", {}).get("first_mrows_s")
    cp = f.get("cpprb PrioritizedReplayBuffer", {}).get("first_mrows_s")
    if uni and per:
        lines += ["", f"Prioritized fill / uniform fill (fresh buffer): {per / uni:.2f} (target >= 0.67)"
                  + (f"; / cpprb PER: {per / cp:.2f} (target > 1)" if cp else "") + "."]
    lines += ["", "## Loop at 10^6, B=256 (µs per call, through the public API)", "",
              "| call | µs |", "|---|---|"]
    labels = {"loop": "`sample(256, 0.4)` + `update_priorities(batch, td)`", "sample": "`sample(256, 0.4)`",
              "update": "`update_priorities(batch, td)` (a batch drawn earlier)",
              "update_compiled": "`_update_priorities` (the compiled call, no Python wrapper)",
              "update_empty": "`update_priorities` of 0 rows (Python + bindings)",
              "sample_1": "`sample(1, 0.4)` (bindings + batch object)",
              "cpprb_loop": "cpprb: `sample(256, 0.4)` + `update_priorities(indexes, td)`"}
    for k, v in lp.items():
        lines.append(f"| {labels.get(k, k)} | {v:.2f} |")
    if core.get("stages"):
        lines += ["", "## Inside the core (bench/cpp/per_bench.cpp, the same machine, just before)", "",
                  "| stage | µs per batch of 256 |", "|---|---|"]
        for k, v in core["stages"].items():
            lines.append(f"| {k} | {v:.2f} |")
    elif core.get("note"):
        lines += ["", core["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-core", action="store_true", help="skip the C++ breakdown")
    a = ap.parse_args()
    rounds = 3 if a.quick else 5
    cp = have_cpprb()
    libs: List[Any] = [FrLib(True), FrLib(False)] + ([CpprbLib(True), CpprbLib(False)] if cp else [])
    res: Dict[str, Any] = {"command": "python -m bench.scripts.bench_per" + (" --quick" if a.quick else ""),
                           "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "fastreplay": fr.__version__, "cpprb": cp}
    if not a.no_core:
        res["core"] = core_breakdown()
    res["fill"] = bench_fill(libs, rounds)
    res["loop"] = bench_loop(500 if a.quick else 2000, 7 if a.quick else 15, cp)
    md = markdown(res)
    print(md)
    if not a.no_write:
        out = os.path.join(ROOT, "bench", "results")
        with open(os.path.join(out, "per.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        with open(os.path.join(out, "per.md"), "w") as fh:
            fh.write(md)


if __name__ == "__main__":
    sys.exit(main())
