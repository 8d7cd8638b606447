"""The rebuild: replays the whole log into a fresh Redis namespace and switches
``<prefix>:active`` to it atomically (docs/design.md, "The log is the truth": a namespace
without a checkpoint is never projected "from 0";
:func:`oauthledger.events.projection.project_pending` calls this). Imports go one way:
projection -> this module -> rebuild_workers.

Nearly all of the work (reading rows, folding, encoding one value per stream) is Python
CPU, so it is split over processes. The log up to ``H`` (the head when the rebuild
began; every process reads exactly the positions ``<= H``, so the checkpoint ``H`` is
exact) is cut into position ranges, one per process, each read with one sequential
range scan (no row is read twice). A stream belongs to the range holding its first
event: the process of a range folds its own streams, and forwards the rows of streams
that began earlier to the process of the previous range, which folds them after its own
rows (position order per stream is kept). Then each process encodes and writes the
entities it owns. The parent process handles range 0; ranges 1.. run in forked workers
(events/rebuild_workers.py). Where workers cannot be forked — the embedded in-process
Redis, an in-memory SQLite database — or the log is small, everything runs here.

The expiry buckets of an hour are laid out from the hour's total count
(:func:`oauthledger.events.expiry_index.bucket_layout`), so the workers send their
(token, expiry) pairs to the parent as soon as they have folded, and the parent writes the
whole index while the workers write their keys.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import redis

from oauthledger.events.catchup import project_into
from oauthledger.events.expiry_index import (
    EXPIRY_WINDOW_MS,
    INDEX_LUA,
    bucket_layout,
    expiry_hours,
)
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import (
    ReadModel,
    encode,
    entity_of,
    iter_states,
    token_expire_at,
    token_index_args,
)
from oauthledger.events.rebuild_lock import RebuildBusy, RebuildInterrupted, RedisLock
from oauthledger.events.rebuild_workers import (
    ChainBroken,
    Context,
    Inbox,
    Outbox,
    Workers,
    can_fork,
    client_factory,
    reconnect_store,
)
from oauthledger.events.state import State, TokenState, fold, fold_stream
from oauthledger.events.store import EventStore, RecordedEvent
from oauthledger.events.token_codec import ISSUED_AT_NOT_STORED, encode_token
from oauthledger.events.token_lifecycle import TRANSITIONS, Transition

# How long the rebuild lock lives without being extended. A rebuild extends it after
# every chunk, so only a rebuild that died (kill -9) lets it lapse.
REBUILD_LOCK_TTL_MS = 60_000
# Below this many events a rebuild runs in one process: forking and connecting cost
# more than they save.
PARALLEL_MIN_EVENTS = 50_000
# Processes a rebuild uses by default: one per CPU, at most this many (Redis, one
# process, executes all of their writes).
MAX_WORKERS = 4
_WRITE_CHUNK = 2000  # entities per bulk script call
_PIPELINE_CALLS = 4  # bulk calls per pipeline round trip
_READ_BATCH = 20000  # rows per fetch while replaying

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)

# The rebuild's bulk load into its fresh namespace: the apply script's arguments, but no
# version check (cheaper per key). A front end may have written a newer state there
# meanwhile and this may overwrite it with an older one; the catch-up that follows
# re-applies, version-guarded, every event after the replayed position, which restores
# it before the namespace goes live.
_BULK = """
-- KEYS: active, building. ARGV: namespace, then (key, value, expire_at or '') triplets,
-- keys and values built by the caller (concatenating in Lua doubles the cost).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
for i = 2, #ARGV, 3 do
  if ARGV[i + 2] ~= '' then
    redis.call('SET', ARGV[i], ARGV[i + 1], 'EXAT', ARGV[i + 2])
  else
    redis.call('SET', ARGV[i], ARGV[i + 1])
  end
end
return 0
"""
# The expiry buckets of one hour, laid out at once: ARGV namespace, hour, level, split
# pointer, mode ('new': first call of the hour, 'add': later calls), then groups of
# (bucket address, n, then n (score, token) pairs) — addresses and scores computed by
# the caller (index_calls), so Redis runs one ZADD per bucket. If front ends indexed
# tokens of this hour meanwhile (their layout may differ), falls back to adding one by
# one (returns 1).
_BULK_INDEX = INDEX_LUA + """
local ns = ARGV[1]
if redis.call('GET', KEYS[2]) ~= ns then return -1 end
local idx = ns .. ':expiry'
local w = tonumber(ARGV[2])
local l, p, c = window_state(idx, w)
local want_l, want_p = tonumber(ARGV[3]), tonumber(ARGV[4])
local fallback = (ARGV[5] == 'new' and c > 0) or
                 (ARGV[5] == 'add' and (l ~= want_l or p ~= want_p))
local i = 6
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if fallback then
    for j = i + 2, i + 2 * n, 2 do index_add(ns, ARGV[j + 1], w * W + tonumber(ARGV[j])) end
  else
    c = c + redis.call('ZADD', bucket(ns, w, tonumber(ARGV[i])),
                       unpack(ARGV, i + 2, i + 1 + 2 * n))
  end
  i = i + 2 + 2 * n
end
if fallback then return 1 end
save_state(idx, w, want_l, want_p, c)
return 0
"""
_BULK_REQUESTS = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
redis.call('ZADD', ARGV[1] .. ':rexpiry', unpack(ARGV, 2))
return 0
"""
# KEYS: active, building. ARGV: namespace being built, default namespace.
# Switch only if this rebuild still owns the building pointer (a flush or a newer
# rebuild may have taken it); returns the namespace it replaced, or false.
_SWITCH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local old = redis.call('GET', KEYS[1]) or ARGV[2]
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return old
"""


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild did."""

    namespace: str  # the new live namespace
    replaced: str  # the namespace it replaced (deleted)
    events: int  # events replayed
    entities: int  # entity states written
    checkpoint: int
    seconds: float  # until the new namespace is live and caught up
    cleanup_seconds: float = 0.0  # deleting the replaced namespace afterwards
    workers: int = 1  # processes that read, folded and wrote (this module)

    @property
    def rate(self) -> float:
        """Events replayed per second (read, fold, write, catch-up and switch; the
        deletion of the replaced namespace afterwards is counted apart)."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Celery task results)."""
        return dict(self.__dict__)


# -- the fold ------------------------------------------------------------------------------

# A token being folded: [token, kind, status, consumer_key, secret_sealed, expires_at,
# user, version] — exactly the fields the read model stores
# (oauthledger.events.token_codec.TOKEN_FIELDS_NOT_IN_REDIS are not tracked).
_ROW_FIELDS = ("token", "kind", "status", "consumer_key", "secret_sealed", "expires_at",
               "user", "version")
_TOKEN, _KIND, _STATUS, _CONSUMER, _SECRET, _EXPIRES, _USER, _VERSION = range(8)


class RowTransition(NamedTuple):
    """A token lifecycle transition (:mod:`oauthledger.events.token_lifecycle`) as the
    rebuild applies it to a token's row."""

    schema: int  # the schema version the fast path reads; older rows are upcast
    opens: bool  # builds the row (from ``template``) rather than updating it
    status: str
    template: list[Any]  # an opening event's row before the event's values are set
    copies: tuple[tuple[int, str], ...]  # (row index, data key) the event sets
    optional: tuple[tuple[int, str, Any], ...]  # the same, for keys with a default


def row_transition(transition: Transition) -> RowTransition:
    """How ``transition`` changes a token's row: the fields of its ``sets`` the read
    model stores (the others are not tracked)."""
    index = {name: i for i, name in enumerate(_ROW_FIELDS)}
    defaults = transition.event_defaults()
    tracked = [(index[name], src) for name, src in transition.sets if name in index]
    template: list[Any] = [None] * len(_ROW_FIELDS)
    template[_KIND], template[_STATUS] = transition.kind, transition.status
    return RowTransition(
        schema=transition.event.SCHEMA_VERSION, opens=transition.opens,
        status=transition.status, template=template,
        copies=tuple((i, src) for i, src in tracked if src not in defaults),
        optional=tuple((i, src, defaults[src]) for i, src in tracked if src in defaults),
    )


# Token event types the rebuild folds on plain lists (nearly all of a large log), built
# from the token lifecycle table. Everything else goes through events.state.fold itself.
# Plain tuples: the interpreter unpacks an exact tuple faster than a NamedTuple.
_FAST_TYPES: dict[str, tuple[Any, ...]] = {
    t.name: tuple(row_transition(t)) for t in TRANSITIONS}

RawRow = tuple  # (position, stream_id, stream_version, type, schema_version, data, metadata)


class RowReplay:
    """Folds raw log rows, in position order, into what the read model holds — the
    rebuild's fold. Token events (nearly all of a large log) update a plain list per
    stream holding only the fields Redis stores; every other event, and any token stream
    the fast path cannot fold (an older schema, a malformed row, an event before the
    stream's first), goes through :func:`oauthledger.events.state.fold` itself (the latter by
    re-reading the stream from the store, so errors are the reference fold's). The token
    events' fast paths are built from the token lifecycle table
    (:mod:`oauthledger.events.token_lifecycle`).
    ``tests/unit/test_projection_replay.py`` and ``tests/unit/test_token_lifecycle.py``
    check the written values equal those of the reference fold for every event type."""

    def __init__(self, forwarding: bool = False) -> None:
        self.tokens: dict[str, list[Any]] = {}
        self.others: dict[str, State | None] = {}
        self.slow: set[str] = set()
        self.position = 0
        self.count = 0  # rows folded here (not counting rows forwarded)
        # Forwarding (a range after the first): rows of streams that began before this
        # range — not the stream's first event, stream not seen here — are collected
        # here instead of folded, for the process of the previous range.
        self.foreign: list[RawRow] | None = [] if forwarding else None
        self._meta: str | None = None

    def feed(self, rows: Iterable[RawRow]) -> None:
        """Fold a batch of rows (position order)."""
        tokens, slow, others = self.tokens, self.slow, self.others
        fast, loads = _FAST_TYPES, orjson.loads
        foreign = self.foreign
        forwarded = len(foreign) if foreign is not None else 0
        n = 0
        pos = self.position
        for row in rows:
            n += 1
            pos, sid, ver, typ, schema, data, meta = row
            how = fast.get(typ)
            if how is None or sid in slow or sid in others:
                self._reference(row)
                continue
            wanted, opens, status, template, copies, optional = how
            if schema != wanted:
                self._reference(row)
                continue
            try:
                if opens:
                    if ver != 1 and foreign is not None and sid not in tokens:
                        foreign.append(row)
                        continue
                    d = loads(data)
                    if meta != self._meta:
                        # issued_at (the commit time) is not stored in Redis, but the
                        # reference fold reads it: a row without one fails the same way.
                        datetime.fromisoformat(loads(meta)["time"])
                        self._meta = meta
                    st = template.copy()
                    for i, key in copies:
                        st[i] = d[key]
                    if optional:
                        for i, key, default in optional:
                            st[i] = d.get(key, default)
                    st[_VERSION] = ver
                    tokens[sid] = st
                    continue
                st = tokens[sid]
                # The reference fold decodes every row, even one setting no field stored
                # here: so does this one (a corrupt row fails the same way).
                d = loads(data)
                if copies:
                    for i, key in copies:
                        st[i] = d[key]
                if optional:
                    for i, key, default in optional:
                        st[i] = d.get(key, default)
                st[_STATUS] = status
                st[_VERSION] = ver
            except (ValueError, KeyError, TypeError):
                self._reference(row)
        if foreign is not None:
            n -= len(foreign) - forwarded
        self.count += n
        self.position = pos

    def _reference(self, row: RawRow) -> None:
        sid = row[1]
        if sid in self.tokens or sid in self.slow:
            # A token stream the fast path started: refold it whole from the store.
            self.tokens.pop(sid, None)
            self.slow.add(sid)
            return
        if self.foreign is not None and row[2] != 1 and sid not in self.others:
            self.foreign.append(row)  # began before this range
            return
        self.others[sid] = fold(self.others.get(sid), RecordedEvent(*row[:7], ""))

    def finish(self, store: EventStore, until: int | None = None) -> None:
        """Refold the streams left to the reference fold (rare), up to position
        ``until`` (default: the last row fed); raises what the reference fold raises on
        a broken stream."""
        if until is not None:
            self.position = until
        if not self.slow:
            return
        last = self.position
        for sid, records in store.read_streams(sorted(self.slow)).items():
            self.others[sid] = fold_stream(r for r in records if r.position <= last)
        self.slow.clear()

    @property
    def entities(self) -> int:
        """How many streams were folded (an upper bound of the entities written)."""
        return len(self.tokens) + len(self.others)

    def states(self) -> list[State]:
        """Every stream's state as the frozen state classes (tests, inspection); tokens
        as the read model holds them (:func:`oauthledger.events.token_codec.redis_view`)."""
        out = [TokenState(token=t[_TOKEN], kind=t[_KIND], status=t[_STATUS],
                          consumer_key=t[_CONSUMER], secret_sealed=t[_SECRET],
                          expires_at=t[_EXPIRES], issued_at=ISSUED_AT_NOT_STORED,
                          user=t[_USER], version=t[_VERSION]) for t in self.tokens.values()]
        return out + [s for s in self.others.values() if s is not None]

    def apply_args(self, read_model: ReadModel, namespace: str, chunk: int
                   ) -> Iterator[tuple[int, list[Any]]]:
        """The apply script's arguments for every entity, ``chunk`` entities at a time:
        (count, args) — what a version-guarded apply of the reference states writes
        (tests compare them with :meth:`key_calls` and :meth:`expiry_hours`)."""
        head = [namespace, "", "", read_model.keys.default_namespace]
        args: list[Any] = list(head)
        n = 0
        for t in self.tokens.values():
            kind, status, expires = t[_KIND], t[_STATUS], t[_EXPIRES]
            expat, op = token_index_args(kind, status, expires)
            args += ("t", t[_TOKEN], str(t[_VERSION]), encode_token(
                t[_TOKEN], kind, status, t[_CONSUMER], t[_SECRET], expires, t[_USER]), expat, op)
            n += 1
            if n == chunk:
                args[2] = str(n)
                yield n, args
                args, n = list(head), 0
        if n:
            args[2] = str(n)
            yield n, args
        for part in _chunks(iter_states(self.others.values()), chunk):
            yield len(part), read_model.apply_args(part, None, namespace)

    def expiry_hours(self) -> dict[int, list[Any]]:
        """The active access tokens by expiry hour: {hour: [token, ms, hash, ...]} —
        what the expiry index holds (see :func:`index_calls`)."""
        return expiry_hours((t[_TOKEN], t[_EXPIRES]) for t in self.tokens.values()
                            if t[_STATUS] == "active")

    def key_calls(self, namespace: str, chunk: int) -> Iterator[tuple[str, int, list[Any]]]:
        """The keys of every entity and the request-token index, as (script, entities,
        ARGV) for ``_BULK`` (keys and values, each entity encoded once) and
        ``_BULK_REQUESTS``. Both only add keys and members, so partitions may write them
        concurrently; the access-token expiry index is written from all partitions'
        :meth:`expiry_hours` at once (:func:`index_calls`)."""
        args: list[Any] = [namespace]
        n = 0
        requests: list[Any] = []
        prefix = f"{namespace}:t:"
        for t in self.tokens.values():
            kind, status, expires, token = t[_KIND], t[_STATUS], t[_EXPIRES], t[_TOKEN]
            # The same EXAT as the apply script's (none for an active access token).
            args += (prefix + token, b"%d|%b" % (t[_VERSION], encode_token(
                token, kind, status, t[_CONSUMER], t[_SECRET], expires, t[_USER])),
                token_expire_at(kind, status, expires))
            if kind == "request" and status in ("pending", "approved"):
                requests += (repr(expires), token)
            n += 1
            if n == chunk:
                yield _BULK, n, args
                args, n = [namespace], 0
        for state in iter_states(self.others.values()):
            kind, ident = entity_of(state)
            args += (KeyLayout.entity(namespace, kind, ident),
                     b"%d|%b" % (state.version, encode(state)), "")
            n += 1
            if n == chunk:
                yield _BULK, n, args
                args, n = [namespace], 0
        if n:
            yield _BULK, n, args
        for i in range(0, len(requests), 2 * chunk):
            yield _BULK_REQUESTS, 0, [namespace, *requests[i:i + 2 * chunk]]


def index_calls(namespace: str, hours: dict[int, list[Any]], chunk: int
                ) -> Iterator[tuple[str, int, list[Any]]]:
    """``_BULK_INDEX`` calls laying out each expiry hour's buckets from the hour's total
    count (every range's :func:`expiry_hours` merged into ``hours``): tokens grouped by
    bucket address here, at most ``chunk`` tokens per call."""
    for hour, entries in sorted(hours.items()):
        level, split = bucket_layout(len(entries) // 3)
        low, high = (1 << level) - 1, (1 << (level + 1)) - 1
        base = hour * EXPIRY_WINDOW_MS
        groups: dict[int, list[Any]] = {}
        for i in range(0, len(entries), 3):
            h = entries[i + 2]
            address = h & low
            if address < split:
                address = h & high
            group = groups.get(address)
            if group is None:
                group = groups[address] = []
            group += (entries[i + 1] - base, entries[i])
        mode = "new"
        args: list[Any] = []
        n = 0
        for address, group in sorted(groups.items()):
            for at in range(0, len(group), 2 * chunk):
                part = group[at:at + 2 * chunk]
                args += (address, len(part) // 2, *part)
                n += len(part) // 2
                if n >= chunk:
                    yield _BULK_INDEX, 0, [namespace, hour, level, split, mode, *args]
                    mode, args, n = "add", [], 0
        if args:
            yield _BULK_INDEX, 0, [namespace, hour, level, split, mode, *args]


def merge_hours(into: dict[int, list[Any]], more: dict[int, list[Any]]) -> None:
    """Add one partition's :meth:`RowReplay.expiry_hours` to ``into``."""
    for hour, pairs in more.items():
        have = into.get(hour)
        if have is None:
            into[hour] = pairs
        else:
            have += pairs


# -- reading -------------------------------------------------------------------------------


def iter_raw(store: EventStore, after_position: int = 0, batch_size: int = 20000,
             until: int | None = None) -> Iterator[list[RawRow]]:
    """The log after ``after_position`` (up to ``until``, inclusive) in position order,
    as batches of plain tuples (position, stream_id, stream_version, type,
    schema_version, data, metadata), read with one streaming DBAPI cursor (PostgreSQL: a
    server-side cursor) — the rebuild's reader, without per-row objects. One consistent
    snapshot (SQLite: the statement's; PostgreSQL: the transaction's); what commits
    meanwhile is caught up afterwards."""
    mark = "?" if store.is_sqlite else "%s"
    sql = ("SELECT position, stream_id, stream_version, type, schema_version, data, "
           f"metadata FROM events WHERE position > {mark}")
    params: tuple[int, ...] = (after_position,)
    if until is not None:
        sql += f" AND position <= {mark}"
        params += (until,)
    sql += " ORDER BY position"
    raw = store._raw_connection()  # StoreUnavailable if the database cannot be reached
    try:
        if store.is_sqlite:
            cur = raw.cursor()
            cur.arraysize = batch_size
        else:
            cur = raw.driver_connection.cursor(name=f"rebuild_{uuid.uuid4().hex[:8]}")
            cur.itersize = batch_size
        cur.execute(sql, params)
        try:
            while rows := cur.fetchmany(batch_size):
                yield rows
        finally:
            cur.close()
            if not store.is_sqlite:
                raw.rollback()
    finally:
        raw.close()


def fold_range(store: EventStore, replay: RowReplay, after: int, until: int, head: int,
               inbox: Inbox | None = None, outbox: Outbox | None = None,
               on_batch: Callable[[RowReplay], None] | None = None,
               check: Callable[[], None] = lambda: None) -> RowReplay:
    """Read the positions ``after < p <= until`` and fold them into ``replay``; then the
    rows the next range's worker forwards (``inbox``), which all come later in the log.
    Rows of streams that began before ``after`` go to ``outbox`` (``replay`` must be
    forwarding). Finally refolds the streams left to the reference fold, up to
    ``head``."""

    def forward() -> None:
        if outbox is not None and replay.foreign:
            outbox.send(replay.foreign)
            replay.foreign.clear()

    batches: Iterator[list[RawRow]] = iter_raw(store, after, _READ_BATCH, until=until)
    if inbox is not None:
        batches = _chain(batches, inbox.batches(check))
    # closing: a fold error must not leave the reader suspended with its connection
    # checked out (PostgreSQL: a transaction holding a lock on the table).
    with contextlib.closing(batches):
        for rows in batches:
            replay.feed(rows)
            forward()
            if on_batch is not None:
                on_batch(replay)
    if outbox is not None:
        outbox.close()
    replay.finish(store, head)
    return replay


def ranges(head: int, parts: int) -> list[tuple[int, int]]:
    """Position ranges ``(after, until]`` splitting ``0 < p <= head`` into ``parts``."""
    return [(head * k // parts, head * (k + 1) // parts) for k in range(parts)]


# -- writing -------------------------------------------------------------------------------


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _write_bulk(client: redis.Redis, keys: KeyLayout,
                calls: Iterator[tuple[str, int, list[Any]]], lock: RedisLock,
                report: Callable[[int], None] | None = None) -> int:
    """Send the bulk calls in pipelines of :data:`_PIPELINE_CALLS`, from a second
    thread, so encoding the next pipeline (Python) overlaps Redis executing the last one.
    ``report`` gets the entities written so far. Returns how many entities were
    written; raises :class:`RebuildInterrupted`."""
    scripts = {src: client.register_script(src) for src in (_BULK, _BULK_INDEX,
                                                             _BULK_REQUESTS)}
    ns_keys = [keys.active, keys.building]

    def send(batch: list[tuple[str, list[Any]]]) -> None:
        pipe = client.pipeline(transaction=False)
        for src, args in batch:
            scripts[src](keys=ns_keys, args=args, client=pipe)
        if any(int(r) < 0 for r in pipe.execute()):
            raise RebuildInterrupted("the namespace being built was taken away")
        lock.extend()

    written = 0
    batch: list[tuple[str, list[Any]]] = []
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-writer") as pool:
        for src, n, args in calls:
            batch.append((src, args))
            written += n
            if len(batch) >= _PIPELINE_CALLS:
                pending.append(pool.submit(send, batch))
                batch = []
                while len(pending) > 2:  # bound the memory held by queued pipelines
                    pending.pop(0).result()
                if report is not None:
                    report(written)
        if batch:
            pending.append(pool.submit(send, batch))
        for fut in pending:
            fut.result()
    if report is not None:
        report(written)
    return written


def delete_namespace(client: redis.Redis, ns: str) -> int:
    """Delete every key of namespace ``ns`` (SCAN + UNLINK in batches); returns count."""
    deleted = 0
    batch: list[Any] = []
    for key in client.scan_iter(KeyLayout.namespace_pattern(ns), count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


# -- the rebuild -----------------------------------------------------------------------------


def worker_count(requested: int | None, head: int, store: EventStore,
                 client: redis.Redis) -> int:
    """How many processes to rebuild with: ``requested``, or by default one per CPU (at
    most :data:`MAX_WORKERS`) once the log holds :data:`PARALLEL_MIN_EVENTS`; 1 when
    workers cannot be forked (:func:`oauthledger.events.rebuild_workers.can_fork`)."""
    if requested is None:
        if head < PARALLEL_MIN_EVENTS:
            return 1
        requested = min(os.cpu_count() or 1, MAX_WORKERS)
    if requested <= 1 or head < requested or not can_fork(store, client):
        return 1
    return requested


def rebuild(
    store: EventStore, read_model: ReadModel, progress: ProgressFn | None = None,
    batch_size: int = 1000, workers: int | None = None,
) -> RebuildResult:
    """Replay the whole log into a fresh namespace and switch to it atomically.

    While it runs, ``<prefix>:building`` names the new namespace, so front ends write
    their acknowledged changes there too (docs/design.md, "Read your writes") and the hot
    path keeps reading the old namespace (or falls back to the store if that one has no
    checkpoint: docs/design.md, "Store fallback").
    ``workers``: processes to use (default: :func:`worker_count`). Raises
    :class:`RebuildBusy` if another rebuild holds the lock. A worker's failure is raised
    here as the same exception (:class:`RebuildWorkerDied` if it died without a word),
    after every worker has been stopped; the half-built namespace is left to the next
    rebuild, which deletes it, as when a one-process rebuild fails."""
    client = read_model.redis
    keys = read_model.keys
    lock = RedisLock(client, keys.rebuild_lock, REBUILD_LOCK_TTL_MS)
    if not lock.acquire():
        raise RebuildBusy("another rebuild is running")
    started = time.perf_counter()
    pool: Workers | None = None
    try:
        # A rebuild that died (kill -9) leaves its half-built namespace behind.
        stale = read_model.building_namespace()
        if stale and stale != read_model.namespace():
            delete_namespace(client, stale)
        ns = keys.namespace(int(client.incr(keys.generation)))
        delete_namespace(client, ns)  # after a flush the counter restarts: be sure
        client.set(keys.building, ns)

        # Every process reads positions <= head only, so the checkpoint is exact.
        head = store.head()
        parts = worker_count(workers, head, store, client)
        if parts > 1:
            pool = Workers(parts)
            try:
                pool.start(_worker_run(store, client_factory(client), keys, ns, head,
                                       ranges(head, parts), lock.token))
            except OSError:  # cannot fork now (process limit, memory): do it all here
                pool.stop()
                pool, parts = None, 1
        written, count = _rebuild_here(store, client, keys, ns, head, parts, pool, lock,
                                       progress)
        position = head
        # The checkpoint marks the namespace complete (the hot path checks it exists).
        if read_model.apply([], checkpoint=position, namespace=ns) < 0:
            raise RebuildInterrupted(f"namespace {ns} was taken away")
        # Catch up with what was committed while we replayed.
        caught, _, position = project_into(store, read_model, ns, position, batch_size)
        count += caught
        lock.extend()
        old = client.eval(_SWITCH, 2, keys.active, keys.building, ns, keys.default_namespace)
        if old is None:
            raise RebuildInterrupted(f"namespace {ns} was taken away before the switch")
        old = old.decode() if isinstance(old, bytes) else old
        # Events committed between the last catch-up and the switch: the new namespace's
        # checkpoint is behind them, so this (or any projector) picks them up.
        caught, _, position = project_into(store, read_model, ns, position, batch_size)
        count += caught
        seconds = time.perf_counter() - started
        cleanup = time.perf_counter()
        if old != ns:
            delete_namespace(client, old)
        return RebuildResult(
            namespace=ns, replaced=old, events=count, entities=written,
            checkpoint=position, seconds=seconds,
            cleanup_seconds=time.perf_counter() - cleanup, workers=parts,
        )
    finally:
        if pool is not None:
            pool.stop()  # after a failure: no worker keeps writing for a dead rebuild
        lock.release()


def _worker_run(store: EventStore, make_client: Callable[[], redis.Redis],
                keys: KeyLayout, ns: str, head: int, spans: list[tuple[int, int]],
                lock_token: str) -> Callable[[Context], None]:
    """What a forked worker runs: fold its range (forwarding rows of older streams),
    send its expiry pairs to the parent, write its entities."""

    def run(ctx: Context) -> None:
        reconnect_store(store)
        client = make_client()
        lock = RedisLock(client, keys.rebuild_lock, REBUILD_LOCK_TTL_MS, token=lock_token)
        after, until = spans[ctx.partition]
        replay = fold_range(store, RowReplay(forwarding=True), after, until, head,
                            ctx.inbox, ctx.outbox, lambda r: ctx.progress(replayed=r.count),
                            ctx.check)
        ctx.progress(replayed=replay.count, entities=replay.entities)
        ctx.report("folded", replay.count, replay.entities, replay.expiry_hours())
        written = _write_bulk(client, keys, replay.key_calls(ns, _WRITE_CHUNK), lock,
                              lambda n: ctx.progress(written=n))
        ctx.report("done", written)

    return run


def _rebuild_here(store: EventStore, client: redis.Redis, keys: KeyLayout, ns: str,
                  head: int, parts: int, pool: Workers | None, lock: RedisLock,
                  progress: ProgressFn | None) -> tuple[int, int]:
    """The parent's share: fold range 0 (or everything) and the rows forwarded to it,
    write its entities, then the expiry index of all ranges; wait for the workers.
    Returns (entities written, events replayed) over all processes."""
    extended = [time.monotonic()]

    def tick() -> None:
        if time.monotonic() - extended[0] > 5:
            lock.extend()
            extended[0] = time.monotonic()

    def check() -> None:
        if pool is not None:
            pool.check()
        tick()

    def on_batch(replay: RowReplay) -> None:
        check()
        if progress is not None:
            progress("replay", replay.count + (pool.total(0) if pool else 0), head)

    until = ranges(head, parts)[0][1]
    try:
        replay = fold_range(store, RowReplay(), 0, until, head,
                            pool.inbox if pool is not None else None, None, on_batch, check)
    except ChainBroken as exc:  # worker 1 stopped: raise why (its error, or a later one's)
        if pool is not None:
            pool.raise_cause(fallback=exc)
        raise
    own_entities = replay.entities
    hours = replay.expiry_hours()
    total = {"entities": own_entities * parts, "events": replay.count}

    def index() -> Iterator[tuple[str, int, list[Any]]]:
        # Runs once this process's own keys are queued: the hours' total counts need
        # every worker's pairs.
        if pool is not None:
            total["entities"] = own_entities
            for worker in pool.workers:
                _, events, entities, more = worker.wait("folded", tick)
                total["events"] += events
                total["entities"] += entities
                merge_hours(hours, more)
            if progress is not None:
                progress("replay", total["events"], head)
        yield from index_calls(ns, hours, _WRITE_CHUNK)

    def report(done: int) -> None:
        if pool is not None:
            pool.check()
            done += pool.total(2)
        if progress is not None:
            progress("write", done, max(total["entities"], done))

    calls = _chain(replay.key_calls(ns, _WRITE_CHUNK), index())
    del replay
    written = _write_bulk(client, keys, calls, lock, report)
    if pool is not None:
        for worker in pool.workers:
            written += worker.wait("done", tick)[1]
        if progress is not None:
            progress("write", written, written)
    return written, total["events"]


def _chain(*parts: Iterator[Any]) -> Iterator[Any]:
    for part in parts:
        yield from part
