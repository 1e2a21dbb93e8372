"""Field specifications: normalising ``{name: (shape, dtype)}`` and deriving fields from gymnasium spaces."""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, Mapping, Tuple

import numpy as np

Shape = Tuple[int, ...]
FieldSpecs = Dict[str, Tuple[Shape, np.dtype]]

#: numpy dtype kinds a field may have: bool, signed and unsigned integers, floats, complex.
SUPPORTED_KINDS = "biufc"

#: Most dimensions a row may have: a batch adds one axis, and the result must stay within numpy's limit on every
#: supported version (32 before numpy 2, 64 since), so rows of up to 32 dimensions can be stored, sampled and saved.
MAX_ROW_DIMS = 32

#: Most bytes a column (or a row) may span: numpy's largest array size (its npy_intp), 2**63 - 1 on 64-bit.
MAX_BYTES = sys.maxsize


def normalize_fields(fields: Any, where: str = "ReplayBuffer") -> FieldSpecs:
    """Check and normalise a field mapping to ``{name: (shape tuple, native-endian numpy dtype)}``.

    Each value is ``(shape, dtype)``; ``shape`` is an int, a tuple of ints or ``()`` for scalars. A bare dtype
    means a scalar field. Names must not contain NUL (the core stores C strings); a row has at most
    :data:`MAX_ROW_DIMS` dimensions and at most :data:`MAX_BYTES` bytes (see :func:`check_capacity` for the
    columns).
    """
    if not isinstance(fields, Mapping):
        raise TypeError(f"{where}: fields must be a mapping {{name: (shape, dtype)}}, got {type(fields).__name__}")
    if len(fields) == 0:
        raise ValueError(f"{where}: fields must name at least one field, got an empty mapping")
    out: FieldSpecs = {}
    for name, spec in fields.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: field names must be non-empty strings, got {name!r}")
        if "\x00" in name:
            raise ValueError(f"{where}: field names must not contain the NUL character '\\x00', got {name!r}")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: field names must be valid Unicode text, got {name!r}") from None
        if name in ("indices", "weights", "generations"):
            raise ValueError(f"{where}: field name {name!r} is reserved for the batch's own attributes")
        if isinstance(spec, tuple) and len(spec) == 2:
            shape, dtype = spec
        else:
            shape, dtype = (), spec
        dims, dt = _shape(shape, name, where), _dtype(dtype, name, where)
        row_bytes = math.prod(dims) * dt.itemsize  # Python ints: no wrap-around
        if row_bytes > MAX_BYTES:
            raise ValueError(
                f"{where}: field '{name}' has {row_bytes} bytes per row (shape {dims}, {dt}), more than the "
                f"2**63 - 1 a buffer can address"
            )
        out[name] = (dims, dt)
    return out


def check_capacity(specs: FieldSpecs, capacity: int, where: str) -> None:
    """MemoryError (as for any capacity that cannot be allocated, but with the sizes named and before anything is
    allocated) if some column, ``capacity`` rows of a field, would span more than :data:`MAX_BYTES` bytes."""
    for name, (shape, dt) in specs.items():
        row_bytes = math.prod(shape) * dt.itemsize
        if capacity * row_bytes > MAX_BYTES:
            raise MemoryError(
                f"{where}: field '{name}' needs capacity * bytes per row = {capacity} * {row_bytes} = "
                f"{capacity * row_bytes} bytes, more than the 2**63 - 1 a buffer can address"
            )


def _shape(shape: Any, name: str, where: str) -> Shape:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(int(operator_index(d)) for d in shape)
    except TypeError:
        raise TypeError(f"{where}: field '{name}' shape must be a tuple of ints, got {shape!r}") from None
    if any(d <= 0 for d in dims):
        raise ValueError(f"{where}: field '{name}' shape must have positive dimensions, got {dims}")
    if len(dims) > MAX_ROW_DIMS:
        raise ValueError(
            f"{where}: field '{name}' shape has {len(dims)} dimensions; at most {MAX_ROW_DIMS} are supported "
            "(a batch adds one axis, and numpy arrays have at most 64, or 32 before numpy 2)"
        )
    return dims


def operator_index(x: Any) -> int:
    import operator

    if isinstance(x, bool):
        raise TypeError
    return operator.index(x)


def _dtype(dtype: Any, name: str, where: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: field '{name}' dtype {dtype!r} is not a numpy dtype") from None
    if dt.kind not in SUPPORTED_KINDS or dt.subdtype is not None or dt.fields is not None:
        raise TypeError(
            f"{where}: field '{name}' needs a fixed-size numeric or bool dtype "
            f"(bool, int8-int64, uint8-uint64, float16/32/64, complex), got {dt}"
        )
    return dt.newbyteorder("=") if not dt.isnative else dt


def fields_from_spaces(observation_space: Any, action_space: Any) -> FieldSpecs:
    """Fields ``obs, action, reward, next_obs, done`` from gymnasium spaces (each space keeps its own dtype).

    Box, Discrete, MultiDiscrete and MultiBinary are supported, and Dict observation spaces, whose keys become
    fields ``obs.<key>`` and ``next_obs.<key>``. ``done`` is ``terminated``: store ``terminated``, not
    ``terminated or truncated``, so that bootstrapping continues through time-limit truncations.
    """
    obs = _space_fields("obs", observation_space)
    nxt = {"next_" + k: v for k, v in obs.items()}
    act = _space_fields("action", action_space)
    if len(act) != 1:
        raise TypeError("from_env: Dict action spaces are not supported")
    fields: FieldSpecs = {}
    fields.update(obs)
    fields.update(act)
    fields["reward"] = ((), np.dtype(np.float32))
    fields.update(nxt)
    fields["done"] = ((), np.dtype(np.bool_))
    return fields


def _space_fields(name: str, space: Any) -> FieldSpecs:
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        out: FieldSpecs = {}
        for key, sub in space.spaces.items():
            for k, v in _space_fields(f"{name}.{key}", sub).items():
                out[k] = v
        return out
    if isinstance(space, spaces.Discrete):
        return {name: ((), np.dtype(np.int64))}
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        shape = tuple(int(d) for d in space.shape)
        return {name: (shape, np.dtype(space.dtype))}
    raise TypeError(
        f"from_env: {name} space {type(space).__name__} is not supported "
        "(Box, Discrete, MultiDiscrete, MultiBinary and Dict are)"
    )


def spaces_of(env_or_spaces: Any) -> Tuple[Any, Any]:
    """(single observation space, single action space) of an env, a vector env or an (obs, action) pair."""
    if isinstance(env_or_spaces, tuple) and len(env_or_spaces) == 2:
        return env_or_spaces
    obs = getattr(env_or_spaces, "single_observation_space", None) or getattr(env_or_spaces, "observation_space", None)
    act = getattr(env_or_spaces, "single_action_space", None) or getattr(env_or_spaces, "action_space", None)
    if obs is None or act is None:
        raise TypeError(
            "from_env: expected a gymnasium env, a vector env or an (observation_space, action_space) tuple, "
            f"got {type(env_or_spaces).__name__}"
        )
    return obs, act
