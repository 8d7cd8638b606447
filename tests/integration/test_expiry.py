"""The expiry sweep against real Redis and both stores: each Expired event is appended
exactly once even when sweeps overlap, and the read model follows."""

from __future__ import annotations

import threading
import time
from collections import Counter

from oauthledger.events import catalog as ev
from oauthledger.events.expiry import sweep_expired
from oauthledger.events.projection import project_pending
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
