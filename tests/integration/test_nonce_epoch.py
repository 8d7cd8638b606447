"""The nonce memory's epoch on the real Redis: when the memory is emptied (a Redis
restarted without persistence, a flush of the layout's keys), the epoch goes with it,
the next signed request starts a new one, and a request signed before it is refused
even within the timestamp window (docs/oauth.md, "Replays across restarts"). The
embedded default's memory: tests/unit/test_nonce_epoch_embedded.py."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from oauthlib.oauth1 import Client

from oauthledger.events import catalog as ev
from oauthledger.events.keys import KeyLayout
from oauthledger.events.state import consumer_stream, fold_stream, token_stream
from oauthledger.services.deps import Deps
from oauthledger.services.oauth.authenticator import Authenticator
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest, parse_request
from tests.conftest import pg_deps

API = "https://jira.example.com/rest/api/2/myself"
CONSUMER = "epoch-app"


@pytest.fixture
def deps(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout,
         tmp_path: Path) -> Iterator[Deps]:
    """PostgreSQL and the real Redis under the test's prefix (production shape)."""
    with pg_deps(pg_url, redis_client, key_layout, tmp_path) as d:
        yield d


def setup(deps: Deps) -> str:
    """A consumer and an access token of alice's, in the log and projected; returns the
    token."""
    now = time.time()
    deps.store.append(consumer_stream(CONSUMER), 0, [ev.ConsumerRegistered(
        key=CONSUMER, name="Epoch app", secret_sealed=deps.sealer.seal("csecret"),
        signature_methods=("HMAC-SHA1",))])
    token = "at-" + uuid.uuid4().hex
    deps.store.append(token_stream(token), 0, [ev.AccessTokenIssued(
        token=token, consumer_key=CONSUMER, user="alice",
        secret_sealed=deps.sealer.seal("tsecret"),
        session_handle_hash=hashlib.sha256(b"handle").hexdigest(),
        expires_at=now + 86400, authorization_expires_at=now + 2 * 86400)])
    recs = deps.store.read_streams([consumer_stream(CONSUMER), token_stream(token)])
    deps.read_model.apply([fold_stream(r) for r in recs.values()],
                          checkpoint=deps.store.head())
    return token


def signed(token: str, timestamp: int) -> SignedRequest:
    client = Client(CONSUMER, client_secret="csecret", resource_owner_key=token,
                    resource_owner_secret="tsecret", timestamp=str(timestamp),
                    nonce=uuid.uuid4().hex)
    uri, headers, _ = client.sign(API, http_method="GET")
    return parse_request("GET", uri, headers, b"", None)


def flush_layout(client: redis.Redis, layout: KeyLayout) -> None:
    """What a Redis restart without persistence does to this installation's keys."""
    for key in client.scan_iter(layout.pattern(), count=1000):
        client.delete(key)


def test_replay_after_the_memory_is_flushed_is_refused(deps: Deps, redis_client: redis.Redis
                                                       ) -> None:
    token = setup(deps)
    ts = int(time.time())
    clock = [ts + 0.5]
    auth = Authenticator(read_model=deps.read_model, store=deps.store, sealer=deps.sealer,
                         settings=deps.settings, clock=lambda: clock[0])
    req = signed(token, ts)
    assert auth.authenticate_resource(req, https=True).user == "alice"
    with pytest.raises(OAuthProblem) as info:
        auth.authenticate_resource(req, https=True)
    assert info.value.problem == "nonce_used"

    flush_layout(redis_client, deps.layout)  # nonces, epoch and projection are gone
    assert redis_client.get(deps.layout.nonce_epoch) is None
    clock[0] = ts + 3  # well within the window (±300 s)
    with pytest.raises(OAuthProblem) as info:
        auth.authenticate_resource(req, https=True)
    problem = info.value
    assert (problem.problem, problem.status) == ("timestamp_refused", 400)
    assert "replay memory started at" in problem.advice
    window = int(deps.settings.timestamp_window)
    assert problem.params["oauth_acceptable_timestamps"] == f"{ts + 3}-{ts + 3 + window}"
    # The request's lookup started the new epoch; the refused request left no nonce.
    assert redis_client.get(deps.layout.nonce_epoch) == str(ts + 3).encode()
    assert not list(redis_client.scan_iter(deps.layout.nonce(CONSUMER, "*", "*", "*")))
    # Signed again (in the epoch's second or later): accepted, from the store while the
    # projection is rebuilt (docs/design.md, "Store fallback"), and single use again.
    fresh = signed(token, ts + 3)
    assert auth.authenticate_resource(fresh, https=True).user == "alice"
    with pytest.raises(OAuthProblem) as info:
        auth.authenticate_resource(fresh, https=True)
    assert info.value.problem == "nonce_used"


def test_dance_nonce_check_after_a_flush(deps: Deps, redis_client: redis.Redis) -> None:
    """The dance endpoints' nonce check (consume_nonce) reads the same epoch."""
    token = setup(deps)
    ts = int(time.time())
    clock = [ts + 0.5]
    settings = dataclasses.replace(deps.settings, timestamp_window=120.0)
    auth = Authenticator(read_model=deps.read_model, store=deps.store, sealer=deps.sealer,
                         settings=settings, clock=lambda: clock[0])
    req = signed(token, ts)
    auth.consume_nonce(req)
    flush_layout(redis_client, deps.layout)
    clock[0] = ts + 60
    with pytest.raises(OAuthProblem) as info:
        auth.consume_nonce(req)
    assert info.value.problem == "timestamp_refused"
    assert info.value.params["oauth_acceptable_timestamps"] == f"{ts + 60}-{ts + 180}"
    assert not list(redis_client.scan_iter(deps.layout.nonce(CONSUMER, "*", "*", "*")))
