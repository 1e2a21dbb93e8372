"""cpprb's ``train``: the off-policy loop (act, step, add, sample, update, update priorities) around a buffer
and a gym-style (old 4-tuple ``step``) env."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import numpy as np

_SIZE_T_LIMIT = 2**64 - 1  # cpprb counts steps in a size_t


def train(buffer: Any, env: Any, get_action: Callable[..., Any], update_policy: Callable[..., Any], *,
          max_steps: int = int(1e6), max_episodes: Optional[int] = None, batch_size: int = 64, n_warmups: int = 0,
          after_step: Optional[Callable[..., Any]] = None, done_check: Optional[Callable[[Any], Any]] = None,
          obs_update: Optional[Callable[[Any], Any]] = None, rew_sum: Optional[Callable[[float, Any], float]] = None,
          episode_callback: Optional[Callable[[int, int, float], Any]] = None, logger: Any = None) -> None:
    """Run ``max_steps`` environment steps (or until ``max_episodes`` episodes ended), as cpprb's ``train``.

    Each step: ``action = get_action(obs, step, episode, is_warmup)``; the transition is
    ``after_step(obs, action, env.step(action), step, episode)`` or ``{"obs", "act", "rew", "next_obs", "done"}``
    from ``env.step``'s ``(next_obs, rew, done, info)``; it is added to ``buffer``; past the ``n_warmups`` first
    steps (and once the buffer holds something) ``update_policy(buffer.sample(batch_size), step, episode)`` runs
    and, for a ``PrioritizedReplayBuffer``, its return value (absolute TD errors) becomes the sampled
    transitions' priorities. An episode ends when ``done_check(transition)`` (default ``transition["done"]``) is
    true: ``episode_callback(episode, episode_step, episode_reward)``, where ``episode_reward`` is
    ``rew_sum(previous, transition)`` accumulated over the episode or, without ``rew_sum``, the last step's
    reward (cpprb's default, kept), ``buffer.on_episode_end()``,
    ``env.reset()``. Otherwise the next observation is ``obs_update(transition)`` (default
    ``transition["next_obs"]``). ``ValueError`` if ``max_steps`` does not fit cpprb's 64-bit counter.
    """
    from ._prioritized import PrioritizedReplayBuffer

    logger = logger or logging.getLogger("fastreplay.cpprb")
    if max_steps >= _SIZE_T_LIMIT:
        raise ValueError(f"max_steps ({max_steps}) is too big. max_steps < {_SIZE_T_LIMIT}")
    use_per = isinstance(buffer, PrioritizedReplayBuffer)
    n_steps = max(int(max_steps), 0)
    n_episodes = min(max(max_episodes or _SIZE_T_LIMIT, 0), _SIZE_T_LIMIT)
    n_warmups = min(max(0, int(n_warmups)), _SIZE_T_LIMIT)
    episode = episode_step = 0
    episode_reward = 0.0
    obs = env.reset()
    episode_start = time.perf_counter()
    for step in range(n_steps):
        is_warmup = step < n_warmups
        action = get_action(obs, step, episode, is_warmup)
        if after_step:
            transition = after_step(obs, action, env.step(action), step, episode)
        else:
            next_obs, reward, done, _ = env.step(action)
            transition = {"obs": obs, "act": action, "rew": reward, "next_obs": next_obs, "done": done}
        buffer.add(**transition)
        if buffer.get_stored_size() > 0 and not is_warmup:  # with Nstep, the buffer can still be empty
            sample = buffer.sample(batch_size)
            abs_td = update_policy(sample, step, episode)
            if use_per:
                buffer.update_priorities(sample["indexes"], abs_td)
        # As cpprb: without rew_sum the "episode reward" is the latest step's reward (not a sum), kept as a C float.
        episode_reward = float(np.float32(rew_sum(episode_reward, transition) if rew_sum else transition["rew"]))
        if done_check(transition) if done_check else transition["done"]:
            sps = (episode_step + 1) / max(time.perf_counter() - episode_start, 1e-9)
            logger.info(f"{episode: 6}th Episode: {episode_step + 1: 5} Steps ({step + 1: 7} Total Steps), "
                        f"{float(episode_reward): =+7.2f} Reward, {sps: =+5.2f} Steps/s")
            if episode_callback:
                episode_callback(episode, episode_step, episode_reward)
            buffer.on_episode_end()
            episode_reward = 0.0
            obs = env.reset()
            episode_step = 0
            episode += 1
            if episode >= n_episodes:
                break
            episode_start = time.perf_counter()
        else:
            obs = obs_update(transition) if obs_update else transition["next_obs"]
            episode_step += 1
