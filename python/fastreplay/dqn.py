"""DQN on gymnasium with a fastreplay buffer, in one file that reads top to bottom (after CleanRL's ``dqn.py``).

Run ``python -m fastreplay.dqn --help`` (or ``fastreplay-dqn``). With the defaults, CartPole-v1's mean greedy
evaluation return first reaches 475 after 30k-60k environment steps, a minute or two on one CPU core (the run goes on
to 100k steps; examples/README.md has the figures). The loop lives in
:func:`train`, which takes an :class:`Args` and returns a dict of results, so it can be called from Python and tests.
The command line is :class:`Args`, parsed by tyro; checks, logs, checkpoints and the plot are in ``_cli.py`` and
``_trainer_io.py``. Needs ``pip install fastreplay[train]`` (torch, gymnasium, tqdm, matplotlib, tyro); importing
:mod:`fastreplay` alone does not import any of them.
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
from fastreplay._trainer_envs import autoreset_mode, evaluate, real_next_obs
from fastreplay._trainer_io import RunLog, Stopwatch, batch_source, finish_run, load_checkpoint, save_checkpoint
from fastreplay.schedules import LinearSchedule


@dataclass
class Args:
    """Train DQN on a gymnasium environment with a fastreplay buffer."""

    exp_name: str = "dqn"
    """name of the experiment, part of the run directory's name"""
    seed: int = 1
    """seed of torch, numpy, the environments and the replay buffer (bit-exact reruns on CPU need --no-prefetch)"""
    device: str = "cpu"
    """torch device for the networks, e.g. 'cpu', 'cuda', 'cuda:1'"""
    threads: int = 1
    """torch CPU threads (torch.set_num_threads); 0 keeps torch's default. One is fastest for these small networks"""
    output_dir: str = "runs"
    """directory under which each run writes its own directory (log.jsonl, learning_curve.png, results.json)"""
    progress: bool = True
    """show a tqdm progress bar with episodic return and steps per second"""
    plot: bool = True
    """write the learning-curve PNG at the end"""
    save: Optional[str] = None
    """checkpoint file written after every evaluation and at the end (network, target, optimizer, counters)"""
    resume: Optional[str] = None
    """checkpoint file to continue from (the replay buffer is not saved: it refills for learning_starts steps)"""

    # Algorithm arguments
    env_id: str = "CartPole-v1"
    """gymnasium environment id: a Box observation space and a Discrete action space"""
    total_timesteps: int = 100_000
    """environment steps to train for, summed over the vector environments"""
    num_envs: int = 1
    """parallel environments (gymnasium.vector.SyncVectorEnv); each step adds one row per environment"""
    buffer: Literal["fastreplay", "reference"] = "fastreplay"
    """replay buffer implementation: the C++ one, or fastreplay.reference in pure Python (for comparisons)"""
    buffer_size: int = 50_000
    """replay buffer capacity in transitions"""
    hidden_sizes: Tuple[int, ...] = (256, 256)
    """widths of the Q-network's hidden layers"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 1.0
    """target network update rate: 1 copies the online network, less than 1 is a soft (Polyak) update"""
    target_network_frequency: int = 256
    """environment steps between target network updates"""
    batch_size: int = 64
    """transitions per gradient step"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: float = 0.04
    """exploration epsilon at the end of the schedule"""
    exploration_fraction: float = 0.16
    """fraction of total_timesteps over which epsilon falls linearly from start_e to end_e"""
    learning_starts: int = 1_000
    """environment steps of pure collection before the first gradient step"""
    train_frequency: int = 2
    """environment steps per gradient step (kept the same for any num_envs)"""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss: Huber (smooth L1) or mean squared error"""
    double_dqn: bool = True
    """Double DQN: the online network picks the next action, the target network values it"""
    max_grad_norm: float = 10.0
    """clip the gradient's global norm to this; 0 disables clipping"""
    per: bool = False
    """prioritized experience replay (proportional, fastreplay.PrioritizedReplayBuffer)"""
    per_alpha: float = 0.6
    """priority exponent alpha of prioritized replay"""
    per_beta0: float = 0.4
    """importance-sampling exponent beta at the start, annealed linearly to 1 at the end of training"""
    per_eps: float = 1e-6
    """added to |TD error| before the exponent, so no transition has zero probability"""
    prefetch: bool = True
    """sample batches on the buffer's background threads (buf.prefetch) when the buffer has them. They are drawn
    while new rows arrive, so a run is exactly reproducible from its seed only with --no-prefetch"""

    # Evaluation
    eval_frequency: int = 2_500
    """environment steps between greedy evaluations; 0 evaluates only at the end"""
    eval_episodes: int = 20
    """episodes per greedy evaluation (run in parallel, one per environment copy)"""
    target_return: Optional[float] = None
    """stop early once an evaluation's mean return reaches this (default: train for total_timesteps)"""
    log_frequency: int = 1_000
    """environment steps between training-statistics records in the log"""


# ---------------------------------------------------------------------------------------------------------------------
# Environments. Vector environments reset a sub-environment automatically when its episode ends; what they return
# in that step depends on gymnasium's autoreset mode (autoreset_mode), and the stored s' must be the ended episode's
# last observation (real_next_obs). Both are in _trainer_envs.py, with the greedy evaluation.


def make_vec_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    mode = getattr(gym.vector, "AutoresetMode", None)
    if mode is not None:  # gymnasium >= 1.1: ask for same-step autoreset, the last obs comes in infos
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode.SAME_STEP)
    return gym.vector.SyncVectorEnv(fns)


# ---------------------------------------------------------------------------------------------------------------------
# The Q-network and the TD target.


class QNetwork(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        width = obs_dim
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions))
        self.network = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.network(obs.reshape(obs.shape[0], -1).float())


def td_target(reward: torch.Tensor, next_q_target: torch.Tensor, done: torch.Tensor, gamma: float,
              next_q_online: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = r + gamma * (1 - done) * Q_target(s', a')``, float[B].

    ``next_q_target`` and ``next_q_online`` are ``float[B, A]``. ``a'`` is ``argmax Q_target(s')`` (DQN) or, with
    ``next_q_online``, ``argmax Q_online(s')`` (Double DQN). ``done`` must be ``terminated`` only: a time-limit
    truncation is not a terminal state, so its (stored, pre-reset) s' is bootstrapped like any other.
    """
    if next_q_online is None:
        next_v = next_q_target.max(dim=1).values
    else:
        next_v = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return reward + gamma * (1.0 - done.float()) * next_v


# ---------------------------------------------------------------------------------------------------------------------
# The training loop.


def train(args: Args) -> Dict[str, Any]:
    """Train DQN as ``args`` says; returns the results (also written to ``<run_dir>/results.json``).

    Keys: ``final_eval_returns`` (list), ``final_eval_mean``, ``evals`` (list of ``[step, mean return, seconds
    since the start]``), ``best_eval``, ``steps`` (environment steps reached), ``steps_this_run``, ``updates``,
    ``episodes``, ``wall_time_s``, ``loop_time_s`` (the training loop, periodic evaluations included),
    ``steps_per_sec`` (of the loop), ``buffer_time_s`` and ``buffer_share`` (loop time spent inside the buffer's add,
    sample or prefetch and update_priorities), ``run_dir``, ``log_path``, ``plot_path`` (None without ``plot``),
    ``checkpoint_path``. Raises ``ValueError`` for bad arguments.
    """
    t_start = time.perf_counter()
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
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        n_actions = int(envs.single_action_space.n)

        q_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
        optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
        target_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
        target_network.load_state_dict(q_network.state_dict())

        buf = make_buffer(args, envs)
        # Epsilon falls linearly over exploration_fraction of training; PER's beta rises to 1 over all of it.
        explore_steps = max(1, int(args.exploration_fraction * args.total_timesteps))
        epsilon = LinearSchedule(args.start_e, args.end_e, explore_steps)
        beta = LinearSchedule(args.per_beta0, 1.0, args.total_timesteps) if args.per else None

        global_step, updates, episodes, evals = 0, 0, 0, []
        if args.resume is not None:
            ckpt = load_checkpoint(args.resume, args, q_network, target_network, optimizer, rng, device)
            global_step, updates, episodes = ckpt["global_step"], ckpt["updates"], ckpt["episodes"]
            evals = [list(e) for e in ckpt["evals"]]
        start_step = global_step
        # The buffer starts empty, also after a resume: collect learning_starts steps before learning.
        learn_from = start_step + args.learning_starts

        run_dir = os.path.join(args.output_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
        os.makedirs(run_dir, exist_ok=True)
        log = stack.enter_context(contextlib.closing(RunLog(os.path.join(run_dir, "log.jsonl"))))
        log.write({"type": "args", "step": global_step, **dataclasses.asdict(args), "autoreset_mode": mode,
                   "fastreplay": fastreplay.__version__, "torch": torch.__version__, "gymnasium": gym.__version__})

        def checkpoint() -> None:
            if args.save is not None:
                save_checkpoint(args.save, args, q_network, target_network, optimizer, rng, global_step=global_step,
                                updates=updates, episodes=episodes, epsilon=epsilon(global_step), evals=evals)

        final_returns: List[float] = []

        def run_eval() -> float:
            returns = evaluate(q_network, eval_envs, args.seed + 100_000 + len(evals) * args.eval_episodes, device)
            final_returns[:] = returns.tolist()
            wall = time.perf_counter() - t_start
            evals.append([global_step, float(returns.mean()), wall])
            log.write({"type": "eval", "step": global_step, "wall_s": wall, "mean": float(returns.mean()),
                       "std": float(returns.std()), "returns": returns.tolist()})
            log.flush()
            checkpoint()
            return float(returns.mean())

        bar = stack.enter_context(tqdm(total=args.total_timesteps, initial=global_step, unit="step",
                                       disable=not args.progress, dynamic_ncols=True, mininterval=0.5))
        recent: List[float] = []  # the last 20 training episodes' returns, for the progress bar
        postfix: Dict[str, str] = {}
        ep_return = np.zeros(args.num_envs)
        ep_length = np.zeros(args.num_envs, dtype=np.int64)
        # next-step autoreset: the step after an episode ends only resets that sub-env; it is not a transition.
        was_done = np.zeros(args.num_envs, dtype=bool)
        update_credit, draw = 0.0, None
        last_loss = last_q = float("nan")
        last_eval_step = global_step if evals else -1
        in_buffer = Stopwatch()  # time spent inside the replay buffer's calls
        t_loop = time.perf_counter()

        obs, _ = envs.reset(seed=args.seed)
        envs.single_action_space.seed(args.seed)
        while global_step < args.total_timesteps:
            # Epsilon-greedy action for every sub-environment.
            eps = epsilon(global_step)
            explore = rng.random(args.num_envs) < eps
            actions = rng.integers(n_actions, size=args.num_envs)
            if not explore.all():
                with torch.no_grad():
                    greedy = q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
                actions = np.where(explore, actions, greedy)

            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            global_step += args.num_envs
            bar.update(args.num_envs)

            # Store (s, a, r, s', terminated, truncated), one row per sub-env in one add: s' is the ended episode's
            # last observation, not the reset one, and done is `terminated` alone so that time-limit truncations
            # still bootstrap. The buffer has one lane per sub-env and the env's autoreset mode (from_env): in
            # next-step mode it keeps the reset step's row but never samples it.
            keep = ~was_done
            stored_next = real_next_obs(next_obs, infos) if mode == "same_step" else next_obs
            with in_buffer.timed():
                buf.add(obs=obs, action=actions, reward=rewards, next_obs=stored_next, done=terminated,
                        truncated=truncated)

            ended = (terminated | truncated) & keep
            ep_return += rewards * keep
            ep_length += keep
            for i in np.flatnonzero(ended):
                episodes += 1
                recent = (recent + [float(ep_return[i])])[-20:]
                log.write({"type": "episode", "step": global_step, "return": float(ep_return[i]),
                           "length": int(ep_length[i])})
                ep_return[i], ep_length[i] = 0.0, 0
            if ended.any():
                postfix.update(ret=f"{recent[-1]:.0f}", avg20=f"{np.mean(recent):.0f}", eps=f"{eps:.2f}")
                bar.set_postfix(postfix, refresh=False)
            if mode == "next_step":
                was_done = terminated | truncated
            obs = next_obs

            # Learning: one gradient step per train_frequency environment steps, whatever num_envs is.
            if global_step >= learn_from:
                if draw is None:
                    draw = stack.enter_context(
                        batch_source(buf, args.batch_size, args.prefetch, beta(global_step) if beta else None))
                update_credit += args.num_envs / args.train_frequency
                while update_credit >= 1.0:
                    update_credit -= 1.0
                    with in_buffer.timed():
                        batch = draw(beta(global_step)) if beta else draw()
                    data = batch.to_torch(device)
                    with torch.no_grad():
                        next_q_target = target_network(data["next_obs"])
                        next_q_online = q_network(data["next_obs"]) if args.double_dqn else None
                        y = td_target(data["reward"], next_q_target, data["done"], args.gamma, next_q_online)
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

            if args.eval_frequency and crossed(global_step, args.num_envs, args.eval_frequency):
                mean = run_eval()
                last_eval_step = global_step
                postfix["eval"] = f"{mean:.0f}"
                bar.set_postfix(postfix, refresh=False)
                if args.target_return is not None and mean >= args.target_return:
                    break

        loop_time = time.perf_counter() - t_loop
        bar.close()
        if last_eval_step != global_step:
            run_eval()
        checkpoint()

    results = {
        "env_id": args.env_id, "seed": args.seed, "steps": global_step, "steps_this_run": global_step - start_step,
        "updates": updates, "episodes": episodes, "final_eval_returns": final_returns,
        "final_eval_mean": float(np.mean(final_returns)), "evals": evals,
        # best periodic evaluation (step, mean return): DQN's greedy return oscillates after it first succeeds
        "best_eval": max(((int(e[0]), float(e[1])) for e in evals), key=lambda x: x[1], default=None),
        "wall_time_s": time.perf_counter() - t_start, "loop_time_s": loop_time,
        "steps_per_sec": (global_step - start_step) / loop_time, "buffer_time_s": in_buffer.seconds,
        "buffer_share": in_buffer.seconds / loop_time, "run_dir": run_dir, "log_path": log.path,
    }
    return finish_run(args, results)  # the plot, results.json


def crossed(step: int, num_envs: int, every: int) -> bool:
    """Did the vector step that reached ``step`` pass a multiple of ``every`` environment steps?"""
    return step // every != (step - num_envs) // every


# ---------------------------------------------------------------------------------------------------------------------
# The replay buffer (its batches come from batch_source, in _trainer_io.py: prefetched or sampled per step).


def make_buffer(args: Args, envs: gym.vector.VectorEnv) -> Any:
    if args.buffer == "reference":
        from fastreplay import reference as impl
    else:
        impl = fastreplay
    # One lane per sub-env: the capacity must be a whole number of steps of all of them.
    capacity = max(envs.num_envs, args.buffer_size // envs.num_envs * envs.num_envs)
    if args.per:
        return impl.PrioritizedReplayBuffer.from_env(
            envs, capacity, seed=args.seed, alpha=args.per_alpha, eps=args.per_eps
        )
    return impl.ReplayBuffer.from_env(envs, capacity, seed=args.seed)


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
    with contextlib.closing(gym.make(args.env_id)) as env:
        obs_dim, n_actions = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    q_network = QNetwork(obs_dim, n_actions, args.hidden_sizes)
    target_network = QNetwork(obs_dim, n_actions, args.hidden_sizes)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
    load_checkpoint(args.resume, args, q_network, target_network, optimizer, np.random.default_rng(0),
                    torch.device("cpu"), restore_torch_rng=False)


def main(argv: Optional[Sequence[str]] = None) -> None:
    with one_line_errors():  # a bad argument or --resume file: one "fastreplay-dqn: error: ..." line, exit status 2
        args = parse_args(argv)
        check_args(args)
        check_resume(args)
    print_summary(args, train(args))


if __name__ == "__main__":
    main()
