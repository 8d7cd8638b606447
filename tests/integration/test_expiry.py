"""The expiry sweep against real Redis and both stores: each Expired event is appended
exactly once even when sweeps overlap, and the read model follows."""

from __future__ import annotations

import threading
import time
from collections import Counter

from oauthledger.events import catalog as ev
from oauthledger.events.expiry import sweep_expired
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending
from oauthledger.events.readmodel import EXPIRED_TOKEN_GRACE
from oauthledger.events.state import token_stream


def _issue(store, token: str, expires_at: float, kind: str = "access") -> None:
    if kind == "access":
        event = ev.AccessTokenIssued(
            token=token, consumer_key="c", user="alice", secret_sealed="x",
            session_handle_hash="h", expires_at=expires_at, authorization_expires_at=expires_at)
    else:
        event = ev.RequestTokenIssued(token=token, consumer_key="c", secret_sealed="x",
                                      callback="oob", expires_at=expires_at)
    store.append(token_stream(token), 0, [event])


def test_overlapping_sweeps_expire_each_token_once(store, read_model) -> None:
    now = time.time()
    due = [f"due{i}" for i in range(60)]
    for t in due:
        _issue(store, t, now - 1)
    for t in ("req1", "req2"):
        _issue(store, t, now - 1, kind="request")
    _issue(store, "later", now + 3600)
    _issue(store, "revoked", now - 1)
    store.append(token_stream("revoked"), 1, [ev.AccessTokenRevoked(token="revoked", by="x")])
    project_pending(store, read_model)
    # Readers refuse the due tokens already, before any sweep (they check expires_at).
    assert not read_model.get("t", "due0").usable_at(now)

    results = []
    barrier = threading.Barrier(4)

    def sweeper() -> None:
        barrier.wait()
        results.append(sweep_expired(store, read_model, now=now, limit=7))

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4

    expired = Counter(
        rec.stream_id for rec in store.read_all(0)
        if rec.type in ("AccessTokenExpired", "RequestTokenExpired"))
    assert expired == Counter({token_stream(t): 1 for t in [*due, "req1", "req2"]})
    assert sum(r.expired_access for r in results) == 60
    assert sum(r.expired_request for r in results) == 2
    # The read model shows them expired and the index holds only the future token.
    assert read_model.get("t", "due7").status == "expired"
    assert read_model.get("t", "req2").status == "expired"
    assert read_model.due_tokens(now + 7200) == (["later"], [])
    again = sweep_expired(store, read_model, now=now)
    assert (again.expired_access, again.expired_request) == (0, 0)
    # The projector agrees with what the sweep published.
    assert project_pending(store, read_model).applied == 0


def _ttls(read_model, tokens: list[str]) -> dict[str, int]:
    ns = read_model.namespace()
    return {t: read_model.redis.ttl(KeyLayout.entity(ns, "t", t)) for t in tokens}


def test_active_access_tokens_carry_no_ttl_until_they_leave_the_active_state(
        store, read_model) -> None:
    """docs/read-model.md, "Token keys and their expiry": an active access token's key has
    no EXAT (the expiry index and the sweep end it); an access token that left the
    active state and every request token live until expiry + EXPIRED_TOKEN_GRACE. The
    same in the rebuild's bulk writer (the first projection rebuilds) and in the
    version-guarded apply (later projections, the sweep's publish)."""
    now = time.time()
    _issue(store, "live", now + 3600)
    _issue(store, "due", now - 1)
    _issue(store, "gone", now + 3600)
    store.append(token_stream("gone"), 1, [ev.AccessTokenRevoked(token="gone", by="x")])
    _issue(store, "req", now + 600, kind="request")
    assert project_pending(store, read_model).rebuilt  # the bulk writer
    _issue(store, "live2", now + 7200)  # the apply script
    _issue(store, "old", now + 1800)
    store.append(token_stream("old"), 1, [ev.AccessTokenRenewed(token="old", new_token="x")])
    assert not project_pending(store, read_model).rebuilt

    def grace_ttl(expires_at: float) -> int:
        return int(expires_at) + EXPIRED_TOKEN_GRACE - int(time.time())

    ttl = _ttls(read_model, ["live", "due", "gone", "req", "live2", "old"])
    assert ttl["live"] == ttl["due"] == ttl["live2"] == -1  # no TTL (present)
    for token, expires in (("gone", now + 3600), ("req", now + 600), ("old", now + 1800)):
        assert abs(ttl[token] - grace_ttl(expires)) <= 2, (token, ttl[token])
    # Not yet swept, the due token is still listed as active, and refused by its second.
    assert read_model.get("t", "due").status == "active"
    assert not read_model.get("t", "due").usable_at(now)

    result = sweep_expired(store, read_model, now=now)
    assert result.expired_access == 1
    ttl = _ttls(read_model, ["live", "due", "live2"])
    assert ttl["live"] == ttl["live2"] == -1
    assert abs(ttl["due"] - grace_ttl(now - 1)) <= 2  # expired: reclaimed after the grace
    assert read_model.get("t", "due").status == "expired"
    assert [t for t, _ in read_model.expiry_index()] == ["live", "live2"]
