"""cpprb's ``SelectiveReplayBuffer``: its legacy fixed-field episode buffer (``obs``, ``act``, ``rew``,
``next_obs``, ``done`` as float64, ``add`` taking them positionally), which can return and delete whole episodes.
The rows live in fastreplay's core; episode starts are kept here."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..buffer import ReplayBuffer as _CoreReplay


def _flat(x: Any) -> np.ndarray:
    return np.ravel(np.array(x, dtype=np.float64, ndmin=1))


class SelectiveReplayBuffer:
    """A buffer of ``episode_len * Nepisodes`` rows that fills up and then stops (rows beyond are dropped, as in
    cpprb); an episode starts after the first ``done`` of an ``add``. ``get_episode(i)`` returns the ``i``-th
    stored episode and ``delete_episode(i)`` removes it, moving the later rows down (cpprb's rules, including that
    deleting the last stored or unfinished episode truncates the buffer to its start)."""

    def __init__(self, episode_len: int, obs_dim: int = 1, act_dim: int = 1, Nepisodes: int = 10, *,
                 rew_dim: int = 1, is_discrete_action: bool = False, obs_shape: Any = None, **kwargs: Any) -> None:
        self.obs_shape = obs_shape
        self.is_discrete_action = is_discrete_action
        self.obs_dim = int(obs_dim) if obs_shape is None else int(np.prod(obs_shape))
        self.act_dim = 1 if is_discrete_action else int(act_dim)
        self.rew_dim = int(rew_dim)
        self.buffer_size = int(episode_len) * int(Nepisodes)
        self._dims = {"obs": self.obs_dim, "act": self.act_dim, "rew": self.rew_dim, "next_obs": self.obs_dim,
                      "done": 1}
        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        self._core = _CoreReplay(self.buffer_size, {k: ((d,), np.float64) for k, d in self._dims.items()},
                                 seed=seed)
        self._next = 0
        self._begins: List[int] = [0]

    def add(self, obs: Any, act: Any, rew: Any, next_obs: Any, done: Any) -> int:
        """Store rows (as many as ``done`` has values) while there is room; return the first index written."""
        values = {"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "done": done}
        d = _flat(done)
        n = min(len(d), self.buffer_size - self._next)
        rows = {}
        for k, v in values.items():
            a = _flat(v)
            if len(a) < len(d) * self._dims[k]:
                raise ValueError(f"SelectiveReplayBuffer.add: {k} has {len(a)} values, {len(d)} rows need "
                                 f"{len(d) * self._dims[k]}")
            rows[k] = a[:n * self._dims[k]].reshape(n, self._dims[k])
        if n:
            self._core.add(**rows)
            ends = np.flatnonzero(d[:n])
            if len(ends):  # cpprb records the first done of an add only
                self._begins.append(self._next + int(ends[0]) + 1)
        first, self._next = self._next, self._next + n
        return first

    def _rows(self, lo: int, hi: int) -> Dict[str, np.ndarray]:
        return dict(self._core.get(np.arange(lo, hi, dtype=np.int64)).items()) if hi > lo else \
            {k: np.zeros((0, d)) for k, d in self._dims.items()}

    def _encode_sample(self, idx: Any) -> Dict[str, np.ndarray]:
        return self._encode(self._core.get(np.array(idx, dtype=np.int64, ndmin=1).ravel()))

    def _encode(self, batch: Any) -> Dict[str, np.ndarray]:
        out = {k: batch[k] for k in self._dims}
        if self.obs_shape is not None:
            shape = (-1, *self.obs_shape)
            out["obs"], out["next_obs"] = out["obs"].reshape(shape), out["next_obs"].reshape(shape)
        if self.is_discrete_action:
            out["act"] = out["act"].astype(np.int64)
        return out

    def sample(self, batch_size: int) -> Dict[str, np.ndarray]:
        """``batch_size`` stored rows drawn uniformly with replacement."""
        return self._encode(self._core.sample(int(batch_size)))

    def get_episode(self, i: int) -> Dict[str, np.ndarray]:
        """The ``i``-th stored episode's rows (empty arrays if there is no such episode)."""
        if i >= self.get_stored_episode_size():
            return {"obs": np.ndarray((0, self.obs_dim)), "act": np.ndarray((0, self.act_dim)),
                    "rew": np.ndarray((0, self.rew_dim)), "next_obs": np.ndarray((0, self.obs_dim)),
                    "done": np.ndarray(0)}
        end = self._begins[i + 1] if i + 1 < len(self._begins) else self._next
        return self._rows(self._begins[i], end)

    def _keep(self, parts: List[Dict[str, np.ndarray]]) -> None:
        """Rewrite the core with ``parts`` (the rows that stay, in order)."""
        rows = {k: np.concatenate([p[k] for p in parts]) for k in self._dims}
        self._core.clear()
        if len(rows["done"]):
            self._core.add(**rows)

    def delete_episode(self, i: int) -> int:
        """Delete the ``i``-th episode; return how many rows went."""
        if i > len(self._begins) - 1:
            return 0
        if i == len(self._begins) - 1:  # the episode in progress: cut back to its start
            old, self._next = self._next, self._begins[-1]
            self._keep([self._rows(0, self._next)])
            return old - self._next
        lo, hi = self._begins[i], self._begins[i + 1]
        if hi == self._next:
            self._next = lo
            self._begins.pop()
            self._keep([self._rows(0, lo)])
            return hi - lo
        self._keep([self._rows(0, lo), self._rows(hi, self._next)])
        size = hi - lo
        self._next -= size
        self._begins[i:-1] = [b - size for b in self._begins[i + 1:]]
        self._begins.pop()
        return size

    def clear(self) -> None:
        self._core.clear()
        self._next = 0
        self._begins = [0]

    def get_stored_size(self) -> int:
        return self._next

    def get_next_index(self) -> int:
        return self._next

    def get_buffer_size(self) -> int:
        return self.buffer_size

    def get_stored_episode_size(self) -> int:
        return len(self._begins) - (1 if self._next == self._begins[-1] else 0)

    def get_obs_dim(self) -> int:
        return self.obs_dim

    def get_obs_shape(self) -> Any:
        return self.obs_shape

    def get_act_dim(self) -> int:
        return self.act_dim

    def get_rew_dim(self) -> int:
        return self.rew_dim
