"""The DQN trainer (fastreplay.dqn): the TD target, vector-env bookkeeping, tiny runs of each mode, checkpoints and
the command line. Each run is a few hundred CartPole steps with a tiny network, seconds at most."""
import ast
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")
pytest.importorskip("tyro")

from fastreplay import dqn  # noqa: E402

SHORT_ENV = "FastreplayShortCartPole-v0"
if SHORT_ENV not in gym.registry:
    # CartPole cut at 5 steps: almost every episode ends by truncation, which the stored rows must bootstrap through.
    gym.register(SHORT_ENV, entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv", max_episode_steps=5)


def tiny(tmp_path, **kw):
    """Args for a run of a few hundred steps with a tiny network, no progress bar."""
    base = dict(total_timesteps=300, learning_starts=100, batch_size=16, buffer_size=1000, hidden_sizes=(16,),
                train_frequency=1,
                eval_frequency=0, eval_episodes=2, target_network_frequency=50, log_frequency=100,
                progress=False, plot=False, output_dir=str(tmp_path / "runs"))
    base.update(kw)
    return dqn.Args(**base)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def expected_updates(args, start=0):
    """Gradient steps that a run from step ``start`` (0, or the resumed checkpoint's step) to
    ``args.total_timesteps`` must take, from the arguments alone. The step counter after the k-th vector step of the
    run is ``start + k * num_envs``, k = 1, 2, ... until it reaches ``total_timesteps``. Learning begins at the vector
    step after which the run has collected ``learning_starts`` transitions (the buffer is not saved, so a resumed
    run collects them again), and from then on every vector step earns ``num_envs / train_frequency`` gradient
    steps."""
    n, counter, learning_vector_steps = args.num_envs, start, 0
    while counter < args.total_timesteps:
        counter += n
        learning_vector_steps += counter - start >= args.learning_starts
    return learning_vector_steps * n // args.train_frequency


@pytest.fixture
def gradient_steps():
    """The number of optimizer steps taken while the test runs, counted by a global torch hook: ``count[0]``."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    count = [0]
    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: count.__setitem__(0, count[0] + 1))
    yield count
    handle.remove()


def greedy_return(q_network, env_id, seed):
    """One episode of ``env_id`` reset with ``seed``, acting greedily with ``q_network`` one observation at a time."""
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = int(q_network(torch.as_tensor(obs[None])).argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        return total
    finally:
        env.close()


# --- the TD target ---------------------------------------------------------------------------------------------------


def test_td_target_hand_computed():
    # Three sampled rows, gamma = 0.9, as an episodic batch gives them (reward: the window's return, discount:
    # gamma**m, or 0 after a termination):
    #   0: a one-step window ending in a time-limit truncation: discount 0.9, so it bootstraps: 1 + 0.9 * max(1, 2)
    #   1: a window ending in a termination: discount 0, y = R = 1
    #   2: a three-step window (R = 0.5): 0.5 + 0.9**3 * max(5, 0)
    reward = torch.tensor([1.0, 1.0, 0.5])
    discount = torch.tensor([0.9, 0.0, 0.9**3])
    next_q_target = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    y = dqn.td_target(reward, next_q_target, discount)
    torch.testing.assert_close(y, torch.tensor([2.8, 1.0, 0.5 + 0.729 * 5.0]))
    # Double DQN: the online network picks a' = argmax [5, 0] = 0, [0, 1] = 1, [0, 1] = 1; the target network values
    # it: 1, 4 (ignored: terminal), 0.
    next_q_online = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = dqn.td_target(reward, next_q_target, discount, next_q_online)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 1.0, 1.0, 0.5]))


@pytest.mark.parametrize("n_step", [1, 3])
def test_td_target_from_the_buffers_n_step_batch(n_step):
    """The trainer's buffer gives the n-step return and its discount: one lane, rewards 1, 2, 3, ..., an episode
    that terminates after 4 steps and one truncated after 3; every sampled row's (reward, discount) is the
    hand-computed window's."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    args = dqn.resolved(dqn.Args(n_step=n_step, gamma=0.5, buffer_size=64, batch_size=8, prefetch=False))
    buf = dqn.make_buffer(args, envs)
    envs.close()
    ends = {3: "terminated", 6: "truncated"}
    for t in range(10):
        buf.add(obs=np.full((1, 4), t, np.float32), action=np.zeros(1, np.int64), reward=np.array([t + 1.0]),
                next_obs=np.full((1, 4), t + 1, np.float32), done=np.array([ends.get(t) == "terminated"]),
                truncated=np.array([ends.get(t) == "truncated"]))
    batch = buf.sample(64)
    for t, r, d, nxt in zip(batch["obs"][:, 0], batch["reward"], batch["discount"], batch["next_obs"][:, 0]):
        t = int(t)
        last = min([e for e in ends if e >= t] + [t + n_step - 1, 9])  # stops at an end or the newest step
        m = last - t + 1
        assert r == pytest.approx(sum(0.5**j * (t + 1 + j) for j in range(m)))
        assert d == pytest.approx(0.0 if ends.get(last) == "terminated" else 0.5**m)
        assert nxt == last + 1


# --- vector-env autoreset: the stored s' of an ended episode -----------------------------------------------------


def test_real_next_obs_replaces_only_ended_rows():
    next_obs = np.arange(8, dtype=np.float32).reshape(2, 4)
    final = np.empty(2, dtype=object)
    final[1] = np.full(4, -1.0, np.float32)
    infos = {"final_obs": final, "_final_obs": np.array([False, True])}
    out = dqn.real_next_obs(next_obs, infos)
    np.testing.assert_array_equal(out, [[0, 1, 2, 3], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(next_obs, np.arange(8).reshape(2, 4))  # the env's array is left alone
    assert dqn.real_next_obs(next_obs, {}) is next_obs


def test_installed_gymnasium_gives_final_obs_on_truncation():
    envs = dqn.make_vec_env(SHORT_ENV, 1)
    try:
        obs, _ = envs.reset(seed=0)
        for t in range(5):
            nxt, _, terminated, truncated, infos = envs.step(np.array([t % 2]))
            if not (terminated[0] or truncated[0]):
                obs = nxt
        assert truncated[0] and not terminated[0]
        if dqn.autoreset_mode(envs) == "same_step":
            stored = dqn.real_next_obs(nxt, infos)
            assert not np.array_equal(stored, nxt)  # nxt is the next episode's first observation
            # The last observation follows from the one before it: CartPole moves x by tau * x_dot.
            assert abs(stored[0, 0] - (obs[0, 0] + 0.02 * obs[0, 1])) < 1e-5
    finally:
        envs.close()


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
@pytest.mark.parametrize("num_envs", [1, 2])
def test_loop_stores_truncated_transitions(tmp_path, monkeypatch, mode, num_envs):
    """Run the real loop on a 5-step CartPole and read back what it stored: s' of every truncated row is the
    episode's last observation (not the reset one), done is False and truncated True on truncation, and with
    next-step autoreset the reset step's row is stored but never sampleable."""
    if mode == "next_step":
        AutoresetMode = getattr(gym.vector, "AutoresetMode", None)
        if AutoresetMode is None:
            pytest.skip("this gymnasium cannot choose the autoreset mode")
        monkeypatch.setattr(dqn, "make_vec_env", lambda env_id, n: gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id)] * n, autoreset_mode=AutoresetMode.NEXT_STEP))
    made = []
    real_make_buffer = dqn.make_buffer
    monkeypatch.setattr(dqn, "make_buffer", lambda args, envs: made.append(real_make_buffer(args, envs)) or made[-1])
    dqn.train(tiny(tmp_path, env_id=SHORT_ENV, num_envs=num_envs, total_timesteps=60, learning_starts=1000))
    buf = made[0]
    st = buf.storage
    # Row order: env j's t-th step is row t * num_envs + j (one lane per env). Episodes are exactly 5 transitions
    # long; with next-step autoreset every 6th step of each env only resets it: stored, never sampleable.
    iterations = 60 // num_envs
    assert buf.num_envs == num_envs and buf.episode_config.autoreset == mode
    assert len(buf) == num_envs * iterations
    obs = st["obs"].reshape(-1, num_envs, 4)
    nxt = st["next_obs"].reshape(-1, num_envs, 4)
    done = st["done"].reshape(-1, num_envs)
    trunc = st["truncated"].reshape(-1, num_envs)
    assert not done.any()
    period = 5 if mode == "same_step" else 6
    for t in range(obs.shape[0] - 1):
        if t % period == 4:  # truncated: s' is the episode's end, the next row starts a new episode elsewhere
            assert trunc[t].all()
            np.testing.assert_allclose(nxt[t][:, 0], obs[t][:, 0] + 0.02 * obs[t][:, 1], atol=1e-5)
            if mode == "same_step":
                assert not np.array_equal(nxt[t], obs[t + 1])
            else:  # the reset step's observation is the final one
                np.testing.assert_array_equal(nxt[t], obs[t + 1])
        elif t % period == 5:
            assert not trunc[t].any()
            for j in range(num_envs):
                with pytest.raises(ValueError, match="holds no sampleable step"):
                    buf.get([t * num_envs + j])
        else:
            assert not trunc[t].any()
            np.testing.assert_array_equal(nxt[t], obs[t + 1])
    if mode == "next_step":  # reset rows (every 6th step of each lane) are never drawn
        assert not (buf.sample(500).indices // num_envs % period == 5).any()


# --- tiny runs of each mode ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"per": True},
        {"num_envs": 4},
        {"per": True, "num_envs": 3, "double_dqn": True, "prefetch": True},
        {"loss": "mse", "tau": 0.1, "target_network_frequency": 1, "max_grad_norm": 0.0, "prefetch": True},
    ],
    ids=["uniform", "per", "num_envs4", "per_vec_double_prefetch", "mse_soft_prefetch"],
)
def test_tiny_runs(tmp_path, gradient_steps, kw):
    args = tiny(tmp_path, eval_frequency=100, save=str(tmp_path / "final.pt"), **kw)
    res = dqn.train(args)
    n = args.num_envs
    steps = -(-args.total_timesteps // n) * n
    assert res["steps"] == res["steps_this_run"] == steps
    # One gradient step per train_frequency env steps once learning has started; `updates` counts real ones.
    first_learning_step = -(-args.learning_starts // n) * n
    assert res["updates"] == (steps - first_learning_step + n) // args.train_frequency == expected_updates(args)
    assert gradient_steps[0] == res["updates"]
    # The final evaluation reports the final network's greedy returns: replay its episodes one by one (evaluation
    # k seeds its i-th episode with seed + 100_000 + k * eval_episodes + i) with the network from the checkpoint.
    net = dqn.QNetwork(4, 2, args.hidden_sizes)
    net.load_state_dict(torch.load(args.save, weights_only=True)["q_network"])
    k = len(res["evals"]) - 1
    assert res["final_eval_returns"] == [
        greedy_return(net, args.env_id, args.seed + 100_000 + k * args.eval_episodes + i)
        for i in range(args.eval_episodes)
    ]
    assert [e[0] for e in res["evals"]][:2] == [-(-100 // n) * n, -(-200 // n) * n]
    assert 0 < res["buffer_time_s"] < res["loop_time_s"]
    recs = read_log(res["log_path"])
    assert recs[0]["type"] == "args" and recs[0]["per"] == args.per
    assert {r["type"] for r in recs} >= {"args", "episode", "eval", "train"}
    assert all(np.isfinite(r["loss"]) for r in recs if r["type"] == "train" and r["step"] >= 200)
    with open(os.path.join(res["run_dir"], "results.json")) as f:
        assert json.load(f)["steps"] == steps


def test_reference_buffer_runs(tmp_path, gradient_steps):
    pytest.importorskip("fastreplay.reference")
    args = tiny(tmp_path, buffer="reference", per=True, total_timesteps=200)
    res = dqn.train(args)
    assert res["steps"] == 200
    assert res["updates"] == gradient_steps[0] == expected_updates(args)


def test_plot_and_early_stop(tmp_path):
    res = dqn.train(tiny(tmp_path, plot=True, eval_frequency=100, target_return=0.0))
    assert res["steps"] == 100  # the first evaluation already reaches the (trivial) target return
    assert res["plot_path"].endswith(".png") and os.path.getsize(res["plot_path"]) > 1000


def test_seed_is_reproducible_on_cpu(tmp_path):
    runs = []
    for k in range(2):
        ckpt = str(tmp_path / f"c{k}.pt")
        res = dqn.train(tiny(tmp_path / str(k), seed=3, per=True, prefetch=False, save=ckpt, eval_frequency=150))
        runs.append((res, torch.load(ckpt, weights_only=True)))
    (r0, c0), (r1, c1) = runs
    assert [e[:2] for e in r0["evals"]] == [e[:2] for e in r1["evals"]]
    assert r0["final_eval_returns"] == r1["final_eval_returns"]
    for k, v in c0["q_network"].items():
        torch.testing.assert_close(v, c1["q_network"][k], rtol=0, atol=0)
    losses = [[r["loss"] for r in read_log(r["log_path"]) if r["type"] == "train"] for r in (r0, r1)]
    assert losses[0] == losses[1]


def test_save_then_resume(tmp_path, gradient_steps):
    ckpt = str(tmp_path / "ckpt" / "dqn.pt")
    first = dqn.train(tiny(tmp_path, save=ckpt, per=True, eval_frequency=150))
    assert first["updates"] == gradient_steps[0]
    state = torch.load(ckpt, weights_only=True)
    a = dqn.resolved(tiny(tmp_path))
    eps = dqn.fastreplay.LinearSchedule(a.start_e, a.end_e, int(a.exploration_fraction * a.total_timesteps))
    assert state["global_step"] == 300 and state["updates"] == first["updates"]
    assert set(state) >= {"q_network", "target_network", "optimizer", "global_step", "updates", "epsilon", "args",
                          "loop", "env_state", "obs", "buffer_added"}
    assert state["epsilon"] == pytest.approx(eps(300)) == a.end_e
    saved = dqn.fastreplay.ReplayBuffer.load(ckpt + ".buffer")  # the buffer's own checkpoint, beside it
    assert type(saved) is dqn.fastreplay.PrioritizedReplayBuffer and saved.total_added == state["buffer_added"] == 300

    args = tiny(tmp_path, resume=ckpt, save=ckpt, per=True, total_timesteps=600, eval_frequency=150)
    gradient_steps[0] = 0
    second = dqn.train(args)
    assert second["steps"] == 600 and second["steps_this_run"] == 300
    # The buffer came back with the checkpoint: learning goes on at once, one update per train_frequency steps.
    assert second["updates"] - first["updates"] == gradient_steps[0] == 300 // args.train_frequency
    assert [e[0] for e in second["evals"]] == [150, 300, 450, 600]  # the history carries over
    assert second["run_dir"] == first["run_dir"]  # ... and the run directory: one log, one best.pt
    assert torch.load(ckpt, weights_only=True)["global_step"] == 600
    # Without the buffer, a resumed run refills it for learning_starts steps before learning again.
    dqn.train(tiny(tmp_path, save=ckpt, per=True, eval_frequency=150, save_buffer=False))
    gradient_steps[0] = 0
    third = dqn.train(tiny(tmp_path, resume=ckpt, per=True, total_timesteps=600, eval_frequency=150))
    assert gradient_steps[0] == expected_updates(args, start=300) == third["steps_this_run"] - 100 + 1


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("kw", [{"per": True, "n_step": 3, "num_envs": 2}, {"num_envs": 3, "env_id": SHORT_ENV}],
                         ids=["per_nstep", "short_episodes"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, kw):
    """Kill a --no-prefetch run right after its second checkpoint (step 300 of 600) and resume it: evaluations,
    training losses, episodes and the final networks equal an uninterrupted run's, bit for bit."""
    def run(name, **more):
        return tiny(tmp_path / name, save=str(tmp_path / name / "dqn.pt"), prefetch=False, total_timesteps=600,
                    eval_frequency=150, seed=4, **kw, **more)

    whole = dqn.train(run("whole"))
    save = dqn.save_checkpoint
    calls = []

    def save_then_die(*a, **k):
        save(*a, **k)
        calls.append(k["global_step"])
        if len(calls) == 2:
            raise Interrupted
    monkeypatch.setattr(dqn, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        dqn.train(run("parts"))
    monkeypatch.setattr(dqn, "save_checkpoint", save)
    assert calls == [150, 300]
    parts = dqn.train(run("parts", resume=str(tmp_path / "parts" / "dqn.pt")))
    assert parts["steps_this_run"] == 300 and parts["run_dir"] == os.path.join(tmp_path / "parts" / "runs",
                                                                              os.path.basename(parts["run_dir"]))
    assert [e[:2] for e in parts["evals"]] == [e[:2] for e in whole["evals"]]
    assert parts["final_eval_returns"] == whole["final_eval_returns"] and parts["updates"] == whole["updates"]

    def records(res):  # the log without its args records and wall-clock fields
        out = []
        for r in read_log(res["log_path"]):
            if r["type"] != "args":
                out.append({k: v for k, v in r.items() if k not in ("wall_s", "steps_per_sec", "buffer_time_s")})
        return out
    assert records(parts) == records(whole)
    a, b = (torch.load(tmp_path / n / "dqn.pt", weights_only=True) for n in ("whole", "parts"))
    for key in ("q_network", "target_network"):
        for name, v in a[key].items():
            torch.testing.assert_close(v, b[key][name], rtol=0, atol=0)


def test_best_network_is_kept(tmp_path, capsys):
    args = tiny(tmp_path, eval_frequency=100, total_timesteps=600, seed=2)
    res = dqn.train(args)
    best = torch.load(res["best_path"], weights_only=True)
    assert res["best_path"] == os.path.join(res["run_dir"], "best.pt")
    k, (step, mean, _) = max(enumerate(res["evals"]), key=lambda e: (e[1][1], -e[0]))  # the first best
    assert (best["step"], best["mean"]) == (step, mean) == tuple(res["best_eval"])
    # Its network is the one evaluated then: its greedy episodes, replayed, give that mean.
    net = dqn.QNetwork(4, 2, args.hidden_sizes)
    net.load_state_dict(best["q_network"])
    returns = [greedy_return(net, args.env_id, args.seed + 100_000 + k * args.eval_episodes + i)
               for i in range(args.eval_episodes)]
    assert np.mean(returns) == mean
    dqn.print_summary(dqn.resolved(args), res)
    assert f"its network: {res['best_path']}" in capsys.readouterr().out


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = dqn.train(tiny(tmp_path, track="tensorboard", eval_frequency=100))
    acc = EventAccumulator(res["run_dir"])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "losses/td_loss", "eval/mean_return", "charts/SPS"} <= tags
    assert [e.step for e in acc.Scalars("eval/mean_return")] == [e[0] for e in res["evals"]]


def test_atari_run_on_a_real_game(tmp_path, gradient_steps):
    """A tiny run on ALE/Breakout-v5: 84x84 frames, the buffer stacks 4 of them, the Nature network trains on
    uint8[B, 4, 84, 84] batches with 3-step returns and prioritized replay, two sub-envs."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    args = tiny(tmp_path, env_id="ALE/Breakout-v5", total_timesteps=240, learning_starts=120, batch_size=4,
                buffer_size=400, per=True, n_step=3, num_envs=2, eval_episodes=1, train_frequency=4,
                save=str(tmp_path / "atari.pt"))
    full = dqn.resolved(args)
    assert (full.frame_stack, full.clip_rewards, full.eval_epsilon, full.learning_rate) == (4, True, 0.05, 1e-4)
    shapes = []
    to_torch = dqn.fastreplay.Batch.to_torch

    def spy(batch, *a, **k):
        shapes.append((batch["obs"].shape, batch["obs"].dtype, batch["next_obs"].shape))
        return to_torch(batch, *a, **k)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dqn.fastreplay.Batch, "to_torch", spy)
        res = dqn.train(args)
    assert res["steps"] == 240 and res["updates"] == gradient_steps[0] == expected_updates(full) > 0
    assert set(shapes) == {((4, 4, 84, 84), np.dtype(np.uint8), (4, 4, 84, 84))}
    state = torch.load(args.save, weights_only=True)
    assert state["frames"].shape == (2, 4, 84, 84)
    net = dqn.NatureQNetwork(4, 4)
    net.load_state_dict(state["q_network"])
    buf = dqn.fastreplay.ReplayBuffer.load(args.save + ".buffer")
    assert buf.frame_stack == 4 and buf.storage["obs"].shape == (240, 84, 84)  # one frame stored per step


def test_resume_rejects_other_network(tmp_path):
    ckpt = str(tmp_path / "dqn.pt")
    dqn.train(tiny(tmp_path, save=ckpt, total_timesteps=100))
    with pytest.raises(ValueError, match="hidden sizes"):
        dqn.train(tiny(tmp_path, resume=ckpt, hidden_sizes=(8, 8)))


# --- the command line --------------------------------------------------------------------------------------------


def test_cli_defaults_match_args():
    assert dqn.parse_args([]) == dqn.Args()
    a = dqn.parse_args(["--per", "--no-prefetch", "--num-envs", "4", "--hidden-sizes", "32", "32", "--save", "x.pt",
                        "--loss", "mse", "--target-return", "475"])
    assert (a.per, a.prefetch, a.num_envs, a.hidden_sizes, a.save, a.loss, a.target_return) == (
        True, False, 4, (32, 32), "x.pt", "mse", 475.0)


def test_every_field_has_help(capsys):
    # Every field of Args is followed by its docstring (the help line tyro shows), and --help lists every option.
    body = ast.parse(inspect.getsource(dqn.Args)).body[0].body
    documented = {
        node.target.id for node, nxt in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value.value, str)
    }
    assert documented == {f.name for f in dataclasses.fields(dqn.Args)}
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("\u2502", " ").split())
    for f in dataclasses.fields(dqn.Args):
        assert "--" + f.name.replace("_", "-") in text
    assert "Box observation space" in text and "--no-prefetch" in text and "--no-per" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-id", "NoSuchEnv-v0"], r"--env-id 'NoSuchEnv-v0': .*NoSuchEnv"),
        (["--env-id", "Pendulum-v1"], r"needs a Discrete action space"),
        (["--buffer-size", "-5"], r"--buffer-size must be a positive integer, got -5"),
        (["--batch-size", "0"], r"--batch-size must be a positive integer"),
        (["--num-envs", "-1"], r"--num-envs must be a positive integer"),
        (["--learning-starts", "-1"], r"--learning-starts must be an integer >= 0"),
        (["--gamma", "1.5"], r"--gamma must be in \[0, 1\]"),
        (["--learning-rate", "inf"], r"--learning-rate must be in \(0, inf\]"),
        (["--buffer-size", "10", "--batch-size", "32"], r"must be at least --batch-size"),
        (["--resume", "/no/such/file.pt"], r"no such checkpoint"),
        (["--loss", "l1"], r"invalid choice: 'l1'"),
        (["--total-timesteps", "many"], r"--total-timesteps: .*'many'"),
        (["--no-such-option", "3"], r"unrecognized arguments: --no-such-option 3"),
    ],
)
def test_bad_arguments_exit_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        dqn.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastreplay-dqn: error: ")
    assert "Traceback" not in "\n".join(err)
    assert re.search(message, err[-1]), err[-1]


def test_bad_args_raise_value_error_from_train(tmp_path):
    with pytest.raises(ValueError, match="--buffer-size must be a positive integer"):
        dqn.train(tiny(tmp_path, buffer_size=-1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_an_argument_error(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        dqn.check_args(dqn.resolved(tiny(tmp_path, device="cuda")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run(tmp_path):
    res = dqn.train(tiny(tmp_path, device="cuda", per=True))
    assert res["steps"] == 300


def test_main_trains_and_prints(tmp_path, capsys):
    dqn.main(["--total-timesteps", "200", "--learning-starts", "100", "--hidden-sizes", "8", "--eval-episodes", "2",
              "--no-progress", "--output-dir", str(tmp_path), "--batch-size", "8"])
    out = capsys.readouterr().out
    assert "CartPole-v1: 200 steps" in out and "plot: " in out


# --- the batch source: prefetch when the buffer has it --------------------------------------------------------------


class _FakePrefetcher:
    def __init__(self, buf, batch_size, beta):
        self.buf, self.batch_size, self.beta, self.closed = buf, batch_size, beta, False

    def __iter__(self):
        return self

    def __next__(self):
        return ("prefetched", self.batch_size, self.beta)

    def close(self):
        self.closed = True


class _FakeBuffer:
    def sample(self, batch_size, beta=None):
        return ("sampled", batch_size, beta)


class _FakePrefetchBuffer(_FakeBuffer):
    def prefetch(self, batch_size, depth=2, threads=1, beta=None):
        self.it = _FakePrefetcher(self, batch_size, beta)
        return self.it


def test_batch_source_uses_prefetch_only_when_available_and_on():
    buf = _FakePrefetchBuffer()
    with dqn.batch_source(buf, 8, prefetch=True, beta=0.4) as draw:
        assert draw() == ("prefetched", 8, 0.4)
        assert draw(0.7) == ("prefetched", 8, 0.7)  # the prefetcher's beta follows the schedule
    assert buf.it.closed
    with dqn.batch_source(buf, 8, prefetch=False, beta=0.4) as draw:
        assert draw(0.5) == ("sampled", 8, 0.5)
    with dqn.batch_source(_FakeBuffer(), 8, prefetch=True) as draw:
        assert draw() == ("sampled", 8, None)


def test_importing_fastreplay_does_not_import_torch():
    code = "import sys, fastreplay; assert 'torch' not in sys.modules and 'gymnasium' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
