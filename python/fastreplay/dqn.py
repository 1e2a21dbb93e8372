"""DQN on gymnasium with a fastreplay buffer, in one file that reads top to bottom (after CleanRL's ``dqn.py``).

Run ``python -m fastreplay.dqn --help`` (or ``fastreplay-dqn``). With the defaults it trains on CartPole-v1 for 100k
environment steps (bench/results/dqn_cartpole.md has the figures: 5 seeds, uniform and prioritized replay). ALE ids
(``--env-id ALE/Breakout-v5``) get DQN's Atari preprocessing, the Nature-DQN network and a buffer that stacks the
frames itself. The loop lives in :func:`train`, which takes an :class:`Args` and returns a dict of results, so it
can be called from Python and tests. The command line is :class:`Args`, parsed by tyro; checks, logs, checkpoints
and the plot are in ``_cli.py`` and ``_trainer_io.py``, environments in ``_trainer_envs.py``. Needs
``pip install fastreplay[train]`` (torch, gymnasium, tqdm, matplotlib, tyro, tensorboard; ``[atari]`` for ALE);
importing :mod:`fastreplay` alone does not import any of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from tqdm import tqdm

import fastreplay
from fastreplay._cli import DESCRIPTION, PROG, check_args, one_line_errors, print_summary
from fastreplay._trainer_envs import (FrameStacker, autoreset_mode, evaluate, make_env, real_next_obs,
                                      set_vector_env_state, vector_env_state)
from fastreplay._trainer_io import (RunLog, Stopwatch, TensorBoard, batch_source, buffer_path, finish_run,
                                    load_checkpoint, save_best, save_checkpoint)
from fastreplay.schedules import LinearSchedule


@dataclass
class Args:
    """Train DQN on a gymnasium environment with a fastreplay buffer."""

    exp_name: str = "dqn"
    """name of the experiment, part of the run directory's name"""
    seed: int = 1
    """seed of torch, numpy, the environments and the replay buffer (bit-exact reruns on CPU, without --prefetch)"""
    device: str = "cpu"
    """torch device for the networks, e.g. 'cpu', 'cuda', 'cuda:1'"""
    threads: int = 1
    """torch CPU threads (torch.set_num_threads); 0 keeps torch's default. One is fastest for these small networks"""
    output_dir: str = "runs"
    """directory under which each run writes its own directory (log.jsonl, best.pt, learning_curve.png, ...)"""
    progress: bool = True
    """show a tqdm progress bar with episodic return and steps per second"""
    plot: bool = True
    """write the learning-curve PNG at the end"""
    save: Optional[str] = None
    """checkpoint file written after every evaluation and at the end: networks, optimizer, counters, random states,
    the environments' states and (with --save-buffer) the replay buffer beside it in PATH.buffer"""
    save_buffer: bool = True
    """include the replay buffer in --save checkpoints (its own atomic save, with priorities and episode index)"""
    resume: Optional[str] = None
    """checkpoint file to continue from, in the same run directory; with its buffer and environment states the run
    goes on as if never interrupted (bit for bit without --prefetch)"""

    # Algorithm arguments. None means the default of the environment's family (CLASSIC or ATARI below); the help
    # gives both as "(CartPole-like; Atari)".
    env_id: str = "CartPole-v1"
    """gymnasium environment id with a Box observation space and a Discrete action space; ALE ids (ALE/Breakout-v5)
    get DQN's Atari preprocessing (84x84 grayscale, frame skip 4), the Nature-DQN network and frame_stack 4"""
    total_timesteps: Optional[int] = None
    """environment steps to train for, summed over the vector environments (100k; Atari 10M)"""
    num_envs: int = 1
    """parallel environments (gymnasium.vector.SyncVectorEnv); each step adds one row per environment"""
    buffer: Literal["fastreplay", "reference"] = "fastreplay"
    """replay buffer implementation: the C++ one, or fastreplay.reference in pure Python (for comparisons)"""
    buffer_size: Optional[int] = None
    """replay buffer capacity in transitions (100k; Atari 1M)"""
    hidden_sizes: Tuple[int, ...] = (256, 256)
    """widths of the Q-network's hidden layers (not Atari: the Nature-DQN convolutional network)"""
    learning_rate: Optional[float] = None
    """Adam learning rate (1e-3; Atari 1e-4)"""
    anneal_lr: Optional[bool] = None
    """anneal the learning rate linearly to 0 over total_timesteps (yes; Atari no)"""
    gamma: float = 0.99
    """discount factor"""
    n_step: Optional[int] = None
    """n-step returns, computed by the buffer at sample time: sum of gamma^j r over up to n steps, cut at episode
    ends; the batch's discount is gamma^m, or 0 after a termination (3; Atari 1)"""
    tau: float = 1.0
    """target network update rate: 1 copies the online network, less than 1 is a soft (Polyak) update"""
    target_network_frequency: Optional[int] = None
    """environment steps between target network updates (256; Atari 1000)"""
    batch_size: Optional[int] = None
    """transitions per gradient step (64; Atari 32)"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: Optional[float] = None
    """exploration epsilon at the end of the schedule (0.04; Atari 0.01)"""
    exploration_fraction: Optional[float] = None
    """fraction of total_timesteps over which epsilon falls linearly from start_e to end_e (0.16; Atari 0.1)"""
    learning_starts: Optional[int] = None
    """environment steps of pure collection before the first gradient step (1000; Atari 80k)"""
    train_frequency: Optional[int] = None
    """environment steps per gradient step, kept the same for any num_envs (2; Atari 4)"""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss: Huber (smooth L1) or mean squared error"""
    double_dqn: bool = True
    """Double DQN: the online network picks the next action, the target network values it"""
    max_grad_norm: float = 10.0
    """clip the gradient's global norm to this; 0 disables clipping"""
    frame_stack: Optional[int] = None
    """observations per network input, stacked by the buffer from single stored frames (1; Atari 4)"""
    clip_rewards: Optional[bool] = None
    """learn from sign(reward); returns are logged unclipped (no; Atari yes)"""
    per: bool = False
    """prioritized experience replay (proportional, fastreplay.PrioritizedReplayBuffer)"""
    per_alpha: float = 0.6
    """priority exponent alpha of prioritized replay"""
    per_beta0: float = 0.4
    """importance-sampling exponent beta at the start, annealed linearly to 1 at the end of training"""
    per_eps: float = 1e-6
    """added to |TD error| before the exponent, so no transition has zero probability"""
    prefetch: bool = False
    """sample batches on the buffer's background threads (buf.prefetch) when the buffer has them: worth it when a
    gradient step is fast next to a batch gather (a GPU); on this project's CPU machines it measured slower (a
    worker's wake-ups cost more than the 5-200 us a gather takes). Prefetched batches are drawn while new rows
    arrive, so a run is exactly reproducible from its seed only without it"""

    # Evaluation and logging
    eval_frequency: Optional[int] = None
    """environment steps between evaluations; 0 evaluates only at the end (2500; Atari 250k)"""
    eval_episodes: Optional[int] = None
    """episodes per evaluation, run in parallel, one per environment copy (20; Atari 8)"""
    eval_epsilon: Optional[float] = None
    """epsilon of the evaluation policy (0: greedy; Atari 0.05, as DQN's papers evaluate)"""
    target_return: Optional[float] = None
    """stop early once an evaluation's mean return reaches this (default: train for total_timesteps)"""
    log_frequency: int = 1_000
    """environment steps between training-statistics records in the log"""
    track: Optional[Literal["tensorboard"]] = None
    """also write TensorBoard event files into the run directory (the tensorboard package, in the train extra)"""


#: Defaults for vector observations (CartPole-v1 and the like), tuned on CartPole-v1: bench/results/dqn_cartpole.md.
CLASSIC: Dict[str, Any] = dict(
    total_timesteps=100_000, buffer_size=100_000, learning_rate=1e-3, anneal_lr=True, n_step=3,
    target_network_frequency=256,
    batch_size=64, end_e=0.04, exploration_fraction=0.16, learning_starts=1_000, train_frequency=2,
    frame_stack=1, clip_rewards=False, eval_frequency=2_500, eval_episodes=20, eval_epsilon=0.0)
#: Defaults for ALE games: CleanRL's dqn_atari.py (after the Nature-DQN paper), with the buffer stacking the frames.
ATARI: Dict[str, Any] = dict(
    total_timesteps=10_000_000, buffer_size=1_000_000, learning_rate=1e-4, anneal_lr=False, n_step=1,
    target_network_frequency=1_000, batch_size=32, end_e=0.01, exploration_fraction=0.10, learning_starts=80_000,
    train_frequency=4, frame_stack=4, clip_rewards=True, eval_frequency=250_000, eval_episodes=8, eval_epsilon=0.05)


def is_atari(env_id: str) -> bool:
    """An ALE game (``ALE/Pong-v5``, ...): DQN's Atari preprocessing and network."""
    return env_id.startswith("ALE/")


def resolved(args: Args) -> Args:
    """``args`` with every None replaced by its family's default (:data:`CLASSIC` or :data:`ATARI`)."""
    family = ATARI if is_atari(args.env_id) else CLASSIC
    return dataclasses.replace(args, **{k: v for k, v in family.items() if getattr(args, k) is None})


# ---------------------------------------------------------------------------------------------------------------------
# Environments. Vector environments reset a sub-environment automatically when its episode ends; what they return
# in that step depends on gymnasium's autoreset mode (autoreset_mode), and the stored s' must be the ended episode's
# last observation (real_next_obs). Both are in _trainer_envs.py, with make_env (Atari preprocessing), the frame
# stack the agent acts on, the evaluation and the environments' state for checkpoints.


def make_vec_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    fns = [lambda: make_env(env_id) for _ in range(num_envs)]
    mode = getattr(gym.vector, "AutoresetMode", None)
    if mode is not None:  # gymnasium >= 1.1: ask for same-step autoreset, the last obs comes in infos
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode.SAME_STEP)
    return gym.vector.SyncVectorEnv(fns)


# ---------------------------------------------------------------------------------------------------------------------
# The Q-networks and the TD target.


class QNetwork(nn.Module):
    """An MLP on flattened observations."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        width = obs_dim
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions))
        self.network = nn.Sequential(*layers)
        self._linears = [m for m in layers if isinstance(m, nn.Linear)]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # The layers' own functions, called directly: the same operations as self.network(x), without the module
        # call machinery of 2 x depth + 1 modules (about 15 us of a 20-35 us forward pass for one observation,
        # which the trainer makes at every environment step).
        x = obs.reshape(obs.shape[0], -1)
        if x.dtype != torch.float32:
            x = x.float()
        last = len(self._linears) - 1
        for i, layer in enumerate(self._linears):
            x = F.linear(x, layer.weight, layer.bias)
            if i < last:
                x = torch.relu(x)
        return x


class NatureQNetwork(nn.Module):
    """The Nature-DQN network (Mnih et al. 2015) on uint8[B, frames, 84, 84] stacks, scaled to [0, 1]."""

    def __init__(self, frames: int, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(frames, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.network(obs.float() / 255.0)


def make_q_network(args: Args, obs_shape: Tuple[int, ...], n_actions: int) -> nn.Module:
    if is_atari(args.env_id):
        return NatureQNetwork(args.frame_stack, n_actions)
    return QNetwork(int(np.prod(obs_shape)) * args.frame_stack, n_actions, args.hidden_sizes)


def td_target(reward: torch.Tensor, next_q_target: torch.Tensor, discount: torch.Tensor,
              next_q_online: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = R + discount * Q_target(s', a')``, float[B], from an episodic batch (``docs/episodes.md``).

    ``R`` is the batch's ``reward``: the n-step return ``sum_j gamma^j r_{t+j}`` over the ``m <= n`` steps of the
    window, and ``discount`` is ``gamma^m``, or 0 when the window ends in a termination; ``s'`` (``next_obs``) is
    the observation after the window. A time-limit truncation is not a terminal state, so its discount stays
    ``gamma^m`` and its (stored, pre-reset) s' is bootstrapped. ``next_q_target`` and ``next_q_online`` are
    ``float[B, A]``. ``a'`` is ``argmax Q_target(s')`` (DQN) or, with ``next_q_online``, ``argmax Q_online(s')``
    (Double DQN).
    """
    if next_q_online is None:
        next_v = next_q_target.max(dim=1).values
    else:
        next_v = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return reward + discount * next_v


# ---------------------------------------------------------------------------------------------------------------------
# The training loop.


def train(args: Args) -> Dict[str, Any]:
    """Train DQN as ``args`` says; returns the results (also written to ``<run_dir>/results.json``).

    Keys: ``final_eval_returns`` (list), ``final_eval_mean``, ``evals`` (list of ``[step, mean return, seconds
    since the start]``), ``best_eval`` ((step, mean) of the best evaluation), ``best_path`` (its network),
    ``steps`` (environment steps reached), ``steps_this_run``, ``updates``, ``episodes``, ``wall_time_s``,
    ``loop_time_s`` (the training loop, periodic evaluations included), ``steps_per_sec`` (of the loop),
    ``loop_cpu_s`` (the process's CPU time in the loop, all its threads: less inflated than wall time by other work),
    ``buffer_time_s`` and ``buffer_share`` (loop time spent inside the buffer's add, sample or prefetch and
    update_priorities), ``run_dir``, ``log_path``, ``plot_path`` (None without ``plot``), ``checkpoint_path``.
    None-valued arguments take their family's defaults (:func:`resolved`). Raises ``ValueError`` for bad arguments.
    """
    t_start = time.perf_counter()
    args = resolved(args)
    check_args(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # Seeding: torch for the network's initialisation, numpy for exploration, the envs and the buffer.
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    with contextlib.ExitStack() as stack:  # closes the envs, the log, the progress bar and the prefetcher
        envs = stack.enter_context(contextlib.closing(make_vec_env(args.env_id, args.num_envs)))
        eval_envs = stack.enter_context(contextlib.closing(make_vec_env(args.env_id, args.eval_episodes)))
        mode = autoreset_mode(envs)
        obs_shape = tuple(envs.single_observation_space.shape)
        n_actions = int(envs.single_action_space.n)

        q_network = make_q_network(args, obs_shape, n_actions).to(device)
        optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
        target_network = make_q_network(args, obs_shape, n_actions).to(device)
        target_network.load_state_dict(q_network.state_dict())

        # Epsilon falls linearly over exploration_fraction of training; PER's beta rises to 1 over all of it.
        explore_steps = max(1, int(args.exploration_fraction * args.total_timesteps))
        epsilon = LinearSchedule(args.start_e, args.end_e, explore_steps)
        beta = LinearSchedule(args.per_beta0, 1.0, args.total_timesteps) if args.per else None

        obs, _ = envs.reset(seed=args.seed)
        envs.single_action_space.seed(args.seed)
        # The loop's own state, all of it in the checkpoint: the agent's frame stacks, episode bookkeeping, the
        # fraction of a gradient step earned, and (next-step autoreset) which sub-envs reset in the coming step.
        frames = FrameStacker(obs, args.frame_stack)
        loop = dict(global_step=0, updates=0, episodes=0, evals=[], update_credit=0.0, recent=[],
                    ep_return=np.zeros(args.num_envs), ep_length=np.zeros(args.num_envs, dtype=np.int64),
                    was_done=np.zeros(args.num_envs, dtype=bool), run_dir=None)
        buf = None
        if args.resume is not None:
            ckpt = load_checkpoint(args.resume, args, q_network, target_network, optimizer, rng, device)
            loop.update({k: ckpt[k] for k in ("global_step", "updates", "episodes")}, **ckpt.get("loop", {}))
            loop["evals"] = [list(e) for e in ckpt["evals"]]
            if "env_state" in ckpt:  # else the environments start new episodes (an older checkpoint)
                set_vector_env_state(envs, ckpt["env_state"])
                obs, frames.stack = ckpt["obs"].numpy(), ckpt["frames"].numpy()
            if args.buffer == "fastreplay" and ckpt.get("buffer_added", -1) >= 0:
                buf = load_buffer(args, buffer_path(args.resume), ckpt["buffer_added"])
        if buf is None:
            buf = make_buffer(args, envs)
        global_step, updates, episodes, evals = loop["global_step"], loop["updates"], loop["episodes"], loop["evals"]
        start_step = global_step
        # An empty buffer (a fresh run, or a resume without the buffer) collects learning_starts steps first.
        learn_from = args.learning_starts if len(buf) else global_step + args.learning_starts

        run_dir = loop["run_dir"]
        if run_dir is None or not os.path.isdir(run_dir):
            stamp = int(time.time())
            run_dir = os.path.join(args.output_dir, f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{stamp}")
        os.makedirs(run_dir, exist_ok=True)
        log = stack.enter_context(contextlib.closing(RunLog(os.path.join(run_dir, "log.jsonl"))))
        log.write({"type": "args", "step": global_step, **dataclasses.asdict(args), "autoreset_mode": mode,
                   "fastreplay": fastreplay.__version__, "torch": torch.__version__, "gymnasium": gym.__version__})
        tb = stack.enter_context(contextlib.closing(TensorBoard(run_dir if args.track == "tensorboard" else None)))
        best_path = os.path.join(run_dir, "best.pt")
        best = max((e[1] for e in evals), default=-np.inf)

        def checkpoint() -> None:
            if args.save is None:
                return
            if args.save_buffer and hasattr(buf, "save"):
                buf.save(buffer_path(args.save))  # first: a checkpoint never names a buffer older than itself
            loop_state = dict(update_credit=update_credit, recent=list(recent), ep_return=ep_return.tolist(),
                              ep_length=ep_length.tolist(), was_done=was_done.tolist(), run_dir=run_dir)
            save_checkpoint(args.save, args, q_network, target_network, optimizer, rng, global_step=global_step,
                            updates=updates, episodes=episodes, evals=evals, epsilon=epsilon(global_step),
                            loop=loop_state, env_state=vector_env_state(envs), obs=torch.from_numpy(np.array(obs)),
                            frames=torch.from_numpy(frames.stack.copy()),
                            buffer_added=buf.total_added if args.save_buffer and hasattr(buf, "save") else -1)

        final_returns: List[float] = []

        def run_eval() -> float:
            nonlocal best
            returns = evaluate(q_network, eval_envs, args.seed + 100_000 + len(evals) * args.eval_episodes, device,
                               args.frame_stack, args.eval_epsilon)
            final_returns[:] = returns.tolist()
            wall = time.perf_counter() - t_start
            mean = float(returns.mean())
            evals.append([global_step, mean, wall])
            log.write({"type": "eval", "step": global_step, "wall_s": wall, "mean": mean,
                       "std": float(returns.std()), "returns": returns.tolist()})
            log.flush()
            tb.scalar("eval/mean_return", mean, global_step)
            if mean > best:  # keep the best evaluated network: DQN's greedy return can fall after it succeeds
                best = mean
                save_best(best_path, args, q_network, step=global_step, mean=mean)
            checkpoint()
            return mean

        bar = stack.enter_context(tqdm(total=args.total_timesteps, initial=global_step, unit="step",
                                       disable=not args.progress, dynamic_ncols=True, mininterval=0.5))
        recent: List[float] = list(loop["recent"])  # the last 20 training episodes' returns, for the progress bar
        postfix: Dict[str, str] = {}
        ep_return, ep_length = np.array(loop["ep_return"], np.float64), np.array(loop["ep_length"], np.int64)
        # next-step autoreset: the step after an episode ends only resets that sub-env; it is not a transition.
        was_done = np.array(loop["was_done"], bool)
        update_credit, draw = float(loop["update_credit"]), None
        last_loss = last_q = float("nan")
        last_eval_step = global_step if evals else -1
        in_buffer = Stopwatch()  # time spent inside the replay buffer's calls
        # The acting path runs at every environment step: what it needs, looked up once.
        on_cpu, no_grad, single_env = device.type == "cpu", torch.no_grad(), args.num_envs == 1
        t_loop, cpu_loop = time.perf_counter(), time.process_time()

        while global_step < args.total_timesteps:
            # Epsilon-greedy action for every sub-environment, on the last frame_stack observations.
            eps = epsilon(global_step)
            if single_env:  # scalar draws: the same values from the same stream as size-1 draws, at a third the cost
                explore_all = explore_any = rng.random() < eps
                actions = np.array([rng.integers(n_actions)])
            else:
                explore = rng.random(args.num_envs) < eps
                actions = rng.integers(n_actions, size=args.num_envs)
                explore_all, explore_any = explore.all(), explore.any()
            if not explore_all:
                with no_grad:
                    x = torch.from_numpy(frames.stack)
                    greedy = (q_network(x) if on_cpu else q_network(x.to(device)).cpu()).argmax(dim=1).numpy()
                actions = np.where(explore, actions, greedy) if explore_any else greedy

            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            global_step += args.num_envs
            bar.update(args.num_envs)

            # Store (s, a, r, s', terminated, truncated), one row per sub-env in one add: s' is the ended episode's
            # last observation, not the reset one, and done is `terminated` alone so that time-limit truncations
            # still bootstrap. The buffer has one lane per sub-env and the env's autoreset mode (from_env): in
            # next-step mode it keeps the reset step's row but never samples it. With frame_stack > 1 obs and s'
            # are single frames: the buffer stacks them at sample time.
            keep = ~was_done
            stored_next = real_next_obs(next_obs, infos) if mode == "same_step" else next_obs
            stored_reward = np.sign(rewards) if args.clip_rewards else rewards
            with in_buffer.timed():
                buf.add(obs=obs, action=actions, reward=stored_reward, next_obs=stored_next, done=terminated,
                        truncated=truncated)

            ended = (terminated | truncated) & keep
            ep_return += rewards * keep
            ep_length += keep
            if ended.any():
                for i in np.flatnonzero(ended):
                    episodes += 1
                    recent = (recent + [float(ep_return[i])])[-20:]
                    log.write({"type": "episode", "step": global_step, "return": float(ep_return[i]),
                               "length": int(ep_length[i])})
                    tb.scalar("charts/episodic_return", ep_return[i], global_step)
                    tb.scalar("charts/episodic_length", ep_length[i], global_step)
                    ep_return[i], ep_length[i] = 0.0, 0
                postfix.update(ret=f"{recent[-1]:.0f}", avg20=f"{np.mean(recent):.0f}", eps=f"{eps:.2f}")
                bar.set_postfix(postfix, refresh=False)
            # The sub-envs whose next_obs is a new episode's first observation restart their stacks.
            frames.push(next_obs, ended if mode == "same_step" else was_done)
            if mode == "next_step":
                was_done = terminated | truncated
            obs = next_obs

            # Learning: one gradient step per train_frequency environment steps, whatever num_envs is.
            if global_step >= learn_from:
                if draw is None:
                    draw = stack.enter_context(
                        batch_source(buf, args.batch_size, args.prefetch, beta(global_step) if beta else None))
                update_credit += args.num_envs / args.train_frequency
                if args.anneal_lr and update_credit >= 1.0:  # the rate at this step, set when it is used
                    for group in optimizer.param_groups:
                        group["lr"] = args.learning_rate * max(0.0, 1.0 - global_step / args.total_timesteps)
                while update_credit >= 1.0:
                    update_credit -= 1.0
                    with in_buffer.timed():
                        batch = draw(beta(global_step)) if beta else draw()
                    data = batch.to_torch(device)
                    with torch.no_grad():
                        next_q_target = target_network(data["next_obs"])
                        next_q_online = q_network(data["next_obs"]) if args.double_dqn else None
                        # The buffer's n-step return and discount (gamma^m, 0 after a termination).
                        y = td_target(data["reward"], next_q_target, data["discount"], next_q_online)
                    q_sa = q_network(data["obs"]).gather(1, data["action"].long().unsqueeze(1)).squeeze(1)
                    if args.loss == "huber":
                        elementwise = F.smooth_l1_loss(q_sa, y, reduction="none")
                    else:
                        elementwise = F.mse_loss(q_sa, y, reduction="none")
                    # Prioritized replay: importance weights correct the bias of non-uniform sampling.
                    loss = (data["weights"] * elementwise).mean() if args.per else elementwise.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if args.max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                    optimizer.step()
                    updates += 1
                    if args.per:  # new priorities: |TD error| of the sampled rows
                        td = (q_sa.detach() - y).abs().cpu().numpy()
                        with in_buffer.timed():
                            buf.update_priorities(batch, td)  # the batch carries its generations: stale rows skipped
                    if updates % 100 == 0:
                        last_loss, last_q = loss.item(), q_sa.detach().mean().item()

            # Target network: hard copy (tau = 1) or Polyak average every target_network_frequency steps.
            if crossed(global_step, args.num_envs, args.target_network_frequency):
                with torch.no_grad():
                    for tp, p in zip(target_network.parameters(), q_network.parameters()):
                        tp.copy_(args.tau * p + (1.0 - args.tau) * tp)

            if crossed(global_step, args.num_envs, args.log_frequency):
                steps_per_sec = (global_step - start_step) / (time.perf_counter() - t_loop)
                log.write({"type": "train", "step": global_step, "epsilon": eps, "loss": last_loss, "q": last_q,
                           "updates": updates, "steps_per_sec": steps_per_sec, "buffer_size": len(buf),
                           "buffer_time_s": in_buffer.seconds})
                tb.scalars({"losses/td_loss": last_loss, "losses/q_values": last_q, "charts/epsilon": eps,
                            "charts/SPS": steps_per_sec, "charts/learning_rate": optimizer.param_groups[0]["lr"]},
                           global_step)

            if args.eval_frequency and crossed(global_step, args.num_envs, args.eval_frequency):
                mean = run_eval()
                last_eval_step = global_step
                postfix["eval"] = f"{mean:.0f}"
                bar.set_postfix(postfix, refresh=False)
                if args.target_return is not None and mean >= args.target_return:
                    break

        loop_time, loop_cpu = time.perf_counter() - t_loop, time.process_time() - cpu_loop
        bar.close()
        if last_eval_step != global_step:
            run_eval()
        checkpoint()

    results = {
        "env_id": args.env_id, "seed": args.seed, "steps": global_step, "steps_this_run": global_step - start_step,
        "updates": updates, "episodes": episodes, "final_eval_returns": final_returns,
        "final_eval_mean": float(np.mean(final_returns)), "evals": evals,
        # best periodic evaluation (step, mean return) and its network, kept in best.pt
        "best_eval": max(((int(e[0]), float(e[1])) for e in evals), key=lambda x: x[1], default=None),
        "best_path": best_path if os.path.isfile(best_path) else None,
        "wall_time_s": time.perf_counter() - t_start, "loop_time_s": loop_time,
        "steps_per_sec": (global_step - start_step) / loop_time, "loop_cpu_s": loop_cpu,
        "buffer_time_s": in_buffer.seconds,
        "buffer_share": in_buffer.seconds / loop_time, "run_dir": run_dir, "log_path": log.path,
    }
    return finish_run(args, results)  # the plot, results.json


def crossed(step: int, num_envs: int, every: int) -> bool:
    """Did the vector step that reached ``step`` pass a multiple of ``every`` environment steps?"""
    return step // every != (step - num_envs) // every


# ---------------------------------------------------------------------------------------------------------------------
# The replay buffer (its batches come from batch_source, in _trainer_io.py: prefetched or sampled per step).


def make_buffer(args: Args, envs: gym.vector.VectorEnv) -> Any:
    """An episodic buffer from the vector env's spaces: one lane per sub-env, the env's autoreset mode, single
    frames stacked at sample time (``frame_stack``), n-step returns and their discount computed at sample time."""
    if args.buffer == "reference":
        from fastreplay import reference as impl
    else:
        impl = fastreplay
    # One lane per sub-env: the capacity must be a whole number of steps of all of them.
    capacity = max(envs.num_envs, args.buffer_size // envs.num_envs * envs.num_envs)
    episodes: Dict[str, Any] = dict(n_step=args.n_step, gamma=args.gamma)
    if args.frame_stack > 1:
        episodes["frame_stack"] = args.frame_stack  # one frame stored per step; next_obs "dedup" by default
    if args.per:
        return impl.PrioritizedReplayBuffer.from_env(
            envs, capacity, seed=args.seed, alpha=args.per_alpha, eps=args.per_eps, **episodes
        )
    return impl.ReplayBuffer.from_env(envs, capacity, seed=args.seed, **episodes)


def load_buffer(args: Args, path: str, added: int) -> Any:
    """The buffer a checkpoint saved beside it (``added`` transitions added in all), with this run's n_step and gamma. Raises
    ``ValueError`` if it is missing, unreadable, or not the buffer that checkpoint saved for this run."""
    where = f"--resume: the replay buffer {path!r}"
    cls = fastreplay.PrioritizedReplayBuffer if args.per else fastreplay.ReplayBuffer
    try:
        buf = fastreplay.ReplayBuffer.load(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{where} cannot be loaded ({e}); --no-save-buffer runs resume without one") from None
    if type(buf) is not cls:
        raise ValueError(f"{where} holds a {type(buf).__name__}; this run needs a {cls.__name__} "
                         f"({'with' if args.per else 'without'} --per)")
    if buf.num_envs != args.num_envs or buf.frame_stack != args.frame_stack:
        raise ValueError(f"{where} has num_envs={buf.num_envs} and frame_stack={buf.frame_stack}, this run "
                         f"{args.num_envs} and {args.frame_stack}")
    if buf.total_added != added:
        raise ValueError(f"{where} has had {buf.total_added} transitions added, the checkpoint's {added}: it is "
                         "not the buffer saved with that checkpoint")
    buf.n_step, buf.gamma = args.n_step, args.gamma
    return buf


# ---------------------------------------------------------------------------------------------------------------------
# The command line: every field of Args is an option (--field-name, --no-flag for booleans), its docstring the help.


def parse_args(argv: Optional[Sequence[str]] = None) -> Args:
    return tyro.cli(Args, prog=PROG, description=DESCRIPTION, args=argv)


def check_resume(args: Args) -> None:
    """Load ``--resume`` into throwaway networks and optimizer exactly as :func:`train` will (leaving torch's global
    random state alone), so that a garbage, foreign, partial or mismatched file is an argument error before any
    environment runs. Raises ``ValueError`` naming the file and what is wrong."""
    if args.resume is None:
        return
    args = resolved(args)
    with contextlib.closing(make_env(args.env_id)) as env:
        obs_shape, n_actions = tuple(env.observation_space.shape), int(env.action_space.n)
    q_network = make_q_network(args, obs_shape, n_actions)
    target_network = make_q_network(args, obs_shape, n_actions)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
    load_checkpoint(args.resume, args, q_network, target_network, optimizer, np.random.default_rng(0),
                    torch.device("cpu"), restore_torch_rng=False)


def main(argv: Optional[Sequence[str]] = None) -> None:
    with one_line_errors():  # a bad argument or --resume file: one "fastreplay-dqn: error: ..." line, exit status 2
        args = resolved(parse_args(argv))
        check_args(args)
        check_resume(args)
    print_summary(args, train(args))


if __name__ == "__main__":
    main()
