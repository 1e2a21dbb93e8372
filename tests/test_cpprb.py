"""fastreplay.cpprb against the installed cpprb: the same inputs must give the same stored transitions, samples of
the same shapes and dtypes, the same Nstep and next_of outputs (except two cpprb Nstep bugs, checked explicitly),
and files that each library can read from the other."""
import numpy as np
import pytest

cpprb = pytest.importorskip("cpprb")
fc = pytest.importorskip("fastreplay.cpprb")

ENV = {"obs": {"shape": 2}, "act": {"dtype": np.int64}, "rew": {}, "next_obs": {"shape": 2}, "done": {}}
NEXT_OF = {"obs": {"shape": 2}, "act": {"dtype": np.int64}, "rew": {}, "done": {}}


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (k, a[k].dtype, b[k].dtype, a[k].shape, b[k].shape)
        if exact:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6, err_msg=k)


def episodes(seed: int, steps: int, max_rows: int = 3, p_end: float = 0.15):
    """(add kwargs, episode ended) for a stream of episodes whose next_obs is the next row's obs."""
    rng = np.random.default_rng(seed)
    o = rng.normal(size=2)
    for _ in range(steps):
        n = int(rng.integers(1, max_rows + 1))
        obs = np.vstack([o] + [rng.normal(size=2) for _ in range(n)])
        done = np.zeros(n)
        ended = rng.random() < p_end
        done[-1] = float(ended and rng.random() < 0.7)  # some episodes end by time limit: no done
        yield dict(obs=obs[:-1], act=rng.integers(0, 3, n), rew=rng.random(n), next_obs=obs[1:], done=done), ended
        o = rng.normal(size=2) if ended else obs[-1]


@pytest.mark.parametrize("next_of", [None, "obs"])
@pytest.mark.parametrize("prioritized", [False, True])
def test_same_transitions_as_cpprb(next_of, prioritized):
    env = NEXT_OF if next_of else ENV
    ours = fc.create_buffer(16, env, next_of=next_of, prioritized=prioritized)
    theirs = cpprb.create_buffer(16, env, next_of=next_of, prioritized=prioritized)
    for kwargs, ended in episodes(0, 60):
        assert ours.add(**kwargs) == theirs.add(**kwargs)
        if ended:
            ours.on_episode_end()
            theirs.on_episode_end()
        assert ours.get_stored_size() == theirs.get_stored_size()
        assert ours.get_next_index() == theirs.get_next_index()
        assert ours.get_current_episode_len() == theirs.get_current_episode_len()
        assert_same(ours.get_all_transitions(), theirs.get_all_transitions())
    assert ours.get_buffer_size() == theirs.get_buffer_size() == 16
    ours.clear()
    theirs.clear()
    assert ours.get_stored_size() == theirs.get_stored_size() == 0
    assert ours.get_next_index() == theirs.get_next_index() == 0


@pytest.mark.parametrize("prioritized", [False, True])
def test_sample_shapes_and_dtypes(prioritized):
    env = {"obs": {"shape": (3, 2)}, "act": {"dtype": np.int32}, "rew": {}, "flag": {"dtype": np.bool_},
           "next_obs": {"shape": (3, 2)}, "done": {}}
    ours = fc.create_buffer(32, env, prioritized=prioritized, default_dtype=np.float64)
    theirs = cpprb.create_buffer(32, env, prioritized=prioritized, default_dtype=np.float64)
    rows = dict(obs=np.ones((5, 3, 2)), act=np.arange(5), rew=np.arange(5.0), flag=[1, 0, 1, 0, 1],
                next_obs=np.zeros((5, 3, 2)), done=np.zeros(5))
    ours.add(**rows)
    theirs.add(**rows)
    a, b = ours.sample(7), theirs.sample(7)
    assert list(a) == list(b)
    for k in a:
        assert (a[k].shape, a[k].dtype) == (b[k].shape, b[k].dtype), k
    if prioritized:
        assert a["weights"].dtype == np.float32 and a["indexes"].dtype == np.uint64


def test_add_casts_and_reshapes_like_cpprb():
    env = {"a": {"dtype": np.int32}, "b": {"dtype": np.bool_}, "c": {"shape": (2, 2)}, "d": {}}
    ours, theirs = fc.ReplayBuffer(8, env), cpprb.ReplayBuffer(8, env)
    for kw in (dict(a=2.7, b=2, c=np.arange(4), d=1),  # flat value reshaped to (2, 2); float cast to int
               dict(a=[1, 2], b=[0, 1], c=np.ones((2, 2, 2)), d=[3, 4]),  # two rows
               dict(a=5, b=True, c=np.ones(12), d=[1, 2, 3])):  # rows counted on the last entry; others broadcast
        assert ours.add(**kw) == theirs.add(**kw)
        assert_same(ours.get_all_transitions(), theirs.get_all_transitions())
    with pytest.raises(KeyError):
        ours.add(a=1, b=True, c=np.ones(4))
    ours.add(a=1, b=True, c=np.ones(4), d=0, unknown=5)  # extra values are ignored, as in cpprb


def test_next_of_needs_next_value():
    ours = fc.ReplayBuffer(4, NEXT_OF, next_of="obs")
    with pytest.raises(KeyError):
        ours.add(obs=[1, 2], act=0, rew=0, done=0)


def test_prioritized_weights_and_priorities_match_cpprb():
    env = {"x": {}}
    ours = fc.PrioritizedReplayBuffer(8, env, alpha=0.7, eps=1e-3)
    theirs = cpprb.PrioritizedReplayBuffer(8, env, alpha=0.7, eps=1e-3)
    for rb in (ours, theirs):
        rb.add(x=np.arange(6.0))
        rb.update_priorities([0, 1, 2, 3, 4, 5], [0.5, 2.0, 0.1, 3.0, 1.0, 0.0])
        rb.add(x=[6.0, 7.0], priorities=[0.3, 4.0])
    assert ours.get_max_priority() == pytest.approx(theirs.get_max_priority())
    # The weight of a row depends only on the priorities: compare row by row.
    w_ours, w_theirs = {}, {}
    for _ in range(50):
        for rb, w in ((ours, w_ours), (theirs, w_theirs)):
            s = rb.sample(16, beta=0.5)
            for i, x in zip(s["indexes"].tolist(), s["weights"].tolist()):
                w[i] = x
    common = sorted(set(w_ours) & set(w_theirs))
    assert len(common) >= 6
    np.testing.assert_allclose([w_ours[i] for i in common], [w_theirs[i] for i in common], rtol=1e-5)
    ours.clear()
    assert ours.get_max_priority() == 1.0


def test_check_for_update_skips_overwritten_slots():
    env = {"x": {}}
    for flag in (False, True):
        ours = fc.PrioritizedReplayBuffer(4, env, check_for_update=flag)
        theirs = cpprb.PrioritizedReplayBuffer(4, env, check_for_update=flag)
        for rb in (ours, theirs):
            rb.add(x=[1.0, 2.0, 3.0])
            rb.update_priorities([0], [9.0])  # before any sample: skipped when checking (slot written)
            rb.sample(2)
            rb.add(x=4.0)  # writes slot 3
            rb.update_priorities([1, 3], [5.0, 7.0])
        assert ours.get_max_priority() == theirs.get_max_priority() == (9.0 if not flag else 5.0)


def nstep_stream(seed: int, n_episodes: int):
    rng = np.random.default_rng(seed)
    t = 0
    for ep in range(n_episodes):
        length = int(rng.integers(1, 9))
        terminal = ep % 2 == 0
        for s in range(length):
            yield dict(obs=[t, t], act=int(rng.integers(0, 3)), rew=float(rng.random()), next_obs=[t + 1, t + 1],
                       done=float(terminal and s == length - 1)), s == length - 1
            t += 1


def nstep_reference(rows, n, gamma):
    """n-step transitions of one episode: rew_t = sum_j gamma^j r_{t+j} up to the episode's end; done by cpprb's
    documented rule (its test_issue.py TestIssue137): set when one of the window's first n - 1 steps ends it."""
    T = len(rows)
    out = []
    for t in range(T):
        last = min(t + n, T) - 1
        rew = sum(gamma ** (j - t) * rows[j]["rew"] for j in range(t, last + 1))
        done = sum(rows[j]["done"] for j in range(t, min(t + n - 1, T)))
        out.append((rows[t]["obs"][0], rew, rows[last]["next_obs"][0], done, last == T - 1 and t + n - 1 > last,
                    last == t + n - 1 and bool(rows[last]["done"])))
    return out


@pytest.mark.parametrize("prioritized", [False, True])
def test_nstep_matches_cpprb_and_fixes_its_flush_bug(prioritized):
    n, gamma = 3, 0.9
    nstep = {"size": n, "gamma": gamma, "rew": "rew", "next": "next_obs"}
    ours = fc.create_buffer(128, ENV, Nstep=nstep, prioritized=prioritized)
    theirs = cpprb.create_buffer(128, ENV, Nstep=nstep, prioritized=prioritized)
    expected, episode = [], []
    for kwargs, end in nstep_stream(1, 10):
        assert ours.add(**kwargs) == theirs.add(**kwargs)
        episode.append(kwargs)
        if end:
            ours.on_episode_end()
            theirs.on_episode_end()
            expected += nstep_reference(episode, n, gamma)
            episode = []
    a, b = ours.get_all_transitions(), theirs.get_all_transitions()
    assert ours.is_Nstep() and ours.get_stored_size() == theirs.get_stored_size() == len(expected)
    obs, rew, nxt, done, flushed, ends_on_terminal = (np.array(x) for x in zip(*expected))
    np.testing.assert_array_equal(a["obs"][:, 0], obs)
    np.testing.assert_allclose(a["rew"][:, 0], rew, rtol=1e-6)
    np.testing.assert_array_equal(a["next_obs"][:, 0], nxt)
    np.testing.assert_array_equal(a["done"][:, 0], done)
    # cpprb agrees on everything except next_obs of the transitions that on_episode_end flushes, which it leaves
    # at its local buffer's fill value.
    for k in ("obs", "act", "done"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(a["rew"], b["rew"], rtol=1e-6)
    np.testing.assert_array_equal(a["next_obs"][~flushed], b["next_obs"][~flushed])
    assert flushed.any() and not np.array_equal(a["next_obs"][flushed], b["next_obs"][flushed])
    # cpprb's done rule is exercised: windows whose n-th step is terminal exist, and have done = 0
    assert ends_on_terminal.any() and (a["done"][ends_on_terminal, 0] == 0).all()
    if prioritized:
        assert ours.sample(8)["weights"].shape == theirs.sample(8)["weights"].shape == (8,)


@pytest.mark.parametrize("next_of, safe", [(None, True), ("obs", True), ("obs", False)])
@pytest.mark.parametrize("writer", ["cpprb", "fastreplay"])
def test_save_load_interop(tmp_path, next_of, safe, writer):
    env = NEXT_OF if next_of else ENV
    make = {"cpprb": cpprb.ReplayBuffer, "fastreplay": fc.ReplayBuffer}
    src = make[writer](16, env, next_of=next_of)
    for kwargs, ended in episodes(2, 25):
        src.add(**kwargs)
        if ended:
            src.on_episode_end()
    src.save_transitions(str(tmp_path / "rb"), safe=safe)  # numpy adds .npz
    reader = "fastreplay" if writer == "cpprb" else "cpprb"
    dst, ref = make[reader](16, env, next_of=next_of), make[writer](16, env, next_of=next_of)
    # cpprb's format pickles the transitions: fastreplay unpickles only when asked by name (D18)
    pickle_ok = {"cpprb": {}, "fastreplay": {"allow_pickle": True}}
    dst.load_transitions(str(tmp_path / "rb.npz"), **pickle_ok[reader])
    ref.load_transitions(str(tmp_path / "rb.npz"), **pickle_ok[writer])
    assert_same(dst.get_all_transitions(), ref.get_all_transitions())
    assert dst.get_stored_size() == src.get_stored_size()


def test_load_rejects_nstep_mismatch(tmp_path):
    rb = fc.ReplayBuffer(8, ENV, Nstep={"size": 2, "rew": "rew", "next": "next_obs"})
    rb.save_transitions(tmp_path / "n.npz")
    with pytest.raises(ValueError, match="Nstep"):
        fc.ReplayBuffer(8, ENV).load_transitions(tmp_path / "n.npz")


def test_env_dict_and_before_add_func_match_cpprb():
    gym = pytest.importorskip("gymnasium")
    from cpprb.util import create_before_add_func, create_env_dict

    spaces = gym.spaces
    for obs_space, act_space in (
        (spaces.Box(-1, 1, (4,)), spaces.Discrete(2)),
        (spaces.Discrete(5), spaces.MultiDiscrete([2, 3])),
        (spaces.Dict({"a": spaces.Box(0, 1, (2,)), "b": spaces.MultiBinary(3)}), spaces.Box(-1, 1, (2,))),
        (spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (1,)))), spaces.Tuple((spaces.Discrete(2),))),
    ):
        env = type("Env", (), {"observation_space": obs_space, "action_space": act_space})()
        assert fc.create_env_dict(env) == create_env_dict(env)
        assert fc.create_env_dict(env, int_type=np.int64, float_type=np.float64) == create_env_dict(
            env, int_type=np.int64, float_type=np.float64)
        o, a = obs_space.sample(), act_space.sample()
        ours, theirs = fc.create_before_add_func(env)(o, a, o, 1.0, 0.0), create_before_add_func(env)(o, a, o, 1.0, 0.0)
        assert list(ours) == list(theirs)


def test_reserved_field_names_work():
    rb = fc.PrioritizedReplayBuffer(4, {"indices": {}, "generations": {"dtype": np.int64}})
    rb.add(indices=1.5, generations=3)
    s = rb.sample(2)
    assert s["indices"].shape == (2, 1) and s["generations"].dtype == np.int64 and "indexes" in s


def test_cpprb_program_runs_after_changing_the_import():
    """A cpprb-style PER loop (add, sample, update_priorities, on_episode_end) with only the import changed."""
    gym = pytest.importorskip("gymnasium")
    from fastreplay.cpprb import PrioritizedReplayBuffer, create_before_add_func, create_env_dict

    env = gym.make("CartPole-v1")
    rb = PrioritizedReplayBuffer(256, create_env_dict(env), Nstep={"size": 3, "rew": "rew", "next": "next_obs"})
    before_add = create_before_add_func(env)
    obs, _ = env.reset(seed=0)
    for step in range(300):
        act = env.action_space.sample()
        next_obs, rew, term, trunc, _ = env.step(act)
        rb.add(**before_add(obs=obs, act=act, next_obs=next_obs, rew=rew, done=term))
        obs = next_obs
        if term or trunc:
            rb.on_episode_end()
            obs, _ = env.reset()
        if rb.get_stored_size() >= 32:
            s = rb.sample(32, beta=0.5)
            rb.update_priorities(s["indexes"], np.abs(s["rew"][:, 0]) + 0.1)
    assert rb.get_stored_size() > 250


def test_mmap_prefix_maps_to_files(tmp_path):
    ours = fc.ReplayBuffer(64, ENV, mmap_prefix=str(tmp_path / "ours"))
    theirs = cpprb.ReplayBuffer(64, ENV, mmap_prefix=str(tmp_path / "theirs"))
    for kwargs, _ in episodes(3, 10):
        ours.add(**kwargs)
        theirs.add(**kwargs)
    assert_same(ours.get_all_transitions(), theirs.get_all_transitions())
    assert (tmp_path / "ours_fastreplay").is_dir()
    # cpprb's file names, with cpprb's raw rows: <prefix>_<name>.dat holds (size, *shape) values of the stored dtype
    # (rows not yet written differ: cpprb fills them with ones)
    n = ours.get_stored_size()
    for name, defs in ENV.items():
        shape = (64,) + tuple(np.atleast_1d(defs.get("shape", 1)))
        dtype = defs.get("dtype", np.float32)
        a = np.fromfile(tmp_path / f"ours_{name}.dat", dtype=dtype).reshape(shape)
        b = np.fromfile(tmp_path / f"theirs_{name}.dat", dtype=dtype).reshape(shape)
        np.testing.assert_array_equal(a[:n], b[:n], err_msg=name)
    ours.add(obs=[9, 9], act=1, rew=2, next_obs=[8, 8], done=0)  # writes show through the file at once
    k = (ours.get_next_index() - 1) % 64
    assert np.fromfile(tmp_path / "ours_obs.dat", dtype=np.float32).reshape(64, 2)[k].tolist() == [9, 9]
    again = fc.ReplayBuffer(64, ENV, mmap_prefix=str(tmp_path / "ours"))  # recreated empty, as cpprb's files are
    assert again.get_stored_size() == 0
    assert not np.fromfile(tmp_path / "ours_obs.dat", dtype=np.float32).any()  # the new buffer's (empty) file


@pytest.mark.parametrize("cls", ["ReplayBuffer", "PrioritizedReplayBuffer"])
def test_pickle_names_the_package_path(cls):
    """fastreplay.cpprb is a package of private modules; pickles still name fastreplay.cpprb.<Name>, as they did when
    it was one file, so pickles load across that split in both directions."""
    import io
    import pickle

    rb = getattr(fc, cls)(16, NEXT_OF, next_of="obs")
    for kwargs, ended in episodes(5, 8):
        rb.add(**kwargs)
        if ended:
            rb.on_episode_end()
    data = pickle.dumps(rb)

    found = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.append((module, name))
            return super().find_class(module, name)

    again = Recorder(io.BytesIO(data)).load()
    assert ("fastreplay.cpprb", cls) in found
    assert not [m for m, _ in found if m.startswith("fastreplay.cpprb.")], found
    assert type(again) is getattr(fc, cls)
    assert again.get_next_index() == rb.get_next_index()
    assert again.get_current_episode_len() == rb.get_current_episode_len()
    assert_same(again.get_all_transitions(), rb.get_all_transitions())


def test_public_names_report_the_package():
    assert sorted(fc.__all__) == sorted(n for n in dir(fc) if not n.startswith("_"))
    for name in fc.__all__:
        assert getattr(fc, name).__module__ == "fastreplay.cpprb", name


# --- LaBER, ReverseReplayBuffer, train: against cpprb's -------------------------------------------------------------


@pytest.mark.parametrize("name", ["LaBERmean", "LaBERlazy", "LaBERmax"])
@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.5])
def test_laber_matches_cpprb(name, eps):
    ours, theirs = getattr(fc, name)(8, 3, eps=eps), getattr(cpprb, name)(8, 3, eps=eps)
    assert (ours.batch_size, ours.eps) == (theirs.batch_size, theirs.eps)
    np.testing.assert_array_equal(ours.idx, theirs.idx)
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = rng.random(24) * (rng.random(24) < 0.7)
        p[0] = 1.0
        obs = rng.normal(size=(24, 2))
        ours.rng, theirs.rng = np.random.default_rng(7), np.random.default_rng(7)
        a, b = ours(priorities=p, obs=obs), theirs(priorities=p, obs=obs)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, err_msg=k)
    for bad in [dict(batch_size=0), dict(batch_size=4, m=0), dict(batch_size=4, eps=-1.0)]:
        with pytest.raises(ValueError):
            getattr(fc, name)(**bad)
    with pytest.raises(ValueError):
        ours(priorities=[1.0] * 23)


@pytest.mark.parametrize("size, stride, adds", [(20, 5, [20]), (20, 2, [20]), (20, 5, [1]), (10, 3, [7]),
                                                (10, 4, [7, 6, 1]), (8, 20, [8, 3]), (16, 1, [5, 14, 9])])
@pytest.mark.parametrize("batch", [1, 3])
def test_reverse_replay_buffer_matches_cpprb(size, stride, adds, batch):
    ours = fc.ReverseReplayBuffer(size, {"obs": {}}, stride=stride)
    theirs = cpprb.ReverseReplayBuffer(size, {"obs": {}}, stride=stride)
    start = 0
    for n in adds:
        for rb in (ours, theirs):
            rb.add(obs=np.arange(start, start + n))
        start += n
        for _ in range(2 * stride + 3):
            assert_same(ours.sample(batch), theirs.sample(batch))
    ours.clear()
    with pytest.raises(ValueError, match="empty"):
        ours.sample(1)
    with pytest.raises(ValueError, match="stride"):
        fc.ReverseReplayBuffer(4, {"obs": {}}, stride=0)


class _CountingEnv:
    """Old-gym env (4-tuple step) with a deterministic episode length, recording nothing itself."""

    def __init__(self, length=4):
        self.t, self.length = 0, length

    def reset(self):
        self.t = 0
        return np.zeros(3)

    def step(self, action):
        self.t += 1
        return np.full(3, self.t), float(self.t), float(self.t == self.length), {}


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("options", [{}, {"n_warmups": 5}, {"max_episodes": 2}, {"done_check": "always"},
                                     {"after_step": True, "obs_update": True, "rew_sum": True}])
def test_train_matches_cpprb(prioritized, options):
    calls = {}

    def run(lib):
        log = calls[lib.__name__] = []
        env_dict = {"obs": {"shape": 3}, "act": {}, "rew": {}, "next_obs": {"shape": 3}, "done": {}}
        cls = lib.PrioritizedReplayBuffer if prioritized else lib.ReplayBuffer
        rb = cls(32, env_dict)
        kw = dict(options)
        if kw.get("done_check") == "always":
            kw["done_check"] = lambda tr: True
        if kw.pop("after_step", None):
            kw["after_step"] = lambda o, a, r, s, e: {"obs": o, "act": a, "rew": r[1] * 2, "next_obs": r[0],
                                                       "done": r[2]}
            kw["obs_update"] = lambda tr: tr["next_obs"] + 1
            kw["rew_sum"] = lambda total, tr: total - tr["rew"]

        def update(sample, step, episode):
            log.append(("update", step, episode, sample["obs"].shape))
            return np.full(len(sample["obs"]), 0.5 + step)

        train(lib, rb, kw, update, log)
        return rb

    def train(lib, rb, kw, update, log):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cpprb's "still beta" warning
            lib.train(rb, _CountingEnv(), lambda o, s, e, w: (log.append(("act", s, e, w, o.tolist())), s % 3)[1],
                      update, max_steps=13, batch_size=4,
                      episode_callback=lambda e, s, r: log.append(("episode", e, s, float(r))), **kw)

    a, b = run(fc), run(cpprb)
    assert calls["fastreplay.cpprb"] == calls["cpprb"]
    assert_same(a.get_all_transitions(), b.get_all_transitions())
    if prioritized:
        assert a.get_max_priority() == b.get_max_priority()


def test_train_refuses_too_many_steps_and_per_without_td():
    rb = fc.ReplayBuffer(4, {"obs": {"shape": 3}, "act": {}, "rew": {}, "next_obs": {"shape": 3}, "done": {}})
    with pytest.raises(ValueError, match="too big"):
        fc.train(rb, _CountingEnv(), lambda *a: 0, lambda *a: 0.5, max_steps=2**64)
    per = fc.PrioritizedReplayBuffer(4, {"obs": {"shape": 3}, "act": {}, "rew": {}, "next_obs": {"shape": 3},
                                         "done": {}})
    with pytest.raises(TypeError):
        fc.train(per, _CountingEnv(), lambda *a: 0, lambda *a: None, max_steps=3)


def test_update_priorities_broadcasts_one_priority():
    rb = fc.PrioritizedReplayBuffer(8, {"a": {}})
    rb.add(a=np.arange(8))
    rb.update_priorities([1, 2, 3], 5.0)
    assert rb.get_max_priority() == 5.0
    rb.update_priorities([4, 5], [7.0])
    assert rb.get_max_priority() == 7.0
    with pytest.raises(ValueError, match="same length"):
        rb.update_priorities([1, 2, 3], [1.0, 2.0])


@pytest.mark.parametrize("prioritized", [False, True])
def test_encode_sample_matches_cpprb(prioritized):
    ours, theirs = (lib.create_buffer(16, ENV, prioritized=prioritized, next_of=None) for lib in (fc, cpprb))
    for kwargs, _ in episodes(5, 6):
        ours.add(**kwargs)
        theirs.add(**kwargs)
    for idx in (np.array(0), np.array([3, 1, 1]), [2, 0]):
        assert_same(ours._encode_sample(idx), theirs._encode_sample(np.asarray(idx)))


@pytest.mark.parametrize("strategy", ["future", "episode", "final", "random"])
@pytest.mark.parametrize("prioritized", [False, True])
def test_hindsight_replay_buffer_matches_cpprb(strategy, prioritized):
    env_dict = {"obs": {"shape": 2}, "act": {}, "next_obs": {"shape": 2}}

    def reward(next_obs, act, goal):
        return -(np.abs(next_obs - goal).sum(axis=1) > 0.5).astype(np.float64)

    bufs = [lib.HindsightReplayBuffer(64, env_dict, 6, reward, strategy=strategy, additional_goals=2,
                                      prioritized=prioritized, goal_func=lambda s: s * 2.0)
            for lib in (fc, cpprb)]
    rng = np.random.default_rng(11)
    for ep in range(5):
        for b in bufs:
            b.rng = np.random.default_rng(ep)
        n = int(rng.integers(1, 7))
        obs = rng.normal(size=(n + 1, 2))
        act = rng.integers(0, 3, n)
        for t in range(n):
            for b in bufs:
                b.add(obs=obs[t], act=act[t], next_obs=obs[t + 1])
        goal = rng.normal(size=2)
        for b in bufs:
            b.on_episode_end(goal)
        assert bufs[0].get_stored_size() == bufs[1].get_stored_size()
        assert_same(bufs[0].get_all_transitions(), bufs[1].get_all_transitions())
    assert bufs[0].get_buffer_size() == 64
    if prioritized:
        bufs[0].update_priorities([0, 1], [3.0, 4.0])
        assert bufs[0].get_max_priority() == 4.0
        assert set(bufs[0].sample(8, beta=0.5)) >= {"weights", "indexes", "goal", "rew"}
    else:
        with pytest.raises(ValueError, match="without PER"):
            bufs[0].update_priorities([0], [1.0])
    for _ in range(6):
        bufs[0].add(obs=[0, 0], act=0, next_obs=[0, 0])
    with pytest.raises(ValueError, match="Exceed Max Episode Length"):
        bufs[0].add(obs=[0, 0], act=0, next_obs=[0, 0])
    bufs[0].clear()
    assert bufs[0].get_stored_size() == 0
    with pytest.raises(ValueError, match="Unknown Strategy"):
        fc.HindsightReplayBuffer(8, env_dict, 4, reward, strategy="nope")


def test_hindsight_goal_shape():
    env_dict = {"obs": {"shape": 3}, "act": {}, "next_obs": {"shape": 3}}
    her = fc.HindsightReplayBuffer(16, env_dict, 4, lambda s, a, g: np.zeros(len(s)), goal_shape=(1,),
                                   goal_func=lambda s: s[:, :1], strategy="final", prioritized=False)
    her.add(obs=np.zeros((3, 3)), act=[0, 1, 2], next_obs=np.arange(9).reshape(3, 3))
    her.on_episode_end([5.0])
    goals = her.get_all_transitions()["goal"]
    assert goals.shape == (6, 1)
    np.testing.assert_array_equal(goals[:, 0], [5, 5, 5, 6, 6, 6])


@pytest.mark.parametrize("seed", range(6))
def test_selective_replay_buffer_matches_cpprb(seed):
    rng = np.random.default_rng(seed)
    bufs = [lib.SelectiveReplayBuffer(6, 2, 1, Nepisodes=4) for lib in (fc, cpprb)]
    ours, theirs = bufs
    assert ours.get_buffer_size() == theirs.get_buffer_size() == 24
    count = 0
    for _ in range(60):
        op = rng.random()
        if op < 0.6:
            n = int(rng.integers(1, 5))
            done = (rng.random(n) < 0.3).astype(float)
            args = (np.arange(count, count + 2 * n).reshape(n, 2), rng.integers(0, 3, n), rng.random(n),
                    np.arange(count + 1, count + 1 + 2 * n).reshape(n, 2), done)
            count += 2 * n
            assert ours.add(*args) == theirs.add(*args)
        elif op < 0.9:
            i = int(rng.integers(0, ours.get_stored_episode_size() + 2))
            assert ours.delete_episode(i) == theirs.delete_episode(i)
        elif op < 0.95:
            for b in bufs:
                b.clear()
        assert ours.get_next_index() == theirs.get_next_index()
        assert ours.get_stored_size() == theirs.get_stored_size()
        assert ours.get_stored_episode_size() == theirs.get_stored_episode_size()
        for i in range(ours.get_stored_episode_size() + 1):
            a, b = ours.get_episode(i), theirs.get_episode(i)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        stored = ours.get_stored_size()
        if stored:
            idx = np.arange(stored)
            assert_same(ours._encode_sample(idx), theirs._encode_sample(idx))
            s = ours.sample(5)
            assert {k: v.shape for k, v in s.items()} == {k: v.shape for k, v in theirs.sample(5).items()}


def test_selective_replay_buffer_fills_up_and_stops():
    rb = fc.SelectiveReplayBuffer(2, 1, 1, Nepisodes=2)
    assert rb.add(np.arange(3), np.zeros(3), np.zeros(3), np.arange(3), [0, 0, 1]) == 0
    assert rb.add(np.arange(3), np.zeros(3), np.zeros(3), np.arange(3), [0, 0, 0]) == 3
    assert rb.get_next_index() == 4  # one row taken, two dropped: the buffer is full
    assert rb.get_episode(1)["obs"].ravel().tolist() == [0]
    with pytest.raises(ValueError, match="obs has 1 values"):
        rb.add([1], [0, 0], [0, 0], [1, 2], [0, 0])


def test_empty_prioritized_sample_is_cpprbs():
    ours, theirs = fc.PrioritizedReplayBuffer(16, ENV), cpprb.PrioritizedReplayBuffer(16, ENV)
    a, b = ours.sample(4), theirs.sample(4)
    assert set(a) == set(b)
    assert np.isnan(a["weights"]).all() and np.isnan(b["weights"]).all()
    np.testing.assert_array_equal(a["indexes"], b["indexes"])
    for k in ENV:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype


def test_buffer_without_env_dict_stores_nothing_as_cpprbs():
    for lib in (fc, cpprb):
        rb = lib.create_buffer(16, obs_shape=(3,), act_dim=4, is_discrete_action=True, prioritized=True)
        assert rb._encode_sample(0) == {} and rb.get_stored_size() == 0 and rb.get_next_index() == 0
        with pytest.raises(KeyError):
            rb.add(obs=np.zeros(3))


def test_encode_sample_reads_unwritten_slots_as_cpprb():
    ours, theirs = fc.ReplayBuffer(8, {"a": {}}), cpprb.ReplayBuffer(8, {"a": {}})
    for rb in (ours, theirs):
        rb.add(a=3)
    a, b = ours._encode_sample([0, 5, 7]), theirs._encode_sample([0, 5, 7])
    assert a["a"].shape == b["a"].shape == (3, 1) and a["a"][0, 0] == b["a"][0, 0] == 3
    # never-written slots hold their initial memory: zeros here, ones in cpprb
    assert (a["a"][1:] == 0).all() and (b["a"][1:] == 1).all()
    with pytest.raises(IndexError, match="out of range"):
        ours._encode_sample([8])
