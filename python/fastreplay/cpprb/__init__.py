"""cpprb drop-in: cpprb's replay-buffer API with storage and sampling in fastreplay's C++ core.

One-line swap::

    from fastreplay.cpprb import ReplayBuffer, PrioritizedReplayBuffer   # was: from cpprb import ...

    rb = ReplayBuffer(1e6, {"obs": {"shape": 4}, "act": {}, "rew": {}, "next_obs": {"shape": 4}, "done": {}})
    rb.add(obs=o, act=a, rew=r, next_obs=o2, done=d)      # one row, or many with a leading axis
    sample = rb.sample(256)                               # dict: name -> array (B, *shape); scalars are (B, 1)

Semantics follow cpprb 10/11: ``env_dict`` entries ``{"shape": int or tuple (default 1), "dtype": ...}`` with
``default_dtype`` (float32) for the rest; values are reshaped to ``(-1, *shape)`` and cast as numpy assignment
casts; the number of rows of an ``add`` is that of the last ``env_dict`` entry; ``next_of`` stores each named value
once and serves ``next_<name>`` from the following row, from the latest ``add``'s ``next_<name>``, or, for the
last transition of an episode closed by ``on_episode_end()``, from a small cache; ``Nstep`` sums discounted rewards
over ``Nstep["size"]`` steps and moves ``Nstep["next"]`` values; prioritized sampling is proportional and
stratified with ``(p + eps) ** alpha`` leaves and max-normalised weights; ``save_transitions`` and
``load_transitions`` read and write cpprb's ``.npz`` format (version 1, ``safe`` and unsafe ``next_of`` layouts).
``ReverseReplayBuffer``, ``HindsightReplayBuffer``, the ``LaBER`` helpers and ``train`` follow cpprb's too;
``MPReplayBuffer`` and ``MPPrioritizedReplayBuffer`` live in fastreplay's shared storage, which processes add to and
sample lock-free (any ``multiprocessing`` start method). The
remaining differences, including two cpprb ``Nstep`` bugs that this module does not reproduce, are listed in
``docs/dropin.md``; ``.ci/cpprb_suite.py`` runs cpprb's own test files against this module.
"""
from ._buffer import ReplayBuffer
from ._env import create_before_add_func, create_env_dict
from ._her import HindsightReplayBuffer
from ._laber import LaBERlazy, LaBERmax, LaBERmean
from ._mp import MPPrioritizedReplayBuffer, MPReplayBuffer
from ._prioritized import PrioritizedReplayBuffer, create_buffer
from ._reverse import ReverseReplayBuffer
from ._selective import SelectiveReplayBuffer
from ._train import train

__all__ = [
    "HindsightReplayBuffer",
    "LaBERlazy",
    "LaBERmax",
    "LaBERmean",
    "MPPrioritizedReplayBuffer",
    "MPReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "ReverseReplayBuffer",
    "SelectiveReplayBuffer",
    "create_before_add_func",
    "create_buffer",
    "create_env_dict",
    "train",
]

# Public names report the package as their module, as when it was the single file cpprb.py: pickles keep naming
# fastreplay.cpprb.ReplayBuffer (not fastreplay.cpprb._buffer.ReplayBuffer), and reprs and help() read as before.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
