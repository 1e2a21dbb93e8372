"""Prioritized replay (issue 19): batched add and the sample/update loop, side by side in one run.

    nice -n 5 python -m bench.scripts.bench_per          # from the repository root; writes bench/results/per.{json,md}
    nice -n 5 python -m bench.scripts.bench_per --quick  # fewer rounds
    python -m bench.scripts.bench_per --no-write         # print only
    # before/after in the same run: an earlier build and its sources, e.g. of main
    git worktree add --detach /tmp/base main
    pip install --no-deps --no-build-isolation --target /tmp/frbase /tmp/base
    python -m bench.scripts.bench_per --before /tmp/frbase --before-src /tmp/base/csrc \\
        --before-label "main at <commit>"

Cases (CartPole rows: obs/next_obs float32[4], action int64, reward float32, done bool; capacity 10**6):
- Fill: a fresh buffer filled with 10**6 rows in chunks of 10,000 (``add(**chunk)``, construction not timed), then
  a second lap over the full buffer (the steady state, without the first-touch page faults of fresh memory):
  fastreplay PrioritizedReplayBuffer and ReplayBuffer, cpprb PrioritizedReplayBuffer and ReplayBuffer, the rounds
  interleaved and their order rotated. Rows/s of the median and of the best round.
- Loop: ``b = buf.sample(256, beta=0.4)`` then ``buf.update_priorities(b, td)`` at 10**6 (td float32[256] in
  [0, 1)), and its parts through the API (sample alone, update alone, the bindings without the core); cpprb's
  loop (``sample(256, beta)`` + ``update_priorities(indexes, td)``). Measured in fresh interpreters (workers),
  alternating with the earlier build if one is given. Best and median over rounds of the mean time per call, in
  microseconds.
- Inside the core: bench/cpp/per_bench.cpp --json, built here with g++ (against this checkout's csrc and, with
  --before-src, the earlier one), times each stage of sample and update_priorities alone.
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
    for r in range(rounds):
        # Interleaved, and the order rotated every round: the first buffer of a round tends to get memory that the
        # kernel (and, in a VM, the host) has not handed out recently, whose first touch costs much more.
        for lib in libs[r % len(libs):] + libs[:r % len(libs)]:
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
        r["first_best_mrows_s"] = CAP / float(np.min(r["first_s"])) / 1e6
        r["lap_best_mrows_s"] = CAP / float(np.min(r["lap_s"])) / 1e6
    return res


def per_call_us(fn: Callable[[], object], calls: int, rounds: int) -> Dict[str, float]:
    """Median and best (the round that nobody preempted) over rounds of the mean time per call, in µs."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return {"median": 1e6 * float(np.median(times)), "best": 1e6 * float(np.min(times))}


def filled(lib) -> Any:
    buf = lib.make()
    for k in range(CAP // CHUNK):
        lib.add(buf, _CACHE[k % 4])
    return buf


_CACHE = [chunk_rows(CHUNK, s) for s in range(4)]


def bench_loop(calls: int, rounds: int, cpprb_too: bool) -> Dict[str, Any]:
    """The loop and its parts through the API of the fastreplay that ``import fastreplay`` finds."""
    rng = np.random.default_rng(1)
    td = rng.random(B).astype(np.float32)
    out: Dict[str, Any] = {"module": fr.__file__}
    buf = filled(FrLib(True))
    buf.update_priorities(np.arange(CAP), rng.random(CAP))  # spread priorities, as after training for a while
    sample, update = buf.sample, buf.update_priorities
    core_update = buf._update_priorities
    batches = [sample(B, BETA) for _ in range(1024)]  # more rows than the caches hold (with the sampled ones)
    it = [0]

    def loop():
        b = sample(B, BETA)
        update(b, td)

    def update_only():  # a batch drawn earlier, as in training; its rows are no longer in cache
        b = batches[it[0] & 1023]
        it[0] += 1
        update(b, td)

    def update_core():  # the compiled method: skips the Python wrapper (_args.update_arrays)
        b = batches[it[0] & 1023]
        it[0] += 1
        core_update(b.indices, td, b.generations, False)

    def empty_update():  # the bindings and the Python wrapper with nothing to write
        update(batches[0].indices[:0], td[:0])

    for name, fn in (("loop", loop), ("sample", lambda: sample(B, BETA)), ("update", update_only),
                     ("update_compiled", update_core), ("update_empty", empty_update),
                     ("sample_1", lambda: sample(1, BETA))):
        fn()
        out[name] = per_call_us(fn, calls, rounds)
    batches.clear()  # free the buffer (the closures above hold it) before cpprb's is made
    buf = sample = update = core_update = None
    if cpprb_too:
        lib = CpprbLib(True)
        cb = filled(lib)
        cb.update_priorities(np.arange(CAP), rng.random(CAP))

        def cloop():
            s = cb.sample(B, BETA)
            cb.update_priorities(s["indexes"], td)
        cloop()
        out["cpprb_loop"] = per_call_us(cloop, max(calls // 10, 5), rounds)
    return out


def loop_subprocess(before: str, calls: int, rounds: int, cpprb_too: bool) -> Dict[str, Any]:
    """bench_loop in a fresh interpreter; with `before` (a directory holding another build of fastreplay, e.g.
    ``pip install --target DIR``), that build, found before this checkout's: ``-S`` keeps site's .pth files (the
    editable install's import hook) out, and sys.path is given explicitly."""
    import site
    env = dict(os.environ)
    paths = ([before] if before else []) + [ROOT] + site.getsitepackages()
    env["PYTHONPATH"] = os.pathsep.join(paths)
    cmd = [sys.executable] + (["-S"] if before else []) + ["-m", "bench.scripts.bench_per", "--worker",
                                                            str(calls), str(rounds), "1" if cpprb_too else "0"]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1])


def merge_loops(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Several workers' results: the best of their bests, the median of their medians."""
    out: Dict[str, Any] = {"module": runs[0]["module"]}
    for k in dict.fromkeys(k for r in runs for k in r):  # every key, in first-seen order
        have = [r[k] for r in runs if isinstance(r.get(k), dict)]
        if have:
            out[k] = {"best": min(h["best"] for h in have), "median": float(np.median([h["median"] for h in have]))}
    return out


def core_breakdowns(srcs: List[str], runs: int) -> List[Dict[str, Any]]:
    """Build bench/cpp/per_bench.cpp against the headers under each of `srcs` and run each `runs` times,
    alternating (--json: stages on stdout); per stage the best over runs. [] without a C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return []
    with tempfile.TemporaryDirectory() as d:
        exes = []
        for i, src in enumerate(srcs):
            exes.append(os.path.join(d, f"per_bench{i}"))
            subprocess.run([cxx, "-O2", "-std=c++17", "-DNDEBUG", "-I", src,
                            os.path.join(ROOT, "bench", "cpp", "per_bench.cpp"), "-o", exes[-1], "-lpthread"],
                           check=True)
        out: List[Dict[str, Any]] = [{} for _ in srcs]
        for _ in range(runs):
            for i, exe in enumerate(exes):
                r = json.loads(subprocess.run([exe, "--json", "1e6"], check=True, capture_output=True,
                                              text=True).stdout)
                prev = out[i].get("stages", {})
                out[i] = r
                out[i]["stages"] = {k: min(v, prev.get(k, v)) for k, v in r["stages"].items()}
    return out


def core_ab(before_src: str) -> str:
    """bench/cpp/per_ab: the core's loop of the build under `before_src` (A) and of this checkout (B) in one
    process, alternating rounds (random priorities, then flat ones); its output, "" without a C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return ""
    with tempfile.TemporaryDirectory() as d:
        objs = []
        for side, src in (("a", before_src), ("b", os.path.join(ROOT, "csrc"))):
            objs.append(os.path.join(d, f"per_ab_{side}.o"))
            subprocess.run([cxx, "-O2", "-std=c++17", "-DNDEBUG", "-falign-loops=64", "-falign-jumps=32", "-I", src,
                            f"-Dfastreplay=fr_{side}", f"-DSIDE={side}", "-c",
                            os.path.join(ROOT, "bench", "cpp", "per_ab", "per_ab_core.cpp"), "-o", objs[-1]],
                           check=True)
        exe = os.path.join(d, "per_ab")
        subprocess.run([cxx, "-O2", os.path.join(ROOT, "bench", "cpp", "per_ab", "per_ab.cpp")] + objs +
                       ["-o", exe, "-lpthread"], check=True)
        return "".join(subprocess.run([exe, "1e6", "40"] + extra, check=True, capture_output=True,
                                      text=True).stdout for extra in ([], ["flat"]))


LABELS = {"loop": "`sample(256, 0.4)` + `update_priorities(batch, td)`", "sample": "`sample(256, 0.4)`",
          "update": "`update_priorities(batch, td)` (a batch drawn earlier)",
          "update_compiled": "`_update_priorities` (the compiled call, no Python wrapper)",
          "update_empty": "`update_priorities` of 0 rows (Python + bindings)",
          "sample_1": "`sample(1, 0.4)` (bindings + batch object)",
          "cpprb_loop": "cpprb: `sample(256, 0.4)` + `update_priorities(indexes, td)`"}


def core_add() -> str:
    """bench/cpp/per_add_bench.cpp's table (the add inside the core, its prioritized hook timed alone); "" without
    a C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return ""
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "per_add_bench")
        subprocess.run([cxx, "-O2", "-std=c++17", "-DNDEBUG", "-I", os.path.join(ROOT, "csrc"),
                        os.path.join(ROOT, "bench", "cpp", "per_add_bench.cpp"), "-o", exe, "-lpthread"], check=True)
        return subprocess.run([exe], check=True, capture_output=True, text=True).stdout


def markdown(res: Dict[str, Any]) -> str:
    f, after, before = res["fill"], res["loop"], res.get("loop_before")
    lines = ["# Prioritized replay: batched add and the sample/update loop (issue 19)", "",
             f"One run of `{res['command']}` on {res['machine']} ({res['date']}); "
             "CartPole rows, capacity 10^6. Loop figures: best / median over rounds (each the mean of many calls; "
             "on a loaded machine the best is the round that nobody preempted).", "",
             "## Fill in chunks of 10,000 rows (M rows/s; median / best over rounds, the order rotated)", "",
             "| buffer | fresh buffer | second lap (steady state) |", "|---|---|---|"]
    for name, r in f.items():
        lines.append(f"| {name} | {r['first_mrows_s']:.2f} / {r['first_best_mrows_s']:.2f} | "
                     f"{r['lap_mrows_s']:.2f} / {r['lap_best_mrows_s']:.2f} |")
    per, uni = f.get("fastreplay PrioritizedReplayBuffer"), f.get("fastreplay ReplayBuffer")
    cp = f.get("cpprb PrioritizedReplayBuffer")
    if per and uni:
        for key, what in (("first_mrows_s", "fresh buffer"), ("lap_mrows_s", "second lap")):
            txt = f"{what}: prioritized / uniform = {per[key] / uni[key]:.2f} (target >= 0.67)"
            if cp:
                txt += f", prioritized / cpprb prioritized = {per[key] / cp[key]:.2f} (target > 1)"
            lines.append("- " + txt + ".")
    if res.get("core_add"):
        lines += ["", "Inside the core (bench/cpp/per_add_bench.cpp, a fresh process: 10^6 rows in chunks of 10,000; "
                  "the prioritized part, the new leaves at the maximum priority and their repair, in parentheses):",
                  "", "```", res["core_add"].rstrip(), "```", "",
                  "The prioritized part costs 2.5-4.5 ms per 10^6 rows once the memory has been touched; the first "
                  "buffers of a process pay for the first touch of memory that the kernel (and, in this VM, the "
                  "host) has not handed out before, and the prioritized buffer has about 18 more bytes per slot to "
                  "touch (the raw priority, and about 1.3 doubles of tree): that, not the tree repair, is the gap between "
                  "a fresh prioritized fill and a fresh uniform one."]
    lines += ["", "## Loop at 10^6, B=256 (µs per call through the public API: best / median)", ""]
    if before:
        lines += [f"Before: `{before['module']}`{res.get('before_label', '')}; after: `{after['module']}` "
                  "(workers alternated).", "",
                  "| call | before | after |", "|---|---|---|"]
        for k in after:
            if k == "module":
                continue
            b = before.get(k)
            lines.append(f"| {LABELS.get(k, k)} | " + (f"{b['best']:.2f} / {b['median']:.2f}" if b else "") +
                         f" | {after[k]['best']:.2f} / {after[k]['median']:.2f} |")
    else:
        lines += ["| call | µs |", "|---|---|"]
        for k, v in after.items():
            if k != "module":
                lines.append(f"| {LABELS.get(k, k)} | {v['best']:.2f} / {v['median']:.2f} |")
    core, core_before = res.get("core", {}), res.get("core_before", {})
    if core.get("stages"):
        lines += ["", "## Inside the core (bench/cpp/per_bench.cpp --json 1e6; µs per batch of 256; each the best of "
                  "41 repetitions, then the best over the alternated runs)", ""]
        if core_before.get("stages"):
            lines += ["| stage | before | after |", "|---|---|---|"]
            for k, v in core["stages"].items():
                lines.append(f"| {k} | {core_before['stages'].get(k, float('nan')):.2f} | {v:.2f} |")
        else:
            lines += ["| stage | µs |", "|---|---|"]
            for k, v in core["stages"].items():
                lines.append(f"| {k} | {v:.2f} |")
    if res.get("core_ab"):
        lines += ["", "## Inside the core, before (A) and after (B) in one process (bench/cpp/per_ab)", "",
                  "Separate processes on this VM differ in memory speed by more than a change like this one (the "
                  "host's load changes from minute to minute), so the before/after columns above can disagree with "
                  "each other; here both versions of the core are linked into one binary and timed in alternating "
                  "rounds of 200 loops, sharing whatever the host does. µs per loop; B/A is the median of the "
                  "per-round ratios [first, third quartile].", "", "```", res["core_ab"].rstrip(), "```"]
    lines += where_the_time_goes(res)
    return "\n".join(lines) + "\n"


def where_the_time_goes(res: Dict[str, Any]) -> List[str]:
    """The loop's microseconds by stage, from this run's figures, and what bounds each (measured separately:
    bench/README.md "Segment tree: experiments", and the notes below)."""
    st = res.get("core", {}).get("stages")
    api = res["loop"]
    if not st:
        return []
    core_loop = st["loop (sample + update)"]
    py = api["loop"]["best"] - core_loop
    py_text = (f"a difference of {py:.1f} µs, which is what Python and the bindings add plus how much the host's memory "
               "speed changed between the two processes (on this VM that can be more than the bindings' part)")
    samp_rest = st["sample (whole)"] - st["descent"] - st["gather (get, 5 fields)"] - st["generations"]
    upd_rest = st["update_priorities (whole)"] - st["tree update (set_many)"] - st["leaf pow (update)"]
    return ["", "## Where the time goes (this run, best figures)", "",
            f"- Through the API the loop costs {api['loop']['best']:.1f} µs; the same loop inside the core "
            f"{core_loop:.1f} µs, {py_text}. Python and the bindings: two calls (`sample(1)` costs "
            f"{api['sample_1']['best']:.2f} µs and an empty `update_priorities` "
            f"{api['update_empty']['best']:.2f} µs; "
            "the rest is per row: the batch's arrays, and private copies of the indices, priorities (float32 ones "
            "widened as they are copied) and generations that the core reads without the GIL).",
            f"- sample {st['sample (whole)']:.1f} µs: the tree descent {st['descent']:.1f}, the gather of the rows "
            f"{st['gather (get, 5 fields)']:.1f} (packed rows), the generations {st['generations']:.1f}, and "
            f"{samp_rest:.1f} for the strata's random numbers, the weights and the checks (the weights stage, "
            f"{st.get('weights', st.get('weights (powf)', float('nan'))):.1f}, also pays cold leaves; the power itself is a vectorised exp2/log2 since issue 19, "
            "powers.h: about 1.0 µs per 256 with AVX2, against about 1.1-1.2 µs for 256 powf).",
            f"- update_priorities {st['update_priorities (whole)']:.1f} µs (a batch drawn earlier, so cold lines): "
            f"the tree repair {st['tree update (set_many)']:.1f}, the 256 leaves (p + eps)^0.6 "
            f"{st['leaf pow (update)']:.1f} (powers.h's vectorised x^alpha: about 1.1 µs with AVX2, 2 µs with SSE2 "
            "alone, against 2.4 µs for 256 std::pow; alpha 0, 0.5 and 1 take exact shortcuts), and "
            f"{upd_rest:.1f} for validation, the staleness check (one generation read per row), the raw priorities "
            "(one random write per row) and the lock (an uncontended lock + unlock is 2.5 ns: atomic "
            "read-modify-writes are not where the time goes).",
            "- The descent and the repair: bench/cpp/tree_bench.cpp at 10^6 (run by hand, old and new headers "
            "alternated): set_many of 256 random slots 7.3 -> 5.7-6.1 µs, of the same 256 slots again (every line in "
            "cache) 5.1 -> 4.4 µs; each of the about 950 lines that 256 random updates touch at 10^6 is read, scanned "
            "and written with one relaxed atomic access per double. In the loop, a profile (perf, cpu-clock) puts "
            "most of the descent right after its prefetches of the next level, and most of update_priorities' own "
            "time right after its prefetches and first loads of cold lines: the fill buffers are full, so the loop "
            "is bound by the distinct cold lines it touches per drawn row (the leaf line, the row, its sequence "
            "number, its raw priority, the level-1 sum line; the min tree starts at blocks of 64 leaves, whose mins "
            "stay in cache) as much as by instructions. What was tried against that, kept or not: bench/README.md, "
            "\"Segment tree: experiments\".", ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--before", default="", help="directory holding an earlier build of fastreplay (pip install "
                    "--target DIR) to measure the loop with, alternating with this one")
    ap.add_argument("--before-src", default="", help="csrc directory of the earlier version, for the core breakdown")
    ap.add_argument("--before-label", default="", help="what the earlier build is, for the table (e.g. a commit)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--markdown", action="store_true", help="only rewrite per.md from per.json")
    a = ap.parse_args()
    if a.markdown:
        out = os.path.join(ROOT, "bench", "results")
        with open(os.path.join(out, "per.json")) as fh:
            md = markdown(json.load(fh))
        with open(os.path.join(out, "per.md"), "w") as fh:
            fh.write(md)
        print(md)
        return
    if a.worker:
        calls, rounds, cp = int(a.worker[0]), int(a.worker[1]), a.worker[2] == "1"
        print(json.dumps(bench_loop(calls, rounds, cp)))
        return
    rounds = 5 if a.quick else 9
    cp = have_cpprb()
    libs: List[Any] = [FrLib(True), FrLib(False)] + ([CpprbLib(True), CpprbLib(False)] if cp else [])
    cmd = "python -m bench.scripts.bench_per" + (" --quick" if a.quick else "") + \
        (f" --before {a.before}" if a.before else "") + (f" --before-src {a.before_src}" if a.before_src else "")
    res: Dict[str, Any] = {"command": cmd,
                           "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "fastreplay": fr.__version__, "cpprb": cp,
                           "before_label": f" ({a.before_label})" if a.before_label else ""}
    cores = core_breakdowns([os.path.join(ROOT, "csrc")] + ([a.before_src] if a.before_src else []),
                            2 if a.quick else 4)
    if cores:
        res["core"] = cores[0]
    if len(cores) > 1:
        res["core_before"] = cores[1]
    res["core_add"] = core_add()
    if a.before_src:
        res["core_ab"] = core_ab(a.before_src)
    res["fill"] = bench_fill(libs, rounds)
    # Short rounds, many of them: on a shared machine some are not preempted.
    calls, lrounds, workers = (50, 30, 2) if a.quick else (100, 60, 3)
    after_runs, before_runs = [], []
    for w in range(workers):
        after_runs.append(loop_subprocess("", calls, lrounds, cp and w == 0))
        if a.before:
            before_runs.append(loop_subprocess(a.before, calls, lrounds, False))
    res["loop"] = merge_loops(after_runs)
    if before_runs:
        res["loop_before"] = merge_loops(before_runs)
    res["load_at_end"] = os.getloadavg()[0]
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
