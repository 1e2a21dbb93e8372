"""Sharded replay on Ray (Ape-X style): ``pip install fastreplay[ray]``; see docs/distributed.md.

- :class:`ShardedReplay`: N shard actors, each a fastreplay buffer (built inside the actor) with an optional
  :class:`fastreplay.RateLimiter`; the learner's client: global prioritized sampling across shards (exact
  probabilities and importance weights of one buffer), prefetch, asynchronous routed priority updates, checkpoints
  and restarts.
- :class:`ReplayWriter`: an actor process's client: batches rows (with optional initial priorities) and sends
  them without blocking, a bounded number in flight.
- :class:`ShardLost`: raised on the learner and the writers when a shard dies.

``import fastreplay`` never imports this package (nor Ray).
"""
from ._client import ReplayWriter, ShardedReplay, ShardLost
from ._shard import ReplayShard

__all__ = ["ReplayShard", "ReplayWriter", "ShardLost", "ShardedReplay"]
