"""The event store's SQLite adapter (the embedded default): one file, WAL mode.

Appends serialize on SQLite's single write lock: ``BEGIN IMMEDIATE`` takes it before the
head is read, so positions follow commit order (docs/event-store.md,
"Serialization: commit order equals position order").
The version checks and the hash chain are computed here, in Python; the PostgreSQL
adapter does the same in the server (``oauthledger_append``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import ConcurrencyConflict, StoreUnavailable
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.store_backend import (
    ConflictFrom,
    ConnectFn,
    RawConnectFn,
    Row,
    Write,
    first_line,
)

_INSERT = (
    "INSERT INTO events (position, stream_id, stream_version, type, schema_version, data, "
    "metadata, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STREAM_VERSION = "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?"


class SqliteAdapter:
    """The event store's SQLite backend (a
    :class:`~oauthledger.events.store_backend.StoreAdapter`)."""

    is_sqlite = True
    param = "?"  # pysqlite's qmark style

    def __init__(self, url: str, connect: ConnectFn, raw_connection: RawConnectFn,
                 conflict_from: ConflictFrom) -> None:
        self.url = url
        self._connect = connect
        self._conflict_from = conflict_from

    @staticmethod
    def create_engine(url: str) -> Engine:
        """An engine whose connections run in WAL mode with full fsync and foreign keys,
        and whose transactions begin in the mode the connection's ``sqlite_begin``
        execution option names (``IMMEDIATE`` for appends)."""
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

    def end_read(self, raw: Any) -> None:
        """Nothing to end: connections run in autocommit between transactions."""

    def append(self, writes: Sequence[Write], meta_text: str) -> list[Row]:
        """BEGIN IMMEDIATE takes the database's single write lock before the head is
        read, so appends serialize and positions follow commit order."""
        try:
            with self._connect() as conn:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    last = conn.exec_driver_sql(
                        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
                    ).first()
                    # One read per stream, even for a stream named in several writes.
                    versions = {
                        sid: conn.exec_driver_sql(_STREAM_VERSION, (sid,)).scalar_one()
                        for sid in dict.fromkeys(w.stream_id for w in writes)
                    }
                    rows = build_rows(writes, last, versions, meta_text)
                    if rows:
                        conn.exec_driver_sql(_INSERT, rows)
                    return rows
        except IntegrityError as exc:
            raise self._conflict_from(writes, exc) from exc
        except OperationalError as exc:
            raise StoreUnavailable(self.url, first_line(exc)) from None


def build_rows(
    writes: Sequence[Write],
    last: tuple[int, str] | None,
    versions: dict[str, int],
    meta_text: str,
) -> list[Row]:
    """The append's rows (the columns of ``events``, in order) after the head ``last``
    (position, hash), checking each write's expected version against ``versions``
    (advanced in place). Raises :class:`ConcurrencyConflict`. On PostgreSQL,
    ``oauthledger_append`` (migration 0002) does the same in the server."""
    position, prev_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
    rows: list[Row] = []
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
