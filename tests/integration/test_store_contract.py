"""The event store's contract, run against SQLite and PostgreSQL alike (the ``store``
fixture is parametrized over both backends; PostgreSQL is the real server).

docs/design.md, "Append only" and "No silent overwrite": one table written only by INSERT,
optimistic concurrency on (stream id, stream version), commit order equals position order, and the
database itself refuses UPDATE and DELETE.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from oauthledger.events.catalog import AccessTokenRevoked, ConsumerRegistered, UserRegistered
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import ConcurrencyConflict, StoreUnavailable
from oauthledger.events.migrate import current_revision, ensure_schema, head_revision, upgrade
from oauthledger.events.queries import streams_of_type, streams_with
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.store import EventStore, RecordedEvent, StreamWrite, UnstorableText
from tests.conftest import PG_URL


def revoked(n: int, by: str = "admin") -> AccessTokenRevoked:
    """A small event whose payload identifies it."""
    return AccessTokenRevoked(token=f"tok-{n}", by=by)


# -- empty store ------------------------------------------------------------------------


def test_empty_store(store: EventStore) -> None:
    assert store.head() == 0
    assert store.head_hash() == GENESIS_HASH
    assert list(store.read_all()) == []
    assert store.read_stream("token-nothing") == []
    assert store.read_streams(["a", "b"]) == {"a": [], "b": []}
    assert store.read_streams([]) == {}
    assert store.stream_version("token-nothing") == 0
    assert store.count_by_type() == {}
    assert store.stream_count() == 0
    result = store.verify()
    assert result.ok and result.count == 0
    store.ping()


# -- append / read_stream -----------------------------------------------------------------


def test_append_then_read_stream(store: EventStore) -> None:
    written = store.append("token-a", 0, [revoked(1), revoked(2)], {"actor": "alice"})
    assert [(r.position, r.stream_id, r.stream_version) for r in written] == [
        (1, "token-a", 1),
        (2, "token-a", 2),
    ]
    assert all(isinstance(r, RecordedEvent) for r in written)
    read = store.read_stream("token-a")
    assert read == written
    assert [r.event for r in read] == [revoked(1), revoked(2)]
    assert read[0].type == "AccessTokenRevoked"
    assert read[0].schema_version == AccessTokenRevoked.SCHEMA_VERSION
    assert store.read_stream("token-a", after_version=1) == written[1:]
    assert store.read_stream("token-a", after_version=2) == []
    assert store.stream_version("token-a") == 2

    more = store.append("token-a", 2, [revoked(3)])
    assert (more[0].position, more[0].stream_version) == (3, 3)
    assert [r.event for r in store.read_stream("token-a")] == [revoked(1), revoked(2), revoked(3)]


def test_streams_are_independent(store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1)])
    store.append("token-b", 0, [revoked(2)])
    store.append("token-a", 1, [revoked(3)])
    assert [r.stream_version for r in store.read_stream("token-a")] == [1, 2]
    assert [r.stream_version for r in store.read_stream("token-b")] == [1]
    both = store.read_streams(["token-a", "token-b", "token-none"])
    assert [r.position for r in both["token-a"]] == [1, 3]
    assert [r.position for r in both["token-b"]] == [2]
    assert both["token-none"] == []
    assert store.stream_count() == 2


def test_tuple_fields_round_trip(store: EventStore) -> None:
    ev = ConsumerRegistered(
        key="c1", name="Jira", signature_methods=("HMAC-SHA1", "RSA-SHA1"),
        callback_url="https://example.com/cb",
    )
    store.append("consumer-c1", 0, [ev])
    assert store.read_stream("consumer-c1")[0].event == ev


def test_append_nothing_writes_nothing(store: EventStore) -> None:
    assert store.append("token-a", 0, []) == []
    assert store.head() == 0


def test_any_version_skips_the_check(store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1)])
    rows = store.append("token-a", None, [revoked(2)])
    assert rows[0].stream_version == 2


# -- optimistic concurrency -------------------------------------------------------------


def test_stale_writer_gets_a_conflict_and_overwrites_nothing(store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1)])
    seen_by_both = store.stream_version("token-a")
    first = store.append("token-a", seen_by_both, [revoked(2, by="first")])
    with pytest.raises(ConcurrencyConflict) as info:
        store.append("token-a", seen_by_both, [revoked(2, by="second")])
    assert info.value.stream_id == "token-a"
    assert info.value.expected == 1
    assert info.value.actual == 2
    rows = store.read_stream("token-a")
    assert [r.event.by for r in rows] == ["admin", "first"]
    assert rows[1] == first[0]
    assert store.head() == 2
    assert store.verify().ok


def test_writer_ahead_of_the_stream_gets_a_conflict(store: EventStore) -> None:
    with pytest.raises(ConcurrencyConflict) as info:
        store.append("token-a", 3, [revoked(1)])
    assert info.value.actual == 0
    assert store.head() == 0


def test_new_stream_expected_zero_conflicts_when_it_exists(store: EventStore) -> None:
    bob = UserRegistered(name="bob", display_name="Bob", password_hash=None)
    store.append("user-bob", 0, [bob])
    with pytest.raises(ConcurrencyConflict):
        store.append("user-bob", 0, [UserRegistered("bob", "Bob 2", None)])
    assert store.read_stream("user-bob")[0].event.display_name == "Bob"


# -- append_many ------------------------------------------------------------------------


def test_append_many_writes_all_streams_in_one_transaction(store: EventStore) -> None:
    store.append("token-b", 0, [revoked(0)])
    rows = store.append_many(
        [
            StreamWrite("token-a", 0, [revoked(1), revoked(2)]),
            StreamWrite("token-b", 1, [revoked(3)]),
        ],
        {"actor": "bob", "request_id": "r-1"},
    )
    assert [(r.position, r.stream_id, r.stream_version) for r in rows] == [
        (2, "token-a", 1), (3, "token-a", 2), (4, "token-b", 2),
    ]
    # One transaction, one metadata record shared by every row.
    assert len({r.metadata for r in rows}) == 1
    assert list(store.read_all(1)) == rows


def test_append_many_conflict_on_second_stream_aborts_the_first(store: EventStore) -> None:
    store.append("token-b", 0, [revoked(0)])
    store.append("token-a", 0, [revoked(9)])
    head_before, hash_before = store.head(), store.head_hash()
    with pytest.raises(ConcurrencyConflict) as info:
        store.append_many(
            [
                StreamWrite("token-a", 1, [revoked(1)]),  # would succeed on its own
                StreamWrite("token-b", 0, [revoked(2)]),  # stale: token-b is at 1
                StreamWrite("token-c", 0, [revoked(3)]),
            ]
        )
    assert info.value.stream_id == "token-b"
    assert store.head() == head_before
    assert store.head_hash() == hash_before
    assert store.stream_version("token-a") == 1
    assert store.read_stream("token-c") == []
    # The store is still usable and the chain intact after the aborted transaction.
    store.append("token-a", 1, [revoked(1)])
    assert store.verify().ok


# -- read_all ---------------------------------------------------------------------------


def test_read_all_order_after_position_and_limit(store: EventStore) -> None:
    for i in range(1, 11):
        store.append(f"token-{i % 3}", None, [revoked(i)])
    everything = list(store.read_all())
    assert [r.position for r in everything] == list(range(1, 11))
    assert [r.event.token for r in everything] == [f"tok-{i}" for i in range(1, 11)]
    # Keyset pagination across several small batches gives the same rows.
    assert list(store.read_all(batch_size=3)) == everything
    assert [r.position for r in store.read_all(after_position=7)] == [8, 9, 10]
    assert [r.position for r in store.read_all(after_position=2, limit=4)] == [3, 4, 5, 6]
    assert [r.position for r in store.read_all(after_position=2, limit=4, batch_size=3)] == [
        3, 4, 5, 6,
    ]
    assert list(store.read_all(limit=0)) == []
    assert list(store.read_all(after_position=10)) == []
    assert list(store.read_all(after_position=99)) == []


def test_head_and_head_hash_follow_the_last_row(store: EventStore) -> None:
    rows = store.append("token-a", 0, [revoked(1), revoked(2)])
    assert store.head() == 2
    assert store.head_hash() == rows[-1].hash
    assert rows[0].hash != rows[1].hash
    # The chain links each row to the one before it.
    assert rows[0].hash == row_hash(
        GENESIS_HASH, 1, "token-a", 1, "AccessTokenRevoked", 1, rows[0].data, rows[0].metadata
    )
    assert rows[1].hash == row_hash(
        rows[0].hash, 2, "token-a", 2, "AccessTokenRevoked", 1, rows[1].data, rows[1].metadata
    )


def test_count_by_type(store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1), revoked(2)])
    store.append("user-u", 0, [UserRegistered(name="u", display_name="U", password_hash=None)])
    assert store.count_by_type() == {"AccessTokenRevoked": 2, "UserRegistered": 1}


# -- metadata ---------------------------------------------------------------------------


def test_metadata_round_trip(store: EventStore) -> None:
    store = EventStore(store.engine, clock=lambda: 1_700_000_000.25)
    meta = {"actor": "zoë", "request_id": "req-ä-1", "ip": "10.0.0.1", "extra": {"n": [1, 2]}}
    rows = store.append("token-a", 0, [revoked(1)], meta)
    stored = store.read_stream("token-a")[0]
    assert stored.meta == {**meta, "time": "2023-11-14T22:13:20.250000+00:00"}
    assert stored.time == 1_700_000_000.25
    assert stored.metadata == rows[0].metadata == canonical_json(stored.meta)
    # A caller-supplied time is kept as given.
    store.append("token-a", 1, [revoked(2)], {"time": "2020-01-01T00:00:00+00:00"})
    assert store.read_stream("token-a")[1].meta == {"time": "2020-01-01T00:00:00+00:00"}


def test_default_time_is_now_in_utc(store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1)])
    meta = store.read_stream("token-a")[0].meta
    stamp = datetime.fromisoformat(meta["time"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0


# -- identifiers the database cannot hold -----------------------------------------------

# PostgreSQL text cannot hold NUL, and no backend holds an unpaired surrogate (no UTF-8
# form): ids and values built from them can never exist (docs/event-store.md,
# "Identifiers the database cannot hold").
IMPOSSIBLE = ["token-\x00", "\x00", "token-a\x00", "token-\ud800", "user-\udfffx"]


@pytest.mark.parametrize("stream_id", IMPOSSIBLE)
def test_reads_of_an_impossible_stream_id_find_nothing(store: EventStore,
                                                      stream_id: str) -> None:
    store.append("token-a", 0, [revoked(1)])
    assert store.stream_version(stream_id) == 0
    assert store.read_stream(stream_id) == []
    assert store.read_stream(stream_id, after_version=0) == []
    both = store.read_streams([stream_id, "token-a"])
    assert both[stream_id] == []
    assert [r.stream_version for r in both["token-a"]] == [1]
    assert store.read_streams([stream_id]) == {stream_id: []}


@pytest.mark.parametrize("stream_id", IMPOSSIBLE)
def test_appends_to_an_impossible_stream_id_are_refused_and_write_nothing(
        store: EventStore, stream_id: str) -> None:
    store.append("token-a", 0, [revoked(1)])
    with pytest.raises(UnstorableText, match="cannot be stored: PostgreSQL text cannot hold NUL"):
        store.append(stream_id, 0, [revoked(2)])
    with pytest.raises(ValueError, match="cannot be stored"):
        store.append_many([StreamWrite("token-b", 0, [revoked(3)]),
                           StreamWrite(stream_id, 0, [revoked(4)])])
    assert store.head() == 1
    assert store.stream_count() == 1
    assert store.verify().ok


@pytest.mark.parametrize("stream_id", ["token-\x01", "token-\x1f", "token-\x7f", "", "t" * 256])
def test_stream_ids_with_control_characters_or_bad_lengths_are_refused(
        store: EventStore, stream_id: str) -> None:
    with pytest.raises(ValueError, match="invalid stream id"):
        store.append(stream_id, 0, [revoked(1)])
    assert store.head() == 0


def test_event_text_that_is_not_unicode_is_refused_and_writes_nothing(
        store: EventStore) -> None:
    store.append("token-a", 0, [revoked(1)])
    with pytest.raises(UnstorableText, match="unpaired surrogate"):
        store.append("token-b", 0, [revoked(2, by="admin\ud800")])
    with pytest.raises(UnstorableText, match="metadata .* cannot be stored"):
        store.append("token-b", 0, [revoked(2)], {"actor": "\udc80"})
    assert store.head() == 1
    # NUL inside event text is JSON-escaped (RFC 8259 §7), so both backends hold it.
    row = store.append("token-b", 0, [revoked(3, by="a\x00b")], {"actor": "x\x00y"})[0]
    assert store.read_stream("token-b") == [row]
    assert row.event.by == "a\x00b" and row.meta["actor"] == "x\x00y"
    assert store.verify().ok


@pytest.mark.parametrize("value", ["\x00", "bob\x00", "\ud800"])
def test_field_queries_with_impossible_values_find_nothing(store: EventStore,
                                                          value: str) -> None:
    store.append("token-a", 0, [revoked(1, by="bob")])
    assert streams_with(store, ["AccessTokenRevoked"], "by", "bob") == ["token-a"]
    assert streams_with(store, ["AccessTokenRevoked"], "by", value) == []
    assert streams_with(store, ["AccessTokenRevoked", value], "by", "bob") == ["token-a"]
    assert streams_of_type(store, "AccessTokenRevoked") == ["token-a"]
    assert streams_of_type(store, value) == []


# -- upcasting on read ------------------------------------------------------------------


def test_a_schema_1_row_is_read_as_schema_2(store: EventStore) -> None:
    """ConsumerRegistered schema 1 had one ``signature_method``; rows stored that way are
    never rewritten but read back in the current shape (events/upcasting.py)."""
    data = canonical_json({"key": "old", "name": "Old consumer", "signature_method": "HMAC-SHA1"})
    meta = canonical_json({"time": "2024-01-01T00:00:00+00:00"})
    h = row_hash(GENESIS_HASH, 1, "consumer-old", 1, "ConsumerRegistered", 1, data, meta)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
                " data, metadata, hash) VALUES (1, 'consumer-old', 1, 'ConsumerRegistered', 1,"
                " :d, :m, :h)"
            ),
            {"d": data, "m": meta, "h": h},
        )
    row = store.read_stream("consumer-old")[0]
    assert row.schema_version == 1
    assert row.event == ConsumerRegistered(
        key="old", name="Old consumer", signature_methods=("HMAC-SHA1",)
    )
    assert json.loads(row.data)["signature_method"] == "HMAC-SHA1"  # stored bytes untouched
    assert store.verify().ok
    # New appends chain on after the old row.
    store.append("consumer-old", 1, [revoked(1)])
    assert store.verify().count == 2


# -- the database refuses UPDATE and DELETE ---------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE position = 1",
        "UPDATE events SET hash = 'x'",
        "DELETE FROM events WHERE position = 1",
        "DELETE FROM events",
    ],
)
def test_update_and_delete_are_refused_by_the_database(store: EventStore, statement: str) -> None:
    rows = store.append("token-a", 0, [revoked(1)])
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert store.read_stream("token-a") == rows
    assert store.verify().ok


def test_truncate_is_refused_on_postgresql(store: EventStore) -> None:
    if store.is_sqlite:
        # SQLite has no TRUNCATE; "DELETE FROM events" (refused above) is its equivalent.
        assert store.engine.dialect.name == "sqlite"
        return
    store.append("token-a", 0, [revoked(1)])
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE events")
    assert store.head() == 1


# -- migrations -------------------------------------------------------------------------


def test_migrations_are_idempotent(store: EventStore) -> None:
    head = head_revision()
    assert head
    assert current_revision(store.engine) == head
    store.append("token-a", 0, [revoked(1)])
    assert upgrade(store.engine) == (head, head)
    ensure_schema(store.engine)
    assert current_revision(store.engine) == head
    assert [r.event for r in store.read_stream("token-a")] == [revoked(1)]
    # The triggers were not duplicated or dropped by the second run.
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events")


def test_fresh_database_starts_unmigrated(store_url: str) -> None:
    fresh = EventStore.from_url(store_url)
    try:
        assert current_revision(fresh.engine) is None
        before, after = upgrade(fresh.engine)
        assert (before, after) == (None, head_revision())
        assert fresh.head() == 0
    finally:
        fresh.engine.dispose()


# -- an unreachable database is one clear error -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://auditor:hunter2@127.0.0.1:1/nowhere?connect_timeout=5",
        "sqlite:////nonexistent-dir/for/sure/events.sqlite3",
    ],
    ids=["postgresql", "sqlite"],
)
def test_unreachable_database_raises_store_unavailable(url: str) -> None:
    store = EventStore.from_url(url)
    calls = [
        lambda: store.append("token-a", 0, [revoked(1)]),
        lambda: list(store.read_all()),
        lambda: store.read_stream("token-a"),
        lambda: store.head(),
        lambda: store.verify(),
        lambda: store.ping(),
    ]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert "hunter2" not in str(info.value)
            assert "unavailable" in str(info.value)
    finally:
        store.engine.dispose()


def test_unmigrated_database_raises_store_unavailable(store_url: str) -> None:
    store = EventStore.from_url(store_url)
    try:
        for call in (
            lambda: store.append("token-a", 0, [revoked(1)]),
            lambda: list(store.read_all()),
        ):
            with pytest.raises(StoreUnavailable, match="events"):
                call()
        # The failed append left the pool usable: migrating now makes it work.
        upgrade(store.engine)
        assert store.append("token-a", 0, [revoked(1)])[0].position == 1
    finally:
        store.engine.dispose()


def test_append_survives_a_pooled_connection_killed_by_the_server(pg_url: str) -> None:
    """A pooled connection that the server killed (a restart) is replaced at checkout:
    the next append succeeds and stores its event exactly once."""
    from oauthledger.events.catalog import ConsumerRemoved
    from oauthledger.events.migrate import upgrade

    name = "olstale" + uuid.uuid4().hex[:8]
    store = EventStore.from_url(f"{pg_url}&application_name={name}")
    upgrade(store.engine)
    try:
        store.append("s-1", 0, [ConsumerRemoved(key="a")])
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            killed = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = '{name}'").scalars().all()
        admin.dispose()
        assert killed and all(killed)
        store.append("s-2", 0, [ConsumerRemoved(key="b")])
        assert [r.stream_id for r in store.read_all()] == ["s-1", "s-2"]
        assert store.verify().ok
    finally:
        store.engine.dispose()
