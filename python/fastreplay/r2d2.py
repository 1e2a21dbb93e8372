"""R2D2-lite: a recurrent Q-network learned from replayed sequences with burn-in and stored recurrent state, on a
partially observed CartPole (the velocities removed from the observation), against a feed-forward DQN on the same
observation. Reads top to bottom; ``python -m fastreplay.r2d2 --help``.

What it takes from R2D2 (Kapturowski et al. 2019), at small scale: sequences of ``--length`` steps that never
cross an episode boundary, overlapping by ``--burn-in`` (period = length - burn_in), replayed from the recurrent
state stored when the actor took the first step, with ``--burn-in`` steps run without gradient to refresh it;
sequence priorities ``eta * max|td| + (1 - eta) * mean|td|`` (eta 0.9, exponent 0.9) over the trained steps, and
importance-sampling weights per sequence (exponent ``--beta``); n-step double-DQN targets summed within each
sequence, with the invertible value rescaling ``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``; fresh recurrent
states written back into the buffer after each learner pass (``update_field``). Left out: the dueling head,
distributed actors (one process, ``--num-envs`` vector envs, one annealed epsilon). The buffer:
``fastreplay.PrioritizedReplayBuffer`` with ``num_envs`` lanes, ``sample_sequences`` and
``update_sequence_priorities`` (docs/sequences.md).

``--arch mlp`` trains a plain DQN (an MLP on the same two-number observation, transitions replayed from the same
kind of buffer with its n-step returns, the same targets) for the comparison. Needs torch and gymnasium
(``pip install fastreplay[train]``).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastreplay
from fastreplay._trainer_envs import real_next_obs

#: The observation components kept: cart position and pole angle (velocities 1 and 3 removed), and their scales
#: (the termination thresholds), so that both inputs are O(1).
KEEP = [0, 2]
SCALE = np.array([2.4, 0.2095], np.float32)


class PositionsOnly(gym.ObservationWrapper):
    """CartPole with only the positions observed: the velocities must be inferred from history."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low[KEEP] / SCALE, env.observation_space.high[KEEP] / SCALE
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return (obs[KEEP] / SCALE).astype(np.float32)


def make_envs(n: int, seed: int) -> gym.vector.VectorEnv:
    envs = gym.vector.SyncVectorEnv([lambda: PositionsOnly(gym.make("CartPole-v1")) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    return envs


class RecurrentQ(nn.Module):
    """obs -> MLP -> LSTM -> Q values; the state is (h, c), each [B, hidden]."""

    def __init__(self, obs_dim: int, actions: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.embed = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, actions))

    def forward(self, obs: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]):
        """obs [B, T, obs_dim], state ([B, H], [B, H]) -> (Q [B, T, A], the state after the last step)."""
        out, (h, c) = self.lstm(self.embed(obs), (state[0][None].contiguous(), state[1][None].contiguous()))
        return self.head(out), (h[0], c[0])


class FeedForwardQ(nn.Module):
    def __init__(self, obs_dim: int, actions: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastreplay.r2d2", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["lstm", "mlp"], default="lstm")
    p.add_argument("--steps", type=int, default=200_000, help="environment steps (all envs together)")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--capacity", type=int, default=200_000, help="steps kept (the default keeps every step)")
    p.add_argument("--length", type=int, default=40, help="sequence length, burn-in included")
    p.add_argument("--burn-in", type=int, default=10)
    p.add_argument("--batch", type=int, default=32, help="sequences per update (mlp: transitions = batch*length)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--double", type=int, default=1, help="double DQN targets (1) or plain max (0)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--n-step", type=int, default=3, help="n-step targets, summed within each sequence")
    p.add_argument("--rescale", type=int, default=1, help="R2D2's value rescaling h (1) or none (0)")
    p.add_argument("--beta", type=float, default=0.6, help="importance-sampling exponent of sequence weights")
    p.add_argument("--clip", type=float, default=10.0, help="gradient norm clip")
    p.add_argument("--train-every", type=int, default=2, help="vector steps per update")
    p.add_argument("--target-every", type=int, default=1000, help="updates per target network copy")
    p.add_argument("--learning-starts", type=int, default=2_000)
    p.add_argument("--eps-end", type=float, default=0.02)
    p.add_argument("--eps-fraction", type=float, default=0.3)
    p.add_argument("--log-every", type=int, default=500, help="updates per progress line (0: none)")
    p.add_argument("--eval-episodes", type=int, default=20, help="greedy episodes after training")
    p.add_argument("--check-every", type=int, default=10_000,
                   help="env steps per greedy check of the network during training (0: none); the network of the "
                        "best check is kept and evaluated after training besides the final one")
    p.add_argument("--check-episodes", type=int, default=5, help="greedy episodes per check")
    p.add_argument("--json", default=None, help="write the episode returns here")
    return p.parse_args(argv)


def train(a: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    rng = np.random.default_rng(a.seed)
    K = a.num_envs
    envs = make_envs(K, a.seed)
    obs_dim, n_act = 2, int(envs.single_action_space.n)
    H = a.hidden
    fields = {"obs": ((obs_dim,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
              "next_obs": ((obs_dim,), np.float32), "done": ((), np.bool_), "truncated": ((), np.bool_)}
    recurrent = a.arch == "lstm"
    if recurrent:
        fields["h"] = ((2 * H,), np.float32)  # the actor's (h, c) before the step
        net, target = RecurrentQ(obs_dim, n_act, H), RecurrentQ(obs_dim, n_act, H)
    else:
        net, target = FeedForwardQ(obs_dim, n_act, H), FeedForwardQ(obs_dim, n_act, H)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    # The LSTM learner sums its n-step returns within each sequence from 1-step rows; the MLP takes the buffer's.
    buf = fastreplay.PrioritizedReplayBuffer(a.capacity - a.capacity % K, fields, alpha=0.9, seed=a.seed,
                                             num_envs=K, autoreset="same_step", gamma=a.gamma,
                                             n_step=1 if recurrent else a.n_step)
    obs, _ = envs.reset(seed=a.seed)
    state = torch.zeros(K, 2 * H)
    returns: List[Tuple[int, float]] = []
    ep_ret = np.zeros(K)
    updates, t0 = 0, time.time()
    checks: List[Tuple[int, float]] = []
    best: Optional[Dict[str, torch.Tensor]] = None
    period = a.length - a.burn_in
    for step in range(0, a.steps, K):
        eps = max(a.eps_end, 1.0 - (1.0 - a.eps_end) * step / (a.eps_fraction * a.steps))
        with torch.no_grad():
            o = torch.as_tensor(obs)
            if recurrent:
                q, (h, c) = net(o[:, None], (state[:, :H], state[:, H:]))
                q = q[:, 0]
            else:
                q = net(o)
        act = np.where(rng.random(K) < eps, rng.integers(0, n_act, K), q.argmax(1).numpy())
        nxt, rew, term, trunc, infos = envs.step(act)
        row = dict(obs=obs, action=act, reward=rew.astype(np.float32), next_obs=real_next_obs(nxt, infos),
                   done=term, truncated=trunc)
        if recurrent:
            row["h"] = state.numpy()
            state = torch.cat([h, c], -1)
            state[torch.as_tensor(term | trunc)] = 0.0  # a new episode starts from the zero state
        buf.add(**row)
        ep_ret += rew
        for k in np.flatnonzero(term | trunc):
            returns.append((step + K, float(ep_ret[k])))
            ep_ret[k] = 0.0
        obs = nxt
        if a.check_every and (step + K) // a.check_every > step // a.check_every:
            # Greedy check on its own episode seeds (not the final evaluation's); ties go to the later network.
            score = float(np.mean(evaluate(net, recurrent, H, a.seed + 5000 + 100 * len(checks), a.check_episodes)))
            if not checks or score >= max(c for _, c in checks):
                best = {k: v.clone() for k, v in net.state_dict().items()}
            checks.append((step + K, score))
        if step < a.learning_starts or (step // K) % a.train_every:
            continue
        if recurrent:
            loss = learn_sequences(buf, net, target, opt, a, H, period)
        else:
            loss = learn_transitions(buf, net, target, opt, a)
        if loss is None:
            continue
        updates += 1
        if updates % a.target_every == 0:
            target.load_state_dict(net.state_dict())
        if a.log_every and updates % a.log_every == 0:
            recent = [r for _, r in returns[-20:]]
            print(f"step {step}: {updates} updates, loss {loss:.3f}, return (last 20 episodes) "
                  f"{np.mean(recent) if recent else float('nan'):.1f}, {time.time() - t0:.0f} s", flush=True)
    envs.close()
    out = {"args": {k: v for k, v in vars(a).items() if k != "json"}, "arch": a.arch, "seed": a.seed,
           "steps": a.steps, "updates": updates, "seconds": time.time() - t0, "returns": returns,
           "eval_returns": evaluate(net, recurrent, H, a.seed + 1000, a.eval_episodes), "checks": checks}
    if best is not None:  # the network of the best check, evaluated on the final evaluation's episodes
        net.load_state_dict(best)
        out["best_check"] = max(checks, key=lambda c: (c[1], c[0]))[0]
        out["eval_best_returns"] = evaluate(net, recurrent, H, a.seed + 1000, a.eval_episodes)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh)
    return out


def evaluate(net: nn.Module, recurrent: bool, H: int, seed: int, episodes: int) -> List[float]:
    """Returns of `episodes` greedy episodes (one env; the recurrent state carried from the episode's start)."""
    env = PositionsOnly(gym.make("CartPole-v1"))
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        state = (torch.zeros(1, H), torch.zeros(1, H))
        total, over = 0.0, False
        while not over:
            with torch.no_grad():
                o = torch.as_tensor(obs)[None]
                if recurrent:
                    q, state = net(o[:, None], state)
                    q = q[:, 0]
                else:
                    q = net(o)
            obs, r, term, trunc, _ = env.step(int(q.argmax(1)))
            total += r
            over = term or trunc
        out.append(total)
    return out


def rescale(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """R2D2's invertible value rescaling h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def unrescale(y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The inverse of :func:`rescale`: sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1)."""
    return torch.sign(y) * (((torch.sqrt(1.0 + 4.0 * eps * (y.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)) ** 2 - 1.0)


def n_step_targets(reward: torch.Tensor, discount: torch.Tensor, bootstrap: torch.Tensor, mask: torch.Tensor,
                   n: int) -> torch.Tensor:
    """Per-step n-step returns within each sequence, all [B, T]: ``reward[t]``, ``discount[t]`` (gamma, or 0 after a
    terminal step) and ``bootstrap[t]`` (the value of the state after step t) of 1-step transitions; ``mask`` the
    real steps (a prefix of each row). Step t sums the rewards of steps t .. t+m-1, m = min(n, steps left in its
    sequence), and bootstraps from ``bootstrap[t+m-1]``: ``sum_i (prod_{j<i} d_{t+j}) r_{t+i} + (prod_{j<m}
    d_{t+j}) bootstrap[t+m-1]``. Padding positions get 0."""
    T = reward.shape[1]

    def shift(x: torch.Tensor, i: int) -> torch.Tensor:  # shift(x, i)[:, t] = x[:, t + i], zeros past the end
        return F.pad(x[:, i:], (0, i)) if i else x

    m = mask.to(reward.dtype)
    out = torch.zeros_like(reward)
    disc = torch.ones_like(reward)
    for i in range(min(n, T)):
        real, d = shift(m, i), shift(discount, i)
        last = real * (1.0 - shift(m, i + 1)) if i < n - 1 else real  # step t+i is the last one summed
        out = out + disc * real * (shift(reward, i) + d * shift(bootstrap, i) * last)
        disc = disc * d
    return out


def learn_sequences(buf, net, target, opt, a, H: int, period: int) -> Optional[float]:
    """One update on a batch of sequences: burn-in from the stored state, n-step TD targets (optionally value
    rescaled) from the target network run over the same sequence, importance-sampling weights per sequence,
    priorities by the eta-mix, fresh states written back."""
    try:
        b = buf.sample_sequences(a.batch, a.length, burn_in=a.burn_in, period=period, end="truncate", beta=a.beta)
    except ValueError:  # not enough admissible starts yet
        return None
    T = b["mask"].shape[1]
    k = a.burn_in
    if T <= k:  # every sequence ends within its burn-in: nothing to train on
        return None
    obs = torch.as_tensor(b["obs"])
    nxt = torch.as_tensor(b["next_obs"])
    s0 = torch.as_tensor(b["h"][:, 0])
    start = (s0[:, :H], s0[:, H:])
    # [obs_0, next_obs_0 .. next_obs_{T-1}]: within an episode next_obs_t = obs_{t+1}, so out[t + 1] of a pass over
    # it is Q(s_{t+1}) with the context of the sequence, and its first T steps are the sequence's observations.
    ext = torch.cat([obs[:, :1], nxt], 1)
    with torch.no_grad():
        # One online pass from the stored state, split where its state is needed: after the burn-in (the start of
        # the trained part) and after `period` steps (the next overlapping sequence's start, refreshed below).
        cuts = sorted({c for c in (k, period) if 0 < c < T} | {T + 1})
        q_online, states, st, prev = [], {}, start, 0
        for c in cuts:
            q_part, st = net(ext[:, prev:c], st)
            q_online.append(q_part)
            states[c] = st
            prev = c
        q_online = torch.cat(q_online, 1)
        burned = states.get(k, start)
        q_next = target(ext, start)[0][:, 1:]
        if a.double:  # double DQN: the online network picks the action, the target network values it
            q_next = q_next.gather(-1, q_online[:, 1:].argmax(-1, keepdim=True))[..., 0]
        else:
            q_next = q_next.max(-1).values
        real = torch.as_tensor(b["mask"])
        reward, discount = torch.as_tensor(b["reward"]), torch.as_tensor(b["discount"])
        if a.rescale:
            y = rescale(n_step_targets(reward, discount, unrescale(q_next), real, a.n_step))
        else:
            y = n_step_targets(reward, discount, q_next, real, a.n_step)
        y = y[:, k:]
    q, _ = net(obs[:, k:], burned)
    act = torch.as_tensor(b["action"][:, k:])
    q_taken = q.gather(-1, act[..., None])[..., 0]
    mask = torch.as_tensor(b.trained[:, k:]).float()
    w = torch.as_tensor(b.weights)[:, None]  # float32[B] from a prioritized buffer
    # Each trained step weighs its sequence's importance-sampling weight (R2D2: one weight per sequence).
    loss = (F.smooth_l1_loss(q_taken, y, reduction="none") * mask * w).sum() / mask.sum().clamp(min=1)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), a.clip)
    opt.step()
    abs_td = np.zeros(b["mask"].shape)
    abs_td[:, k:] = ((q_taken - y) * mask).detach().abs().numpy()
    buf.update_sequence_priorities(b, abs_td, eta=0.9)
    # Fresh stored state where the next overlapping sequence starts (position `period`): the state the online
    # network reached there in this pass, before this update (R2D2 stores the learner's states likewise).
    if period < T:
        h, c = states[period]
        ok = b["mask"][:, period]
        buf.update_field("h", b.slots[ok, period], torch.cat([h, c], -1).numpy()[ok])
    return loss.item()


def learn_transitions(buf, net, target, opt, a) -> Optional[float]:
    """One plain DQN update (the feed-forward baseline) on batch * length transitions."""
    if len(buf) < a.batch * 4:
        return None
    b = buf.sample(a.batch * a.length, beta=0.0)
    obs, nxt = torch.as_tensor(b["obs"]), torch.as_tensor(b["next_obs"])
    with torch.no_grad():
        q_next = target(nxt)
        if a.double:
            q_next = q_next.gather(-1, net(nxt).argmax(-1, keepdim=True))[:, 0]
        else:
            q_next = q_next.max(-1).values
        reward, discount = torch.as_tensor(b["reward"]), torch.as_tensor(b["discount"])  # the buffer's n-step
        if a.rescale:
            y = rescale(reward + discount * unrescale(q_next))
        else:
            y = reward + discount * q_next
    q = net(obs).gather(-1, torch.as_tensor(b["action"])[:, None])[:, 0]
    loss = F.smooth_l1_loss(q, y)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), a.clip)
    opt.step()
    return loss.item()


def main(argv: Optional[List[str]] = None) -> None:
    a = parse(argv)
    torch.set_num_threads(1)
    out = train(a)
    r = [x for _, x in out["returns"][-20:]]
    print(f"{a.arch}: {out['steps']} steps, {out['updates']} updates, {out['seconds']:.0f} s, mean return of the "
          f"last 20 episodes {np.mean(r) if r else float('nan'):.1f}, greedy evaluation "
          f"{np.mean(out['eval_returns']):.1f} over {len(out['eval_returns'])} episodes" +
          (f"; the network of the best check (step {out['best_check']}): {np.mean(out['eval_best_returns']):.1f}"
           if "best_check" in out else ""))


if __name__ == "__main__":
    main()
