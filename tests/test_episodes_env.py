"""Episode-aware buffers (docs/episodes.md) against real gymnasium vector envs: every sampled ``obs``/``next_obs``
stack must be bit-identical to the stack ``gymnasium.wrappers.FrameStackObservation`` emitted for that step.

The expected values come from the envs only: a generated env whose frames encode (lane, episode, step, frame
counter) in their pixels, run through ``SyncVectorEnv`` in both autoreset modes and both stack paddings; and a short
``ALE/Pong-v5`` run (``ale_py``) compared with a plain buffer holding the full stacks the env emitted.
"""
import functools
import importlib
import types

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")
from gymnasium import spaces  # noqa: E402
from gymnasium.vector import AutoresetMode, SyncVectorEnv  # noqa: E402
from gymnasium.wrappers import FrameStackObservation, TimeLimit  # noqa: E402

import fastreplay as fr  # noqa: E402

K = 8  # lanes
S = 4  # frame stack
FRAME = (12, 12)
STEPS = 400  # vector steps per recorded run: 3200 rows
CAP = K * 48  # 384 rows: the ring wraps 8 times
MAX_STEPS = 12  # TimeLimit: truncations
P_TERM = 0.12  # per-step termination probability (episodes of 1 step included)
GAMMA = 0.9
MAXC = 2 * STEPS + 4  # frames one lane can emit (same-step: the final and the reset frame in one step)
MARK = 0xA5  # pixel [0, 0] of every real frame: a zero padding frame is never a real one
SEED = 1234

IMPLS = ["fastreplay", "fastreplay.reference"]
MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


class CodedEnv(gym.Env):
    """Frames (12, 12) uint8: row 0 holds MARK, lane, episode (2 bytes), step and the lane's frame counter (3 bytes);
    the rest is a pattern of (lane, counter). Every frame is unique. Rewards are random and distinct; each step
    terminates with probability P_TERM (TimeLimit adds truncations)."""

    metadata = {"render_modes": []}

    def __init__(self, lane):
        self.lane = lane
        self.observation_space = spaces.Box(0, 255, FRAME, np.uint8)
        self.action_space = spaces.Discrete(3)
        self._episode = -1
        self._step = 0
        self._counter = -1

    def _frame(self):
        self._counter += 1
        c, e = self._counter, self._episode
        f = ((np.arange(FRAME[0] * FRAME[1], dtype=np.uint32) * (2 * c + 7 * self.lane + 3) + c) % 251)
        f = f.astype(np.uint8).reshape(FRAME)
        f[0, :8] = [MARK, self.lane, e >> 8, e & 255, self._step, c >> 16, (c >> 8) & 255, c & 255]
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._episode += 1
        self._step = 0
        return self._frame(), {}

    def step(self, action):
        self._step += 1
        reward = float(self.np_random.standard_normal()) + int(action)
        terminated = bool(self.np_random.random() < P_TERM)
        return self._frame(), reward, terminated, False, {}


def decode(frames):
    """(lane, episode, step, counter) of frames [..., 12, 12]."""
    f = frames[..., 0, :].astype(np.int64)
    assert (f[..., 0] == MARK).all(), "a newest frame is not a real env frame"
    return f[..., 1], f[..., 2] << 8 | f[..., 3], f[..., 4], f[..., 5] << 16 | f[..., 6] << 8 | f[..., 7]


def _vec(padding, mode, stacked):
    def make(k):
        env = TimeLimit(CodedEnv(k), MAX_STEPS)
        return FrameStackObservation(env, S, padding_type=padding) if stacked else env
    return SyncVectorEnv([functools.partial(make, k) for k in range(K)], autoreset_mode=MODES[mode])


@functools.lru_cache(maxsize=None)
def record(padding, mode):
    """Run the stacked vector env and an unwrapped copy (single frames) in lockstep. Returns the add streams for both
    and the ground truth, indexed by g = lane * MAXC + counter of the row's newest obs frame: the stacks the wrapped
    env emitted, reward (float32), flags, action, the row's ticket and its episode's start ticket."""
    wrapped, plain = _vec(padding, mode, True), _vec(padding, mode, False)
    rng = np.random.default_rng(SEED)
    n = K * MAXC
    gt = types.SimpleNamespace(
        obs=np.zeros((n, S) + FRAME, np.uint8), nxt=np.zeros((n, S) + FRAME, np.uint8),
        reward=np.zeros(n, np.float32), term=np.zeros(n, bool), trunc=np.zeros(n, bool),
        action=np.zeros(n, np.int64), ticket=np.full(n, -1, np.int64), start=np.full(n, -1, np.int64),
        step=np.zeros(n, bool), episode=np.zeros(n, np.int64), t=np.zeros(n, np.int64))
    stacked_adds, frame_adds = [], []
    obs, _ = wrapped.reset(seed=SEED)
    frames, _ = plain.reset(seed=SEED)
    np.testing.assert_array_equal(obs[:, -1], frames)
    after_end = np.zeros(K, bool)
    starts = {}
    ends = 0
    for i in range(STEPS):
        action = rng.integers(0, 3, K)
        nobs, rew, term, trunc, info = wrapped.step(action)
        nfr, rew2, term2, trunc2, info2 = plain.step(action)
        np.testing.assert_array_equal(nobs[:, -1], nfr)
        np.testing.assert_array_equal(rew, rew2)
        np.testing.assert_array_equal(term | trunc, term2 | trunc2)
        ended = term | trunc
        nxt, nxt_fr = nobs.copy(), nfr.copy()
        if mode == "same_step" and ended.any():
            for k in np.flatnonzero(ended):  # same-step: step returned the reset obs, the final one is in info
                nxt[k] = info["final_obs"][k]
                nxt_fr[k] = info2["final_obs"][k]
            np.testing.assert_array_equal(nxt[:, -1], nxt_fr)
        common = dict(action=action, reward=rew.astype(np.float32), done=term.copy(), truncated=trunc.copy())
        stacked_adds.append(dict(obs=obs, next_obs=nxt, **common))
        frame_adds.append(dict(obs=frames, next_obs=nxt_fr, **common))
        lane, ep, st, c = decode(obs[:, -1])
        np.testing.assert_array_equal(lane, np.arange(K))
        g = lane * MAXC + c
        assert (gt.ticket[g] == -1).all()
        is_step = ~after_end if mode == "next_step" else np.ones(K, bool)
        gt.obs[g], gt.nxt[g] = obs, nxt
        gt.reward[g], gt.term[g], gt.trunc[g] = rew.astype(np.float32), term, trunc
        gt.action[g], gt.ticket[g], gt.step[g] = action, i * K + np.arange(K), is_step
        gt.episode[g], gt.t[g] = ep, st
        for k in range(K):
            if is_step[k]:
                if st[k] == 0:
                    starts[(k, ep[k])] = i * K + k
                gt.start[g[k]] = starts[(k, ep[k])]
                if not ended[k]:  # the lane's next step is the next frame of the same episode
                    _, ep2, st2, c2 = decode(nxt[k, -1])
                    assert (ep2, st2, c2) == (ep[k], st[k] + 1, c[k] + 1)
        ends += int(ended.sum())
        after_end = ended
        obs, frames = nobs, nfr
    wrapped.close()
    plain.close()
    assert ends > STEPS * K / MAX_STEPS  # many episodes, both kinds of end
    assert gt.term.sum() > 50 and gt.trunc.sum() > 50 and (gt.term & (gt.t == 0)).sum() > 10
    return stacked_adds, frame_adds, gt


def expected_sampleable(gt, rows, cap):
    """(usable, sampleable) over g after ``rows`` rows were added: usable = a step whose next observation is stored
    (an end, or the lane's next step added); sampleable = usable and every frame of its stack still stored."""
    added = (gt.ticket >= 0) & (gt.ticket < rows)
    nxt_added = np.zeros_like(added)
    nxt_added[:-1] = added[1:]
    usable = gt.step & added & ((gt.term | gt.trunc) | nxt_added)
    oldest = rows - cap
    first = np.maximum(gt.start, gt.ticket - (S - 1) * K)
    return usable, usable & (gt.ticket >= oldest) & (first >= oldest)


def check_batch(batch, gt, rows, cap, n_step):
    """Every row of ``batch`` against the env's own output for the step its newest obs frame decodes to."""
    obs = batch["obs"]
    assert obs.shape[1:] == (S,) + FRAME and batch["next_obs"].shape == obs.shape
    lane, _, _, c = decode(obs[:, -1])
    g = lane * MAXC + c
    usable, sampleable = expected_sampleable(gt, rows, cap)
    bad = np.flatnonzero(~sampleable[g])
    assert bad.size == 0, f"sampled a step that is not sampleable: slot {batch.indices[bad[0]]}, lane " \
                          f"{lane[bad[0]]} episode {gt.episode[g[bad[0]]]} step {gt.t[g[bad[0]]]}"
    np.testing.assert_array_equal(batch.indices, gt.ticket[g] % cap)  # the row is the one stored in that slot
    np.testing.assert_array_equal(obs, gt.obs[g])
    np.testing.assert_array_equal(batch["action"], gt.action[g])
    # n-step window: grows while shorter than n, its last step is not an end and the lane's next step is usable
    e, m = g.copy(), np.ones(len(g), np.int64)
    ret = gt.reward[g].astype(np.float64)
    for j in range(1, n_step):
        grow = ~(gt.term[e] | gt.trunc[e]) & usable[e + 1]
        e = np.where(grow, e + 1, e)
        ret = ret + np.where(grow, GAMMA ** j * gt.reward[e].astype(np.float64), 0.0)
        m += grow
    np.testing.assert_array_equal(batch["next_obs"], gt.nxt[e])
    np.testing.assert_allclose(batch["reward"], ret.astype(np.float32), rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(batch["done"], gt.term[e])
    np.testing.assert_array_equal(batch["truncated"], gt.trunc[e])
    disc = np.where(gt.term[e], 0.0, np.power(GAMMA, m.astype(np.float64))).astype(np.float32)
    assert batch["discount"].dtype == np.float32
    np.testing.assert_allclose(batch["discount"], disc, rtol=1e-6, atol=0)
    return g


def fields(stacked):
    shape = (S,) + FRAME if stacked else FRAME
    return {"obs": (shape, np.uint8), "action": np.int64, "reward": np.float32, "next_obs": (shape, np.uint8),
            "done": bool, "truncated": bool}


def run_stream(impl, prioritized, padding, mode, stacked, n_step, points, batch_size):
    mod = importlib.import_module(impl)
    stacked_adds, frame_adds, gt = record(padding, mode)
    adds = stacked_adds if stacked else frame_adds
    opts = dict(num_envs=K, frame_stack=S, stacked_input=stacked, stack_padding=padding, n_step=n_step,
                gamma=GAMMA, autoreset=mode)
    if prioritized:
        buf = mod.PrioritizedReplayBuffer(CAP, fields(stacked), alpha=0.7, seed=5, **opts)
    else:
        buf = mod.ReplayBuffer(CAP, fields(stacked), seed=5, **opts)
    rng = np.random.default_rng(7)
    at = set(np.linspace(8, STEPS - 1, points).astype(int).tolist())
    seen = np.zeros(len(gt.ticket), bool)
    sampled = 0
    for i, row in enumerate(adds):
        buf.add(**row)
        if i not in at:
            continue
        rows = (i + 1) * K
        batch = buf.sample(batch_size, beta=0.5) if prioritized else buf.sample(batch_size)
        assert len(batch.indices) == batch_size
        seen[check_batch(batch, gt, rows, CAP, n_step)] = True
        sampled += batch_size
        if prioritized:
            buf.update_priorities(batch, rng.uniform(0.01, 5.0, batch_size))
    _, sampleable = expected_sampleable(gt, STEPS * K, CAP)
    # get: every sampleable slot, and a stored slot that is not sampleable (a lane's newest non-end step)
    want = np.flatnonzero(sampleable)
    got = buf.get(gt.ticket[want] % CAP)
    np.testing.assert_array_equal(check_batch(got, gt, STEPS * K, CAP, n_step), want)
    stored = (gt.ticket >= STEPS * K - CAP) & (gt.ticket >= 0)
    waiting = np.flatnonzero(stored & ~sampleable)
    assert waiting.size
    with pytest.raises(ValueError, match="holds no sampleable step"):
        buf.get(gt.ticket[waiting[:1]] % CAP)
    return sampled, seen


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked_input", "frames"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_stacks_match_frame_stack_observation(padding, mode, stacked, prioritized, n_step):
    sampled, seen = run_stream("fastreplay", prioritized, padding, mode, stacked, n_step, points=100,
                               batch_size=1000)
    assert sampled >= 10 ** 5
    _, _, gt = record(padding, mode)
    # the samples reached the hard rows: episode starts (padded stacks), 1-step episodes, both kinds of end
    assert (seen & (gt.t == 0)).sum() > 50 and (seen & (gt.t == 0) & gt.term).sum() > 3
    assert (seen & gt.trunc).sum() > 20 and (seen & gt.term).sum() > 20


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked_input", "frames"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_reference_stacks_match_frame_stack_observation(padding, mode, stacked, prioritized, n_step):
    run_stream("fastreplay.reference", prioritized, padding, mode, stacked, n_step, points=20, batch_size=100)


# --- a real Atari game -----------------------------------------------------------------------------------------

ATARI_STEPS = 600
ATARI_LIMITS = (70, 110)  # TimeLimit per lane (agent steps): truncations at different times


def _atari_env(limit):
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    try:
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    except gym.error.DependencyNotInstalled:  # no cv2: the same 84x84 grayscale frames, resized in numpy
        env.close()
        env = gym.wrappers.MaxAndSkipObservation(
            gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0, obs_type="grayscale"), skip=4)
        rows, cols = np.linspace(0, 209, 84).round().astype(int), np.linspace(0, 159, 84).round().astype(int)
        env = gym.wrappers.TransformObservation(env, lambda o: np.ascontiguousarray(o[rows][:, cols]),
                                                spaces.Box(0, 255, (84, 84), np.uint8))
    return FrameStackObservation(TimeLimit(env, limit), S)


@functools.lru_cache(maxsize=None)
def atari_stream(mode):
    vec = SyncVectorEnv([functools.partial(_atari_env, lim) for lim in ATARI_LIMITS], autoreset_mode=MODES[mode])
    rng = np.random.default_rng(3)
    obs, _ = vec.reset(seed=11)
    adds = []
    for _ in range(ATARI_STEPS):
        action = rng.integers(0, vec.single_action_space.n, 2)
        nobs, rew, term, trunc, info = vec.step(action)
        nxt = nobs.copy()
        for k in np.flatnonzero(term | trunc) if mode == "same_step" else ():
            nxt[k] = info["final_obs"][k]
        adds.append(dict(obs=obs, action=action, reward=rew.astype(np.float32), next_obs=nxt, done=term,
                         truncated=trunc))
        obs = nobs
    vec.close()  # from_env reads only its spaces and metadata
    return vec, adds


@pytest.mark.parametrize("construct", ["explicit", "from_env"])
@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_atari_pong_stacks_match_full_stacks(mode, construct):
    vec, adds = atari_stream(mode)
    nk = len(ATARI_LIMITS)
    cap = ATARI_STEPS * nk  # no wrap: both buffers put ticket t in slot t
    full = {"obs": ((S, 84, 84), np.uint8), "action": np.int64, "reward": np.float32,
            "next_obs": ((S, 84, 84), np.uint8), "done": bool, "truncated": bool}
    plain = fr.ReplayBuffer(cap, full, seed=0)
    if construct == "from_env":
        buf = fr.ReplayBuffer.from_env(vec, cap, seed=1, frame_stack=S, stacked_input=True)
        assert buf.fields["obs"] == ((S, 84, 84), np.dtype(np.uint8)) and "truncated" in buf.fields
    else:
        buf = fr.ReplayBuffer(cap, full, seed=1, num_envs=nk, frame_stack=S, stacked_input=True, autoreset=mode)
    for row in adds:
        plain.add(**row)
        buf.add(**row)
    ended = np.array([r["done"] | r["truncated"] for r in adds])  # [steps, lanes]
    assert ended[:, 0].sum() >= 3 and ended[:, 1].sum() >= 3
    reset_row = np.zeros_like(ended)
    if mode == "next_step":
        reset_row[1:] = ended[:-1]
    # sampleable: a step (not a reset row) that ended or whose lane's next row was added
    ok = ~reset_row & (ended | (np.arange(ATARI_STEPS) < ATARI_STEPS - 1)[:, None])
    want = np.flatnonzero(ok.reshape(-1))
    stream_obs = np.stack([r["obs"] for r in adds]).reshape((-1, S, 84, 84))
    stream_next = np.stack([r["next_obs"] for r in adds]).reshape((-1, S, 84, 84))

    def check(batch):
        assert np.isin(batch.indices, want).all(), "sampled a reset row or a step without its next frame"
        ref = plain.get(batch.indices)
        for name in ("obs", "next_obs", "action", "reward", "done", "truncated"):
            np.testing.assert_array_equal(batch[name], ref[name], err_msg=name)
        np.testing.assert_array_equal(batch["obs"], stream_obs[batch.indices])
        np.testing.assert_array_equal(batch["next_obs"], stream_next[batch.indices])

    for _ in range(4):
        check(buf.sample(500))
    check(buf.get(want))
