"""Multi-task DQN: one shared network learns several gymnasium environments from one multi-task buffer.

    python -m fastreplay.dqn_tasks                                   # CartPole, a long-pole CartPole, Acrobot
    python -m fastreplay.dqn_tasks --env-ids CartPole-v1,Acrobot-v1 --tasks-mode proportional

Each task is an environment id, optionally with attributes set on the unwrapped environment after ``gym.make``
(``CartPole-v1:length=1.0:masspole=0.2``; CartPole's derived constants are recomputed). Observations are padded
with zeros to the longest one and the task is given to the network as a one-hot input; the trunk is shared and
every task has its own output head (its own number of actions). Every iteration steps each task's environment
``--steps-per-task`` times (so tasks can produce data at different rates) and adds the transitions to one
``ReplayBuffer(tasks=K)``: each task keeps its own quota, so a fast task never evicts a slow one's. Training batches
come from ``sample(B, tasks=--tasks-mode)`` (``"balanced"``: B/K rows per task; ``"proportional"``: by stored size,
i.e. by data rate), grouped by task, so each head is applied to its own rows without re-sorting. The TD target is
DQN's on the buffer's n-step returns (target network, Huber loss, the learning rate annealed to 0); the buffer keeps
each task's episodes (``num_envs=1`` per task, ``truncated`` marks time limits). Writes ``<output-dir>/<run>/log.jsonl`` (every
greedy evaluation: step, task, mean return) and ``results.json``. Needs ``pip install fastreplay[train]``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Literal, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import fastreplay
from fastreplay.schedules import LinearSchedule


@dataclass
class Args:
    """Train one DQN on several environments at once from a multi-task fastreplay buffer."""

    env_ids: str = "CartPole-v1,CartPole-v1:length=1.0:masspole=0.3,Acrobot-v1"
    """comma-separated tasks: gymnasium ids, each optionally with :attribute=value settings"""
    steps_per_task: str = "1"
    """environment steps per iteration for each task (one number for all, or one per task, comma-separated)"""
    tasks_mode: Literal["balanced", "proportional"] = "balanced"
    """how a batch is split among tasks (ReplayBuffer.sample's tasks argument)"""
    iterations: int = 60_000
    """training iterations (each steps every task's environment steps-per-task times)"""
    seed: int = 1
    """seed of torch, numpy, the environments and the buffer"""
    buffer_size: int = 150_000
    """slots of the shared buffer, split equally among the tasks"""
    batch_size: int = 128
    learning_rate: float = 1e-3
    """Adam's learning rate, annealed linearly to 0 over the run"""
    gamma: float = 0.99
    n_step: int = 3
    """n-step returns from the buffer (per task: they stop at each task's episode ends)"""
    hidden_sizes: Tuple[int, ...] = (256, 256)
    target_network_frequency: int = 500
    """iterations between target-network copies"""
    train_frequency: int = 2
    """iterations between gradient steps"""
    learning_starts: int = 2_000
    """iterations before training starts"""
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.2
    """fraction of the iterations over which epsilon falls from start_e to end_e"""
    eval_frequency: int = 5_000
    """iterations between greedy evaluations of every task"""
    eval_episodes: int = 5
    output_dir: str = "runs"
    threads: int = 1
    """torch CPU threads"""


def make_task_env(spec: str, seed: int) -> gym.Env:
    """``id[:attr=value...]``: gym.make(id) with attributes of the unwrapped env set (floats)."""
    env_id, *settings = spec.split(":")
    env = gym.make(env_id)
    inner = env.unwrapped
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not hasattr(inner, name):
            raise ValueError(f"--env-ids: {spec!r}: {setting!r} is not attribute=value of {type(inner).__name__}")
        setattr(inner, name, float(value))
    if hasattr(inner, "polemass_length"):  # CartPole derives these in __init__
        inner.total_mass = inner.masspole + inner.masscart
        inner.polemass_length = inner.masspole * inner.length
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


class MultiTaskQNetwork(nn.Module):
    """Q(s, task): a trunk on [obs padded to obs_dim, one-hot task], then the task's own head."""

    def __init__(self, obs_dim: int, n_actions: Sequence[int], hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        width = obs_dim + len(n_actions)
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in n_actions)
        self.num_tasks = len(n_actions)

    def features(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([obs.float(), F.one_hot(task, self.num_tasks).float()], dim=1))

    def forward_task(self, obs: torch.Tensor, t: int) -> torch.Tensor:
        """float[B, actions of t]: every row belongs to task t."""
        task = torch.full((obs.shape[0],), t, dtype=torch.int64)
        return self.heads[t](self.features(obs, task))


def grouped_q(net: MultiTaskQNetwork, obs: torch.Tensor, task: torch.Tensor, counts: Sequence[int]) -> List[torch.Tensor]:
    """Each task's Q-values for its rows of a batch grouped by task (as sample(tasks=...) returns it)."""
    h = net.features(obs, task)
    out, r = [], 0
    for t, c in enumerate(counts):
        out.append(net.heads[t](h[r:r + c]))
        r += c
    return out


def pad(obs: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros(dim, np.float32)
    out[: obs.shape[0]] = obs
    return out


def evaluate(net: MultiTaskQNetwork, specs: Sequence[str], dim: int, episodes: int, seed: int) -> List[float]:
    """Mean greedy return of every task over ``episodes`` episodes."""
    means = []
    for t, spec in enumerate(specs):
        env = make_task_env(spec, seed + 10_000 + t)
        total = []
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + 10_000 + 100 * t + e)
            ret, done = 0.0, False
            while not done:
                with torch.no_grad():
                    a = int(net.forward_task(torch.as_tensor(pad(obs, dim))[None], t).argmax())
                obs, r, term, trunc, _ = env.step(a)
                ret += float(r)
                done = term or trunc
            total.append(ret)
        means.append(float(np.mean(total)))
        env.close()
    return means


def parse_rates(value: str, k: int) -> List[int]:
    rates = [int(x) for x in value.split(",")]
    if len(rates) == 1:
        rates *= k
    if len(rates) != k or min(rates) < 1:
        raise ValueError(f"--steps-per-task: one positive int, or {k} (one per task), got {value!r}")
    return rates


def train(args: Args) -> Dict[str, Any]:
    """Run as ``args`` says; returns the results (also written to ``<run dir>/results.json``)."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    specs = args.env_ids.split(",")
    k = len(specs)
    rates = parse_rates(args.steps_per_task, k)
    envs = [make_task_env(s, args.seed + t) for t, s in enumerate(specs)]
    for e in envs:
        if not isinstance(e.action_space, gym.spaces.Discrete) or len(e.observation_space.shape) != 1:
            raise ValueError("dqn_tasks needs flat Box observations and Discrete actions")
    dim = max(e.observation_space.shape[0] for e in envs)
    n_actions = [int(e.action_space.n) for e in envs]
    if args.buffer_size % k:
        raise ValueError(f"--buffer-size must be a multiple of the {k} tasks")
    buf = fastreplay.ReplayBuffer(args.buffer_size, {
        "obs": ((dim,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
        "next_obs": ((dim,), np.float32), "done": ((), np.bool_), "truncated": ((), np.bool_)},
        seed=args.seed, tasks=k, num_envs=1, n_step=args.n_step, gamma=args.gamma)
    q = MultiTaskQNetwork(dim, n_actions, args.hidden_sizes)
    target = MultiTaskQNetwork(dim, n_actions, args.hidden_sizes)
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=args.learning_rate)
    eps = LinearSchedule(args.start_e, args.end_e, max(1, int(args.exploration_fraction * args.iterations)))
    obs = [pad(e.reset(seed=args.seed + t)[0], dim) for t, e in enumerate(envs)]
    run_dir = os.path.join(args.output_dir, f"dqn_tasks__{args.tasks_mode}__{args.seed}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, "log.jsonl"), "w")
    evals: List[Dict[str, Any]] = []
    start = time.time()
    for it in range(1, args.iterations + 1):
        epsilon = eps(it)
        for t, env in enumerate(envs):
            for _ in range(rates[t]):
                if rng.random() < epsilon:
                    a = int(rng.integers(n_actions[t]))
                else:
                    with torch.no_grad():
                        a = int(q.forward_task(torch.as_tensor(obs[t])[None], t).argmax())
                o2, r, term, trunc, _ = env.step(a)
                o2 = pad(o2, dim)
                buf.add(obs=obs[t][None], action=[a], reward=[r], next_obs=o2[None], done=[term], truncated=[trunc],
                        task=t)
                obs[t] = pad(env.reset()[0], dim) if term or trunc else o2
        if it > args.learning_starts and it % args.train_frequency == 0:
            for g in opt.param_groups:
                g["lr"] = args.learning_rate * (1.0 - it / args.iterations)
            b = buf.sample(args.batch_size, tasks=args.tasks_mode)
            task = torch.from_numpy(b["task"])
            counts = np.bincount(b["task"], minlength=k).tolist()
            o, o2 = torch.from_numpy(b["obs"]), torch.from_numpy(b["next_obs"])
            act = torch.from_numpy(b["action"])
            with torch.no_grad():
                next_v = torch.cat([x.max(dim=1).values for x in grouped_q(target, o2, task, counts)])
                # the buffer's n-step return and discount: gamma**m, 0 when the m steps terminated
                y = torch.from_numpy(b["reward"]).float() + torch.from_numpy(b["discount"]) * next_v
            qs = torch.cat([x.gather(1, a_t[:, None]).squeeze(1) for x, a_t in
                            zip(grouped_q(q, o, task, counts), torch.split(act, counts))])
            loss = F.smooth_l1_loss(qs, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if it % args.target_network_frequency == 0:
            target.load_state_dict(q.state_dict())
        if it % args.eval_frequency == 0 or it == args.iterations:
            means = evaluate(q, specs, dim, args.eval_episodes, args.seed)
            row = {"iteration": it, "seconds": round(time.time() - start, 1), "eval": means,
                   "task_sizes": buf.task_sizes}
            evals.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"iteration {it}: " + ", ".join(f"{s} {m:.1f}" for s, m in zip(specs, means)), flush=True)
    log.close()
    results = {"args": asdict(args), "tasks": specs, "evals": evals, "final_eval": evals[-1]["eval"],
               "seconds": round(time.time() - start, 1), "run_dir": run_dir}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def main(argv: Sequence[str] = None) -> None:
    train(tyro.cli(Args, args=argv))


if __name__ == "__main__":
    main()
