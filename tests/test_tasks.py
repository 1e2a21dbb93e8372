"""Multi-task buffers (tasks=K): quotas, routed adds, task-aware sampling, two-level PER weights, the reference."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import stats

import fastreplay as fr
from fastreplay import reference as ref

F = {"obs": ((2,), np.float32), "act": ((), np.int64)}
IMPLS = [pytest.param(fr, id="compiled"), pytest.param(ref, id="reference")]


def fill(buf, task, n, start=0):
    """n self-describing rows into `task`: obs = [1e6 * task + i, i] (exact in float32 for i < 1e6), act = task."""
    i = np.arange(start, start + n)
    buf.add(obs=np.stack([1_000_000 * task + i, i], 1).astype(np.float32), act=np.full(n, task), task=task)


def check_rows(b):
    """Every row is one its task wrote."""
    assert (b["obs"][:, 0] // 1_000_000 == b["task"]).all() and (b["act"] == b["task"]).all()
    assert (b["obs"][:, 0] % 1_000_000 == b["obs"][:, 1]).all()  # both columns from one row


@pytest.mark.parametrize("m", IMPLS)
def test_balanced_counts_are_exact(m):
    buf = m.ReplayBuffer(300, F, tasks=3, seed=0)
    for t, n in enumerate((5, 60, 100)):
        fill(buf, t, n)
    calls = 10_000 if m is fr else 300
    for _ in range(calls):
        b = buf.sample(12, tasks="balanced")
        assert np.bincount(b["task"], minlength=3).tolist() == [4, 4, 4]
        assert (np.diff(b["task"]) >= 0).all()  # grouped by task
    check_rows(b)
    assert buf.sample(6, tasks=[0, 2])["task"].tolist() == [0, 0, 0, 2, 2, 2]


@pytest.mark.parametrize("m", IMPLS)
def test_weighted_and_proportional_counts_are_stratified_and_unbiased(m):
    buf = m.ReplayBuffer(300, F, tasks=3, seed=1)
    for t, n in enumerate((10, 30, 60)):
        fill(buf, t, n)
    calls = 4000 if m is fr else 400
    for tasks, w in (({0: 1, 1: 2, 2: 5}, np.array([1, 2, 5.0])), ("proportional", np.array([10, 30, 60.0])),
                     (None, np.array([10, 30, 60.0]))):
        expect = 16 * w / w.sum()
        total = np.zeros(3)
        for _ in range(calls):
            c = np.bincount(buf.sample(16, tasks=tasks)["task"], minlength=3)
            assert c.sum() == 16 and (c >= np.floor(expect)).all() and (c <= np.ceil(expect)).all()
            total += c
        np.testing.assert_allclose(total / calls, expect, atol=0.1)


@pytest.mark.parametrize("prioritized", [False, True])
def test_within_task_draws_follow_uniform_or_priority(prioritized):
    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    kw = {"alpha": 1.0, "eps": 0.0} if prioritized else {}
    buf = cls(200, F, tasks=2, seed=2, **kw)
    fill(buf, 0, 100)
    fill(buf, 1, 40)
    p = np.arange(1, 41, dtype=np.float64)
    if prioritized:
        buf.update_priorities(np.arange(100, 140), p)  # task 1 holds global slots 100..139
    counts = np.zeros(40)
    for _ in range(3000):
        b = buf.sample(32, tasks="balanced") if not prioritized else buf.sample(32, 0.4, tasks="balanced")
        ours = b.indices[b["task"] == 1] - 100
        counts += np.bincount(ours, minlength=40)
    expect = (p / p.sum() if prioritized else np.full(40, 1 / 40)) * counts.sum()
    assert stats.chisquare(counts, expect).pvalue > 1e-4


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize("normalise", ["global", "task"])
def test_two_level_weights_match_the_formula(m, normalise):
    alpha, eps, beta = 0.7, 0.01, 0.6
    buf = m.PrioritizedReplayBuffer(120, F, alpha, eps, seed=3, tasks=3, task_capacity=[20, 40, 60],
                                    task_weights=normalise)
    sizes = (15, 40, 25)
    for t, n in enumerate(sizes):
        fill(buf, t, n)
    rng = np.random.default_rng(0)
    offsets = (0, 20, 60)
    prios = [rng.uniform(0.1, 10.0, n) * (10.0 ** t) for t, n in enumerate(sizes)]  # scales differ by task
    for t in range(3):
        buf.update_priorities(np.arange(sizes[t]) + offsets[t], prios[t])
    leaves = [(p + eps) ** alpha for p in prios]
    for tasks, w in (("balanced", [1, 1, 1]), ({0: 3, 2: 1}, [3, 0, 1]), (None, list(sizes))):
        P = np.array(w, float) / sum(w)
        b = buf.sample(48, beta, tasks=tasks)
        check_rows(b)
        t = b["task"]
        local = b.indices - np.array(offsets)[t]
        p_i = np.array([P[tt] * leaves[tt][s] / leaves[tt].sum() for tt, s in zip(t, local)])
        if normalise == "global":
            p_min = min(P[k] * leaves[k].min() / leaves[k].sum() for k in range(3) if P[k] > 0)
            expect = (p_min / p_i) ** beta
        else:
            expect = np.array([(leaves[tt].min() / leaves[tt][s]) ** beta for tt, s in zip(t, local)])
        np.testing.assert_allclose(b.weights, expect.astype(np.float32), rtol=2e-6)
        assert b.weights.max() <= 1.0


def test_quotas_hold_at_task_rates_1_to_20():
    buf = fr.ReplayBuffer(2000, F, tasks=2, seed=4)
    slow = 0
    for k in range(1_000_000 // 21):
        fill(buf, 0, 1, start=slow)
        slow += 1
        fill(buf, 1, 20, start=20 * k)
    assert buf.task_sizes == [1000, 1000] and buf.total_added == 21 * (1_000_000 // 21)
    g = buf.get(np.arange(1000))  # task 0 keeps its own newest 1000 rows: the fast task never evicted them
    assert (g["task"] == 0).all() and sorted(g["obs"][:, 1].astype(int)) == list(range(slow - 1000, slow))


@pytest.mark.parametrize("m", IMPLS)
def test_add_with_one_task_per_row_routes_in_order_and_checks_first(m):
    buf = m.ReplayBuffer(8, F, tasks=2, seed=5)
    obs = np.arange(10, dtype=np.float32).reshape(5, 2)
    buf.add(obs=obs, act=np.arange(5), task=np.array([1, 0, 1, 1, 0]))
    assert buf.task_sizes == [2, 3]
    np.testing.assert_array_equal(buf.get([0, 1])["act"], [1, 4])
    np.testing.assert_array_equal(buf.get([4, 5, 6])["act"], [0, 2, 3])
    np.testing.assert_array_equal(buf.get([4, 0])["task"], [1, 0])
    with pytest.raises(ValueError, match="task 2 at row 1 is out of range"):
        buf.add(obs=obs[:2], act=[0, 1], task=[0, 2])
    with pytest.raises(TypeError, match="needs task="):
        buf.add(obs=obs[0], act=0)
    assert buf.task_sizes == [2, 3] and buf.total_added == 5


BAD_SAMPLES = [("bogus", ValueError, "tasks must be 'balanced'"), ({5: 1.0}, ValueError, "task 5 is out of range"),
               ({0: -1.0}, ValueError, "weight of task 0 must be finite"), ({0: 0.0}, ValueError, "no task a positive"),
               ([1], ValueError, "task 1 holds no transitions"), (2.5, TypeError, "tasks must be"),
               ("balanced", ValueError, "task 1 holds no transitions")]


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize("tasks, exc, msg", BAD_SAMPLES)
def test_bad_task_arguments_are_refused_by_both(m, tasks, exc, msg):
    buf = m.ReplayBuffer(8, F, tasks=2, seed=6)
    fill(buf, 0, 3)
    with pytest.raises(exc, match=msg):
        buf.sample(4, tasks=tasks)
    assert len(buf) == 3


@pytest.mark.parametrize("m", IMPLS)
def test_construction_errors(m):
    with pytest.raises(ValueError, match="does not split into 3 equal task quotas"):
        m.ReplayBuffer(10, F, tasks=3)
    with pytest.raises(ValueError, match="adds up to 9, but capacity is 10"):
        m.ReplayBuffer(10, F, tasks=2, task_capacity=[4, 5])
    with pytest.raises(ValueError, match=r"task_capacity\[1\] must be a positive int"):
        m.ReplayBuffer(10, F, tasks=2, task_capacity=[10, 0])
    with pytest.raises(ValueError, match="tasks must be >= 1"):
        m.ReplayBuffer(10, F, tasks=0)
    with pytest.raises(TypeError, match="tasks must be an int"):
        m.ReplayBuffer(10, F, tasks=2.0)
    with pytest.raises(ValueError, match="keeps the field name 'task'"):
        m.ReplayBuffer(10, {"task": ((), np.int64)}, tasks=2)
    with pytest.raises(ValueError, match="task_weights must be 'global' or 'task'"):
        m.PrioritizedReplayBuffer(10, F, tasks=2, task_weights="local")
    with pytest.raises(TypeError, match="needs a multi-task buffer"):
        b = m.ReplayBuffer(10, F)
        b.add(obs=np.zeros(2, np.float32), act=0)
        b.sample(2, tasks="balanced")


def test_what_multi_task_buffers_do_not_offer_yet_is_refused(tmp_path):
    buf = fr.PrioritizedReplayBuffer(8, F, tasks=2)
    fill(buf, 0, 2)
    for what in (lambda: buf.storage, lambda: buf.priorities, lambda: buf.next_index, lambda: buf._leaves()):
        with pytest.raises(TypeError, match="multi-task"):
            what()
    with pytest.raises(ValueError, match="storage='shared' holds single-task buffers only"):
        fr.ReplayBuffer(8, F, tasks=2, storage="shared")


@pytest.mark.parametrize("prioritized", [False, True])
def test_differential_against_the_reference(prioritized):
    rng = np.random.default_rng(7)
    kw = {"task_capacity": [7, 13, 20]}
    a = (fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer)(40, F, tasks=3, seed=8, **kw)
    b = (ref.PrioritizedReplayBuffer if prioritized else ref.ReplayBuffer)(40, F, tasks=3, seed=8, **kw)
    for step in range(60):
        n = int(rng.integers(1, 6))
        obs = rng.normal(size=(n, 2)).astype(np.float32)
        act = rng.integers(0, 9, n)
        task = int(rng.integers(3)) if step % 2 else rng.integers(0, 3, n)
        if step % 7 == 3:
            task = np.array(task) + 3 * (np.arange(np.size(task)) == 0)  # one bad task: refused by both
        for buf in (a, b):
            try:
                buf.add(obs=obs, act=act, task=task)
                err = None
            except Exception as e:  # noqa: BLE001 - compared below
                err = (type(e), str(e))
            buf._last = err
        assert a._last == b._last
        assert len(a) == len(b) and a.task_sizes == b.task_sizes and a.total_added == b.total_added
        if prioritized and len(a) and step % 3 == 0:
            sizes, off = a.task_sizes, np.cumsum([0, 7, 13])
            idx = np.concatenate([np.arange(s) + o for s, o in zip(sizes, off)])
            pr = rng.uniform(0, 5, len(idx))
            assert a.update_priorities(idx, pr) == b.update_priorities(idx, pr)
            assert a.max_priority == b.max_priority
    idx = np.concatenate([np.arange(s) + o for s, o in zip(a.task_sizes, np.cumsum([0, 7, 13]))])
    ga, gb = a.get(idx), b.get(idx)
    for k in ("obs", "act", "task"):
        np.testing.assert_array_equal(ga[k], gb[k])
    np.testing.assert_array_equal(ga.generations, gb.generations)
    np.testing.assert_array_equal(a.generations(np.arange(40)), b.generations(np.arange(40)))
    for bad in ([40], [-1], [7 + a.task_sizes[1]] if a.task_sizes[1] < 13 else [0]):
        ea = eb = None
        try:
            a.get(bad)
        except Exception as e:  # noqa: BLE001
            ea = (type(e), str(e))
        try:
            b.get(bad)
        except Exception as e:  # noqa: BLE001
            eb = (type(e), str(e))
        assert ea == eb


def test_episode_options_work_per_task():
    fields = {"obs": ((1,), np.float32), "next_obs": ((1,), np.float32), "reward": ((), np.float32),
              "done": ((), bool)}
    buf = fr.ReplayBuffer(40, fields, tasks=2, num_envs=2, n_step=3, gamma=0.5, seed=9)
    single = fr.ReplayBuffer(20, fields, num_envs=2, n_step=3, gamma=0.5, seed=9)
    for step in range(12):
        row = dict(obs=np.full((2, 1), step, np.float32), next_obs=np.full((2, 1), step + 1, np.float32),
                   reward=np.ones(2, np.float32), done=np.array([step % 5 == 4, False]))
        buf.add(**row, task=1)
        single.add(**row)
        buf.add(**{k: np.zeros_like(v) for k, v in row.items()}, task=0)  # another task's steps in between
    g, s = buf.get(np.arange(20, 40)), single.get(np.arange(20))
    for k in ("obs", "next_obs", "reward", "done", "discount"):
        np.testing.assert_array_equal(g[k], s[k])
    assert (g["task"] == 1).all()
    b = buf.sample(8, tasks="balanced")
    assert np.bincount(b["task"]).tolist() == [4, 4] and set(b) >= {"discount", "task"}
    # one task per row: each task must get all its lanes, checked before either task is written
    two = {k: np.concatenate([v, v]) for k, v in row.items()}
    buf.add(**two, task=[0, 0, 1, 1])
    before = buf.total_added
    with pytest.raises(ValueError, match="task 0 gets 3 rows.*num_envs=2"):
        buf.add(**two, task=[0, 0, 0, 1])
    assert buf.total_added == before


@pytest.mark.parametrize("prioritized", [False, True])
def test_threads_add_to_tasks_while_others_sample(prioritized):
    buf = (fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer)(600, F, tasks=3, seed=10)
    for t in range(3):
        fill(buf, t, 5)
    stop = threading.Event()
    errors = []

    def writer(t):
        i = 5
        while not stop.is_set():
            fill(buf, t, 7, start=i)
            i += 7

    def sampler():
        try:
            while not stop.is_set():
                if prioritized:
                    b = buf.sample(30, 0.4, tasks="balanced")
                    buf.update_priorities(b, np.abs(b["obs"][:, 1]) % 5 + 0.1)
                else:
                    b = buf.sample(30, tasks="balanced")
                check_rows(b)
                assert np.bincount(b["task"], minlength=3).tolist() == [10, 10, 10]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)] + [threading.Thread(target=sampler)
                                                                                 for _ in range(2)]
    for th in threads:
        th.start()
    stop.wait(1.5)
    stop.set()
    for th in threads:
        th.join()
    assert not errors and buf.task_sizes == [200, 200, 200]


def test_prefetch_and_out_batches_carry_tasks():
    buf = fr.ReplayBuffer(30, F, tasks=3, seed=11)
    for t in range(3):
        fill(buf, t, 4)
    with buf.prefetch(9) as it:
        b = next(it)
        check_rows(b)
    out = buf.sample(9, tasks="balanced")
    again = buf.sample(9, tasks="balanced", out=out)
    assert again is out and np.bincount(out["task"]).tolist() == [3, 3, 3]
    check_rows(out)


def test_private_single_core_methods_refuse_a_multi_task_buffer():
    """Methods with no per-task meaning yet raise TypeError instead of reaching a core the buffer does not have."""
    buf = fr.PrioritizedReplayBuffer(8, F, tasks=2)
    fill(buf, 0, 2)
    calls = [lambda: buf._export_state(), lambda: buf._raw_view(0, 2), lambda: buf._seq_view(), lambda: buf._writes(),
             lambda: buf._episode_view(-1), lambda: buf._storage_view(0), lambda: buf._reopen(0),
             lambda: buf._restore_priorities(np.zeros(2), 1.0), lambda: buf._priorities(), lambda: buf._leaves(),
             lambda: buf._total, lambda: buf._min, lambda: buf._stream, lambda: buf.next_index,
             lambda: buf._restore_state(0, 0, 0, None, None, 1.0)]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    assert buf.task_sizes == [2, 0]


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("how", ["save", "pickle"])
def test_checkpoints_keep_every_task(tmp_path, prioritized, how):
    import pickle

    kw = {"task_weights": "task"} if prioritized else {}
    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    buf = cls(30, F, tasks=3, task_capacity=[5, 10, 15], seed=12, **kw)
    for t, n in enumerate((8, 3, 20)):  # task 0 wrapped, task 1 partly full, task 2 wrapped
        fill(buf, t, n)
    if prioritized:
        buf.update_priorities([0, 6, 20], [3.0, 0.5, 7.0])
    buf.sample(6, **({"beta": 0.4} if prioritized else {}), tasks="balanced")  # moves the streams
    if how == "save":
        buf.save(tmp_path / "ckpt")
        back = cls.load(tmp_path / "ckpt")
    else:
        back = pickle.loads(pickle.dumps(buf))
    assert back.tasks == 3 and back.task_capacity == [5, 10, 15] and back.task_sizes == buf.task_sizes
    assert back.total_added == buf.total_added and back.seed == buf.seed
    idx = np.concatenate([np.arange(5), 5 + np.arange(3), 15 + np.arange(15)])
    a, b = buf.get(idx), back.get(idx)
    for k in ("obs", "act", "task"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a.generations, b.generations)
    kwargs = {"beta": 0.4} if prioritized else {}
    for _ in range(3):  # the same batches from here on: every task's generator and the task split continue
        x, y = buf.sample(9, tasks="balanced", **kwargs), back.sample(9, tasks="balanced", **kwargs)
        np.testing.assert_array_equal(x.indices, y.indices)
        if prioritized:
            np.testing.assert_array_equal(x.weights, y.weights)
    if prioritized:
        assert back._task_weights == "task" and back.max_priority == buf.max_priority
    fill(back, 1, 2)
    assert back.task_sizes == [5, 5, 15]


def test_a_multi_task_checkpoint_with_bad_parts_is_refused(tmp_path):
    import json
    import zipfile

    buf = fr.ReplayBuffer(8, F, tasks=2, seed=13)
    fill(buf, 0, 2)
    buf.save(tmp_path / "ok")
    with zipfile.ZipFile(tmp_path / "ok") as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])

    def rewrite(change):
        m = json.loads(json.dumps(manifest))
        change(m)
        path = tmp_path / "bad"
        with zipfile.ZipFile(path, "w") as z:
            for n, d in members.items():
                z.writestr(n, json.dumps(m) if n == "manifest.json" else d)
        return path

    cases = [(lambda m: m["tasks"].update(quotas=[4, 5]), "add up to 9"),
             (lambda m: m["tasks"].update(quotas=[8]), "one part"),
             (lambda m: m["tasks"].update(quotas="x"), "tasks.quotas"),
             (lambda m: m["parts"][1].update(size=5), r"parts\[1\]\.size"),
             (lambda m: m["parts"][0].update(size=1), "tasks/0/fields/obs.npy"),
             (lambda m: m.pop("parts"), "parts")]
    for change, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fr.ReplayBuffer.load(rewrite(change))


@pytest.mark.parametrize("prioritized", [False, True])
def test_memmap_storage_keeps_each_task_in_its_own_directory(tmp_path, prioritized):
    import gc

    cls = fr.PrioritizedReplayBuffer if prioritized else fr.ReplayBuffer
    kwargs = {"beta": 0.4} if prioritized else {}
    path = tmp_path / "mm"
    buf = cls(20, F, tasks=2, task_capacity=[8, 12], storage="memmap", path=path, seed=14)
    fill(buf, 0, 11)
    fill(buf, 1, 5)
    if prioritized:
        buf.update_priorities([1, 9], [4.0, 2.0])
    buf.sample(6, tasks="balanced", **kwargs)
    buf.flush()
    with pytest.raises(RuntimeError, match="in use"):
        cls(20, F, tasks=2, task_capacity=[8, 12], storage="memmap", path=path)
    idx = np.concatenate([np.arange(8), 8 + np.arange(5)])
    before = buf.get(idx)
    nxt = buf.sample(6, tasks="balanced", **kwargs)
    sizes, added = buf.task_sizes, buf.total_added
    del buf
    gc.collect()
    assert sorted(p.name for p in path.iterdir()) == ["task-0", "task-1", "tasks.json"]
    again = cls(20, F, tasks=2, task_capacity=[8, 12], storage="memmap", path=path)
    assert again.task_sizes == sizes == [8, 5] and again.total_added == added and again.seed == 14
    after = again.get(idx)
    for k in ("obs", "act", "task"):
        np.testing.assert_array_equal(before[k], after[k])
    # sampling continues where the flush left it (the batch drawn after the flush is drawn again)
    np.testing.assert_array_equal(again.sample(6, tasks="balanced", **kwargs).indices, nxt.indices)
    if prioritized:
        assert again.max_priority == 4.0
    del again
    gc.collect()
    with pytest.raises(ValueError, match=r"quotas \[8, 12\]"):
        cls(20, F, tasks=2, storage="memmap", path=path)


def test_frame_stacks_work_per_task():
    fields = {"obs": ((2, 2), np.uint8), "next_obs": ((2, 2), np.uint8), "reward": ((), np.float32),
              "done": ((), bool)}
    buf = fr.ReplayBuffer(24, fields, tasks=2, num_envs=1, frame_stack=3, seed=15)
    single = fr.ReplayBuffer(12, fields, num_envs=1, frame_stack=3, seed=15)
    for step in range(9):
        row = dict(obs=np.full((1, 2, 2), step, np.uint8), next_obs=np.full((1, 2, 2), step + 1, np.uint8),
                   reward=np.ones(1, np.float32), done=np.array([step == 4]))
        buf.add(**row, task=0)
        single.add(**row)
        buf.add(**{k: np.zeros_like(v) for k, v in row.items()}, task=1)
    g, s = buf.get(np.arange(8)), single.get(np.arange(8))
    for k in ("obs", "next_obs"):
        assert g[k].shape == (8, 3, 2, 2)
        np.testing.assert_array_equal(g[k], s[k])
    assert (buf.get(np.arange(12, 20))["obs"] == 0).all()


@pytest.mark.parametrize("task, exc, msg", [(True, TypeError, "got bool"), (1.0, TypeError, "got dtype <f8"),
                                            ("1", TypeError, "got dtype <U1"), (np.array(1), ValueError, r"shape \(\)"),
                                            ([[0]], ValueError, r"shape \(1, 1\)"), (None, TypeError, "needs task=")])
def test_bad_task_values_are_refused_alike(task, exc, msg):
    for m in (fr, ref):
        buf = m.ReplayBuffer(4, {"x": ((), np.int64)}, tasks=2)
        with pytest.raises(exc, match=msg):
            buf.add(x=1, task=task)
        assert len(buf) == 0


@pytest.mark.parametrize("m", IMPLS)
def test_new_rows_get_their_own_tasks_max_priority(m):
    buf = m.PrioritizedReplayBuffer(8, F, tasks=2, seed=16)
    fill(buf, 0, 2)
    fill(buf, 1, 2)
    buf.update_priorities([0], [10.0])  # task 0's maximum only
    fill(buf, 0, 1)
    fill(buf, 1, 1)
    if m is fr:
        p0, p1 = buf._task_view(0)._priorities(), buf._task_view(1)._priorities()
    else:
        p0, p1 = buf._children[0].priorities, buf._children[1].priorities
    assert p0.tolist() == [10.0, 1.0, 10.0] and p1.tolist() == [1.0, 1.0, 1.0]
    assert buf.max_priority == 10.0
