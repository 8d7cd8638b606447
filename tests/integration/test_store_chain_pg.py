"""PostgreSQL appends run inside the server (``oauthledger_append``, migration 0002).

The function computes the hash chain itself, so these tests pin it to the one
definition that verify() uses (events.chain.row_hash) on awkward text, and check the
function's own refusals: stale versions, a snapshot that could be stale, a schema that is
behind the code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from oauthledger.events.catalog import AccessTokenRevoked, ConsumerRegistered, UserRegistered
from oauthledger.events.chain import row_hash
from oauthledger.events.errors import ConcurrencyConflict, EventStoreError, StoreUnavailable
from oauthledger.events.migrate import current_revision, upgrade
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.store import EventStore, StreamWrite
from oauthledger.events.store_postgres import APPEND_LOCK_CLASS

AWKWARD = [
    "plain",
    "ünïcödé and emoji 🔑🙂 (4-byte UTF-8)",
    'quotes \' " and backslashes \\ \\\\ and {braces} ,commas,',
    "separator \x1f and other controls \x01\t\n\r",
    "NULL",
    "",
    "右から左 \u202e mirrored",
]


def _stored_rows(store: EventStore) -> list[tuple]:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT position, stream_id, stream_version, type, schema_version, data, "
            "metadata, hash FROM events ORDER BY position").all()


def _awkward(i: int, text: str) -> UserRegistered:
    return UserRegistered(name=text or "empty", display_name=text, password_hash="h")


def test_server_chain_equals_the_python_definition_on_awkward_text(pg_store: EventStore) -> None:
    written = []
    # One event per call (scalar parameters) ...
    for i, text in enumerate(AWKWARD):
        written += pg_store.append(
            f"user-{i}-{text[:3].strip() or 'x'}", 0, [_awkward(i, text)],
            {"actor": text, "request_id": f"r{i}", "note": AWKWARD})
    # ... and all of them in one call (array parameters, binary).
    written += pg_store.append_many(
        [StreamWrite(f"batch-{i}", 0, [_awkward(i, text), _awkward(i, text[::-1])])
         for i, text in enumerate(AWKWARD)], {"actor": "ünï 🔑", "note": AWKWARD})
    rows = _stored_rows(pg_store)
    assert len(rows) == 3 * len(AWKWARD)
    prev = GENESIS_HASH
    for row, rec in zip(rows, written, strict=True):
        expected = row_hash(prev, *row[:7])
        assert row[7] == expected == rec.hash, row
        # What append returned is exactly what is stored.
        assert row == (rec.position, rec.stream_id, rec.stream_version, rec.type,
                       rec.schema_version, rec.data, rec.metadata, rec.hash)
        prev = expected
    assert pg_store.verify().ok


def test_a_stream_named_twice_in_one_call_continues_its_versions(pg_store: EventStore) -> None:
    pg_store.append("token-a", 0, [AccessTokenRevoked(token="a", by="x")])
    rows = pg_store.append_many([
        StreamWrite("token-a", 1, [AccessTokenRevoked(token="a", by="1")]),
        StreamWrite("token-b", 0, [AccessTokenRevoked(token="b", by="2")] * 2),
        StreamWrite("token-a", 2, [AccessTokenRevoked(token="a", by="3")]),
    ])
    assert [(r.position, r.stream_id, r.stream_version) for r in rows] == [
        (2, "token-a", 2), (3, "token-b", 1), (4, "token-b", 2), (5, "token-a", 3)]
    assert pg_store.verify().ok


def test_stale_expected_version_inside_a_batch_aborts_the_whole_call(pg_store: EventStore) -> None:
    pg_store.append("token-a", 0, [AccessTokenRevoked(token="a", by="x")])
    with pytest.raises(ConcurrencyConflict) as info:
        pg_store.append_many([
            StreamWrite("token-b", 0, [AccessTokenRevoked(token="b", by="1")]),
            StreamWrite("token-a", 0, [AccessTokenRevoked(token="a", by="2")]),
        ])
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("token-a", 0, 1)
    assert pg_store.head() == 1 and pg_store.stream_version("token-b") == 0


def test_the_function_refuses_a_repeatable_read_snapshot(pg_store: EventStore) -> None:
    """Under REPEATABLE READ the head would be read from a snapshot older than the lock:
    the function refuses instead of risking a duplicate position."""
    with pg_store.engine.connect() as conn:
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(sa.exc.DBAPIError, match="READ COMMITTED"):
            conn.exec_driver_sql(
                "SELECT * FROM oauthledger_append(ARRAY['s'], ARRAY[0], ARRAY[1], "
                "ARRAY['ConsumerRemoved'], ARRAY[1]::smallint[], ARRAY['{}'], '{}', "
                f"{APPEND_LOCK_CLASS})")


def test_mismatched_event_arrays_are_refused(pg_store: EventStore) -> None:
    with pg_store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="announced"):
        conn.exec_driver_sql(
            "SELECT * FROM oauthledger_append(ARRAY['s'], ARRAY[0], ARRAY[2], "
            "ARRAY['ConsumerRemoved'], ARRAY[1]::smallint[], ARRAY['{}'], '{}', "
            f"{APPEND_LOCK_CLASS})")
    assert pg_store.head() == 0


def test_a_database_at_revision_0001_is_told_to_upgrade(pg_url: str) -> None:
    """A production database migrated by the previous release has the table but not
    the function: appends say what to run, and `db upgrade` fixes it in place."""
    store = EventStore.from_url(pg_url)
    try:
        upgrade(store.engine, "0001")
        assert current_revision(store.engine) == "0001"
        event = ConsumerRegistered(key="k", name="n")
        with pytest.raises(StoreUnavailable, match="oauthledger db upgrade"):
            store.append("consumer-k", 0, [event])
        upgrade(store.engine)
        assert store.append("consumer-k", 0, [event])[0].position == 1
    finally:
        store.engine.dispose()


@contextmanager
def acting_as(store: EventStore, pg_url: str, *grants: str) -> Iterator[str]:
    """A new role (roles are server-wide: a unique name) with USAGE on the test schema
    and ``grants`` (``{schema}`` filled in); the store's pooled connection is switched to
    it, so the store's next calls run as that role. Dropped afterwards."""
    role = "oltest_" + uuid.uuid4().hex[:8]
    schema = pg_url.rsplit("%3D", 1)[1]
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role}")
        for grant in (f"GRANT USAGE ON SCHEMA {schema} TO {{role}}", *grants):
            conn.exec_driver_sql(grant.format(schema=schema, role=role))
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql(f"SET ROLE {role}")
            conn.commit()  # the pool's one connection keeps the role
        yield role
    finally:
        store.engine.dispose()
        admin = sa.create_engine(pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def test_a_role_without_execute_gets_one_line(pg_store: EventStore, pg_url: str) -> None:
    """Anything else the server refuses is an EventStoreError with its first line."""
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql("REVOKE EXECUTE ON FUNCTION oauthledger_append(text[], integer[], "
                             "integer[], text[], smallint[], text[], text, integer) FROM PUBLIC")
    with acting_as(pg_store, pg_url), \
            pytest.raises(EventStoreError, match="permission denied") as info:
        pg_store.append("s", 0, [AccessTokenRevoked(token="a", by="x")])
    assert "\n" not in str(info.value)


def test_the_documented_least_privilege_role_can_append(pg_store: EventStore, pg_url: str
                                                          ) -> None:
    """docs/event-store.md: USAGE on the schema, SELECT and INSERT on events (and the
    default EXECUTE) are all an application role needs; the function runs with its
    rights, not the owner's."""
    with acting_as(pg_store, pg_url, "GRANT SELECT, INSERT ON {schema}.events TO {role}"
                   ) as role:
        rows = pg_store.append_many([
            StreamWrite("token-a", 0, [AccessTokenRevoked(token="a", by="x")]),
            StreamWrite("token-b", 0, [AccessTokenRevoked(token="b", by="y")] * 2)])
        assert [r.position for r in rows] == [1, 2, 3]
        assert pg_store.append("token-a", 1, [AccessTokenRevoked(token="a", by="z")])
        with pytest.raises(ConcurrencyConflict):
            pg_store.append("token-a", 1, [AccessTokenRevoked(token="a", by="z")])
        assert pg_store.verify().ok and pg_store.head() == 4
        with pg_store.engine.connect() as conn:  # it was the role that did all this
            assert conn.exec_driver_sql("SELECT current_user").scalar() == role
