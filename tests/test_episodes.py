"""The compiled episode index against the reference (docs/episodes.md): random episodes in many lanes, both
autoreset modes, wrap-around, n-step 1..5, both paddings, dedup and store, Dict observations, uniform and
prioritized; persistence; errors; concurrent writers and samplers."""
from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastreplay as fr
from fastreplay import reference as ref


def _fields(dict_obs: bool, stacked: int) -> dict:
    frame = (3, 2)
    shape = ((stacked,) + frame) if stacked else frame
    f = {}
    if dict_obs:
        f["obs.img"] = (shape, np.uint8)
        f["obs.pos"] = (shape, np.float32)
    else:
        f["obs"] = (shape, np.uint8)
    f["action"] = ((), np.int64)
    f["reward"] = ((), np.float32)
    for k in list(f):
        if k.startswith("obs"):
            f["next_" + k] = f[k]
    f["done"] = ((), np.bool_)
    f["truncated"] = ((), np.bool_)
    return f


def _adds(rng, lanes, n_adds, fields, stacked):
    """Random adds with random terminations and truncations; every frame value is unique."""
    out = []
    counter = 1
    for _ in range(n_adds):
        a = {}
        for name, (shape, dt) in fields.items():
            if name.startswith(("obs", "next_obs")):
                v = (np.arange(lanes * int(np.prod(shape))).reshape((lanes,) + shape) + counter) % 251
                a[name] = v.astype(dt)
            elif name == "reward":
                a[name] = rng.normal(size=lanes).astype(np.float32)
            elif name == "action":
                a[name] = rng.integers(0, 5, size=lanes)
        counter += 7
        a["done"] = rng.random(lanes) < 0.12
        a["truncated"] = (rng.random(lanes) < 0.08) & ~a["done"]
        out.append(a)
    return out


def _nest(a):
    """Dict observations as the env returns them: obs={...}."""
    b = dict(a)
    for group in ("obs", "next_obs"):
        keys = [k for k in a if k.startswith(group + ".")]
        if keys:
            b[group] = {k[len(group) + 1:]: b.pop(k) for k in keys}
    return b


def _assert_batches_equal(x, y, where):
    assert list(x) == list(y), where
    for k in x:
        if k in ("reward", "discount"):
            np.testing.assert_allclose(x[k], y[k], rtol=1e-6, atol=1e-6, err_msg=f"{where}: {k}")
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{where}: {k}")


CASES = st.fixed_dictionaries({
    "lanes": st.sampled_from([1, 2, 3, 8]),
    "laps": st.integers(1, 30),
    "n_step": st.integers(1, 5),
    "frame_stack": st.sampled_from([1, 2, 4]),
    "stacked": st.booleans(),
    "padding": st.sampled_from(["reset", "zero"]),
    "dedup": st.booleans(),
    "autoreset": st.sampled_from(["same_step", "next_step"]),
    "dict_obs": st.booleans(),
    "prioritized": st.booleans(),
    "seed": st.integers(0, 2**31),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=CASES)
def test_compiled_matches_reference(case):
    lanes, s = case["lanes"], case["frame_stack"]
    stacked = case["stacked"] and s > 1
    fields = _fields(case["dict_obs"], s if stacked else 0)
    capacity = lanes * 6
    opts = dict(num_envs=lanes, frame_stack=s, stacked_input=stacked, stack_padding=case["padding"],
                next_obs="dedup" if (case["dedup"] or s > 1) else "store", n_step=case["n_step"], gamma=0.9,
                autoreset=case["autoreset"])
    if case["prioritized"]:
        a = fr.PrioritizedReplayBuffer(capacity, fields, seed=case["seed"], **opts)
        b = ref.PrioritizedReplayBuffer(capacity, fields, seed=case["seed"], **opts)
    else:
        a = fr.ReplayBuffer(capacity, fields, seed=case["seed"], **opts)
        b = ref.ReplayBuffer(capacity, fields, seed=case["seed"], **opts)
    rng = np.random.default_rng(case["seed"])
    adds = _adds(rng, lanes, case["laps"], fields, stacked)
    for i, add in enumerate(adds):
        x = _nest(add) if case["dict_obs"] and i % 2 else add
        a.add(**x)
        b.add(**x)
        if i % 4 == 3 or i == len(adds) - 1:
            _compare(a, b, case, rng)
    a.n_step = b.n_step = 1 + (case["n_step"] % 5)
    _compare(a, b, case, rng)


def _compare(a, b, case, rng):
    np.testing.assert_array_equal(a.generations(np.arange(a.capacity)), b.generations(np.arange(b.capacity)))
    for k, v in b.storage.items():
        np.testing.assert_array_equal(a.storage[k], v, err_msg=k)
    ok = b._sampleable()
    compiled_ok = []
    for s in range(len(a)):
        try:
            a.get([s])
            compiled_ok.append(s)
        except ValueError as e:
            assert "holds no sampleable step" in str(e)
    assert compiled_ok == ok
    if not ok:
        with pytest.raises(ValueError, match="no stored step can be sampled yet"):
            a.sample(4)
        return
    _assert_batches_equal(a.get(ok), b.get(ok), "get")
    if case["prioritized"]:
        pr = rng.random(len(ok)) * 3
        a.update_priorities(ok, pr)
        b.update_priorities(ok, pr)
        np.testing.assert_allclose(a._leaves(), b._leaves(), rtol=1e-12)
        batch = a.sample(64, beta=0.5)
        leaves = b._leaves()
        np.testing.assert_allclose(batch.weights, (leaves[leaves > 0].min() / leaves[batch.indices]) ** 0.5,
                                   rtol=1e-5)
    else:
        batch = a.sample(64)
    assert set(batch.indices.tolist()) <= set(ok)
    expect = b.get(batch.indices)
    got = {k: v for k, v in batch.items()}
    _assert_batches_equal(got, dict(expect), "sample")


def _filled(cls=fr.ReplayBuffer, n_adds=40, **kw):
    opts = dict(num_envs=4, frame_stack=3, n_step=3, gamma=0.5)
    opts.update(kw)
    fields = _fields(False, 0)
    buf = cls(24, fields, seed=3, **opts)
    for add in _adds(np.random.default_rng(1), 4, n_adds, fields, False):
        buf.add(**add)
    return buf


def test_uniform_among_sampleable_steps():
    buf = _filled(n_adds=200)
    ok = ref.ReplayBuffer  # the compiled buffer's own sampleable set, by get
    ok = [s for s in range(len(buf)) if _gets(buf, s)]
    counts = np.bincount(buf.sample(200_000).indices, minlength=len(buf))
    assert counts[[s for s in range(len(buf)) if s not in ok]].sum() == 0
    from scipy.stats import chisquare
    assert chisquare(counts[ok]).pvalue > 1e-3


def _gets(buf, s):
    try:
        buf.get([s])
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_persistence_keeps_the_episode_index(tmp_path, cls):
    buf = _filled(cls, autoreset="next_step")
    twins = [pickle.loads(pickle.dumps(buf))]
    buf.save(tmp_path / "b.zip")
    twins.append(cls.load(tmp_path / "b.zip"))
    for t in twins:
        assert t.episode_config == buf.episode_config
        s0 = buf._stream
        x = buf.sample(100)
        buf._stream = s0
        _assert_batches_equal(dict(x), dict(t.sample(100)), "reloaded")
    # the lanes continue where they were: one more add gives the same rows everywhere
    more = _adds(np.random.default_rng(9), 4, 3, _fields(False, 0), False)
    for b in [buf] + twins:
        for add in more:
            b.add(**add)
    ok = [s for s in range(len(buf)) if _gets(buf, s)]
    for t in twins:
        _assert_batches_equal(dict(buf.get(ok)), dict(t.get(ok)), "continued")


def test_memmap_reopens_the_episode_index(tmp_path):
    fields = _fields(False, 0)
    opts = dict(num_envs=4, frame_stack=2, n_step=2)
    adds = _adds(np.random.default_rng(2), 4, 30, fields, False)
    a = fr.ReplayBuffer(24, fields, seed=1, storage="memmap", path=tmp_path, **opts)
    plain = fr.ReplayBuffer(24, fields, seed=1, **opts)
    for add in adds[:20]:
        a.add(**add)
        plain.add(**add)
    a.flush()
    del a
    with pytest.raises(ValueError, match="episode options"):
        fr.ReplayBuffer(24, fields, seed=1, storage="memmap", path=tmp_path, num_envs=4, frame_stack=3)
    a = fr.ReplayBuffer(24, fields, seed=1, storage="memmap", path=tmp_path, **opts)
    for add in adds[20:]:
        a.add(**add)
        plain.add(**add)
    ok = [s for s in range(len(a)) if _gets(plain, s)]
    _assert_batches_equal(dict(a.get(ok)), dict(plain.get(ok)), "memmap")


def test_checkpoint_with_impossible_starts_is_rejected(tmp_path):
    import zipfile
    buf = _filled()
    buf.save(tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    start = np.load(__import__("io").BytesIO(members["episodes/start.npy"]))
    start[5] = start[5] + 1  # not a whole number of lanes back
    bio = __import__("io").BytesIO()
    np.save(bio, start)
    members["episodes/start.npy"] = bio.getvalue()
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ValueError, match="impossible episode start"):
        fr.ReplayBuffer.load(tmp_path / "c.zip")


@pytest.mark.parametrize("impl", [fr, ref], ids=["core", "reference"])
@pytest.mark.parametrize("kw, err, match", [
    (dict(num_envs=5), ValueError, "capacity must be a multiple of num_envs"),
    (dict(num_envs=0), ValueError, "num_envs must be >= 1"),
    (dict(n_step=0), ValueError, "n_step must be >= 1"),
    (dict(gamma=1.5), ValueError, r"gamma must be in \[0, 1\]"),
    (dict(gamma="x"), TypeError, "gamma must be a real number"),
    (dict(frame_stack=0), ValueError, "frame_stack must be >= 1"),
    (dict(next_obs="both"), ValueError, "next_obs must be"),
    (dict(stack_padding="edge"), ValueError, "stack_padding must be"),
    (dict(autoreset="never"), ValueError, "autoreset must be"),
    (dict(frame_stack=4, next_obs="store"), ValueError, "next_obs must be 'dedup'"),
    (dict(frame_stack=4, stacked_input=True), ValueError, r"rows of shape \(4, \*frame\)"),
])
def test_bad_options_are_clear_errors(impl, kw, err, match):
    with pytest.raises(err, match=match):
        impl.ReplayBuffer(24, _fields(False, 0), **kw)


@pytest.mark.parametrize("impl", [fr, ref], ids=["core", "reference"])
def test_frame_stack_on_vectors_and_bad_fields(impl):
    vec = {"obs": ((4,), np.float32), "next_obs": ((4,), np.float32), "reward": np.float32, "done": bool}
    with pytest.raises(ValueError, match="at least 2 dims"):
        impl.ReplayBuffer(8, vec, frame_stack=4)
    with pytest.raises(ValueError, match="field 'done' must be a scalar bool"):
        impl.ReplayBuffer(8, dict(vec, done=np.float32), num_envs=2)
    with pytest.raises(ValueError, match="field 'reward' must be a scalar float32 or float64"):
        impl.ReplayBuffer(8, dict(vec, reward=np.int64), num_envs=2)
    with pytest.raises(ValueError, match="needs a 'next_obs' field"):
        impl.ReplayBuffer(8, {k: v for k, v in vec.items() if k != "next_obs"}, num_envs=2)


@pytest.mark.parametrize("impl", [fr, ref], ids=["core", "reference"])
def test_wrong_row_count_changes_nothing(impl):
    fields = _fields(False, 0)
    buf = impl.ReplayBuffer(24, fields, num_envs=4, frame_stack=2, seed=0)
    adds = _adds(np.random.default_rng(0), 4, 3, fields, False)
    buf.add(**adds[0])
    before = {k: v.copy() for k, v in buf.storage.items()}
    bad = {k: v[:3] for k, v in adds[1].items()}
    with pytest.raises(ValueError, match=r"num_envs=4 takes exactly 4 rows per add \(one per lane\), got 3"):
        buf.add(**bad)
    assert len(buf) == 4
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="only an episodic buffer has n_step"):
        impl.ReplayBuffer(8, fields).n_step = 3
    assert impl.ReplayBuffer(8, fields).n_step is None


def test_plain_buffer_is_unchanged():
    """No episode option: no discount, every slot sampleable, the fields as given."""
    fields = _fields(False, 0)
    buf = fr.ReplayBuffer(8, fields, seed=0)
    for add in _adds(np.random.default_rng(0), 1, 3, fields, False):
        buf.add(**{k: v[0] for k, v in add.items()})
    assert buf.episode_config is None and "discount" not in buf.sample(4)
    assert set(buf.storage) == set(fields)


def test_prefetch_gives_episodic_batches():
    buf = _filled()
    ok = set(s for s in range(len(buf)) if _gets(buf, s))
    with buf.prefetch(16, depth=2, threads=2) as p:
        for _ in range(20):
            b = next(p)
            assert "discount" in b and b["obs"].shape == (16, 3, 3, 2)
            assert set(b.indices.tolist()) <= ok
            _assert_batches_equal(dict(b), dict(buf.get(b.indices)), "prefetch")


@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_concurrent_add_and_sample_never_mix_steps(cls):
    """A writer adds 4 lanes of frames that encode (lane, step) while samplers sample: every sampled stack,
    next stack and n-step reward is consistent with one lane's own history (no torn rows, no crossing)."""
    lanes, cap = 4, 64
    f = {"obs": ((2, 2), np.int64), "next_obs": ((2, 2), np.int64), "reward": np.float64, "done": bool,
         "truncated": bool}
    buf = cls(cap, f, seed=0, num_envs=lanes, frame_stack=3, n_step=3, gamma=0.5)
    stop = threading.Event()
    errors = []

    def frame(lane, step):
        return np.full((2, 2), lane * 10**6 + step, np.int64)

    def writer():
        step = 0
        while not stop.is_set() and step < 20000:
            # episodes of 7 steps in every lane: step % 7 == 6 terminates; the step number is in the frame
            obs = np.stack([frame(k, step) for k in range(lanes)])
            nxt = np.stack([frame(k, step + 1) for k in range(lanes)])
            done = np.full(lanes, step % 7 == 6)
            buf.add(obs=obs, next_obs=nxt, reward=np.full(lanes, float(step)), done=done,
                    truncated=np.zeros(lanes, bool))
            step += 1

    def sampler():
        try:
            while not stop.is_set():
                if len(buf) < cap:
                    continue
                b = buf.sample(32) if cls is fr.ReplayBuffer else buf.sample(32, beta=0.4)
                for i in range(32):
                    o = b["obs"][i, :, 0, 0]
                    lane, step = divmod(int(o[-1]), 10**6)
                    first = step - step % 7
                    want = [lane * 10**6 + max(first, step - 2 + q) for q in range(3)]
                    assert o.tolist() == want, (o, want)
                    m = min(3, 7 - step % 7)
                    r = b["reward"][i]
                    assert r <= sum(0.5**j * (step + j) for j in range(m)) + 1e-9
                    nx = int(b["next_obs"][i, -1, 0, 0]) % 10**6
                    steps_taken = nx - step
                    assert 1 <= steps_taken <= m
                    assert abs(r - sum(0.5**j * (step + j) for j in range(steps_taken))) < 1e-9
                    assert b["done"][i] == (nx - first == 7)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=sampler) for _ in range(2)]
    for t in threads:
        t.start()
    threads[0].join()
    stop.set()
    for t in threads[1:]:
        t.join()
    assert not errors, errors[0]


@pytest.mark.skipif(os.environ.get("FASTREPLAY_SKIP_ENV") == "1", reason="gymnasium not wanted")
def test_from_env_vector_env_is_episodic():
    gym = pytest.importorskip("gymnasium")
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3)
    buf = fr.ReplayBuffer.from_env(envs, 30, n_step=2)
    cfg = buf.episode_config
    assert cfg.num_envs == 3 and cfg.autoreset == "next_step" and cfg.n_step == 2
    assert "truncated" in buf.fields and buf.fields["truncated"] == ((), np.dtype(bool))


def test_huge_n_step_is_bounded_and_absurd_ones_rejected():
    buf = _filled()
    buf.n_step = 2**31 - 1  # the window stops at the lane's stored steps: nothing is sized by n
    b = buf.sample(8)
    assert b["obs"].shape[0] == 8
    for bad in (2**31, 2**70):
        with pytest.raises(ValueError, match="n_step must be at most 2\\*\\*31 - 1"):
            buf.n_step = bad
    assert buf.n_step == 2**31 - 1


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["episodes"].update(num_envs=5), "episode options are invalid"),
    (lambda m: m["episodes"].update(frame_stack="x"), "episode options are invalid"),
    (lambda m: m.pop("episodes"), "no field 'episodes'"),
])
def test_checkpoint_with_bad_episode_options_is_rejected(tmp_path, edit, match):
    import io
    import json
    import zipfile
    buf = _filled()
    buf.save(tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ValueError, match=match):
        fr.ReplayBuffer.load(tmp_path / "c.zip")
    # and a finals member of the wrong length
    members["manifest.json"] = json.dumps(json.loads(z_read(tmp_path / "b.zip", "manifest.json"))).encode()
    finals = np.load(io.BytesIO(members["episodes/finals/obs.npy"]))
    bio = io.BytesIO()
    np.save(bio, finals[:-1] if len(finals) else np.zeros((1,) + finals.shape[1:], finals.dtype))
    members["episodes/finals/obs.npy"] = bio.getvalue()
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ValueError):
        fr.ReplayBuffer.load(tmp_path / "d.zip")


def z_read(path, name):
    import zipfile
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def test_memmap_crash_mid_add_keeps_lanes_aligned(tmp_path):
    """A crash that published only part of an add: reopening rounds the cursor up to a whole add, the rows that
    never arrived become non-steps, and the lanes go on."""
    fields = _fields(False, 0)
    adds = _adds(np.random.default_rng(4), 4, 5, fields, False)
    a = fr.ReplayBuffer(24, fields, seed=1, storage="memmap", path=tmp_path, num_envs=4, n_step=2)
    for add in adds[:3]:
        a.add(**add)
    a.flush()
    del a
    seq = np.memmap(tmp_path / "seq.bin", dtype=np.uint64, mode="r+")
    assert seq[11] == 2
    seq[10] = seq[11] = 0  # the last add's lanes 2 and 3 were never published
    seq.flush()
    del seq
    with pytest.warns(RuntimeWarning, match="2 row"):
        b = fr.ReplayBuffer(24, fields, seed=1, storage="memmap", path=tmp_path, num_envs=4, n_step=2)
    assert len(b) == 12
    for s in (10, 11):
        with pytest.raises(ValueError, match="holds no sampleable step"):
            b.get([s])
    b.add(**adds[3])  # every lane takes its next row; lanes 2 and 3 start new episodes
    b.add(**adds[4])
    assert len(b) == 20
    got = b.get([14, 15])
    np.testing.assert_array_equal(got["obs"], adds[3]["obs"][2:4])
    assert b.generations([14]).tolist() == [1]
    ok = [s for s in range(len(b)) if _gets(b, s)]
    assert 14 in ok and 15 in ok and 10 not in ok and 11 not in ok
