"""Sharded replay on a local Ray cluster (fastreplay.ray): writer throughput, learner throughput, call overhead.

    OMP_NUM_THREADS=1 python -m bench.scripts.bench_ray [--out bench/results/ray.json]

1. rows/s added by 1, 2 and 4 writer processes (Ray tasks with a ReplayWriter: 50 rows per send, 4 in flight)
   into 2 prioritized shards; CartPole-sized rows (obs float32[4], action, reward, next_obs, done).
2. learner batches/s of B=512 sample + update_priorities across 2 shards (prefetch 2, updates asynchronous),
   shards holding fastreplay buffers vs shards holding fastreplay.reference buffers (pure Python, one thread:
   the RLlib-style baseline), 50k stored rows.
3. Ray call overhead: a no-op actor call round trip, and the same B=512 sample + update on one in-process buffer,
   against the sharded learner's time per batch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import ray

import fastreplay as fr
from fastreplay.ray import ShardedReplay

FIELDS = {"obs": ((4,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
          "next_obs": ((4,), np.float32), "done": ((), np.bool_)}


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.integers(0, 2, n),
            "reward": np.ones(n, np.float32), "next_obs": rng.normal(size=(n, 4)).astype(np.float32),
            "done": np.zeros(n, bool)}


@ray.remote(num_cpus=0)
def writer_task(writer, n, seed, per_add):
    data = rows(per_add, seed)
    prio = np.random.default_rng(seed).uniform(0.1, 2.0, per_add)
    ray.get(ray.put(0))  # warm
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        writer.add(priority=prio, **data)
        sent += per_add
    writer.flush()
    return sent, t0, time.perf_counter()


def bench_writers(counts, rows_each, per_add):
    out = {}
    for w in counts:
        replay = ShardedReplay(2, 2_000_000, FIELDS, seed=0)
        refs = [writer_task.remote(replay.writer(batch_rows=50, max_in_flight=4, first_shard=i), rows_each, i,
                                   per_add) for i in range(w)]
        res = ray.get(refs)
        total = sum(r[0] for r in res)
        t0, t1 = min(r[1] for r in res), max(r[2] for r in res)
        assert len(replay) == total, (len(replay), total)
        out[w] = total / (t1 - t0)
        print(f"writers={w}: {out[w]:,.0f} rows/s ({total} rows in {t1 - t0:.2f} s)", flush=True)
        replay.close()
    return out


def bench_learner(backend, stored, B, seconds):
    replay = ShardedReplay(2, 2 * stored, FIELDS, seed=1, backend=backend)
    w = replay.writer(batch_rows=1000, max_in_flight=4)
    data = rows(1000)
    for _ in range(stored // 1000):
        w.add(**data)
    w.flush()
    rng = np.random.default_rng(0)
    it = replay.batches(B, beta=0.4, prefetch=2)
    for _ in range(3):  # warm-up
        b = next(it)
        replay.update_priorities(b, rng.uniform(0.1, 2.0, B))
    replay.wait_updates()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        replay.update_priorities(b, rng.uniform(0.1, 2.0, B))
        n += 1
    replay.wait_updates()
    dt = time.perf_counter() - t0
    replay.close()
    print(f"learner {backend}: {n / dt:,.1f} batches/s (B={B}, {n} batches)", flush=True)
    return n / dt


@ray.remote(num_cpus=0)
class Noop:
    def ping(self):
        return 0


def bench_overhead(B, stored):
    a = Noop.remote()
    ray.get(a.ping.remote())
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(a.ping.remote())
    ping = (time.perf_counter() - t0) / n
    buf = fr.PrioritizedReplayBuffer(2 * stored, FIELDS, seed=0)
    data = rows(1000)
    for _ in range(2 * stored // 1000):
        buf.add(**data)
    rng = np.random.default_rng(0)
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        b = buf.sample(B, 0.4)
        buf.update_priorities(b, rng.uniform(0.1, 2.0, B))
    local = (time.perf_counter() - t0) / n
    print(f"ray round trip {ping * 1e6:.0f} us; local B={B} sample+update {local * 1e6:.0f} us", flush=True)
    return ping, local


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/results/ray.json")
    p.add_argument("--rows", type=int, default=200_000, help="rows per writer")
    p.add_argument("--per-add", type=int, default=10, help="rows per writer.add call")
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=1 << 30)
    B, stored = 512, 50_000
    res = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}", "ray": ray.__version__,
           "batch_size": B, "stored_rows": 2 * stored}
    res["writer_rows_per_s"] = bench_writers([1, 2, 4], a.rows, a.per_add)
    res["learner_batches_per_s"] = {b: bench_learner(b, stored, B, a.seconds) for b in ("fastreplay", "reference")}
    ping, local = bench_overhead(B, stored)
    res["ray_round_trip_us"] = ping * 1e6
    res["local_sample_update_us"] = local * 1e6
    res["sharded_per_batch_us"] = 1e6 / res["learner_batches_per_s"]["fastreplay"]
    print(json.dumps(res, indent=1))
    with open(a.out, "w") as fh:
        json.dump(res, fh, indent=1)
    ray.shutdown()


if __name__ == "__main__":
    main()
