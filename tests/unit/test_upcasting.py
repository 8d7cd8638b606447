"""events/upcasting.py: a real schema change (ConsumerRegistered 1 -> 2), read back
from a stored row; unknown types and schemas from the future are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from oauthledger.events.catalog import EVENT_TYPES, AccessTokenRevoked, ConsumerRegistered
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.errors import CorruptEvent
from oauthledger.events.migrate import upgrade
from oauthledger.events.store import EventStore
from oauthledger.events.upcasting import (
    UPCASTERS,
    UnknownEventType,
    UnsupportedSchemaVersion,
    decode,
    upcast,
)

V1 = {
    "key": "jira",
    "name": "Jira",
    "description": "issue tracker",
    "callback_url": None,
    "public_key": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    "secret_sealed": None,
    "signature_method": "RSA-SHA1",
    "three_legged": True,
    "two_legged_user": None,
    "allow_impersonation": False,
    "allow_oauth10": False,
    "allow_plaintext_over_http": False,
}


def test_consumer_registered_is_at_schema_2() -> None:
    assert ConsumerRegistered.SCHEMA_VERSION == 2
    assert ("ConsumerRegistered", 1) in UPCASTERS


def test_v1_data_upcasts_to_the_v2_list() -> None:
    data = upcast("ConsumerRegistered", 1, dict(V1, signature_method="HMAC-SHA1"))
    assert "signature_method" not in data
    assert data["signature_methods"] == ["HMAC-SHA1"]


def test_v1_without_a_method_meant_rsa_sha1() -> None:
    # Schema 1 followed Atlassian, where RSA-SHA1 is the only method.
    data = {k: v for k, v in V1.items() if k != "signature_method"}
    assert decode("ConsumerRegistered", 1, data).signature_methods == ("RSA-SHA1",)


def test_upcast_does_not_mutate_the_stored_dict() -> None:
    stored = dict(V1)
    upcast("ConsumerRegistered", 1, stored)
    assert stored == V1


def test_decode_v1_gives_the_current_event() -> None:
    ev = decode("ConsumerRegistered", 1, dict(V1))
    assert isinstance(ev, ConsumerRegistered)
    assert ev.signature_methods == ("RSA-SHA1",)
    assert ev.key == "jira" and ev.public_key.startswith("-----BEGIN")


def test_current_schema_passes_through() -> None:
    ev = ConsumerRegistered(key="k", name="n", signature_methods=("HMAC-SHA1", "PLAINTEXT"))
    assert decode("ConsumerRegistered", 2, ev.to_data()) == ev


def test_every_catalog_type_round_trips_at_its_schema() -> None:
    ev = AccessTokenRevoked(token="t", by="admin", reason="user asked")
    assert decode(ev.type_name, ev.SCHEMA_VERSION, ev.to_data()) == ev
    assert all(cls.SCHEMA_VERSION >= 1 for cls in EVENT_TYPES.values())


def test_unknown_type() -> None:
    with pytest.raises(UnknownEventType, match="TokenTeleported"):
        decode("TokenTeleported", 1, {})


def test_schema_from_the_future() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="newer than this code"):
        decode("ConsumerRegistered", 3, {})


def test_missing_upcaster() -> None:
    # AccessTokenRevoked is at schema 1: schema 0 never existed, so there is no step.
    with pytest.raises(UnsupportedSchemaVersion):
        decode("AccessTokenRevoked", 2, {"token": "t", "by": "x"})


def test_data_that_does_not_fit() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="does not fit"):
        decode("AccessTokenRevoked", 1, {"token": "t", "by": "x", "colour": "red"})


def test_errors_are_value_errors() -> None:
    # The store turns ValueError into CorruptEvent with the row's position.
    assert issubclass(UnknownEventType, ValueError)
    assert issubclass(UnsupportedSchemaVersion, ValueError)


# -- through a store (a SQLite file: no server needed) -------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = EventStore.from_url(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    upgrade(store.engine)
    yield store
    store.engine.dispose()


def insert_row(store: EventStore, type_name: str, schema: int, data: dict) -> None:
    """Write a row as an older version of the code did: raw INSERT, correct hash."""
    position = store.head() + 1
    text, meta = canonical_json(data), canonical_json({"time": "2023-05-01T00:00:00+00:00"})
    stream = f"consumer-{data.get('key', position)}"
    h = row_hash(store.head_hash(), position, stream, 1, type_name, schema, text, meta)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
                " data, metadata, hash) VALUES (:p, :s, 1, :t, :v, :d, :m, :h)"
            ),
            {"p": position, "s": stream, "t": type_name, "v": schema, "d": text, "m": meta,
             "h": h},
        )


def test_stored_v1_row_reads_back_as_v2(sqlite_store: EventStore) -> None:
    insert_row(sqlite_store, "ConsumerRegistered", 1, dict(V1, signature_method="HMAC-SHA1"))
    row = sqlite_store.read_stream("consumer-jira")[0]
    assert row.schema_version == 1  # never rewritten
    assert '"signature_method":"HMAC-SHA1"' in row.data
    ev = row.event
    assert isinstance(ev, ConsumerRegistered)
    assert ev.signature_methods == ("HMAC-SHA1",)
    assert [r.event for r in sqlite_store.read_all()] == [ev]
    assert sqlite_store.verify().ok


def test_stored_row_of_unknown_type_or_future_schema(sqlite_store: EventStore) -> None:
    insert_row(sqlite_store, "TokenTeleported", 1, {"key": "x"})
    insert_row(sqlite_store, "ConsumerRegistered", 9, dict(V1, key="y"))
    x, y = sqlite_store.read_stream("consumer-x")[0], sqlite_store.read_stream("consumer-y")[0]
    with pytest.raises(CorruptEvent, match="position 1.*TokenTeleported"):
        _ = x.event
    with pytest.raises(CorruptEvent, match="position 2.*newer than this code"):
        _ = y.event
    result = sqlite_store.verify()
    assert (result.ok, result.bad_position) == (False, 1)
