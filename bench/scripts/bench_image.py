"""Image gathers against the memory floor, and thread scaling (issue 19).

Atari rows (obs and next_obs uint8[4, 84, 84], 28,224 bytes each; capacity 1e5, 5e4 stored). In one run, in many
alternating rounds (so that a noisy neighbour on the shared machine hits every case alike):

- bandwidth: bytes of obs + next_obs moved per second by sample(32) and sample(32, out=batch) (also with
  fr.set_copy_threads(2): a helper thread copies part of each batch), against the same
  bytes copied contiguously out of the stored obs column (from DRAM, into a fixed destination that stays in cache,
  as a pooled batch does), np.take of the same kind of rows, and a 512 MiB np.copyto (the issue's floor). Each
  round takes the median call of each case; the table gives the median over rounds of GB/s and of each case's
  ratio to the 512 MiB copy of the same round.
- threads: bytes/s of 2 Python threads each calling sample(32) on the same buffer against 1 thread, and, as the
  floor, the same for 2 threads each copying contiguous batches of the same bytes (np.copyto releases the GIL) and
  2 threads each copying half of a 512 MiB array. Rounds alternate 1 and 2 threads; the table gives the median of
  the per-round ratios.

Run from the repository root (nothing else heavy running; OMP_NUM_THREADS=1):
    python -m bench.scripts.bench_image [--rounds 31] [--warm 100] [--thread-rounds 15] [--seconds 0.4] [--quick]
        [--pkg DIR]
Writes bench/results/image.json and bench/results/image.md (--out PREFIX for elsewhere).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import threading
import time

import sys

import numpy as np

if "--pkg" in sys.argv:  # another build (a directory holding an importable fastreplay), as in bench_ab
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, sys.argv[sys.argv.index("--pkg") + 1])
import fastreplay as fr  # noqa: E402
from tests._rows import ATARI  # noqa: E402

CAPACITY, FILL, B = 100_000, 50_000, 32
FRAME = 4 * 84 * 84
SAMPLE_BYTES = 2 * B * FRAME  # obs + next_obs rows moved by sample(32)
BIG = 512 * 2**20


def atari_buffer():
    buf = fr.ReplayBuffer(CAPACITY, ATARI, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(FILL // 1000):
        buf.add(obs=rng.integers(0, 256, (1000, 4, 84, 84), dtype=np.uint8), action=np.zeros(1000, np.int64),
                reward=np.zeros(1000, np.float32), next_obs=rng.integers(0, 256, (1000, 4, 84, 84), dtype=np.uint8),
                done=np.zeros(1000, bool))
    return buf


def median_call(fn, calls, warm=0):
    for _ in range(warm):  # untimed: the case's own steady state (see bandwidth)
        fn()
    t = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def bandwidth(buf, rounds, calls, warm):
    obs, next_obs = buf.storage["obs"], buf.storage["next_obs"]
    src, dst = np.ones(BIG, np.uint8), np.zeros(BIG, np.uint8)  # both faulted in before any timing
    pieces = itertools.cycle([obs[o:o + 2 * B] for o in range(0, FILL - 2 * B, 2 * B)])
    fixed = np.empty((2 * B, 4, 84, 84), np.uint8)
    rng = np.random.default_rng(3)
    idx_pool = itertools.cycle([rng.integers(0, FILL, B) for _ in range(256)])
    o1, o2 = np.empty((B, 4, 84, 84), np.uint8), np.empty((B, 4, 84, 84), np.uint8)
    out = buf.sample(B)

    def take():
        i = next(idx_pool)
        np.take(obs, i, axis=0, out=o1)
        np.take(next_obs, i, axis=0, out=o2)

    cases = {
        "memcpy 512 MiB (np.copyto)": (lambda: np.copyto(dst, src), BIG, 3),
        "sample(32)": (lambda: buf.sample(B), SAMPLE_BYTES, calls),
        "sample(32, out=)": (lambda: buf.sample(B, out=out), SAMPLE_BYTES, calls),
        "sample(32), 2 copy threads": (lambda: buf.sample(B), SAMPLE_BYTES, calls),
        "sample(32, out=), 2 copy threads": (lambda: buf.sample(B, out=out), SAMPLE_BYTES, calls),
        "contiguous copy, same bytes": (lambda: np.copyto(fixed, next(pieces)), SAMPLE_BYTES, calls),
        "np.take, same rows": (take, SAMPLE_BYTES, calls),
    }
    gbs = {k: [] for k in cases}
    ratio = {k: [] for k in cases}
    names = list(cases)
    for r in range(rounds + 1):
        # each round starts at another case: the case run right after the 512 MiB copy is slowed by its aftermath
        # (~4% in image_bench), which must not always hit the same one
        order = names[r % len(names):] + names[:r % len(names)]
        this = {}
        for k in order:
            fr.set_copy_threads(2 if k.endswith("2 copy threads") else 1)
            this[k] = cases[k][1] / median_call(cases[k][0], cases[k][2], 1 if k.startswith("memcpy") else warm) / 1e9
        fr.set_copy_threads(1)
        if r == 0:
            continue  # warm-up round
        for k, v in this.items():
            gbs[k].append(v)
            ratio[k].append(v / this["memcpy 512 MiB (np.copyto)"])
    return {k: dict(gbs=statistics.median(gbs[k]), ratio=statistics.median(ratio[k]),
                    gbs_q1=float(np.percentile(gbs[k], 25)), gbs_q3=float(np.percentile(gbs[k], 75)),
                    ratio_q1=float(np.percentile(ratio[k], 25)), ratio_q3=float(np.percentile(ratio[k], 75)))
            for k in cases}


def run_threads(make_work, threads, seconds):
    """`threads` threads, each looping make_work(i)() (which returns the bytes it moved), for `seconds`: returns
    (bytes/s of wall time, median time of one call over all threads, CPUs the threads used on average, bytes per
    second the threads ran)."""
    moved = [0] * threads
    times = [[] for _ in range(threads)]
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    cpu = [0.0] * threads

    def loop(i):
        work = make_work(i)
        start.wait()
        clock, out = time.perf_counter, times[i]
        cpu0 = on_cpu()
        while not stop.is_set():
            t0 = clock()
            moved[i] += work()
            out.append((t0, clock()))
        cpu[i] = on_cpu() - cpu0

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    median = statistics.median(b - a for a, b in itertools.chain(*times))
    return sum(moved) / wall, median, sum(cpu) / wall, sum(moved) / max(sum(cpu), 1e-9)


def on_cpu():
    """Seconds the calling thread has run on a CPU (Linux schedstat, nanoseconds; elsewhere thread_time)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return time.thread_time()


def scaling(buf, rounds, seconds):
    obs = buf.storage["obs"]
    src, dst = np.ones(BIG, np.uint8), np.zeros(BIG, np.uint8)
    half = BIG // 2

    def sample_work(i):
        def w():
            buf.sample(B)
            return SAMPLE_BYTES
        return w

    def same_bytes_work(i):  # each thread its own destination and its own part of the column
        fixed = np.empty((2 * B, 4, 84, 84), np.uint8)
        lo = i * (FILL // 2)
        pieces = itertools.cycle([obs[o:o + 2 * B] for o in range(lo, lo + FILL // 2 - 2 * B, 2 * B)])

        def w():
            np.copyto(fixed, next(pieces))
            return SAMPLE_BYTES
        return w

    def memcpy_work(i):  # 32 MiB pieces of this thread's half of the 512 MiB arrays (one thread: both halves)
        piece = 32 * 2**20
        offs = itertools.cycle(range(i * half, i * half + half, piece))

        def w():
            o = next(offs)
            np.copyto(dst[o:o + piece], src[o:o + piece])
            return piece
        return w

    cases = {"sample(32)": sample_work, "contiguous copy, same bytes": same_bytes_work,
             "memcpy 32 MiB pieces": memcpy_work}
    res = {k: {"1": [], "2": [], "ratio": [], "lat_ratio": [], "cpus_1": [], "cpus_2": [], "per_cpu": []}
           for k in cases}
    for r in range(rounds + 1):
        for k, work in cases.items():
            one, lat1, cpus1, per_cpu1 = run_threads(work, 1, seconds)
            two, lat2, cpus2, per_cpu2 = run_threads(work, 2, seconds)
            if r == 0:
                continue
            res[k]["1"].append(one / 1e9)
            res[k]["2"].append(two / 1e9)
            res[k]["ratio"].append(two / one)
            res[k]["lat_ratio"].append(2 * lat1 / lat2)
            res[k]["cpus_1"].append(cpus1)
            res[k]["cpus_2"].append(cpus2)
            res[k]["per_cpu"].append(per_cpu2 / per_cpu1)

    def q(v, p):
        return float(np.percentile(v, p))
    return {k: {"gbs_1": statistics.median(v["1"]), "gbs_2": statistics.median(v["2"]),
                "ratio": statistics.median(v["ratio"]), "ratio_q1": q(v["ratio"], 25), "ratio_q3": q(v["ratio"], 75),
                "lat_ratio": statistics.median(v["lat_ratio"]), "lat_ratio_q1": q(v["lat_ratio"], 25),
                "lat_ratio_q3": q(v["lat_ratio"], 75),
                "cpus_1": statistics.median(v["cpus_1"]), "cpus_2": statistics.median(v["cpus_2"]),
                "per_cpu_ratio": statistics.median(v["per_cpu"]), "per_cpu_ratio_q1": q(v["per_cpu"], 25),
                "per_cpu_ratio_q3": q(v["per_cpu"], 75)}
            for k, v in res.items()}


def markdown(res):
    bw, th = res["bandwidth"], res["threads"]
    lines = [f"# Image gathers and thread scaling ({res['date']}, {res['machine']}, load1 {res['load1']:.1f})", "",
             f"`{res['command']}`", "",
             f"Atari rows, capacity 1e5, 5e4 stored; sample(32) moves {SAMPLE_BYTES:,} bytes of obs + next_obs. "
             f"Medians over {res['rounds']} alternating rounds (IQR in brackets); in each round every case runs "
             f"{res.get('warm', 0)} untimed calls before its timed ones. Why: right after the 512 MiB copy the "
             "next case runs slower for tens of calls (in one trace, the first sample(32) took 511 us and the next "
             "40 decayed from ~190 to ~170 us) while the copy's aftermath drains; with 25 calls and no warm-up that "
             "aftermath is what the median measures (`--warm 0` shows it). \"2 copy threads\": "
             "`fr.set_copy_threads(2)` (a helper thread copies part of each batch; off by default).", "",
             "| case | GB/s | / memcpy 512 MiB |", "|---|---|---|"]
    for k, v in bw.items():
        lines.append(f"| {k} | {v['gbs']:.2f} [{v['gbs_q1']:.2f}, {v['gbs_q3']:.2f}] | "
                     f"{100 * v['ratio']:.1f}% [{100 * v['ratio_q1']:.1f}, {100 * v['ratio_q3']:.1f}] |")
    lines += ["", f"Thread scaling: 2 Python threads against 1, {res['thread_rounds']} alternating rounds of "
              f"{res['seconds']} s each, medians of the per-round ratios [IQR]. Wall: bytes moved per second of wall "
              "time, the figure of the issue. CPUs: CPU time the threads ran (Linux schedstat) per wall second; on a "
              "machine shared with other tenants, 2 threads can only scale as far as they get 2 CPUs. Per CPU-second: "
              "bytes per second of the threads' CPU time, 2 threads over 1: below 1 where the threads slow each "
              "other down while both run (memory bandwidth, shared cache lines, spinning); time blocked (on the "
              "GIL, a lock) is not CPU time and shows in the CPUs column instead. Per call: 2 x (median call alone) "
              "/ (median call with 2 threads).", "",
              "| work per thread | 1 thread GB/s | 2 threads GB/s | 2 / 1 (wall) | CPUs used, 1 / 2 threads "
              "| 2 / 1 per CPU-second | 2 / 1 per call |", "|---|---|---|---|---|---|---|"]
    for k, v in th.items():
        lines.append(f"| {k} | {v['gbs_1']:.2f} | {v['gbs_2']:.2f} | {v['ratio']:.2f}x "
                     f"[{v['ratio_q1']:.2f}, {v['ratio_q3']:.2f}] | {v['cpus_1']:.2f} / {v['cpus_2']:.2f} | "
                     f"{v['per_cpu_ratio']:.2f} [{v['per_cpu_ratio_q1']:.2f}, {v['per_cpu_ratio_q3']:.2f}] | "
                     f"{v['lat_ratio']:.2f}x [{v['lat_ratio_q1']:.2f}, {v['lat_ratio_q3']:.2f}] |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--calls", type=int, default=25, help="calls per case per round (the median counts)")
    ap.add_argument("--warm", type=int, default=100,
                    help="untimed calls of each case before its timed ones, in every round (0: none)")
    ap.add_argument("--thread-rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.4)
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run, not for the results)")
    ap.add_argument("--skip-threads", action="store_true")
    ap.add_argument("--out", default="bench/results/image")
    ap.add_argument("--pkg", help="import fastreplay from this directory (another build), e.g. to compare with main")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.thread_rounds, a.seconds = 3, 2, 0.2
    print("fastreplay from", fr.__file__, file=sys.stderr)
    buf = atari_buffer()
    res = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs", command="python -m bench.scripts.bench_image " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
                   if k in ("rounds", "calls", "warm", "thread_rounds", "seconds") or (k == "pkg" and v)),
               rounds=a.rounds, warm=a.warm, thread_rounds=a.thread_rounds, seconds=a.seconds)
    fr.set_copy_threads(1)
    res["bandwidth"] = bandwidth(buf, a.rounds, a.calls, a.warm)
    res["threads"] = {} if a.skip_threads else scaling(buf, a.thread_rounds, a.seconds)
    res["load1"] = os.getloadavg()[0]
    md = markdown(res)
    print(md)
    if not a.quick:
        with open(a.out + ".json", "w") as f:
            json.dump(res, f, indent=1)
        with open(a.out + ".md", "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
