"""The append-only event store on SQLAlchemy (SQLite for the embedded default,
PostgreSQL in production).

Rules it enforces (DESIGN.md, "Events and the store"):
- ``append`` is one transaction; UNIQUE(stream_id, stream_version) plus an explicit
  version check give optimistic concurrency: a stale writer gets
  :class:`ConcurrencyConflict`, never a silent overwrite.
- Appends are serialized (PostgreSQL: a transaction-scoped advisory lock; SQLite:
  ``BEGIN IMMEDIATE``), positions are assigned under that lock, so commit order equals
  position order and a follower of ``read_all`` can never skip a late commit.
- Each row is hash-chained to the previous one (:mod:`oauthledger.events.chain`).
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import starmap
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError

from oauthledger.events.catalog import Event
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import (
    ConcurrencyConflict,
    CorruptEvent,
    EventStoreError,
    StoreUnavailable,
)
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.upcasting import decode

# The advisory lock that serializes appends on PostgreSQL: two 32-bit keys, a constant for
# this application and the OID of the events table, so stores in different schemas (or
# databases' test schemas) of one server do not serialize against each other. The append
# function (migration 0002) takes it with this class as its p_lock_class argument.
APPEND_LOCK_CLASS = 0x0A017E
ANY_VERSION = None  # expected_version that skips the concurrency check
# SQLSTATE raised by oauthledger_append (migration 0002) for a stale expected version;
# its DETAIL is the JSON array [stream_id, expected, actual].
PG_CONFLICT_SQLSTATE = "OL409"


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One stored row. ``data`` and ``metadata`` are kept as stored text and decoded on
    demand, so followers that only route by type or stream pay nothing for JSON."""

    position: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    data: str
    metadata: str
    hash: str

    @property
    def event(self) -> Event:
        """The event object in its current schema (upcast if stored under an older one)."""
        return self.decoded()[0]

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata object: actor, request_id, time, and anything else recorded."""
        return _json_object(self.position, "metadata", self.metadata)

    def decoded(self) -> tuple[Event, dict[str, Any], dict[str, Any]]:
        """(event, data as stored, metadata): the whole row checked — both columns JSON
        objects, a known type and schema, fields that fit. Raises :class:`CorruptEvent`
        naming the position; the one check shared by readers, exports and verify."""
        data = _json_object(self.position, "data", self.data)
        try:
            event = decode(self.type, self.schema_version, data)
        except ValueError as exc:  # unknown types and schemas, fields that do not fit
            raise CorruptEvent(self.position, str(exc)) from None
        return event, data, self.meta

    def links_to(self, prev_hash: str) -> bool:
        """True when this row's hash chains it to a predecessor whose hash is
        ``prev_hash`` (events/chain.py)."""
        return self.hash == row_hash(
            prev_hash, self.position, self.stream_id, self.stream_version, self.type,
            self.schema_version, self.data, self.metadata,
        )

    @property
    def time(self) -> float:
        """The commit time as a POSIX timestamp."""
        return datetime.fromisoformat(self.meta["time"]).timestamp()


@dataclass(frozen=True)
class StreamWrite:
    """Events for one stream, with the version the writer last saw."""

    stream_id: str
    expected_version: int | None
    events: Sequence[Event]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the hash chain."""

    ok: bool
    count: int
    bad_position: int | None = None
    reason: str | None = None
    head_hash: str | None = None  # hash of the last intact row: the value to anchor


def now_iso(clock: Callable[[], float] = time.time) -> str:
    """UTC time in ISO 8601 with microseconds, as stored in metadata."""
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="microseconds")


def safe_url(url: str) -> str:
    """The database URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def create_store_engine(url: str) -> Engine:
    """An engine configured for the store's locking rules. Connects lazily."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}
        )

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so appends can say IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    engine = sa.create_engine(url, pool_size=10, max_overflow=20)

    @sa_event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        # A PostgreSQL restart (or pg_terminate_backend) must not surface as a failed
        # request on a connection that died in the pool. SQLAlchemy's pool_pre_ping
        # would cost a SELECT 1 round trip on every checkout, as much as the append
        # itself; instead ask the kernel: an idle connection has nothing to read unless
        # the server sent its goodbye (FATAL message, EOF). DisconnectionError makes the
        # pool discard the connection and open a fresh one (SQLAlchemy's documented
        # custom pessimistic check).
        if _pg_connection_gone(dbapi_conn):
            raise DisconnectionError("the server closed this pooled connection")

    return engine


def _pg_connection_gone(conn: Any) -> bool:
    """True when an idle psycopg connection is closed, broken, or has bytes waiting
    (an idle connection only gets those when the server is closing it; a rare notice
    costs one reconnect, never an error)."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class EventStore:
    """Append-only, hash-chained event log. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.url = safe_url(str(engine.url.render_as_string(hide_password=False)))
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float] = time.time) -> EventStore:
        """Build a store for ``url`` (no connection is opened yet)."""
        return cls(create_store_engine(url), clock=clock)

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise StoreUnavailable(self.url, _first_line(exc)) from None

    def _raw_connection(self) -> Any:
        """A pooled DBAPI connection. Pool checkout raises the driver's own errors (not
        SQLAlchemy's wrappers), so both become :class:`StoreUnavailable`."""
        try:
            return self.engine.raw_connection()
        except (DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreUnavailable(self.url, _first_line(exc)) from None

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self._connect() as conn:
            try:
                conn.exec_driver_sql("SELECT 1").scalar()
            except DBAPIError as exc:
                raise StoreUnavailable(self.url, _first_line(exc)) from None

    # -- writing ---------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[Event],
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to one stream in one transaction.

        ``expected_version`` is the stream's version the writer based its decision on
        (0 for a new stream); ``None`` skips the check. Returns the stored rows.
        """
        return self.append_many([StreamWrite(stream_id, expected_version, events)], metadata)

    def append_many(
        self, writes: Sequence[StreamWrite], metadata: Mapping[str, Any] | None = None
    ) -> list[RecordedEvent]:
        """Append to several streams atomically: all commit, or none (any conflict aborts)."""
        for write in writes:
            _check_stream_id(write.stream_id)
        meta = dict(metadata or {})
        meta.setdefault("time", now_iso(self.clock))
        meta_text = canonical_json(meta)
        if not any(write.events for write in writes) and all(
            write.expected_version is None for write in writes
        ):
            return []
        if self.is_sqlite:
            return self._append_sqlite(writes, meta_text)
        return self._append_postgres(writes, meta_text)

    # SQLite: BEGIN IMMEDIATE takes the database's single write lock before the head is
    # read, so appends serialize and positions follow commit order.

    def _append_sqlite(self, writes: Sequence[StreamWrite], meta_text: str) -> list[RecordedEvent]:
        try:
            with self._connect() as conn:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    last = conn.exec_driver_sql(
                        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
                    ).first()
                    # One read per stream, even for a stream named in several writes.
                    versions = {
                        sid: self._stream_version(conn, sid)
                        for sid in dict.fromkeys(w.stream_id for w in writes)
                    }
                    rows = _build_rows(writes, last, versions, meta_text)
                    if rows:
                        conn.exec_driver_sql(
                            "INSERT INTO events (position, stream_id, stream_version, type, "
                            "schema_version, data, metadata, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            rows,
                        )
                    return list(starmap(RecordedEvent, rows))
        except IntegrityError as exc:
            raise self._conflict_from(writes, exc) from exc
        except OperationalError as exc:
            raise StoreUnavailable(self.url, _first_line(exc)) from None

    # PostgreSQL: the whole append is one call of the server-side function
    # ``oauthledger_append`` (migration 0002) in autocommit: it takes the
    # transaction-scoped advisory lock, reads the head and the streams' versions AFTER
    # the lock (each statement of a VOLATILE function gets a fresh READ COMMITTED
    # snapshot, so it sees the previous holder's commit), checks the expected versions,
    # chains and inserts the rows. One round trip and one commit per append, whatever
    # its size; the statement is prepared by psycopg after its first uses, so each call
    # is a Bind/Execute on the wire. The chain definition stays events.chain.row_hash:
    # verify() recomputes every hash in Python, so a function that drifted from it
    # would be caught on the first verify (and is, in tests/integration).

    # Arrays go in binary (%b): psycopg's text-format array quoting cost ~50 µs per
    # event of client and server CPU, more than the whole function's work.
    _PG_APPEND = (
        "SELECT out_position, out_version, out_hash FROM oauthledger_append("
        "%b::text[], %b::int[], %b::int[], %b::text[], %b::smallint[], %b::text[], "
        "%s::text, %s::int)"
    )
    # The common append, one event to one stream: the arrays are built in the call from
    # scalar parameters, which psycopg dumps in C (each list parameter costs ~20 us of
    # Python on the client). Same function, same rules.
    _PG_APPEND_ONE = (
        "SELECT out_position, out_version, out_hash FROM oauthledger_append("
        "ARRAY[%s::text], ARRAY[%s::int], ARRAY[1], ARRAY[%s::text], ARRAY[%s::smallint], "
        "ARRAY[%s::text], %s::text, %s::int)"
    )

    def _append_postgres(
        self, writes: Sequence[StreamWrite], meta_text: str
    ) -> list[RecordedEvent]:
        import psycopg  # the PostgreSQL driver; only this backend needs it

        streams: list[str] = []
        expected: list[int | None] = []
        counts: list[int] = []
        event_streams: list[str] = []
        types: list[str] = []
        schemas: list[int] = []
        datas: list[str] = []
        for write in writes:
            streams.append(write.stream_id)
            expected.append(write.expected_version)
            counts.append(len(write.events))
            for ev in write.events:
                event_streams.append(write.stream_id)
                types.append(ev.type_name)
                schemas.append(ev.SCHEMA_VERSION)
                datas.append(canonical_json(ev.to_data()))
        raw = self._raw_connection()
        pg = raw.driver_connection
        try:
            pg.autocommit = True  # the call is its own transaction: no BEGIN/COMMIT trips
            with pg.cursor() as cur:
                if len(types) == 1 and len(streams) == 1:
                    cur.execute(self._PG_APPEND_ONE, (streams[0], expected[0], types[0],
                                                      schemas[0], datas[0], meta_text,
                                                      APPEND_LOCK_CLASS))
                else:
                    cur.execute(self._PG_APPEND, (streams, expected, counts, types, schemas,
                                                  datas, meta_text, APPEND_LOCK_CLASS))
                stored = cur.fetchall()
        except psycopg.Error as exc:
            raise self._pg_error(writes, exc) from None
        finally:
            try:
                pg.autocommit = False  # as SQLAlchemy's pool expects it
            except psycopg.Error:
                raw.invalidate()  # broken connection: do not return it to the pool
            raw.close()
        return [
            RecordedEvent(position, stream_id, version, type_name, schema, data, meta_text, h)
            for (position, version, h), stream_id, type_name, schema, data in zip(
                stored, event_streams, types, schemas, datas, strict=True)
        ]

    def _pg_error(self, writes: Sequence[StreamWrite], exc: Exception) -> Exception:
        """The store error for what PostgreSQL refused during an append."""
        import psycopg

        state = getattr(exc, "sqlstate", None)
        if state == PG_CONFLICT_SQLSTATE:
            stream_id, expected, actual = json.loads(exc.diag.message_detail or "[]")
            return ConcurrencyConflict(stream_id, expected, actual)
        if isinstance(exc, psycopg.IntegrityError):
            return self._conflict_from(writes, exc)
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
            # Not migrated, or migrated by an older release: the schema is behind.
            return StoreUnavailable(self.url, "the events schema is not at this release's "
                                    "revision (run `oauthledger db upgrade`)")
        if isinstance(exc, psycopg.OperationalError):
            # Connection lost. If it died after the call was sent, the append may or may
            # not have committed (whole or not at all): callers re-read the stream
            # version before retrying.
            return StoreUnavailable(self.url, _first_line(exc))
        # Anything else the server refused (e.g. a role without EXECUTE): one line.
        return EventStoreError(f"append refused by the database: {_first_line(exc)}")

    def _conflict_from(self, writes: Sequence[StreamWrite], exc: Exception) -> Exception:
        """Translate a unique violation that slipped past the explicit version check.
        UNIQUE(stream_id, stream_version) is the backstop for optimistic concurrency; a
        clash on the position would mean appends were not serialized: a store bug."""
        text = str(getattr(exc, "orig", None) or exc)
        if "uq_events_stream_version" in text or "stream_version" in text:
            for write in writes:
                actual = self.stream_version(write.stream_id)
                if write.expected_version is not None and actual != write.expected_version:
                    return ConcurrencyConflict(write.stream_id, write.expected_version, actual)
            write = writes[0]
            return ConcurrencyConflict(
                write.stream_id, write.expected_version, self.stream_version(write.stream_id)
            )
        return EventStoreError(
            f"append refused by the database (appends not serialized?): {_first_line(exc)}"
        )

    @staticmethod
    def _stream_version(conn: Connection, stream_id: str) -> int:
        return conn.execute(
            sa.text("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = :s"),
            {"s": stream_id},
        ).scalar_one()

    # -- reading ---------------------------------------------------------------------

    _COLUMNS = "position, stream_id, stream_version, type, schema_version, data, metadata, hash"

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        with self._connect() as conn:
            return self._stream_version(conn, stream_id)

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """All events of one stream after ``after_version``, in version order."""
        with self._connect() as conn:
            result = conn.execute(
                sa.text(
                    f"SELECT {self._COLUMNS} FROM events WHERE stream_id = :s "
                    "AND stream_version > :v ORDER BY stream_version"
                ),
                {"s": stream_id, "v": after_version},
            )
            return [RecordedEvent(*row) for row in result]

    def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams in one query, each in version order."""
        out: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        if not stream_ids:
            return out
        with self._connect() as conn:
            result = conn.execute(
                sa.text(
                    f"SELECT {self._COLUMNS} FROM events WHERE stream_id IN :ids "
                    "ORDER BY position"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": list(stream_ids)},
            )
            for row in result:
                out[row[1]].append(RecordedEvent(*row))
        return out

    def read_all(
        self, after_position: int = 0, limit: int | None = None, batch_size: int = 5000
    ) -> Iterator[RecordedEvent]:
        """Events with position > ``after_position`` in position order, at most ``limit``.

        Reads in keyset-paginated batches (no long-lived cursor or transaction), so a
        follower can stream millions of events in bounded memory.
        """
        remaining = limit
        sql = f"SELECT {self._COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        if not self.is_sqlite:
            sql = sql.replace("?", "%s")
        while remaining is None or remaining > 0:
            n = batch_size if remaining is None else min(batch_size, remaining)
            rows = self._fetch_raw(sql, (after_position, n))
            if not rows:
                return
            # starmap drives the construction from C: this is the projector's hot path.
            yield from starmap(RecordedEvent, rows)
            after_position = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < n:
                return

    def _fetch_raw(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one read on a pooled DBAPI connection and return plain tuples. Skips
        SQLAlchemy's Result layer, which costs more than the query for bulk reads."""
        dbapi = self.engine.dialect.loaded_dbapi
        raw = self._raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute(sql, params)
                rows = cur.fetchall()
            finally:
                cur.close()
            if not self.is_sqlite:
                raw.rollback()  # end the read-only transaction psycopg opened
            return rows
        except (dbapi.OperationalError, dbapi.ProgrammingError) as exc:
            # Connection lost, or a missing table (database not migrated): SQLite reports
            # the latter as an OperationalError, PostgreSQL as a ProgrammingError.
            raw.invalidate()
            raise StoreUnavailable(self.url, _first_line(exc)) from None
        finally:
            raw.close()

    def head(self) -> int:
        """The position of the last event (0 when the log is empty)."""
        with self._connect() as conn:
            return conn.exec_driver_sql("SELECT COALESCE(MAX(position), 0) FROM events").scalar()

    def head_hash(self) -> str:
        """The hash of the last row: record it elsewhere to anchor the chain."""
        with self._connect() as conn:
            value = conn.exec_driver_sql(
                "SELECT hash FROM events ORDER BY position DESC LIMIT 1"
            ).scalar()
        return value or GENESIS_HASH

    def count_by_type(self) -> dict[str, int]:
        """How many events of each type the log holds."""
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type"
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def stream_count(self) -> int:
        """How many distinct streams the log holds."""
        with self._connect() as conn:
            return conn.exec_driver_sql("SELECT COUNT(DISTINCT stream_id) FROM events").scalar()

    # -- audit -----------------------------------------------------------------------

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyResult:
        """Walk the whole chain. Reports the first row that is edited, missing,
        reordered, or undecodable (bad JSON, unknown type, unknown schema)."""
        prev_hash = GENESIS_HASH
        expected_position = 1
        count = 0
        for row in self.read_all(0):
            if row.position != expected_position:
                return VerifyResult(
                    False, count, expected_position,
                    f"row {expected_position} is missing (next row is {row.position})",
                )
            if not row.links_to(prev_hash):
                return VerifyResult(
                    False, count, row.position,
                    "hash does not match: the row was edited, or rows were deleted or "
                    "reordered before it",
                )
            try:
                row.decoded()
            except CorruptEvent as exc:
                return VerifyResult(False, count, row.position, exc.reason)
            prev_hash = row.hash
            expected_position += 1
            count += 1
            if progress is not None and count % 10000 == 0:
                progress(count)
        if progress is not None:
            progress(count)
        return VerifyResult(True, count, head_hash=prev_hash)


def _json_object(position: int, column: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CorruptEvent(position, f"{column} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        # Canonical rows always hold objects: data and metadata must be JSON objects.
        raise CorruptEvent(position, f"{column} is not a JSON object (data and metadata "
                                     "must be JSON objects)")
    return value


def _check_stream_id(stream_id: str) -> None:
    # The hash chain joins fields with a unit separator (events/chain.py); stream ids are
    # the only free-text field not JSON-escaped, so control characters are refused here.
    if (
        not isinstance(stream_id, str)
        or not 0 < len(stream_id) <= 255
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in stream_id)
    ):
        raise ValueError(
            f"invalid stream id {stream_id!r}: 1-255 characters, no control characters"
        )


def _build_rows(
    writes: Sequence[StreamWrite],
    last: tuple[int, str] | None,
    versions: dict[str, int],
    meta_text: str,
) -> list[tuple[int, str, int, str, int, str, str, str]]:
    """The SQLite append's rows (the columns of ``events``, in order) after the head
    ``last`` (position, hash), checking each write's expected version against
    ``versions`` (advanced in place). Raises :class:`ConcurrencyConflict`. On
    PostgreSQL, ``oauthledger_append`` (migration 0002) does the same in the server."""
    position, prev_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
    rows: list[tuple[int, str, int, str, int, str, str, str]] = []
    for write in writes:
        sid = write.stream_id
        version = versions[sid]
        if write.expected_version is not None and version != write.expected_version:
            raise ConcurrencyConflict(sid, write.expected_version, version)
        for ev in write.events:
            position += 1
            version += 1
            type_name, schema = ev.type_name, ev.SCHEMA_VERSION
            data = canonical_json(ev.to_data())
            prev_hash = row_hash(
                prev_hash, position, sid, version, type_name, schema, data, meta_text
            )
            rows.append((position, sid, version, type_name, schema, data, meta_text, prev_hash))
        # A stream named twice in one append_many continues from its new version.
        versions[sid] = version
    return rows


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
