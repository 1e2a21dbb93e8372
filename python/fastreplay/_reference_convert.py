"""How :mod:`fastreplay.reference` checks and converts values: the pure-Python twin of the bindings' casting rule
(``csrc/bindings/convert.cpp``) and argument parsing (``csrc/bindings/numpy_util.cpp``). Messages match the
compiled buffers word for word; the differential and state-machine tests keep them in step."""
from __future__ import annotations

import operator
from typing import Any, Dict, List

import numpy as np


def type_name(x: Any) -> str:
    """A value's type as the compiled buffers' messages name it (CPython's ``tp_name``): ``module.name`` for types
    defined in C (``numpy.float32``, ``collections.OrderedDict``), the bare name for builtins and Python classes."""
    t = type(x)
    if t.__flags__ & (1 << 9) or t.__module__ == "builtins":  # 1 << 9: Py_TPFLAGS_HEAPTYPE, a class from Python
        return t.__name__
    return f"{t.__module__}.{t.__name__}"


def put(given: Dict[str, Any], name: str, value: Any) -> None:
    if name in given:
        raise TypeError(f"add: field '{name}' given twice")
    given[name] = value


def shape_text(shape: tuple) -> str:
    return str(tuple(shape))


def batched_shape_text(shape: tuple) -> str:
    return "(N,)" if not shape else "(N, " + ", ".join(str(d) for d in shape) + ")"


def rows_text(name: str, rows: np.ndarray, batched: bool) -> str:
    return f"'{name}' has " + (f"{len(rows)} rows" if batched else "a single row")


def python_castable(src: str, dst: str) -> bool:
    """Kind rule for values that are not numpy arrays or scalars: bool goes anywhere, integers into integer, float
    and complex fields, floats into float and complex, complex into complex."""
    return {"b": True, "i": dst in "iufc", "u": dst in "iufc", "f": dst in "fc", "c": dst == "c"}.get(src, False)


def convert(name: str, shape: tuple, dtype: np.dtype, value: Any):
    """Check one add() value against its field; returns (rows: array[N, *shape] of the field's dtype, batched).

    Numpy arrays and scalars must cast to the field's dtype under numpy's 'same_kind' rule. Anything else (Python
    scalars, lists, tensors) goes through ``np.asarray`` and a kind rule, and its integers must fit the field.
    """
    where = f"add: field '{name}'"
    if shape == () and type(value) is float and dtype.kind not in "fc":
        raise TypeError(f"{where} expects dtype {dtype}, got a Python float")
    if shape == () and type(value) is int and dtype.kind == "b":
        raise TypeError(f"{where} expects dtype bool, got a Python int (use True/False)")
    numpy_value = isinstance(value, (np.ndarray, np.generic))
    try:
        arr = np.asarray(value)
    except Exception:
        raise TypeError(
            f"{where} expects an array of {dtype} with shape {shape_text(shape)} or {batched_shape_text(shape)}, "
            f"got {type_name(value)} that numpy cannot convert"
        ) from None
    if arr.shape == shape:
        batched = False
    elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        batched = True
    else:
        raise ValueError(f"{where} expects shape {shape_text(shape)} or {batched_shape_text(shape)}, got {arr.shape}")
    kind = arr.dtype.kind
    if not numpy_value and kind == "O" and arr.size and all(type(x) is int for x in arr.flat):
        kind = "i"  # ints that fit no 64-bit type: numpy keeps them as Python objects
    if arr.dtype != dtype:
        if numpy_value and not np.can_cast(arr.dtype, dtype, "same_kind"):
            raise TypeError(
                f"{where} expects dtype {dtype} (or one that casts to it under numpy's 'same_kind' rule), got {arr.dtype}"
            )
        if not numpy_value and not python_castable(kind, dtype.kind):
            raise TypeError(f"{where} expects dtype {dtype} (Python values of a compatible kind), got {arr.dtype}")
    if not numpy_value and kind in "iu" and dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        for x in (int(arr.min()), int(arr.max())):
            if not info.min <= x <= info.max:
                raise ValueError(f"{where} expects dtype {dtype}, got {x}, which is out of its range")
    return arr.astype(dtype).reshape((-1, *shape)), batched


def as_int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not hasattr(type(x), "__index__"):
        raise TypeError(f"{what} must be an int, got {type_name(x)}")
    v = operator.index(x)
    if not -(2**63) <= v < 2**63:
        raise ValueError(f"{what} is out of range, got {x}")
    return v


def one_d(fn: str, what: str, values: Any, kinds: str, expected: str) -> np.ndarray:
    """values as a 0-d or 1-d numpy array whose dtype kind is one of ``kinds`` (any dtype when empty)."""
    try:
        a = np.asarray(values)
    except Exception:
        raise TypeError(f"{fn}: {what} must be a 1-d array of {expected}, got {type_name(values)}") from None
    if a.ndim > 1:
        raise ValueError(f"{fn}: {what} must be 1-d, got shape {a.shape}")
    if a.dtype.kind not in kinds and a.size != 0:
        raise TypeError(f"{fn}: {what} must be {expected}, got dtype {a.dtype}")
    return a.reshape(-1)


def index_array(fn: str, indices: Any) -> List[int]:
    """indices as a list of Python ints: a 0-d or 1-d array-like of integers (empty is fine)."""
    values = [int(i) for i in one_d(fn, "indices", indices, "iu", "integers")]
    for i in values:
        if i >= 2**63:
            raise IndexError(f"{fn}: index {i} is out of range")
    return values


def uint_array(fn: str, what: str, values: Any) -> List[int]:
    """values as a list of Python ints: a 0-d or 1-d array-like of non-negative integers (empty is fine)."""
    ints = [int(x) for x in one_d(fn, what, values, "iu", "non-negative integers")]
    if ints and min(ints) < 0:
        raise ValueError(f"{fn}: {what} must be non-negative, got {min(ints)}")
    return ints


def real_array(fn: str, what: str, values: Any) -> List[float]:
    """values as a list of Python floats: a 0-d or 1-d array-like of bools, integers or floats."""
    a = one_d(fn, what, values, "biuf", "real numbers")
    return [float(x) for x in a.astype(np.float64)] if a.size else []  # an empty array of any dtype is no values


def stack(rows: List[Any], shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Rows (arrays of `shape`) as one array[len(rows), *shape]."""
    out = np.empty((len(rows), *shape), dtype)
    for k, row in enumerate(rows):
        out[k] = row
    return out
