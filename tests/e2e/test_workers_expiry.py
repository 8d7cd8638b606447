"""Two beats running by mistake, two workers: every token past due gets exactly one
Expired event in the log, and tokens stop working at their second regardless."""

from __future__ import annotations

import time
from collections import Counter

from oauthledger.events import catalog as ev
from oauthledger.events.projection import project_pending
from oauthledger.events.state import token_stream
from oauthledger.events.store import StreamWrite
from tests.e2e.conftest import wait_for


def test_two_beats_expire_each_token_exactly_once(pg_store, read_model, procs, tmp_path
                                                  ) -> None:
    project_pending(pg_store, read_model)
    now = time.time()
    tokens = [f"short{i}" for i in range(40)]
    pg_store.append_many([
        StreamWrite(token_stream(t), 0, [ev.AccessTokenIssued(
            token=t, consumer_key="c", user="alice", secret_sealed="x",
            session_handle_hash="h", expires_at=now + 2 + i * 0.05,
            authorization_expires_at=now + 60)])
        for i, t in enumerate(tokens)
    ])
    pg_store.append(token_stream("long"), 0, [ev.AccessTokenIssued(
        token="long", consumer_key="c", user="alice", secret_sealed="x",
        session_handle_hash="h", expires_at=now + 3600, authorization_expires_at=now + 7200)])
    project_pending(pg_store, read_model)
    assert all(read_model.get("t", t).usable_at(now) for t in tokens)
    # Workers stopped: the tokens still stop working at their second (readers check it).
    assert not any(read_model.get("t", t).usable_at(now + 5) for t in tokens)

    procs.worker("w1", concurrency=2)
    procs.worker("w2", concurrency=2)
    procs.beat("beat1", tmp_path / "beat1")
    procs.beat("beat2", tmp_path / "beat2")

    def expired() -> Counter:
        return Counter(r.stream_id for r in pg_store.read_all(0)
                       if r.type == "AccessTokenExpired")

    wait_for(lambda: len(expired()) == len(tokens), 90, "every short token to expire")
    # Let both beats sweep several more times over the same (now stale) candidates.
    sweeps = procs.log_text("w1").count("sweep_expired") + procs.log_text("w2").count(
        "sweep_expired")
    wait_for(lambda: procs.log_text("w1").count("sweep_expired")
             + procs.log_text("w2").count("sweep_expired") >= sweeps + 8, 60, "more sweeps")
    assert expired() == Counter({token_stream(t): 1 for t in tokens})
    assert read_model.get("t", "long").status == "active"
    assert all(read_model.get("t", t).status == "expired" for t in tokens)
    assert read_model.due_tokens(time.time()) == ([], [])
