"""PERDQN: SB3's DQN trained on :class:`~fastreplay.sb3.PrioritizedReplayBuffer` (importance-weighted loss,
``|TD error|`` priorities, beta annealed to 1)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.dqn import DQN

from ..schedules import beta_schedule
from ._prioritized import PrioritizedReplayBuffer


class PERDQN(DQN):
    """DQN with prioritized experience replay: a one-line swap for ``stable_baselines3.DQN``.

    ``PERDQN("MlpPolicy", env, beta0=0.4, replay_buffer_kwargs={"alpha": 0.6})``. The buffer defaults to
    :class:`PrioritizedReplayBuffer` (any subclass of it may be given). ``train`` weights each sample's Huber loss by
    its importance weight, writes ``|TD error|`` back as its priority, and anneals beta linearly from ``beta0`` to 1
    over the ``total_timesteps`` of ``learn``. Everything else is SB3's DQN.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, beta0: float = 0.4, **kwargs: Any) -> None:
        buffer_class = kwargs.get("replay_buffer_class")
        if buffer_class is None:
            kwargs["replay_buffer_class"] = PrioritizedReplayBuffer
        elif not (isinstance(buffer_class, type) and issubclass(buffer_class, PrioritizedReplayBuffer)):
            raise TypeError(
                "PERDQN: replay_buffer_class must be fastreplay.sb3.PrioritizedReplayBuffer or a subclass, "
                f"got {buffer_class!r}"
            )
        self.beta0 = float(beta0)
        super().__init__(policy, env, *args, **kwargs)

    @property
    def beta(self) -> float:
        """Importance-sampling exponent now: ``beta0`` at the start of ``learn``, 1 at its end."""
        progress = 1.0 - float(getattr(self, "_current_progress_remaining", 1.0))
        return beta_schedule(self.beta0).at_fraction(progress)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        import torch.nn.functional as F

        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        beta = self.beta
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env, beta=beta)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            with th.no_grad():
                next_q = self.q_net_target(data.next_observations).max(dim=1)[0].reshape(-1, 1)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q
            current_q = th.gather(self.q_net(data.observations), dim=1, index=data.actions.long())
            # Importance weights correct the bias of sampling by priority.
            loss = (data.weights * F.smooth_l1_loss(current_q, target_q, reduction="none")).mean()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            # New priority of each sampled transition: its |TD error|.
            td = (current_q - target_q).detach().abs().reshape(-1).cpu().numpy().astype(np.float64)
            self.replay_buffer.update_priorities(data.indices, td, data.generations)  # type: ignore[union-attr]
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))
        self.logger.record("train/per_beta", beta)
