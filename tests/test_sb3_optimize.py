"""fastreplay.sb3 with optimize_memory_usage=True (the core's next-observation dedup) against SB3's own
memory-optimised buffer and against fastreplay's plain buffer fed the same steps: the stored columns, the samples,
the sampling distribution, CleanRL's truncations, column writes, bad input and pickling."""
import copy
import pickle

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")
th = pytest.importorskip("torch")

from gymnasium import spaces  # noqa: E402
from stable_baselines3.common import buffers as sb3_buffers  # noqa: E402

import fastreplay.sb3 as fs  # noqa: E402

BOX = (spaces.Box(0, 255, (2, 3), np.uint8), spaces.Discrete(4))


def stream(n_envs, steps, seed, p_term=0.15, trunc_every=0, reset_at=()):
    """CleanRL-style steps (obs, next_obs, action, reward, done, infos): done = terminated, with next_obs the
    reset observation there (as CleanRL passes it); a truncation (every `trunc_every` steps of an env) passes the
    final observation with done False and the next obs is a reset; at steps `reset_at` env 0 is reset unannounced."""
    rng = np.random.default_rng(seed)
    space = BOX[0]

    def frame():
        return rng.integers(0, 256, (n_envs,) + space.shape, dtype=np.uint8)

    obs, t = frame(), np.zeros(n_envs, int)
    for k in range(steps):
        nxt = frame()
        t += 1
        term = rng.random(n_envs) < p_term
        trunc = (t >= trunc_every) & ~term if trunc_every else np.zeros(n_envs, bool)
        reset = frame()
        given = nxt.copy()
        given[term] = reset[term]  # CleanRL: real_next_obs is next_obs (the reset obs) for terminations
        infos = [{} for _ in range(n_envs)]
        yield obs, given, rng.integers(0, 4, n_envs), rng.normal(size=n_envs), term, infos
        obs = given.copy()
        obs[trunc] = reset[trunc]
        t[term | trunc] = 0
        if k in reset_at:
            obs[0] = frame()[0]
            t[0] = 0


def samples_of(rb, inds, seed=0):
    np.random.seed(seed)
    return rb._get_samples(np.asarray(inds))


@pytest.mark.parametrize("n_envs", [1, 3])
def test_matches_sb3_where_sb3_is_right_and_gives_true_next_obs_elsewhere(n_envs):
    """SB3's memory-optimised buffer and ours fed the same CleanRL-style steps (terminations, truncations without
    done, an unannounced reset), wrapping twice: every field of every step SB3 samples agrees, except the next
    observation of rows whose episode did not continue into the next row, where SB3 returns the next episode's
    first observation and ours the one that was given."""
    size = 8
    theirs = sb3_buffers.ReplayBuffer(size * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                                      handle_timeout_termination=False)
    ours = fs.ReplayBuffer(size * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                           handle_timeout_termination=False, seed=0)
    given = {}  # (step, env) -> the next_obs given, and whether the next add continued it
    steps = list(stream(n_envs, 23, seed=n_envs, trunc_every=4, reset_at=(11,)))
    differs = 0
    for k, step in enumerate(steps):
        theirs.add(*step)
        ours.add(*step)
        assert (ours.pos, ours.full, ours.size()) == (theirs.pos, theirs.full, theirs.size())
        # SB3 writes each next observation into row pos; when full that overwrote the oldest step's observation,
        # which ours still holds (documented): compare the other rows
        keep = [i for i in range(ours.size()) if not (ours.full and i == ours.pos)]
        np.testing.assert_array_equal(ours.observations[keep], theirs.observations[keep])
        for name in ("actions", "rewards", "dones"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name)[:ours.size()])
        for e in range(n_envs):
            given[(k % size, e)] = step[1][e].copy()
        # the steps SB3 samples: [0, pos) or, when full, all but pos
        inds = [i for i in range(theirs.size()) if not (theirs.full and i == theirs.pos)]
        a, b = samples_of(theirs, inds, seed=k), samples_of(ours, inds, seed=k)
        np.random.seed(k)
        envs = np.random.randint(0, n_envs, size=len(inds))  # the env each row drew (same draw as _get_samples)
        for x, y in ((a.observations, b.observations), (a.actions, b.actions), (a.rewards, b.rewards),
                     (a.dones, b.dones)):
            assert (x.dtype, x.shape) == (y.dtype, y.shape)
            th.testing.assert_close(x, y, rtol=0, atol=0)
        for r, (i, e) in enumerate(zip(inds, envs)):
            want = given[(i, e)]
            np.testing.assert_array_equal(b.next_observations[r].numpy(), want)  # always the given next obs
            if not np.array_equal(a.next_observations[r].numpy(), want):
                differs += 1
                continued = i != (theirs.pos - 1) % size and np.array_equal(theirs.observations[(i + 1) % size, e],
                                                                              want)
                assert not continued
    assert differs  # the stream has rows where SB3's next observation is not the given one


def test_latest_step_is_sampled_uniformly_with_the_rest():
    """SB3 samples the latest step (its next observation is at observations[pos]); so does ours, with the same
    probability as every other stored row (the core cannot sample it before the next add: the adapter mixes it
    in). Counted over many draws, before and after the buffer wraps."""
    n_envs, size = 2, 5
    ours = fs.ReplayBuffer(size * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                           handle_timeout_termination=False, seed=3)
    steps = list(stream(n_envs, 8, seed=5, p_term=0.0))
    for n_steps in (1, 3, 8):
        ours.reset()
        for step in steps[:n_steps]:
            ours.add(*step)
        stored = ours.size() * n_envs
        counts = np.zeros(size * n_envs)
        draws = 0
        for _ in range(300):
            s = ours.sample(100)
            # identify each row by its (obs, action): unique per stored row in this stream
            obs = s.observations.numpy().reshape(100, -1)
            col = ours.observations.reshape(stored, -1)
            match = (obs[:, None, :] == col[None, :, :]).all(-1)
            assert (match.sum(1) == 1).all()
            counts[:stored] += match.sum(0)
            draws += 100
        expected = draws / stored
        sigma = np.sqrt(draws * (1 / stored) * (1 - 1 / stored))
        assert (np.abs(counts[:stored] - expected) < 5 * sigma).all(), (n_steps, counts, expected)
        latest = ((ours.pos - 1) % size) * n_envs + np.arange(n_envs)
        assert counts[latest].min() > 0


def test_plain_buffer_equivalence_dict_discrete_and_pickle():
    """Dict and Discrete observations (the general add path) give the samples of a plain buffer fed the same
    steps, including an unannounced reset; pickling and deepcopy keep the pending and reset rows."""
    obs_space = spaces.Dict({"img": spaces.Box(0, 255, (3,), np.uint8), "id": spaces.Discrete(5)})
    act_space = spaces.Box(-1, 1, (2,), np.float32)
    n_envs = 2
    plain = fs.DictReplayBuffer(12, obs_space, act_space, "cpu", n_envs=n_envs)
    opt = fs.DictReplayBuffer(12, obs_space, act_space, "cpu", n_envs=n_envs, optimize_memory_usage=True)
    rng = np.random.default_rng(0)

    def draw():
        return {"img": rng.integers(0, 256, (n_envs, 3), dtype=np.uint8), "id": rng.integers(0, 5, n_envs)}

    obs = draw()
    broken = False
    for k in range(17):
        nxt = draw()
        done = rng.random(n_envs) < 0.2
        infos = [{"TimeLimit.truncated": bool(d and rng.random() < 0.5)} for d in done]
        step = (obs, nxt, rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs), done, infos)
        plain.add(*step)
        opt.add(*step)
        broken |= bool(opt._resets)
        obs = {key: v.copy() for key, v in nxt.items()}
        if k % 5 == 2:
            obs["id"][1] = (obs["id"][1] + 1) % 5  # reset without done, seen in one key only
        inds = np.arange(opt.size())
        a, b = samples_of(plain, inds, seed=k), samples_of(opt, inds, seed=k)
        for x, y in zip(a, b):
            if isinstance(x, dict):
                for key in x:
                    th.testing.assert_close(x[key], y[key], rtol=0, atol=0)
            elif x is not None:
                th.testing.assert_close(x, y, rtol=0, atol=0)
    assert broken
    for again in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        a, b = samples_of(opt, np.arange(opt.size()), 1), samples_of(again, np.arange(opt.size()), 1)
        for key in a.next_observations:
            th.testing.assert_close(a.next_observations[key], b.next_observations[key], rtol=0, atol=0)
        step = (obs, draw(), rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs), np.zeros(n_envs, bool),
                [{}, {}])
        opt2 = copy.deepcopy(opt)
        opt2.add(*step)
        again.add(*step)  # continues where the original was: the same rows, the same next observations
        a, b = samples_of(opt2, np.arange(opt2.size()), 2), samples_of(again, np.arange(opt2.size()), 2)
        for key in a.next_observations:
            th.testing.assert_close(a.next_observations[key], b.next_observations[key], rtol=0, atol=0)


BAD_ADDS = [
    ("obs shape", lambda s: (s[0][..., :2],) + s[1:]),
    ("next_obs shape", lambda s: (s[0], np.zeros((5, 5), np.uint8)) + s[2:]),
    ("action size", lambda s: s[:2] + (np.zeros(7, np.int64),) + s[3:]),
    ("reward", lambda s: s[:3] + (np.array(["x"] * len(s[3])),) + s[4:]),
    ("done length", lambda s: s[:4] + (np.zeros(9, bool),) + s[5:]),
]


@pytest.mark.parametrize("what,bad", BAD_ADDS, ids=[b[0] for b in BAD_ADDS])
@pytest.mark.parametrize("n_envs", [1, 2])
def test_bad_add_raises_as_sb3_and_changes_nothing(what, bad, n_envs):
    theirs = sb3_buffers.ReplayBuffer(6 * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                                      handle_timeout_termination=False)
    ours = fs.ReplayBuffer(6 * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                           handle_timeout_termination=False, seed=0)
    plain = fs.ReplayBuffer(6 * n_envs, *BOX, "cpu", n_envs=n_envs, handle_timeout_termination=False, seed=0)
    steps = list(stream(n_envs, 9, seed=1, reset_at=(3,)))
    for k, step in enumerate(steps):
        if k in (2, 4, 7):  # 4: right after the unannounced reset was noticed
            with pytest.raises((ValueError, TypeError)):
                theirs.add(*bad(step))  # SB3 refuses it too (it may have written part of the step: not compared)
            before = (ours.pos, ours.full, ours.size(), np.array(ours.observations), np.array(ours.dones),
                      ours._pend, ours._n_pend, dict(ours._resets))
            with pytest.raises((ValueError, TypeError)):
                ours.add(*bad(step))
            after = (ours.pos, ours.full, ours.size(), np.array(ours.observations), np.array(ours.dones),
                     ours._pend, ours._n_pend, dict(ours._resets))
            for x, y in zip(before[:5], after[:5]):
                np.testing.assert_array_equal(x, y)
            assert before[5:7] == after[5:7] and before[7].keys() == after[7].keys()
        ours.add(*step)
        plain.add(*step)
        inds = np.arange(ours.size())
        a, b = samples_of(plain, inds, seed=k), samples_of(ours, inds, seed=k)
        for x, y in zip(a, b):
            if x is not None:
                th.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_column_writes_as_sb3(n_envs):
    """Item assignment into the columns writes the stored rows as SB3's arrays do; samples read them. A value
    numpy refuses raises and changes nothing."""
    theirs = sb3_buffers.ReplayBuffer(6 * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                                      handle_timeout_termination=False)
    ours = fs.ReplayBuffer(6 * n_envs, *BOX, "cpu", n_envs=n_envs, optimize_memory_usage=True,
                           handle_timeout_termination=False, seed=0)
    for step in stream(n_envs, 4, seed=2, p_term=0.0):
        theirs.add(*step)
        ours.add(*step)
    for rb in (theirs, ours):
        rb.dones[3] = True  # SB3's _setup_learn before a second learn()
        rb.rewards[1, 0] = 5.0
        rb.actions[0] = 2
        rb.observations[2] = 7  # also the next observation of step 1
    inds = np.arange(4)
    a, b = samples_of(theirs, inds), samples_of(ours, inds)
    for x, y in zip(a, b):
        if x is not None:
            th.testing.assert_close(x, y, rtol=0, atol=0)
    before = [np.array(c) for c in (ours.dones, ours.rewards, ours.observations)]
    with pytest.raises(ValueError):
        ours.dones[0] = "not a number"
    with pytest.raises(ValueError):
        ours.observations[1] = np.zeros((3, 3))  # does not broadcast
    with pytest.raises(IndexError):
        ours.rewards[10] = 1.0
    for x, y in zip(before, (ours.dones, ours.rewards, ours.observations)):
        np.testing.assert_array_equal(x, y)


def test_pickles_of_the_previous_layout():
    """A plain buffer pickled before this layout (no _done_field, column writes in an overlay) loads with its
    writes; one with optimize_memory_usage (an aside store) is refused with a clear error."""
    rb = fs.ReplayBuffer(8, *BOX, "cpu", handle_timeout_termination=False, seed=0)
    for step in stream(1, 3, seed=0, p_term=0.0):
        rb.add(*step)
    state = dict(rb.__dict__)
    del state["_done_field"]
    state["_patches"] = {"done": {1: np.float32(1.0)}, "reward": {2: np.float32(9.0)}}
    old = fs.ReplayBuffer.__new__(fs.ReplayBuffer)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.dones[:, 0].tolist() == [0.0, 1.0, 0.0] and old.rewards[2, 0] == 9.0
    assert samples_of(old, [1]).dones[0, 0] == 1
    opt = fs.ReplayBuffer(8, *BOX, "cpu", optimize_memory_usage=True, seed=0)
    state = dict(opt.__dict__)
    del state["_done_field"]
    with pytest.raises(ValueError, match="older fastreplay.sb3 with optimize_memory_usage"):
        fs.ReplayBuffer.__new__(fs.ReplayBuffer).__setstate__(state)
