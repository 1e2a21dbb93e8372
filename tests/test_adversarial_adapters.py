"""The adapters and the gymnasium path given hostile or unusual input: cpprb files that would unpickle (D18),
nested Dict observations through from_env (D23), writes that would vanish into a copy of an SB3 column (D24) and
cpprb Nstep arguments that no add could serve (D31)."""
import os

import numpy as np
import pytest

import fastreplay as fr
from fastreplay import reference

gym = pytest.importorskip("gymnasium")
spaces = gym.spaces

BUFFERS = [pytest.param(fr.ReplayBuffer, id="core"), pytest.param(reference.ReplayBuffer, id="reference")]


# --- D18: cpprb's .npz format pickles; load_transitions unpickles only when asked -----------------------------------


def _cpprb_buffer(**kw):
    from fastreplay.cpprb import ReplayBuffer

    return ReplayBuffer(16, {"obs": {"shape": 2}, "act": {}, "done": {}}, **kw)


def _filled(**kw):
    rb = _cpprb_buffer(**kw)
    for i in range(5):
        extra = {"next_obs": [i + 1, i + 1]} if kw.get("next_of") else {}
        rb.add(obs=[i, i], act=i, done=float(i == 4), **extra)
    rb.on_episode_end()
    return rb


@pytest.mark.parametrize("safe", [True, False])
def test_load_transitions_refuses_pickled_members_by_default(tmp_path, safe):
    # D18: load_transitions ran np.load(..., allow_pickle=True) on whatever file it was given.
    path = str(tmp_path / "rb.npz")
    _filled(next_of="obs").save_transitions(path, safe=safe)
    dst = _cpprb_buffer(next_of="obs")
    with pytest.raises(ValueError, match=r"rb\.npz' stores 'data' as a pickled Python object .*allow_pickle=True"):
        dst.load_transitions(path)
    assert dst.get_stored_size() == 0
    dst.load_transitions(path, allow_pickle=True)  # the caller asks by name: the file is read as before
    assert dst.get_stored_size() == 5


def test_load_transitions_does_not_run_a_crafted_pickle(tmp_path):
    # D18: a crafted .npz whose 'data' member unpickles into a call; refused without running it.
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = np.empty((), dtype=object)
    data[()] = Payload()
    path = str(tmp_path / "evil.npz")
    np.savez(path, safe=True, version=1, data=data, Nstep=False, cache=None, next_of=None)
    with pytest.raises(ValueError, match="pickled Python object"):
        _cpprb_buffer().load_transitions(path)
    assert not marker.exists()


def test_load_transitions_refuses_a_plain_pickle_file(tmp_path):
    # D18: a pickle that is not even an .npz.
    import pickle

    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"x\.pkl' is a pickle, not an \.npz file.*allow_pickle=True"):
        _cpprb_buffer().load_transitions(str(path))


def test_load_transitions_reads_cpprb_files_with_allow_pickle(tmp_path):
    # D18: files cpprb itself writes need the same opt-in.
    cpprb = pytest.importorskip("cpprb")
    src = cpprb.ReplayBuffer(16, {"obs": {"shape": 2}, "act": {}, "done": {}})
    src.add(obs=np.ones((3, 2)), act=[1, 2, 3], done=[0, 0, 1])
    path = str(tmp_path / "theirs.npz")
    src.save_transitions(path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        _cpprb_buffer().load_transitions(path)
    dst = _cpprb_buffer()
    dst.load_transitions(path, allow_pickle=True)
    np.testing.assert_array_equal(dst.get_all_transitions()["act"][:, 0], [1, 2, 3])


# --- D31: cpprb Nstep checked by the constructor --------------------------------------------------------------------


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize(
    "nstep, exc, match",
    [
        ({"size": 0}, ValueError, r"Nstep\['size'\] must be an integer >= 1, got 0"),
        ({"size": -1}, ValueError, r"Nstep\['size'\] must be an integer >= 1, got -1"),
        ({"size": 2.5}, TypeError, r"Nstep\['size'\] must be an integer >= 1, got 2.5"),
        ({"size": "3"}, TypeError, r"Nstep\['size'\] must be an integer"),
        ({"gamma": 0.9}, KeyError, r"Nstep needs 'size'"),
        ({"size": 3, "gamma": float("nan")}, ValueError, r"Nstep\['gamma'\] must be finite"),
        ({"size": 3, "gamma": "0.9"}, TypeError, r"Nstep\['gamma'\] must be a real number"),
        ({"size": 3, "rew": "reward"}, KeyError, r"Nstep\['rew'\] names 'reward', which is not in env_dict"),
        ({"size": 3, "next": "next_obs"}, KeyError, r"Nstep\['next'\] names 'next_obs'"),
        ({"size": 3, "gama": 0.9}, ValueError, r"Nstep has unknown keys \['gama'\]"),
        ([3], TypeError, r"Nstep must be a dict"),
    ],
)
def test_nstep_arguments_are_checked_by_the_constructor(prioritized, nstep, exc, match):
    # D31: {"size": 0} (or -1) was accepted, then every add failed with a reshape error.
    from fastreplay.cpprb import create_buffer

    with pytest.raises(exc, match=match):
        create_buffer(16, {"obs": {}, "rew": {}, "done": {}}, Nstep=nstep, prioritized=prioritized)


def test_nstep_needs_done():
    # D31
    from fastreplay.cpprb import ReplayBuffer

    with pytest.raises(KeyError, match="Nstep needs a 'done' entry"):
        ReplayBuffer(16, {"obs": {}, "rew": {}}, Nstep={"size": 2})


def test_nstep_size_one_and_integral_float_still_work():
    # D31: the checks keep what cpprb accepts (size 1; size given as 2.0).
    from fastreplay.cpprb import ReplayBuffer

    for size in (1, 2.0):
        rb = ReplayBuffer(16, {"obs": {}, "rew": {}, "done": {}}, Nstep={"size": size, "rew": "rew"})
        for t in range(4):
            rb.add(obs=t, rew=1.0, done=0.0)
        rb.on_episode_end()
        assert rb.get_stored_size() == 4


# --- D23: nested Dict observation spaces through from_env ------------------------------------------------------------


NESTED = spaces.Dict({
    "a": spaces.Box(-1, 1, (2,), np.float32),
    "inner": spaces.Dict({"b": spaces.Discrete(3), "c": spaces.Dict({"d": spaces.Box(0, 1, (1,), np.float32)})}),
})


@pytest.mark.parametrize("cls", BUFFERS)
def test_from_env_nested_dict_accepts_the_dict_as_the_env_returns_it(cls):
    # D23: add(obs=env_obs) raised "field 'obs' is missing key 'inner.b'".
    NESTED.seed(0)
    buf = cls.from_env((NESTED, spaces.Discrete(2)), 8, seed=0)
    assert {"obs.a", "obs.inner.b", "obs.inner.c.d", "next_obs.inner.c.d"} <= set(buf.fields)
    o, o2 = NESTED.sample(), NESTED.sample()
    buf.add(obs=o, action=1, reward=0.5, next_obs=o2, done=False, truncated=False)
    got = buf.get([0])
    assert got["obs.inner.b"][0] == o["inner"]["b"]
    np.testing.assert_array_equal(got["obs.inner.c.d"][0], o["inner"]["c"]["d"])
    np.testing.assert_array_equal(got["next_obs.a"][0], o2["a"])


@pytest.mark.parametrize("cls", BUFFERS)
def test_nested_dict_from_a_real_vector_env(cls):
    # D23: a real gymnasium env with a nested Dict observation space, through a vector env and from_env.
    class NestedEnv(gym.Env):
        observation_space = NESTED
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.observation_space.seed(seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 1.0, False, False, {}

    envs = gym.vector.SyncVectorEnv([NestedEnv for _ in range(3)])
    buf = cls.from_env(envs, 30, seed=0)
    obs, _ = envs.reset(seed=0)
    for _ in range(4):
        actions = envs.action_space.sample()
        nxt, rew, term, trunc, _ = envs.step(actions)
        buf.add(obs=obs, action=actions, reward=rew, next_obs=nxt, done=term, truncated=trunc)  # one call, 3 rows
        last_obs, obs = obs, nxt
    assert len(buf) == 12
    np.testing.assert_array_equal(buf.storage["obs.inner.c.d"][9:12], last_obs["inner"]["c"]["d"])
    np.testing.assert_array_equal(buf.storage["next_obs.inner.b"][9:12], obs["inner"]["b"])
    envs.close()


@pytest.mark.parametrize("cls", BUFFERS)
def test_nested_dict_errors_name_the_key_and_write_nothing(cls):
    # D23: errors in a nested dict name the group and key; nothing is stored.
    NESTED.seed(1)
    buf = cls.from_env((NESTED, spaces.Discrete(2)), 8, seed=0)
    o = NESTED.sample()
    bad = [
        (dict(o, inner={"b": 1}), r"field 'obs.inner' is missing key 'c.d'"),
        (dict(o, inner=dict(o["inner"], z=1)), r"field 'obs.inner' has key 'z' that is not a field"),
        (dict(o, inner=3), r"field 'obs.inner' must be a dict of its keys, got int"),
        (dict(o, **{"zz": 1}), r"field 'obs' has key 'zz' that is not a field"),
        ({**o, 1: 2}, r"field 'obs' has key 1 that is not a field"),
    ]
    for obs, match in bad:
        with pytest.raises(TypeError, match=match):
            buf.add(obs=obs, action=1, reward=0.0, next_obs=o, done=False, truncated=False)
    assert len(buf) == 0
    flat = {"a": o["a"], "inner.b": o["inner"]["b"], "inner.c.d": o["inner"]["c"]["d"]}
    buf.add(obs=flat, action=1, reward=0.0, next_obs=o, done=False, truncated=False)  # dotted keys at one level still work
    assert len(buf) == 1


def test_nested_dict_messages_match_the_reference():
    # D23: the compiled buffer and the reference raise the same messages.
    NESTED.seed(2)
    o = NESTED.sample()
    bufs = [cls.from_env((NESTED, spaces.Discrete(2)), 8, seed=0) for cls in (fr.ReplayBuffer, reference.ReplayBuffer)]
    for obs in (dict(o, inner={"b": 1}), dict(o, inner=np.zeros(2)), dict(o, q=1)):
        messages = []
        for buf in bufs:
            with pytest.raises(TypeError) as exc:
                buf.add(obs=obs, action=1, reward=0.0, next_obs=o, done=False)
            messages.append(str(exc.value))
        assert messages[0] == messages[1]


# --- D24: SB3 column writes never vanish into a private copy ---------------------------------------------------------


@pytest.fixture
def sb3_buffer():
    pytest.importorskip("stable_baselines3")
    from fastreplay.sb3 import ReplayBuffer

    rb = ReplayBuffer(8, spaces.Box(-1, 1, (2,), np.float32), spaces.Discrete(2), device="cpu", seed=0)
    for i in range(4):
        rb.add(np.full(2, i), np.full(2, i + 1), np.array([1]), np.array([1.0]), np.array([0.0]), [{}])
    return rb


@pytest.mark.parametrize("write", [
    pytest.param(lambda col: col[0:2].__setitem__(0, 5.0), id="slice"),
    pytest.param(lambda col: np.copyto(col, 7.0), id="copyto"),
    pytest.param(lambda col: np.add(col, 1.0, out=col), id="out"),
    pytest.param(lambda col: col.reshape(-1).__setitem__(0, 9.0), id="reshape"),
])
@pytest.mark.parametrize("patched", [False, True])
def test_sb3_column_writes_other_than_item_assignment_fail(sb3_buffer, write, patched):
    # D24: after an overlay entry (SB3's own dones[pos] = True), these writes succeeded into a copy and were lost.
    rb = sb3_buffer
    if patched:
        rb.dones[1] = True
    before = rb.dones.copy()
    with pytest.raises(ValueError, match="read-only"):
        write(rb.dones)
    np.testing.assert_array_equal(rb.dones, before)


def test_sb3_column_item_assignment_still_reaches_samples(sb3_buffer):
    # D24: the documented way to write (item assignment on the attribute) keeps working with the overlay.
    rb = sb3_buffer
    rb.dones[1] = True
    rb.dones[2, 0] = 1.0
    assert rb.dones[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    got = rb._get_samples(np.array([0, 1, 2, 3]))
    assert got.dones[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
