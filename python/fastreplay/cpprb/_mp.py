"""cpprb's ``MPReplayBuffer`` and ``MPPrioritizedReplayBuffer``: one buffer that several processes add to and sample
at once, in fastreplay's shared storage (``storage="shared"``, ``docs/multiprocess.md``).

cpprb keeps its arrays in shared memory and serialises the processes with locks and events; here the whole core
(columns, ring, trees) is in one shared-memory object and the processes follow the core's lock-free protocol, as
threads do: any number of them may add and sample at once. Pass the buffer to ``multiprocessing.Process`` (any
start method: it pickles as a handle on the same memory); the process that created it must outlive the others.
"""
from __future__ import annotations

from multiprocessing.context import ProcessError
from typing import Any, Dict, Optional

from ._buffer import ReplayBuffer
from ._prioritized import PrioritizedReplayBuffer

_BACKENDS = ("sharedctypes", "SharedMemory")


def _check_mp(where: str, ctx: Any, backend: Any) -> None:
    """cpprb's checks of ``ctx`` and ``backend``. Both only choose how cpprb shares its arrays; fastreplay's shared
    storage serves every start method and needs no manager, so they are otherwise unused."""
    if backend not in _BACKENDS:
        raise ValueError(f"{where}: unknown backend {backend!r}; expected one of {', '.join(_BACKENDS)}")
    state = getattr(getattr(ctx, "_state", None), "value", None)  # a multiprocessing manager's state
    if state is not None and state not in (0, 1):  # State.INITIAL, State.STARTED
        raise ProcessError(f"{where}: the manager passed as ctx has shut down")


class MPReplayBuffer(ReplayBuffer):
    """cpprb's ``MPReplayBuffer``: a uniform buffer that processes share (``add``/``sample`` from any of them).

    Args:
        size, env_dict, default_dtype: as for ``ReplayBuffer``.
        ctx: a ``multiprocessing`` context or ``SyncManager`` (cpprb builds its shared arrays and locks with it);
            checked as cpprb does (a shut-down manager raises ``ProcessError``), otherwise not needed.
        backend: ``"sharedctypes"`` or ``"SharedMemory"``, cpprb's two ways to allocate; both mean fastreplay's
            shared storage here. Anything else raises ``ValueError``.
    """

    def __init__(self, size: Any, env_dict: Optional[Dict[str, Dict[str, Any]]] = None, default_dtype: Any = None,
                 *, logger: Any = None, ctx: Any = None, backend: str = "sharedctypes", **kwargs: Any) -> None:
        _check_mp(type(self).__name__, ctx, backend)
        self._setup(size, env_dict, None, None, default_dtype, None, None, {}, shared=True)


class MPPrioritizedReplayBuffer(PrioritizedReplayBuffer):
    """cpprb's ``MPPrioritizedReplayBuffer``: a prioritized buffer that processes share.

    As ``PrioritizedReplayBuffer`` (``alpha``, ``eps``; ``add(priorities=...)``, ``sample(batch_size, beta)``,
    ``update_priorities``, ``get_max_priority``), with ``ctx`` and ``backend`` as for ``MPReplayBuffer``. The
    priorities and trees are shared too: an update in one process is what every process samples from next.
    ``update_priorities`` skips slots that were written since this process's last ``sample`` (cpprb's Ape-X
    assumption: explorers add while a learner samples and updates).
    """

    def __init__(self, size: Any, env_dict: Optional[Dict[str, Dict[str, Any]]] = None, alpha: float = 0.6, *,
                 eps: float = 1e-4, default_dtype: Any = None, logger: Any = None, ctx: Any = None,
                 backend: str = "sharedctypes", **kwargs: Any) -> None:
        _check_mp(type(self).__name__, ctx, backend)
        self._check_for_update = True
        self._setup(size, env_dict, None, None, default_dtype, None, None, {"alpha": float(alpha), "eps": float(eps)},
                    shared=True)
