"""Secrets never reach the database in the clear (docs/design.md, "Sealed secrets":
secrets are sealed with AES-GCM before they enter an event).

A known secret is sealed, written through the store inside real events, and then the
raw bytes of the database are searched for it: the SQLite file and its write-ahead log,
the PostgreSQL table as ``COPY ... TO STDOUT`` and as text. Each search also finds the
sealed text, which proves it looked at the bytes the store wrote.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from oauthledger.events.catalog import AccessTokenIssued, ConsumerRegistered
from oauthledger.events.errors import SealingError
from oauthledger.events.sealing import KeyRing, Sealer, load_key_ring, save_key_ring
from oauthledger.events.store import EventStore


def secret_forms(secret: str) -> list[bytes]:
    """The byte patterns that would betray the secret: UTF-8, UTF-16 and base64."""
    raw = secret.encode()
    return [raw, secret.encode("utf-16-le"), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def write_secrets(store: EventStore, sealer: Sealer) -> tuple[str, str, str, str]:
    """Append a consumer and an access token carrying sealed secrets. Returns the plain
    shared secret, its sealed text, the plain token secret and its sealed text."""
    shared = "shared-" + secrets.token_hex(16)
    token_secret = "tokensecret-" + secrets.token_hex(16)
    shared_sealed, token_sealed = sealer.seal(shared), sealer.seal(token_secret)
    store.append(
        "consumer-c1", 0,
        [ConsumerRegistered(key="c1", name="Jira", secret_sealed=shared_sealed,
                            signature_methods=("HMAC-SHA1",))],
        {"actor": "admin"},
    )
    store.append(
        "token-a1", 0,
        [AccessTokenIssued(
            token="a1", consumer_key="c1", user="alice", secret_sealed=token_sealed,
            session_handle_hash="0" * 64, expires_at=2e9, authorization_expires_at=2e9,
        )],
    )
    return shared, shared_sealed, token_secret, token_sealed


def database_bytes(store: EventStore) -> bytes:
    """Every byte the store's database holds for the events table."""
    if store.is_sqlite:
        path = Path(store.engine.url.database)
        chunks = []
        # First the write-ahead log as the commits left it, then the main file after a
        # checkpoint has moved every page into it.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                chunks.append(side.read_bytes())
        assert chunks, "WAL mode: the commits must have left a -wal file"
        with store.engine.connect() as conn:
            busy, _log, _moved = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            assert busy == 0
        chunks.append(path.read_bytes())
        return b"\n".join(chunks)
    raw = store.engine.raw_connection()
    try:
        pg = raw.driver_connection
        out = bytearray()
        with pg.cursor() as cur:
            with cur.copy("COPY events TO STDOUT") as copy:
                for block in copy:
                    out += bytes(block)
            cur.execute("SELECT string_agg(e::text, E'\\n') FROM events e")
            out += b"\n" + cur.fetchone()[0].encode()
        pg.rollback()
        return bytes(out)
    finally:
        raw.close()


def test_sealed_secrets_never_stored_in_the_clear(store: EventStore) -> None:
    sealer = Sealer(KeyRing.generate())
    shared, shared_sealed, token_secret, token_sealed = write_secrets(store, sealer)
    blob = database_bytes(store)
    assert shared_sealed.encode() in blob and token_sealed.encode() in blob
    for secret in (shared, token_secret):
        for form in secret_forms(secret):
            assert form not in blob, f"{form!r} found in the database"
    # The stored seals still open to the secrets.
    consumer = store.read_stream("consumer-c1")[0].event
    token = store.read_stream("token-a1")[0].event
    assert sealer.open(consumer.secret_sealed) == shared
    assert sealer.open(token.secret_sealed) == token_secret


def test_rotation_new_seals_use_the_new_key_old_ones_still_open(
    store: EventStore, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.json"
    ring = load_key_ring(key_file, create=True)
    old_kid = ring.active
    _, old_sealed, _, _ = write_secrets(store, Sealer(ring))
    assert Sealer.key_id(old_sealed) == old_kid

    new_kid = ring.rotate()
    save_key_ring(key_file, ring)
    reloaded = Sealer(load_key_ring(key_file, create=False))
    assert new_kid != old_kid and reloaded.ring.active == new_kid

    fresh = "rotated-" + secrets.token_hex(8)
    new_sealed = reloaded.seal(fresh)
    assert Sealer.key_id(new_sealed) == new_kid
    store.append(
        "consumer-c2", 0,
        [ConsumerRegistered(key="c2", name="Bamboo", secret_sealed=new_sealed)],
    )
    rows = store.read_streams(["consumer-c1", "consumer-c2"])
    stored_old = rows["consumer-c1"][0].event.secret_sealed
    stored_new = rows["consumer-c2"][0].event.secret_sealed
    assert Sealer.key_id(stored_old) == old_kid
    assert reloaded.open(stored_old).startswith("shared-")
    assert reloaded.open(stored_new) == fresh
    # Destroying the old key makes old seals unreadable but leaves the chain verifiable:
    # the hash covers the sealed text, not the secret.
    del ring.keys[old_kid]
    without_old = Sealer(ring)
    with pytest.raises(SealingError, match=old_kid):
        without_old.open(stored_old)
    assert without_old.open(stored_new) == fresh
    assert store.verify().ok
    # A different ring cannot open either.
    with pytest.raises(SealingError):
        Sealer(KeyRing.generate()).open(stored_new)


def test_database_bytes_would_catch_a_plaintext_secret(store: EventStore) -> None:
    """The search is not vacuous: a secret written unsealed is found."""
    plain = "plaintext-" + secrets.token_hex(16)
    store.append(
        "consumer-bad", 0, [ConsumerRegistered(key="bad", name="Bad", secret_sealed=plain)]
    )
    assert plain.encode() in database_bytes(store)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM events")).scalar_one() == 1
