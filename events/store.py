"""The append-only event store: its interface, the shared types, and the parts that are
the same on every backend. One adapter per backend holds the rest (its engine set-up,
the serialized append with its version checks, its error mapping; the contract is
:class:`oauthledger.events.store_backend.StoreAdapter`):

- :mod:`oauthledger.events.store_sqlite` (``SqliteAdapter``): the embedded default;
- :mod:`oauthledger.events.store_postgres` (``PostgresAdapter``): production.

``EventStore.from_url(url)`` (and ``EventStore(engine)``) builds the store on the adapter
of the URL's (engine's) backend. The rules every adapter enforces (docs/event-store.md,
"Optimistic concurrency" and "Serialization: commit order equals position order"):

- ``append`` is one transaction; UNIQUE(stream_id, stream_version) plus an explicit
  version check give optimistic concurrency: a stale writer gets
  :class:`ConcurrencyConflict`, never a silent overwrite.
- Appends are serialized and positions are assigned under that lock, so commit order
  equals position order and a follower of ``read_all`` can never skip a late commit.
- Each row is hash-chained to the previous one (:mod:`oauthledger.events.chain`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import starmap
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from oauthledger.events.catalog import Event
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import (
    ConcurrencyConflict,
    CorruptEvent,
    EventStoreError,
    StoreUnavailable,
)
from oauthledger.events.metrics import metrics
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.store_backend import StoreAdapter, first_line
from oauthledger.events.store_postgres import PostgresAdapter
from oauthledger.events.store_sqlite import SqliteAdapter
from oauthledger.events.upcasting import decode

ANY_VERSION = None  # expected_version that skips the concurrency check


class UnstorableText(ValueError):
    """An append holds text the database cannot hold (:func:`storable`): NUL in a stream
    id, an unpaired surrogate anywhere. Such text only comes from a client (JSON can
    spell a lone surrogate), so the HTTP app answers it as invalid input."""


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


# The adapter of each SQLAlchemy backend name.
ADAPTERS: dict[str, type[StoreAdapter]] = {
    "sqlite": SqliteAdapter,
    "postgresql": PostgresAdapter,
}


def adapter_for(backend: str) -> type[StoreAdapter]:
    """The adapter class for a SQLAlchemy backend name (``sqlite``, ``postgresql``).
    Raises ``ValueError`` for any other."""
    try:
        return ADAPTERS[backend]
    except KeyError:
        raise ValueError(f"no event store for database backend {backend!r} "
                         "(sqlite and postgresql are supported)") from None


def create_store_engine(url: str) -> Engine:
    """An engine configured for the store's locking rules (by the URL's backend's
    adapter). Connects lazily."""
    return adapter_for(make_url(url).get_backend_name()).create_engine(url)


class EventStore:
    """Append-only, hash-chained event log. Thread-safe; share one per process.

    The public methods are the whole contract, the same on every backend
    (tests/integration/test_store_contract.py runs it against each):

    - :meth:`append` / :meth:`append_many`: one transaction, all or nothing; a stale
      ``expected_version`` raises :class:`ConcurrencyConflict` and writes nothing;
      positions are contiguous and assigned in commit order; rows are hash-chained.
    - :meth:`stream_version`, :meth:`read_stream`, :meth:`read_streams`,
      :meth:`read_all` (position order, bounded memory), :meth:`head`,
      :meth:`head_hash`, :meth:`count_by_type`, :meth:`stream_count`: reads.
    - :meth:`verify`: walk the chain; :meth:`ping`: is the database there.
    - Errors: :class:`StoreUnavailable` when the database cannot be reached or is not
      migrated, :class:`EventStoreError` for anything else the database refuses;
      ``ValueError`` for a stream id that is empty, over 255 characters or holds a
      control character, and :class:`UnstorableText` (a ``ValueError``) for text
      neither backend can hold (see :func:`storable`).
    - A stream id or a queried value that the database cannot hold (:func:`storable`)
      names nothing that can exist: reads answer "not found" (version 0, no events)
      without asking the database, on every backend alike.

    ``EventStore(engine)`` and :meth:`from_url` put the store on the adapter of the
    engine's backend (:attr:`adapter`), which does the append — serialization, version
    checks, chaining, error mapping — and knows its driver's placeholder; everything
    else is here, the same for every backend.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.url = safe_url(str(engine.url.render_as_string(hide_password=False)))
        self.adapter: StoreAdapter = adapter_for(engine.dialect.name)(
            self.url, self._connect, self._raw_connection, self._conflict_from)
        # True on SQLite: callers that run their own SQL on _raw_connection() (the
        # rebuild's reader) pick placeholders and cursors by it.
        self.is_sqlite = self.adapter.is_sqlite

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float] = time.time) -> EventStore:
        """Build the store for ``url`` on its backend's adapter (no connection is
        opened yet)."""
        return cls(create_store_engine(url), clock=clock)

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise StoreUnavailable(self.url, first_line(exc)) from None

    def _raw_connection(self) -> Any:
        """A pooled DBAPI connection. Pool checkout raises the driver's own errors (not
        SQLAlchemy's wrappers), so both become :class:`StoreUnavailable`."""
        try:
            return self.engine.raw_connection()
        except (DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreUnavailable(self.url, first_line(exc)) from None

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self._connect() as conn:
            try:
                conn.exec_driver_sql("SELECT 1").scalar()
            except DBAPIError as exc:
                raise StoreUnavailable(self.url, first_line(exc)) from None

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
        """Append to several streams atomically: all commit, or none (any conflict aborts).
        Raises ``ValueError`` (nothing written) for a stream id :func:`_check_stream_id`
        refuses, :class:`UnstorableText` for metadata or event text that is not UTF-8
        (:func:`storable`)."""
        for write in writes:
            _check_stream_id(write.stream_id)
        meta = dict(metadata or {})
        meta.setdefault("time", now_iso(self.clock))
        meta_text = canonical_json(meta)
        _check_storable("metadata", meta_text)
        if not any(write.events for write in writes) and all(
            write.expected_version is None for write in writes
        ):
            return []
        started = time.perf_counter()
        try:
            rows = list(starmap(RecordedEvent, self.adapter.append(writes, meta_text)))
        except UnicodeEncodeError as exc:
            # Canonical JSON escapes NUL but keeps other text as is (events/chain.py), so
            # an event field holding an unpaired surrogate reaches the driver, which
            # cannot encode it: the same refusal on both backends, nothing written.
            raise UnstorableText(
                f"event data holds {exc.object[exc.start:exc.end]!r}, which is not "
                "Unicode text the event store can hold (an unpaired surrogate)"
            ) from None
        except EventStoreError as exc:
            metrics().append_failed(exc, time.perf_counter() - started)
            raise
        # Counted here, where every writer passes (front ends, workers, the CLI):
        # docs/operations.md, "Metrics".
        metrics().appended((e for w in writes for e in w.events),
                           time.perf_counter() - started)
        return rows

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
            f"append refused by the database (appends not serialized?): {first_line(exc)}"
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
        if not storable(stream_id):
            return 0  # can never exist (storable)
        with self._connect() as conn:
            return self._stream_version(conn, stream_id)

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """All events of one stream after ``after_version``, in version order."""
        if not storable(stream_id):
            return []  # can never exist (storable)
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
        # Ids that can never exist (storable) stay empty without being sent.
        wanted = [s for s in stream_ids if storable(s)]
        if not wanted:
            return out
        with self._connect() as conn:
            result = conn.execute(
                sa.text(
                    f"SELECT {self._COLUMNS} FROM events WHERE stream_id IN :ids "
                    "ORDER BY position"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": wanted},
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
        mark = self.adapter.param
        sql = (f"SELECT {self._COLUMNS} FROM events WHERE position > {mark} "
               f"ORDER BY position LIMIT {mark}")
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
            self.adapter.end_read(raw)
            return rows
        except (dbapi.OperationalError, dbapi.ProgrammingError) as exc:
            # Connection lost, or a missing table (database not migrated): SQLite reports
            # the latter as an OperationalError, PostgreSQL as a ProgrammingError.
            raw.invalidate()
            raise StoreUnavailable(self.url, first_line(exc)) from None
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


def storable(text: str) -> bool:
    """True when both backends can hold ``text`` in a text column or a query parameter.

    The identifier rule (docs/event-store.md, "Identifiers the database cannot hold"):
    PostgreSQL text cannot hold NUL (U+0000) and neither backend can hold an unpaired
    surrogate (it has no UTF-8 form). Such a value was never written, so a read that
    names it answers "not found" instead of sending it — PostgreSQL would raise
    ``DataError`` where SQLite answers nothing — and an append refuses it with
    ``ValueError``: the same on both backends.
    """
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_storable(what: str, text: str) -> None:
    if not storable(text):
        raise UnstorableText(f"{what} {text!r} cannot be stored: PostgreSQL text cannot hold "
                         "NUL (U+0000), and unpaired surrogates have no UTF-8 form")


def _check_stream_id(stream_id: str) -> None:
    """Raise ``ValueError`` (saying why) unless ``stream_id`` is one an append accepts:
    1-255 characters, no control character, text the database can hold (:func:`storable`)."""
    if not isinstance(stream_id, str) or not 0 < len(stream_id) <= 255:
        raise ValueError(f"invalid stream id {stream_id!r}: 1-255 characters")
    _check_storable("stream id", stream_id)
    # The hash chain joins fields with a unit separator (events/chain.py); stream ids are
    # the only free-text field not JSON-escaped, so control characters are refused here.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in stream_id):
        raise ValueError(
            f"invalid stream id {stream_id!r}: no control characters (the hash chain "
            "separates fields with U+001F)"
        )

