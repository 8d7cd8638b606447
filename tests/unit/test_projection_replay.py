"""RowReplay (the rebuild's fold) must give exactly what events.state.fold gives for every
field the read model holds, write exactly what a version-guarded apply of the reference
states writes, and the Redis encoding of a token must decode to the fold's state for the
fields readers use."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from oauthledger.events import catalog as ev
from oauthledger.events.audit import FastReplay
from oauthledger.events.chain import canonical_json
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel, decode_value, encode
from oauthledger.events.rebuild import RowReplay
from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.events.state import Replay, TokenState
from oauthledger.events.store import RecordedEvent
from oauthledger.events.token_codec import (
    NOT_IN_REDIS_VALUES,
    TOKEN_FIELDS_NOT_IN_REDIS,
    redis_view,
)


def _records(stream_events: list[tuple[str, ev.Event, str, int | None]]) -> list[RecordedEvent]:
    versions: dict[str, int] = {}
    out = []
    for pos, (stream, event, when, schema) in enumerate(stream_events, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        data = event.to_data()
        if schema == 1 and isinstance(event, ev.ConsumerRegistered):
            data.pop("signature_methods")
            data["signature_method"] = "RSA-SHA1"
        meta = canonical_json({"actor": "alice", "request_id": f"r{pos}", "time": when})
        out.append(RecordedEvent(pos, stream, versions[stream], event.type_name,
                                 schema or event.SCHEMA_VERSION, canonical_json(data), meta,
                                 "0" * 64))
    return out


T1 = "2025-06-01T10:00:00.123456+00:00"
T2 = "2025-06-01T10:05:00.654321+00:00"

HISTORY = [
    ("consumer-c", ev.ConsumerRegistered(key="c", name="App"), T1, 1),
    ("consumer-c", ev.ConsumerUpdated(key="c", changes={"name": "App 2",
                                                         "signature_methods": ["HMAC-SHA1"]}),
     T1, None),
    ("user-u", ev.UserRegistered(name="u", display_name="U", password_hash="h"), T1, None),
    ("token-r1", ev.RequestTokenIssued(token="r1", consumer_key="c", secret_sealed="s",
                                       callback="oob", expires_at=1748772600.5), T1, None),
    ("token-r1", ev.TokenApproved(token="r1", user="u", verifier_sealed="v"), T2, None),
    ("token-r1", ev.RequestTokenExchanged(token="r1", access_token="a1"), T2, None),
    ("token-a1", ev.AccessTokenIssued(token="a1", consumer_key="c", user="u", secret_sealed="s",
                                      session_handle_hash="hh", expires_at=1749377100.25,
                                      authorization_expires_at=1751969100.0,
                                      request_token="r1"), T2, None),
    ("token-a1", ev.AccessTokenRenewed(token="a1", new_token="a2"), T2, None),
    ("token-a2", ev.AccessTokenIssued(token="a2", consumer_key="c", user="u", secret_sealed="s2",
                                      session_handle_hash="hh", expires_at=1749377200,
                                      authorization_expires_at=1751969100.0,
                                      renewed_from="a1"), T2, None),
    ("token-a2", ev.AccessTokenRevoked(token="a2", by="admin", reason="r"), T2, None),
    ("token-r2", ev.RequestTokenIssued(token="r2", consumer_key="c", secret_sealed="s",
                                       callback=None, expires_at=1.0), T1, None),
    ("token-r2", ev.TokenDenied(token="r2", user="u"), T2, None),
    ("token-r3", ev.RequestTokenIssued(token="r3", consumer_key="c", secret_sealed="s",
                                       callback="https://x", expires_at=2.0), T1, None),
    ("token-r3", ev.RequestTokenExpired(token="r3"), T2, None),
    ("token-a3", ev.AccessTokenIssued(token="a3", consumer_key="c", user="ü", secret_sealed="s",
                                      session_handle_hash="hh", expires_at=3.0,
                                      authorization_expires_at=4.0), T1, None),
    ("token-a3", ev.AccessTokenExpired(token="a3"), T2, None),
    ("user-u", ev.UserDisabled(name="u"), T2, None),
    ("consumer-c", ev.ConsumerRemoved(key="c"), T2, None),
]


def _rows(records: list[RecordedEvent]) -> list[tuple]:
    return [tuple(r)[:7] if isinstance(r, tuple) else (
        r.position, r.stream_id, r.stream_version, r.type, r.schema_version, r.data,
        r.metadata) for r in records]


def _key(s: object) -> tuple[str, str | None]:
    return (type(s).__name__, getattr(s, "token", None) or getattr(s, "key", None)
            or getattr(s, "name", None))


def test_fast_replay_equals_reference_fold() -> None:
    """FastReplay (the audit commands' fold) gives the full reference states."""
    records = _records(HISTORY)
    reference = Replay()
    fast = FastReplay()
    for rec in records:
        reference.apply(rec)
        fast.apply(rec)
    assert {_key(s): s for s in fast.final_states()} == {
        _key(s): s for s in reference.states.values()}
    assert fast.position == reference.position == len(records)


def test_row_replay_equals_reference_fold() -> None:
    records = _records(HISTORY)
    reference = Replay()
    for rec in records:
        reference.apply(rec)
    fast = RowReplay()
    rows = _rows(records)
    fast.feed(rows[:5])
    fast.feed(rows[5:])  # batches carry state over
    got = {_key(s): s for s in fast.states()}
    want = {_key(s): redis_view(s) for s in reference.states.values()}
    assert got == want
    assert fast.position == reference.position == fast.count == len(records)
    assert not fast.slow
    # Every token event type took the fast path in this history.
    assert {r.type for r in records} >= {
        "RequestTokenIssued", "TokenApproved", "TokenDenied", "RequestTokenExchanged",
        "RequestTokenExpired", "AccessTokenIssued", "AccessTokenRenewed",
        "AccessTokenRevoked", "AccessTokenExpired"}
    assert len(fast.tokens) == 6


@pytest.mark.parametrize("cut", range(1, len(HISTORY)))
def test_ranges_with_forwarding_equal_one_fold(cut: int) -> None:
    """The parallel rebuild's split: the fold of a later range forwards the rows of
    streams that began before it (not a stream's first event, stream not seen there);
    the earlier range folds them after its own rows. Together: the one-pass fold."""
    records = _records(HISTORY)
    rows = _rows(records)
    whole = RowReplay()
    whole.feed(rows)
    first, later = RowReplay(), RowReplay(forwarding=True)
    first.feed(rows[:cut])
    later.feed(rows[cut:])
    forwarded = list(later.foreign or [])
    assert all(r[2] != 1 for r in forwarded)
    first.feed(forwarded)
    assert first.count + later.count == whole.count == len(rows)
    merged = {_key(s): s for s in first.states() + later.states()}
    assert len(merged) == len(first.states()) + len(later.states())  # no stream twice
    assert merged == {_key(s): s for s in whole.states()}


class _NoRedis:
    def register_script(self, script: str) -> None:
        return None


def test_row_replay_writes_what_the_reference_apply_writes() -> None:
    """The bulk arguments (key, version, payload, EXPIREAT, index operation) are the
    apply script's arguments for the reference states, entity for entity."""
    records = _records(HISTORY)
    reference = Replay()
    for rec in records:
        reference.apply(rec)
    rm = ReadModel(_NoRedis(), KeyLayout("x"))  # type: ignore[arg-type]
    fast = RowReplay()
    fast.feed(_rows(records))

    def entities(args: list) -> dict:
        return {(args[i], args[i + 1]): tuple(args[i + 2:i + 6])
                for i in range(4, len(args), 6)}

    got: dict = {}
    for n, args in fast.apply_args(rm, "x:p1", chunk=4):
        assert int(args[2]) == n and len(args) == 4 + 6 * n
        got.update(entities(args))
    want = entities(rm.apply_args(list(reference.states.values()), None, "x:p1"))
    assert got == want


def test_row_replay_hands_unusual_rows_to_the_reference_fold() -> None:
    """An older schema goes through the reference fold (upcasting); a token event before
    its stream's first fails like the reference fold."""
    records = _records(HISTORY)
    fast = RowReplay()
    fast.feed(_rows(records))
    assert "consumer-c" in fast.others  # schema 1 consumer: upcast by the reference
    orphan = _records([("token-z", ev.AccessTokenRevoked(token="z", by="a"), T1, None)])
    with pytest.raises(Exception) as fast_err:
        RowReplay().feed(_rows(orphan))
    with pytest.raises(Exception) as ref_err:
        Replay().apply(orphan[0])
    assert type(fast_err.value) is type(ref_err.value)


def test_row_replay_reports_corrupt_rows_like_the_reference() -> None:
    rec = _records(HISTORY[3:4])[0]
    broken = RecordedEvent(rec.position, rec.stream_id, rec.stream_version, rec.type,
                           rec.schema_version, "{not json", rec.metadata, rec.hash)
    with pytest.raises(Exception) as fast_err:
        RowReplay().feed(_rows([broken]))
    with pytest.raises(Exception) as ref_err:
        Replay().apply(broken)
    assert type(fast_err.value) is type(ref_err.value)


def test_token_encoding_round_trips_the_fields_readers_use() -> None:
    replay = Replay()
    for rec in _records(HISTORY):
        replay.apply(rec)
    tokens = [s for s in replay.states.values() if isinstance(s, TokenState)]
    assert len(tokens) == 6
    for state in tokens:
        decoded = decode_value("t", state.token, b"%d|%s" % (state.version, encode(state)))
        assert decoded == redis_view(state)
        defaults = {f.name: f.default for f in dataclasses.fields(TokenState)}
        for name in TOKEN_FIELDS_NOT_IN_REDIS:
            # The dance-only fields decode to their defaults; issued_at (no default) to
            # 0.0: no Redis reader uses it (docs/read-model.md, "Token encoding").
            want = 0.0 if name == "issued_at" else defaults[name]
            assert getattr(decoded, name) == want == NOT_IN_REDIS_VALUES[name]
        for f in dataclasses.fields(TokenState):
            if f.name not in TOKEN_FIELDS_NOT_IN_REDIS:
                assert getattr(decoded, f.name) == getattr(state, f.name), f.name
    # Packed: no field names in the stored payload.
    payload = encode(tokens[0])
    assert b"consumer_key" not in payload and b"status" not in payload


def test_sealed_secrets_stay_sealed_but_packed() -> None:
    """A real sealed secret is stored as key id + raw sealed bytes (not its base64 text),
    decodes to the identical sealed text, and never to the plaintext."""
    sealer = Sealer(KeyRing.generate())
    sealed = sealer.seal("token-secret-plaintext")
    state = TokenState(token="t" * 32, kind="access", consumer_key="consumer-1",
                       secret_sealed=sealed, status="active", expires_at=1749377100.123456,
                       issued_at=1748772300.654321, user="ü" * 3, version=7)
    payload = encode(state)
    assert b"token-secret-plaintext" not in payload
    assert sealed.encode() not in payload
    assert len(payload) < 17 + len("consumer-1") + len("ü" * 3) * 2 + len(sealed) - 20
    decoded = decode_value("t", state.token, b"7|" + payload)
    assert decoded == redis_view(state)
    assert sealer.open(decoded.secret_sealed) == "token-secret-plaintext"
    # Anything that is not exactly in the sealed format is kept as its text.
    for odd in ("s1.k0123abcd.AAAA=", "s1.kZZZZZZZZ.AAAA", "plain", "", "s1.k0123abcd.AB"):
        other = dataclasses.replace(state, secret_sealed=odd, user=None)
        assert decode_value("t", other.token, b"7|" + encode(other)) == redis_view(other)


def test_derived_secrets_are_stored_as_their_key_id() -> None:
    """A token whose secret is derived (the product's tokens) stores four key-id bytes
    for it: with a realistic consumer key and user the whole value is a Redis embedded
    string (at most 44 bytes with its ``<version>|``), and it decodes to the reference
    that opens to the secret."""
    sealer = Sealer(KeyRing.generate())
    token = "Qm9vb29vb29vb29vb29vbw"  # services.dance.new_token's shape: 22 characters
    secret, ref = sealer.token_secret(token)
    state = TokenState(token=token, kind="access", consumer_key="jira:123456789",
                       secret_sealed=ref, status="active", expires_at=1749377100.123456,
                       issued_at=1748772300.654321, user="john.smith", version=1)
    payload = encode(state)
    assert len(payload) == 1 + 8 + 1 + 14 + 1 + 10 + 4
    assert len(b"1|" + payload) <= 44
    assert secret.encode() not in payload and token.encode() not in payload
    decoded = decode_value("t", token, b"1|" + payload)
    assert decoded == redis_view(state)
    assert sealer.open(decoded.secret_sealed) == secret
    # A reference naming another token, or not in the exact format, is kept as its text:
    # decoding must never attach one token's derivation to another.
    kid = sealer.ring.active
    for odd in (f"d1.{kid}.other-token", f"d1.{kid}.{token}x", f"d1.kZZZZZZZZ.{token}",
                f"d1.{kid}{token}", f"d2.{kid}.{token}"):
        other = dataclasses.replace(state, secret_sealed=odd)
        assert decode_value("t", token, b"1|" + encode(other)) == redis_view(other)


@pytest.mark.parametrize("name_length", [0, 1, 127, 128, 300])
def test_long_identifiers_round_trip(name_length: int) -> None:
    state = TokenState(token="t", kind="request", consumer_key="c" * name_length,
                       secret_sealed="x", status="approved", expires_at=1.5, issued_at=0.25,
                       user="u" * name_length, version=2)
    assert decode_value("t", "t", b"2|" + encode(state)) == redis_view(state)


def test_values_written_with_issued_at_still_decode() -> None:
    """Values of the earlier layout (issued_at after expires_at, no flag saying it is
    absent) decode to the same state as the current one: an upgrade finds them in Redis
    until they are rewritten."""
    sealer = Sealer(KeyRing.generate())
    for user in ("alice", None):
        state = TokenState(token="a" * 32, kind="access", consumer_key="jira:123456789",
                           secret_sealed=sealer.seal("s" * 32), status="active",
                           expires_at=1749377100.123456, issued_at=1748772300.654321,
                           user=user, version=3)
        payload = encode(state)
        assert len(payload) == 1 + 8 + 1 + 14 + (1 + 5 if user else 0) + 4 + 60
        flags = payload[0]
        assert flags & 0x40  # "no issued_at"
        old = bytes([flags & ~0x40]) + payload[1:9] + struct.pack(
            "<d", state.issued_at) + payload[9:]
        assert decode_value("t", state.token, b"3|" + old) == redis_view(state)
        assert decode_value("t", state.token, b"3|" + payload) == redis_view(state)
