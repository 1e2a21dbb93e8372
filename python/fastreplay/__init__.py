"""fastreplay: the fastest experience-replay buffer for reinforcement learning.

A lock-free C++ ring buffer with columnar storage, C++ segment trees for prioritized replay, batched GIL-free
gathers into numpy arrays (zero-copy to torch on the CPU), and a pure-Python reference implementation
(:mod:`fastreplay.reference`) that serves as baseline and test oracle.
"""
from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

from ._batch import Batch
from .schedules import LinearSchedule, beta_schedule

if TYPE_CHECKING:
    from .buffer import CASTING, Prefetcher, PrioritizedReplayBuffer, ReplayBuffer, get_copy_threads, set_copy_threads
    from .rate_limiter import RateLimitedBuffer, RateLimiter

_FROM_BUFFER = ("CASTING", "Prefetcher", "PrioritizedReplayBuffer", "ReplayBuffer", "get_copy_threads",
                "set_copy_threads")
_FROM_RATE_LIMITER = ("RateLimitedBuffer", "RateLimiter")


def __getattr__(name: str) -> Any:
    # The compiled classes load on first use, so that `import fastreplay.reference` (pure Python) never loads
    # the compiled module.
    if name in _FROM_BUFFER:
        from . import buffer

        return getattr(buffer, name)
    if name in _FROM_RATE_LIMITER:
        from . import rate_limiter

        return getattr(rate_limiter, name)
    raise AttributeError(f"module 'fastreplay' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_FROM_BUFFER) | set(_FROM_RATE_LIMITER))

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
    "RateLimitedBuffer",
    "RateLimiter",
    "ReplayBuffer",
    "beta_schedule",
    "get_copy_threads",
    "set_copy_threads",
    "__version__",
]
