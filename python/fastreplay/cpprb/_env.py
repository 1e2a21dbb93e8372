"""cpprb.util's gymnasium helpers: ``create_env_dict`` (an ``env_dict`` from an env's spaces) and
``create_before_add_func`` (flattens Tuple and Dict values into ``add`` keyword arguments). gymnasium is imported
on first call, not on import."""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np


def _space_defs(space: Any, int_type: Any, float_type: Any) -> Dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"dtype": int_type, "shape": 1}
    if isinstance(space, spaces.MultiDiscrete):
        return {"dtype": int_type, "shape": space.nvec.shape}
    if isinstance(space, spaces.Box):
        return {"dtype": float_type, "shape": space.shape}
    if isinstance(space, spaces.MultiBinary):
        return {"dtype": int_type, "shape": space.n}
    raise NotImplementedError(f"Error: Unknown Space {space}")


def create_env_dict(env: Any, *, int_type: Any = None, float_type: Any = None) -> Dict[str, Dict[str, Any]]:
    """``env_dict`` for a gymnasium env, as cpprb builds it: ``rew`` and ``done`` (float), ``obs``/``next_obs``
    and ``act`` from the spaces (Discrete/MultiDiscrete/MultiBinary as ``int_type`` (int32), Box as
    ``float_type`` (float32)); Tuple spaces give ``obs0, obs1, ...``; Dict spaces give their keys and
    ``next_<key>``."""
    from gymnasium import spaces

    int_type = int_type or np.int32
    float_type = float_type or np.float32
    env_dict: Dict[str, Dict[str, Any]] = {
        "rew": {"shape": 1, "dtype": float_type},
        "done": {"shape": 1, "dtype": float_type},
    }
    obs, act = env.observation_space, env.action_space
    if isinstance(obs, spaces.Tuple):
        for i, s in enumerate(obs.spaces):
            env_dict[f"obs{i}"] = _space_defs(s, int_type, float_type)
            env_dict[f"next_obs{i}"] = _space_defs(s, int_type, float_type)
    elif isinstance(obs, spaces.Dict):
        for k, s in obs.spaces.items():
            env_dict[k] = _space_defs(s, int_type, float_type)
            env_dict[f"next_{k}"] = _space_defs(s, int_type, float_type)
    else:
        env_dict["obs"] = _space_defs(obs, int_type, float_type)
        env_dict["next_obs"] = _space_defs(obs, int_type, float_type)
    if isinstance(act, spaces.Tuple):
        for i, s in enumerate(act.spaces):
            env_dict[f"act{i}"] = _space_defs(s, int_type, float_type)
    elif isinstance(act, spaces.Dict):
        for k, s in act.spaces.items():
            env_dict[k] = _space_defs(s, int_type, float_type)
    else:
        env_dict["act"] = _space_defs(act, int_type, float_type)
    return env_dict


def create_before_add_func(env: Any) -> Callable[..., Dict[str, Any]]:
    """``before_add(obs, act, next_obs, rew, done) -> dict`` for ``add(**...)``, as cpprb builds it: Tuple values
    become ``obs0, obs1, ...``; Dict values become ``obs_<key>``, ``next_obs_<key>`` and ``act_<key>``."""
    from gymnasium import spaces

    def pick(space: Any) -> Callable[[str, Any], Dict[str, Any]]:
        if isinstance(space, spaces.Tuple):
            return lambda name, v: {f"{name}{i}": x for i, x in enumerate(v)}
        if isinstance(space, spaces.Dict):
            return lambda name, v: {f"{name}_{k}": x for k, x in v.items()}
        return lambda name, v: {name: v}

    obs_f, act_f = pick(env.observation_space), pick(env.action_space)

    def before_add(obs: Any, act: Any, next_obs: Any, rew: Any, done: Any) -> Dict[str, Any]:
        return {**obs_f("obs", obs), **act_f("act", act), **obs_f("next_obs", next_obs), "rew": rew, "done": done}

    return before_add
