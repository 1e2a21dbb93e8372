"""cpprb's ``HindsightReplayBuffer`` (Andrychowicz et al. 2017) on this package's ``ReplayBuffer`` and
``PrioritizedReplayBuffer``: an episode is held aside until ``on_episode_end(goal)``, then stored with the goal
it was played for and again with goals relabelled by the chosen strategy."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np

from ._buffer import ReplayBuffer
from ._prioritized import PrioritizedReplayBuffer

_STRATEGIES = ("future", "episode", "random", "final")


class HindsightReplayBuffer:
    """Hindsight Experience Replay with cpprb's API.

    Args:
        size: capacity of the main buffer (every stored copy of a transition takes a slot).
        env_dict: the values ``add`` takes; the main buffer adds ``rew`` and ``goal``.
        max_episode_len: the most transitions one episode may add (``ValueError`` beyond).
        reward_func: ``reward_func(next_state, action, goal) -> rew`` over a whole episode's arrays.
        goal_func: maps states to goals (identity by default).
        goal_shape: shape of a goal (that of ``state`` by default); its dtype is ``state``'s.
        state, action, next_state: the env_dict names of those values.
        strategy: ``"future"`` (goals from later in the episode), ``"episode"`` (from anywhere in it),
            ``"final"`` (its last state; one extra copy) or ``"random"`` (from anywhere in the buffer).
        additional_goals: relabelled copies per transition (1 for ``"final"``).
        prioritized: a ``PrioritizedReplayBuffer`` main buffer (default) or a ``ReplayBuffer``.
        **kwargs: passed to the main buffer (``alpha``, ``eps``, ``next_of``, ...).
    """

    def __init__(self, size: int, env_dict: Dict[str, Dict[str, Any]], max_episode_len: int,
                 reward_func: Callable[..., Any], *, goal_func: Optional[Callable[[Any], Any]] = None,
                 goal_shape: Optional[Iterable[int]] = None, state: str = "obs", action: str = "act",
                 next_state: str = "next_obs", strategy: str = "future", additional_goals: int = 4,
                 prioritized: bool = True, **kwargs: Any) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"Unknown Strategy: {strategy}. Known Strategies: {list(_STRATEGIES)}")
        self.max_episode_len = max_episode_len
        self.reward_func = reward_func
        self.goal_func = goal_func or (lambda s: s)
        self.state, self.action, self.next_state = state, action, next_state
        self.strategy = strategy
        self.additional_goals = 1 if strategy == "final" else additional_goals
        self.prioritized = prioritized
        goal_def = dict(env_dict[state])
        if goal_shape:
            goal_def["shape"] = goal_shape
        self.goal_shape = np.array(goal_def.get("shape", 1), ndmin=1)
        cls = PrioritizedReplayBuffer if prioritized else ReplayBuffer
        self.rb = cls(size, {**env_dict, "rew": {}, "goal": goal_def}, **kwargs)
        self.episode_rb = ReplayBuffer(max_episode_len, env_dict)  # the episode in progress
        self.rng = np.random.default_rng()

    def add(self, **kwargs: Any) -> None:
        """Add transitions to the episode in progress (``ValueError`` past ``max_episode_len``)."""
        if self.episode_rb.get_stored_size() >= self.max_episode_len:
            raise ValueError("Exceed Max Episode Length")
        self.episode_rb.add(**kwargs)

    def sample(self, batch_size: int, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Sample the main buffer (``beta=`` for prioritized)."""
        return self.rb.sample(batch_size, **kwargs)

    def _store(self, episode: Dict[str, np.ndarray], goal: Any) -> None:
        rew = self.reward_func(episode[self.next_state], episode[self.action], goal)
        self.rb.add(**episode, rew=rew, goal=goal)

    def on_episode_end(self, goal: Any) -> None:
        """Store the episode with ``goal`` and with the strategy's relabelled goals, then start a new one."""
        n = self.episode_rb.get_stored_size()
        if n == 0:
            return
        episode = self.episode_rb.get_all_transitions()
        nxt = episode[self.next_state]
        self._store(episode, np.broadcast_to(np.asarray(goal), (len(episode[self.state]), *self.goal_shape)))
        k = self.additional_goals
        if self.strategy == "future":
            picks = np.zeros((k, n), dtype=np.int64)
            for i in range(n):  # a later (or the same) step of the episode for each transition and copy
                picks[:, i] = self.rng.integers(low=i, high=n, size=k)
            for p in picks:
                self._store(episode, self.goal_func(nxt[p]))
        elif self.strategy == "episode":
            for p in self.rng.integers(low=0, high=n, size=(k, n)):
                self._store(episode, self.goal_func(nxt[p]))
        elif self.strategy == "final":
            self._store(episode, self.goal_func(np.broadcast_to(nxt[-1], nxt.shape)))
        else:  # "random": next states drawn uniformly from the whole main buffer, this episode included
            slots = self.rng.integers(low=0, high=self.rb.get_stored_size(), size=k * n)
            goals = self.goal_func(self.rb._encode_sample(slots)[self.next_state])
            for g in goals.reshape((k, n, *goals.shape[1:])):
                self._store(episode, g)
        self.episode_rb.clear()
        self.rb.on_episode_end()

    def clear(self) -> None:
        self.rb.clear()
        self.episode_rb.clear()

    def get_stored_size(self) -> int:
        return self.rb.get_stored_size()

    def get_buffer_size(self) -> int:
        return self.rb.get_buffer_size()

    def get_all_transitions(self, shuffle: bool = False) -> Dict[str, np.ndarray]:
        return self.rb.get_all_transitions(shuffle)

    def update_priorities(self, indexes: Any, priorities: Any) -> None:
        if not self.prioritized:
            raise ValueError("Buffer is constructed without PER")
        self.rb.update_priorities(indexes, priorities)

    def get_max_priority(self) -> float:
        if not self.prioritized:
            raise ValueError("Buffer is constructed without PER")
        return self.rb.get_max_priority()
