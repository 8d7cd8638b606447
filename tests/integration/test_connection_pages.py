"""The consumer side's pages (services/http/pages/connections.py and the Service
Providers tab) through the Falcon app, against a real provider: installation A is the app
under test on embedded deps (a SQLite file and the in-process Redis) with
OAUTHLEDGER_FETCH_ALLOW_PRIVATE so it may reach loopback; installation B is a real
``oauthledger serve`` process (tests/e2e/servers.py) where A is registered as a consumer
by its consumer-info key and public key, and a user of B approves in a real HTTP session
(docs/admin.md, "Service Providers" and "Connections").

Covered: connect → approve → callback → the page says Connected; deny; a wrong or
replayed callback; a callback from another session or another user; an expired pending
request; a provider that is down; disconnect; the admin's drop; add by base URL (name
from B's application-links manifest); edit keeping the connections and the secret;
remove forgetting every token; anti-CSRF refusals; messages that cannot be forged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import falcon.testing
import pytest

from oauthledger.events.state import connection_stream, provider_stream
from oauthledger.services import connections as conn
from oauthledger.services import installation as inst
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.providers import ProviderInput, add_provider, by_base_url
from oauthledger.services.sessions import COOKIE
from oauthledger.services.users import register_user
from tests.conftest import embedded_deps_in
from tests.e2e import servers

PAGE = conn.CONNECTIONS_PAGE
DISCONNECT = f"{PAGE}/disconnect"
TAB = "/plugins/servlet/oauth/admin/service-providers"
FORM = "application/x-www-form-urlencoded"
PASSWORD = "a-password-of-A"
PROVIDER = "B"
# Falcon's test client sends Host: falconframework.org; A's callbacks are built from it.
A_BASE = "http://falconframework.org"


@pytest.fixture(scope="module")
def provider_b() -> Iterator[servers.Stack]:
    """Installation B: one real front end (no worker: every commit publishes its states,
    docs/design.md "Read your writes")."""
    stack = servers.make_stack(servers=1, worker=False)
    try:
        yield stack
    finally:
        stack.close()


class Visitor:
    """One browser session at A through the Falcon test client."""

    def __init__(self, client: falcon.testing.TestClient, user: str) -> None:
        self.client = client
        page = client.simulate_get("/login")
        cookie = page.cookies[COOKIE].value
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        resp = client.simulate_post("/login", headers={"Cookie": f"{COOKIE}={cookie}"},
                                    body=urlencode({"username": user, "password": PASSWORD,
                                                    "csrf_token": token}),
                                    content_type=FORM)
        assert resp.status_code == 303, resp.text
        self.cookie = resp.cookies[COOKIE].value

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"}

    def get(self, url: str, **params: str) -> falcon.testing.Result:
        """GET a path (a query in ``url`` is kept)."""
        parts = urlsplit(url)
        query = parts.query + ("&" if parts.query and params else "") + urlencode(params)
        return self.client.simulate_get(parts.path, query_string=query or None,
                                        headers=self.headers)

    def follow(self, resp: falcon.testing.Result) -> falcon.testing.Result:
        """The page a 303 leads to (on A)."""
        assert resp.status_code == 303, (resp.status_code, resp.text[:500])
        return self.get(resp.headers["Location"])

    def csrf(self) -> str:
        """The session's anti-CSRF token, as the connections page's forms carry it."""
        page = self.get(PAGE)
        return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

    def post(self, path: str, fields: dict[str, str]) -> falcon.testing.Result:
        return self.client.simulate_post(path, body=urlencode(fields), content_type=FORM,
                                         headers=self.headers)

    def admin_post(self, path: str, fields: dict[str, str],
                   csrf: bool = True) -> falcon.testing.Result:
        """POST an admin form (its field is ``csrf_token``, like every admin page's)."""
        if csrf:
            tab = self.get(TAB)
            fields = {**fields, "csrf_token": re.search(
                r'name="csrf_token" value="([^"]+)"', tab.text).group(1)}
        return self.post(path, fields)

    def connect(self, provider: str = PROVIDER, csrf: bool = True) -> falcon.testing.Result:
        fields = {"csrf": self.csrf()} if csrf else {}
        return self.post(f"{conn.PROVIDER_PATH}/{quote(provider, safe='')}/connect", fields)


@dataclass
class Site:
    """Installation A (the app under test) with B added as a service provider by base URL
    and A registered at B as a consumer."""

    deps: Deps
    client: falcon.testing.TestClient
    b: servers.Stack
    shift: list[float] = field(default_factory=lambda: [0.0])

    def visitor(self, user: str = "alice") -> Visitor:
        return Visitor(self.client, user)

    def b_user(self) -> str:
        return servers.add_user(self.b)

    def approve_at_b(self, authorize_url: str, b_user: str,
                     approve: bool = True) -> str:
        """The user's browser at B: sign in, press approve or deny. Returns where B sends
        the browser back to (A's callback), as a path with its query."""
        assert authorize_url.startswith(f"{self.b.url}/plugins/servlet/oauth/authorize?")
        resp = servers.Browser(self.b.url).decide(authorize_url, b_user, approve)
        assert resp.status_code == 303, (resp.status_code, resp.text[:300])
        location = resp.headers["Location"]
        callback = conn.callback_url(A_BASE, PROVIDER)
        assert location.startswith(callback + "?"), location
        return location[len(A_BASE):]

    def types(self, user: str, provider: str = PROVIDER) -> list[str]:
        return [r.type for r in self.deps.store.read_stream(connection_stream(user, provider))]

    def status(self, user: str, provider: str = PROVIDER) -> str:
        state, _ = conn.load_connection(self.deps.ledger, user, provider)
        return conn.status_of(state, self.deps.ledger.clock())

    def connect(self, who: Visitor, b_user: str) -> falcon.testing.Result:
        """Connect through the pages; returns the connections page it ends on."""
        started = who.connect()
        assert started.status_code == 303, started.text
        return who.follow(who.get(self.approve_at_b(started.headers["Location"], b_user)))


@pytest.fixture
def site(tmp_path: Path, provider_b: servers.Stack) -> Iterator[Site]:
    with embedded_deps_in(tmp_path, FETCH_ALLOW_PRIVATE="true") as deps:
        shift = [0.0]
        # A decides a pending request's expiry with its ledger clock (B keeps real time).
        deps.ledger.clock = lambda: time.time() + shift[0]
        meta = {"actor": "test"}
        register_user(deps.ledger, "root", PASSWORD, admin=True, meta=meta)
        register_user(deps.ledger, "alice", PASSWORD, meta=meta)
        register_user(deps.ledger, "bob", PASSWORD, meta=meta)
        me = inst.ensure_installation(deps.ledger, deps.sealer, meta)
        add_provider(deps.ledger, deps.sealer,
                     by_base_url(PROVIDER, provider_b.url, me.key, "Installation B"), meta)
        b = provider_b.deps()
        # What B's "add consumer by URL" registers: A's consumer-info key and public key.
        register_consumer(b.ledger, b.sealer, me.key,
                          ConsumerInput(name=f"A {me.key}", public_key=me.public_key,
                                        signature_methods=["RSA-SHA1"]), meta)
        yield Site(deps, falcon.testing.TestClient(create_app(deps)), provider_b, shift)


def message(html: str) -> str | None:
    return servers.element_text(html, "connection-message")


def status_text(html: str, provider: str = PROVIDER) -> str:
    row = re.search(rf'<tr id="connection-{re.escape(provider)}">(.*?)</tr>', html, re.S)
    assert row, html
    found = re.search(r'class="connection-status">([^<]*)<', row.group(1))
    assert found, row.group(1)
    return " ".join(found.group(1).split())


def connected_message(provider: str = PROVIDER) -> str:
    return f"Connected to {provider}."


# -- the user's side -------------------------------------------------------------------


def test_connect_approve_and_come_back_connected(site: Site) -> None:
    anonymous = site.client.simulate_get(PAGE)
    assert anonymous.status_code == 303 and anonymous.headers["Location"].startswith("/login")
    alice = site.visitor()
    page = alice.get(PAGE)
    assert page.status_code == 200 and message(page.text) is None
    assert status_text(page.text) == "Not connected"
    assert 'href="/plugins/servlet/oauth/users/connections"' in page.text  # the nav link
    assert page.headers["X-Frame-Options"] == "DENY"
    forms = servers.parse_forms(page.text)
    assert [f["action"] for f in forms if "csrf" in f["inputs"]] == [
        "/plugins/servlet/oauth/service-providers/B/connect"]

    started = alice.connect()
    assert started.status_code == 303
    authorize = started.headers["Location"]
    assert site.types("alice") == ["ProviderTokenRequested"]
    back = site.approve_at_b(authorize, site.b_user())
    done = alice.get(back)
    assert done.status_code == 303
    target = done.headers["Location"]
    assert target.startswith(PAGE + "?")
    # Nothing of the dance travels on: no request token, no verifier.
    assert "oauth_" not in target
    shown = alice.follow(done)
    assert message(shown.text) == connected_message()
    assert 'class="notice"' in shown.text
    assert status_text(shown.text).startswith("Connected since ")
    assert ", expires at " in status_text(shown.text)
    assert site.types("alice") == ["ProviderTokenRequested", "ProviderTokenObtained"]
    # The stored token is sealed and never shown.
    state, _ = conn.load_connection(site.deps.ledger, "alice", PROVIDER)
    token = site.deps.sealer.open(state.token_sealed)
    assert token not in shown.text and token not in target
    # A Disconnect form appears once connected; the button now says Reconnect.
    assert any(f["action"] == DISCONNECT and f["inputs"].get("provider") == PROVIDER
               for f in servers.parse_forms(shown.text))
    assert "Reconnect" in shown.text

    # The message shows only in the session it was made for, and cannot be forged.
    bob = site.visitor("bob")
    assert message(bob.get(target).text) is None
    query = dict(parse_qsl(urlsplit(target).query))
    forged = {**query, "msg": "Call 555-0100 to keep your account"}
    assert message(alice.get(PAGE, **forged).text) is None
    assert message(alice.get(PAGE, **{**query, "ok": "0"}).text) is None
    assert message(alice.get(PAGE, msg="hello").text) is None
    # bob's own page knows nothing of alice's connection.
    assert status_text(bob.get(PAGE).text) == "Not connected"


def test_deny_stores_nothing(site: Site) -> None:
    alice = site.visitor()
    started = alice.connect()
    back = site.approve_at_b(started.headers["Location"], site.b_user(), approve=False)
    shown = alice.follow(alice.get(back))
    assert message(shown.text).startswith("Access was not granted at B, so nothing was stored")
    assert 'class="alert"' in shown.text
    assert status_text(shown.text) == "Not connected"
    assert site.types("alice") == ["ProviderTokenRequested", "ProviderTokenRequestEnded"]
    assert site.status("alice") == "not_connected"


def test_wrong_and_replayed_callbacks_are_refused(site: Site) -> None:
    alice = site.visitor()
    # A callback that matches nothing: no connection was started.
    wrong = alice.follow(alice.get(f"{conn.PROVIDER_PATH}/B/callback",
                                   oauth_token="made-up", oauth_verifier="123"))
    assert "does not match a connection started from this browser" in message(wrong.text)
    assert site.types("alice") == []

    b_user = site.b_user()
    started = alice.connect()
    back = site.approve_at_b(started.headers["Location"], b_user)
    # The right verifier with another token: refused, and the pending request stays.
    swapped = back.replace("oauth_token=", "oauth_token=x")
    refused = alice.follow(alice.get(swapped))
    assert "does not match" in message(refused.text)
    assert site.types("alice") == ["ProviderTokenRequested"]
    assert message(alice.follow(alice.get(back)).text) == connected_message()
    # The same return again: used already, nothing recorded, still connected.
    replay = alice.follow(alice.get(back))
    assert "or it was used already" in message(replay.text)
    assert site.types("alice") == ["ProviderTokenRequested", "ProviderTokenObtained"]
    assert status_text(replay.text).startswith("Connected since")

    # A provider name in the path that names nothing is not repeated on the page.
    odd = alice.follow(alice.get(f"{conn.PROVIDER_PATH}/{quote('Call 555-0100')}/callback",
                                 oauth_token="t", oauth_verifier="v"))
    assert message(odd.text).startswith("There is no such service provider")
    assert "555" not in odd.text
    # Signed out, the callback first asks for a sign-in.
    anonymous = site.client.simulate_get(f"{conn.PROVIDER_PATH}/B/callback",
                                         query_string="oauth_token=t&oauth_verifier=v")
    assert anonymous.status_code == 303
    assert anonymous.headers["Location"].startswith("/login?next=")


def test_callback_from_another_session_or_user_is_refused(site: Site) -> None:
    alice = site.visitor()
    started = alice.connect()
    back = site.approve_at_b(started.headers["Location"], site.b_user())
    # The same person in another browser session (another sign-in), then another user:
    # neither may bring the return of a connection this session started.
    other_session = site.visitor("alice")
    assert other_session.cookie != alice.cookie
    refused = other_session.follow(other_session.get(back))
    assert "does not match a connection started from this browser" in message(refused.text)
    bob = site.visitor("bob")
    assert "does not match" in message(bob.follow(bob.get(back)).text)
    assert site.types("alice") == ["ProviderTokenRequested"]
    assert site.types("bob") == []
    # The session that started it still finishes it.
    assert message(alice.follow(alice.get(back)).text) == connected_message()
    assert site.status("alice") == "connected"


def test_expired_pending_request(site: Site) -> None:
    alice = site.visitor()
    started = alice.connect()
    back = site.approve_at_b(started.headers["Location"], site.b_user())
    page = alice.get(PAGE)
    assert "waits for your approval" in page.text
    site.shift[0] = conn.PENDING_TTL + 1
    late = alice.follow(alice.get(back))
    assert message(late.text) == ("The connection to B took too long and expired. Press "
                                  "Connect to start again.")
    assert status_text(late.text) == "Not connected"
    assert "waits for your approval" not in late.text
    assert site.types("alice") == ["ProviderTokenRequested", "ProviderTokenRequestEnded"]


def test_provider_down_says_so_and_stores_nothing(site: Site) -> None:
    me = inst.load_installation(site.deps.ledger)
    down = f"http://127.0.0.1:{servers.free_port()}"
    add_provider(site.deps.ledger, site.deps.sealer,
                 by_base_url("Down", down, me.key), {"actor": "test"})
    alice = site.visitor()
    resp = alice.connect("Down")
    assert resp.status_code == 303 and resp.headers["Location"].startswith(PAGE + "?")
    shown = alice.follow(resp)
    assert message(shown.text).startswith("Down could not be reached")
    assert status_text(shown.text, "Down") == "Not connected"
    assert site.types("alice", "Down") == []
    # A provider that does not exist: back with a message that does not repeat the name.
    gone = alice.follow(alice.connect("Nope<b>"))
    assert message(gone.text).startswith("There is no such service provider")
    assert "Nope" not in gone.text


def test_disconnect(site: Site) -> None:
    alice = site.visitor()
    site.connect(alice, site.b_user())
    no_csrf = alice.post(DISCONNECT, {"provider": PROVIDER})
    assert no_csrf.status_code == 403 and "Request refused" in no_csrf.text
    wrong_csrf = alice.post(DISCONNECT, {"provider": PROVIDER, "csrf": "nope"})
    assert wrong_csrf.status_code == 403
    assert site.status("alice") == "connected"

    done = alice.follow(alice.post(DISCONNECT, {"provider": PROVIDER, "csrf": alice.csrf()}))
    assert message(done.text).startswith("Disconnected from B")
    assert status_text(done.text) == "Not connected"
    dropped = site.deps.store.read_stream(connection_stream("alice", PROVIDER))[-1]
    assert dropped.type == "ProviderTokenDropped"
    assert (dropped.event.by, dropped.event.reason) == ("alice", "user")
    assert dropped.meta["actor"] == "alice"
    again = alice.follow(alice.post(DISCONNECT, {"provider": PROVIDER, "csrf": alice.csrf()}))
    assert message(again.text) == "There was no connection to forget."
    odd = alice.follow(alice.post(DISCONNECT, {"provider": "x\x00y", "csrf": alice.csrf()}))
    assert message(odd.text) == "There was no connection to forget."


def test_connect_without_csrf_is_refused(site: Site) -> None:
    alice = site.visitor()
    for resp in (alice.connect(csrf=False),
                 alice.post(f"{conn.PROVIDER_PATH}/B/connect", {"csrf": "forged"})):
        assert resp.status_code == 403 and "Request refused" in resp.text
    assert site.types("alice") == []
    anonymous = site.client.simulate_post(f"{conn.PROVIDER_PATH}/B/connect")
    assert anonymous.status_code == 303 and anonymous.headers["Location"].startswith("/login")


# -- the admin's side ------------------------------------------------------------------


def test_admin_sees_connections_and_drops_one(site: Site) -> None:
    alice = site.visitor()
    site.connect(alice, site.b_user())
    root = site.visitor("root")
    view = root.get(f"{TAB}/view", name=PROVIDER)
    assert view.status_code == 200
    # What B must register: A's consumer-info URL and consumer key.
    me = inst.load_installation(site.deps.ledger)
    assert servers.element_text(view.text, "consumer-info-url") == (
        f"{A_BASE}/plugins/servlet/oauth/consumer-info")
    assert servers.element_text(view.text, "our-consumer-key") == me.key
    assert servers.element_text(view.text, "callback-url") == conn.callback_url(A_BASE,
                                                                                PROVIDER)
    row = re.search(r'<tr id="user-connection-alice">(.*?)</tr>', view.text, re.S).group(1)
    assert "Connected" in row
    state, _ = conn.load_connection(site.deps.ledger, "alice", PROVIDER)
    assert site.deps.sealer.open(state.token_sealed) not in view.text

    assert alice.admin_post(f"{TAB}/drop", {"name": PROVIDER, "user": "alice"}
                            ).status_code == 403  # not an admin
    assert root.admin_post(f"{TAB}/drop", {"name": PROVIDER, "user": "alice"},
                           csrf=False).status_code == 403
    assert site.status("alice") == "connected"
    dropped = root.admin_post(f"{TAB}/drop", {"name": PROVIDER, "user": "alice"})
    assert dropped.status_code == 303 and "connection-dropped" in dropped.headers["Location"]
    after = root.follow(dropped)
    assert "The user&#39;s stored token was forgotten" in after.text
    assert 'id="no-connections"' in after.text
    last = site.deps.store.read_stream(connection_stream("alice", PROVIDER))[-1]
    assert (last.type, last.event.by, last.event.reason) == ("ProviderTokenDropped", "root",
                                                            "admin")
    assert status_text(alice.get(PAGE).text) == "Not connected"
    gone = root.admin_post(f"{TAB}/drop", {"name": PROVIDER, "user": "alice"})
    assert "connection-gone" in gone.headers["Location"]
    assert root.admin_post(f"{TAB}/drop", {"name": "Nope", "user": "alice"}).status_code == 404


def test_admin_adds_by_base_url(site: Site) -> None:
    # B publishes its name in its application-links manifest: an empty name takes it.
    b_name = servers.unique("Bee")
    b = site.b.deps()
    inst.update_installation(b.ledger, b.sealer, b_name, "", {"actor": "test"})
    root = site.visitor("root")
    tab = root.get(TAB)
    assert 'action="/plugins/servlet/oauth/admin/service-providers/by-url"' in tab.text
    for field_id in re.findall(r'<(?:input|textarea) id="([^"]+)"', tab.text):
        assert tab.text.count(f'id="{field_id}"') == 1, field_id  # two forms, unique ids
        assert f'for="{field_id}"' in tab.text, field_id

    bad = root.admin_post(f"{TAB}/by-url", {"name": "X", "base_url": "ftp://b.example",
                                            "description": ""})
    assert bad.status_code == 422 and 'id="ue-base_url"' in bad.text
    assert 'value="ftp://b.example"' in bad.text
    assert root.admin_post(f"{TAB}/by-url", {"name": "X", "base_url": site.b.url},
                           csrf=False).status_code == 403
    assert site.deps.ledger.load(provider_stream("X"))[0] is None

    added = root.admin_post(f"{TAB}/by-url", {"name": "", "base_url": site.b.url + "/",
                                              "description": ""})
    assert added.status_code == 303, added.text
    assert urlsplit(added.headers["Location"]).query == urlencode(
        {"name": b_name, "done": "provider-added"})
    state, _ = site.deps.ledger.load(provider_stream(b_name))
    me = inst.load_installation(site.deps.ledger)
    assert (state.base_url, state.consumer_key, state.secret_sealed) == (site.b.url, me.key,
                                                                         None)
    assert state.authorize_url == f"{site.b.url}/plugins/servlet/oauth/authorize"
    assert "application-links manifest" in state.description
    view = root.follow(added)
    assert servers.element_text(view.text, "provider-base-url") == site.b.url
    assert servers.element_text(view.text, "consumer-info-url") == (
        f"{A_BASE}/plugins/servlet/oauth/consumer-info")
    # The same name again is a conflict, shown next to the name.
    again = root.admin_post(f"{TAB}/by-url", {"name": b_name, "base_url": site.b.url})
    assert again.status_code == 409 and 'id="ue-name"' in again.text

    # It works: alice connects to the provider the admin just added (B already knows A).
    alice = site.visitor()
    started = alice.connect(b_name)
    assert started.headers["Location"].startswith(f"{site.b.url}/plugins/servlet/oauth/")
    resp = servers.Browser(site.b.url).decide(started.headers["Location"], site.b_user())
    back = resp.headers["Location"]
    assert back.startswith(conn.callback_url(A_BASE, b_name) + "?")
    shown = alice.follow(alice.get(back[len(A_BASE):]))
    assert message(shown.text) == connected_message(b_name)
    assert status_text(shown.text, b_name).startswith("Connected since")


def test_edit_keeps_connections_and_the_secret(site: Site) -> None:
    alice = site.visitor()
    site.connect(alice, site.b_user())
    root = site.visitor("root")
    form = root.get(f"{TAB}/edit", name=PROVIDER)
    assert form.status_code == 200
    fields = servers.parse_forms(form.text)[-1]["inputs"]
    assert fields["request_token_url"] == f"{site.b.url}/plugins/servlet/oauth/request-token"
    assert fields["base_url"] == site.b.url and fields["shared_secret"] == ""
    assert root.get(f"{TAB}/edit", name="Nope").status_code == 404

    edit = {k: v for k, v in fields.items() if k != "csrf_token"}
    edit.update(description="Installation B, edited", signing="rsa")
    bad = root.admin_post(f"{TAB}/edit", {**edit, "authorize_url": "nope"})
    assert bad.status_code == 422 and 'id="e-authorize_url"' in bad.text
    assert root.admin_post(f"{TAB}/edit", edit, csrf=False).status_code == 403
    before = site.deps.ledger.load(provider_stream(PROVIDER))[1]
    saved = root.admin_post(f"{TAB}/edit", edit)
    assert saved.status_code == 303 and "provider-updated" in saved.headers["Location"]
    assert "Users&#39; connections stay" in root.follow(saved).text
    state, version = site.deps.ledger.load(provider_stream(PROVIDER))
    assert version == before + 1 and state.description == "Installation B, edited"
    assert site.status("alice") == "connected"
    assert status_text(alice.get(PAGE).text).startswith("Connected since")

    # A provider with a shared secret: the empty secret field keeps it.
    add_provider(site.deps.ledger, site.deps.sealer, ProviderInput(
        name="Photos", consumer_key="ck", shared_secret="photo-secret",
        request_token_url="https://p.example/rt", authorize_url="https://p.example/a",
        access_token_url="https://p.example/at"), {"actor": "test"})
    photos = servers.parse_forms(root.get(f"{TAB}/edit", name="Photos").text)[-1]["inputs"]
    photos = {k: v for k, v in photos.items() if k != "csrf_token"}
    kept = root.admin_post(f"{TAB}/edit", {**photos, "signing": "secret",
                                           "consumer_key": "ck2"})
    assert kept.status_code == 303
    state, _ = site.deps.ledger.load(provider_stream("Photos"))
    assert state.consumer_key == "ck2"
    assert site.deps.sealer.open(state.secret_sealed) == "photo-secret"
    assert "photo-secret" not in root.get(f"{TAB}/edit", name="Photos").text

    # A provider added by base URL that moves: its endpoints move with it.
    moved = f"http://localhost:{site.b.servers[0].port}"
    root.admin_post(f"{TAB}/edit", {**edit, "base_url": moved})
    state, _ = site.deps.ledger.load(provider_stream(PROVIDER))
    assert state.base_url == moved
    assert state.access_token_url == f"{moved}/plugins/servlet/oauth/access-token"
    assert site.status("alice") == "connected"


def test_remove_forgets_every_users_token(site: Site) -> None:
    b_user = site.b_user()
    alice, bob = site.visitor(), site.visitor("bob")
    site.connect(alice, b_user)
    site.connect(bob, b_user)
    root = site.visitor("root")
    view = root.get(f"{TAB}/view", name=PROVIDER)
    assert "forgets every user's stored token for it at once (2 connections)" in view.text
    removed = root.admin_post(f"{TAB}/remove", {"name": PROVIDER})
    assert removed.status_code == 303
    tab = root.follow(removed)
    assert "every user&#39;s stored token for it was forgotten" in tab.text
    for user in ("alice", "bob"):
        last = site.deps.store.read_stream(connection_stream(user, PROVIDER))[-1]
        assert (last.type, last.event.reason) == ("ProviderTokenDropped", "provider-removed")
    assert 'id="no-providers"' in alice.get(PAGE).text


def test_short_tab_path_leads_to_the_tab(site: Site) -> None:
    resp = site.visitor("root").get(conn.PROVIDER_PATH)
    assert resp.status_code == 303 and resp.headers["Location"] == TAB
