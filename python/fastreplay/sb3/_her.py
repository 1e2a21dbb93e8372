"""SB3's ``HerReplayBuffer`` on fastreplay's core: transitions in the core, SB3's episode bookkeeping in numpy, and
sampling without SB3's per-call scan of the whole buffer."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.her import her_replay_buffer as _sb3_her
from stable_baselines3.her.goal_selection_strategy import KEY_TO_GOAL_STRATEGY, GoalSelectionStrategy

from ._buffers import DictReplayBuffer

_NO_EPISODE = (
    "Unable to sample before the end of the first episode. We recommend choosing a value "
    "for learning_starts that is greater than the maximum number of timesteps in the environment."
)  # SB3's message, word for word


class HerReplayBuffer(DictReplayBuffer, _sb3_her.HerReplayBuffer):
    """SB3's ``HerReplayBuffer`` (same constructor and attributes) with its transitions stored in fastreplay's core.

    Each step is ``n_envs`` rows of one core buffer (row ``pos * n_envs + env``), as in
    :class:`fastreplay.sb3.DictReplayBuffer`. ``ep_start``, ``ep_length`` and ``_current_ep_start`` are SB3's arrays,
    kept exactly as SB3 keeps them (the same ``add``/``_compute_episode_length`` rules, also where SB3's rules are
    odd). What SB3 recomputes at every ``sample`` (``ep_length > 0`` over the whole buffer, then ``flatnonzero``) is
    kept incrementally here: the sampleable steps of each env form one circular run of positions that ends at
    ``_current_ep_start[env]``, and its length is counted as ``ep_length`` changes. ``sample`` draws the same
    random numbers as SB3's (``np.random``: one ``randint`` over the sampleable (step, env) pairs in SB3's row-major
    order, then SB3's goal draws), so under the same numpy seed and the same stored data it returns the same
    transitions, goals and rewards, in O(batch) instead of O(buffer).

    If ``ep_length`` is changed from outside in a way that breaks the single run per env, call
    :meth:`_recount_episodes`; ``sample`` then falls back to SB3's scan until the runs are whole again.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        env: Any,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_sampled_goal: int = 4,
        goal_selection_strategy: GoalSelectionStrategy | str = "future",
        copy_info_dict: bool = False,
        **kwargs: Any,
    ) -> None:
        if optimize_memory_usage:  # SB3's DictReplayBuffer refuses it, and HER reads next_observations
            raise AssertionError("DictReplayBuffer does not support optimize_memory_usage")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, False,
                         handle_timeout_termination, **kwargs)
        self.env = env
        self.copy_info_dict = copy_info_dict
        if isinstance(goal_selection_strategy, str):
            self.goal_selection_strategy = KEY_TO_GOAL_STRATEGY[goal_selection_strategy.lower()]
        else:
            self.goal_selection_strategy = goal_selection_strategy
        assert isinstance(
            self.goal_selection_strategy, GoalSelectionStrategy
        ), f"Invalid goal selection strategy, please use one of {list(GoalSelectionStrategy)}"
        self.n_sampled_goal = n_sampled_goal
        self.her_ratio = 1 - (1.0 / (self.n_sampled_goal + 1))
        # SB3 keeps one info dict per slot always; here only with copy_info_dict (the only reader), else None.
        self.infos = np.empty((self.buffer_size, self.n_envs), dtype=object)
        if copy_info_dict:
            for i in range(self.buffer_size):
                for j in range(self.n_envs):
                    self.infos[i, j] = {}
        self._reset_episodes()

    def _reset_episodes(self) -> None:
        self.ep_start = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self.ep_length = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self._current_ep_start = np.zeros(self.n_envs, dtype=np.int64)
        self._n_valid = np.zeros(self.n_envs, dtype=np.int64)  # count of ep_length > 0, per env
        self._runs_ok = True  # the valid steps of each env are one circular run ending at _current_ep_start

    def reset(self) -> None:
        """Empty the buffer, episodes included (SB3's ``reset`` only rewinds ``pos``, so its old episodes stay
        sampleable over data that is then overwritten)."""
        super().reset()
        self._reset_episodes()
        if self.copy_info_dict:
            self.infos[:] = [[{} for _ in range(self.n_envs)] for _ in range(self.buffer_size)]

    # ---------------------------------------------------------------------------------------------- adding
    def add(  # type: ignore[override]
        self,
        obs: Dict[str, np.ndarray],
        next_obs: Dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: List[Dict[str, Any]],
    ) -> None:
        pos = self.pos
        ep_len = self.ep_length
        for env_idx in np.flatnonzero(ep_len[pos] > 0).tolist():  # SB3: drop the whole old episode being overwritten
            episode_end = int(self.ep_start[pos, env_idx] + ep_len[pos, env_idx])
            episode_indices = np.arange(pos, episode_end) % self.buffer_size
            col = ep_len[:, env_idx]
            self._n_valid[env_idx] -= np.count_nonzero(col[np.unique(episode_indices)])
            col[episode_indices] = 0
        self.ep_start[pos] = self._current_ep_start
        if self.copy_info_dict:
            self.infos[pos] = infos  # type: ignore[assignment]
        self._store(obs, next_obs, action, reward, done, infos)
        for env_idx in np.flatnonzero(done).tolist():
            self._compute_episode_length(env_idx)

    def _store(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: List[Dict[str, Any]]) -> None:
        """The step into the core: one positional call with the caller's arrays when the core takes them as they
        are (it checks every value before it writes any), else ``DictReplayBuffer.add``'s reshaping and casts."""
        if self.__dict__.get("_fast_store", True) and type(obs) is dict and type(next_obs) is dict:
            try:
                values = [obs[key] for key, *_ in self._obs_specs] + [next_obs[key] for key, *_ in self._obs_specs]
                values += [action, reward, done]
                if self.handle_timeout_termination:
                    values.append(self._timeouts(infos))
                self._core.add(*values)
                return
            except (TypeError, ValueError, KeyError):
                self._fast_store = False  # e.g. values of other dtypes: a training loop keeps them, so stop trying
        DictReplayBuffer.add(self, obs, next_obs, action, reward, done, infos)

    def _compute_episode_length(self, env_idx: int) -> None:
        """SB3's rule: the episode that ends at ``pos - 1`` gets its length; the next one starts at ``pos``."""
        episode_start = int(self._current_ep_start[env_idx])
        episode_end = self.pos
        if episode_end < episode_start:
            episode_end += self.buffer_size
        episode_indices = np.unique(np.arange(episode_start, episode_end) % self.buffer_size)
        col = self.ep_length[:, env_idx]
        before = np.count_nonzero(col[episode_indices])
        col[episode_indices] = episode_end - episode_start
        self._n_valid[env_idx] += np.count_nonzero(col[episode_indices]) - before
        self._current_ep_start[env_idx] = self.pos

    def _recount_episodes(self) -> None:
        """Recount the valid steps from ``ep_length`` (O(buffer)), and check that they form one run per env."""
        valid = self.ep_length > 0
        self._n_valid = valid.sum(axis=0).astype(np.int64)
        self._runs_ok = bool(np.array_equal(valid, self._run_mask()))

    def _run_mask(self) -> np.ndarray:
        n = self.buffer_size
        lo = (self._current_ep_start - self._n_valid) % n
        return ((np.arange(n)[:, None] - lo[None, :]) % n) < self._n_valid[None, :]

    def _column_rows(self) -> int:
        """SB3's shape: every column is ``(buffer_size, n_envs, ...)`` from the start (SB3's HER tests compare
        slices past ``pos``); steps never written read as zeros, as in SB3's arrays. Item assignments write into
        the core's memory (``ReplayBuffer._write_column``)."""
        return self._capacity

    # -------------------------------------------------------------------------------------------- sampling
    def _draw(self, batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """SB3's draw: ``np.random.choice(flatnonzero(ep_length > 0), batch_size)``, unravelled to (step, env),
        computed from the runs (O(batch)). Consumes ``np.random`` exactly as SB3's ``choice`` does."""
        if not self._runs_ok:
            is_valid = self.ep_length > 0
            if not np.any(is_valid):
                raise RuntimeError(_NO_EPISODE)
            sampled = np.random.choice(np.flatnonzero(is_valid), size=batch_size, replace=True)
            b, e = np.unravel_index(sampled, is_valid.shape)
            return b.astype(np.int64), e.astype(np.int64)
        first_rank, sizes, starts, per_step, envs_of = self._segments()
        total = int(first_rank[-1] + sizes[-1])
        if total == 0:
            raise RuntimeError(_NO_EPISODE)
        rank = np.random.randint(0, total, size=batch_size)  # what choice(valid, size, replace=True) draws
        seg = np.searchsorted(first_rank, rank, side="right") - 1
        off = rank - first_rank[seg]
        c = per_step[seg]
        steps = starts[seg] + off // c
        envs = envs_of[seg, off % c]  # the (off % c)-th valid env of the segment: SB3's row-major order
        return steps.astype(np.int64), envs.astype(np.int64)

    def _segments(self) -> Tuple[np.ndarray, ...]:
        """The valid (step, env) pairs in SB3's row-major order, as segments of steps over which the set of valid
        envs is constant (at most 2 * n_envs + 1): each segment's first flat rank, size, first step, envs per step
        and its envs ``[segment, n_envs]`` in ascending order. Cached until a run changes (an episode ends or
        one is dropped)."""
        key = self._current_ep_start.tobytes() + self._n_valid.tobytes()
        cached = self.__dict__.get("_segments_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        counts = self._n_valid
        n = self.buffer_size
        live = np.flatnonzero(counts)
        lo = (self._current_ep_start[live] - counts[live]) % n
        # Breakpoints of "which envs are valid at this step", in step order; between two the set is constant.
        bounds = np.unique(np.concatenate(([0, n], lo, (lo + counts[live]) % n)))
        starts, lengths = bounds[:-1], np.diff(bounds)
        inside = ((starts[:, None] - lo[None, :]) % n) < counts[live][None, :]  # [segments, live envs]
        per_step = inside.sum(axis=1)
        sizes = per_step * lengths
        first_rank = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        envs_of = np.zeros((len(starts), self.n_envs), dtype=np.int64)
        for i in range(len(starts)):
            envs_of[i, : per_step[i]] = live[inside[i]]
        # segments with no valid env are never drawn: drop them so searchsorted lands on a live one
        keep = sizes > 0
        if not keep.any():
            keep[:1] = True
        value = (first_rank[keep], sizes[keep], starts[keep], per_step[keep], envs_of[keep])
        self._segments_cache = (key, value)
        return value

    def sample(self, batch_size: int, env: Optional[Any] = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """SB3's HER sample: ``batch_size`` transitions from finished episodes, the first ``int(her_ratio *
        batch_size)`` drawn relabelled with a new goal and its reward, returned after the real ones."""
        steps, envs = self._draw(batch_size)
        nb_virtual = int(self.her_ratio * batch_size)
        if nb_virtual > 0:
            new_goals = self._sample_goals(steps[:nb_virtual], envs[:nb_virtual])
        # one gather from the core, real rows first (SB3 concatenates real, then virtual)
        order = np.concatenate((np.arange(nb_virtual, batch_size), np.arange(nb_virtual)))
        slots = steps[order] * self.n_envs + envs[order]
        batch = self._core.get(slots)
        n_real = batch_size - nb_virtual
        obs = {key: batch[name] for key, name, *_ in self._obs_specs}
        next_obs = {key: batch[nn] for key, _, nn, *_ in self._obs_specs}
        rewards = batch["reward"].reshape(-1, 1)
        if nb_virtual > 0:
            obs["desired_goal"][n_real:] = new_goals
            next_obs["desired_goal"][n_real:] = new_goals
            if self.copy_info_dict:
                infos = copy.deepcopy(self.infos[steps[:nb_virtual], envs[:nb_virtual]])
            else:
                infos = [{} for _ in range(nb_virtual)]
            assert (
                self.env is not None
            ), "You must initialize HerReplayBuffer with a VecEnv so it can compute rewards for virtual transitions"
            virtual_rewards = self.env.env_method(
                "compute_reward", next_obs["achieved_goal"][n_real:], new_goals, infos, indices=[0]
            )[0]
            rewards = rewards.copy()
            rewards[n_real:, 0] = np.asarray(virtual_rewards, dtype=np.float32).reshape(-1)
        done = batch["done"]
        if self.handle_timeout_termination:
            done = done * (1 - batch["timeout"])
        to_torch = self.to_torch
        obs_n = self._normalize_obs(obs, env)
        next_n = self._normalize_obs(next_obs, env)
        return DictReplayBufferSamples(
            observations={k: to_torch(v, copy=False) for k, v in obs_n.items()},  # type: ignore[union-attr]
            actions=to_torch(batch["action"], copy=False),
            next_observations={k: to_torch(v, copy=False) for k, v in next_n.items()},  # type: ignore[union-attr]
            dones=to_torch(done.reshape(-1, 1), copy=False),
            rewards=to_torch(self._normalize_reward(rewards, env), copy=False),
        )

    def _goal_column(self) -> np.ndarray:
        """``next_observations["achieved_goal"]`` flat ``(size, ...)``, zero-copy."""
        return self._core._storage_view(self._field_index("next_obs.achieved_goal"))

    def _sample_goals(self, batch_indices: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        """SB3's goal draws (the same ``np.random`` calls), goals read from the core's storage."""
        batch_ep_start = self.ep_start[batch_indices, env_indices]
        batch_ep_length = self.ep_length[batch_indices, env_indices]
        if self.goal_selection_strategy == GoalSelectionStrategy.FINAL:
            transition_indices_in_episode = batch_ep_length - 1
        elif self.goal_selection_strategy == GoalSelectionStrategy.FUTURE:
            current_indices_in_episode = (batch_indices - batch_ep_start) % self.buffer_size
            transition_indices_in_episode = np.random.randint(current_indices_in_episode, batch_ep_length)
        elif self.goal_selection_strategy == GoalSelectionStrategy.EPISODE:
            transition_indices_in_episode = np.random.randint(0, batch_ep_length)
        else:
            raise ValueError(f"Strategy {self.goal_selection_strategy} for sampling goals not supported!")
        transition_indices = (transition_indices_in_episode + batch_ep_start) % self.buffer_size
        return self._goal_column()[transition_indices * self.n_envs + env_indices]

    def _get_real_samples(self, batch_indices: np.ndarray, env_indices: np.ndarray,
                          env: Optional[Any] = None) -> DictReplayBufferSamples:
        """SB3's hook, for code that calls it: the given transitions as stored."""
        return self._to_samples(self._core.get(np.asarray(batch_indices) * self.n_envs + env_indices), env)

    def _get_virtual_samples(self, batch_indices: np.ndarray, env_indices: np.ndarray,
                             env: Optional[Any] = None) -> DictReplayBufferSamples:
        """SB3's hook, for code that calls it: the given transitions relabelled (``sample`` does this in one
        gather)."""
        return _sb3_her.HerReplayBuffer._get_virtual_samples(self, batch_indices, env_indices, env)
