"""Episode-aware options (``docs/episodes.md``): their checks and the field layout they imply.

Shared by the compiled buffers (:mod:`fastreplay.buffer`) and the reference (:mod:`fastreplay.reference`), so each
rule and its message live here once. Three field layouts follow from a config:

- *input* fields: what ``add`` takes (the user's ``fields``);
- *stored* fields: the columns (``obs`` as one frame when ``frame_stack > 1``, no ``next_obs`` with dedup);
- *batch* fields: what ``sample`` returns (stacked ``obs``/``next_obs`` and ``discount``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ._fields import FieldSpecs

#: The constructor options that make a buffer episodic.
OPTIONS = ("num_envs", "next_obs", "frame_stack", "stacked_input", "stack_padding", "n_step", "gamma", "autoreset")

#: Field every episodic batch adds: float32 gamma**m * (1 - done).
DISCOUNT = "discount"


@dataclass(frozen=True)
class EpisodeConfig:
    """The episode options of a buffer, checked. ``obs``/``next_obs`` name the observation fields (``("obs",)``,
    or one per Dict key) in the same order; ``truncated``: whether a ``truncated`` field exists."""

    num_envs: int = 1
    dedup: bool = False
    frame_stack: int = 1
    stacked_input: bool = False
    padding: str = "reset"
    n_step: int = 1
    gamma: float = 0.99
    autoreset: str = "same_step"
    obs: Tuple[str, ...] = ()
    next_obs: Tuple[str, ...] = ()
    truncated: bool = False

    def manifest(self) -> Dict[str, Any]:
        """The options as plain JSON values (checkpoints, memmap manifests); ``options(manifest())`` rebuilds."""
        return {"num_envs": self.num_envs, "next_obs": "dedup" if self.dedup else "store",
                "frame_stack": self.frame_stack, "stacked_input": self.stacked_input,
                "stack_padding": self.padding, "n_step": self.n_step, "gamma": self.gamma,
                "autoreset": self.autoreset}


#: Largest num_envs, frame_stack and n_step accepted (each is a count of steps or rows, so far beyond any use).
MAX_COUNT = 2**31 - 1


def _int(value: Any, name: str, where: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    if int(value) < lo:
        raise ValueError(f"{where}: {name} must be >= {lo}, got {int(value)}")
    if int(value) > MAX_COUNT:
        raise ValueError(f"{where}: {name} must be at most 2**31 - 1, got {int(value)}")
    return int(value)


def n_step(value: Any, where: str) -> int:
    """An int in [1, 2**31)."""
    return _int(value, "n_step", where, 1)


def gamma(value: Any, where: str) -> float:
    """A real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: gamma must be a real number, got {type(value).__name__}")
    g = float(value)
    if not (0.0 <= g <= 1.0):
        raise ValueError(f"{where}: gamma must be in [0, 1], got {g}")
    return g


def _choice(value: Any, name: str, options: Tuple[str, ...], where: str) -> str:
    if not isinstance(value, str) or value not in options:
        allowed = " or ".join(repr(o) for o in options)
        raise ValueError(f"{where}: {name} must be {allowed}, got {value!r}")
    return value


def config(fields: FieldSpecs, capacity: int, where: str, options: Mapping[str, Any],
           always: bool = False) -> Optional[EpisodeConfig]:
    """The checked config for ``options`` (a subset of :data:`OPTIONS`, None values meaning "not given"), or None
    when none is given and ``always`` is false (a plain buffer)."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise TypeError(f"{where}: unknown option {sorted(unknown)[0]!r}")
    if not given and not always:
        return None
    k = _int(given.get("num_envs", 1), "num_envs", where, 1)
    if capacity % k:
        raise ValueError(f"{where}: capacity must be a multiple of num_envs (one ring row per lane and step), got "
                         f"capacity={capacity} and num_envs={k}; use {max(k, capacity // k * k)}")
    s = _int(given.get("frame_stack", 1), "frame_stack", where, 1)
    stacked = given.get("stacked_input", False)
    if not isinstance(stacked, (bool, np.bool_)):
        raise TypeError(f"{where}: stacked_input must be a bool, got {type(stacked).__name__}")
    stacked = bool(stacked)
    nxt = _choice(given.get("next_obs", "dedup" if s > 1 else "store"), "next_obs", ("store", "dedup"), where)
    if s > 1 and nxt == "store":
        raise ValueError(f"{where}: frame_stack={s} stores one frame per step, so next_obs must be 'dedup' "
                         "(next observations are read from the lane's next frame), got 'store'")
    if stacked and s == 1:
        raise ValueError(f"{where}: stacked_input=True needs frame_stack > 1 (the stack depth of the input)")
    padding = _choice(given.get("stack_padding", "reset"), "stack_padding", ("reset", "zero"), where)
    n = n_step(given.get("n_step", 1), where)
    g = gamma(given.get("gamma", 0.99), where)
    autoreset = _choice(given.get("autoreset", "same_step"), "autoreset", ("same_step", "next_step"), where)

    obs = tuple(name for name in fields if name == "obs" or name.startswith("obs."))
    if not obs:
        raise ValueError(f"{where}: an episodic buffer needs an 'obs' field (or Dict keys 'obs.<key>'), got fields "
                         f"{list(fields)}")
    nxt_names = tuple("next_" + name for name in obs)
    for o, no in zip(obs, nxt_names):
        if no not in fields:
            raise ValueError(f"{where}: an episodic buffer needs a '{no}' field beside '{o}'")
        if fields[no] != fields[o]:
            raise ValueError(f"{where}: field '{no}' must have the shape and dtype of '{o}' {_spec(fields[o])}, got "
                             f"{_spec(fields[no])}")
    extra_next = [name for name in fields if name.startswith("next_obs") and name not in nxt_names]
    if extra_next:
        raise ValueError(f"{where}: field '{extra_next[0]}' has no observation counterpart")
    for name, kinds, what in (("reward", "f", "float32 or float64"), ("done", "b", "bool")):
        if name not in fields:
            raise ValueError(f"{where}: an episodic buffer needs a '{name}' field ({what})")
        shape, dt = fields[name]
        if shape != () or dt.kind not in kinds:
            raise ValueError(f"{where}: field '{name}' must be a scalar {what}, got {_spec(fields[name])}")
    trunc = "truncated" in fields
    if trunc and fields["truncated"] != ((), np.dtype(np.bool_)):
        raise ValueError(f"{where}: field 'truncated' must be a scalar bool, got {_spec(fields['truncated'])}")
    if DISCOUNT in fields:
        raise ValueError(f"{where}: field name '{DISCOUNT}' is reserved in episodic buffers (batches carry "
                         "gamma**m * (1 - done) under it)")
    if s > 1:
        for o in obs:
            shape = fields[o][0]
            if stacked and (len(shape) < 2 or shape[0] != s):
                raise ValueError(f"{where}: stacked_input=True with frame_stack={s} needs '{o}' rows of shape "
                                 f"({s}, *frame) (a stack of at least 1-d frames), got {shape}")
            if not stacked and len(shape) < 2:
                raise ValueError(f"{where}: frame_stack={s} stacks image frames, so '{o}' must have at least 2 "
                                 f"dims (H, W[, C]), got shape {shape}; for an env that already stacks its "
                                 "observations pass stacked_input=True")
    return EpisodeConfig(k, nxt == "dedup", s, stacked, padding, n, g, autoreset, obs, nxt_names, trunc)


def _spec(spec: Tuple[Tuple[int, ...], np.dtype]) -> str:
    return f"(shape {spec[0]}, {spec[1]})"


def frame_spec(fields: FieldSpecs, cfg: EpisodeConfig, name: str) -> Tuple[Tuple[int, ...], np.dtype]:
    """(shape, dtype) of what is stored per step for observation field ``name``."""
    shape, dt = fields[name]
    return (shape[1:] if cfg.stacked_input else shape), dt


def stored_fields(fields: FieldSpecs, cfg: Optional[EpisodeConfig]) -> FieldSpecs:
    """The columns, in field order: observation fields as one frame, ``next_obs`` fields dropped with dedup."""
    if cfg is None:
        return dict(fields)
    out: FieldSpecs = {}
    for name, spec in fields.items():
        if cfg.dedup and name in cfg.next_obs:
            continue
        out[name] = frame_spec(fields, cfg, name) if name in cfg.obs else spec
    return out


def batch_fields(fields: FieldSpecs, cfg: Optional[EpisodeConfig]) -> FieldSpecs:
    """What a batch holds, in field order, then ``discount``: observations as ``(S, *frame)`` stacks."""
    if cfg is None:
        return dict(fields)
    out: FieldSpecs = {}
    for name, spec in fields.items():
        if cfg.frame_stack > 1 and (name in cfg.obs or name in cfg.next_obs):
            frame, dt = frame_spec(fields, cfg, name if name in cfg.obs else "obs" + name[len("next_obs"):])
            out[name] = ((cfg.frame_stack,) + frame, dt)
        else:
            out[name] = spec
    out[DISCOUNT] = ((), np.dtype(np.float32))
    return out


def require(cfg: Optional[EpisodeConfig], name: str) -> EpisodeConfig:
    """``cfg``, or the ValueError for setting an episode option ``name`` on a plain buffer."""
    if cfg is None:
        raise ValueError(f"ReplayBuffer.{name}: only an episodic buffer has {name} (pass one of the episode "
                         "options, e.g. num_envs or n_step, to the constructor)")
    return cfg


def from_env_options(env: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` completed from a (vector) env: ``num_envs`` and ``autoreset`` unless given."""
    out = dict(options)
    if out.get("num_envs") is None:
        out["num_envs"] = int(getattr(env, "num_envs", 1) or 1)
    if out.get("autoreset") is None:
        out["autoreset"] = autoreset_of(env)
    return out


def autoreset_of(env: Any) -> str:
    """``"next_step"`` or ``"same_step"``: the autoreset mode of a gymnasium vector env (plain envs and
    ``DISABLED`` are "same_step": every row is a whole transition)."""
    if not hasattr(env, "num_envs"):
        return "same_step"
    mode = (getattr(env, "metadata", None) or {}).get("autoreset_mode")
    if mode is None:  # gymnasium < 1.1 vector envs reset on the next step
        return "next_step"
    name = getattr(mode, "value", mode)
    name = str(name).lower()
    return "next_step" if "next" in name else "same_step"


def discount(gamma_: float, m: int, done: bool) -> float:
    """gamma**m * (1 - done) as the batch holds it (float32)."""
    return float(np.float32(0.0 if done else math.pow(gamma_, m)))


def with_values(cfg: EpisodeConfig, **changes: Any) -> EpisodeConfig:
    return replace(cfg, **changes)
