"""EmbeddedWorkers on the in-process Redis-compatible store (the embedded default):
replays the log at start, projects when woken, sweeps on its interval, stops cleanly."""

from __future__ import annotations

import time

import fakeredis

from oauthledger.events import catalog as ev
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import token_stream
from oauthledger.services.embedded import EmbeddedWorkers
from tests.e2e.conftest import wait_for
from tests.integration.test_projection_support import make_history


def test_embedded_workers(store) -> None:
    now = time.time()
    h = make_history(store, 50, now=now)
    read_model = ReadModel(fakeredis.FakeRedis(server=fakeredis.FakeServer()), KeyLayout())
    runner = EmbeddedWorkers(store, read_model, catchup_interval=30, sweep_interval=0.5)
    runner.start()
    try:
        assert runner.running
        assert read_model.checkpoint() == store.head() == h.events  # replayed at start
        store.append(token_stream("soon"), 0, [ev.AccessTokenIssued(
            token="soon", consumer_key="consumer-0", user="user0", secret_sealed="x",
            session_handle_hash="h", expires_at=time.time() + 1,
            authorization_expires_at=now + 60)])
        runner.wake()
        wait_for(lambda: read_model.get("t", "soon") is not None, 10, "the woken projector")
        wait_for(lambda: read_model.get("t", "soon").status == "expired", 20, "the sweep")
        assert [r.type for r in store.read_stream(token_stream("soon"))] == [
            "AccessTokenIssued", "AccessTokenExpired"]
        assert runner.errors == 0
    finally:
        runner.stop()
    assert not runner.running
