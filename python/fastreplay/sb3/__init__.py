"""Stable-Baselines3 drop-in: replay buffers whose storage and sampling run in fastreplay's C++ core.

One-line swap::

    from stable_baselines3 import DQN
    import fastreplay.sb3

    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=fastreplay.sb3.ReplayBuffer)

:class:`ReplayBuffer` and :class:`DictReplayBuffer` subclass SB3's own classes (SB3 checks ``isinstance`` when it
loads a saved buffer) and take the same constructor. Each environment step adds ``n_envs`` rows to one
:class:`fastreplay.ReplayBuffer` (row ``pos * n_envs + env``), so sampling uniformly over its rows is SB3's
"random step, random env" sampling. ``sample`` returns SB3's ``ReplayBufferSamples`` with SB3's dtypes, shapes and
device. The column attributes SB3 code reads (``observations``, ``actions``, ``rewards``, ``dones``, ``timeouts``,
``next_observations``) are zero-copy, read-only views of the core's storage shaped ``(steps, n_envs, ...)``; an item
assignment into them (SB3 writes ``dones[pos] = True`` before a second ``learn``) writes the core's storage. ``pos``
and ``full`` are derived from the core's ring; assigning them works as in SB3. See ``docs/dropin.md`` for every
difference.

``optimize_memory_usage=True`` runs on the core's next-observation dedup (an episodic core buffer, one lane per env):
each observation is stored once, the next observation of a row is the observation of the same env one step later,
and at episode ends (``done``) the core keeps the true final observation. The adapter keeps the latest step's next
observations (and samples those rows as SB3 does) and, where the next ``add`` shows that the episode did not
continue (a reset without ``done``), that row's true next observation. Unlike SB3's buffer this also works with
``handle_timeout_termination=True`` and with Dict observations, and it never returns a wrong next observation.

:class:`PrioritizedReplayBuffer` adds proportional prioritized replay (``sample(batch_size, env, beta)`` returns
samples with ``weights``, ``indices`` and ``generations``; ``update_priorities(indices, priorities, generations)``), and :class:`PERDQN` is a DQN
whose ``train`` weights the TD loss by the importance weights, writes ``|TD error|`` back as priorities and anneals
beta to 1 over training.

:class:`NStepReplayBuffer` is SB3's ``NStepReplayBuffer`` (``n_steps``, ``gamma``) on the core's n-step returns:
one lane per env of an episodic core buffer, the window stopping at terminations, truncations and the newest step.

:class:`HerReplayBuffer` is SB3's ``HerReplayBuffer`` (future/final/episode goals, online relabelling with
``env.compute_reward``) with its transitions in the core and an O(batch) ``sample`` that draws what SB3's draws.
"""
from __future__ import annotations

from ._buffers import DictReplayBuffer, ReplayBuffer
from ._her import HerReplayBuffer
from ._nstep import NStepReplayBuffer
from ._perdqn import PERDQN
from ._prioritized import (
    PrioritizedDictReplayBufferSamples,
    PrioritizedReplayBuffer,
    PrioritizedReplayBufferSamples,
    _rebuild_samples,
)

__all__ = [
    "DictReplayBuffer",
    "HerReplayBuffer",
    "NStepReplayBuffer",
    "PERDQN",
    "PrioritizedDictReplayBufferSamples",
    "PrioritizedReplayBuffer",
    "PrioritizedReplayBufferSamples",
    "ReplayBuffer",
]

# Pickle names a class or function by its __module__. These were defined in fastreplay/sb3.py before it became a
# package, and SB3 pickles whole replay buffers (save_replay_buffer), so they keep the name fastreplay.sb3.<name>:
# old pickles load, and new ones do not depend on the private module layout. _rebuild_samples is what the samples
# classes' __reduce__ returns.
for _obj in (
    DictReplayBuffer,
    HerReplayBuffer,
    NStepReplayBuffer,
    PERDQN,
    PrioritizedDictReplayBufferSamples,
    PrioritizedReplayBuffer,
    PrioritizedReplayBufferSamples,
    ReplayBuffer,
    _rebuild_samples,
):
    _obj.__module__ = __name__
del _obj
