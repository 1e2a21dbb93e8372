"""fastreplay.reference's episode index (docs/episodes.md) on small hand-computed cases: lanes, terminations and
truncations, both autoreset modes, next-observation dedup, frame stacks with both paddings, n-step returns, ring
wrap-around, Dict observations, prioritized replay, every error of the contract and from_env on a vector env.

Every expected value below is worked out by hand from the contract, never read back from the implementation."""
import collections
import math

import numpy as np
import pytest

from fastreplay.reference import PrioritizedReplayBuffer, ReplayBuffer

NOTHING = (
    "sample: no stored step can be sampled yet: a step needs its next observation (with next_obs='dedup', the "
    "lane's next step) and every frame of its stack"
)


def scalar_fields(truncated=True, reward=np.float32):
    """Scalar observations: an observation's value names it, which makes every batch easy to check by hand."""
    f = {"obs": ((), np.float32), "action": ((), np.int64), "reward": ((), reward), "next_obs": ((), np.float32),
         "done": ((), np.bool_)}
    if truncated:
        f["truncated"] = ((), np.bool_)
    return f


def image_fields(frame=(2, 2), truncated=False):
    f = {"obs": (frame, np.float32), "reward": ((), np.float32), "next_obs": (frame, np.float32),
         "done": ((), np.bool_)}
    if truncated:
        f["truncated"] = ((), np.bool_)
    return f


def add(buf, obs, next_obs, reward, done, truncated=None, action=None, **extra):
    """One add of K rows given as lists (one entry per lane)."""
    row = dict(obs=np.asarray(obs, np.float32), next_obs=np.asarray(next_obs, np.float32),
               reward=np.asarray(reward, buf.fields["reward"][1]), done=np.asarray(done, bool), **extra)
    if "truncated" in buf.fields:
        row["truncated"] = np.asarray([False] * len(done) if truncated is None else truncated, bool)
    if "action" in buf.fields:
        row["action"] = np.asarray([0] * len(done) if action is None else action, np.int64)
    buf.add(**row)


def one(buf, slot):
    """get([slot]) as {field: value of its single row}."""
    b = buf.get([slot])
    return {k: v[0] for k, v in b.items()}


def frames(*values, shape=(2, 2)):
    """A stack of constant frames: frames(1, 2) has frame 0 all ones and frame 1 all twos."""
    return np.stack([np.full(shape, v, np.float32) for v in values])


# --- turning it on, options, fields ---------------------------------------------------------------------------------


def test_a_buffer_without_options_is_plain_and_any_option_makes_it_episodic():
    plain = ReplayBuffer(4, scalar_fields(), seed=0)
    assert plain.episode_config is None
    plain.add(obs=[1.0, 2.0, 3.0], action=[0, 0, 0], reward=[0.0] * 3, next_obs=[0.0] * 3, done=[False] * 3,
              truncated=[False] * 3)  # any number of rows, as before
    assert len(plain) == 3 and "discount" not in plain.sample(2)
    for option in (dict(num_envs=1), dict(n_step=1), dict(gamma=0.5), dict(autoreset="same_step"),
                   dict(next_obs="store"), dict(stack_padding="zero"), dict(frame_stack=1)):
        buf = ReplayBuffer(4, scalar_fields(), seed=0, **option)
        assert buf.episode_config is not None, option
        add(buf, [1], [2], [0.5], [False])
        assert "discount" in buf.get([0])


def test_defaults_and_readable_options():
    buf = ReplayBuffer(6, scalar_fields(), seed=0, num_envs=3)
    cfg = buf.episode_config
    assert (buf.num_envs, buf.frame_stack, buf.n_step, buf.gamma) == (3, 1, 1, 0.99)
    assert (cfg.dedup, cfg.stacked_input, cfg.padding, cfg.autoreset) == (False, False, "reset", "same_step")
    img = ReplayBuffer(8, image_fields(), seed=0, frame_stack=4)
    assert img.episode_config.dedup and img.frame_stack == 4  # dedup is the default with frame_stack > 1


def test_batch_fields_and_storage_layout():
    buf = ReplayBuffer(8, {**image_fields(), "action": ((), np.int64)}, seed=0, frame_stack=3, num_envs=2)
    # dedup: no next_obs column; one frame per stored obs row
    assert list(buf.storage) == ["obs", "reward", "done", "action"]
    for k in range(2):
        buf.add(obs=frames(k, k), reward=[0.0, 0.0], next_obs=frames(9, 9), done=[False, False], action=[k, k])
    assert buf.storage["obs"].shape == (4, 2, 2)
    b = buf.get([0, 1])
    assert list(b) == ["obs", "reward", "next_obs", "done", "action", "discount"]
    shapes = {k: (v.shape, v.dtype) for k, v in b.items()}
    assert shapes == {"obs": ((2, 3, 2, 2), np.float32), "reward": ((2,), np.float32),
                      "next_obs": ((2, 3, 2, 2), np.float32), "done": ((2,), np.bool_),
                      "action": ((2,), np.int64), "discount": ((2,), np.float32)}
    assert b.generations.tolist() == [1, 1] and b.weights is None


# --- lanes, terminations, truncations, store ----------------------------------------------------------------------


def k2_store(**kw):
    """K=2, next_obs='store', same-step autoreset. Lane 0: 0 -> 1 -> 2 (terminated), then a new episode from 50.
    Lane 1: 100 -> 101 -> 102 (truncated), then 150. Tickets: lane 0 even, lane 1 odd."""
    buf = ReplayBuffer(8, scalar_fields(), seed=0, num_envs=2, **kw)
    add(buf, [0, 100], [1, 101], [1, 2], [False, False], [False, False], action=[7, 8])
    add(buf, [1, 101], [2, 102], [3, 4], [True, False], [False, True], action=[9, 10])
    add(buf, [50, 150], [51, 151], [5, 6], [False, False], [False, False], action=[11, 12])
    return buf


def test_lanes_store_one_step_transitions():
    buf = k2_store()
    assert buf._sampleable() == [0, 1, 2, 3, 4, 5]  # store: every step has its next observation
    r = one(buf, 2)  # lane 0, terminated
    assert (r["obs"], r["next_obs"], r["reward"], r["done"], r["truncated"], r["action"]) == (1, 2, 3, True, False, 9)
    assert r["discount"] == 0.0
    r = one(buf, 3)  # lane 1, truncated: bootstraps
    assert (r["obs"], r["next_obs"], r["reward"], r["done"], r["truncated"]) == (101, 102, 4, False, True)
    assert r["discount"] == np.float32(0.99)


def test_n_step_windows_stop_at_terminations_truncations_and_the_newest_step():
    buf = k2_store(n_step=3, gamma=0.5)
    r = one(buf, 0)  # tickets 0, 2 (terminated): m = 2
    assert (r["obs"], r["next_obs"], r["reward"], r["done"], r["discount"]) == (0, 2, 1 + 0.5 * 3, True, 0.0)
    r = one(buf, 1)  # tickets 1, 3 (truncated): m = 2, bootstraps with gamma**2
    assert (r["obs"], r["next_obs"], r["reward"], r["done"], r["truncated"]) == (100, 102, 2 + 0.5 * 4, False, True)
    assert r["discount"] == np.float32(0.25)
    r = one(buf, 4)  # ticket 4, the lane's newest: m = 1
    assert (r["obs"], r["next_obs"], r["reward"], r["discount"], r["action"]) == (50, 51, 5, np.float32(0.5), 11)
    add(buf, [51, 151], [52, 152], [7, 8], [False, False])
    add(buf, [52, 152], [53, 153], [9, 10], [False, False])
    r = one(buf, 4)  # tickets 4, 6, 8: m = 3 (n_step)
    assert (r["next_obs"], r["reward"], r["discount"]) == (53, 5 + 0.5 * 7 + 0.25 * 9, np.float32(0.125))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_n_step_returns_for_n_1_to_4_with_gamma(n):
    g = 0.9
    buf = ReplayBuffer(16, scalar_fields(reward=np.float64), seed=0, n_step=n, gamma=g)
    rewards = [1.0, 10.0, 100.0, 1000.0, 10000.0]
    for k, rw in enumerate(rewards):
        add(buf, [k], [k + 1], [rw], [False])
    expected_reward = {1: 1.0, 2: 1 + 0.9 * 10, 3: 1 + 9 + 0.81 * 100, 4: 1 + 9 + 81 + 0.729 * 1000}[n]
    r = one(buf, 0)
    assert r["reward"] == pytest.approx(expected_reward, rel=1e-12)
    assert r["next_obs"] == n  # the observation after step n - 1
    assert r["discount"] == np.float32(g ** n)
    assert not r["done"]


def test_reward_accumulates_in_float64_and_is_cast_to_the_field_dtype():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, n_step=2, gamma=0.9)
    add(buf, [0], [1], [0.1], [False])
    add(buf, [1], [2], [0.2], [True])
    expected = np.float32(float(np.float32(0.1)) + 0.9 * float(np.float32(0.2)))
    r = one(buf, 0)
    assert r["reward"].dtype == np.float32 and r["reward"] == expected
    assert r["done"] and r["discount"] == 0.0


def test_n_step_and_gamma_are_settable_from_the_next_sample():
    buf = ReplayBuffer(8, scalar_fields(), seed=0, num_envs=1)
    for k in range(3):
        add(buf, [k], [k + 1], [1.0], [False])
    assert one(buf, 0)["reward"] == 1.0
    buf.n_step = 3
    buf.gamma = 0.5
    assert (buf.n_step, buf.gamma) == (3, 0.5)
    r = one(buf, 0)
    assert (r["reward"], r["next_obs"], r["discount"]) == (1.75, 3, np.float32(0.125))
    buf.gamma = 1  # an int in [0, 1] is a gamma
    assert buf.gamma == 1.0 and one(buf, 0)["reward"] == 3.0
    buf.gamma = 0.0
    r = one(buf, 0)
    assert (r["reward"], r["discount"]) == (1.0, 0.0)  # 0**0 = 1, 0**3 = 0


def test_discount_is_float32_of_gamma_to_the_m():
    buf = ReplayBuffer(8, scalar_fields(), seed=0, n_step=3, gamma=0.99)
    for k in range(4):
        add(buf, [k], [k + 1], [0.0], [False])
    d = buf.get([0])["discount"]
    assert d.dtype == np.float32 and d[0] == np.float32(0.99 * 0.99 * 0.99)


# --- dedup --------------------------------------------------------------------------------------------------------


def test_dedup_reads_next_obs_from_the_lanes_next_step_and_finals_at_ends():
    buf = ReplayBuffer(8, scalar_fields(), seed=0, num_envs=2, next_obs="dedup")
    # next_obs of non-end rows is ignored with dedup (-7 here): it is the lane's next obs
    add(buf, [0, 100], [-7, -7], [1, 2], [False, False])
    assert buf._sampleable() == []  # both lanes wait for their next add
    with pytest.raises(ValueError) as e:
        buf.sample(1)
    assert str(e.value) == NOTHING
    with pytest.raises(ValueError, match=r"^get: slot 1 at position 0 holds no sampleable step$"):
        buf.get([1])
    add(buf, [1, 101], [-7, 999], [3, 4], [False, True])  # lane 1 terminated: final observation 999
    assert buf._sampleable() == [0, 1, 3]  # slot 2: lane 0's newest non-end step waits
    assert one(buf, 0)["next_obs"] == 1 and one(buf, 1)["next_obs"] == 101
    r = one(buf, 3)
    assert (r["obs"], r["next_obs"], r["done"], r["discount"]) == (101, 999, True, 0.0)
    add(buf, [2, 200], [-7, -7], [5, 6], [False, False])  # lane 1 starts over from 200
    assert buf._sampleable() == [0, 1, 2, 3]
    assert one(buf, 2)["next_obs"] == 2
    assert "next_obs" not in buf.storage and buf.storage["obs"].tolist() == [0, 100, 1, 101, 2, 200]


def test_dedup_truncation_keeps_its_final_and_bootstraps():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, next_obs="dedup", n_step=2, gamma=0.5)
    add(buf, [0], [-7], [1], [False])
    add(buf, [1], [5], [2], [False], [True])  # truncated, final 5
    add(buf, [20], [-7], [4], [False])  # reset obs
    r = one(buf, 0)
    assert (r["next_obs"], r["reward"], r["done"], r["truncated"], r["discount"]) == (5, 2.0, False, True, 0.25)
    assert buf._sampleable() == [0, 1]


# --- autoreset ----------------------------------------------------------------------------------------------------


def next_step_lane(next_obs):
    """K=1, autoreset='next_step': t0 0->1, t1 1->2 terminated, t2 the reset row (2 -> 10, reward 0), t3 10->11,
    t4 11->12."""
    buf = ReplayBuffer(8, scalar_fields(), seed=0, autoreset="next_step", next_obs=next_obs, n_step=3, gamma=0.5)
    add(buf, [0], [1], [1], [False])
    add(buf, [1], [2], [2], [True])
    add(buf, [2], [10], [0], [False])
    add(buf, [10], [11], [3], [False])
    add(buf, [11], [12], [4], [False])
    return buf


def test_next_step_reset_rows_are_stored_but_never_sampled_dedup():
    buf = next_step_lane("dedup")
    assert len(buf) == 5 and buf._sampleable() == [0, 1, 3]  # 2: reset row, 4: newest
    r = one(buf, 0)  # tickets 0, 1 (terminated)
    assert (r["next_obs"], r["reward"], r["done"], r["discount"]) == (2, 2.0, True, 0.0)
    r = one(buf, 3)  # ticket 4 has no next observation yet: m = 1
    assert (r["obs"], r["next_obs"], r["reward"], r["discount"]) == (10, 11, 3.0, 0.5)
    with pytest.raises(ValueError, match=r"^get: slot 2 at position 1 holds no sampleable step$"):
        buf.get([0, 2])
    add(buf, [12], [13], [5], [False])
    assert buf._sampleable() == [0, 1, 3, 4]
    r = one(buf, 3)  # tickets 3, 4: m = 2 (ticket 5 waits for its next observation)
    assert (r["next_obs"], r["reward"], r["discount"]) == (12, 3 + 0.5 * 4, 0.25)
    assert set(buf.sample(200).indices.tolist()) == {0, 1, 3, 4}


def test_next_step_reset_rows_store():
    buf = next_step_lane("store")
    assert buf._sampleable() == [0, 1, 3, 4]
    r = one(buf, 3)  # tickets 3, 4: m = 2 (ticket 5 is not stored)
    assert (r["next_obs"], r["reward"], r["discount"]) == (12, 3 + 0.5 * 4, 0.25)
    add(buf, [12], [13], [5], [False])
    r = one(buf, 3)
    assert (r["next_obs"], r["reward"], r["discount"]) == (13, 3 + 2 + 0.25 * 5, 0.125)


def test_same_step_row_after_an_end_is_a_step():
    buf = ReplayBuffer(8, scalar_fields(), seed=0, num_envs=1)  # autoreset="same_step", store
    add(buf, [0], [1], [1], [True])
    add(buf, [10], [11], [2], [False])
    assert buf._sampleable() == [0, 1]


def test_next_step_with_lanes_and_a_frame_stack_starts_the_episode_after_the_reset_row():
    buf = ReplayBuffer(16, image_fields(truncated=True), seed=0, num_envs=2, frame_stack=2, autoreset="next_step")
    # lane 0: 1 -> 2 (truncated, final 3), reset row 3 -> 30, then 30 -> 31; lane 1: 101 .. 104, no end
    buf.add(obs=frames(1, 101), reward=[0, 0], next_obs=frames(0, 0), done=[False, False], truncated=[False, False])
    buf.add(obs=frames(2, 102), reward=[0, 0], next_obs=frames(3, 0), done=[False, False], truncated=[True, False])
    buf.add(obs=frames(3, 103), reward=[0, 0], next_obs=frames(30, 0), done=[False, False], truncated=[False, False])
    buf.add(obs=frames(30, 104), reward=[0, 0], next_obs=frames(0, 0), done=[False, False], truncated=[False, False])
    buf.add(obs=frames(31, 105), reward=[0, 0], next_obs=frames(0, 0), done=[False, False], truncated=[False, False])
    assert buf._sampleable() == [0, 1, 2, 3, 5, 6, 7]  # 4: reset row; 8, 9: newest
    r = one(buf, 6)  # ticket 6 starts lane 0's episode: padded with its own frame, not the reset row's
    np.testing.assert_array_equal(r["obs"], frames(30, 30))
    np.testing.assert_array_equal(r["next_obs"], frames(30, 31))
    r = one(buf, 2)  # truncated: the final observation, not the reset row's obs
    np.testing.assert_array_equal(r["next_obs"], frames(2, 3))
    assert (r["done"], r["truncated"], r["discount"]) == (False, True, np.float32(0.99))
    np.testing.assert_array_equal(one(buf, 7)["obs"], frames(103, 104))


def test_clear_starts_new_episodes_in_every_lane():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, autoreset="next_step", next_obs="dedup")
    add(buf, [0], [1], [0], [True])  # the lane would next store a reset row
    buf.clear()
    add(buf, [5], [-7], [0], [False])
    add(buf, [6], [-7], [0], [False])
    assert buf._sampleable() == [0]  # after clear() the first row is a step
    assert one(buf, 0)["next_obs"] == 6
    img = ReplayBuffer(4, image_fields(), seed=0, frame_stack=2)
    for v in (1, 2, 3):
        img.add(obs=frames(v)[0], reward=0.0, next_obs=frames(0)[0], done=False)
    img.clear()  # mid-episode
    for v in (7, 8):
        img.add(obs=frames(v)[0], reward=0.0, next_obs=frames(0)[0], done=False)
    np.testing.assert_array_equal(one(img, 0)["obs"], frames(7, 7))  # the new episode's first frame pads


# --- frame stacks -------------------------------------------------------------------------------------------------


def stacked_k2(padding, n_step=1):
    """K=2, S=3, dedup. Lane 0 frames 1, 2, 3 (terminated, final 4), then 11, 12; lane 1 frames 101 .. 105.
    Tickets: lane 0 even (0, 2, 4, 6, 8), lane 1 odd; slot == ticket. Rewards: lane 0 1, 2, 3, 4, 5; lane 1 10s."""
    buf = ReplayBuffer(16, image_fields(), seed=0, num_envs=2, frame_stack=3, stack_padding=padding,
                       n_step=n_step, gamma=0.5)
    for k, (a, b, da, fa) in enumerate([(1, 101, False, 0), (2, 102, False, 0), (3, 103, True, 4),
                                       (11, 104, False, 0), (12, 105, False, 0)]):
        buf.add(obs=frames(a, b), reward=[k + 1, 10 * (k + 1)], next_obs=frames(fa, 0), done=[da, False])
    return buf


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_frame_stacks_pad_before_the_episode_start(padding):
    buf = stacked_k2(padding)
    assert buf._sampleable() == [0, 1, 2, 3, 4, 5, 6, 7]  # 8, 9: each lane's newest
    p = {"reset": lambda first: first, "zero": lambda first: 0}[padding]
    cases = {
        0: (frames(p(1), p(1), 1), frames(p(1), 1, 2)),
        2: (frames(p(1), 1, 2), frames(1, 2, 3)),
        4: (frames(1, 2, 3), frames(2, 3, 4)),  # terminated: the final observation
        6: (frames(p(11), p(11), 11), frames(p(11), 11, 12)),  # a new episode: lane 0's old frames are not used
        1: (frames(p(101), p(101), 101), frames(p(101), 101, 102)),
        7: (frames(102, 103, 104), frames(103, 104, 105)),
    }
    for slot, (obs, nxt) in cases.items():
        r = one(buf, slot)
        np.testing.assert_array_equal(r["obs"], obs, err_msg=f"obs of slot {slot}")
        np.testing.assert_array_equal(r["next_obs"], nxt, err_msg=f"next_obs of slot {slot}")
    assert one(buf, 4)["done"] and one(buf, 4)["discount"] == 0.0


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_frame_stack_with_n_step_pads_the_next_stack_with_the_windows_frames(padding):
    buf = stacked_k2(padding, n_step=2)
    z = 1 if padding == "reset" else 0
    r = one(buf, 0)  # tickets 0, 2: E = 2; next stack = frames of tickets 0, 2 and the next frame (ticket 4)
    np.testing.assert_array_equal(r["obs"], frames(z, z, 1))
    np.testing.assert_array_equal(r["next_obs"], frames(1, 2, 3))
    assert (r["reward"], r["discount"]) == (1 + 0.5 * 2, 0.25)
    r = one(buf, 2)  # tickets 2, 4 (terminated): final frame
    np.testing.assert_array_equal(r["next_obs"], frames(2, 3, 4))
    assert (r["reward"], r["done"], r["discount"]) == (2 + 0.5 * 3, True, 0.0)
    r = one(buf, 6)  # ticket 8 has no next frame: m = 1
    np.testing.assert_array_equal(r["next_obs"], frames(z * 11, 11, 12))
    assert (r["reward"], r["discount"]) == (4, 0.5)
    r = one(buf, 5)  # tickets 5, 7: the window stops before ticket 9 (no next frame)
    np.testing.assert_array_equal(r["next_obs"], frames(103, 104, 105))
    assert (r["reward"], r["discount"]) == (30 + 0.5 * 40, 0.25)


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_stacked_input_stores_only_the_newest_frame(padding):
    buf = ReplayBuffer(8, image_fields(frame=(3, 2)), seed=0, frame_stack=3, stacked_input=True,
                       stack_padding=padding)
    junk = -9.0  # older frames of the env's stacks are not stored

    def stack_row(newest):
        return np.array([[junk, junk], [junk, junk], [newest, newest]], np.float32)

    buf.add(obs=stack_row(1), reward=0.0, next_obs=stack_row(junk), done=False)
    buf.add(obs=stack_row(2), reward=0.0, next_obs=stack_row(3), done=True)  # final: newest frame 3
    buf.add(obs=stack_row(7), reward=0.0, next_obs=stack_row(junk), done=False)
    assert buf.storage["obs"].tolist() == [[1, 1], [2, 2], [7, 7]]
    z = 1 if padding == "reset" else 0
    r = one(buf, 0)
    np.testing.assert_array_equal(r["obs"], frames(z, z, 1, shape=(2,)))
    np.testing.assert_array_equal(r["next_obs"], frames(z, 1, 2, shape=(2,)))
    r = one(buf, 1)
    np.testing.assert_array_equal(r["obs"], frames(z, 1, 2, shape=(2,)))
    np.testing.assert_array_equal(r["next_obs"], frames(1, 2, 3, shape=(2,)))
    assert buf._sampleable() == [0, 1]


# --- ring wrap-around ---------------------------------------------------------------------------------------------


def test_a_step_whose_oldest_frame_was_overwritten_is_not_sampleable():
    buf = ReplayBuffer(4, image_fields(), seed=0, frame_stack=3)  # K=1, dedup
    for v in range(1, 7):  # tickets 0..5 -> frames 1..6; the ring keeps tickets 2..5 in slots 2, 3, 0, 1
        buf.add(obs=frames(v)[0], reward=float(v), next_obs=frames(0)[0], done=False)
    # ticket 2 needs ticket 0, ticket 3 needs ticket 1 (both overwritten); ticket 5 is the newest
    assert buf._sampleable() == [0]
    r = one(buf, 0)
    np.testing.assert_array_equal(r["obs"], frames(3, 4, 5))
    np.testing.assert_array_equal(r["next_obs"], frames(4, 5, 6))
    with pytest.raises(ValueError, match=r"^get: slot 2 at position 1 holds no sampleable step$"):
        buf.get([0, 2])
    with pytest.raises(IndexError, match=r"get: index 4 at position 0 is out of range"):
        buf.get([4])  # out of range keeps its IndexError
    assert set(buf.sample(50).indices.tolist()) == {0}


def test_an_episode_start_after_the_overwritten_frames_keeps_its_step_sampleable():
    buf = ReplayBuffer(4, image_fields(), seed=0, frame_stack=3)
    for v, done in [(1, False), (2, False), (3, True), (4, False), (5, False), (6, False)]:
        buf.add(obs=frames(v)[0], reward=0.0, next_obs=frames(9)[0], done=done)
    # ticket 2 (slot 2) needs ticket 0: overwritten; ticket 3 (slot 3) starts an episode: needs only itself
    assert buf._sampleable() == [0, 3]
    np.testing.assert_array_equal(one(buf, 3)["obs"], frames(4, 4, 4))
    np.testing.assert_array_equal(one(buf, 0)["obs"], frames(4, 4, 5))


def test_ring_wrap_with_lanes_and_n_step():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, num_envs=2, next_obs="dedup", n_step=3, gamma=0.5)
    for k in range(4):  # tickets 0..7; the ring keeps tickets 4..7 (slots 0..3)
        add(buf, [k, 100 + k], [-7, -7], [1 + k, 10 + k], [False, False])
    assert buf._sampleable() == [0, 1]  # tickets 4, 5; tickets 6, 7 are the lanes' newest
    r = one(buf, 0)  # ticket 4 -> window 4 only (ticket 6 has no next obs)
    assert (r["obs"], r["next_obs"], r["reward"]) == (2, 3, 3.0)
    assert buf.get([0]).generations.tolist() == [2]


# --- Dict observations --------------------------------------------------------------------------------------------


def test_dict_observations_are_stacked_key_by_key():
    fields = {"obs.a": ((2, 2), np.float32), "obs.b": ((1, 3), np.uint8), "action": ((), np.int64),
              "reward": ((), np.float32), "next_obs.a": ((2, 2), np.float32), "next_obs.b": ((1, 3), np.uint8),
              "done": ((), np.bool_)}
    buf = ReplayBuffer(8, fields, seed=0, frame_stack=2, stack_padding="zero")

    def ob(v):
        return {"a": np.full((2, 2), v, np.float32), "b": np.full((1, 3), v + 100, np.uint8)}

    buf.add(obs=ob(1), action=5, reward=1.0, next_obs=ob(0), done=False)
    buf.add(obs=ob(2), action=6, reward=2.0, next_obs=ob(3), done=True)
    assert list(buf.storage) == ["obs.a", "obs.b", "action", "reward", "done"]
    b = buf.get([0, 1])
    assert list(b) == ["obs.a", "obs.b", "action", "reward", "next_obs.a", "next_obs.b", "done", "discount"]
    np.testing.assert_array_equal(b["obs.a"][0], frames(0, 1))
    np.testing.assert_array_equal(b["obs.b"][0], np.stack([np.zeros((1, 3)), np.full((1, 3), 101)]))
    np.testing.assert_array_equal(b["next_obs.a"][0], frames(1, 2))
    np.testing.assert_array_equal(b["next_obs.b"][1], np.stack([np.full((1, 3), 102), np.full((1, 3), 103)]))
    assert b["obs.b"].dtype == np.uint8 and b["action"].tolist() == [5, 6] and b["done"].tolist() == [False, True]


# --- sampling -----------------------------------------------------------------------------------------------------


def test_uniform_sample_draws_only_and_evenly_from_sampleable_steps():
    buf = next_step_lane("dedup")  # sampleable: slots 0, 1, 3
    b = buf.sample(3000)
    counts = collections.Counter(b.indices.tolist())
    assert set(counts) == {0, 1, 3} and b.generations is None and b.weights is None
    for slot in (0, 1, 3):
        assert abs(counts[slot] / 3000 - 1 / 3) < 0.05
    for k, slot in enumerate(b.indices[:20]):  # each row is the slot's row
        assert b["obs"][k] == {0: 0, 1: 1, 3: 10}[int(slot)]
    again = buf.sample(3000, out=b)  # out= takes the batch layout (discount included)
    assert again is b and set(b.indices.tolist()) == {0, 1, 3}


def test_empty_buffer_is_still_reported_as_empty():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, num_envs=2)
    with pytest.raises(ValueError, match="sample: the buffer is empty"):
        buf.sample(1)


def test_prioritized_never_draws_non_steps_and_draws_in_proportion():
    buf = PrioritizedReplayBuffer(8, scalar_fields(), alpha=1.0, eps=0.0, seed=0, autoreset="next_step")
    add(buf, [0], [1], [0], [False])
    add(buf, [1], [2], [0], [True])
    add(buf, [2], [10], [0], [False])  # reset row: slot 2
    add(buf, [10], [11], [0], [False])
    assert buf._leaves()[:4].tolist() == [1.0, 1.0, 0.0, 1.0]  # a non-step's leaf is 0
    buf.update_priorities([0, 1, 2, 3], [1.0, 3.0, 100.0, 6.0])
    assert buf._leaves()[:4].tolist() == [1.0, 3.0, 0.0, 6.0]  # still 0 after update_priorities
    b = buf.sample(10000, beta=1.0)
    counts = collections.Counter(b.indices.tolist())
    assert set(counts) == {0, 1, 3}
    for slot, p in ((0, 0.1), (1, 0.3), (3, 0.6)):
        assert abs(counts[slot] / 10000 - p) < 0.01
    w = dict(zip(b.indices.tolist(), b.weights.tolist()))
    assert w[0] == 1.0 and w[1] == pytest.approx(1 / 3) and w[3] == pytest.approx(1 / 6)
    g = buf.get([3])
    assert g.weights.tolist() == [1.0] and g["obs"].tolist() == [10]
    buf.update_priorities([0], [0.0])  # eps = 0: a zero leaf is never drawn, and the weights' minimum is positive
    b = buf.sample(1000, beta=1.0)
    w = dict(zip(b.indices.tolist(), b.weights.tolist()))
    assert set(w) == {1, 3} and w[1] == 1.0 and w[3] == pytest.approx(0.5)
    buf.alpha = 0.5  # leaves recomputed: the non-step stays 0
    assert buf._leaves()[2] == 0.0 and buf._leaves()[3] == pytest.approx(math.sqrt(6))


def test_prioritized_dedup_waits_for_the_next_step():
    buf = PrioritizedReplayBuffer(4, scalar_fields(), seed=0, next_obs="dedup", num_envs=2)
    add(buf, [0, 100], [-7, -7], [0, 0], [False, False])
    with pytest.raises(ValueError) as e:
        buf.sample(2, beta=0.4)
    assert str(e.value) == NOTHING
    add(buf, [1, 101], [-7, 5], [0, 0], [False, True])
    b = buf.sample(500, beta=0.4)
    assert set(b.indices.tolist()) == {0, 1, 3}  # slot 2: lane 0's newest waits
    assert b["next_obs"][b.indices == 3].tolist()[0] == 5


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, kwargs, fields, message", [
    (ValueError, dict(capacity=5, num_envs=2), None,
     r"^ReplayBuffer: capacity must be a multiple of num_envs .*got capacity=5 and num_envs=2"),
    (ValueError, dict(num_envs=0), None, r"^ReplayBuffer: num_envs must be >= 1, got 0$"),
    (TypeError, dict(num_envs=1.5), None, r"^ReplayBuffer: num_envs must be an int, got float$"),
    (ValueError, dict(num_envs=1), {"x": ((), np.float32)}, r"^ReplayBuffer: an episodic buffer needs an 'obs' field"),
    (ValueError, dict(num_envs=1), "no next_obs", r"^ReplayBuffer: an episodic buffer needs a 'next_obs' field"),
    (ValueError, dict(num_envs=1), "no reward", r"^ReplayBuffer: an episodic buffer needs a 'reward' field"),
    (ValueError, dict(num_envs=1), "no done", r"^ReplayBuffer: an episodic buffer needs a 'done' field"),
    (ValueError, dict(num_envs=1), "next_obs shape", r"^ReplayBuffer: field 'next_obs' must have the shape and dtype"),
    (ValueError, dict(num_envs=1), "next_obs dtype", r"^ReplayBuffer: field 'next_obs' must have the shape and dtype"),
    (ValueError, dict(num_envs=1), "done int", r"^ReplayBuffer: field 'done' must be a scalar bool"),
    (ValueError, dict(num_envs=1), "truncated float", r"^ReplayBuffer: field 'truncated' must be a scalar bool"),
    (ValueError, dict(num_envs=1), "reward int", r"^ReplayBuffer: field 'reward' must be a scalar float32 or float64"),
    (ValueError, dict(frame_stack=0), None, r"^ReplayBuffer: frame_stack must be >= 1, got 0$"),
    (ValueError, dict(frame_stack=2), None, r"^ReplayBuffer: frame_stack=2 stacks image frames, so 'obs' must have"),
    (ValueError, dict(frame_stack=2, next_obs="store"), "image", r"^ReplayBuffer: frame_stack=2 .*next_obs must be "
                                                                 r"'dedup'"),
    (ValueError, dict(frame_stack=3, stacked_input=True), "image",
     r"^ReplayBuffer: stacked_input=True with frame_stack=3 needs 'obs' rows of shape \(3, \*frame\)"),
    (ValueError, dict(n_step=0), None, r"^ReplayBuffer: n_step must be >= 1, got 0$"),
    (ValueError, dict(gamma=1.5), None, r"^ReplayBuffer: gamma must be in \[0, 1\], got 1.5$"),
    (ValueError, dict(gamma=-0.1), None, r"^ReplayBuffer: gamma must be in \[0, 1\], got -0.1$"),
    (ValueError, dict(next_obs="copy"), None, r"^ReplayBuffer: next_obs must be 'store' or 'dedup', got 'copy'$"),
    (ValueError, dict(stack_padding="edge"), None,
     r"^ReplayBuffer: stack_padding must be 'reset' or 'zero', got 'edge'$"),
    (ValueError, dict(autoreset="sometimes"), None,
     r"^ReplayBuffer: autoreset must be 'same_step' or 'next_step', got 'sometimes'$"),
])
def test_constructor_errors(kind, kwargs, fields, message):
    f = scalar_fields()
    changes = {
        "no next_obs": lambda: {k: v for k, v in f.items() if k != "next_obs"},
        "no reward": lambda: {k: v for k, v in f.items() if k != "reward"},
        "no done": lambda: {k: v for k, v in f.items() if k != "done"},
        "next_obs shape": lambda: {**f, "next_obs": ((2,), np.float32)},
        "next_obs dtype": lambda: {**f, "next_obs": ((), np.float64)},
        "done int": lambda: {**f, "done": ((), np.int8)},
        "truncated float": lambda: {**f, "truncated": ((), np.float32)},
        "reward int": lambda: {**f, "reward": ((), np.int32)},
        "image": lambda: image_fields(frame=(4, 2)),
    }
    fields = changes[fields]() if isinstance(fields, str) else (fields or f)
    capacity = kwargs.pop("capacity", 4)
    with pytest.raises(kind, match=message):
        ReplayBuffer(capacity, fields, **kwargs)
    with pytest.raises(kind, match=message.replace("ReplayBuffer", "PrioritizedReplayBuffer")):
        PrioritizedReplayBuffer(capacity, fields, **kwargs)


def test_setter_errors_change_nothing():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, n_step=2, gamma=0.5)
    with pytest.raises(ValueError, match=r"^ReplayBuffer.n_step: n_step must be >= 1, got 0$"):
        buf.n_step = 0
    with pytest.raises(TypeError, match=r"^ReplayBuffer.n_step: n_step must be an int, got float$"):
        buf.n_step = 2.0
    with pytest.raises(ValueError, match=r"^ReplayBuffer.gamma: gamma must be in \[0, 1\], got 2.0$"):
        buf.gamma = 2.0
    with pytest.raises(TypeError, match=r"^ReplayBuffer.gamma: gamma must be a real number, got str$"):
        buf.gamma = "0.9"
    assert (buf.n_step, buf.gamma) == (2, 0.5)


@pytest.mark.parametrize("k, rows", [(2, 3), (2, 1), (3, 2), (1, 2)])
def test_add_with_a_row_count_other_than_k_changes_nothing(k, rows):
    buf = ReplayBuffer(12, scalar_fields(), seed=0, num_envs=k, next_obs="dedup")
    add(buf, list(range(k)), [0] * k, [0] * k, [False] * k)
    before = {name: v.copy() for name, v in buf.storage.items()}
    row = dict(obs=[1.0] * rows, action=[0] * rows, reward=[0.0] * rows, next_obs=[0.0] * rows, done=[False] * rows,
               truncated=[False] * rows)
    if rows == 1:
        row = {name: v[0] for name, v in row.items()}  # an unbatched row is 1 row
    with pytest.raises(ValueError) as e:
        buf.add(**row)
    assert str(e.value) == (f"add: a buffer with num_envs={k} takes exactly {k} rows per add (one per lane), "
                            f"got {rows}")
    assert len(buf) == k and buf.total_added == k
    for name, v in buf.storage.items():
        np.testing.assert_array_equal(v, before[name])
    add(buf, [10 + j for j in range(k)], [0] * k, [0] * k, [False] * k)  # lanes carry on where they were
    assert buf._sampleable() == list(range(k))
    assert [one(buf, j)["next_obs"] for j in range(k)] == [10 + j for j in range(k)]


def test_a_single_lane_takes_a_row_with_or_without_the_leading_axis():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, num_envs=1)
    buf.add(obs=1.0, action=0, reward=0.0, next_obs=2.0, done=False, truncated=False)
    add(buf, [2], [3], [0], [False])
    assert buf.storage["obs"].tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"takes exactly 1 rows per add \(one per lane\), got 0$"):
        add(buf, [], [], [], [])


def test_add_type_errors_of_the_plain_buffer_still_apply():
    buf = ReplayBuffer(4, scalar_fields(), seed=0, num_envs=1)
    with pytest.raises(TypeError, match=r"add: missing field 'truncated'"):
        buf.add(obs=1.0, action=0, reward=0.0, next_obs=2.0, done=False)
    assert len(buf) == 0


# --- from_env -----------------------------------------------------------------------------------------------------


def test_from_env_spaces_tuple_is_episodic_with_one_lane():
    spaces = pytest.importorskip("gymnasium.spaces")

    buf = ReplayBuffer.from_env((spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2)), 8, seed=0)
    assert list(buf.fields) == ["obs", "action", "reward", "next_obs", "done", "truncated"]
    assert buf.fields["truncated"] == ((), np.dtype(np.bool_))
    assert (buf.num_envs, buf.episode_config.autoreset) == (1, "same_step")
    per = PrioritizedReplayBuffer.from_env((spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2)), 8, seed=0,
                                           alpha=0.5, n_step=3)
    assert (per.alpha, per.n_step, per.num_envs) == (0.5, 3, 1)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_from_env_on_a_cartpole_vector_env(mode):
    gym = pytest.importorskip("gymnasium")
    kwargs = {} if mode == "next_step" else {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(2)], **kwargs)
    buf = ReplayBuffer.from_env(envs, 512, seed=0)
    assert list(buf.fields) == ["obs", "action", "reward", "next_obs", "done", "truncated"]
    assert (buf.num_envs, buf.episode_config.autoreset, buf.episode_config.dedup) == (2, mode, False)
    obs, _ = envs.reset(seed=0)
    envs.action_space.seed(0)
    records = []  # per add: (obs, next_obs recorded for the batch, terminated, truncated)
    ended = np.zeros(2, bool)  # next_step: whether the lane's previous row was an end
    non_steps = []
    for i in range(200):
        actions = envs.action_space.sample()
        nxt, rew, term, trunc, info = envs.step(actions)
        true_next = nxt.copy()
        if mode == "same_step" and (term | trunc).any():
            for k in np.flatnonzero(term | trunc):
                true_next[k] = info["final_obs"][k]
        buf.add(obs=obs, action=actions, reward=rew, next_obs=true_next, done=term, truncated=trunc)
        records.append((obs.copy(), true_next, term.copy(), trunc.copy()))
        if mode == "next_step":
            non_steps += [2 * i + k for k in range(2) if ended[k]]
            ended = term | trunc
        obs = nxt
    assert len(buf) == 400 and sum(r[2].sum() for r in records) >= 2  # some episodes ended
    assert buf._sampleable() == [s for s in range(400) if s not in non_steps]
    if mode == "next_step":
        assert len(non_steps) >= 2
    for slot in buf._sampleable():  # n_step=1, store: each step's own row
        i, k = divmod(slot, 2)
        r = one(buf, slot)
        np.testing.assert_array_equal(r["obs"], records[i][0][k])
        np.testing.assert_array_equal(r["next_obs"], records[i][1][k])
        assert (r["done"], r["truncated"]) == (records[i][2][k], records[i][3][k])
    envs.close()
