"""SB3's ``NStepReplayBuffer`` on the core's n-step returns (an episodic core buffer: one lane per env)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common import buffers as _sb3
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from ..buffer import ReplayBuffer as _CoreReplay
from ._buffers import ReplayBuffer, _Column


class NStepReplayBuffer(ReplayBuffer, _sb3.NStepReplayBuffer):
    """SB3's ``NStepReplayBuffer`` (same constructor: ``n_steps=3``, ``gamma=0.99``) whose n-step returns are
    computed by fastreplay's core at sampling time.

    Each env is a lane of an episodic core buffer (``num_envs=n_envs``, ``n_step=n_steps``, ``gamma``). The
    core stores SB3's ``done`` and ``TimeLimit.truncated`` as its ``done`` (terminated: done and not truncated) and
    ``truncated`` flags, so its window stops where SB3's does: at the first termination or truncation, and at the
    newest step (SB3 marks step ``pos - 1`` truncated while it samples). ``rewards`` is
    ``sum_{j<m} gamma**j r_{t+j}``, ``dones`` whether the window's last step terminated, ``discounts``
    ``gamma**m`` and ``next_observations`` the next observation of the window's last step, as in SB3.
    """

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
        n_steps: int = 3,
        gamma: float = 0.99,
        **kwargs: Any,
    ) -> None:
        if optimize_memory_usage:
            raise NotImplementedError("NStepReplayBuffer doesn't support optimize_memory_usage=True")  # SB3's
        if isinstance(observation_space, spaces.Dict):
            raise TypeError("NStepReplayBuffer does not support Dict observation spaces (neither does SB3's)")
        self._nstep_args = (int(n_steps), float(gamma))  # until the core exists
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, False,
                         handle_timeout_termination, **kwargs)
        self._no_truncation = np.zeros(self.n_envs, dtype=bool)

    def _layout(self) -> None:
        super()._layout()
        self._fields.pop("done")
        self._fields.pop("timeout", None)
        self._fields["done"] = ((), np.bool_)  # terminated: SB3's done and not a time-limit truncation
        self._fields["truncated"] = ((), np.bool_)  # SB3's timeout (never with handle_timeout_termination=False)
        self._fields["sb3_done"] = ((), np.bool_)  # SB3's done as given (a timeout without done stays so)

    def _new_core(self) -> _CoreReplay:
        n_steps, gamma = self._nstep_args
        return _CoreReplay(self._capacity, self._fields, seed=self._seed, num_envs=self.n_envs, n_step=n_steps,
                           gamma=gamma, **self._core_kwargs)

    # SB3's attributes, settable as in SB3 (effective from the next sample)
    @property
    def n_steps(self) -> int:  # type: ignore[override]
        core = self.__dict__.get("_core")
        return self._nstep_args[0] if core is None else int(core.n_step)

    @n_steps.setter
    def n_steps(self, value: int) -> None:
        self._nstep_args = (int(value), self._nstep_args[1])
        if "_core" in self.__dict__:
            self._core.n_step = int(value)

    @property
    def gamma(self) -> float:  # type: ignore[override]
        core = self.__dict__.get("_core")
        return self._nstep_args[1] if core is None else float(core.gamma)

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._nstep_args = (self._nstep_args[0], float(value))
        if "_core" in self.__dict__:
            self._core.gamma = float(value)

    # ---------------------------------------------------------------------------------------------- adding
    def add(  # type: ignore[override]
        self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: List[Dict[str, Any]]
    ) -> None:
        rows, next_rows = self._step_rows(obs, next_obs, action, reward, done, infos)
        rows.update(next_rows)
        d = rows["done"] != 0
        rows["sb3_done"] = d
        if self.handle_timeout_termination:
            t = rows.pop("timeout") != 0
            rows["done"], rows["truncated"] = d & ~t, t
        else:  # SB3 keeps no timeouts then: every done ends the window and is terminal
            rows["done"], rows["truncated"] = d, self._no_truncation
        self._core.add(**rows)

    # -------------------------------------------------------------------------------------------- columns
    def _flags(self) -> Tuple[np.ndarray, np.ndarray]:
        """SB3's done and timeout flags, bool ``(steps, n_envs)``."""
        return np.asarray(self._column("sb3_done")), np.asarray(self._column("truncated"))

    @property
    def dones(self) -> np.ndarray:  # type: ignore[override]
        """SB3's dones, float32 ``(steps, n_envs)`` (a copy; item assignment reaches the core)."""
        return _Column(self._flags()[0].astype(np.float32), self, "done")

    @property
    def timeouts(self) -> np.ndarray:  # type: ignore[override]
        if not self.handle_timeout_termination:
            return _Column(np.zeros(self._flags()[0].shape, np.float32), self, "timeout")
        return _Column(self._flags()[1].astype(np.float32), self, "timeout")

    def _write_column(self, field: str, key: Any, value: Any) -> None:
        """``column[key] = value``: written into the core's storage (its n-step sums read rewards and flags there);
        a write to ``dones``/``timeouts`` then rebuilds the core's episode ends (O(buffer_size))."""
        core, size = self._core, len(self._core)
        if field in ("done", "timeout"):
            if field == "timeout" and not self.handle_timeout_termination:
                raise ValueError("timeouts are not stored when handle_timeout_termination=False")
            d, t = (f.copy() for f in self._flags())
            (d if field == "done" else t)[key] = value  # bool arrays: nonzero is True, as SB3's 0/1 floats
            core._raw_view(self._field_index("sb3_done"), size)[:] = d.reshape(-1)
            core._raw_view(self._field_index("done"), size)[:] = (d & ~t).reshape(-1)
            core._raw_view(self._field_index("truncated"), size)[:] = t.reshape(-1)
            st = core._export_state()  # the core derives its episode ends from the flags: restore rebuilds them
            core._restore_state(st["cursor"], st["base"], st["stream"], st["seq"], None, 0.0)
            return
        current = np.array(self._column(field))
        current[key] = value
        core._raw_view(self._field_index(field), size)[:] = current.reshape((size,) + current.shape[2:])

    # ------------------------------------------------------------------------------------------- sampling
    def _window(self, slots: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """SB3's window of each sampled slot: its slots ``[B, n_steps]`` and its length ``m`` (up to and with the
        first termination or truncation, and at most to the lane's newest step)."""
        n, cap, k = self.n_steps, self._capacity, self.n_envs
        seq = (slots[:, None] + np.arange(n)[None, :] * k) % cap
        d, t = self._flags()
        ends = (d | t).reshape(-1)
        newest = (self._core.next_index - k + slots % k) % cap
        stop = ends[np.minimum(seq, len(ends) - 1)] | (seq == newest[:, None])
        m = np.where(stop.any(axis=1), stop.argmax(axis=1) + 1, n)
        return seq, m

    def _to_samples(self, batch: Any, env: Optional[Any]) -> Any:
        done = batch["done"]  # terminated of the window's last step: SB3's dones * (1 - timeouts) there
        discount = batch["discount"]  # gamma**m * (1 - done)
        reward = batch["reward"]
        if env is not None or done.any():
            seq, m = self._window(np.asarray(batch.indices, dtype=np.int64))
            if done.any():  # SB3's discounts are gamma**m also where the window ends in a termination
                discount = np.where(done, np.float32(self.gamma) ** m.astype(np.float32), discount)
            if env is not None:  # SB3 normalises each reward of the window (VecNormalize clips), then sums
                r = np.asarray(self._column("reward")).reshape(-1)[seq]
                r = self._normalize_reward(r, env)
                mask = np.arange(self.n_steps)[None, :] < m[:, None]
                gammas = self.gamma ** np.arange(self.n_steps, dtype=np.float32)[None, :]
                reward = (r * gammas * mask).sum(axis=1)
        to_torch = self.to_torch
        obs, next_obs = self._normalize_obs(batch["obs"], env), self._normalize_obs(batch["next_obs"], env)
        return ReplayBufferSamples(
            observations=to_torch(obs, copy=False),  # type: ignore[arg-type]
            actions=to_torch(batch["action"], copy=False),
            next_observations=to_torch(next_obs, copy=False),  # type: ignore[arg-type]
            dones=to_torch(done.astype(np.float32).reshape(-1, 1), copy=False),
            rewards=to_torch(np.asarray(reward, dtype=np.float32).reshape(-1, 1), copy=False),
            discounts=to_torch(np.asarray(discount, dtype=np.float32).reshape(-1, 1), copy=False),
        )
