"""The projector: follows the log from a checkpoint into the Redis read model; compares
two namespaces. Rebuilding from scratch into a fresh namespace is :mod:`oauthledger.events.rebuild`.

Consistency rules implemented here (docs/design.md, "Consistency rules"):

- The log is the truth. A namespace without a checkpoint (Redis flushed or
  restarted) is never projected "from 0" into a half-empty keyspace — front ends keep
  writing their own states into it, so it would look complete while missing everything
  else. Instead one rebuild (guarded by a Redis lock) replays the whole log into a fresh
  namespace and switches ``<prefix>:active`` atomically.
- Idempotent projection: each step is :func:`oauthledger.events.catchup.project_into`,
  which folds the *full* streams a batch touches and writes them version-guarded with
  the checkpoint.

Imports go one way: this module -> :mod:`oauthledger.events.rebuild` ->
:mod:`oauthledger.events.rebuild_workers`; what they share (the lock, the rebuild errors,
the projection step) lives in :mod:`oauthledger.events.rebuild_lock` and
:mod:`oauthledger.events.catchup`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events.catchup import project_into
from oauthledger.events.expiry_index import expiry_entries
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild
from oauthledger.events.rebuild_lock import RebuildBusy, RebuildInterrupted, RedisLock
from oauthledger.events.store import EventStore


@dataclass(frozen=True)
class ProjectResult:
    """What one :func:`project_pending` call did."""

    namespace: str
    start: int | None  # checkpoint before (None: there was none)
    checkpoint: int | None  # checkpoint after
    events: int  # events read from the log
    applied: int  # entity states that were newer than Redis held
    rebuilt: bool = False  # the checkpoint was missing and a rebuild ran
    rebuild_running: bool = False  # the checkpoint was missing, another process rebuilds

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Celery task results)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Difference:
    """One key whose content differs between two namespaces (relative key name)."""

    key: str
    a: Any
    b: Any


# -- projecting ------------------------------------------------------------------------


def project_pending(
    store: EventStore, read_model: ReadModel, batch_size: int = 1000,
    rebuild_if_missing: bool = True, on_batch: Callable[[], object] | None = None,
) -> ProjectResult:
    """Project the log from the live namespace's checkpoint to the head.

    If the live namespace has no checkpoint, runs a rebuild instead (only one at a time:
    when another process holds the rebuild lock this returns with
    ``rebuild_running=True`` and that rebuild's final catch-up covers the events)."""
    for _ in range(3):  # a rebuild may switch the namespace under us; retry on the new one
        ns = read_model.namespace()
        start = read_model.checkpoint(ns)
        if start is None:
            if not rebuild_if_missing:
                return ProjectResult(ns, None, None, 0, 0)
            try:
                result = rebuild(store, read_model)
            except RebuildBusy:
                return ProjectResult(ns, None, None, 0, 0, rebuild_running=True)
            return ProjectResult(
                result.namespace, None, result.checkpoint, result.events, result.entities,
                rebuilt=True,
            )
        try:
            events, applied, last = project_into(store, read_model, ns, start, batch_size,
                                                 on_batch=on_batch)
        except RebuildInterrupted:
            continue
        return ProjectResult(ns, start, last, events, applied)
    return ProjectResult(read_model.namespace(), None, None, 0, 0, rebuild_running=True)


# -- coalesced wake-ups ------------------------------------------------------------------

# Front ends wake the projector once per commit. Running one projection per wake-up
# means hundreds of tasks per second, each loading streams and racing the others for the
# same events: the queue, not the work, sets the lag. Instead one projector at a time
# holds <prefix>:proj-lock and loops while wake-ups keep arriving; a wake-up that finds
# it busy only sets <prefix>:proj-pending (one Redis call) and returns. Correctness does
# not depend on the lock (projection is idempotent and version-guarded, docs/design.md,
# "Idempotent projection"): if a holder stalls past the TTL, a second projector simply
# runs too.
PROJECTOR_LOCK_TTL_MS = 3000
# KEYS: lock, pending, recheck. ARGV: owner, ttl_ms.
# -1: acquired. -2: busy, flagged. >= 0: busy, flagged, and this caller should schedule
# one re-check after that many ms (in case the holder died without seeing the flag).
_GATE_ENTER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
redis.call('SET', KEYS[2], '1')
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then pttl = 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', pttl + 100) then return pttl end
return -2
"""
# KEYS: lock, pending. ARGV: owner, ttl_ms. 1: more work was flagged, keep looping (the
# flag is consumed, the lock extended). 0: released (or no longer ours).
_GATE_LEAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


@dataclass(frozen=True)
class CoalescedResult:
    """What :func:`project_coalesced` did."""

    ran: bool  # this caller projected (it held the projector lock)
    rounds: int  # projection rounds it ran (one per flagged wake-up, at least one)
    events: int  # events projected in all rounds
    checkpoint: int | None
    recheck_ms: int | None  # busy: schedule a re-check after this many ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Celery task results)."""
        return dict(self.__dict__)


def project_coalesced(
    store: EventStore, read_model: ReadModel, batch_size: int = 1000,
    ttl_ms: int = PROJECTOR_LOCK_TTL_MS, max_rounds: int = 100_000,
) -> CoalescedResult:
    """Project pending events unless another projector is looping already, in which
    case flag that more work arrived and return at once. The holder loops until a round
    ends with no wake-up flagged (at most ``max_rounds``, then the next wake-up or the
    catch-up continues)."""
    client = read_model.redis
    keys = read_model.keys
    owner = uuid.uuid4().hex
    gate = [keys.projector_lock, keys.projector_pending]
    got = int(client.eval(_GATE_ENTER, 3, *gate, keys.projector_recheck, owner, ttl_ms))
    if got != -1:
        return CoalescedResult(False, 0, 0, None, got if got >= 0 else None)
    lock = RedisLock(client, keys.projector_lock, ttl_ms, token=owner)
    rounds = events = 0
    checkpoint = None
    try:
        while True:
            result = project_pending(store, read_model, batch_size, on_batch=lock.extend)
            rounds += 1
            events += result.events
            checkpoint = result.checkpoint
            if rounds >= max_rounds or not int(client.eval(_GATE_LEAVE, 2, *gate, owner,
                                                           ttl_ms)):
                break
    finally:
        lock.release()  # no-op when the leave script released it already
    return CoalescedResult(True, rounds, events, checkpoint, None)


# -- inspecting ----------------------------------------------------------------------------


def snapshot(client: redis.Redis, ns: str, include_checkpoint: bool = False
             ) -> dict[str, Any]:
    """Every key of namespace ``ns`` (name relative to ``ns``) with its content:
    strings as text (bytes if not UTF-8: packed tokens), sorted sets as sorted
    (member, score) lists, sets as sorted lists. The access-token expiry buckets and
    their index appear as one logical entry ``expiry``: sorted (token, expiry ms) pairs,
    since the bucket layout depends on the order of writes (splits), the content not."""
    out: dict[str, Any] = {}
    bucket_prefix = KeyLayout.expiry_bucket_prefix(ns)
    index_key = KeyLayout.expiry(ns)
    names = []
    for raw in client.scan_iter(KeyLayout.namespace_pattern(ns), count=2000):
        name = raw.decode() if isinstance(raw, bytes) else raw
        if not name.startswith(bucket_prefix) and name != index_key:
            names.append(name)
    strip = len(ns) + 1
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    types = [t.decode() if isinstance(t, bytes) else t for t in pipe.execute()]
    pipe = client.pipeline(transaction=False)
    kept = []
    for name, typ in zip(names, types, strict=True):
        rel = name[strip:]
        if rel == "checkpoint" and not include_checkpoint:
            continue
        if typ == "string":
            pipe.get(name)
        elif typ == "zset":
            pipe.zrange(name, 0, -1, withscores=True)
        elif typ == "set":
            pipe.smembers(name)
        else:
            continue  # expired between SCAN and TYPE
        kept.append((rel, typ))
    for (rel, typ), value in zip(kept, pipe.execute(), strict=True):
        if typ == "string":
            try:
                out[rel] = value.decode("utf-8")
            except UnicodeDecodeError:
                out[rel] = value
        elif typ == "zset":
            out[rel] = sorted((m.decode(), s) for m, s in value)
        else:
            out[rel] = sorted(m.decode() for m in value)
    entries = expiry_entries(client, ns)
    if entries:
        out["expiry"] = entries
    return out


def compare(read_model: ReadModel, ns_a: str, ns_b: str, client: redis.Redis | None = None
            ) -> list[Difference]:
    """Keys that differ between namespaces ``ns_a`` and ``ns_b`` (checkpoints aside;
    missing on one side shows as None). ``client`` reads ``ns_b`` from another Redis."""
    a = snapshot(read_model.redis, ns_a)
    b = snapshot(client or read_model.redis, ns_b)
    return [
        Difference(key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


@dataclass(frozen=True)
class Status:
    """Where the projection stands."""

    head: int
    namespace: str
    checkpoint: int | None
    building: str | None
    lag_events: int | None
    lag_seconds: float | None  # now - time of the oldest unprojected event
    rebuild_running: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


def status(store: EventStore, read_model: ReadModel, now: float | None = None) -> Status:
    """Head position, live namespace, checkpoint and lag."""
    now = time.time() if now is None else now
    head = store.head()
    ns = read_model.namespace()
    cp = read_model.checkpoint(ns)
    lag_events = lag_seconds = None
    if cp is not None:
        lag_events = max(0, head - cp)
        lag_seconds = 0.0
        if lag_events:
            oldest = next(iter(store.read_all(cp, limit=1)), None)
            if oldest is not None:
                lag_seconds = max(0.0, now - oldest.time)
    return Status(
        head=head, namespace=ns, checkpoint=cp, building=read_model.building_namespace(),
        lag_events=lag_events, lag_seconds=lag_seconds,
        rebuild_running=bool(read_model.redis.exists(read_model.keys.rebuild_lock)),
    )
