"""Prioritized replay for SB3: :class:`PrioritizedReplayBuffer` and the samples it returns (SB3's samples plus
importance weights, indices and generations)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples

from ._buffers import ReplayBuffer


class PrioritizedReplayBufferSamples(ReplayBufferSamples):
    """SB3's ``ReplayBufferSamples`` plus ``weights`` (float32 tensor ``[B, 1]`` on the buffer's device: importance
    weights, max-normalised), ``indices`` (int64 numpy ``[B]``) and ``generations`` (uint64 numpy ``[B]``): pass
    both to ``update_priorities`` so that rows overwritten since sampling are skipped.

    It is still a 6-tuple (``observations, actions, next_observations, dones, rewards, discounts``), so code that
    unpacks or iterates SB3's samples keeps working; ``weights``, ``indices`` and ``generations`` are attributes.
    """

    def __new__(cls, *args: Any, weights: Any = None, indices: Any = None, generations: Any = None, **kwargs: Any):
        return _with_extras(ReplayBufferSamples, cls, args, kwargs, weights, indices, generations)

    def _replace(self, **kwargs: Any):
        return _replace_with_extras(ReplayBufferSamples, self, kwargs)

    def __reduce__(self):
        return (_rebuild_samples, (type(self), tuple(self), self.weights, self.indices, self.generations))


class PrioritizedDictReplayBufferSamples(DictReplayBufferSamples):
    """SB3's ``DictReplayBufferSamples`` plus ``weights``, ``indices`` and ``generations``, as
    :class:`PrioritizedReplayBufferSamples`."""

    def __new__(cls, *args: Any, weights: Any = None, indices: Any = None, generations: Any = None, **kwargs: Any):
        return _with_extras(DictReplayBufferSamples, cls, args, kwargs, weights, indices, generations)

    def _replace(self, **kwargs: Any):
        return _replace_with_extras(DictReplayBufferSamples, self, kwargs)

    def __reduce__(self):
        return (_rebuild_samples, (type(self), tuple(self), self.weights, self.indices, self.generations))


def _with_extras(base, cls, args, kwargs, weights, indices, generations):
    self = base.__new__(cls, *args, **kwargs)
    self.weights, self.indices, self.generations = weights, indices, generations
    return self


def _replace_with_extras(base, self, kwargs):
    extras = {k: kwargs.pop(k, getattr(self, k)) for k in ("weights", "indices", "generations")}
    return type(self)(*base._replace(self, **kwargs), **extras)


def _rebuild_samples(cls, values, weights, indices, generations=None):
    return cls(*values, weights=weights, indices=indices, generations=generations)



class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2015) for SB3, on fastreplay's sum and min trees.

    Args:
        alpha: priority exponent (0 is uniform).
        beta: importance-sampling exponent used when ``sample`` is not given one (:class:`PERDQN` anneals it).
        eps: added to every priority before the exponent.
        Other arguments as for :class:`ReplayBuffer`; Box, Discrete, MultiDiscrete, MultiBinary and Dict
        observation spaces all work.

    ``sample(batch_size, env=None, beta=None)`` returns :class:`PrioritizedReplayBufferSamples` (or the Dict
    variant): SB3's samples plus ``weights`` (float32 ``[B, 1]`` tensor) and ``indices`` (int64 numpy ``[B]``).
    Call ``update_priorities(samples.indices, td_errors, samples.generations)`` after the gradient step; rows
    overwritten since they were sampled are skipped. New transitions get the largest priority seen so far.
    """

    _prioritized = True

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: Optional[int] = None,
    ) -> None:
        self.beta = float(beta)
        super().__init__(
            buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination, seed=seed, alpha=alpha, eps=eps,
        )

    @property
    def alpha(self) -> float:
        return self._core.alpha  # type: ignore[attr-defined]

    def sample(self, batch_size: int, env: Optional[Any] = None, beta: Optional[float] = None) -> Any:  # type: ignore[override]
        """A prioritized batch (stratified over the priority mass) with importance weights for ``beta``.

        With ``optimize_memory_usage`` the latest step's rows that are not episode ends are drawn from the next
        ``add`` on (the core has their next observation then), unless nothing else is stored: then the batch is
        drawn uniformly from them, with weight 1 (they all entered with the same, largest, priority)."""
        if self.optimize_memory_usage and self._n_pend and self._n_pend >= len(self._core) and batch_size >= 1:
            slots = self._latest_slots()[self._rng.integers(0, self._n_pend, int(batch_size))]
            batch = self._rows_batch(slots, with_generations=True)
            batch.weights = np.ones(len(slots), np.float32)
            return self._to_samples(batch, env)
        return self._to_samples(self._core.sample(batch_size, self.beta if beta is None else float(beta)), env)

    def _make_samples(self, batch: Any, values: Tuple[Any, ...]) -> Any:
        cls = PrioritizedDictReplayBufferSamples if self._is_dict else PrioritizedReplayBufferSamples
        weights = batch.weights if batch.weights is not None else np.ones(len(batch.indices), np.float32)
        return cls(*values, weights=self.to_torch(weights.reshape(-1, 1), copy=False), indices=batch.indices,
                   generations=batch.generations)

    def update_priorities(self, indices: Any, priorities: Any, generations: Any = None) -> int:
        """Set priorities (e.g. ``|TD error|``, finite and >= 0) of sampled rows; returns how many were stale.

        Rows overwritten since sampling are recognised (and skipped) only with ``generations=samples.generations``.
        """
        return self._core.update_priorities(indices, priorities, generations)  # type: ignore[attr-defined]
