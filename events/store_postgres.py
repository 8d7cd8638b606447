"""The event store's PostgreSQL adapter (production).

The whole append is one call of the server-side function ``oauthledger_append``
(migration 0002) in autocommit: it takes the transaction-scoped advisory lock, reads the
head and the streams' versions AFTER the lock (each statement of a VOLATILE function gets
a fresh READ COMMITTED snapshot, so it sees the previous holder's commit), checks the
expected versions, chains and inserts the rows. One round trip and one commit per append,
whatever its size; the statement is prepared by psycopg after its first uses, so each
call is a Bind/Execute on the wire (docs/event-store.md, "Serialization: commit order
equals position order"). The chain definition stays
:func:`oauthledger.events.chain.row_hash`: ``verify()`` recomputes every hash in Python,
so a function that drifted from it would be caught on the first verify (and is, in
tests/integration/test_store_chain_pg.py).
"""

from __future__ import annotations

import json
import select
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from oauthledger.events.chain import canonical_json
from oauthledger.events.errors import ConcurrencyConflict, EventStoreError, StoreUnavailable
from oauthledger.events.store_backend import (
    ConflictFrom,
    ConnectFn,
    RawConnectFn,
    Row,
    Write,
    first_line,
)

# The advisory lock that serializes appends: two 32-bit keys, a constant for this
# application and the OID of the events table, so stores in different schemas (or
# databases' test schemas) of one server do not serialize against each other. The append
# function (migration 0002) takes it with this class as its p_lock_class argument.
APPEND_LOCK_CLASS = 0x0A017E
# SQLSTATE raised by oauthledger_append (migration 0002) for a stale expected version;
# its DETAIL is the JSON array [stream_id, expected, actual].
PG_CONFLICT_SQLSTATE = "OL409"

# Arrays go in binary (%b): psycopg's text-format array quoting cost ~50 µs per
# event of client and server CPU, more than the whole function's work.
_APPEND = (
    "SELECT out_position, out_version, out_hash FROM oauthledger_append("
    "%b::text[], %b::int[], %b::int[], %b::text[], %b::smallint[], %b::text[], "
    "%s::text, %s::int)"
)
# The common append, one event to one stream: the arrays are built in the call from
# scalar parameters, which psycopg dumps in C (each list parameter costs ~20 us of
# Python on the client). Same function, same rules.
_APPEND_ONE = (
    "SELECT out_position, out_version, out_hash FROM oauthledger_append("
    "ARRAY[%s::text], ARRAY[%s::int], ARRAY[1], ARRAY[%s::text], ARRAY[%s::smallint], "
    "ARRAY[%s::text], %s::text, %s::int)"
)


class PostgresAdapter:
    """The event store's PostgreSQL backend, psycopg 3 (a
    :class:`~oauthledger.events.store_backend.StoreAdapter`)."""

    is_sqlite = False
    param = "%s"  # psycopg's format style

    def __init__(self, url: str, connect: ConnectFn, raw_connection: RawConnectFn,
                 conflict_from: ConflictFrom) -> None:
        self.url = url
        self._raw_connection = raw_connection
        self._conflict_from = conflict_from

    @staticmethod
    def create_engine(url: str) -> Engine:
        """A pooled engine that drops connections the server has closed at checkout,
        without a round trip."""
        engine = sa.create_engine(url, pool_size=10, max_overflow=20)

        @sa_event.listens_for(engine, "checkout")
        def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            # A PostgreSQL restart (or pg_terminate_backend) must not surface as a failed
            # request on a connection that died in the pool. SQLAlchemy's pool_pre_ping
            # would cost a SELECT 1 round trip on every checkout, as much as the append
            # itself; instead ask the kernel: an idle connection has nothing to read
            # unless the server sent its goodbye (FATAL message, EOF). DisconnectionError
            # makes the pool discard the connection and open a fresh one (SQLAlchemy's
            # documented custom pessimistic check).
            if _connection_gone(dbapi_conn):
                raise DisconnectionError("the server closed this pooled connection")

        return engine

    def end_read(self, raw: Any) -> None:
        """End the read-only transaction psycopg opened."""
        raw.rollback()

    def append(self, writes: Sequence[Write], meta_text: str) -> list[Row]:
        """One autocommit call of ``oauthledger_append`` (see the module docstring)."""
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
                    cur.execute(_APPEND_ONE, (streams[0], expected[0], types[0],
                                              schemas[0], datas[0], meta_text,
                                              APPEND_LOCK_CLASS))
                else:
                    cur.execute(_APPEND, (streams, expected, counts, types, schemas,
                                          datas, meta_text, APPEND_LOCK_CLASS))
                stored = cur.fetchall()
        except psycopg.Error as exc:
            raise self._error(writes, exc) from None
        finally:
            try:
                pg.autocommit = False  # as SQLAlchemy's pool expects it
            except psycopg.Error:
                raw.invalidate()  # broken connection: do not return it to the pool
            raw.close()
        return [
            (position, stream_id, version, type_name, schema, data, meta_text, h)
            for (position, version, h), stream_id, type_name, schema, data in zip(
                stored, event_streams, types, schemas, datas, strict=True)
        ]

    def _error(self, writes: Sequence[Write], exc: Exception) -> Exception:
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
            return StoreUnavailable(self.url, first_line(exc))
        # Anything else the server refused (e.g. a role without EXECUTE): one line.
        return EventStoreError(f"append refused by the database: {first_line(exc)}")


def _connection_gone(conn: Any) -> bool:
    """True when an idle psycopg connection is closed, broken, or has bytes waiting
    (an idle connection only gets those when the server is closing it; a rare notice
    costs one reconnect, never an error)."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))
