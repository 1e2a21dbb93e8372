"""Ape-X DQN (Horgan et al. 2018) on Ray with fastreplay's sharded prioritized replay: ``python -m fastreplay.apex``.

N actor processes, each with its own epsilon ``eps_i = epsilon ** (1 + alpha * i / (N - 1))`` (the paper's 0.4 and
7), run the environment with a copy of the Q-network, compute 3-step transitions and their initial priorities
(|TD error| under their copy, as Ape-X's actors do) and send them in batches of 50 to the replay shards
(:class:`fastreplay.ray.ShardedReplay`). One learner (this process) samples prioritized batches across the shards
with several in flight, trains a Double-DQN with a target network on n-step returns, sends the new priorities back
and publishes its weights, which the actors fetch every ``--actor-sync`` steps. A samples-per-insert rate limiter on
each shard holds the replay ratio at ``--samples-per-insert`` whatever the relative speeds of actors and learner.

Without ``--address`` the command starts a local Ray cluster itself; with ``--address auto`` (or ``HOST:6379``) it
joins a running one (``ray start --head`` on one machine, ``ray start --address=HOST:6379`` on the others) and
spreads actors and shards over its nodes. See docs/distributed.md. Needs ``pip install fastreplay[ray,train]``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np


def actor_epsilons(n: int, epsilon: float = 0.4, alpha: float = 7.0) -> List[float]:
    """Ape-X's per-actor exploration rates: ``epsilon ** (1 + alpha * i / (n - 1))`` (one actor: ``epsilon``)."""
    if n == 1:
        return [epsilon]
    return [epsilon ** (1 + alpha * i / (n - 1)) for i in range(n)]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastreplay.apex", description=__doc__.split("\n\n")[0])
    p.add_argument("--env-id", default="CartPole-v1")
    p.add_argument("--num-actors", type=int, default=2)
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto' or HOST:PORT); default: start one")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--buffer-size", type=int, default=100_000, help="total replay capacity over all shards")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples-per-insert", type=float, default=32.0,
                   help="sampled rows per inserted row, held by each shard's rate limiter (0: no limiter)")
    p.add_argument("--learning-starts", type=int, default=1000, help="stored transitions before learning")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--n-step", type=int, default=3)
    p.add_argument("--target-update", type=int, default=128, help="learner updates between target network copies")
    p.add_argument("--epsilon", type=float, default=0.4)
    p.add_argument("--epsilon-alpha", type=float, default=7.0)
    p.add_argument("--alpha", type=float, default=0.6, help="priority exponent")
    p.add_argument("--beta", type=float, default=0.4, help="importance-sampling exponent")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--send-rows", type=int, default=50, help="transitions per send from an actor")
    p.add_argument("--actor-sync", type=int, default=400, help="actor steps between weight fetches")
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--publish-every", type=int, default=50, help="learner updates between weight publications")
    p.add_argument("--eval-every", type=int, default=1000, help="learner updates between evaluations")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--target-return", type=float, default=475.0, help="stop once an evaluation reaches it")
    p.add_argument("--max-updates", type=int, default=50_000)
    p.add_argument("--max-seconds", type=float, default=1800.0)
    p.add_argument("--log", default=None, help="write the evaluation log (JSON lines) here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Actor process


class ApexActor:
    """One actor process: environment, Q-network copy, epsilon-greedy policy, n-step transitions, priorities."""

    def __init__(self, idx: int, epsilon: float, args: Dict[str, Any], writer: Any, params: Any) -> None:
        import gymnasium as gym
        import torch

        from .dqn import QNetwork

        torch.set_num_threads(1)
        self.idx, self.epsilon, self.a = idx, epsilon, args
        self.env = gym.make(args["env_id"])
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.n_actions = int(self.env.action_space.n)
        self.q = QNetwork(self.obs_dim, self.n_actions, args["hidden"])
        self.writer, self.params = writer, params
        self.version = -1
        self.rng = np.random.default_rng(args["seed"] * 1000 + idx)
        self.seed = args["seed"] * 1000 + idx

    def _sync(self) -> None:
        import ray
        import torch

        version, weights = ray.get(self.params.get.remote(self.version))
        if weights is not None:
            self.q.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
            self.version = version

    def run(self) -> Dict[str, Any]:
        import ray
        import torch

        from .ray import ShardLost

        a = self.a
        n, gamma = a["n_step"], a["gamma"]
        obs, _ = self.env.reset(seed=self.seed)
        window: collections.deque = collections.deque()
        pending: List[tuple] = []
        steps, episodes, ep_ret, returns = 0, 0, 0.0, []
        self._sync()
        try:
            while True:
                if steps % a["actor_sync"] == 0:
                    if ray.get(self.params.stopped.remote()):
                        break
                    self._sync()
                if self.rng.random() < self.epsilon:
                    action = int(self.rng.integers(self.n_actions))
                else:
                    with torch.no_grad():
                        action = int(self.q(torch.from_numpy(obs[None].astype(np.float32))).argmax(1)[0])
                next_obs, reward, terminated, truncated, _ = self.env.step(action)
                steps += 1
                ep_ret += float(reward)
                window.append((obs, action, float(reward)))
                done = terminated or truncated
                # n-step transitions: the oldest step of a full window, or every step of the window at an episode end.
                while window and (len(window) == n or done):
                    o0, a0, _ = window[0]
                    ret = sum(r * gamma ** j for j, (_, _, r) in enumerate(window))
                    disc = 0.0 if terminated else gamma ** len(window)
                    pending.append((o0, a0, ret, next_obs, disc))
                    window.popleft()
                    if not done:
                        break
                obs = next_obs
                if done:
                    returns.append(ep_ret)
                    episodes += 1
                    ray.get(self.params.report.remote(self.idx, ep_ret, steps))
                    ep_ret = 0.0
                    obs, _ = self.env.reset()
                if len(pending) >= a["send_rows"]:
                    self._send(pending)
                    pending = []
        except ShardLost:
            pass
        return {"actor": self.idx, "steps": steps, "episodes": episodes}

    def _send(self, rows: List[tuple]) -> None:
        import torch

        o = np.stack([r[0] for r in rows]).astype(np.float32)
        act = np.array([r[1] for r in rows], np.int64)
        ret = np.array([r[2] for r in rows], np.float32)
        no = np.stack([r[3] for r in rows]).astype(np.float32)
        disc = np.array([r[4] for r in rows], np.float32)
        with torch.no_grad():  # Ape-X: initial priorities are the actor's own |TD errors|
            q = self.q(torch.from_numpy(o)).gather(1, torch.from_numpy(act)[:, None]).squeeze(1)
            target = torch.from_numpy(ret) + torch.from_numpy(disc) * self.q(torch.from_numpy(no)).max(1).values
            prio = (target - q).abs().numpy().astype(np.float64)
        self.writer.add(obs=o, action=act, reward=ret, next_obs=no, discount=disc, priority=prio)


class Params:
    """The learner's latest weights (numpy arrays), a stop flag and the actors' episode returns."""

    def __init__(self) -> None:
        self.version, self.weights, self.stop = 0, None, False
        self.returns: List[tuple] = []

    def set(self, weights: Dict[str, np.ndarray]) -> None:
        self.version += 1
        self.weights = weights

    def get(self, have: int):
        return (self.version, self.weights) if have != self.version else (self.version, None)

    def report(self, actor: int, ret: float, steps: int) -> None:
        self.returns.append((actor, ret, steps))

    def drain(self) -> List[tuple]:
        out, self.returns = self.returns, []
        return out

    def stopped(self) -> bool:
        return self.stop

    def set_stop(self) -> None:
        self.stop = True


# ---------------------------------------------------------------------------------------------------------------------
# Learner


def evaluate(q: Any, env_id: str, episodes: int, seed: int) -> float:
    """Mean return of the greedy policy over ``episodes`` episodes (a vector env, one episode per copy)."""
    import gymnasium as gym
    import torch

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    total = np.zeros(episodes)
    alive = np.ones(episodes, bool)
    while alive.any():
        with torch.no_grad():
            act = q(torch.from_numpy(obs.astype(np.float32))).argmax(1).numpy()
        obs, r, term, trunc, _ = envs.step(act)
        total += r * alive
        alive &= ~(term | trunc)
    envs.close()
    return float(total.mean())


def train(args: argparse.Namespace) -> Dict[str, Any]:
    import gymnasium as gym
    import ray
    import torch
    import torch.nn.functional as F

    from .dqn import QNetwork
    from .rate_limiter import RateLimiter
    from .ray import ShardedReplay

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    t_start = time.monotonic()
    if args.address is None:
        ray.init(num_cpus=args.num_actors + 1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    else:
        ray.init(address=args.address, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    env = gym.make(args.env_id)
    obs_dim = int(np.prod(env.observation_space.shape))
    n_actions = int(env.action_space.n)
    fields = {"obs": ((obs_dim,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
              "next_obs": ((obs_dim,), np.float32), "discount": ((), np.float32)}
    limiter = None
    if args.samples_per_insert > 0:
        per_shard_min = max(1, args.learning_starts // args.num_shards)
        # The band must hold one learner sample (<= B rows) plus one actor send (send_rows * spi): no deadlock.
        error_buffer = args.batch_size + args.send_rows * args.samples_per_insert
        limiter = RateLimiter(args.samples_per_insert, per_shard_min, error_buffer)
    replay = ShardedReplay(args.num_shards, args.buffer_size, fields, alpha=args.alpha, seed=args.seed,
                           rate_limiter=limiter, actor_options={"scheduling_strategy": "SPREAD"})
    q = QNetwork(obs_dim, n_actions, args.hidden)
    target = QNetwork(obs_dim, n_actions, args.hidden)
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=args.learning_rate)
    params = ray.remote(num_cpus=0)(Params).remote()

    def publish() -> None:
        params.set.remote({k: v.detach().numpy().copy() for k, v in q.state_dict().items()})

    publish()
    eps = actor_epsilons(args.num_actors, args.epsilon, args.epsilon_alpha)
    actor_cls = ray.remote(num_cpus=1)(ApexActor)
    cfg = dict(env_id=args.env_id, hidden=args.hidden, seed=args.seed, n_step=args.n_step, gamma=args.gamma,
               actor_sync=args.actor_sync, send_rows=args.send_rows)
    actors = [actor_cls.remote(i, eps[i], cfg, replay.writer(batch_rows=args.send_rows, first_shard=i), params)
              for i in range(args.num_actors)]
    runs = [a.run.remote() for a in actors]
    while len(replay) < args.learning_starts:
        time.sleep(0.2)
    log: List[Dict[str, Any]] = []
    updates, solved, best = 0, None, -np.inf
    t_learn = time.monotonic()
    batches = replay.batches(args.batch_size, beta=args.beta, prefetch=args.prefetch, timeout=None)
    actor_returns: collections.deque = collections.deque(maxlen=20)
    while updates < args.max_updates and time.monotonic() - t_start < args.max_seconds:
        b = next(batches)
        t = b.to_torch()
        q_sa = q(t["obs"]).gather(1, t["action"][:, None]).squeeze(1)
        with torch.no_grad():
            a_next = q(t["next_obs"]).argmax(1, keepdim=True)
            y = t["reward"] + t["discount"] * target(t["next_obs"]).gather(1, a_next).squeeze(1)
        td = y - q_sa
        loss = (t["weights"] * F.smooth_l1_loss(q_sa, y, reduction="none")).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(q.parameters(), 10.0)
        opt.step()
        replay.update_priorities(b, td.detach().abs().numpy())
        updates += 1
        if updates % args.target_update == 0:
            target.load_state_dict(q.state_dict())
        if updates % args.publish_every == 0:
            publish()
        if updates % args.eval_every == 0:
            actor_returns.extend(r[1] for r in ray.get(params.drain.remote()))
            stats = replay.stats()
            ret = evaluate(q, args.env_id, args.eval_episodes, args.seed + updates)
            best = max(best, ret)
            rec = {"updates": updates, "seconds": round(time.monotonic() - t_start, 1),
                   "env_steps": int(sum(s["total_added"] for s in stats)), "eval_return": ret,
                   "actor_return_mean20": float(np.mean(actor_returns)) if actor_returns else None,
                   "updates_per_s": round(updates / (time.monotonic() - t_learn), 1)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
            if args.log:
                with open(args.log, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            if ret >= args.target_return:
                solved = rec
                break
    ray.get(params.set_stop.remote())
    replay.close()  # wakes actors blocked by the rate limiter (they see ShardLost and stop)
    for r in runs:
        try:
            ray.get(r, timeout=30)
        except Exception:
            pass
    result = {"solved": solved is not None, "at": solved, "best_eval": best, "updates": updates,
              "seconds": round(time.monotonic() - t_start, 1), "epsilons": eps, "log": log}
    ray.shutdown()
    return result


def main(argv: Optional[List[str]] = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = parse_args(argv)
    result = train(args)
    print(json.dumps({k: v for k, v in result.items() if k != "log"}))


if __name__ == "__main__":
    main()
