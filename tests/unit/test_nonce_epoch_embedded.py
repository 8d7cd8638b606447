"""The nonce memory's epoch on the embedded default's in-process Redis (fakeredis): a
new process starts an empty memory, and a request signed before it started is refused
(docs/oauth.md, "Replays across restarts"). The same rule on the real Redis:
tests/integration/test_nonce_epoch.py; through a real server restart:
tests/e2e/test_replay_after_restart.py."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest
from oauthlib.oauth1 import Client

from oauthledger.events import catalog as ev
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import consumer_stream, token_stream
from oauthledger.services.deps import Deps
from oauthledger.services.embedded import EmbeddedWorkers
from oauthledger.services.oauth.authenticator import Authenticator
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest, parse_request
from tests.conftest import embedded_deps_in

API = "https://jira.example.com/rest/api/2/myself"
CONSUMER = "epoch-app"
WINDOW = 300


def fresh_memory() -> ReadModel:
    """A read model on a new in-process Redis server: what a new embedded process gets
    from events/connections.open_redis (one FakeServer per process)."""
    return ReadModel(fakeredis.FakeRedis(server=fakeredis.FakeServer()))


@dataclass
class Server:
    """One process of the embedded default: the shared store, its own in-process Redis,
    its embedded workers (which start the epoch and rebuild the projection) and an
    authenticator on a clock the test sets."""

    read_model: ReadModel
    auth: Authenticator
    clock: list[float]


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[Deps]:
    """The store, key file and settings of an embedded installation (its own in-process
    Redis is not used below: each Server gets a fresh one)."""
    with embedded_deps_in(tmp_path) as d:
        yield d


def start_server(deps: Deps, at: float) -> Server:
    """Start a process at time ``at``: a fresh memory, the embedded workers' start (epoch,
    rebuild), an authenticator."""
    clock = [at]
    read_model = fresh_memory()
    runner = EmbeddedWorkers(deps.store, read_model, deps.settings, clock=lambda: clock[0])
    runner.start()
    runner.stop()
    settings = dataclasses.replace(deps.settings, timestamp_window=float(WINDOW))
    auth = Authenticator(read_model=read_model, store=deps.store, sealer=deps.sealer,
                         settings=settings, clock=lambda: clock[0])
    return Server(read_model, auth, clock)


def register(deps: Deps, now: float) -> str:
    """A consumer and an access token of alice's in the log; returns the token."""
    deps.store.append(consumer_stream(CONSUMER), 0, [ev.ConsumerRegistered(
        key=CONSUMER, name="Epoch app", secret_sealed=deps.sealer.seal("csecret"),
        signature_methods=("HMAC-SHA1", "PLAINTEXT"))])
    token = "at-" + uuid.uuid4().hex
    deps.store.append(token_stream(token), 0, [ev.AccessTokenIssued(
        token=token, consumer_key=CONSUMER, user="alice",
        secret_sealed=deps.sealer.seal("tsecret"),
        session_handle_hash=hashlib.sha256(b"handle").hexdigest(),
        expires_at=now + 86400, authorization_expires_at=now + 2 * 86400)])
    return token


def signed(token: str, timestamp: int, nonce: str | None = None) -> SignedRequest:
    """GET /rest/api/2/myself signed by oauthlib at ``timestamp``."""
    client = Client(CONSUMER, client_secret="csecret", resource_owner_key=token,
                    resource_owner_secret="tsecret", timestamp=str(timestamp),
                    nonce=nonce or uuid.uuid4().hex)
    uri, headers, _ = client.sign(API, http_method="GET")
    return parse_request("GET", uri, headers, b"", None)


def refusal(server: Server, req: SignedRequest) -> OAuthProblem:
    with pytest.raises(OAuthProblem) as info:
        server.auth.authenticate_resource(req, https=True)
    return info.value


def nonces_of(read_model: ReadModel) -> list[bytes]:
    return list(read_model.redis.scan_iter(read_model.keys.nonce(CONSUMER, "*", "*", "*")))


# --- the read model -------------------------------------------------------------------


def test_start_nonce_epoch_keeps_the_first() -> None:
    rm = fresh_memory()
    assert rm.start_nonce_epoch(1_000) == 1_000
    assert rm.start_nonce_epoch(2_000) == 1_000  # SET NX: the memory started at 1000
    assert rm.redis.get(rm.keys.nonce_epoch) == b"1000"


def test_lookup_and_consume_nonce_read_the_epoch_and_start_a_missing_one() -> None:
    rm = fresh_memory()
    # No nonce: nothing about the memory is read or written.
    assert rm.lookup("c", None).nonce_epoch is None
    assert rm.redis.get(rm.keys.nonce_epoch) is None
    # The first nonce finds no epoch: the memory remembers from this second on.
    first = rm.lookup("c", None, nonce=("1500", "n1", WINDOW), now=1_500.7)
    assert (first.nonce_fresh, first.nonce_epoch) == (True, 1_500)
    again = rm.lookup("c", None, nonce=("1500", "n1", WINDOW), now=1_600)
    assert (again.nonce_fresh, again.nonce_epoch) == (False, 1_500)
    record = rm.consume_nonce("c", "", "1600", "n2", WINDOW, now=1_600)
    assert (record.fresh, record.epoch) == (True, 1_500)
    assert rm.consume_nonce("c", "", "1600", "n2", WINDOW, now=1_601).fresh is False
    # Emptied while running (every key gone): the next nonce starts a new epoch.
    rm.redis.flushall()
    record = rm.consume_nonce("c", "", "1600", "n2", WINDOW, now=1_700.2)
    assert (record.fresh, record.epoch) == (True, 1_700)


# --- the authenticator across a restart -------------------------------------------------


def test_replay_after_restart_is_refused_with_the_epoch(deps: Deps) -> None:
    t0 = 1_800_000_000
    token = register(deps, t0)
    first = start_server(deps, at=t0 - 100)
    req = signed(token, t0 - 10)
    first.clock[0] = t0
    assert first.auth.authenticate_resource(req, https=True).user == "alice"
    assert refusal(first, req).problem == "nonce_used"  # the memory works while it lives

    # The process dies and a new one starts half a second later: empty memory. The
    # epoch is rounded up, so a timestamp of the second under way is refused too.
    second = start_server(deps, at=t0 + 0.5)
    assert second.read_model.redis.get(second.read_model.keys.nonce_epoch) == \
        str(t0 + 1).encode()
    second.clock[0] = t0 + 33
    p = refusal(second, req)
    assert (p.problem, p.status) == ("timestamp_refused", 400)
    assert "before this server's replay memory started at" in p.advice
    assert "sign the request again" in p.advice
    assert p.params["oauth_acceptable_timestamps"] == f"{t0 + 1}-{t0 + 33 + WINDOW}"
    # A refused request keeps no nonce, so it cannot fill the new memory either.
    assert nonces_of(second.read_model) == []
    # Signed within the second the old process may still have served: refused as well.
    assert refusal(second, signed(token, t0)).problem == "timestamp_refused"
    # Signed again after the start: accepted once, then a replay as usual.
    fresh = signed(token, t0 + 1)
    assert second.auth.authenticate_resource(fresh, https=True).user == "alice"
    assert refusal(second, fresh).problem == "nonce_used"


def test_a_request_without_timestamp_is_not_affected(deps: Deps) -> None:
    t0 = 1_800_000_000
    token = register(deps, t0)
    server = start_server(deps, at=t0)
    server.clock[0] = t0 + 5
    # PLAINTEXT may omit timestamp and nonce (RFC 5849 §3.1): nothing to compare.
    header = (f'OAuth oauth_consumer_key="{CONSUMER}", oauth_token="{token}", '
              'oauth_signature_method="PLAINTEXT", oauth_signature="csecret%26tsecret"')
    req = parse_request("GET", API, {"Authorization": header}, b"", None)
    assert server.auth.authenticate_resource(req, https=True).user == "alice"


def test_dance_nonce_check_applies_the_epoch(deps: Deps) -> None:
    """The dance endpoints record the nonce after check_signed (consume_nonce)."""
    t0 = 1_800_000_000
    token = register(deps, t0)
    server = start_server(deps, at=t0 + 0.2)
    server.clock[0] = t0 + 20
    old = signed(token, t0 - 5)
    with pytest.raises(OAuthProblem) as info:
        server.auth.consume_nonce(old)
    assert info.value.problem == "timestamp_refused"
    assert info.value.params["oauth_acceptable_timestamps"] == f"{t0 + 1}-{t0 + 20 + WINDOW}"
    assert nonces_of(server.read_model) == []  # taken back
    new = signed(token, t0 + 19)
    server.auth.consume_nonce(new)
    with pytest.raises(OAuthProblem) as info:
        server.auth.consume_nonce(new)
    assert info.value.problem == "nonce_used"
