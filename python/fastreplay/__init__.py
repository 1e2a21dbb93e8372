"""fastreplay: the fastest experience-replay buffer for reinforcement learning.

A lock-free C++ ring buffer with columnar storage, C++ segment trees for prioritized replay, batched GIL-free
gathers into numpy arrays (zero-copy to torch on the CPU), and a pure-Python reference implementation
(:mod:`fastreplay.reference`) that serves as baseline and test oracle.
"""
from importlib.metadata import PackageNotFoundError, version as _version

from ._batch import Batch
from .buffer import CASTING, Prefetcher, PrioritizedReplayBuffer, ReplayBuffer
from .schedules import LinearSchedule, beta_schedule

try:
    __version__ = _version("fastreplay")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "Batch",
    "CASTING",
    "LinearSchedule",
    "Prefetcher",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "beta_schedule",
    "__version__",
]
