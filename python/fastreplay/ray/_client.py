"""Clients of the sharded replay service: ShardedReplay (creates the shards; the learner's side) and ReplayWriter
(an actor process's side). See docs/distributed.md."""
from __future__ import annotations

import collections
import os
import time
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from .._batch import Batch
from ..rate_limiter import RateLimiter
from ._shard import ReplayShard


class ShardLost(RuntimeError):
    """A shard actor died (killed, crashed, its node lost). ``shard`` is its number. The learner's ``sample`` /
    ``update_priorities`` and a writer's ``add`` / ``flush`` raise it as soon as Ray reports the death (well under
    a second for a killed process on a live node, tests/test_ray.py); ``ShardedReplay.restart_shard(shard)`` starts it again from its last checkpoint."""

    def __init__(self, shard: int, cause: Any = None) -> None:
        super().__init__(f"fastreplay.ray: shard {shard} is lost ({type(cause).__name__ if cause else 'dead'}); "
                         f"ShardedReplay.restart_shard({shard}) restarts it from its last checkpoint (rows added "
                         "since that checkpoint are lost)")
        self.shard = shard
        self.cause = cause


def _plain_fields(fields: Mapping[str, Any]) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    out = {}
    for name, spec in fields.items():
        shape, dtype = spec
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        out[str(name)] = (shape, np.dtype(dtype).str)
    return out


def _get(refs: Any, shards: Sequence[int], timeout: Optional[float]) -> Any:
    """ray.get with actor deaths turned into ShardLost (naming the shard of the first failed reference)."""
    single = not isinstance(refs, list)
    lst = [refs] if single else refs
    out = []
    for ref, shard in zip(lst, shards):
        try:
            out.append(ray.get(ref, timeout=timeout))
        except RayActorError as e:
            raise ShardLost(shard, e) from e
        except GetTimeoutError:
            raise TimeoutError(f"fastreplay.ray: shard {shard} did not answer within {timeout} s (alive, but busy or "
                               "blocked by its rate limiter)") from None
    return out[0] if single else out


class ShardedReplay:
    """A replay service of ``num_shards`` Ray actors (one fastreplay buffer each) and the learner's client.

    Call on the learner's process after ``ray.init``. ``capacity`` is the total (split evenly; each shard holds
    ``capacity // num_shards`` slots). Writers (:meth:`writer`) send batches of rows to shards round-robin.
    The learner samples with :meth:`sample` / :meth:`batches` (with ``prefetch`` batches in flight): each batch
    draws per-shard counts ~ Multinomial(B, m_s / sum m) from the shards' priority masses m_s (their stored
    sizes for uniform replay), so each row is drawn with probability ``leaf_i / sum of all leaves``, and the
    importance weights ``(min_leaf / leaf_i) ** beta`` use the global minimum: the batch is distributed as one
    buffer's would be. Batch indices are global, ``shard * shard_capacity + slot``; :meth:`update_priorities`
    routes them back to their shards asynchronously (riding along with the next sample request to each shard),
    with the stale-index guard (generations).

    Args:
        num_shards, capacity, fields: topology, total slots, ``{name: (shape, dtype)}``.
        prioritized: prioritized (default) or uniform shards.
        alpha, eps, max_priority: prioritized buffer options. Other buffer options go in ``buffer_options``;
            episode options there (``num_envs``, ``frame_stack``, ``n_step``, ``gamma``, ...; docs/episodes.md)
            make every shard episodic: each then serves one writer (``writer(shards=[i])``), which sends whole
            steps of its ``num_envs`` lanes in order, one send in flight, and batches carry n-step returns,
            discounts and frame stacks as a local episodic buffer's do.
        rate_limiter: a :class:`fastreplay.RateLimiter` used as a template: each shard gets one with the same
            configuration, counting the rows it receives and serves (configure it per shard).
        checkpoint_dir: each shard checkpoints to ``checkpoint_dir/shard-<i>.frb`` (every ``checkpoint_every``
            seconds, and on :meth:`checkpoint`) and resumes from it when restarted.
        max_concurrency: threads per shard actor (add and sample run concurrently; samples waiting for the rate
            limiter hold one each, so keep it above the learner's ``prefetch + 2``).
        detect_timeout: seconds a call waits for a shard's reply before raising ``TimeoutError`` (None: no limit).
            A dead shard is reported by Ray itself (``RayActorError``, turned into :class:`ShardLost`) as soon as its
            process is gone, whatever this is.
        backend: ``"fastreplay"`` or ``"reference"`` (pure-Python shards, one thread each: the baseline).
        actor_options: extra ``ray.remote`` options of the shards (e.g. ``resources``, a scheduling strategy).
    """

    def __init__(self, num_shards: int, capacity: int, fields: Mapping[str, Any], *, prioritized: bool = True,
                 alpha: float = 0.6, eps: float = 1e-6, max_priority: str = "all_time", seed: Optional[int] = None,
                 buffer_options: Optional[Dict[str, Any]] = None, rate_limiter: Optional[RateLimiter] = None,
                 checkpoint_dir: Optional[str] = None, checkpoint_every: Optional[float] = None,
                 max_concurrency: int = 8, detect_timeout: Optional[float] = None, backend: str = "fastreplay",
                 actor_options: Optional[Dict[str, Any]] = None) -> None:
        where = "ShardedReplay"
        if not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"{where}: num_shards must be an int >= 1, got {num_shards!r}")
        if not isinstance(capacity, int) or capacity < num_shards:
            raise ValueError(f"{where}: capacity must be an int >= num_shards, got {capacity!r}")
        self.num_shards = num_shards
        self.shard_capacity = capacity // num_shards
        self.fields = _plain_fields(fields)
        self.prioritized = prioritized
        self.detect_timeout = detect_timeout
        options = dict(buffer_options or {})
        #: Episode options (num_envs, frame_stack, n_step, ...): every shard is episodic and serves one writer.
        self.episodic = any(options.get(k) is not None for k in (
            "num_envs", "frame_stack", "n_step", "next_obs", "stacked_input", "stack_padding", "gamma", "autoreset"))
        if self.episodic and "num_envs" not in options:
            options["num_envs"] = 1
        if prioritized:
            options.update(alpha=alpha, eps=eps, max_priority=max_priority)
        self._shard_args = []
        for i in range(num_shards):
            path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), f"shard-{i}.frb")
            self._shard_args.append(dict(
                shard_id=i, capacity=self.shard_capacity, fields=self.fields, prioritized=prioritized,
                buffer_options=options, limiter=None if rate_limiter is None else _fresh_state(rate_limiter),
                checkpoint_path=path, checkpoint_every=checkpoint_every, backend=backend,
                seed=None if seed is None else seed + 7919 * i))
        conc = 1 if backend == "reference" else max_concurrency
        self._remote_cls = ray.remote(num_cpus=0, max_concurrency=conc, **(actor_options or {}))(ReplayShard)
        self.shards = [self._remote_cls.remote(**a) for a in self._shard_args]
        self._stats = _get([s.stats.remote() for s in self.shards], range(num_shards), detect_timeout)
        self._rng = np.random.default_rng(seed)
        self._pending: Deque[Any] = collections.deque()
        self._queued: List[List[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]] = [[] for _ in range(num_shards)]
        self._skipped = 0

    # -- writers -------------------------------------------------------------------------------------------
    def writer(self, batch_rows: int = 50, max_in_flight: int = 2, first_shard: int = 0,
               shards: Optional[Sequence[int]] = None) -> "ReplayWriter":
        """A :class:`ReplayWriter` for an actor process (picklable: pass it to a Ray task or actor). It sends to
        the shards in turn starting at ``first_shard``, or only to ``shards`` (e.g. those on its own node)."""
        ids = list(range(self.num_shards)) if shards is None else [int(s) for s in shards]
        if not ids or min(ids) < 0 or max(ids) >= self.num_shards:
            raise ValueError(f"ShardedReplay.writer: shards must be a non-empty subset of 0..{self.num_shards - 1}, "
                             f"got {shards!r}")
        if self.episodic:  # steps must reach one shard in order: one shard, one send in flight
            if len(ids) != 1:
                raise ValueError("ShardedReplay.writer: with episode options each writer writes to one shard of its "
                                 f"own: pass shards=[i] (got {shards!r})")
            max_in_flight = 0
        return ReplayWriter([self.shards[i] for i in ids], self.fields, batch_rows, max_in_flight, first_shard,
                            self.detect_timeout, ids)

    # -- learner -------------------------------------------------------------------------------------------
    def stats(self) -> List[Dict[str, Any]]:
        """Every shard's stats (size, total_added, mass, min_leaf, limiter counters), fetched now."""
        self._stats = _get([s.stats.remote() for s in self.shards], range(self.num_shards), self.detect_timeout)
        return self._stats

    def __len__(self) -> int:
        return int(sum(s["size"] for s in self.stats()))

    def _request(self, batch_size: int, beta: float, timeout: Optional[float]) -> List[Any]:
        mass = np.array([max(s["mass"], 0.0) for s in self._stats])
        if mass.sum() <= 0:  # nothing known yet: ask everyone for stats, then decide
            self.stats()
            mass = np.array([max(s["mass"], 0.0) for s in self._stats])
            if mass.sum() <= 0:
                raise ValueError("ShardedReplay.sample: every shard is empty")
        counts = self._rng.multinomial(batch_size, mass / mass.sum())
        return [s.sample.remote(int(c), beta, timeout, self._take_updates(i))
                for i, (s, c) in enumerate(zip(self.shards, counts))]

    def _take_updates(self, shard: int) -> Optional[tuple]:
        """The priority updates queued for ``shard``, as one (indices, priorities, generations) triple (None if
        none); later rows come later, so the last update of a slot wins as in one call."""
        q = self._queued[shard]
        if not q:
            return None
        self._queued[shard] = []
        idx = np.concatenate([u[0] for u in q])
        prio = np.concatenate([u[1] for u in q])
        gens = None if any(u[2] is None for u in q) else np.concatenate([u[2] for u in q])
        if gens is None and any(u[2] is not None for u in q):  # mixed: send separately to keep the guard
            for u in q:
                self._skipped += _get(self.shards[shard].update_priorities.remote(*u), [shard], self.detect_timeout)
            return None
        return idx, prio, gens

    def sample(self, batch_size: int, beta: float = 0.4, timeout: Optional[float] = None) -> Batch:
        """One batch of ``batch_size`` rows across the shards (no prefetch). Fields as the buffer's batches;
        ``indices`` are global (int64), ``generations`` and ``weights`` (float32, prioritized) as for one buffer,
        and ``batch.shards`` (int64[B]) says which shard each row came from. Columns of several shards are
        concatenated (one copy); see :meth:`batches` for the zero-copy parts."""
        return self._assemble(self._request(batch_size, beta, timeout), beta, True)

    def batches(self, batch_size: int, beta: float = 0.4, prefetch: int = 2, concat: bool = True,
                timeout: Optional[float] = None):
        """Endless iterator of batches with ``prefetch`` more requested ahead (their replies travel while the
        learner computes). ``concat=False`` yields lists of per-shard :class:`Batch` parts whose columns are Ray's
        zero-copy read-only views (no learner-side copy); their weights are the global ones. ``beta`` is read
        from ``self.beta`` at each request when set."""
        q: Deque[List[Any]] = collections.deque()
        while True:
            b = getattr(self, "beta", None)
            beta_now = beta if b is None else b
            while len(q) <= prefetch:
                q.append((self._request(batch_size, beta_now, timeout), beta_now))
            refs, used = q.popleft()
            yield self._assemble(refs, used, concat)

    def _assemble(self, refs: List[Any], beta: float, concat: bool) -> Any:
        replies = _get(refs, range(self.num_shards), self.detect_timeout)
        self._stats = [r["stats"] for r in replies]
        self._skipped += sum(r["skipped"] for r in replies)
        parts = []
        min_leaf = min((s["min_leaf"] for s in self._stats if s["size"] > 0), default=1.0)
        for shard, r in enumerate(replies):
            if r["columns"] is None:
                continue
            b = Batch(r["columns"])
            b.indices = r["indices"].astype(np.int64) + shard * self.shard_capacity
            if self.prioritized:
                leaves = r["leaves"]
                ratio = np.minimum(min_leaf / leaves, 1.0)
                b.weights = np.maximum(ratio.astype(np.float32) ** np.float32(beta),
                                       np.float32(np.finfo(np.float32).smallest_subnormal)).astype(np.float32)
                b.generations = r["generations"]
            else:
                b.generations = None
            parts.append((shard, b))
        if not concat:
            return [_ShardBatch.of(b, np.full(b.batch_size, s, np.int64)) for s, b in parts]
        if len(parts) == 1:
            shard, out = parts[0]
            shards = np.full(out.batch_size, shard, np.int64)
        else:
            out = Batch({k: np.concatenate([b[k] for _, b in parts]) for k in parts[0][1]})
            out.indices = np.concatenate([b.indices for _, b in parts])
            if self.prioritized:
                out.weights = np.concatenate([b.weights for _, b in parts])
                out.generations = np.concatenate([b.generations for _, b in parts])
            else:
                out.generations = None
            shards = np.concatenate([np.full(b.batch_size, s, np.int64) for s, b in parts])
        return _ShardBatch.of(out, shards)

    def update_priorities(self, indices: Any, priorities: Any, generations: Any = None) -> None:
        """Queue new priorities for the shards holding ``indices`` (global; a Batch gives its indices and
        generations). Nothing waits: each shard's queued updates ride along with the learner's next sample request
        to it (one Ray call per shard per batch, not two), so they are applied before that shard samples again;
        :meth:`wait_updates` sends what is still queued and waits. Rows overwritten since they were sampled are
        skipped by their shard (stale-index guard). Checked here: shapes and index range (ValueError/IndexError)."""
        if isinstance(indices, Batch):
            if generations is None:
                generations = indices.generations
            indices = indices.indices
        idx = np.asarray(_numpy(indices), np.int64).reshape(-1)
        prio = np.asarray(_numpy(priorities), np.float64).reshape(-1)
        if prio.shape != idx.shape:
            raise ValueError(f"ShardedReplay.update_priorities: {prio.shape[0]} priorities for {idx.shape[0]} indices")
        gens = None if generations is None else np.asarray(_numpy(generations), np.uint64).reshape(-1)
        if gens is not None and gens.shape != idx.shape:
            raise ValueError(f"ShardedReplay.update_priorities: {gens.shape[0]} generations for {idx.shape[0]} indices")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_shards * self.shard_capacity):
            raise IndexError(f"ShardedReplay.update_priorities: indices must lie in [0, "
                             f"{self.num_shards * self.shard_capacity}), got {idx.min()}..{idx.max()}")
        if not np.all(np.isfinite(prio)) or (prio < 0).any():
            raise ValueError("ShardedReplay.update_priorities: priorities must be finite and >= 0")
        shard_of = idx // self.shard_capacity
        for s in np.unique(shard_of):
            m = shard_of == s
            self._queued[int(s)].append((idx[m] - s * self.shard_capacity, prio[m], None if gens is None else gens[m]))

    def wait_updates(self) -> int:
        """Send every queued priority update now and wait for them; returns the rows skipped as stale since the
        last call (those sent now, and those that rode along with sample requests answered since)."""
        refs, shards = [], []
        for s in range(self.num_shards):
            u = self._take_updates(s)
            if u is not None:
                refs.append(self.shards[s].update_priorities.remote(*u))
                shards.append(s)
        skipped = self._skipped + sum(_get(refs, shards, self.detect_timeout))
        self._skipped = 0
        return skipped

    # -- faults --------------------------------------------------------------------------------------------
    def checkpoint(self) -> List[str]:
        """Checkpoint every shard now (needs ``checkpoint_dir``); returns the paths."""
        return _get([s.checkpoint.remote() for s in self.shards], range(self.num_shards), self.detect_timeout)

    def restart_shard(self, shard: int) -> Dict[str, Any]:
        """Start shard ``shard`` again (after :class:`ShardLost`): from its last checkpoint if there is one, else
        empty. Returns its stats. Writers made before the restart hold the old handle: make new ones with
        :meth:`writer` (or call ``writer.set_shards(replay.shards)``)."""
        try:
            ray.kill(self.shards[shard], no_restart=True)
        except Exception:
            pass
        self.shards[shard] = self._remote_cls.remote(**self._shard_args[shard])
        st = _get(self.shards[shard].stats.remote(), [shard], self.detect_timeout)
        self._stats[shard] = st
        self._queued[shard] = []  # updates for slots of the old incarnation past its checkpoint are moot
        return st

    def close(self) -> None:
        """Stop the shards (their actors are killed; checkpoints stay on disk)."""
        for s in self.shards:
            try:
                ray.kill(s, no_restart=True)
            except Exception:
                pass


class _ShardBatch(Batch):
    """A Batch with ``shards`` (int64[B]): the shard of each row."""

    __slots__ = ("shards",)

    @classmethod
    def of(cls, b: Batch, shards: np.ndarray) -> "_ShardBatch":
        out = cls(b)
        out.indices, out.weights, out.generations = b.indices, b.weights, b.generations
        out.shards = shards
        return out


def _numpy(x: Any) -> Any:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return x


def _fresh_state(rl: RateLimiter) -> Dict[str, Any]:
    st = rl.state()
    st["inserts"] = 0
    st["samples"] = 0
    return st


class ReplayWriter:
    """An actor process's side: buffers rows, sends ``batch_rows`` at a time to the shards in turn, without
    waiting for the reply; at most ``max_in_flight`` sends are outstanding (older ones are awaited, and a lost
    shard raises :class:`ShardLost`). ``max_in_flight=0`` (episodic shards): one send at a time, each stored
    before the next leaves, so steps arrive in order (still without waiting for the last one). Picklable (it holds
    actor handles and plain data).

    A shard whose rate limiter holds inserts back refuses a send instead of blocking; the writer resends it to
    the next shard (after a short pause once every shard has refused it), so the writer blocks only while every
    shard is ahead of its sampler, and a shard that a waiting sample needs rows for always receives them.

    ``add(priority=None, **row)`` takes one row (arrays of the field's shape) or several (a leading dimension,
    for every field); ``priority`` (float or float[n]): the actor-computed initial priority (Ape-X); without one
    rows get the shard's maximum priority. :meth:`flush` sends what is buffered and waits for every send.
    """

    def __init__(self, shards: List[Any], fields: Dict[str, Any], batch_rows: int, max_in_flight: int,
                 first_shard: int, detect_timeout: Optional[float], shard_ids: Optional[List[int]] = None) -> None:
        if batch_rows < 1 or max_in_flight < 0:
            raise ValueError(f"ReplayWriter: batch_rows must be >= 1 and max_in_flight >= 0, got {batch_rows}, "
                             f"{max_in_flight}")
        self.shards = list(shards)
        self.shard_ids = list(range(len(self.shards))) if shard_ids is None else list(shard_ids)
        self.fields = fields
        self.batch_rows = batch_rows
        self.max_in_flight = max_in_flight
        self.detect_timeout = detect_timeout
        self._next = first_shard % len(self.shards)
        self.writer_id = os.urandom(8).hex()  # episodic shards accept steps from one writer only
        self._reset()

    def __getstate__(self) -> Dict[str, Any]:
        return {"shards": self.shards, "shard_ids": self.shard_ids, "fields": self.fields, "writer_id": self.writer_id, "batch_rows": self.batch_rows,
                "max_in_flight": self.max_in_flight, "detect_timeout": self.detect_timeout, "_next": self._next}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _reset(self) -> None:
        self._cols: Dict[str, List[np.ndarray]] = {k: [] for k in self.fields}
        self._prios: List[np.ndarray] = []
        self._has_prio: Optional[bool] = None
        self._rows = 0
        self._inflight: Deque[Tuple[int, Any, Any, Any, int]] = collections.deque()
        self.rows_sent = 0
        self.refused = 0

    def set_shards(self, shards: List[Any]) -> None:
        """Use new shard handles (``replay.shards`` after ``ShardedReplay.restart_shard``)."""
        self.shards = [shards[i] for i in self.shard_ids]
        self._inflight.clear()

    def add(self, priority: Any = None, **row: Any) -> None:
        missing = set(self.fields) - set(row)
        extra = set(row) - set(self.fields)
        if missing or extra:
            raise ValueError(f"ReplayWriter.add: fields must be exactly {sorted(self.fields)}; missing "
                             f"{sorted(missing)}, unknown {sorted(extra)}")
        n = None
        for k, (shape, dtype) in self.fields.items():
            v = np.asarray(row[k], dtype=dtype)
            if v.shape == tuple(shape):
                v = v[None]
            elif v.shape[1:] != tuple(shape):
                raise ValueError(f"ReplayWriter.add: field {k!r} expects rows of shape {tuple(shape)}, got "
                                 f"{v.shape}")
            if n is None:
                n = v.shape[0]
            elif v.shape[0] != n:
                raise ValueError(f"ReplayWriter.add: field {k!r} has {v.shape[0]} rows, others {n}")
            row[k] = v
        if (priority is not None) != bool(self._has_prio) and self._has_prio is not None:
            raise ValueError("ReplayWriter.add: give a priority with every add or with none (within one batch)")
        self._has_prio = priority is not None
        for k in self.fields:
            self._cols[k].append(row[k])
        if priority is not None:
            self._prios.append(np.broadcast_to(np.asarray(priority, np.float64), (n,)))
        self._rows += n
        if self._rows >= self.batch_rows:
            self._send()

    def _send(self) -> None:
        if self._rows == 0:
            return
        cols = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self._cols.items()}
        prios = np.concatenate(self._prios) if self._has_prio else None
        if self.max_in_flight == 0:  # ordered sends (episodic shards): the previous one is stored first
            while self._inflight:
                self._settle_oldest()
        self._submit(cols, prios, 0)
        self.rows_sent += self._rows
        self._cols = {k: [] for k in self.fields}
        self._prios = []
        self._has_prio = None
        self._rows = 0
        while len(self._inflight) > max(self.max_in_flight, 1):
            self._settle_oldest()

    def _submit(self, cols: Dict[str, np.ndarray], prios: Optional[np.ndarray], refusals: int) -> None:
        shard = self._next
        self._next = (self._next + 1) % len(self.shards)
        ref = self.shards[shard].add.remote(cols, prios, False, None, self.writer_id)
        self._inflight.append((self.shard_ids[shard], ref, cols, prios, refusals))

    def _settle_oldest(self) -> None:
        s, ref, cols, prios, refusals = self._inflight.popleft()
        if not _get(ref, [s], self.detect_timeout)["accepted"]:  # rate-limited: try the next shard
            self.refused += 1
            if refusals + 1 >= len(self.shards):
                time.sleep(0.001 * 2 ** min((refusals + 1) // len(self.shards), 4))  # 2 ms .. 16 ms
            self._submit(cols, prios, refusals + 1)

    def flush(self) -> None:
        """Send the buffered rows and wait for every send to be stored."""
        self._send()
        while self._inflight:
            self._settle_oldest()
