"""Storage benchmarks (issue 7): checkpoint save/load throughput vs a plain file copy, and sampling from
memory-mapped storage vs memory.

Run from the repository root: python -m bench.scripts.bench_storage [--gb 2] [--dir /tmp]   (prints a markdown table)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

import fastreplay as fr
from tests._rows import ATARI, CARTPOLE


def fill(buf, n, chunk=1000):
    rng = np.random.default_rng(0)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        rows = {}
        for k, (shape, dt) in buf.fields.items():
            rows[k] = rng.integers(0, 255, (m,) + shape).astype(dt)
        buf.add(**rows)


def timeit(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def per_call_us(fn, n):
    for _ in range(min(n, 200)):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=2.0, help="size of the Atari buffer to save/load")
    ap.add_argument("--dir", default=None, help="directory for the files (default: a temp dir)")
    a = ap.parse_args()
    root = tempfile.mkdtemp(dir=a.dir)
    try:
        row = 2 * 4 * 84 * 84 + 8 + 4 + 1
        n = int(a.gb * 2**30 / row)
        buf = fr.ReplayBuffer(n, ATARI, seed=0)
        fill(buf, n)
        path = os.path.join(root, "ckpt.frb")
        save_s = timeit(lambda: buf.save(path))
        size = os.path.getsize(path)
        load_s = timeit(lambda: fr.ReplayBuffer.load(path))

        def copy():
            shutil.copyfile(path, path + ".copy")
            with open(path + ".copy", "rb+") as f:
                os.fsync(f.fileno())

        copy_s = timeit(copy)
        gb = size / 1e9
        print("| checkpoint of %.2f GB (Atari rows) | GB/s | vs plain file copy + fsync |" % gb)
        print("|---|---|---|")
        print(f"| plain file copy (shutil.copyfile + fsync) | {gb / copy_s:.2f} | 1.00 |")
        print(f"| buf.save (stream, fsync, rename) | {gb / save_s:.2f} | {copy_s / save_s:.2f} |")
        print(f"| ReplayBuffer.load (read, CRC check, restore) | {gb / load_s:.2f} | {copy_s / load_s:.2f} |")
        del buf
        print()
        print("| sampling (page cache warm) | memory us | memmap us | memmap / memory |")
        print("|---|---|---|---|")
        for name, fields, cap, fill_n, bs in [("CartPole cap 1e6, sample(256)", CARTPOLE, 10**6, 10**6, 256),
                                             ("Atari cap 1e5 filled 5e4, sample(32)", ATARI, 10**5, 5 * 10**4, 32)]:
            mem = fr.ReplayBuffer(cap, fields, seed=0)
            mm = fr.ReplayBuffer(cap, fields, seed=0, storage="memmap", path=os.path.join(root, name.split()[0]))
            fill(mem, fill_n, 10000 if fields is CARTPOLE else 1000)
            fill(mm, fill_n, 10000 if fields is CARTPOLE else 1000)
            reps = 20000 if fields is CARTPOLE else 2000
            t_mem = per_call_us(lambda: mem.sample(bs), reps)
            t_mm = per_call_us(lambda: mm.sample(bs), reps)
            print(f"| {name} | {t_mem:.1f} | {t_mm:.1f} | {t_mm / t_mem:.2f} |")
            del mem, mm
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
