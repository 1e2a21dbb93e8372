"""Shared fixtures of the benchmark suites: row types, filled buffers built once per module, and machine info.

Run the suites (pyproject's addopts disable benchmarks, so enable them here):

    python -m pytest bench -p no:cacheprovider --benchmark-enable --benchmark-only

``python bench/report.py`` runs exactly that with the options used for bench/README.md and writes the tables.

Every benchmark is parametrised by implementation (``fastreplay`` or ``reference``, the pure-Python baseline in
:mod:`fastreplay.reference`) and capacity, and sets ``benchmark.group`` to "<row type> <operation> @ <capacity>" so
the table compares the implementations side by side. ``benchmark.extra_info`` carries what the report needs:
the operation, the row type, rows and bytes moved per call, and the 1-minute load average when the benchmark ended.
"""
from __future__ import annotations

import datetime
import gc
import os
import platform
import subprocess
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest

import fastreplay
import fastreplay._core
import fastreplay.reference
from tests._rows import ATARI, CARTPOLE  # noqa: F401  (ATARI, CARTPOLE: the field specs the tests use too)

IMPLS = {"fastreplay": fastreplay, "reference": fastreplay.reference}
CAPACITIES = [10_000, 100_000, 1_000_000]


def cap_id(capacity: int) -> str:
    """10_000 -> '1e4' (test ids and group names)."""
    exp = len(str(capacity)) - 1
    return f"1e{exp}" if capacity == 10**exp else str(capacity)


ATARI_CAPACITY = 100_000
ATARI_FILL = 50_000
ATARI_FRAME_BYTES = 4 * 84 * 84  # one obs (or next_obs) row


def cartpole_rows(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """n random CartPole transitions with a leading axis."""
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.standard_normal((n, 4), dtype=np.float32),
        "action": rng.integers(0, 2, n, dtype=np.int64),
        "reward": np.ones(n, np.float32),
        "next_obs": rng.standard_normal((n, 4), dtype=np.float32),
        "done": rng.random(n) < 0.05,
    }


def atari_rows(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """n random Atari transitions (random frames: the bytes are what matters, not their content)."""
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
        "action": rng.integers(0, 18, n, dtype=np.int64),
        "reward": rng.standard_normal(n, dtype=np.float32),
        "next_obs": rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
        "done": rng.random(n) < 0.01,
    }


def one_cartpole_step(numpy_scalars: bool = False) -> Dict[str, Any]:
    """One transition as an env loop hands it to ``add``: float32[4] observations, and either the Python scalars
    gymnasium's CartPole returns (reward float, terminated bool) with a Python int action, or numpy scalars (an
    action from ``argmax``, a reward and done from a vector env)."""
    obs = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
    next_obs = np.array([0.02, -0.01, 0.02, 0.05], np.float32)
    if numpy_scalars:
        return dict(obs=obs, action=np.int64(1), reward=np.float32(1.0), next_obs=next_obs, done=np.bool_(False))
    return dict(obs=obs, action=1, reward=1.0, next_obs=next_obs, done=False)


class Buffers:
    """Filled buffers, built on first use and kept for the module (filling the reference at 1e6 takes seconds).

    CartPole buffers are filled to capacity with one batched ``add`` of ``capacity`` rows; prioritized ones then get
    random heavy-tailed priorities for every slot (one batched ``update_priorities``), so the tree is not flat.
    Atari buffers (capacity 1e5) are filled to 5e4 rows in chunks of 1000, which keeps the peak memory of the
    reference's conversions small.
    """

    def __init__(self) -> None:
        self._cache: Dict[Tuple, Any] = {}

    def get(self, impl: str, kind: str, capacity: int, prioritized: bool = False):
        key = (impl, kind, capacity, prioritized)
        if key not in self._cache:
            self._cache[key] = self._build(impl, kind, capacity, prioritized)
            gc.collect()
            gc.freeze()  # the reference's millions of rows stay out of every later collection, in all benchmarks
        return self._cache[key]

    @staticmethod
    def _build(impl: str, kind: str, capacity: int, prioritized: bool):
        mod = IMPLS[impl]
        if kind == "cartpole":
            if prioritized:
                buf = mod.PrioritizedReplayBuffer(capacity, CARTPOLE, alpha=0.6, eps=1e-6, seed=0)
            else:
                buf = mod.ReplayBuffer(capacity, CARTPOLE, seed=0)
            buf.add(**cartpole_rows(capacity))
            if prioritized:
                rng = np.random.default_rng(1)
                buf.update_priorities(np.arange(capacity), rng.pareto(1.5, capacity))
        elif kind == "atari":
            assert not prioritized and capacity == ATARI_CAPACITY
            buf = mod.ReplayBuffer(capacity, ATARI, seed=0)
            chunk = atari_rows(1000)
            for _ in range(ATARI_FILL // 1000):
                buf.add(**chunk)
        else:
            raise ValueError(kind)
        assert len(buf) == (ATARI_FILL if kind == "atari" else capacity)
        return buf

    def clear(self) -> None:
        self._cache.clear()
        gc.unfreeze()
        gc.collect()


@pytest.fixture(scope="module")
def buffers():
    cache = Buffers()
    yield cache
    cache.clear()


def run(benchmark, fn: Callable, *args: Any, group: str, op: str, kind: str, impl: str, capacity: int,
        rows: int = 0, nbytes: int = 0, **kwargs: Any):
    """Benchmark ``fn(*args, **kwargs)`` in pytest-benchmark's calibrated mode (the suite's command line sets the
    round length and time per benchmark) and record what the report needs in ``extra_info``."""
    benchmark.group = group
    benchmark.extra_info.update(op=op, kind=kind, impl=impl, capacity=capacity, rows=rows, bytes=nbytes)
    result = benchmark(fn, *args, **kwargs)
    benchmark.extra_info["load1"] = os.getloadavg()[0]
    return result


# --- machine info in the JSON -------------------------------------------------------------------------------------

def _lscpu() -> Dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


_LOAD_AT_START: Tuple[float, float, float] = (0.0, 0.0, 0.0)
_CORE_PATH = fastreplay._core.__file__  # the compiled module this process loaded (a rebuild later does not change it)
_CORE_MTIME = datetime.datetime.fromtimestamp(os.path.getmtime(_CORE_PATH), datetime.timezone.utc).isoformat(
    timespec="seconds")


def pytest_sessionstart(session) -> None:
    global _LOAD_AT_START
    _LOAD_AT_START = os.getloadavg()


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    cpu = _lscpu()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    machine_info["fastreplay"] = {
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpus": cpu.get("CPU(s)", str(os.cpu_count())),
        "cores_per_socket": cpu.get("Core(s) per socket", ""),
        "threads_per_core": cpu.get("Thread(s) per core", ""),
        "hypervisor": cpu.get("Hypervisor vendor", ""),
        "l2": cpu.get("L2 cache", ""),
        "l3": cpu.get("L3 cache", ""),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "fastreplay": fastreplay.__version__,
        "git_commit": commit + ("+dirty" if dirty else ""),
        "core_path": _CORE_PATH,
        "core_mtime": _CORE_MTIME,
        "load_at_start": list(_LOAD_AT_START),
        "load_at_end": list(os.getloadavg()),
    }
