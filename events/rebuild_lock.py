"""What the projector (events/projection.py), the rebuild (events/rebuild.py) and the
rebuild's worker processes (events/rebuild_workers.py) share: the Redis lock with an
owner token that guards the rebuild (and the projector's coalescing gate), and the
errors raised when a rebuild is busy or its namespace is taken away.

A leaf module (it imports no other module of the event core), so the three can depend
on each other one way only: projection -> rebuild -> rebuild_workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import redis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RebuildBusy(Exception):
    """Another rebuild holds the lock."""


class RebuildInterrupted(Exception):
    """The namespace being built was taken away (Redis flushed, or a newer rebuild)."""


@dataclass
class RedisLock:
    """A Redis lock with an owner token (SET NX PX; released/extended only by its owner)."""

    client: redis.Redis
    key: str
    ttl_ms: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True if taken."""
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def extend(self) -> bool:
        """Restart the lock's time to live if this owner still holds it."""
        return bool(self.client.eval(_EXTEND, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> None:
        """Delete the lock if this owner still holds it (no-op otherwise)."""
        self.client.eval(_RELEASE, 1, self.key, self.token)
