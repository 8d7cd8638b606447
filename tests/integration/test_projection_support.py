"""Scripted event histories shared by the projection, expiry and audit tests and the
projection benchmark, and the check that a live read model equals a fresh rebuild (no
test functions here)."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from oauthledger.events import catalog as ev
from oauthledger.events.projection import compare, snapshot
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild
from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.events.state import consumer_stream, token_stream, user_stream
from oauthledger.events.store import EventStore, StreamWrite


@dataclass
class History:
    """What :func:`make_history` wrote."""

    events: int = 0
    consumers: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)  # every access token issued
    active: set[str] = field(default_factory=set)  # still active at the end


def _token() -> str:
    return secrets.token_urlsafe(24)


def make_history(
    store: EventStore, grants: int, *, users: int = 50, consumers: int = 5,
    now: float = 1_750_000_000.0, ttl: float = 7 * 86400, seed: int = 1,
    chunk: int = 200, sealer: Sealer | None = None, register: bool = True,
) -> History:
    """Append a realistic history: consumers, users, then ``grants`` OAuth dances
    (request token issued, approved or denied, exchanged, access token issued), some of
    whose access tokens are later renewed, revoked or expired. Deterministic given
    ``seed`` apart from the random token strings. ``register=False`` reuses the
    consumers and users an earlier call registered."""
    rnd = random.Random(seed)
    sealer = sealer or Sealer(KeyRing.generate())
    h = History()
    writes: list[StreamWrite] = []

    def flush() -> None:
        if writes:
            rows = store.append_many(writes, {"actor": "script", "request_id": "bulk"})
            h.events += len(rows)
            writes.clear()

    for i in range(consumers):
        key = f"consumer-{i}"
        h.consumers.append(key)
        if register:
            writes.append(StreamWrite(consumer_stream(key), 0, [ev.ConsumerRegistered(
                key=key, name=f"App {i}", description="scripted", callback_url=None,
                public_key=None, secret_sealed=sealer.seal("cs" + str(i)),
                signature_methods=("HMAC-SHA1",))]))
    for i in range(users):
        name = f"user{i}"
        h.users.append(name)
        if register:
            writes.append(StreamWrite(user_stream(name), 0, [
                ev.UserRegistered(name=name, display_name=f"User {i}", password_hash=None)]))
    flush()
    for g in range(grants):
        consumer = rnd.choice(h.consumers)
        user = rnd.choice(h.users)
        req, acc = _token(), _token()
        roll = rnd.random()
        req_events: list[ev.Event] = [
            ev.RequestTokenIssued(token=req, consumer_key=consumer,
                                  secret_sealed=sealer.seal(_token()), callback="oob",
                                  expires_at=now + 600 + g * 0.001)]
        if roll < 0.05:
            req_events.append(ev.TokenDenied(token=req, user=user))
            writes.append(StreamWrite(token_stream(req), 0, req_events))
        else:
            req_events += [
                ev.TokenApproved(token=req, user=user, verifier_sealed=sealer.seal("v")),
                ev.RequestTokenExchanged(token=req, access_token=acc),
            ]
            writes.append(StreamWrite(token_stream(req), 0, req_events))
            acc_events: list[ev.Event] = [ev.AccessTokenIssued(
                token=acc, consumer_key=consumer, user=user,
                secret_sealed=sealer.seal(_token()), session_handle_hash=secrets.token_hex(32),
                expires_at=now + ttl + g * 0.001, authorization_expires_at=now + ttl + 30 * 86400,
                request_token=req)]
            h.access_tokens.append(acc)
            if roll < 0.15:
                acc_events.append(ev.AccessTokenRevoked(token=acc, by=user))
            elif roll < 0.20:
                acc_events.append(ev.AccessTokenExpired(token=acc))
            elif roll < 0.25:
                new = _token()
                acc_events.append(ev.AccessTokenRenewed(token=acc, new_token=new))
                writes.append(StreamWrite(token_stream(new), 0, [ev.AccessTokenIssued(
                    token=new, consumer_key=consumer, user=user,
                    secret_sealed=sealer.seal(_token()),
                    session_handle_hash=secrets.token_hex(32), expires_at=now + 2 * ttl,
                    authorization_expires_at=now + ttl + 30 * 86400, renewed_from=acc)]))
                h.access_tokens.append(new)
                h.active.add(new)
            else:
                h.active.add(acc)
            writes.append(StreamWrite(token_stream(acc), 0, acc_events))
        if len(writes) >= chunk:
            flush()
    flush()
    return h


def assert_equals_fresh_rebuild(store: EventStore, live: ReadModel, ref: ReadModel) -> None:
    """The live read model equals a rebuild from scratch (into ``ref``), key for key."""
    result = rebuild(store, ref)
    assert live.checkpoint() == result.checkpoint == ref.checkpoint() == store.head()
    diffs = compare(live, live.namespace(), ref.namespace())
    assert diffs == [], diffs[:5]
    assert snapshot(live.redis, live.namespace())  # not vacuously equal
