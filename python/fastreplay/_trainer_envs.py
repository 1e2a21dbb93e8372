"""The DQN trainer's environment plumbing (:mod:`fastreplay.dqn`): which autoreset mode a vector environment uses,
the s' to store when an episode ends inside a vector step, and the greedy evaluation."""
from __future__ import annotations

from typing import Any, Dict

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


def autoreset_mode(envs: gym.vector.VectorEnv) -> str:
    """``'same_step'`` or ``'next_step'``: when the vector env resets an ended sub-environment."""
    mode = envs.metadata.get("autoreset_mode")
    if mode is None:  # gymnasium 0.29 resets in the same step; 1.0 only knows next-step
        return "same_step" if gym.__version__.startswith("0.") else "next_step"
    value = getattr(mode, "value", mode)
    if value in ("SameStep", "same_step"):
        return "same_step"
    if value in ("NextStep", "next_step"):
        return "next_step"
    raise ValueError(f"unsupported vector env autoreset mode {mode!r}")


def real_next_obs(next_obs: np.ndarray, infos: Dict[str, Any]) -> np.ndarray:
    """The s' to store for each sub-environment after a same-step-autoreset ``step``.

    Where an episode ended, ``next_obs`` already holds the next episode's first observation and the ended
    episode's last one is in ``infos["final_obs"]`` (gymnasium >= 1.1) or ``infos["final_observation"]`` (0.29),
    flagged by the ``"_final_obs"`` mask. Storing the reset observation instead would bootstrap a truncated
    episode from the wrong state.
    """
    for key in ("final_obs", "final_observation"):
        mask = infos.get("_" + key)
        if mask is not None and np.any(mask):
            out = np.array(next_obs, copy=True)
            for i in np.flatnonzero(mask):
                out[i] = infos[key][i]
            return out
    return next_obs


@torch.no_grad()
def evaluate(q_network: nn.Module, envs: gym.vector.VectorEnv, seed: int, device: torch.device) -> np.ndarray:
    """Greedy returns of one episode in each of ``envs``' sub-environments (float64[num_envs])."""
    obs, _ = envs.reset(seed=seed)
    n = envs.num_envs
    returns, running = np.zeros(n), np.ones(n, dtype=bool)
    while running.any():
        actions = q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
        obs, reward, terminated, truncated, _ = envs.step(actions)
        returns += reward * running
        running &= ~(terminated | truncated)
    return returns
