"""Episode index benchmarks (docs/episodes.md, issue 13): memory of a frame-stacked Atari buffer, sample bandwidth
against a plain copy of the same bytes, the cost of n-step returns at sample time, and the cost of ``add`` against a
plain buffer.

Run from the repository root:

    python -m bench.scripts.bench_episodes [--quick] [--out PREFIX]

Prints one markdown table. A full run writes ``bench/results/episodes.md`` and ``bench/results/episodes.json``
(``--out PREFIX`` writes ``PREFIX.md`` and ``PREFIX.json``; ``--quick``, with smaller sizes, writes nothing unless
``--out`` is given). Each measurement runs in its own subprocess (``--worker NAME``), so the memory figure is the
resident set (VmRSS of /proc/self/status) of a process that holds nothing else of size.

1. Memory: 1e6 transitions of 84x84 uint8 frames from 8 lanes (``num_envs=8``, ``frame_stack=4``,
   ``next_obs="dedup"``, ``autoreset="same_step"``: every row a whole transition, an end row's ``next_obs`` the
   final frame), random frames cycled from a pre-generated pool, episodes of 50-750 steps (mean 400), 20% of the
   ends truncations. RSS after the fill minus RSS before the buffer is created; target <= 7.5 GB. Full stacks
   (obs + next_obs) and SB3's ``optimize_memory_usage`` are given as arithmetic only.
2. Bandwidth, in the same filled buffer: ``sample(32)`` (and ``sample(32, out=batch)``) of the stacked obs and
   next_obs (2 x 32 x 4 x 7056 bytes), against two plain copies of as many bytes in the same process:
   ``np.take`` of 64 random rows of an (N, 4*7056) uint8 array (what a buffer that stores full stacks copies), and
   ``np.take`` of the 256 single frames a batch reads, slots ``s-3K .. s+K`` of the buffer's own frame storage
   (``buf.storage["obs"]``); both into a preallocated ``out=`` with ``mode="clip"`` (``mode="raise"`` would make
   numpy buffer the output), with fresh random indices on every call. Target >= 90% of the contiguous-rows copy.
3. n-step: 1e6 CartPole rows (``num_envs=8``, episodes of 10-500 steps, 10% of the ends truncations),
   ``sample(256)`` with ``buf.n_step = 5`` against ``buf.n_step = 1`` on the same buffer, with ``next_obs="store"``
   and with ``"dedup"``; target ratio <= 1.25.
4. add: 8 CartPole rows per call into an episodic buffer (``num_envs=8``) against today's plain buffer with the
   same fields, and 8 Atari frames into a ``frame_stack=4`` buffer against a plain buffer of single frames.

Timing: ``time.perf_counter_ns`` around rounds of calls, after a warm-up; the variants being compared alternate
round by round (in rotating order) so that other load hits all of them alike; each figure is the median over rounds
of the mean time per call, with the interquartile range as % of the median.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

K = 8  # lanes (sub-environments)
S = 4  # frame stack
FRAME = (84, 84)
FRAME_BYTES = 84 * 84
POOL = 2048  # pre-generated random frames, cycled through (14.5 MB)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {
    # atari_n: transitions in the memory/bandwidth buffer; floor_rows: rows of the contiguous-copy array;
    # atari_add_cap: capacity of the two Atari add buffers; cartpole_n: CartPole rows (n-step and add buffers).
    "full": dict(atari_n=1_000_000, floor_rows=150_000, bw_rounds=3000, bw_calls=5, atari_add_cap=80_000,
                 add_rounds=1500, cartpole_n=1_000_000, nstep_rounds=2000, nstep_calls=100),
    "quick": dict(atari_n=100_000, floor_rows=10_000, bw_rounds=60, bw_calls=5, atari_add_cap=16_000,
                  add_rounds=40, cartpole_n=100_000, nstep_rounds=60, nstep_calls=50),
}

ATARI_FIELDS = {
    "obs": (FRAME, np.uint8),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": (FRAME, np.uint8),
    "done": ((), np.bool_),
    "truncated": ((), np.bool_),
}
CARTPOLE_FIELDS = {
    "obs": ((4,), np.float32),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": ((4,), np.float32),
    "done": ((), np.bool_),
    "truncated": ((), np.bool_),
}


# ----------------------------------------------------------------------------------------------------------------
# helpers (run in the workers)

def proc_status_bytes(key: str) -> int:
    """A ``kB`` line of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss() -> int:
    gc.collect()
    return proc_status_bytes("VmRSS")


def episode_ends(steps: int, lo: int, hi: int, trunc_p: float, rng) -> Tuple[np.ndarray, np.ndarray]:
    """(done, truncated), each bool[steps, K]: every lane runs episodes of rng.integers(lo, hi + 1) steps, its own
    sequence; an end is a truncation with probability trunc_p, else a termination."""
    done = np.zeros((steps, K), bool)
    trunc = np.zeros((steps, K), bool)
    for k in range(K):
        lengths = rng.integers(lo, hi + 1, steps // lo + 2)
        ends = np.cumsum(lengths) - 1
        ends = ends[ends < steps]
        is_trunc = rng.random(len(ends)) < trunc_p
        done[ends[~is_trunc], k] = True
        trunc[ends[is_trunc], k] = True
    return done, trunc


def atari_stream(steps: int, rng):
    """Frame ids into the pool and flags of `steps` adds of K rows, autoreset 'same_step': step t of a lane shows
    frame c and leads to frame c + 1; after an end the lane's next step starts from a fresh (reset) frame c + 2."""
    done, trunc = episode_ends(steps, 50, 750, 0.2, rng)
    inc = 1 + (done | trunc).astype(np.int64)
    c = np.arange(K, dtype=np.int64) * 251 + np.cumsum(inc, axis=0) - inc  # exclusive prefix sum per lane
    return {"obs_id": c % POOL, "next_id": (c + 1) % POOL, "action": rng.integers(0, 18, (steps, K)),
            "reward": rng.standard_normal((steps, K), dtype=np.float32), "done": done, "truncated": trunc}


def cartpole_stream(steps: int, rng) -> Dict[str, np.ndarray]:
    """`steps` adds of K CartPole rows: next_obs of a step is the lane's next obs, except at ends (a final obs)."""
    done, trunc = episode_ends(steps, 10, 500, 0.1, rng)
    obs = rng.standard_normal((steps, K, 4), dtype=np.float32)
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[-1] = rng.standard_normal((K, 4), dtype=np.float32)
    ends = done | trunc
    nxt[ends] = rng.standard_normal((int(ends.sum()), 4), dtype=np.float32)
    return {"obs": obs, "action": rng.integers(0, 2, (steps, K)), "reward": np.ones((steps, K), np.float32),
            "next_obs": nxt, "done": done, "truncated": trunc}


def interleaved(fns: Dict[str, Callable[[int], None]], calls: Dict[str, int], rounds: int, warmup: int = 2,
                setup: Optional[Dict[str, Callable[[], None]]] = None) -> Dict[str, dict]:
    """Time each ``fns[name](calls[name])`` (which makes that many calls) in alternating rounds; the figure of a name
    is the median over rounds of the per-call time. ``setup[name]()`` runs before each of its rounds, untimed."""
    setup = setup or {}
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            setup.get(name, lambda: None)()
            fns[name](calls[name])
    per_call: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            setup.get(name, lambda: None)()
            n = calls[name]
            t0 = time.perf_counter_ns()
            fns[name](n)
            per_call[name].append((time.perf_counter_ns() - t0) / n)
    out = {}
    for name, xs in per_call.items():
        q = statistics.quantiles(xs, n=4)
        med = statistics.median(xs)
        out[name] = {"median_ns": med, "min_ns": min(xs), "iqr_pct": 100 * (q[2] - q[0]) / med, "rounds": len(xs),
                     "calls_per_round": calls[name]}
    return out


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------------------------
# workers

def worker_atari(p: dict) -> dict:
    """1. memory of the filled frame-stack buffer and 2. sample(32) bandwidth against plain copies."""
    import fastreplay as fr

    n = p["atari_n"]
    steps = n // K
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (POOL,) + FRAME, dtype=np.uint8)
    st = atari_stream(steps, rng)
    obs_b = np.empty((K,) + FRAME, np.uint8)
    nxt_b = np.empty((K,) + FRAME, np.uint8)
    res: dict = {"transitions": n, "adds": steps, "ends": int((st["done"] | st["truncated"]).sum()),
                 "truncations": int(st["truncated"].sum())}

    rss0 = rss()
    buf = fr.ReplayBuffer(n, ATARI_FIELDS, num_envs=K, frame_stack=S, next_obs="dedup", autoreset="same_step",
                          seed=0)
    rss1 = rss()
    obs_id, next_id, action, reward, done, trunc = (st[k] for k in
                                                    ("obs_id", "next_id", "action", "reward", "done", "truncated"))
    add = buf.add
    t0 = time.perf_counter_ns()
    for t in range(steps):
        np.take(pool, obs_id[t], axis=0, out=obs_b, mode="clip")
        np.take(pool, next_id[t], axis=0, out=nxt_b, mode="clip")
        add(obs=obs_b, action=action[t], reward=reward[t], next_obs=nxt_b, done=done[t], truncated=trunc[t])
    fill_ns = time.perf_counter_ns() - t0
    rss2 = rss()
    g = min(steps, 20_000)  # the frame gathering alone, to tell it from add's share of the fill
    t0 = time.perf_counter_ns()
    for t in range(g):
        np.take(pool, obs_id[t], axis=0, out=obs_b, mode="clip")
        np.take(pool, next_id[t], axis=0, out=nxt_b, mode="clip")
    res["gather_ns_per_add"] = (time.perf_counter_ns() - t0) / g
    res.update(rss_before=rss0, rss_created=rss1, rss_filled=rss2, buffer_rss=rss2 - rss0, created_rss=rss1 - rss0,
               vm_hwm=proc_status_bytes("VmHWM"), fill_s=fill_ns / 1e9, fill_ns_per_add=fill_ns / steps,
               len=len(buf))
    del st, obs_id, next_id, action, reward, done, trunc

    # 2. bandwidth
    batch = buf.sample(32)
    assert batch["obs"].shape == (32, S) + FRAME and batch["next_obs"].shape == (32, S) + FRAME, batch
    moved = batch["obs"].nbytes + batch["next_obs"].nbytes
    res["batch_bytes"] = moved
    res["batch_fields"] = {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()}

    rows = p["floor_rows"]
    stacks = np.empty((rows, S * FRAME_BYTES), np.uint8)  # full stacks, contiguous rows
    flat = stacks.reshape(rows * S, FRAME_BYTES)
    pool_flat = pool.reshape(POOL, FRAME_BYTES)
    for j in range(0, rows * S, POOL):
        m = min(POOL, rows * S - j)
        flat[j:j + m] = pool_flat[:m]
    out_rows = np.empty((2 * 32, S * FRAME_BYTES), np.uint8)
    # Fresh random indices for every call (never cycled: a small set of reused indices would leave its rows in the
    # last-level cache, which on this VM reports 480 MiB, and flatter the copy).
    ncalls = (p["bw_rounds"] + 3) * p["bw_calls"]
    idx_rows = rng.integers(0, rows, (ncalls, 2 * 32))

    try:  # the buffer's own frames (one per slot): the frames a batch reads, gathered by numpy
        frames = buf.storage["obs"]
        res["frames_source"] = "buf.storage['obs'] (the buffer's own frame column)"
        if frames.shape != (n,) + FRAME:
            raise ValueError(f"storage['obs'] has shape {frames.shape}")
    except Exception as e:  # noqa: BLE001 - fall back to an array of as many frames
        res["frames_source"] = f"a separate ({n}, 84, 84) array ({type(e).__name__}: {e})"
        frames = np.empty((n,) + FRAME, np.uint8)
        for j in range(0, n, POOL):
            m = min(POOL, n - j)
            frames[j:j + m] = pool[:m]
    offsets = np.array([3, 2, 1, 0, 2, 1, 0, -1]) * K  # obs stack s-3K..s, next_obs stack s-2K..s+K
    idx_frames = ((rng.integers(0, n, (ncalls, 32))[:, :, None] - offsets) % n).reshape(ncalls, 32 * 8)
    pos = {"rows": 0, "frames": 0}
    out_frames = np.empty((2 * 32 * S,) + FRAME, np.uint8)
    sample = buf.sample

    def run_sample(c):
        for _ in range(c):
            sample(32)

    def run_sample_out(c):
        for _ in range(c):
            sample(32, out=batch)

    def run_rows(c):
        i0 = pos["rows"]
        for i in range(i0, i0 + c):
            np.take(stacks, idx_rows[i], axis=0, out=out_rows, mode="clip")
        pos["rows"] = i0 + c

    def run_frames(c):
        i0 = pos["frames"]
        for i in range(i0, i0 + c):
            np.take(frames, idx_frames[i], axis=0, out=out_frames, mode="clip")
        pos["frames"] = i0 + c

    fns = {"sample": run_sample, "sample_out": run_sample_out, "copy_rows": run_rows, "copy_frames": run_frames}
    try:
        sample(32, out=batch)
    except TypeError as e:
        res["sample_out_error"] = str(e)
        del fns["sample_out"]
    res["timing"] = interleaved(fns, {k: p["bw_calls"] for k in fns}, p["bw_rounds"])
    res["floor_rows"] = rows
    res["maxrss"] = maxrss_bytes()
    return res


def worker_atari_add(p: dict) -> dict:
    """4b. add of 8 frames: frame_stack=4 episodic buffer vs a plain buffer of single frames (obs and next_obs)."""
    import fastreplay as fr

    cap = p["atari_add_cap"]
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 256, (POOL,) + FRAME, dtype=np.uint8)
    n_adds = 256
    st = atari_stream(n_adds, rng)
    obs = pool[st["obs_id"]]
    nxt = pool[st["next_id"]]
    dicts = [dict(obs=obs[t], action=st["action"][t], reward=st["reward"][t], next_obs=nxt[t], done=st["done"][t],
                  truncated=st["truncated"][t]) for t in range(n_adds)]
    bufs = {"episodic": fr.ReplayBuffer(cap, ATARI_FIELDS, num_envs=K, frame_stack=S, seed=0),
            "plain": fr.ReplayBuffer(cap, ATARI_FIELDS, seed=0)}
    for b in bufs.values():  # one lap: every page touched before timing
        for i in range(cap // K):
            b.add(**dicts[i % n_adds])

    def runner(b):
        add = b.add

        def run(c):
            for d in dicts[:c]:
                add(**d)
        return run

    calls = 64
    res = {"capacity": cap, "timing": interleaved({k: runner(b) for k, b in bufs.items()},
                                                  {k: calls for k in bufs}, p["add_rounds"])}
    res["maxrss"] = maxrss_bytes()
    return res


def worker_nstep(p: dict) -> dict:
    """3. sample(256) with n_step=5 vs n_step=1 on one CartPole buffer (next_obs = p['mode'])."""
    import fastreplay as fr

    n = p["cartpole_n"]
    steps = n // K
    rng = np.random.default_rng(2)
    st = cartpole_stream(steps, rng)
    buf = fr.ReplayBuffer(n, CARTPOLE_FIELDS, num_envs=K, next_obs=p["mode"], n_step=1, gamma=0.99, seed=0)
    add = buf.add
    cols = [st[k] for k in CARTPOLE_FIELDS]
    names = list(CARTPOLE_FIELDS)
    t0 = time.perf_counter_ns()
    for t in range(steps):
        add(**{k: c[t] for k, c in zip(names, cols)})
    fill_ns = time.perf_counter_ns() - t0
    plain = fr.ReplayBuffer(n, CARTPOLE_FIELDS, seed=0)
    plain.add(**{k: v.reshape((steps * K,) + v.shape[2:]) for k, v in st.items()})

    res: dict = {"mode": p["mode"], "rows": n, "fill_s": fill_ns / 1e9, "episodes_ended": int((st["done"] |
                                                                                               st["truncated"]).sum())}
    # sanity: n_step is honoured (discount = gamma**m * (1 - done))
    checks = {}
    for ns in (1, 5):
        buf.n_step = ns
        b = buf.sample(4096)
        disc = b["discount"]
        m = np.round(np.log(disc[disc > 0]) / np.log(0.99)).astype(int)
        checks[f"n{ns}"] = {"mean_window": float(m.mean()) if len(m) else None,
                            "share_full_window": float((m == ns).mean()) if len(m) else None,
                            "share_done": float(b["done"].mean())}
    res["checks"] = checks

    def run(c):
        sample = buf.sample
        for _ in range(c):
            sample(256)

    def run_plain(c):
        sample = plain.sample
        for _ in range(c):
            sample(256)

    def set_n(ns):
        def f():
            buf.n_step = ns
        return f

    calls = p["nstep_calls"]
    res["timing"] = interleaved({"n1": run, "n5": run, "plain": run_plain}, {"n1": calls, "n5": calls, "plain": calls},
                                p["nstep_rounds"], setup={"n1": set_n(1), "n5": set_n(5)})
    res["maxrss"] = maxrss_bytes()
    return res


def worker_cartpole_add(p: dict) -> dict:
    """4a. add of 8 CartPole rows: episodic (num_envs=8, store and dedup) vs a plain buffer with the same fields."""
    import fastreplay as fr

    n = p["cartpole_n"]
    steps = n // K
    rng = np.random.default_rng(3)
    st = cartpole_stream(steps + 1000, rng)
    names = list(CARTPOLE_FIELDS)
    dicts = [{k: st[k][t] for k in names} for t in range(steps, steps + 1000)]
    bufs = {"plain": fr.ReplayBuffer(n, CARTPOLE_FIELDS, seed=0),
            "episodic_store": fr.ReplayBuffer(n, CARTPOLE_FIELDS, num_envs=K, next_obs="store", seed=0),
            "episodic_dedup": fr.ReplayBuffer(n, CARTPOLE_FIELDS, num_envs=K, next_obs="dedup", seed=0)}
    bufs["plain"].add(**{k: st[k][:steps].reshape((n,) + st[k].shape[2:]) for k in names})
    for name in ("episodic_store", "episodic_dedup"):
        add = bufs[name].add
        for t in range(steps):
            add(**{k: st[k][t] for k in names})

    def runner(b):
        add = b.add

        def run(c):
            for d in dicts[:c]:
                add(**d)
        return run

    res = {"capacity": n, "timing": interleaved({k: runner(b) for k, b in bufs.items()},
                                                {k: len(dicts) for k in bufs}, p["add_rounds"])}
    res["maxrss"] = maxrss_bytes()
    return res


WORKERS = {"atari": worker_atari, "atari_add": worker_atari_add, "nstep": worker_nstep,
           "cartpole_add": worker_cartpole_add}


# ----------------------------------------------------------------------------------------------------------------
# the parent: runs the workers, prints and writes the table

def run_worker(name: str, params: dict) -> dict:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "bench.scripts.bench_episodes", "--worker", name,
                           "--params", json.dumps(params)], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out["wall_s"] = wall
            return out
    err = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": err[-1] if err else f"exit status {proc.returncode}", "stderr_tail": err[-20:], "wall_s": wall}


def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def us(ns: float) -> str:
    return f"{ns / 1e3:.1f} µs" if ns >= 1e4 else f"{ns / 1e3:.2f} µs"


def fig(t: dict) -> str:
    return f"{us(t['median_ns'])} (±{t['iqr_pct']:.0f}%)"


def best(a: dict, b: dict) -> str:
    """Ratio of the fastest rounds (which other processes disturbed least)."""
    return f"{a['min_ns'] / b['min_ns']:.2f}"


def status(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def machine() -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20,
                                    1)
    except (OSError, StopIteration):
        pass
    try:
        git = ["git", "--no-optional-locks", "-C", ROOT]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "?"
    try:
        import fastreplay
        import fastreplay._core

        info["fastreplay"] = fastreplay.__version__
        core = fastreplay._core.__file__
        info["core"] = core
        info["core_mtime"] = datetime.datetime.fromtimestamp(os.path.getmtime(core), datetime.timezone.utc).isoformat(
            timespec="seconds")
    except Exception:  # noqa: BLE001
        pass
    return info


def table(r: dict, sizes: dict) -> List[str]:
    rows = ["| # | Measurement | Figure | Against | Ratio | Target | Status |", "|---|---|---|---|---|---|---|"]

    def failed(num, what, res):
        rows.append(f"| {num} | {what} | failed: {res['error']} | | | | |")

    a = r["atari"]
    n = sizes["atari_n"]
    what = (f"Memory: {n:,} transitions of 84x84 uint8 frames, 8 lanes, frame_stack=4, next_obs='dedup', "
            "autoreset='same_step'; RSS after the fill minus RSS before creating the buffer")
    target_mem = 7.5e9 * n / 1e6  # 7.5 GB for 1e6 transitions (pro rata in --quick)
    if "error" in a:
        failed(1, what, a)
    else:
        mem = a["buffer_rss"]
        one = n * FRAME_BYTES
        rows.append(f"| 1 | {what} | **{gb(mem)}** ({mem / n:,.0f} B per transition) | one frame per step: "
                    f"{gb(one)} (arithmetic) | {mem / one:.3f} | <= {gb(target_mem)} | {status(mem <= target_mem)} |")
        full = 2 * S * FRAME_BYTES * n
        sb3 = S * FRAME_BYTES * n
        rows.append(f"| 1 | Full stacks, obs + next_obs (2 x 4 x 7056 B per transition; arithmetic, not allocated) | "
                    f"{gb(full)} | the buffer's RSS | {full / mem:.1f}x | | |")
        rows.append(f"| 1 | SB3 `optimize_memory_usage=True` (obs stacks only, 4 x 7056 B; arithmetic) | {gb(sb3)} | "
                    f"the buffer's RSS | {sb3 / mem:.1f}x | | |")
        rows.append(f"| 1 | Fill: {a['adds']:,} adds of 8 rows ({a['ends']:,} episode ends, {a['truncations']:,} "
                    f"truncations) | {a['fill_s']:.1f} s ({us(a['fill_ns_per_add'])} per add, of which "
                    f"{us(a['gather_ns_per_add'])} gathering the 2 x 8 input frames from the pool) | | | | |")
        t = a["timing"]
        moved = a["batch_bytes"]
        bw = lambda x: moved / x["median_ns"]  # noqa: E731  (bytes per ns = GB/s)
        cr, cf = t["copy_rows"], t["copy_frames"]
        for key, label in (("sample", "`sample(32)`"), ("sample_out", "`sample(32, out=batch)`")):
            if key not in t:
                rows.append(f"| 2 | {label} | not supported: {a.get('sample_out_error', '?')} | | | | |")
                continue
            s = t[key]
            rows.append(f"| 2 | {label}, stacked obs + next_obs ({moved:,} B per batch), same buffer | {fig(s)}, "
                        f"{bw(s):.2f} GB/s | copy of 64 random full-stack rows: {fig(cr)}, {bw(cr):.2f} GB/s | "
                        f"{100 * bw(s) / bw(cr):.0f}% (best rounds {100 * cr['min_ns'] / s['min_ns']:.0f}%) | >= 90% | "
                        f"{status(bw(s) >= 0.9 * bw(cr))} |")
            rows.append(f"| 2 | {label} (same figure) | {bw(s):.2f} GB/s | gather of the batch's 256 frames: "
                        f"{fig(cf)}, {bw(cf):.2f} GB/s | {100 * bw(s) / bw(cf):.0f}% (best rounds "
                        f"{100 * cf['min_ns'] / s['min_ns']:.0f}%) | | |")

    for mode in ("store", "dedup"):
        x = r[f"nstep_{mode}"]
        what = f"`sample(256)`, {sizes['cartpole_n']:,} CartPole rows, next_obs='{mode}': n_step=5 vs n_step=1"
        if "error" in x:
            failed(3, what, x)
            continue
        t = x["timing"]
        ratio = t["n5"]["median_ns"] / t["n1"]["median_ns"]
        rows.append(f"| 3 | {what} | {fig(t['n5'])} | n_step=1: {fig(t['n1'])} (plain buffer: {fig(t['plain'])}) | "
                    f"{ratio:.2f} (best rounds {best(t['n5'], t['n1'])}) | <= 1.25 | {status(ratio <= 1.25)} |")

    c = r["cartpole_add"]
    if "error" in c:
        failed(4, "add of 8 CartPole rows", c)
    else:
        t = c["timing"]
        for mode in ("store", "dedup"):
            e, pl = t[f"episodic_{mode}"], t["plain"]
            rows.append(f"| 4 | `add` of 8 CartPole rows (keywords, 6 fields incl. truncated), episodic num_envs=8, "
                        f"next_obs='{mode}', cap {c['capacity']:,} | {e['median_ns']:,.0f} ns (±{e['iqr_pct']:.0f}%) "
                        f"| plain buffer, same fields: {pl['median_ns']:,.0f} ns (±{pl['iqr_pct']:.0f}%) | "
                        f"{e['median_ns'] / pl['median_ns']:.2f} (best rounds {best(e, pl)}) | none set | — |")
    x = r["atari_add"]
    if "error" in x:
        failed(4, "add of 8 Atari frames", x)
    else:
        t = x["timing"]
        e, pl = t["episodic"], t["plain"]
        rows.append(f"| 4 | `add` of 8 84x84 frames (obs + next_obs), frame_stack=4 (dedup), cap {x['capacity']:,} | "
                    f"{e['median_ns']:,.0f} ns (±{e['iqr_pct']:.0f}%) | plain buffer of single frames (stores "
                    f"next_obs too): {pl['median_ns']:,.0f} ns (±{pl['iqr_pct']:.0f}%) | "
                    f"{e['median_ns'] / pl['median_ns']:.2f} (best rounds {best(e, pl)}) | none set | — |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under a minute)")
    ap.add_argument("--out", help="write PREFIX.md and PREFIX.json (default for a full run: bench/results/episodes)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        res = WORKERS[a.worker](json.loads(a.params))
        print("RESULT " + json.dumps(res), flush=True)
        return

    sizes = SIZES["quick" if a.quick else "full"]
    out = a.out or (None if a.quick else os.path.join(ROOT, "bench", "results", "episodes"))
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = os.getloadavg()
    results = {}
    for key, worker, extra in (("atari", "atari", {}), ("atari_add", "atari_add", {}),
                               ("nstep_store", "nstep", {"mode": "store"}),
                               ("nstep_dedup", "nstep", {"mode": "dedup"}),
                               ("cartpole_add", "cartpole_add", {})):
        results[key] = run_worker(worker, {**sizes, **extra})
        failed = f", FAILED: {results[key]['error']}" if "error" in results[key] else ""
        print(f"[{key}: {results[key]['wall_s']:.0f} s{failed}]", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    m = machine()
    command = "python -m bench.scripts.bench_episodes" + (" --quick" if a.quick else "")
    a0 = results["atari"]
    head = [
        f"- Command: `{command}` (from the repository root); {started.isoformat(timespec='seconds')}, "
        f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60:.1f} min; fastreplay "
        f"{m.get('fastreplay', '?')} at `{m['commit']}` (extension built {m.get('core_mtime', '?')}).",
        f"- Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs, {m.get('mem_gib', '?')} GiB; Python {m['python']}, "
        f"numpy {m['numpy']}. Load average (1 min) {load0[0]:.1f} at the start, {load1[0]:.1f} at the end.",
        "- Each figure: median over interleaved rounds (the variants compared alternate round by round) of the mean "
        "time per call, ± the interquartile range as % of the median. Ratios are of medians; \"best rounds\": of the "
        "fastest rounds, which other processes disturbed least.",
        "- Memory: VmRSS of the worker process after the fill minus before the buffer was created (random frames, so "
        "no page is left untouched or shared); GB = 1e9 bytes." + (
            f" Peak RSS of that process {gb(a0['vm_hwm'])}; RSS right after creating the (empty) buffer "
            f"+{gb(a0['created_rss'])}." if "error" not in a0 else ""),
        "- Plain copies (2): `np.take(src, idx, axis=0, out=out, mode='clip')` of as many bytes as the batch's obs + "
        "next_obs: 64 random rows of a (" + f"{sizes['floor_rows']:,}" + ", 4*7056) uint8 array (full stacks, "
        "contiguous 28 KB rows), or the 256 frames (7056 B each) that 32 sampled steps read, slots s-3K..s (obs) "
        "and s-2K..s+K (next_obs) of " + (a0.get("frames_source", "?") if "error" not in a0 else "?") + ".",
    ]
    for mode in ("store", "dedup"):
        x = results[f"nstep_{mode}"]
        if "error" not in x:
            c1, c5 = x["checks"]["n1"], x["checks"]["n5"]
            head.append(f"- n-step check (next_obs='{mode}', 4096 sampled steps, window length m from `discount` = "
                        f"gamma**m of the rows not done): n_step=5: mean m {c5['mean_window']:.2f}, "
                        f"{100 * c5['share_full_window']:.1f}% full windows, {100 * c5['share_done']:.1f}% done; "
                        f"n_step=1: mean m {c1['mean_window']:.2f}, {100 * c1['share_done']:.2f}% done.")
    lines = head + [""] + table(results, sizes)
    text = "\n".join(lines)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".md", "w") as f:
            f.write("# Episode index benchmarks\n\n" + text + "\n")
        with open(out + ".json", "w") as f:
            json.dump({"command": command, "started": started.isoformat(), "sizes": sizes, "machine": m,
                       "load_start": list(load0), "load_end": list(load1), "results": results}, f, indent=1)
        print(f"\nwrote {out}.md and {out}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
