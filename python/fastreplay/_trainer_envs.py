"""The DQN trainer's environment plumbing (:mod:`fastreplay.dqn`): making an environment (DQN's Atari preprocessing
for ALE games), which autoreset mode a vector environment uses, the s' to store when an episode ends inside a vector
step, the frame stack the agent acts on, the evaluation, and the environments' state for checkpoints."""
from __future__ import annotations

from typing import Any, Dict, List

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


def make_env(env_id: str) -> gym.Env:
    """``gym.make(env_id)``; for ALE games (``ALE/...``) DQN's preprocessing as gymnasium's ``AtariPreprocessing``
    does it: the raw game (``frameskip=1``; v5's sticky actions kept), up to 30 no-op starts, 4 frames per step
    (max of the last two), 84x84 grayscale uint8, no frame stack (the replay buffer stacks) and whole games (no
    terminal on life loss)."""
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
        return gym.wrappers.AtariPreprocessing(gym.make(env_id, frameskip=1), noop_max=30, frame_skip=4,
                                               screen_size=84, terminal_on_life_loss=False, grayscale_obs=True)
    return gym.make(env_id)


class FrameStacker:
    """The agent's input: the last ``frames`` observations of each sub-environment, ``stack`` of shape
    ``(num_envs, frames, *obs_shape)`` (or the observations themselves when ``frames`` is 1). Frames before an
    episode's first are that first frame, as the buffer's ``stack_padding="reset"`` pads the stacks it samples."""

    def __init__(self, obs: np.ndarray, frames: int) -> None:
        self.frames = frames
        self.stack = np.array(obs) if frames == 1 else np.repeat(np.asarray(obs)[:, None], frames, axis=1)

    def push(self, obs: np.ndarray, first: np.ndarray) -> None:
        """Append the step's observations; ``first`` marks the sub-envs where ``obs`` starts a new episode."""
        if self.frames == 1:
            self.stack = np.ascontiguousarray(obs)  # the vector env returns a new array every step
            return
        self.stack[:, :-1] = self.stack[:, 1:]
        self.stack[:, -1] = obs
        for i in np.flatnonzero(first):
            self.stack[i] = obs[i]


@torch.no_grad()
def evaluate(q_network: nn.Module, envs: gym.vector.VectorEnv, seed: int, device: torch.device, frames: int = 1,
             epsilon: float = 0.0) -> np.ndarray:
    """Returns of one episode in each of ``envs``' sub-environments (float64[num_envs]) under the epsilon-greedy
    policy (greedy for ``epsilon`` 0) on stacks of ``frames`` observations. ``seed`` seeds the environments and
    the exploration, so an evaluation is a function of the network and the seed."""
    obs, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    stack = FrameStacker(obs, frames)
    n = envs.num_envs
    returns, running = np.zeros(n), np.ones(n, dtype=bool)
    while running.any():
        actions = q_network(torch.as_tensor(stack.stack, device=device)).argmax(dim=1).cpu().numpy()
        if epsilon > 0:
            actions = np.where(rng.random(n) < epsilon, rng.integers(envs.single_action_space.n, size=n), actions)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        returns += reward * running
        running &= ~(terminated | truncated)
        stack.push(obs, np.zeros(n, bool))  # an ended sub-env's later steps are not counted
    return returns


# ---------------------------------------------------------------------------------------------------------------------
# Environment state for resumable runs, as plain data (tensors, numbers, strings, dicts, lists: what
# torch.load(weights_only=True) reads back without running code). Every layer of each sub-environment (wrappers and
# the base env) contributes its attributes that are numbers, strings, None, arrays (as tensors), lists of arrays,
# and numpy generators (their bit generator's state); an ALE game contributes its emulator state with its random
# number generator. Configuration is rebuilt from the arguments; only what changes while stepping needs to be here.

_SKIP = {"_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs", "spec", "_cached_spec", "_metadata", "metadata"}


def _layers(env: Any) -> List[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def _plain(value: Any) -> Any:
    """``value`` as plain data, or ``_NOT_PLAIN``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"ndarray": torch.from_numpy(np.ascontiguousarray(value).copy()), "dtype": str(value.dtype)}
    if isinstance(value, np.random.Generator):
        return {"generator": value.bit_generator.state}
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
        items = [_plain(v) for v in value]
        return {"list": items}
    return _NOT_PLAIN


_NOT_PLAIN = object()


def _restore(current: Any, saved: Any) -> Any:
    if isinstance(saved, dict) and "ndarray" in saved:
        return saved["ndarray"].numpy().astype(saved["dtype"], copy=True)
    if isinstance(saved, dict) and "generator" in saved:
        current.bit_generator.state = saved["generator"]
        return current
    if isinstance(saved, dict) and "list" in saved:
        return [_restore(None, v) for v in saved["list"]]
    return saved


def _object_state(obj: Any) -> Dict[str, Any]:
    state = {}
    for k, v in vars(obj).items():
        if k not in _SKIP:
            p = _plain(v)
            if p is not _NOT_PLAIN:
                state[k] = p
    ale = vars(obj).get("ale")
    if ale is not None and hasattr(ale, "cloneState"):  # an ALE game: its emulator, with the sticky-action RNG
        state["__ale__"] = torch.frombuffer(bytearray(ale.cloneState(include_rng=True).serialize()), dtype=torch.uint8)
    return state


def _set_object_state(obj: Any, state: Dict[str, Any]) -> None:
    for k, v in state.items():
        if k == "__ale__":
            import ale_py

            obj.ale.restoreState(ale_py.ALEState(bytes(v.numpy().tobytes())))
        else:
            setattr(obj, k, _restore(getattr(obj, k, None), v))


def vector_env_state(envs: gym.vector.VectorEnv) -> Dict[str, Any]:
    """The state of a ``SyncVectorEnv`` and of every layer of its sub-environments, as plain data."""
    if not hasattr(envs, "envs"):
        raise ValueError(f"resumable runs need a SyncVectorEnv, got {type(envs).__name__}")
    return {"vector": _object_state(envs), "envs": [[_object_state(layer) for layer in _layers(e)] for e in envs.envs]}


def set_vector_env_state(envs: gym.vector.VectorEnv, state: Dict[str, Any]) -> None:
    """Put back what :func:`vector_env_state` saved, into vector env built (and reset) the same way."""
    if len(state["envs"]) != len(envs.envs):
        raise ValueError(f"the checkpoint has {len(state['envs'])} environments, this run {len(envs.envs)}")
    _set_object_state(envs, state["vector"])
    for env, layers in zip(envs.envs, state["envs"]):
        ours = _layers(env)
        if len(ours) != len(layers):
            raise ValueError("the checkpoint's environments are wrapped differently from this run's")
        for layer, s in zip(ours, layers):
            _set_object_state(layer, s)
