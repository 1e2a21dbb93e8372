"""fastreplay against the replay buffers people use: cpprb, Stable-Baselines3, TorchRL and Tianshou.

Run from the repository root:

    python -m bench.peers.run            # full run (about 11 minutes on 2 busy cores), rewrites bench/results/peers/
                                         # and the compare section of bench/README.md
    python -m bench.peers.run --quick    # a couple of minutes; writes bench/results/peers/quick/, README left alone
    python -m bench.peers.run --quick --libs fastreplay,reference   # a smoke test of the driver, about a minute
    python -m bench.peers.run --report-only bench/results/peers/results.json   # redo tables and plots from a JSON

Install the peers with ``pip install fastreplay[compare]``; a peer that is not installed (or whose buffer cannot
be made) is skipped with a note. Workloads (see ``bench/peers/common.py`` for the exact plan):

- small rows (CartPole-like: obs float32[4], action int64, reward float32, next_obs float32[4], done bool) at
  capacities 1e4, 1e5, 1e6 and image rows (obs and next_obs uint8[4, 84, 84]) at 1e4 and 1e5;
- uniform and prioritized (alpha 0.6, beta 0.4);
- ``add`` of one transition and of a 16-row vector-env batch, ``sample(B)``, and for PER ``sample(B)`` then
  ``update_priorities``, at batch sizes 32 to 1024 (images 32 to 256) at the largest capacity and B = 256 (32)
  at every capacity;
- multi-threaded sampling: two Python threads calling ``sample``, and each library's own background sampler where
  it has one (fastreplay ``prefetch(threads=2)``, TorchRL ``prefetch=2``);
- the floor: ``np.copyto`` of the same bytes (``bench/peers/lib_floor.py``).

Each library runs in its own subprocess per row set and mode, so memory and allocator state do not leak between
them; the whole sequence runs three times (passes, in alternating library order) and each figure is the median
over the rounds of all passes of the mean time of one call (a round lasts ~1.5 ms), with the interquartile range
(the floor takes its fastest pass's median: other work only ever slows a plain copy down). Buffers are filled
before timing (steady state: full ring, every page touched). Every timed
operation's batches are checked: rows are self-describing (a ticket k determines every field), so a row mixing
two transitions, a stale row or a repeated handful of rows is flagged next to the timing.

torch-based peers run with one intra-op thread (``OMP_NUM_THREADS=1``, ``--torch-threads``): on 2 cores shared
with other work, torch's default of 2 threads made an image sample 30x slower in a pilot (12 ms against 0.37 ms).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from . import report
from .common import MODES, ROWSETS, loadavg, plan, stats

BENCH = Path(__file__).resolve().parent.parent  # bench/
ROOT = BENCH.parent  # the repository root: the worker processes run there, as ``python -m bench.peers.worker``
RESULTS = BENCH / "results" / "peers"

LIBS = ["floor", "fastreplay", "reference", "cpprb", "sb3", "torchrl", "tianshou"]
DISTS = {"fastreplay": "fastreplay", "cpprb": "cpprb", "sb3": "stable-baselines3", "torchrl": "torchrl",
         "tianshou": "tianshou"}
VERSIONS = ["fastreplay", "numpy", "torch", "cpprb", "stable-baselines3", "gymnasium", "torchrl", "tensordict",
            "tianshou", "matplotlib"]


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> Dict[str, Any]:
    m: Dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                         "cpu_count": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = {}
        for line in out.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info[k.strip()] = v.strip()
        for k in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                  "Hypervisor vendor", "L1d cache", "L2 cache", "L3 cache"):
            if k in info:
                m[k] = info[k]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    m["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    m["versions"] = {d: _version(d) for d in VERSIONS}
    try:
        m["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return m


class LoadMonitor(threading.Thread):
    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self._stop = every, [], threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            la = loadavg()
            if la is not None:
                self.samples.append(la)
            self._stop.wait(self.every)

    def stop(self) -> Dict[str, Any]:
        self._stop.set()
        s = self.samples or [0.0]
        return {"min": min(s), "max": max(s), "mean": sum(s) / len(s), "samples": len(s)}


def run_worker(lib, rowset, mode, plan_path, tmp, env, timeout, k, t_start):
    out_path = os.path.join(tmp, f"{lib}-{rowset}-{mode}-{k}.json")
    print(f"[{time.time() - t_start:6.0f} s] pass {k + 1}: {lib} {rowset} {mode} (load {loadavg() or 0:.1f})",
          flush=True)
    cmd = [sys.executable, "-m", "bench.peers.worker", lib, rowset, mode, plan_path, out_path]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, stderr=subprocess.PIPE, text=True)
        err, rc = proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc = None
    data = None
    if os.path.exists(out_path):
        with open(out_path) as f:
            data = json.load(f)
    if data is None:
        data = {"group": {"lib": lib, "rowset": rowset, "mode": mode, "status": "failed", "notes": []},
                "results": []}
    g = data["group"]
    if rc != 0:
        why = "timed out" if rc is None else f"exited with {rc}"
        last = err.strip().splitlines()[-1][:300] if err.strip() else ""
        g["notes"].append(f"worker {why}: {last}")
        if g.get("status") == "ok":
            g["status"] = "partial"
        print(f"  {lib} {rowset} {mode}: worker {why}\n{err[-2000:]}", flush=True)
    return g, data["results"]


def merge_passes(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per workload: the rounds of every pass together (median and IQR over all of them)."""
    merged: Dict[tuple, Dict[str, Any]] = {}
    for r in results:
        key = (r["lib"], r["rowset"], r["mode"], r["op"], r["capacity"], r["batch"])
        m = merged.get(key)
        if m is None:
            m = merged[key] = dict(r)
            m["passes"] = [r.get("pass", 0)]
            m["pass_medians_s"] = [r["median_s"]] if "median_s" in r else []
            continue
        m["passes"].append(r.get("pass", 0))
        if "error" in r:
            m.setdefault("error", r["error"])
        if "median_s" not in r:
            continue
        m["pass_medians_s"].append(r["median_s"])
        if "rounds_s" not in m:
            m.update({k: v for k, v in r.items() if k != "pass"})
            continue
        m["rounds_s"] = m["rounds_s"] + r["rounds_s"]
        if "single_rounds_s" in r:
            m["single_rounds_s"] = m.get("single_rounds_s", []) + r["single_rounds_s"]
        m["rounds"] = m.get("rounds", 0) + r.get("rounds", 0)
        if str(r.get("check", "")).startswith("FAIL") and not str(m.get("check", "")).startswith("FAIL"):
            m["check"] = r["check"]
    out = []
    for m in merged.values():
        if m.get("rounds_s"):
            m.update(stats(m["rounds_s"]))
            if m["lib"] == "floor" and len(m["pass_medians_s"]) > 1:
                # the floor is a limit: other work can only slow a plain copy down, so it is the fastest pass's median
                m["median_s"] = min(m["pass_medians_s"])
                m["floor_rule"] = "lowest pass median"
        out.append(m)
    return out


def run(args: argparse.Namespace) -> Path:
    p = plan(args.quick)
    libs = args.libs.split(",") if args.libs else LIBS
    rowsets = args.rowsets.split(",") if args.rowsets else list(ROWSETS)
    modes = args.modes.split(",") if args.modes else list(MODES)
    out_dir = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: Dict[str, Any] = {
        "command": "python -m bench.peers.run " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "plan": p, "torch_threads": args.torch_threads, "nice": os.nice(0),
        "load_start": loadavg(),
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(args.torch_threads), MKL_NUM_THREADS=str(args.torch_threads),
               PYTHONUNBUFFERED="1")
    mon = LoadMonitor()
    mon.start()
    groups: List[Dict[str, Any]] = []
    results: List[Dict[str, Any]] = []
    t_start = time.time()
    passes = args.passes or (1 if args.quick else 3)
    meta["passes"] = passes
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = os.path.join(tmp, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(p, f)
        for k in range(passes):
            order = libs if k % 2 == 0 else libs[::-1]  # alternate the order so load drift hits everyone alike
            for lib in order:
                if lib in DISTS and _version(DISTS[lib]) is None:
                    if k == 0:
                        groups.append({"lib": lib, "status": "skipped", "rowset": None, "mode": None,
                                       "notes": [f"not installed (pip install {DISTS[lib]}, or fastreplay[compare])"]})
                        print(f"{lib}: not installed, skipped", flush=True)
                    continue
                for rowset in rowsets:
                    for mode in modes:
                        g, res = run_worker(lib, rowset, mode, plan_path, tmp, env, args.timeout, k, t_start)
                        g["pass"] = k
                        groups.append(g)
                        for r in res:
                            r["pass"] = k
                        results.extend(res)
    results = merge_passes(results)
    meta["load"] = mon.stop()
    meta["load_end"] = loadavg()
    meta["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta["wall_s"] = round(time.time() - t_start, 1)
    for r in results:  # 4 significant digits are plenty for per-round times
        for k in ("rounds_s", "single_rounds_s"):
            if k in r:
                r[k] = [float(f"{x:.4g}") for x in r[k]]
    path = out_dir / "results.json"
    text = json.dumps({"meta": meta, "groups": groups, "results": results}, indent=1)
    # lists of numbers on one line each
    text = re.sub(r"\[\s*((?:-?[0-9.e+-]+,\s*)*-?[0-9.e+-]+)\s*\]",
                  lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)
    path.write_text(text + "\n")
    print(f"wrote {path} ({meta['wall_s']} s)", flush=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run: fewer capacities, batch sizes and rounds")
    ap.add_argument("--libs", help=f"comma-separated subset of {','.join(LIBS)}")
    ap.add_argument("--rowsets", help="comma-separated subset of small,image")
    ap.add_argument("--modes", help="comma-separated subset of uniform,per")
    ap.add_argument("--out", help="output folder (default bench/results/peers, or its quick/ with --quick)")
    ap.add_argument("--torch-threads", type=int, default=1, help="intra-op threads for torch-based peers (default 1)")
    ap.add_argument("--passes", type=int, help="times the whole sequence is run, alternating the library order; "
                    "rounds of all passes are pooled (default 3, or 1 with --quick)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed to each worker process")
    ap.add_argument("--report-only", metavar="JSON", help="only rebuild tables and plots from a results JSON")
    ap.add_argument("--readme", choices=["auto", "yes", "no"], default="auto",
                    help="rewrite the compare section of bench/README.md (auto: a full run into bench/results/peers)")
    args = ap.parse_args()
    path = Path(args.report_only) if args.report_only else run(args)
    with open(path) as f:
        data = json.load(f)
    out_dir = path.parent
    readme = args.readme == "yes" or (args.readme == "auto" and out_dir.resolve() == RESULTS.resolve()
                                      and not data["meta"]["plan"]["quick"])
    report.write_all(data, out_dir, BENCH / "README.md" if readme else None)


if __name__ == "__main__":
    main()
