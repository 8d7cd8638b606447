"""``EventStore.verify()`` against a tampered table, on SQLite and PostgreSQL.

The attacker here has database rights: they switch off the append-only triggers (as the
table owner can) and edit, delete or swap rows directly. The hash chain must report the
position of the first bad row (docs/design.md, "Chained rows").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oauthledger.events.catalog import AccessTokenRevoked, UserRegistered
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import CorruptEvent
from oauthledger.events.store import EventStore

N = 8


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    """A store holding N events over a few streams (positions 1..N)."""
    for i in range(1, N + 1):
        stream = f"token-{i % 3}"
        store.append(stream, None, [AccessTokenRevoked(token=f"t{i}", by=f"user{i}")])
    assert store.verify().ok
    return store


@contextmanager
def tampering(store: EventStore) -> Iterator[Connection]:
    """A transaction with the append-only triggers out of the way, as an attacker with
    DDL rights would do it (PostgreSQL: disabled inside this test's schema; SQLite:
    dropped from this test's file)."""
    with store.engine.begin() as conn:
        if store.is_sqlite:
            conn.exec_driver_sql("DROP TRIGGER events_no_update")
            conn.exec_driver_sql("DROP TRIGGER events_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER USER")
        yield conn
        if not store.is_sqlite:
            conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER USER")


def raw_row(conn: Connection, position: int) -> dict:
    """One stored row as a dict."""
    return dict(
        conn.execute(sa.text("SELECT * FROM events WHERE position = :p"), {"p": position})
        .mappings()
        .one()
    )


def insert_raw(store: EventStore, **fields: object) -> int:
    """INSERT one row after the head with a correct chain hash (INSERT is allowed: the
    triggers only refuse UPDATE and DELETE). Returns its position."""
    position = store.head() + 1
    row = {
        "stream_id": "token-raw", "stream_version": 1, "type": "AccessTokenRevoked",
        "schema_version": 1, "data": '{"by":"x","reason":"revoked","token":"t"}',
        "metadata": canonical_json({"time": "2024-01-01T00:00:00+00:00"}),
    }
    row.update(fields)
    h = row_hash(
        store.head_hash(), position, row["stream_id"], row["stream_version"], row["type"],
        row["schema_version"], row["data"], row["metadata"],
    )
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
                " data, metadata, hash) VALUES (:position, :stream_id, :stream_version, :type,"
                " :schema_version, :data, :metadata, :hash)"
            ),
            {**row, "position": position, "hash": h},
        )
    return position


def test_intact_chain_is_ok_and_counted(filled: EventStore) -> None:
    reported: list[int] = []
    result = filled.verify(progress=reported.append)
    assert result.ok
    assert result.count == N
    assert result.bad_position is None and result.reason is None
    assert result.head_hash == filled.head_hash()
    assert reported[-1] == N


def test_edited_row_is_reported_at_its_position(filled: EventStore) -> None:
    with tampering(filled) as conn:
        conn.exec_driver_sql(
            "UPDATE events SET data = REPLACE(data, 'user3', 'mallory') WHERE position = 3"
        )
        assert "mallory" in raw_row(conn, 3)["data"]
    result = filled.verify()
    assert not result.ok
    assert result.bad_position == 3
    assert result.count == 2
    assert "hash does not match" in result.reason


def test_edited_row_with_its_own_hash_recomputed_breaks_the_next_row(filled: EventStore) -> None:
    """A smarter attacker re-hashes the edited row; the next row's link still breaks."""
    with tampering(filled) as conn:
        prev = raw_row(conn, 2)["hash"]
        row = raw_row(conn, 3)
        data = row["data"].replace("user3", "mallory")
        h = row_hash(
            prev, 3, row["stream_id"], row["stream_version"], row["type"],
            row["schema_version"], data, row["metadata"],
        )
        conn.execute(
            sa.text("UPDATE events SET data = :d, hash = :h WHERE position = 3"),
            {"d": data, "h": h},
        )
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, 4)


def test_metadata_edit_is_detected(filled: EventStore) -> None:
    with tampering(filled) as conn:
        conn.exec_driver_sql(
            "UPDATE events SET metadata = REPLACE(metadata, '\"time\"', '\"tim\"')"
            " WHERE position = 6"
        )
    assert filled.verify().bad_position == 6


def test_deleted_row_is_reported_at_its_position(filled: EventStore) -> None:
    with tampering(filled) as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE position = 5")
    result = filled.verify()
    assert not result.ok
    assert result.bad_position == 5
    assert result.count == 4
    assert "missing" in result.reason


def test_deleted_first_row_is_reported(filled: EventStore) -> None:
    with tampering(filled) as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE position = 1")
    assert filled.verify().bad_position == 1


def test_deleted_and_renumbered_rows_are_reported(filled: EventStore) -> None:
    """Deleting row 4 and shifting the later rows down hides the gap, not the edit."""
    with tampering(filled) as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE position = 4")
        for p in range(5, N + 1):
            conn.execute(
                sa.text("UPDATE events SET position = :new WHERE position = :old"),
                {"new": p - 1, "old": p},
            )
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, 4)


def test_swapped_rows_are_reported_at_the_first(filled: EventStore) -> None:
    with tampering(filled) as conn:
        a, b = raw_row(conn, 3), raw_row(conn, 4)
        assert a["hash"] != b["hash"]
        conn.exec_driver_sql("UPDATE events SET position = -1 WHERE position = 3")
        conn.exec_driver_sql("UPDATE events SET position = 3 WHERE position = 4")
        conn.exec_driver_sql("UPDATE events SET position = 4 WHERE position = -1")
        assert raw_row(conn, 3)["hash"] == b["hash"]
    result = filled.verify()
    assert not result.ok
    assert result.bad_position == 3
    assert result.count == 2


def test_truncated_tail_needs_an_external_anchor(filled: EventStore) -> None:
    """Deleting the newest rows leaves a valid, shorter chain: only a head hash recorded
    elsewhere (docs/event-store.md, "Anchoring") reveals it."""
    anchor = filled.head_hash()
    with tampering(filled) as conn:
        conn.exec_driver_sql(f"DELETE FROM events WHERE position > {N - 2}")
    result = filled.verify()
    assert result.ok and result.count == N - 2
    assert filled.head_hash() != anchor


def test_row_with_bad_json_is_reported(filled: EventStore) -> None:
    position = insert_raw(filled, data='{"token": "t", "by": ')
    result = filled.verify()
    assert (result.ok, result.bad_position, result.count) == (False, position, N)
    with pytest.raises(CorruptEvent) as info:
        _ = filled.read_stream("token-raw")[0].event
    assert info.value.position == position


def test_row_with_bad_metadata_json_is_reported(filled: EventStore) -> None:
    position = insert_raw(filled, metadata="not json")
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, position)
    with pytest.raises(CorruptEvent):
        _ = filled.read_stream("token-raw")[0].meta


@pytest.mark.parametrize("field", ["data", "metadata"])
def test_row_whose_json_is_not_an_object_is_reported(filled: EventStore, field: str) -> None:
    position = insert_raw(filled, **{field: "[]"})
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, position)
    assert "JSON objects" in result.reason
    with pytest.raises(CorruptEvent):
        row = filled.read_stream("token-raw")[0]
        _ = row.event if field == "data" else row.meta


def test_row_with_unknown_type_is_reported(filled: EventStore) -> None:
    position = insert_raw(filled, type="TokenTeleported")
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, position)
    assert "TokenTeleported" in result.reason
    with pytest.raises(CorruptEvent, match="TokenTeleported"):
        _ = filled.read_stream("token-raw")[0].event


def test_row_from_a_future_schema_is_reported(filled: EventStore) -> None:
    position = insert_raw(filled, schema_version=99)
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, position)
    assert "newer than this code" in result.reason


def test_row_whose_data_does_not_fit_its_type_is_reported(filled: EventStore) -> None:
    position = insert_raw(filled, data='{"token": "t", "unexpected": 1}')
    result = filled.verify()
    assert (result.ok, result.bad_position) == (False, position)


def test_rows_after_a_good_raw_insert_still_verify(filled: EventStore) -> None:
    """The helper's hash is the store's hash: a well-formed raw row verifies, so the
    failures above come from the content, not from the helper."""
    insert_raw(filled)
    filled.append("user-x", 0, [UserRegistered(name="x", display_name="X", password_hash=None)])
    result = filled.verify()
    assert result.ok and result.count == N + 2
