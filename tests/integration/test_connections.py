"""The consumer side's state machine (services/connections.py) on both store backends,
against a real provider: installation A is in process (a SQLite file, or a PostgreSQL
schema, with the real Redis), installation B is a real ``oauthledger serve`` process
(tests/e2e/servers.py). A adds B by its base URL and signs with its installation key
(RSA-SHA1); B registers A's consumer-info key and public key; a user of B approves in a
real HTTP session (docs/application-links.md).

Covered: connect → obtained, with token, token secret and session handle only ever
sealed in A's log; a callback replayed, from another browser session, or after the
pending request expired; denial; renewal before use once the token reached its expiry
(B shows the renewed token); renewal refused and a call refused with token_revoked (the
connection needs reconnecting); drops by the user, by an admin, and by removing the
provider; an edit that keeps the connections; two renewals racing; and the fold of the
log alone (no Redis) giving the same connection states.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import redis

from oauthledger.events import catalog as ev
from oauthledger.events.audit import FastReplay
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import (
    CONNECTION_PREFIX,
    ConnectionState,
    Replay,
    TokenState,
    connection_stream,
    token_stream,
)
from oauthledger.services import connections as conn
from oauthledger.services import dance
from oauthledger.services import installation as inst
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.providers import (
    add_provider,
    by_base_url,
    edit_provider,
    load_provider,
    remove_provider,
)
from oauthledger.services.remote_fetch import FetchPolicy
from oauthledger.services.tokens import list_access_tokens
from oauthledger.services.users import register_user
from tests.conftest import pg_deps
from tests.e2e import servers
from tests.integration.test_projection_support import assert_equals_fresh_rebuild

# A's own address never has to answer: B only redirects the browser to it, and the tests
# hand the redirect's query to finish_connect as the callback page would.
A_BASE = "http://installation-a.test"
PROVIDER = "B"
# B runs on loopback: the vetted fetch reaches it only with private addresses allowed
# (OAUTHLEDGER_FETCH_ALLOW_PRIVATE, docs/application-links.md).
POLICY = FetchPolicy(allow_private=True)
# Past B's access-token lifetime (7 days by default) and inside its authorization
# lifetime (37 days): A must renew before it uses the token.
PAST_EXPIRY = 8 * 86400.0


@pytest.fixture(scope="module")
def provider_b() -> Iterator[servers.Stack]:
    """Installation B: one real front end on PostgreSQL and Redis (no worker: every
    commit publishes its states, docs/design.md "Read your writes")."""
    stack = servers.make_stack(servers=1, worker=False)
    try:
        yield stack
    finally:
        stack.close()


@dataclass
class Link:
    """Installation A (in process) with B added as a service provider and A registered at
    B as a consumer."""

    a: Deps
    b: servers.Stack
    shift: list[float] = field(default_factory=lambda: [0.0])

    def move_clock(self, seconds: float) -> None:
        """Move A's ledger clock: A decides expiry with it (B keeps real time)."""
        self.shift[0] = seconds

    def meta(self, actor: str) -> dict[str, str]:
        return {"actor": actor, "request_id": f"t-{uuid.uuid4().hex[:8]}"}

    def user_pair(self) -> tuple[str, str]:
        """A user of A and the user of B who approves for them."""
        a_user = servers.unique("alice")
        register_user(self.a.ledger, a_user, servers.PASSWORD, meta=self.meta("admin"))
        return a_user, servers.add_user(self.b)

    def start(self, user: str, session: str = "session-1") -> str:
        return conn.start_connect(self.a.ledger, self.a.sealer, PROVIDER, user, session,
                                  A_BASE, POLICY, self.meta(user))

    def approve_at_b(self, authorize_url: str, b_user: str,
                     approve: bool = True) -> dict[str, str]:
        """The user's browser at B: sign in, press approve (or deny); returns the query
        B redirects back to A's callback with."""
        resp = servers.Browser(self.b.url).decide(authorize_url, b_user, approve)
        assert resp.status_code == 303, (resp.status_code, resp.text[:300])
        location = resp.headers["Location"]
        assert location.startswith(conn.callback_url(A_BASE, PROVIDER) + "?"), location
        return dict(parse_qsl(urlsplit(location).query))

    def finish(self, user: str, params: dict[str, str],
               session: str = "session-1") -> conn.ConnectOutcome:
        return conn.finish_connect(self.a.ledger, self.a.sealer, PROVIDER, user, session,
                                   params, POLICY, self.meta(user))

    def connect(self, user: str, b_user: str) -> None:
        outcome = self.finish(user, self.approve_at_b(self.start(user), b_user))
        assert outcome == conn.ConnectOutcome(True, f"Connected to {PROVIDER}."), outcome

    def call(self, user: str, url: str = "/rest/api/2/myself") -> conn.CallResult:
        return conn.call(self.a.ledger, self.a.sealer, PROVIDER, user, "GET", url,
                         {"Accept": "application/json"}, b"", POLICY, self.meta(user))

    def state(self, user: str) -> ConnectionState:
        state, _ = conn.load_connection(self.a.ledger, user, PROVIDER)
        assert state is not None
        return state

    def types(self, user: str) -> list[str]:
        return [r.type for r in self.a.store.read_stream(connection_stream(user, PROVIDER))]

    def events(self, user: str, type_name: str) -> list[Any]:
        return [r.event for r in self.a.store.read_stream(connection_stream(user, PROVIDER))
                if r.type == type_name]

    def status(self, user: str) -> str:
        state, _ = conn.load_connection(self.a.ledger, user, PROVIDER)
        return conn.status_of(state, self.a.ledger.clock())

    def token_at_a(self, user: str) -> str:
        sealed = self.state(user).token_sealed
        assert sealed is not None
        return self.a.sealer.open(sealed)

    def b_token(self, token: str) -> TokenState:
        state, _ = self.b.deps().ledger.load(token_stream(token))
        assert isinstance(state, TokenState)
        return state


@pytest.fixture
def link(store_url: str, redis_client: redis.Redis, key_layout: KeyLayout, tmp_path: Path,
         provider_b: servers.Stack) -> Iterator[Link]:
    with pg_deps(store_url, redis_client, key_layout, tmp_path) as a:
        shift = [0.0]
        a.ledger.clock = lambda: time.time() + shift[0]
        me = inst.ensure_installation(a.ledger, a.sealer, {"actor": "admin"})
        add_provider(a.ledger, a.sealer, by_base_url(PROVIDER, provider_b.url, me.key),
                     {"actor": "admin"})
        b = provider_b.deps()
        # What `oauthledger consumer add --url A` registers at B: A's consumer-info key
        # and public key, RSA-SHA1 (docs/application-links.md).
        register_consumer(b.ledger, b.sealer, me.key,
                          ConsumerInput(name=me.name, public_key=me.public_key,
                                        signature_methods=["RSA-SHA1"]),
                          {"actor": "admin"})
        yield Link(a, provider_b, shift)


def _all_data(a: Deps) -> list[str]:
    return [r.data + r.metadata for r in a.store.read_all(0)]


def _redis_text(a: Deps) -> bytes:
    """Every key and value A holds in Redis, as one byte string to search."""
    out: list[bytes] = []
    for key in a.redis.scan_iter(a.layout.pattern(), count=1000):
        kind = a.redis.type(key)
        if kind == b"string":
            values = [a.redis.get(key) or b""]
        elif kind == b"hash":
            values = [k + v for k, v in a.redis.hgetall(key).items()]
        elif kind == b"set":
            values = list(a.redis.smembers(key))
        elif kind == b"zset":
            values = list(a.redis.zrange(key, 0, -1))
        elif kind == b"list":
            values = list(a.redis.lrange(key, 0, -1))
        else:
            values = []
        out += [key, *values]
    return b"\n".join(out)


def test_connect_stores_the_token_sealed_and_calls_as_the_user(link: Link) -> None:
    user, b_user = link.user_pair()
    assert link.status(user) == "not_connected"
    url = link.start(user)
    assert url.startswith(f"{link.b.url}/plugins/servlet/oauth/authorize?oauth_token=")
    requested = link.events(user, "ProviderTokenRequested")[0]
    assert requested.session_hash == conn.session_hash("session-1")
    pending_secret = link.a.sealer.open(requested.secret_sealed)
    outcome = link.finish(user, link.approve_at_b(url, b_user))
    assert outcome.ok and outcome.message == "Connected to B."
    assert link.types(user) == ["ProviderTokenRequested", "ProviderTokenObtained"]

    state = link.state(user)
    assert state.status == "connected" and state.pending_token is None
    assert state.session_handle_sealed and state.expires_at and state.authorization_expires_at
    token = link.token_at_a(user)
    secret = link.a.sealer.open(state.secret_sealed or "")
    handle = link.a.sealer.open(state.session_handle_sealed)
    # The token A holds is the access token B issued to A's consumer key for b_user.
    at_b = link.b_token(token)
    assert (at_b.user, at_b.status, at_b.kind) == (b_user, "active", "access")
    assert at_b.consumer_key == inst.load_installation(link.a.ledger).key  # type: ignore[union-attr]

    # docs/design.md, "Sealed secrets": no plaintext in any row of A's log, nor in Redis.
    rows = _all_data(link.a)
    for plain in (token, secret, handle, pending_secret):
        assert len(plain) >= 16
        assert not any(plain in row for row in rows)
    redis_text = _redis_text(link.a)
    assert redis_text  # the consumer, the provider, the users are there
    for plain in (token, secret, handle):
        assert plain.encode() not in redis_text

    view = conn.connection_view(load_provider(link.a.ledger, PROVIDER), state, time.time())
    assert view["status"] == "connected" and view["renewable"] is True
    assert not any(p in orjson.dumps(view).decode() for p in (token, secret, handle))

    result = link.call(user)
    assert (result.answer.status, result.connection, result.renewed) == (200, "connected",
                                                                          False)
    me = orjson.loads(result.answer.body)
    assert me["name"] == b_user
    assert me["oauth"]["consumerKey"] == at_b.consumer_key
    assert result.view()["body"] == result.answer.body.decode()
    assert link.types(user) == ["ProviderTokenRequested", "ProviderTokenObtained"]


def test_callback_from_another_session_or_replayed_is_refused(link: Link) -> None:
    user, b_user = link.user_pair()
    params = link.approve_at_b(link.start(user, "mine"), b_user)
    # Another browser session brings the same redirect: nothing is exchanged or recorded.
    other = link.finish(user, params, session="someone-else")
    assert not other.ok and "does not match a connection started from this browser" \
        in other.message
    assert link.types(user) == ["ProviderTokenRequested"]
    assert link.state(user).pending_token == params["oauth_token"]
    # A token that was never this user's pending one is refused the same way.
    forged = link.finish(user, {**params, "oauth_token": "not-the-one"}, session="mine")
    assert not forged.ok and link.types(user) == ["ProviderTokenRequested"]

    assert link.finish(user, params, session="mine").ok
    replay = link.finish(user, params, session="mine")
    assert not replay.ok and "used already" in replay.message
    assert link.types(user) == ["ProviderTokenRequested", "ProviderTokenObtained"]
    assert link.status(user) == "connected"


def test_pending_request_expires(link: Link) -> None:
    user, b_user = link.user_pair()
    params = link.approve_at_b(link.start(user), b_user)
    link.move_clock(conn.PENDING_TTL + 1)
    outcome = link.finish(user, params)
    assert not outcome.ok and "took too long and expired" in outcome.message
    ended = link.events(user, "ProviderTokenRequestEnded")
    assert [(e.reason, e.request_token) for e in ended] == [("expired", params["oauth_token"])]
    assert link.state(user).pending_token is None
    assert link.status(user) == "not_connected"
    # The same redirect again: nothing pending any more, nothing more recorded.
    assert not link.finish(user, params).ok
    assert link.types(user) == ["ProviderTokenRequested", "ProviderTokenRequestEnded"]


def test_denied_at_the_provider(link: Link) -> None:
    user, b_user = link.user_pair()
    params = link.approve_at_b(link.start(user), b_user, approve=False)
    assert params["oauth_verifier"] == "denied"
    outcome = link.finish(user, params)
    assert not outcome.ok and "Access was not granted at B" in outcome.message
    assert [e.reason for e in link.events(user, "ProviderTokenRequestEnded")] == ["denied"]
    assert link.status(user) == "not_connected"
    with pytest.raises(conn.NotConnected, match="press"):
        link.call(user)


def test_renews_before_use_once_expired(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    old = link.token_at_a(user)
    link.move_clock(PAST_EXPIRY)
    result = link.call(user)
    assert (result.answer.status, result.connection, result.renewed) == (200, "connected",
                                                                          True)
    assert orjson.loads(result.answer.body)["name"] == b_user
    assert link.types(user)[-1] == "ProviderTokenRenewed"
    state = link.state(user)
    assert state.renewed_at is not None and state.status == "connected"
    new = link.token_at_a(user)
    assert new != old
    # B retired the old token and issued the new one from it.
    assert link.b_token(old).status == "renewed"
    renewed = link.b_token(new)
    assert (renewed.status, renewed.renewed_from, renewed.user) == ("active", old, b_user)
    assert [r.token.token for r in list_access_tokens(link.b.deps().ledger, user=b_user,
                                                      status="active")] == [new]
    # The renewed token serves the next call without another renewal (B's clock: A's
    # moves back, since B issued the new token for 7 days from its real now).
    link.move_clock(0)
    again = link.call(user)
    assert (again.answer.status, again.renewed) == (200, False)
    assert link.types(user).count("ProviderTokenRenewed") == 1


def test_renewal_refused_needs_reconnect(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    b = link.b.deps()
    dance.revoke(b.ledger, link.token_at_a(user), "admin", {"actor": "admin"})
    link.move_clock(PAST_EXPIRY)
    with pytest.raises(conn.NotConnected, match="needs reconnecting"):
        link.call(user)
    assert link.types(user)[-1] == "ProviderTokenRejected"
    assert [e.problem for e in link.events(user, "ProviderTokenRejected")] == ["token_revoked"]
    assert "ProviderTokenRenewed" not in link.types(user)
    state = link.state(user)
    assert state.status == "needs_reconnect" and state.token_sealed is None
    view = conn.connection_view(load_provider(link.a.ledger, PROVIDER), state,
                                link.a.ledger.clock())
    assert (view["status"], view["problem"]) == ("needs_reconnect", "token_revoked")
    with pytest.raises(conn.NotConnected, match=conn.CONNECTIONS_PAGE):
        link.call(user)
    # Connecting again mends it.
    link.move_clock(0)
    link.connect(user, b_user)
    assert link.status(user) == "connected" and link.state(user).problem is None
    assert link.call(user).answer.status == 200


def test_call_refused_with_token_revoked_needs_reconnect(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    dance.revoke(link.b.deps().ledger, link.token_at_a(user), "user", {"actor": b_user})
    result = link.call(user)
    # The provider's answer is relayed as it came; the connection is marked.
    assert (result.answer.status, result.connection) == (401, "needs_reconnect")
    assert b"token_revoked" in result.answer.body + result.answer.headers.get(
        "www-authenticate", "").encode()
    assert [e.problem for e in link.events(user, "ProviderTokenRejected")] == ["token_revoked"]
    assert link.status(user) == "needs_reconnect"
    with pytest.raises(conn.NotConnected, match="needs reconnecting"):
        link.call(user)


def test_drop_by_user_and_by_admin(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    token = link.token_at_a(user)
    assert conn.drop(link.a.ledger, PROVIDER, user, "user", "disconnected", link.meta(user))
    dropped = link.events(user, "ProviderTokenDropped")
    assert [(e.by, e.reason) for e in dropped] == [("user", "disconnected")]
    assert link.status(user) == "not_connected" and link.state(user).token_sealed is None
    with pytest.raises(conn.NotConnected):
        link.call(user)
    # Nothing left to forget; OAuth 1.0a has no revocation request, so B is not told.
    assert not conn.drop(link.a.ledger, PROVIDER, user, "user", "disconnected",
                         link.meta(user))
    assert link.b_token(token).status == "active"

    link.connect(user, b_user)
    assert [s.user for s in conn.connections_of_provider(link.a.ledger, PROVIDER)] == [user]
    assert conn.drop(link.a.ledger, PROVIDER, user, "admin", "dropped by an administrator",
                     link.meta("admin"))
    assert [e.by for e in link.events(user, "ProviderTokenDropped")] == ["user", "admin"]
    assert conn.connections_of_provider(link.a.ledger, PROVIDER) == []
    assert link.status(user) == "not_connected"


def test_provider_removal_drops_every_connection(link: Link) -> None:
    pairs = [link.user_pair() for _ in range(2)]
    for user, b_user in pairs:
        link.connect(user, b_user)
    pending, _ = link.user_pair()
    link.start(pending)  # a connection only started is forgotten too
    assert remove_provider(link.a.ledger, PROVIDER, link.meta("admin")) == 3
    for user in [u for u, _ in pairs] + [pending]:
        assert [(e.by, e.reason) for e in link.events(user, "ProviderTokenDropped")] == [
            ("admin", "provider-removed")]
        assert link.status(user) == "not_connected"
    with pytest.raises(NotFound):
        link.call(pairs[0][0])
    assert conn.connections_of_provider(link.a.ledger, PROVIDER) == []


def test_edit_keeps_connections(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    edit_provider(link.a.ledger, link.a.sealer, PROVIDER,
                  {"description": "B, the other installation"}, link.meta("admin"))
    assert load_provider(link.a.ledger, PROVIDER).description == "B, the other installation"
    assert link.status(user) == "connected"
    assert link.call(user).answer.status == 200
    assert link.types(user) == ["ProviderTokenRequested", "ProviderTokenObtained"]


def _race(link: Link, user: str) -> list[Any]:
    """Two calls at once, each finding the token past its expiry; returns what each
    call returned or raised."""
    gate = threading.Barrier(2)
    results: list[Any] = [None, None]

    def one(i: int) -> None:
        gate.wait(timeout=30)
        try:
            results[i] = link.call(user)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def _assert_race_clean(link: Link, user: str, results: list[Any]) -> None:
    """One renewal recorded, the connection still connected with the token B honours,
    and each call either answered or failed with a "try again" — never told the user to
    reconnect, never an internal error."""
    types = link.types(user)
    seen = (types, results)
    assert types.count("ProviderTokenRenewed") == 1, seen
    assert "ProviderTokenRejected" not in types, seen
    assert link.status(user) == "connected", seen
    for r in results:
        assert (isinstance(r, conn.CallResult) and r.connection == "connected"
                or isinstance(r, conn.ProviderUnavailable)), seen
    assert any(isinstance(r, conn.CallResult) and r.answer.status == 200
               for r in results), seen
    # The token A keeps is the one B now honours.
    assert link.b_token(link.token_at_a(user)).status == "active"
    link.move_clock(0)
    assert link.call(user).answer.status == 200


def test_two_renewals_at_once_end_connected(link: Link) -> None:
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    link.move_clock(PAST_EXPIRY)
    results = _race(link, user)
    _assert_race_clean(link, user, results)


def test_renewal_that_loses_the_race_to_record_does_not_break_the_connection(
        link: Link, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving the threads above hit only sometimes, made certain: the call
    whose renewal B accepted is slow to record it, and the other call, refused by B (the
    old token is spent), looks at the connection (twice) before that renewal is
    recorded. The accepted renewal must still be recorded, and the refused call must not
    mark the connection as needing the user. Only the order is arranged: the renewals,
    B's answers and the commits are the real ones."""
    user, b_user = link.user_pair()
    link.connect(user, b_user)
    link.move_clock(PAST_EXPIRY)
    sid = connection_stream(user, PROVIDER)
    refused_in: list[int] = []  # the thread B refused
    reads_after_refusal = threading.Semaphore(0)
    real_renew = conn.pc.renew_token
    real_read = link.a.store.read_stream
    real_commit = link.a.ledger.commit

    def renew_token(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_renew(*args, **kwargs)
        except conn.pc.ProviderRefused:
            refused_in.append(threading.get_ident())
            raise

    def read_stream(stream_id: str, *args: Any, **kwargs: Any) -> Any:
        records = real_read(stream_id, *args, **kwargs)
        if stream_id == sid and threading.get_ident() in refused_in:
            reads_after_refusal.release()
        return records

    def commit(changes: Any, meta: Any) -> Any:
        if any(isinstance(e, ev.ProviderTokenRenewed) for c in changes for e in c.events):
            # Bounded: a call that never looks again must not hang the test.
            for _ in range(2):
                reads_after_refusal.acquire(timeout=30)
        return real_commit(changes, meta)

    monkeypatch.setattr(conn.pc, "renew_token", renew_token)
    monkeypatch.setattr(link.a.store, "read_stream", read_stream)
    monkeypatch.setattr(link.a.ledger, "commit", commit)
    results = _race(link, user)
    monkeypatch.undo()
    assert len(refused_in) == 1, results  # one renewal accepted, one refused
    _assert_race_clean(link, user, results)


def test_folding_the_log_alone_gives_the_same_connections(
        link: Link, reference: ReadModel) -> None:
    user, b_user = link.user_pair()
    other, other_b = link.user_pair()
    link.connect(user, b_user)
    link.move_clock(PAST_EXPIRY)
    assert link.call(user).renewed
    link.move_clock(0)
    link.connect(other, other_b)
    dance.revoke(link.b.deps().ledger, link.token_at_a(other), "admin", {"actor": "admin"})
    assert link.call(other).connection == "needs_reconnect"
    link.start(other)  # pending beside the broken connection
    conn.drop(link.a.ledger, PROVIDER, user, "user", "disconnected", link.meta(user))

    store = link.a.store
    replay = Replay()
    fast = FastReplay()
    for rec in store.read_all(0):
        replay.apply(rec)
        fast.apply(rec)
    folded = {sid: s for sid, s in replay.states.items() if sid.startswith(CONNECTION_PREFIX)}
    assert set(folded) == {connection_stream(user, PROVIDER),
                           connection_stream(other, PROVIDER)}
    for sid, state in folded.items():
        assert (state, state.version) == link.a.ledger.load(sid)
    assert folded[connection_stream(user, PROVIDER)].status == "dropped"
    broken = folded[connection_stream(other, PROVIDER)]
    assert broken.status == "needs_reconnect" and broken.pending_token is not None
    fast_states = [s for s in fast.final_states() if isinstance(s, ConnectionState)]
    assert sorted(fast_states, key=lambda s: s.user) == sorted(folded.values(),
                                                                key=lambda s: s.user)
    # The projection and a rebuild from scratch both read past the connection events
    # (they keep no connection state in Redis) and agree key for key.
    project_pending(store, link.a.read_model)
    assert_equals_fresh_rebuild(store, link.a.read_model, reference)
