"""fastreplay.sb3 against Stable-Baselines3's own buffers: same stored columns, same samples (dtypes, shapes,
devices and, for the same steps and envs, values), pickling through save/load_replay_buffer, optimize_memory_usage
with and without timeouts, prioritized replay, and SB3's algorithms training with the drop-in."""
import pickle

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")
th = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402
from stable_baselines3 import DQN, SAC, TD3  # noqa: E402
from stable_baselines3.common import buffers as sb3_buffers  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples  # noqa: E402

import fastreplay.sb3 as fs  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = th.get_num_threads()
    th.set_num_threads(1)  # tiny networks: threads only add contention on a shared CPU
    yield
    th.set_num_threads(n)


SPACES = {
    "box": (spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-2, 2, (2,), np.float32)),
    "image": (spaces.Box(0, 255, (4, 4, 2), np.uint8), spaces.Discrete(3)),
    "discrete": (spaces.Discrete(7), spaces.Discrete(3)),
    "multidiscrete": (spaces.MultiDiscrete([3, 4]), spaces.MultiDiscrete([2, 5])),
    "multibinary": (spaces.MultiBinary(4), spaces.MultiBinary(3)),
    "float64": (spaces.Box(-1, 1, (2,), np.float64), spaces.Box(-1, 1, (1,), np.float64)),
    "dict": (spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "id": spaces.Discrete(4)}), spaces.Discrete(2)),
}


def random_obs(space, n, rng):
    if isinstance(space, spaces.Dict):
        return {k: random_obs(s, n, rng) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, n)
    return np.stack([space.sample() for _ in range(n)])


def random_step(obs_space, act_space, n, rng, p_done=0.2):
    obs, next_obs = random_obs(obs_space, n, rng), random_obs(obs_space, n, rng)
    if isinstance(act_space, spaces.Discrete):
        action = rng.integers(0, act_space.n, n)
    else:
        action = np.stack([act_space.sample() for _ in range(n)])
    done = rng.random(n) < p_done
    infos = [{"TimeLimit.truncated": bool(d and rng.random() < 0.5)} for d in done]
    return obs, next_obs, action, rng.normal(size=n).astype(np.float32), done, infos


def assert_same_samples(a, b):
    assert type(a) is type(b) or isinstance(b, type(a))
    for x, y in zip(a, b):
        if x is None:
            assert y is None
        elif isinstance(x, dict):
            assert list(x) == list(y)
            for k in x:
                assert (x[k].dtype, x[k].shape, x[k].device) == (y[k].dtype, y[k].shape, y[k].device)
                th.testing.assert_close(x[k], y[k], rtol=0, atol=0)
        else:
            assert (x.dtype, x.shape, x.device) == (y.dtype, y.shape, y.device)
            th.testing.assert_close(x, y, rtol=0, atol=0)


def assert_same_columns(ours, theirs):
    steps = ours.size()
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        x, y = getattr(ours, name), getattr(theirs, name)
        if isinstance(x, dict):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k][:steps], err_msg=name)
        else:
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y[:steps], err_msg=name)


def fill_both(kind, n_envs, steps, buffer_size=24, handle_timeout_termination=True, seed=0):
    obs_space, act_space = SPACES[kind]
    dict_obs = isinstance(obs_space, spaces.Dict)
    theirs = (sb3_buffers.DictReplayBuffer if dict_obs else sb3_buffers.ReplayBuffer)(
        buffer_size, obs_space, act_space, "cpu", n_envs=n_envs, handle_timeout_termination=handle_timeout_termination)
    ours = (fs.DictReplayBuffer if dict_obs else fs.ReplayBuffer)(
        buffer_size, obs_space, act_space, "cpu", n_envs=n_envs, handle_timeout_termination=handle_timeout_termination)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        step = random_step(obs_space, act_space, n_envs, rng)
        theirs.add(*step)
        ours.add(*step)
    return ours, theirs


@pytest.mark.parametrize("kind", list(SPACES))
@pytest.mark.parametrize("n_envs", [1, 3])
def test_same_as_sb3_buffer(kind, n_envs):
    steps = 30  # wraps around the 24 // n_envs steps
    ours, theirs = fill_both(kind, n_envs, steps)
    assert isinstance(ours, type(theirs))
    assert (ours.pos, ours.full, ours.size(), ours.buffer_size) == (theirs.pos, theirs.full, theirs.size(),
                                                                     theirs.buffer_size)
    assert_same_columns(ours, theirs)
    for seed in range(3):  # the same steps and (seeded) envs give identical tensors
        inds = np.random.default_rng(seed).integers(0, theirs.size(), 16)
        np.random.seed(seed)
        b = theirs._get_samples(inds)
        np.random.seed(seed)
        assert_same_samples(b, ours._get_samples(inds))
    a, b = theirs.sample(9), ours.sample(9)  # random batches: compare types, dtypes, shapes, devices
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert {k: (v.dtype, v.shape) for k, v in x.items()} == {k: (v.dtype, v.shape) for k, v in y.items()}
        elif x is not None:
            assert (x.dtype, x.shape, x.device) == (y.dtype, y.shape, y.device)
    assert isinstance(b, DictReplayBufferSamples if kind == "dict" else ReplayBufferSamples)


@pytest.mark.parametrize("handle_timeout_termination", [True, False])
def test_vecnormalize_and_no_timeouts(handle_timeout_termination):
    from stable_baselines3.common.vec_env import VecNormalize

    ours, theirs = fill_both("box", 2, 20, handle_timeout_termination=handle_timeout_termination)
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1))
    env.obs_rms.mean, env.obs_rms.var = np.array([0.1, -0.2, 0.3]), np.array([2.0, 0.5, 1.5])
    env.ret_rms.var = np.array(4.0)
    inds = np.arange(ours.size())
    np.random.seed(5)
    b = theirs._get_samples(inds, env)
    np.random.seed(5)
    assert_same_samples(b, ours._get_samples(inds, env))
    assert ours.sample(4, env).observations.dtype == th.float32


def test_add_accepts_what_sb3_accepts():
    """SB3 assigns into its arrays, so (1, k) values for one env and array-valued infos go in; so they do here."""
    ours, theirs = fill_both("box", 1, 0)
    step = (np.ones(3, np.float32), np.ones((1, 3)), np.array([[0.5, -0.5]]), np.array([[1.5]]),
            np.array([[True]]), [{"TimeLimit.truncated": np.array([True])}])
    step2 = random_step(*SPACES["box"], 1, np.random.default_rng(0))
    for rb in (ours, theirs):
        rb.add(*step)
        rb.add(*step2)
    assert_same_columns(ours, theirs)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_add_fast_path_and_fallback_store_what_sb3_stores(n_envs):
    """add() hands values straight to the core when it takes them (the fast path) and otherwise goes SB3's way
    (reshapes, broadcasts, unsafe casts): both must store exactly what SB3 stores, and the fast path must be used
    for SB3's own dtypes."""
    obs_space, act_space = spaces.Box(-5, 5, (3,), np.float32), spaces.Discrete(4)
    ours = fs.ReplayBuffer(16, obs_space, act_space, "cpu", n_envs=n_envs)
    theirs = sb3_buffers.ReplayBuffer(16, obs_space, act_space, "cpu", n_envs=n_envs)
    n, rng = n_envs, np.random.default_rng(0)
    o = lambda dt=np.float32: rng.normal(size=(n, 3)).astype(dt)  # noqa: E731
    exact = (o(), o(), rng.integers(0, 4, n), rng.normal(size=n).astype(np.float32), rng.random(n) < 0.5,
             [{"TimeLimit.truncated": bool(rng.random() < 0.5)} for _ in range(n)])
    cases = [
        exact,
        (o(np.float64), o(np.float64), rng.integers(0, 4, n).astype(np.int32), rng.normal(size=n), rng.random(n) < .5,
         [{}] * n),                                                      # other dtypes of the same kind
        (o(), o(), rng.integers(0, 4, (n, 1)), [1.0] * n, [False] * n, [{}] * n),  # lists, (n, 1) actions
        (o()[:1], o()[:1], np.zeros(n, np.int64), np.ones(n, np.float32), np.zeros(n, bool), [{}] * n),  # broadcast
        (o(), o(), rng.uniform(0, 4, n), np.ones(n), np.zeros(n), [{}] * n),  # float actions: SB3's unsafe cast
    ]
    calls = []
    real = ours._core.add
    ours._core.add = lambda *a, **k: (calls.append((a, k)), real(*a, **k))[1]
    for case in cases:
        theirs.add(*case)
        ours.add(*case)
        assert_same_columns(ours, theirs)
    ours._core.add = real
    assert calls[0][0] and not calls[0][1]  # the exact case went through the fast path: one positional call


def test_attributes_are_views_and_writes_reach_samples():
    ours, theirs = fill_both("box", 2, 5)
    view = ours.observations
    assert view.shape == (5, 2, 3) and not view.flags.writeable
    assert np.shares_memory(view, ours._core.storage["obs"])
    for rb in (ours, theirs):
        rb.dones[4] = True  # SB3's _setup_learn does this with optimize_memory_usage
    assert (ours.dones[4] == 1).all()
    assert not ours.timeouts[4].any()  # so SB3's dones * (1 - timeouts) keeps the written 1 in both envs
    np.random.seed(0)
    s = ours._get_samples(np.array([4, 4, 4, 4]))
    assert (s.dones == 1).all()
    np.random.seed(0)
    assert_same_samples(theirs._get_samples(np.array([4, 4, 4, 4])), s)
    ours.add(*random_step(*SPACES["box"], 2, np.random.default_rng(1), p_done=0))
    assert (ours.dones[4] == 1).all()  # the overlay lasts until the slots are overwritten
    ours.reset()
    assert (ours.pos, ours.full, ours.size()) == (0, False, 0)


def assert_same_as_sb3_at_every_step(ours, theirs, seed=0):
    """pos, full, size, the stored columns and the samples of every sampleable step (seeded envs) agree."""
    assert (ours.pos, ours.full, ours.size()) == (theirs.pos, theirs.full, theirs.size())
    assert_same_columns(ours, theirs)
    if theirs.size():
        inds = np.arange(theirs.size())
        np.random.seed(seed)
        a = theirs._get_samples(inds)
        np.random.seed(seed)
        assert_same_samples(a, ours._get_samples(inds))


# SB3's own tests set full = True on an empty buffer and sample its zeros; users set pos and full after writing rows
OPS = [("full", True), ("add", 3), ("pos", 1), ("full", False), ("add", 2), ("pos", 0), ("full", True), ("pos", 5),
       ("add", 9), ("full", False), ("pos", 4), ("add", 1), ("reset", None), ("pos", 2), ("full", True), ("add", 1)]


@pytest.mark.parametrize("kind", ["box", "dict", "image"])
@pytest.mark.parametrize("n_envs", [1, 2])
def test_pos_and_full_assignment_as_sb3(kind, n_envs):
    ours, theirs = fill_both(kind, n_envs, 0, buffer_size=12)
    rng = np.random.default_rng(1)
    for k, (op, value) in enumerate(OPS):
        if op == "add":
            for _ in range(value):
                step = random_step(*SPACES[kind], n_envs, rng)
                theirs.add(*step)
                ours.add(*step)
        elif op == "reset":
            ours.reset()
            theirs.reset()
        else:
            setattr(ours, op, value)
            setattr(theirs, op, value)
        assert_same_as_sb3_at_every_step(ours, theirs, seed=k)
    ours.full = True
    theirs.full = True
    assert_same_as_sb3_at_every_step(pickle.loads(pickle.dumps(ours)), theirs, seed=99)  # the ring state is saved


def test_full_on_a_fresh_buffer_samples_zeros():
    """SB3's test_buffer_dtypes: full = True on an empty buffer of size 1, then sample 64 rows of zeros."""
    for cls, space in [(fs.ReplayBuffer, spaces.Box(0, 100, (1,), np.uint16)),
                       (fs.DictReplayBuffer, spaces.Dict({"a": spaces.Box(0, 100, (1,), np.int8)}))]:
        rb = cls(1, space, spaces.Discrete(10), "cpu")
        rb.full = True
        s = rb.sample(64)
        obs = s.observations["a"] if isinstance(s.observations, dict) else s.observations
        assert obs.shape == (64, 1) and not obs.any() and not s.rewards.any() and not s.dones.any()
        assert s.actions.dtype == th.int64


@pytest.mark.parametrize("bad", [-1, 6, 2.0, "1"])
def test_pos_assignment_checks_its_value(bad):
    rb = fs.ReplayBuffer(12, *SPACES["box"], "cpu", n_envs=2)
    with pytest.raises(TypeError if isinstance(bad, (float, str)) else ValueError, match="pos"):
        rb.pos = bad
    rb.pos = np.int64(3)
    assert (rb.pos, rb.full, rb.size()) == (3, False, 3)


def test_pos_and_full_assignment_prioritized():
    """Rows that stay stored keep their priorities; the new ones get the priority a new transition gets."""
    obs_space, act_space = SPACES["box"]
    rb = fs.PrioritizedReplayBuffer(8, obs_space, act_space, "cpu", alpha=1.0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rb.add(*random_step(obs_space, act_space, 1, rng))
    rb.update_priorities(np.array([0, 1, 2]), np.array([5.0, 1.0, 2.0]))
    rb.full = True
    assert (rb.pos, rb.full, rb.size()) == (3, True, 8)
    np.testing.assert_array_equal(rb._core.priorities, [5.0, 1.0, 2.0] + [5.0] * 5)
    s = rb.sample(64)
    assert set(s.indices.tolist()) <= set(range(8)) and len(set(s.indices.tolist())) > 3
    rb.update_priorities(s.indices, np.ones(64), s.generations)  # the batch's generations are current
    rb.full = False
    assert rb.size() == 3
    np.testing.assert_array_equal(rb._core.priorities, [1.0, 1.0, 1.0])


def stored_next_obs(rb, idx):
    """The next observations that sample gives rows idx of a buffer with optimize_memory_usage (as _to_samples)."""
    batch = rb._get(idx)
    if rb._resets:
        rb._patch_resets(batch)
    return batch["next_obs"]


@pytest.mark.parametrize("n_envs", [1, 2])
def test_pos_and_full_assignment_optimize_memory(n_envs):
    """With optimize_memory_usage, the next observation of a row is what SB3 reads: the stored observation one step
    later (zeros where nothing was written), and the true one at episode ends."""
    obs_space, act_space = spaces.Box(-5, 5, (3,), np.float32), spaces.Discrete(2)
    ours = fs.ReplayBuffer(10 * n_envs, obs_space, act_space, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                           handle_timeout_termination=False, seed=0)
    steps = list(optimized_stream(n_envs, 14, 3, truncation=False))
    for step in steps[:4]:
        ours.add(*step)
    ours.full = True  # steps 4..9 are zeros
    nxt = stored_next_obs(ours, np.arange(ours._capacity)).reshape(10, n_envs, 3)
    obs = np.zeros((10, n_envs, 3), np.float32)
    for k, step in enumerate(steps[:4]):
        obs[k] = step[0]
    for k in range(10):
        for e in range(n_envs):
            done = k < 4 and steps[k][4][e]
            want = steps[k][1][e] if done or k == 3 else obs[(k + 1) % 10, e]
            np.testing.assert_array_equal(nxt[k, e], want)
    for step in steps[4:]:  # then adds as usual, overwriting the oldest steps, with reset rows still right
        ours.add(*step)
    plain = fs.ReplayBuffer(10 * n_envs, obs_space, act_space, "cpu", n_envs=n_envs, handle_timeout_termination=False)
    for step in steps:
        plain.add(*step)
    idx = np.arange(4 * n_envs, ours._capacity)  # the steps written after the assignment and step 3 (pending)
    got = stored_next_obs(ours, idx)
    want = plain._core.get(idx)["next_obs"]
    np.testing.assert_array_equal(got, want)
    ours.pos = 2
    ours.full = False
    assert (ours.pos, ours.full, ours.size()) == (2, False, 2)
    ours.sample(16)


def optimized_stream(n_envs, steps, seed, truncation=True):
    """Steps of n_envs envs with episode ends (terminated or truncated) and one reset without done."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n_envs, 3)).astype(np.float32)
    t = np.zeros(n_envs, int)
    for k in range(steps):
        nxt = rng.normal(size=(n_envs, 3)).astype(np.float32)
        t += 1
        terminated = rng.random(n_envs) < 0.1
        truncated = (t >= 6) & ~terminated if truncation else np.zeros(n_envs, bool)
        if k == steps // 2:
            terminated[0] = truncated[0] = False
        done = terminated | truncated
        infos = [{"TimeLimit.truncated": bool(x)} for x in truncated]
        yield obs, nxt, rng.integers(0, 2, n_envs), rng.normal(size=n_envs), done, infos
        obs = nxt.copy()
        reset = rng.normal(size=(n_envs, 3)).astype(np.float32)
        obs[done] = reset[done]
        t[done] = 0
        if k == steps // 2:  # a reset that the buffer hears nothing about (like a new learn() call)
            obs[0] = rng.normal(size=3)
            t[0] = 0


@pytest.mark.parametrize("handle_timeout_termination", [True, False])
@pytest.mark.parametrize("n_envs", [1, 2])
@pytest.mark.parametrize("prioritized", [False, True])
def test_optimize_memory_usage_gives_plain_samples(handle_timeout_termination, n_envs, prioritized):
    obs_space, act_space = spaces.Box(-5, 5, (3,), np.float32), spaces.Discrete(2)
    cls = fs.PrioritizedReplayBuffer if prioritized else fs.ReplayBuffer
    kw = dict(n_envs=n_envs, handle_timeout_termination=handle_timeout_termination)
    plain = cls(40, obs_space, act_space, "cpu", **kw)
    opt = cls(40, obs_space, act_space, "cpu", optimize_memory_usage=True, **kw)
    assert "next_obs" not in opt._core.storage and not hasattr(opt, "next_observations")  # the core dedups
    steps, broken = 57, False
    for i, step in enumerate(optimized_stream(n_envs, steps, seed=n_envs)):
        plain.add(*step)
        opt.add(*step)
        broken |= bool(opt._resets)  # the reset without done was noticed
        if i in (3, 19, 56):
            assert (opt.pos, opt.full) == (plain.pos, plain.full)
            for seed in range(2):
                inds = np.arange(opt.size())
                np.random.seed(seed)
                a = plain._get_samples(inds)
                np.random.seed(seed)
                assert_same_samples(a, opt._get_samples(inds))
    assert broken
    # Pickling keeps the rows reset without done and the pending next observations.
    import pickle

    again = pickle.loads(pickle.dumps(opt))
    np.random.seed(1)
    a = opt._get_samples(np.arange(opt.size()))
    np.random.seed(1)
    assert_same_samples(a, again._get_samples(np.arange(opt.size())))


def test_optimize_memory_usage_matches_sb3_without_episode_ends():
    """Where SB3's memory-optimized buffer is right (no episode ends), it agrees with ours."""
    obs_space, act_space = spaces.Box(-5, 5, (2,), np.float32), spaces.Discrete(2)
    theirs = sb3_buffers.ReplayBuffer(10, obs_space, act_space, "cpu", optimize_memory_usage=True,
                                      handle_timeout_termination=False)
    ours = fs.ReplayBuffer(10, obs_space, act_space, "cpu", optimize_memory_usage=True,
                           handle_timeout_termination=False)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, 2)).astype(np.float32)
    for _ in range(14):
        nxt = rng.normal(size=(1, 2)).astype(np.float32)
        step = (obs, nxt, rng.integers(0, 2, 1), rng.normal(size=1), np.zeros(1, bool), [{}])
        theirs.add(*step)
        ours.add(*step)
        obs = nxt
    inds = np.array([(theirs.pos + k) % 10 for k in range(1, 10)])  # SB3 never samples step `pos` when full
    np.random.seed(0)
    a = theirs._get_samples(inds)
    np.random.seed(0)
    assert_same_samples(a, ours._get_samples(inds))


def test_prioritized_samples_and_updates():
    obs_space, act_space = SPACES["box"]
    rb = fs.PrioritizedReplayBuffer(64, obs_space, act_space, "cpu", alpha=1.0, beta=0.5)
    rng = np.random.default_rng(0)
    for _ in range(32):
        rb.add(*random_step(obs_space, act_space, 1, rng))
    s = rb.sample(16)
    assert isinstance(s, ReplayBufferSamples) and len(s) == 6
    assert s.weights.shape == (16, 1) and s.weights.dtype == th.float32
    assert s.indices.dtype == np.int64 and s.indices.shape == (16,)
    s2 = s._replace(rewards=s.rewards * 2)
    assert s2.indices is s.indices
    pri = np.full(32, 1e-3)
    pri[7] = 100.0
    rb.update_priorities(np.arange(32), pri)
    hits = np.concatenate([rb.sample(64).indices for _ in range(5)])
    assert (hits == 7).mean() > 0.9
    w = rb.sample(64, beta=1.0).weights  # max-normalised over all stored rows: the rare row 7 weighs least
    assert 0 < float(w.min()) and float(w.max()) <= 1.0 + 1e-6
    import pickle

    again = pickle.loads(pickle.dumps(rb))
    np.testing.assert_array_equal(again.sample(8).indices, rb.sample(8).indices)  # the sampler continues exactly
    np.testing.assert_allclose(again._core.priorities, rb._core.priorities)
    assert again._core.max_priority == rb._core.max_priority
    assert again.alpha == 1.0 and again.beta == 0.5


def test_save_and_load_replay_buffer(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = DQN("MlpPolicy", env, replay_buffer_class=fs.ReplayBuffer, buffer_size=300, learning_starts=50,
                policy_kwargs=dict(net_arch=[16]), seed=0)
    model.learn(400)
    old = model.replay_buffer
    assert old.full and old.size() == 150
    model.save_replay_buffer(tmp_path / "rb.pkl")
    model.replay_buffer = None
    model.load_replay_buffer(tmp_path / "rb.pkl")
    new = model.replay_buffer
    assert isinstance(new, fs.ReplayBuffer) and new is not old
    assert (new.pos, new.full, new.size(), new.n_envs, new.device) == (old.pos, old.full, old.size(), 2, old.device)
    assert_same_columns(new, old)
    infos = [[{"TimeLimit.truncated": bool(t)} for t in row] for row in old.timeouts]
    new.extend(old.observations, old.next_observations, old.actions, old.rewards, old.dones, infos)
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):  # one full turn of the ring, from pos
        np.testing.assert_array_equal(getattr(new, name), np.roll(getattr(old, name), old.pos, axis=0))
    model.learn(100, reset_num_timesteps=False)  # keeps training on the loaded buffer
    assert new.pos == (model.num_timesteps // 2) % 150 != old.pos


class _SB3Draws(fs.ReplayBuffer):
    """The drop-in with SB3's own index draw (``np.random.randint`` in ``BaseBuffer.sample``) in place of the
    core's sampler, so that a seeded run consumes ``np.random`` exactly as one with SB3's buffer does."""

    def sample(self, batch_size, env=None):
        return sb3_buffers.BaseBuffer.sample(self, batch_size, env)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_dqn_trains_on_cartpole(n_envs):
    """DQN trains on the drop-in exactly as on SB3's buffer: with the same index draws, every batch handed to
    train() is the same, so the final networks are equal, weight for weight. Then with the drop-in's own sampler."""
    def train(buffer_class, **buffer_kwargs):
        env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
        model = DQN("MlpPolicy", env, replay_buffer_class=buffer_class, replay_buffer_kwargs=buffer_kwargs,
                    buffer_size=2000, learning_starts=200, train_freq=4, policy_kwargs=dict(net_arch=[32]), seed=0)
        model.learn(2000)
        return model

    theirs = train(sb3_buffers.ReplayBuffer)
    ours = train(_SB3Draws, seed=0)  # an explicit seed: drawing one would consume np.random
    assert ours.replay_buffer.size() == theirs.replay_buffer.size() == 2000 // n_envs
    assert_same_columns(ours.replay_buffer, theirs.replay_buffer)
    assert ours._n_updates == theirs._n_updates > 0
    mine, sb3s = ours.policy.state_dict(), theirs.policy.state_dict()
    assert mine.keys() == sb3s.keys()
    for k in sb3s:
        assert th.equal(mine[k], sb3s[k]), k
    own = train(fs.ReplayBuffer)  # the core's sampler: other batches, so other weights, but trained all the same
    assert own._n_updates == theirs._n_updates
    initial = DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=n_envs, seed=0), policy_kwargs=dict(net_arch=[32]),
                  seed=0).policy.state_dict()
    changed = {k for k, v in own.policy.state_dict().items() if not th.equal(v, initial[k])}
    assert any(k.startswith("q_net.") for k in changed), changed


def test_dqn_optimize_memory_usage_learns_twice():
    """SB3 writes dones[pos] = True before a second learn(); with timeouts handled too (SB3 refuses this)."""
    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=fs.ReplayBuffer, optimize_memory_usage=True,
                replay_buffer_kwargs={"handle_timeout_termination": True}, buffer_size=500, learning_starts=100,
                policy_kwargs=dict(net_arch=[16]), seed=0)
    model.learn(400)
    rb = model.replay_buffer
    last = rb.pos - 1
    assert rb.dones[last, 0] == 0  # the last step did not end its episode ...
    true_next = rb._pend_arrays()[0][0].copy()
    with pytest.warns(UserWarning, match="truncated"):
        model.learn(200)
    assert rb.dones[last, 0] == 1  # ... SB3's write reached the core's storage
    np.random.seed(0)
    s = rb._get_samples(np.array([last]))
    assert s.dones[0, 0] == 1
    # the env was reset without done: the row's next observation is the one given with it, not the reset one
    np.testing.assert_array_equal(s.next_observations[0].numpy(), true_next)
    assert not np.array_equal(rb.observations[last + 1, 0], true_next)


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_sac_td3_train_on_pendulum(algo):
    model = algo("MlpPolicy", "Pendulum-v1", replay_buffer_class=fs.ReplayBuffer, buffer_size=1000,
                 learning_starts=100, policy_kwargs=dict(net_arch=[32]), seed=0)
    model.learn(250)
    assert model.replay_buffer.size() == 250 and model._n_updates > 0


def test_perdqn_trains_and_anneals_beta():
    model = fs.PERDQN("MlpPolicy", "CartPole-v1", buffer_size=1000, learning_starts=100, beta0=0.4,
                      policy_kwargs=dict(net_arch=[16]), seed=0)
    assert isinstance(model.replay_buffer, fs.PrioritizedReplayBuffer)
    model.learn(1000)
    assert model.beta == pytest.approx(1.0)
    pri = model.replay_buffer._core.priorities
    assert len(np.unique(pri)) > 10  # priorities were written back from TD errors
    with pytest.raises(TypeError, match="PrioritizedReplayBuffer"):
        fs.PERDQN("MlpPolicy", "CartPole-v1", replay_buffer_class=fs.ReplayBuffer)



def _pickled_globals(obj, protocol):
    """The (module, name) of every class or function a pickle of obj refers to."""
    import io
    import pickle

    found = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(pickle.dumps(obj, protocol=protocol))).load()
    return found


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickles_name_fastreplay_sb3(protocol):
    """fastreplay.sb3 is a package of private modules; pickles (SB3's save_replay_buffer pickles the whole buffer)
    name its classes fastreplay.sb3.<name>, as when it was one module, so pickles from before and after load alike."""
    obs_space, act_space = SPACES["box"]
    dict_obs, dict_act = SPACES["dict"]
    rng = np.random.default_rng(0)
    plain = fs.ReplayBuffer(20, obs_space, act_space, "cpu", optimize_memory_usage=True)
    per = fs.PrioritizedReplayBuffer(20, obs_space, act_space, "cpu")
    per_dict = fs.PrioritizedReplayBuffer(20, dict_obs, dict_act, "cpu")
    dict_rb = fs.DictReplayBuffer(20, dict_obs, dict_act, "cpu")
    for rb in (plain, per, per_dict, dict_rb):
        for _ in range(4):
            rb.add(*random_step(rb.observation_space, rb.action_space, 1, rng))
    expected = [
        (plain, {"ReplayBuffer"}),
        (dict_rb, {"DictReplayBuffer"}),
        (per, {"PrioritizedReplayBuffer"}),
        (per.sample(2), {"PrioritizedReplayBufferSamples", "_rebuild_samples"}),
        (per_dict.sample(2), {"PrioritizedDictReplayBufferSamples", "_rebuild_samples"}),
        (fs.PERDQN, {"PERDQN"}),
    ]
    for obj, names in expected:
        ours = {(m, n) for m, n in _pickled_globals(obj, protocol) if m.startswith("fastreplay.sb3")}
        assert ours == {("fastreplay.sb3", n) for n in names}, type(obj)
    for name in fs.__all__:
        assert getattr(fs, name).__module__ == "fastreplay.sb3"

@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_samples_on_cuda():
    obs_space, act_space = SPACES["dict"]
    theirs = sb3_buffers.DictReplayBuffer(20, obs_space, act_space, "cuda")
    ours = fs.DictReplayBuffer(20, obs_space, act_space, "cuda")
    rng = np.random.default_rng(0)
    for _ in range(10):
        step = random_step(obs_space, act_space, 1, rng)
        theirs.add(*step)
        ours.add(*step)
    np.random.seed(0)
    a = theirs._get_samples(np.arange(10))
    np.random.seed(0)
    assert_same_samples(a, ours._get_samples(np.arange(10)))
    per = fs.PrioritizedReplayBuffer(20, *SPACES["box"], "cuda")
    per.add(*random_step(*SPACES["box"], 1, rng))
    assert per.sample(4).weights.device.type == "cuda"


def nstep_pair(n_envs, n_steps, gamma, handle_timeout_termination=True, buffer_size=24):
    obs_space, act_space = SPACES["box"]
    kw = dict(n_envs=n_envs, handle_timeout_termination=handle_timeout_termination, n_steps=n_steps, gamma=gamma)
    return (fs.NStepReplayBuffer(buffer_size, obs_space, act_space, "cpu", **kw),
            sb3_buffers.NStepReplayBuffer(buffer_size, obs_space, act_space, "cpu", **kw))


def assert_same_nstep_samples(a, b):
    """Rewards and discounts to float32 rounding (SB3 sums in float32, the core in float64); the rest exactly."""
    assert type(a) is type(b)
    for name in a._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape, x.device) == (y.dtype, y.shape, y.device), name
        if name in ("rewards", "discounts"):
            th.testing.assert_close(x, y, rtol=1e-6, atol=1e-6, msg=name)
        else:
            th.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def assert_same_nstep(ours, theirs, env=None, seed=0):
    assert (ours.pos, ours.full, ours.size(), ours.n_steps, ours.gamma) == (
        theirs.pos, theirs.full, theirs.size(), theirs.n_steps, theirs.gamma)
    steps = ours.size()
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name)[:steps], err_msg=name)
    inds = np.arange(steps)
    np.random.seed(seed)
    a = theirs._get_samples(inds, env)
    np.random.seed(seed)
    assert_same_nstep_samples(ours._get_samples(inds, env), a)


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("n_steps", [1, 3, 5])
@pytest.mark.parametrize("handle_timeout_termination", [True, False])
def test_nstep_same_as_sb3(n_envs, n_steps, handle_timeout_termination):
    """Terminations, truncations, the newest step and wrapping around: the same n-step samples as SB3's."""
    ours, theirs = nstep_pair(n_envs, n_steps, 0.9, handle_timeout_termination)
    assert isinstance(ours, sb3_buffers.NStepReplayBuffer)
    rng = np.random.default_rng(n_envs * 10 + n_steps)
    for k in range(40):  # 24 // n_envs steps: wraps
        step = random_step(*SPACES["box"], n_envs, rng, p_done=0.15)
        ours.add(*step)
        theirs.add(*step)
        if k in (2, 7, 19, 39):
            assert_same_nstep(ours, theirs, seed=k)
    s = ours.sample(16)
    assert s.discounts.shape == (16, 1) and s.rewards.shape == (16, 1)


def test_nstep_column_writes_reach_the_core():
    """SB3's own test sets dones[pos - 1] = True and expects a terminal window; rewards and timeouts likewise."""
    ours, theirs = nstep_pair(2, 4, 0.95)
    rng = np.random.default_rng(3)
    for _ in range(15):
        step = random_step(*SPACES["box"], 2, rng, p_done=0.1)
        ours.add(*step)
        theirs.add(*step)
    for rb in (ours, theirs):
        rb.dones[rb.pos - 1, :] = True
        rb.rewards[3] = 7.0
        rb.timeouts[5, 0] = 1.0
        rb.dones[8, 1] = 0.0
        rb.observations[0] = rb.observations[0] + 1
    assert_same_nstep(ours, theirs, seed=1)
    with pytest.raises(ValueError, match="handle_timeout_termination"):
        nstep_pair(1, 3, 0.9, handle_timeout_termination=False)[0].timeouts[0] = 1


def test_nstep_vecnormalize_settings_and_pickle():
    from stable_baselines3.common.vec_env import VecNormalize

    ours, theirs = nstep_pair(1, 3, 0.99, buffer_size=12)
    rng = np.random.default_rng(4)
    for _ in range(20):
        step = random_step(*SPACES["box"], 1, rng, p_done=0.2)
        step = step[:3] + (step[3] * 30,) + step[4:]  # large rewards: VecNormalize clips some of them
        ours.add(*step)
        theirs.add(*step)
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1), clip_reward=2.0)
    env.obs_rms.mean, env.obs_rms.var = np.array([0.1, -0.2, 0.3]), np.array([2.0, 0.5, 1.5])
    env.ret_rms.var = np.array(100.0)
    assert_same_nstep(ours, theirs, env=env, seed=2)
    for rb in (ours, theirs):
        rb.n_steps, rb.gamma = 5, 0.5
    assert_same_nstep(ours, theirs, seed=3)
    again = pickle.loads(pickle.dumps(ours))
    assert_same_nstep(again, theirs, seed=4)
    with pytest.raises(NotImplementedError, match="optimize_memory_usage"):
        fs.NStepReplayBuffer(10, *SPACES["box"], optimize_memory_usage=True)
    with pytest.raises(TypeError, match="Dict"):
        fs.NStepReplayBuffer(10, *SPACES["dict"])


@pytest.mark.parametrize("algo", [DQN, SAC])
def test_nstep_algorithms_train(algo):
    env_id = "CartPole-v1" if algo is DQN else "Pendulum-v1"
    model = algo("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), replay_buffer_class=fs.NStepReplayBuffer,
                 replay_buffer_kwargs={"n_steps": 3, "gamma": 0.98}, gamma=0.98, buffer_size=1000,
                 learning_starts=50, train_freq=4, policy_kwargs=dict(net_arch=[16]), seed=0)
    model.learn(200)
    assert type(model.replay_buffer) is fs.NStepReplayBuffer and model._n_updates > 0
    assert model.replay_buffer.sample(8).discounts is not None


@pytest.mark.parametrize("n_envs", [1, 2])
def test_nstep_pos_and_full_assignment_as_sb3(n_envs):
    """The episodic core's episode starts follow an assigned pos/full: windows stay SB3's."""
    ours, theirs = nstep_pair(n_envs, 3, 0.9, buffer_size=12)
    rng = np.random.default_rng(n_envs)
    for k, (op, value) in enumerate(OPS):
        if op == "add":
            for _ in range(value):
                step = random_step(*SPACES["box"], n_envs, rng, p_done=0.2)
                ours.add(*step)
                theirs.add(*step)
        elif op == "reset":
            ours.reset()
            theirs.reset()
        else:
            setattr(ours, op, value)
            setattr(theirs, op, value)
        if theirs.size():
            assert_same_nstep(ours, theirs, seed=k)


# ------------------------------------------------------------------------------------------------ HerReplayBuffer
from stable_baselines3 import HerReplayBuffer as SB3Her  # noqa: E402
from stable_baselines3.common.envs import BitFlippingEnv  # noqa: E402


def her_pair(n_envs, buffer_size, max_steps=None, **kw):
    venv = make_vec_env(lambda: BitFlippingEnv(n_bits=4, continuous=True, max_steps=max_steps), n_envs)
    return venv, [cls(buffer_size, venv.observation_space, venv.action_space, venv, n_envs=n_envs, **kw)
                  for cls in (fs.HerReplayBuffer, SB3Her)]


def her_step(venv, bufs, obs, rng):
    a = rng.random((venv.num_envs, 4)).astype(np.float32)
    nobs, r, d, infos = venv.step(a)
    for b in bufs:
        b.add(obs, nobs, a, r, d, infos)
    return nobs


def assert_same_her_state(ours, theirs):
    for name in ("ep_start", "ep_length", "_current_ep_start"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    assert (ours.pos, ours.full) == (theirs.pos, theirs.full)
    for key in theirs.observations:
        np.testing.assert_array_equal(ours.observations[key], theirs.observations[key])
        np.testing.assert_array_equal(ours.next_observations[key], theirs.next_observations[key])
    for name in ("actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    np.testing.assert_array_equal(ours._run_mask(), theirs.ep_length > 0)  # the runs sample() draws from


def assert_same_her_samples(ours, theirs, batch_size, seed):
    got = []
    for b in (ours, theirs):
        np.random.seed(seed)
        s = b.sample(batch_size)
        got.append((s, np.random.randint(2**31)))  # and np.random consumed alike
    (a, ra), (b, rb) = got
    assert ra == rb
    for k in b.observations:
        assert a.observations[k].dtype == b.observations[k].dtype
        assert th.equal(a.observations[k], b.observations[k]), k
        assert th.equal(a.next_observations[k], b.next_observations[k]), k
    for f in ("actions", "dones", "rewards"):
        assert getattr(a, f).dtype == getattr(b, f).dtype and th.equal(getattr(a, f), getattr(b, f)), f


@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
@pytest.mark.parametrize("n_envs", [1, 2, 4])
@pytest.mark.parametrize("max_steps", [None, 13, 30])  # 4-step episodes, and episodes that wrap or outlive the ring
def test_her_same_as_sb3(strategy, n_envs, max_steps):
    """Lockstep adds: same episode bookkeeping and columns, and under the same numpy seed the same sampled
    transitions, relabelled goals and recomputed rewards, through several laps of the ring."""
    venv, (ours, theirs) = her_pair(n_envs, 48, max_steps, goal_selection_strategy=strategy,
                                    handle_timeout_termination=max_steps != 30)
    rng = np.random.default_rng(n_envs)
    venv.seed(7)
    obs = venv.reset()
    for t in range(150):
        obs = her_step(venv, (ours, theirs), obs, rng)
        assert_same_her_state(ours, theirs)
        if (theirs.ep_length > 0).any():
            assert_same_her_samples(ours, theirs, 37, seed=t)
        else:
            with pytest.raises(RuntimeError, match="Unable to sample before the end of the first episode"):
                ours.sample(8)


def test_her_copy_info_dict_and_scan_fallback():
    venv, (ours, theirs) = her_pair(3, 60, 9, copy_info_dict=True, n_sampled_goal=2)
    rng = np.random.default_rng(0)
    obs = venv.reset()
    for _ in range(50):
        obs = her_step(venv, (ours, theirs), obs, rng)
    for i in range(ours.buffer_size):
        for j in range(3):
            assert ours.infos[i, j] == theirs.infos[i, j]
    assert_same_her_samples(ours, theirs, 64, seed=1)
    ours._runs_ok = False  # SB3's scan, as after outside writes to ep_length that break the runs
    assert_same_her_samples(ours, theirs, 64, seed=2)
    ours._recount_episodes()
    assert ours._runs_ok
    assert_same_her_samples(ours, theirs, 64, seed=3)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_her_pickle_truncate_and_reset(n_envs):
    venv, (ours, theirs) = her_pair(n_envs, 40, 6)
    rng = np.random.default_rng(1)
    obs = venv.reset()
    for _ in range(23):
        obs = her_step(venv, (ours, theirs), obs, rng)
    ours, theirs = (pickle.loads(pickle.dumps(b)) for b in (ours, theirs))  # drops env, as SB3's does
    assert ours.env is None and isinstance(ours, SB3Her) and isinstance(ours, fs.HerReplayBuffer)
    for b in (ours, theirs):
        b.set_env(venv)
        with pytest.warns(UserWarning, match="The last trajectory in the replay buffer will be truncated"):
            b.truncate_last_trajectory()
    assert_same_her_state(ours, theirs)
    assert_same_her_samples(ours, theirs, 50, seed=0)
    for _ in range(30):  # the overlay written by truncate_last_trajectory is overwritten in time
        obs = her_step(venv, (ours, theirs), obs, rng)
        assert_same_her_state(ours, theirs)
    assert_same_her_samples(ours, theirs, 50, seed=1)
    ours.reset()  # unlike SB3's reset (pos only), ours also forgets the episodes
    assert ours.pos == 0 and not ours.ep_length.any()
    with pytest.raises(RuntimeError, match="Unable to sample"):
        ours.sample(4)


@pytest.mark.parametrize("algo", [DQN, SAC])
def test_her_algorithms_train(algo):
    venv = make_vec_env(lambda: BitFlippingEnv(n_bits=4, continuous=algo is not DQN), 2)
    model = algo("MultiInputPolicy", venv, replay_buffer_class=fs.HerReplayBuffer, learning_starts=40,
                 buffer_size=400, train_freq=4, policy_kwargs=dict(net_arch=[16]), seed=0,
                 replay_buffer_kwargs=dict(goal_selection_strategy="future", n_sampled_goal=4))
    assert isinstance(model.replay_buffer, fs.HerReplayBuffer)
    model.learn(200)
    assert model.replay_buffer.size() > 0


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("obs_dtype", [None, np.float64])  # the space's dtypes (one core call), or SB3's casts
def test_her_add_stores_what_sb3_stores(n_envs, obs_dtype):
    space = spaces.Dict({"observation": spaces.Discrete(5), "achieved_goal": spaces.Box(-1, 1, (2,), np.float32),
                         "desired_goal": spaces.Box(-1, 1, (2,), np.float32)})
    bufs = [cls(60, space, spaces.Box(-1, 1, (2,), np.float32), None, n_envs=n_envs)
            for cls in (fs.HerReplayBuffer, SB3Her)]
    rng = np.random.default_rng(0)

    def obs():
        o = {"observation": rng.integers(0, 5, n_envs), "achieved_goal": rng.random((n_envs, 2)),
             "desired_goal": rng.random((n_envs, 2))}
        return {k: v.astype(obs_dtype or space[k].dtype) for k, v in o.items()}

    for _ in range(45):
        o, no, a, d = obs(), obs(), rng.random((n_envs, 2)), rng.random(n_envs) < 0.2
        for b in bufs:
            b.add(o, no, a, rng.random(n_envs).astype(np.float32) * 0, d, [{}] * n_envs)
    assert_same_her_state(*bufs)
