"""fastreplay.ray: sharded replay on a local Ray cluster (one per pytest worker, session-scoped).

Two shards and two writer processes: global prioritized sampling matches one in-process buffer (chi-square on the
index histogram, weights to 1e-6); large batches arrive as zero-copy read-only views of Ray's shared-memory store;
a killed shard raises ShardLost within 5 s and restarts from its checkpoint with its priorities; per-shard rate
limiters keep their band at every observation with a writer far faster than the learner.
"""
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray")
scipy_stats = pytest.importorskip("scipy.stats")

import fastreplay as fr  # noqa: E402
from fastreplay.ray import ShardedReplay, ShardLost  # noqa: E402

FIELDS = {"id": ((), np.int64), "obs": ((3,), np.float32)}


@pytest.fixture(scope="session")
def cluster():
    # Logical CPUs may exceed the 2 physical cores; shards and writers declare num_cpus=0, so nothing waits for
    # CPUs that do not exist.
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
def write_rows(writer, ids, priorities, rows_per_add=5):
    for k in range(0, len(ids), rows_per_add):
        sl = slice(k, k + rows_per_add)
        writer.add(id=ids[sl], obs=np.stack([ids[sl]] * 3, 1).astype(np.float32),
                   priority=None if priorities is None else priorities[sl])
    writer.flush()
    return writer.rows_sent


def test_import_fastreplay_never_needs_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import fastreplay, fastreplay.rate_limiter\n"
            "b = fastreplay.ReplayBuffer(8, {'x': ((), 'float32')}); b.add(x=1.0)\n"
            "try:\n    import fastreplay.ray\nexcept ImportError:\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_global_prioritized_sampling_matches_one_buffer(cluster):
    """2 shards fed by 2 writer processes with actor-side priorities; 10^5 sampled rows."""
    n, alpha, beta, eps = 1000, 0.6, 0.4, 1e-6
    rng = np.random.default_rng(0)
    # The shards' priority masses differ (about 1:3), so splitting batches evenly (or by size) would be wrong.
    prio = np.concatenate([rng.uniform(0.05, 1.0, n // 2), rng.uniform(0.5, 6.0, n - n // 2)])
    ids = np.arange(n, dtype=np.int64)
    replay = ShardedReplay(2, n, FIELDS, alpha=alpha, eps=eps, seed=1)
    try:
        half = n // 2
        sent = ray.get([write_rows.remote(replay.writer(batch_rows=50, shards=[w]), ids[w * half:(w + 1) * half],
                                          prio[w * half:(w + 1) * half]) for w in range(2)])
        assert sent == [half, half]
        assert [s["size"] for s in replay.stats()] == [half, half]
        # The oracle: one in-process buffer holding the same rows with the same priorities.
        oracle = fr.PrioritizedReplayBuffer(n, FIELDS, alpha=alpha, eps=eps, seed=2)
        oracle.add(id=ids, obs=np.stack([ids] * 3, 1).astype(np.float32))
        oracle.update_priorities(np.arange(n), prio)
        B, batches = 500, 200
        counts = np.zeros(n)
        it = replay.batches(B, beta=beta, prefetch=3)
        for _ in range(batches):
            b = next(it)
            assert b.batch_size == B and b["id"].shape == (B,)
            np.testing.assert_array_equal(b["obs"][:, 0], b["id"].astype(np.float32))
            counts += np.bincount(b["id"], minlength=n)
            # Weights: as one global buffer's, (min_leaf / leaf_i) ** beta with the global minimum.
            ob = oracle.get(np.asarray(b["id"]))  # oracle slot == id
            leaf = (prio[b["id"]] + eps) ** alpha
            expect = (((prio + eps) ** alpha).min() / leaf) ** beta
            np.testing.assert_allclose(b.weights, expect, rtol=1e-6)
            assert (ob["id"] == b["id"]).all()
        # Same weights as the oracle buffer's own sample, row for row (by id).
        ob = oracle.sample(4096, beta)
        w_oracle = dict(zip(ob["id"].tolist(), ob.weights.tolist()))
        w_sharded = dict(zip(b["id"].tolist(), b.weights.tolist()))
        common = set(w_oracle) & set(w_sharded)
        assert len(common) > 50
        for i in common:
            assert abs(w_oracle[i] - w_sharded[i]) <= 1e-6 * max(1.0, w_oracle[i])
        # Histogram vs the exact probabilities and vs the oracle's own histogram.
        p = (prio + eps) ** alpha
        p /= p.sum()
        assert scipy_stats.chisquare(counts, p * counts.sum()).pvalue > 0.01
        oracle_counts = np.zeros(n)
        for _ in range(batches):
            oracle_counts += np.bincount(oracle.sample(B, beta)["id"], minlength=n)
        table = np.stack([counts, oracle_counts])
        assert scipy_stats.chi2_contingency(table).pvalue > 0.01
    finally:
        replay.close()


def test_priority_updates_are_routed_by_shard_with_the_stale_guard(cluster):
    replay = ShardedReplay(2, 40, FIELDS, seed=3)
    try:
        w = replay.writer(batch_rows=10)
        ids = np.arange(40, dtype=np.int64)
        ray.get(write_rows.remote(w, ids, None))
        b = replay.sample(16)
        new = np.linspace(0.5, 2.0, 16)
        replay.update_priorities(b, new)
        assert replay.wait_updates() == 0
        pr = [ray.get(s.priorities.remote()) for s in replay.shards]
        last = {int(gi): p for gi, p in zip(b.indices, new)}  # the last duplicate wins
        for gi, p in last.items():
            assert pr[gi // replay.shard_capacity][gi % replay.shard_capacity] == pytest.approx(p)
        # Overwrite every slot, then update with the old batch: every row is stale and skipped.
        ray.get(write_rows.remote(replay.writer(batch_rows=10), ids + 100, None))
        replay.update_priorities(b, np.full(16, 9.0))
        assert replay.wait_updates() == 16
        with pytest.raises(IndexError, match="indices must lie"):
            replay.update_priorities(np.array([40]), np.array([1.0]))
    finally:
        replay.close()


def _mapping_of(address):
    with open("/proc/self/maps") as fh:
        for line in fh:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line.strip()
    return ""


def test_large_image_batches_arrive_without_a_learner_side_copy(cluster):
    torch = pytest.importorskip("torch")
    fields = {"obs": ((4, 84, 84), np.uint8), "next_obs": ((4, 84, 84), np.uint8), "action": ((), np.int64)}
    replay = ShardedReplay(2, 400, fields, seed=4)
    try:
        w = replay.writer(batch_rows=50)
        for k in range(200):
            frame = np.full((4, 84, 84), k % 251, np.uint8)
            w.add(obs=frame, next_obs=frame + 1, action=k)
        w.flush()  # the shards received read-only views from Ray's store and add() copied them
        it = replay.batches(32, prefetch=2, concat=False)
        for _ in range(5):
            parts = next(it)
            assert sum(p.batch_size for p in parts) == 32
            for part in parts:
                obs = part["obs"]
                assert obs.shape == (part.batch_size, 4, 84, 84)
                assert not obs.flags.writeable and not obs.flags.owndata
                # The rows live in the node's shared-memory object store, mapped into this process: no copy.
                where = _mapping_of(obs.__array_interface__["data"][0])
                assert "/dev/shm/plasma" in where, where
                assert (obs[:, 0, 0, 0] == part["action"] % 251).all()
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # torch warns on non-writable arrays: must not happen
                    t = part.to_torch()
                t["obs"][0, 0, 0, 0] = 7  # a writable copy, never the store's memory
                assert obs[0, 0, 0, 0] != 7 or part["action"][0] % 251 == 7
    finally:
        replay.close()


def test_a_killed_shard_raises_shard_lost_and_restarts_from_its_checkpoint(cluster, tmp_path):
    replay = ShardedReplay(2, 200, FIELDS, seed=5, checkpoint_dir=str(tmp_path))
    try:
        ids = np.arange(150, dtype=np.int64)
        ray.get(write_rows.remote(replay.writer(batch_rows=25), ids, np.linspace(0.1, 5, 150)))
        b = replay.sample(64)
        replay.update_priorities(b, np.arange(64) / 10.0)
        replay.wait_updates()
        replay.checkpoint()
        before = [ray.get(s.priorities.remote()) for s in replay.shards]
        writer = replay.writer(batch_rows=5, first_shard=1)
        ray.kill(replay.shards[1], no_restart=True)
        t0 = time.monotonic()
        with pytest.raises(ShardLost, match="shard 1 is lost") as e:
            for _ in range(1000):
                replay.sample(32)
        assert e.value.shard == 1
        assert time.monotonic() - t0 < 5.0
        t0 = time.monotonic()
        with pytest.raises(ShardLost):
            writer.add(id=np.arange(5), obs=np.zeros((5, 3), np.float32))
            writer.flush()
        assert time.monotonic() - t0 < 5.0
        st = replay.restart_shard(1)
        assert st["restored"] and st["size"] == len(before[1])
        np.testing.assert_array_equal(ray.get(replay.shards[1].priorities.remote()), before[1])
        assert replay.sample(32).batch_size == 32
    finally:
        replay.close()


def test_rate_limited_shards_keep_their_band_with_a_fast_writer(cluster):
    spi, min_size, eb, B = 2.0, 100, 120.0, 32
    replay = ShardedReplay(2, 20_000, FIELDS, seed=6,
                           rate_limiter=fr.RateLimiter(spi, min_size, eb))

    @ray.remote(num_cpus=0)
    def fast_writer(writer, n):
        try:
            for k in range(0, n, 10):
                writer.add(id=np.arange(k, k + 10), obs=np.zeros((10, 3), np.float32))
            writer.flush()
        except ShardLost:
            pass
        return writer.rows_sent

    ref = fast_writer.remote(replay.writer(batch_rows=20, max_in_flight=2), 20_000)
    try:
        deadline = time.monotonic() + 30
        while min(s["size"] for s in replay.stats()) < min_size and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = 0
        lo, hi = min_size * spi - eb, min_size * spi + eb
        for _ in range(60):
            replay.sample(B, timeout=30)
            seen += B
            for s in replay._stats:  # counters as each shard replied, right after its sample
                c = s["limiter"]
                err = c["inserts"] * spi - c["samples"]
                assert err >= lo, c
                assert c["inserts"] <= min_size or err <= hi, c
            time.sleep(0.01)  # the learner's work: the writer is far faster
        final = replay.stats()
        for s in final:
            c = s["limiter"]
            err = c["inserts"] * spi - c["samples"]
            assert lo <= err <= hi, c
        # The writer was held back: it inserted about samples / spi rows, far fewer than it offered.
        inserted = sum(s["limiter"]["inserts"] for s in final)
        assert inserted < 20_000 / 4
        assert sum(s["limiter"]["samples"] for s in final) == seen
    finally:
        replay.close()
        ray.get(ref)


def test_apex_epsilons_follow_the_paper():
    from fastreplay.apex import actor_epsilons

    eps = actor_epsilons(8)
    np.testing.assert_allclose(eps, [0.4 ** (1 + 7 * i / 7) for i in range(8)])
    assert actor_epsilons(1) == [0.4]


def test_apex_command_runs_end_to_end():
    """A short run of python -m fastreplay.apex (its own local Ray cluster, 2 actors, 2 shards): it learns, sends
    priorities, evaluates and shuts down cleanly. Solving CartPole is measured in bench/results/ray.md."""
    pytest.importorskip("gymnasium")
    pytest.importorskip("torch")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "fastreplay.apex", "--max-updates", "300", "--eval-every", "150",
                          "--eval-episodes", "2", "--learning-starts", "200", "--target-return", "1e9"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["updates"] == 300 and not result["solved"]
    assert len(result["epsilons"]) == 2


def test_uniform_shards_are_sampled_in_proportion_to_their_sizes(cluster):
    replay = ShardedReplay(2, 1000, FIELDS, prioritized=False, seed=7)
    try:
        ray.get([write_rows.remote(replay.writer(batch_rows=50, shards=[s]), np.arange(k, dtype=np.int64), None)
                 for s, k in ((0, 100), (1, 300))])
        counts = np.zeros(2)
        ids = np.zeros(400)
        for _ in range(100):
            b = replay.sample(100)
            assert b.weights is None and b.generations is None
            counts += np.bincount(b.shards, minlength=2)
            ids += np.bincount(b.indices, minlength=1000)[np.r_[0:100, 500:800]]
        # Every stored row equally likely: 1/400 each, so shard 1 gives 3/4 of the rows.
        assert scipy_stats.chisquare(ids, np.full(400, ids.sum() / 400)).pvalue > 0.01
        assert scipy_stats.binomtest(int(counts[1]), int(counts.sum()), 0.75).pvalue > 0.01
    finally:
        replay.close()


@ray.remote(num_cpus=0)
def write_lanes(writer, base, steps, lanes):
    """Steps of `lanes` lanes; obs encodes (writer, lane, step) as base + 100 * lane + t, next_obs = obs + 1."""
    for t in range(steps):
        obs = np.array([[base + 100 * k + t] for k in range(lanes)], np.float32)
        writer.add(obs=obs, next_obs=obs + 1, reward=np.ones(lanes, np.float32), done=np.zeros(lanes, bool),
                   priority=np.full(lanes, 1.0 + t % 3))
    writer.flush()
    return writer.rows_sent


def test_episodic_shards_give_each_writer_its_lanes_and_n_step_returns(cluster):
    """2 writers with 2 lanes each, one episodic shard each (n_step=3, gamma=0.5): every sampled row's n-step
    window stays within its writer's lane: next_obs - obs == m, reward == sum_{j<m} 0.5^j, discount == 0.5^m."""
    fields = {"obs": ((1,), np.float32), "next_obs": ((1,), np.float32), "reward": ((), np.float32),
              "done": ((), np.bool_)}
    replay = ShardedReplay(2, 400, fields, seed=8, buffer_options={"num_envs": 2, "n_step": 3, "gamma": 0.5})
    try:
        with pytest.raises(ValueError, match="one shard of its own"):
            replay.writer()
        sent = ray.get([write_lanes.remote(replay.writer(batch_rows=20, shards=[w]), 1000 * w, 60, 2)
                        for w in range(2)])
        assert sent == [120, 120]
        for _ in range(20):
            b = replay.sample(64)
            m = np.rint(b["next_obs"][:, 0] - b["obs"][:, 0]).astype(int)
            assert ((m >= 1) & (m <= 3)).all()
            np.testing.assert_allclose(b["reward"], (1 - 0.5 ** m) / 0.5, rtol=1e-6)
            np.testing.assert_allclose(b["discount"], 0.5 ** m, rtol=1e-6)
            assert (b.shards == (b["obs"][:, 0] >= 1000)).all()  # writer w's steps live on shard w
        # A second writer on an episodic shard is refused (its steps would interleave with the first's).
        other = replay.writer(batch_rows=2, shards=[0])
        with pytest.raises(ValueError, match="serves one writer"):
            other.add(obs=np.zeros((2, 1), np.float32), next_obs=np.ones((2, 1), np.float32),
                      reward=np.ones(2, np.float32), done=np.zeros(2, bool))
            other.flush()
    finally:
        replay.close()


def test_shards_checkpoint_periodically(cluster, tmp_path):
    replay = ShardedReplay(2, 100, FIELDS, seed=9, checkpoint_dir=str(tmp_path), checkpoint_every=0.2,
                           rate_limiter=fr.RateLimiter(1.0, 5, 100.0))
    try:
        ray.get(write_rows.remote(replay.writer(batch_rows=10), np.arange(40, dtype=np.int64), None))
        after_writes = [s["checkpoints"] for s in replay.stats()]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # two more checkpoints each (0.2 s apart), so one began after the writes
            stats = replay.stats()
            if all(s["checkpoints"] >= c + 2 for s, c in zip(stats, after_writes)):
                break
            time.sleep(0.1)
        assert all(s["checkpoints"] >= c + 2 for s, c in zip(stats, after_writes)), stats
        for i, s in enumerate(stats):
            path = tmp_path / f"shard-{i}.frb"
            assert len(fr.PrioritizedReplayBuffer.load(path)) == s["size"] == 20
            limiter = fr.rate_limiter.read_limiter_state(path)
            assert limiter["inserts"] == 20 and limiter["samples"] == 0
    finally:
        replay.close()
