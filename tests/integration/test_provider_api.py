"""The consumer side's JSON API against a REAL service provider: installation A is the
app under test (in process, on a fresh PostgreSQL schema and the real Redis), B is a real
oauthledger (gunicorn, tests/e2e/servers.py) where A is registered as a consumer by its
consumer-info key and RSA public key — the application link of docs/admin.md. Users of A
connect through the service-level dance (start_connect, B's authorize page in a real
HTTP session, finish_connect) and then call B's /rest/api/2/myself through
POST /rest/oauthledger/1/service-providers/{name}/call as themselves, or a resource
server calls for them. Every refusal is problem+json with its own status; never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import redis

from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.settings import load_settings
from oauthledger.events.state import ConnectionState, ResourceServerState, connection_stream
from oauthledger.services import connections as conn
from oauthledger.services import installation as inst
from oauthledger.services import remote_fetch
from oauthledger.services.client import OAuthLedgerClient, OAuthLedgerError
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.access import CSRF_HEADER
from oauthledger.services.http.app import create_app
from oauthledger.services.resource_servers import create_resource_server
from oauthledger.services.users import register_user
from tests.conftest import REDIS_URL, migrated_store
from tests.e2e import servers
from tests.integration.test_api_security import Session

API = "/rest/oauthledger/1"
META = {"actor": "test", "request_id": "t-1"}
ADMIN_PW = "admin-password"
USER_PW = "alice-password"
A_BASE = "http://a.example"  # A's base URL: only ever a callback B redirects the browser to
B_NAME = "Beta Ledger"  # B's installation name, published in its application-links manifest
MYSELF = "/rest/api/2/myself"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("root", ADMIN_PW)
ALICE = basic("alice", USER_PW)


@pytest.fixture(scope="module")
def provider_b() -> Iterator[servers.Stack]:
    """B: a real oauthledger front end (gunicorn on its own PostgreSQL schema and Redis
    prefix), named in its manifest."""
    stack = servers.make_stack(servers=1, worker=False)
    try:
        deps = stack.deps()
        inst.ensure_installation(deps.ledger, deps.sealer, META, name=B_NAME)
        yield stack
    finally:
        stack.close()


@dataclass
class World:
    """Installation A (the app under test), its CLI's environment, and provider B."""

    deps: Deps
    client: falcon.testing.TestClient
    env: dict[str, str | None]
    b: servers.Stack
    b_users: dict[str, str]

    @property
    def policy(self) -> remote_fetch.FetchPolicy:
        return remote_fetch.policy(self.deps.settings)

    def events(self) -> int:
        """How many events A's log holds."""
        return self.deps.store.head()

    def api(self, method: str, path: str, who: dict[str, str] | None = ADMIN,
            body: Any = None, raw: str | bytes | None = None,
            headers: dict[str, str] | None = None) -> falcon.testing.Result:
        hdrs = {**(who or {}), **(headers or {})}
        if body is not None or raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
        payload = json.dumps(body) if body is not None else raw
        resp = self.client.simulate_request(method, API + path, headers=hdrs, body=payload)
        assert resp.status_code < 500 or resp.status_code == 502, resp.text
        return resp

    def call(self, body: Any, who: dict[str, str] | None = ALICE, provider: str = "B",
             **kw: Any) -> falcon.testing.Result:
        return self.api("POST", f"/service-providers/{provider}/call", who=who, body=body,
                        **kw)

    def link(self, name: str = "B") -> None:
        """Register A at B as a consumer (A's consumer-info key and public key, as B's
        "add consumer by URL" would) and add B at A by its base URL through the API."""
        info = inst.ensure_installation(self.deps.ledger, self.deps.sealer, META)
        b = self.b.deps()
        register_consumer(b.ledger, b.sealer, info.key,
                          ConsumerInput(name=f"A {info.key}", public_key=info.public_key,
                                        signature_methods=["RSA-SHA1"]), META)
        added = self.api("POST", "/service-providers", body={"name": name,
                                                            "baseUrl": self.b.url})
        assert added.status_code == 201, added.text

    def connect(self, user: str, provider: str = "B") -> str:
        """Run the dance for ``user`` of A, approved at B by a user of B made for it;
        returns that B user's name."""
        b_user = self.b_users.setdefault(user, servers.add_user(self.b))
        session = "sess-" + uuid.uuid4().hex
        url = conn.start_connect(self.deps.ledger, self.deps.sealer, provider, user, session,
                                 A_BASE, self.policy, META)
        back = servers.Browser(self.b.url).decide(url, b_user)
        params = servers.callback_params(back)
        assert back.headers["Location"].startswith(conn.callback_url(A_BASE, provider))
        outcome = conn.finish_connect(self.deps.ledger, self.deps.sealer, provider, user,
                                      session, params, self.policy, META)
        assert outcome.ok, outcome.message
        return b_user

    def connection(self, user: str, provider: str = "B") -> ConnectionState | None:
        state, _ = self.deps.ledger.load(connection_stream(user, provider))
        assert state is None or isinstance(state, ConnectionState)
        return state


def make_world(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout, tmp_path: Path,
               b: servers.Stack) -> Iterator[World]:
    """A on ``pg_url`` with its key file in ``tmp_path`` (shared with the CLI's
    environment), users root (admin), alice and bob."""
    env: dict[str, str | None] = {
        "OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": pg_url,
        "OAUTHLEDGER_REDIS_URL": REDIS_URL, "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix,
        "OAUTHLEDGER_BROKER_URL": None, "OAUTHLEDGER_SECRET_KEY_FILE": None,
        "OAUTHLEDGER_BASE_URL": None,
        # B listens on loopback: the vetted fetch refuses it unless told otherwise.
        "OAUTHLEDGER_FETCH_ALLOW_PRIVATE": "true"}
    settings = load_settings({k: v for k, v in env.items() if v is not None})
    with migrated_store(pg_url) as store:
        deps = Deps(settings=settings, store=store, redis=redis_client,
                    sealer=open_sealer(settings), wake=lambda: None, layout=key_layout)
        register_user(deps.ledger, "root", ADMIN_PW, admin=True, meta=META)
        register_user(deps.ledger, "alice", USER_PW, meta=META)
        register_user(deps.ledger, "bob", USER_PW, meta=META)
        yield World(deps, falcon.testing.TestClient(create_app(deps)), env, b, {})


@pytest.fixture
def world(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout, tmp_path: Path,
          provider_b: servers.Stack) -> Iterator[World]:
    yield from make_world(pg_url, redis_client, key_layout, tmp_path, provider_b)


@pytest.fixture
def linked(world: World) -> World:
    """A linked to B, alice connected."""
    world.link()
    world.connect("alice")
    return world


def problem(resp: falcon.testing.Result, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = resp.json
    assert body["status"] == status
    return body


def dead_url() -> str:
    """A loopback URL nothing listens on (a port just closed)."""
    return f"http://127.0.0.1:{servers.free_port()}"


# -- add by base URL, edit ---------------------------------------------------------------


def test_add_by_base_url_takes_the_name_from_the_manifest(world: World) -> None:
    before = world.events()
    refused = world.api("POST", "/service-providers",
                        body={"baseUrl": world.b.url, "consumerKey": "k", "colour": 1})
    assert problem(refused, 422)["errors"] == {
        "consumerKey": refused.json["errors"]["consumerKey"], "colour": "unknown field"}
    assert "RSA key" in refused.json["errors"]["consumerKey"]
    bad = world.api("POST", "/service-providers", body={"name": "X", "baseUrl": "ftp://b"})
    assert set(problem(bad, 422)["errors"]) == {"baseUrl"}
    # Refused input generated nothing, not even this installation's key pair.
    assert world.events() == before

    added = world.api("POST", "/service-providers", body={"baseUrl": world.b.url + "/"})
    assert added.status_code == 201, added.text
    view = added.json
    info = inst.load_installation(world.deps.ledger)
    assert info is not None
    assert view["name"] == B_NAME  # from B's application-links manifest
    assert view["description"].endswith("(from its application-links manifest)")
    assert (view["baseUrl"], view["consumerKey"], view["signatureMethod"]) == (
        world.b.url, info.key, "RSA-SHA1")
    assert view["requestTokenUrl"] == world.b.url + "/plugins/servlet/oauth/request-token"
    assert view["consumerInfoUrl"].endswith("/plugins/servlet/oauth/consumer-info")
    # A name given wins over the manifest's; a name in use is a conflict.
    again = world.api("POST", "/service-providers", body={"name": B_NAME,
                                                          "baseUrl": world.b.url})
    assert problem(again, 409)["detail"]
    named = world.api("POST", "/service-providers", body={
        "name": "Mine", "baseUrl": world.b.url, "description": "my words"})
    assert (named.json["name"], named.json["description"]) == ("Mine", "my words")


def test_patch_edits_by_view_names_and_refuses_others_by_name(linked: World) -> None:
    w = linked
    bad = w.api("PATCH", "/service-providers/B", body={
        "authorizeUrl": "nope", "colour": "red", "name": "C", "version": 9,
        "useRsaKey": "yes"})
    assert set(problem(bad, 422)["errors"]) == {"colour", "name", "version", "useRsaKey"}
    invalid = w.api("PATCH", "/service-providers/B", body={"authorizeUrl": "nope"})
    assert set(problem(invalid, 422)["errors"]) == {"authorizeUrl"}
    assert problem(w.api("PATCH", "/service-providers/none", body={}), 404)
    assert problem(w.api("PATCH", "/service-providers/B", who=ALICE, body={}), 403)

    current = w.api("GET", "/service-providers/B").json
    same = w.api("PATCH", "/service-providers/B", body={"name": "B"})
    assert same.json["version"] == current["version"]  # nothing to change, nothing stored
    edited = w.api("PATCH", "/service-providers/B", body={"description": "the B side"})
    assert edited.status_code == 200 and edited.json["description"] == "the B side"
    assert edited.json["version"] == current["version"] + 1
    # Switching to a shared secret implies HMAC-SHA1; the secret is never shown.
    hmac_edit = w.api("PATCH", "/service-providers/B", body={"sharedSecret": "s3cret-b"})
    assert hmac_edit.json["signatureMethod"] == "HMAC-SHA1"
    assert "s3cret-b" not in hmac_edit.text
    back = w.api("PATCH", "/service-providers/B", body={"useRsaKey": True})
    assert back.json["signatureMethod"] == "RSA-SHA1"
    # The connection survived every edit, and still works.
    assert w.connection("alice").status == "connected"
    assert w.call({"url": MYSELF}).json["status"] == 200


# -- calling ---------------------------------------------------------------------------


def test_call_as_the_session_user_needs_the_csrf_header(linked: World) -> None:
    w = linked
    sess = Session(w.client, "alice", USER_PW)
    before = w.events()
    refused = sess.call("POST", "/service-providers/B/call", body={"url": MYSELF})
    assert CSRF_HEADER in problem(refused, 403)["detail"]
    wrong = sess.call("POST", "/service-providers/B/call", body={"url": MYSELF},
                      csrf="not-the-token")
    problem(wrong, 403)
    done = sess.call("POST", "/service-providers/B/call", body={"url": MYSELF},
                     csrf=sess.csrf)
    assert done.status_code == 200, done.text
    answer = done.json
    assert answer["status"] == 200 and answer["connection"] == "connected"
    assert answer["headers"]["content-type"].startswith("application/json")
    me = json.loads(answer["body"])
    assert me["name"] == w.b_users["alice"]
    assert me["oauth"]["consumerKey"] == inst.load_installation(w.deps.ledger).key
    assert w.events() == before  # a call that needs no renewal stores nothing


def test_call_as_a_basic_user_acts_as_themselves_only(linked: World) -> None:
    w = linked
    ok = w.call({"method": "GET", "url": MYSELF, "user": "alice",
                 "headers": {"Accept": "application/json"}})
    assert ok.status_code == 200 and ok.json["status"] == 200
    # An absolute URL at B's address is a call too.
    absolute = w.call({"url": w.b.url + MYSELF})
    assert json.loads(absolute.json["body"])["name"] == w.b_users["alice"]
    other = w.call({"url": MYSELF, "user": "bob"})
    assert "themselves" in problem(other, 403)["detail"]
    assert problem(w.call({"url": MYSELF}, who=basic("alice", "wrong")), 401)
    assert problem(w.call({"url": MYSELF}, who=None), 401)
    # The provider's own refusal is relayed in the body, never as our status.
    missing = w.call({"url": "/rest/api/2/no-such-resource"})
    assert missing.status_code == 200 and missing.json["status"] == 404


def test_resource_server_acts_for_a_named_user_only_with_the_flag(linked: World) -> None:
    w = linked
    secret = create_resource_server(w.deps.ledger, w.deps.sealer, "reports", "reports", META,
                                    act_for_users=True)
    plain = create_resource_server(w.deps.ledger, w.deps.sealer, "verifier", "verify only",
                                   META)
    rs = basic("reports", secret)
    done = w.call({"url": MYSELF, "user": "alice"}, who=rs)
    assert done.status_code == 200, done.text
    assert json.loads(done.json["body"])["name"] == w.b_users["alice"]

    assert "--act-for-users" in problem(w.call({"url": MYSELF, "user": "alice"},
                                               who=basic("verifier", plain)), 403)["detail"]
    assert problem(w.call({"url": MYSELF}, who=rs), 422)["errors"] == {
        "user": "is required: the user this resource server acts for"}
    assert "no user" in problem(w.call({"url": MYSELF, "user": "nobody"}, who=rs), 404)[
        "detail"]
    not_connected = problem(w.call({"url": MYSELF, "user": "bob"}, who=rs), 409)
    assert "Connect" in not_connected["detail"] and conn.CONNECTIONS_PAGE in \
        not_connected["detail"]
    # A wrong secret is not a resource server: it is a user sign-in, and fails as one.
    assert problem(w.call({"url": MYSELF, "user": "alice"}, who=basic("reports", "x")), 401)
    state, _ = w.deps.ledger.load("resource-server-reports")
    assert isinstance(state, ResourceServerState) and state.act_for_users


def test_a_locked_sign_in_does_not_lock_out_a_resource_server(linked: World) -> None:
    # Wrong secrets for the resource server's id are user sign-ins that fail: they count
    # against the throttle of /login (for that name and this address) until it locks.
    # The right secret is checked before the throttle, so the resource server still
    # calls, while Basic users from the address wait (docs/admin.md, "Calling a service
    # provider").
    w = linked
    secret = create_resource_server(w.deps.ledger, w.deps.sealer, "reports", "", META,
                                    act_for_users=True)
    body = {"url": MYSELF, "user": "alice"}
    for _ in range(w.deps.settings.login_max_failures):
        problem(w.call(body, who=basic("reports", "guess")), 401)
    locked = problem(w.call(body, who=basic("reports", "guess")), 429)
    assert int(w.call(body, who=basic("reports", "guess")).headers["Retry-After"]) >= 1
    assert "too many failed sign-ins" in locked["detail"]
    problem(w.call({"url": MYSELF}, who=ALICE), 429)
    done = w.call(body, who=basic("reports", secret))
    assert done.status_code == 200 and done.json["status"] == 200


def test_refused_input_is_422_or_400_and_stores_nothing(linked: World) -> None:
    w = linked
    before = w.events()
    outside = w.call({"url": "https://evil.example/rest/api/2/myself"})
    assert "open proxy" in problem(outside, 422)["errors"]["url"]
    assert set(problem(w.call({"url": dead_url() + MYSELF}), 422)["errors"]) == {"url"}
    assert set(problem(w.call({"method": "TRACE", "url": MYSELF}), 422)["errors"]) == {
        "method"}
    big = "x" * (conn.MAX_CALL_BODY + 1)
    too_big = w.call({"method": "POST", "url": MYSELF, "body": big,
                      "headers": {"Content-Type": "text/plain"}})
    assert set(problem(too_big, 422)["errors"]) == {"body"}
    huge = json.dumps({"url": MYSELF, "body": "x" * 5 * conn.MAX_CALL_BODY})
    assert problem(w.call(None, raw=huge), 413)
    assert problem(w.call(None, raw="{not json"), 400)["title"] == "Malformed JSON"
    assert problem(w.call(None, raw="[1, 2]"), 400)
    assert problem(w.call(None, raw="\xff\xfe", headers={"Content-Type": "application/json"}),
                   400)
    assert problem(w.call(None, raw="url=/x", headers={"Content-Type": "text/plain"}), 415)
    typed = w.call({"url": 5, "method": ["GET"], "headers": ["Accept"], "body": {},
                    "colour": 1})
    assert set(problem(typed, 422)["errors"]) == {"url", "method", "headers", "body",
                                                  "colour"}
    headers = w.call({"url": MYSELF, "headers": {"X-Bad": "line\r\nbreak", "X-Num": 5,
                                                 "Bad Name": "x"}})
    assert set(problem(headers, 422)["errors"]) == {"headers.X-Bad", "headers.X-Num",
                                                    "headers.Bad Name"}
    # RFC 9110 §5.5: a value beyond ISO-8859-1 cannot be sent; the caller hears so (not
    # a 502 from the provider that was never asked).
    wide = w.call({"url": MYSELF, "headers": {"X-Wide": "\u2603"}})
    assert set(problem(wide, 422)["errors"]) == {"headers.X-Wide"}
    surrogate = w.call(None, raw='{"url": "/rest/api/2/myself", "body": "\\ud800"}')
    assert set(problem(surrogate, 422)["errors"]) == {"body"}
    assert problem(w.call({"url": MYSELF}, provider="nope"), 404)
    assert w.events() == before


def test_garbage_never_makes_a_500(linked: World) -> None:
    w = linked
    bodies: list[Any] = [{}, {"url": ""}, {"url": "/"}, {"url": "//evil.example/x"},
                         {"url": "http://[::1"}, {"url": "http://127.0.0.1:99999/"},
                         {"url": "/x y"}, {"url": "/\u00e9t\u00e9"}, {"url": "javascript:1"},
                         {"url": "/a\x01b"}, {"url": "/a\x7f"}, {"url": "/" + "a" * 8000},
                         {"url": MYSELF + "?q=\u2603"}, {"url": "http://b\u00e9.example/"},
                         {"url": MYSELF, "method": ""}, {"url": MYSELF, "method": "get"},
                         {"url": MYSELF, "method": "GET", "body": "a=b",
                          "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
                         {"url": MYSELF, "headers": {"": "x"}}, {"url": MYSELF, "user": ""},
                         {"url": MYSELF, "user": None, "headers": None, "body": None}]
    for body in bodies:
        resp = w.call(body)
        assert resp.status_code in (200, 400, 403, 404, 409, 422), (body, resp.text)
        if resp.status_code != 200:
            problem(resp, resp.status_code)


def test_provider_down_is_502_and_stores_nothing(linked: World) -> None:
    w = linked
    dead = dead_url()
    # The endpoints at the Atlassian paths move with the base URL.
    moved = w.api("PATCH", "/service-providers/B", body={"baseUrl": dead})
    assert moved.status_code == 200, moved.text
    assert moved.json["accessTokenUrl"] == dead + "/plugins/servlet/oauth/access-token"
    before = w.events()
    down = problem(w.call({"url": MYSELF}), 502)
    assert "could not be reached" in down["detail"] and "B" in down["detail"]
    assert w.events() == before
    assert w.connection("alice").status == "connected"  # the token was not blamed
    # Moved back, the same connection works again.
    back = w.api("PATCH", "/service-providers/B", body={"baseUrl": w.b.url})
    assert back.json["requestTokenUrl"] == w.b.url + "/plugins/servlet/oauth/request-token"
    assert w.call({"url": MYSELF}).json["status"] == 200
    # Endpoints set in the same edit, or set by hand before, stay where they are put.
    by_hand = w.api("PATCH", "/service-providers/B", body={
        "baseUrl": dead, "authorizeUrl": "https://elsewhere.example/authorize"})
    assert (by_hand.json["authorizeUrl"], by_hand.json["accessTokenUrl"]) == (
        "https://elsewhere.example/authorize",
        w.b.url + "/plugins/servlet/oauth/access-token")
    kept = w.api("PATCH", "/service-providers/B", body={"baseUrl": w.b.url})
    assert kept.json["authorizeUrl"] == "https://elsewhere.example/authorize"


# -- connections -------------------------------------------------------------------------


def test_admin_lists_and_drops_connections(linked: World) -> None:
    w = linked
    listed = w.api("GET", "/service-providers/B/connections")
    assert listed.status_code == 200
    rows = listed.json["connections"]
    assert [(r["provider"], r["user"], r["status"]) for r in rows] == [
        ("B", "alice", "connected")]
    assert isinstance(rows[0]["connectedAt"], int)
    text = listed.text
    state = w.connection("alice")
    assert state is not None and state.token_sealed and state.token_sealed not in text
    problem(w.api("GET", "/service-providers/B/connections", who=ALICE), 403)
    problem(w.api("GET", "/service-providers/none/connections"), 404)

    dropped = w.api("DELETE", "/service-providers/B/connections/alice")
    assert dropped.json == {"provider": "B", "user": "alice", "dropped": True}
    last = w.deps.store.read_stream(connection_stream("alice", "B"))[-1]
    assert (last.type, last.event.by, last.event.reason) == (
        "ProviderTokenDropped", "root", "admin")
    problem(w.api("DELETE", "/service-providers/B/connections/alice"), 404)
    problem(w.api("DELETE", "/service-providers/B/connections/bob"), 404)
    assert w.api("GET", "/service-providers/B/connections").json["connections"] == []
    assert "Connect" in problem(w.call({"url": MYSELF}), 409)["detail"]


def test_users_see_and_end_their_own_connections(linked: World) -> None:
    w = linked
    mine = w.api("GET", "/users/me/connections", who=ALICE)
    assert [(r["provider"], r["user"], r["status"]) for r in mine.json["connections"]] == [
        ("B", "alice", "connected")]
    bobs = w.api("GET", "/users/me/connections", who=basic("bob", USER_PW)).json
    assert [(r["user"], r["status"]) for r in bobs["connections"]] == [("bob",
                                                                        "not_connected")]
    problem(w.api("GET", "/users/me/connections", who=None), 401)

    sess = Session(w.client, "alice", USER_PW)
    problem(sess.call("DELETE", "/users/me/connections/B"), 403)
    assert w.connection("alice").status == "connected"
    gone = sess.call("DELETE", "/users/me/connections/B", csrf=sess.csrf)
    assert gone.status_code == 200 and gone.json["status"] == "not_connected"
    last = w.deps.store.read_stream(connection_stream("alice", "B"))[-1]
    assert (last.type, last.event.by, last.event.reason) == (
        "ProviderTokenDropped", "alice", "user")
    problem(w.api("DELETE", "/users/me/connections/B", who=ALICE), 404)
    problem(w.api("DELETE", "/users/me/connections/none", who=ALICE), 404)


def test_removing_the_provider_drops_its_connections(linked: World) -> None:
    w = linked
    w.connect("bob")
    removed = w.api("DELETE", "/service-providers/B")
    assert removed.json == {"removed": "B", "connectionsDropped": 2}
    for user in ("alice", "bob"):
        last = w.deps.store.read_stream(connection_stream(user, "B"))[-1]
        assert (last.type, last.event.reason) == ("ProviderTokenDropped", "provider-removed")
    assert w.api("GET", "/users/me/connections", who=ALICE).json == {"connections": []}
    problem(w.call({"url": MYSELF}), 404)


# -- the Python client -----------------------------------------------------------------


@pytest.fixture
def served_a(linked: World) -> Iterator[str]:
    """A served over real HTTP (a WSGI server thread), for the urllib client."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, create_app(linked.deps), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_python_client_calls_and_raises_problems(linked: World, served_a: str) -> None:
    w = linked
    secret = create_resource_server(w.deps.ledger, w.deps.sealer, "reports", "", META,
                                    act_for_users=True)
    rs = OAuthLedgerClient(served_a, resource_server=("reports", secret))
    assert secret not in repr(rs)
    answer = rs.call("B", "GET", MYSELF, user="alice")
    assert (answer.status, answer.connection) == (200, "connected")
    assert answer.json()["name"] == w.b_users["alice"]
    with pytest.raises(OAuthLedgerError) as caught:
        rs.call("B", "GET", MYSELF, user="bob")
    assert caught.value.status == 409 and "Connect" in caught.value.detail
    with pytest.raises(OAuthLedgerError) as caught:
        rs.call("B", "GET", "https://evil.example/", user="alice")
    assert caught.value.status == 422 and set(caught.value.errors) == {"url"}

    alice = OAuthLedgerClient(served_a, basic=("alice", USER_PW))
    assert alice.call("B", "GET", MYSELF, body=None).status == 200
    assert [(c["provider"], c["status"]) for c in alice.connections()] == [("B", "connected")]
    with pytest.raises(OAuthLedgerError) as caught:
        OAuthLedgerClient(served_a, basic=("alice", "wrong")).connections()
    assert caught.value.status == 401
    with pytest.raises(OAuthLedgerError) as caught:
        OAuthLedgerClient(dead_url(), basic=("alice", USER_PW)).connections()
    assert caught.value.status is None
    with pytest.raises(ValueError):
        OAuthLedgerClient(served_a)


def test_openapi_lists_the_new_routes(world: World) -> None:
    doc = world.api("GET", "/openapi.json", who=None).json
    paths = doc["paths"]
    assert {"/service-providers/{name}/call", "/service-providers/{name}/connections",
            "/service-providers/{name}/connections/{user}", "/users/me/connections",
            "/users/me/connections/{name}"} <= set(paths)
    assert "patch" in paths["/service-providers/{name}"]
    call_op = paths["/service-providers/{name}/call"]["post"]
    assert {"resourceServer": []} in call_op["security"]
    assert {"200", "404", "409", "422", "502"} <= set(call_op["responses"])

