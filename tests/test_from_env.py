"""ReplayBuffer.from_env: fields from gymnasium spaces (each keeps its dtype), vector envs and Dict spaces."""
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")
from gymnasium import spaces  # noqa: E402

import fastreplay as fr  # noqa: E402


@pytest.mark.parametrize("cls", [fr.ReplayBuffer, fr.PrioritizedReplayBuffer])
def test_box_image_and_discrete(cls):
    obs = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buf = cls.from_env((obs, spaces.Discrete(6)), capacity=10, seed=0)
    assert buf.fields == {
        "obs": ((4, 84, 84), np.dtype(np.uint8)), "action": ((), np.dtype(np.int64)),
        "reward": ((), np.dtype(np.float32)), "next_obs": ((4, 84, 84), np.dtype(np.uint8)),
        "done": ((), np.dtype(np.bool_)), "truncated": ((), np.dtype(np.bool_)),
    }
    o = obs.sample()
    buf.add(obs=o, action=3, reward=1.0, next_obs=o, done=False, truncated=False)
    np.testing.assert_array_equal(buf.storage["obs"][0], o)


@pytest.mark.parametrize("space,shape,dtype", [
    (spaces.MultiDiscrete([3, 4, 5]), (3,), np.int64),
    (spaces.MultiBinary(7), (7,), np.int8),
    (spaces.Box(-1, 1, (2, 3), np.float64), (2, 3), np.float64),
    (spaces.Discrete(4), (), np.int64),
])
def test_each_space_keeps_its_dtype(space, shape, dtype):
    buf = fr.ReplayBuffer.from_env((space, space), capacity=4)
    assert buf.fields["obs"] == (shape, np.dtype(space.dtype if shape else np.int64))
    assert buf.fields["action"][0] == shape
    x = space.sample()
    buf.add(obs=x, action=x, reward=0.5, next_obs=x, done=True, truncated=False)
    np.testing.assert_array_equal(buf.storage["obs"][0], x)
    assert buf.storage["obs"].dtype == np.dtype(dtype)


def test_dict_observations_expand_into_fields():
    obs = spaces.Dict({"image": spaces.Box(0, 255, (3, 8, 8), np.uint8), "vec": spaces.Box(-1, 1, (5,), np.float32)})
    buf = fr.ReplayBuffer.from_env((obs, spaces.Discrete(2)), capacity=8, seed=0)
    assert set(buf.fields) == {"obs.image", "obs.vec", "action", "reward", "next_obs.image", "next_obs.vec", "done",
                               "truncated"}
    o, o2 = obs.sample(), obs.sample()
    buf.add(obs=o, action=1, reward=0.0, next_obs=o2, done=False, truncated=False)  # the dict as the env returns it
    b = buf.sample(2)
    np.testing.assert_array_equal(b["obs.image"][0], o["image"])
    np.testing.assert_array_equal(b["next_obs.vec"][1], o2["vec"])
    with pytest.raises(TypeError, match="field 'obs' is missing key 'vec'"):
        buf.add(obs={"image": o["image"]}, action=1, reward=0.0, next_obs=o2, done=False, truncated=False)
    assert len(buf) == 1


def test_vector_env_batched_add():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(4)])
    buf = fr.ReplayBuffer.from_env(envs, capacity=100, seed=0)
    assert buf.fields["obs"] == ((4,), np.dtype(np.float32))
    obs, _ = envs.reset(seed=0)
    actions = envs.action_space.sample()
    nxt, rew, term, trunc, _ = envs.step(actions)
    buf.add(obs=obs, action=actions, reward=rew, next_obs=nxt, done=term, truncated=trunc)  # one call, 4 rows
    assert len(buf) == 4
    np.testing.assert_array_equal(buf.storage["obs"], obs)
    np.testing.assert_array_equal(buf.storage["action"], actions)
    envs.close()


def test_unsupported_spaces_and_objects():
    with pytest.raises(TypeError, match="space Text is not supported"):
        fr.ReplayBuffer.from_env((spaces.Text(5), spaces.Discrete(2)), capacity=4)
    with pytest.raises(TypeError, match="expected a gymnasium env, a vector env or an"):
        fr.ReplayBuffer.from_env(42, capacity=4)
