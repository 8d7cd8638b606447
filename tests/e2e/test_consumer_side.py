"""oauthledger as a CONSUMER of OAuth 1.0a service providers it did not write: one on
Authlib's Flask integration and one on oauthlib's endpoints (tests/e2e/providers/), each
its own process, against oauthledger as a real gunicorn process on PostgreSQL and Redis.

A person signs in to oauthledger, presses Connect on the connections page, approves (or
denies) at the provider, comes back through oauthledger's callback, and oauthledger then
calls the provider's /api/me on that person's behalf through the call API — signed with
HMAC-SHA1 and a shared secret, or RSA-SHA1 with this installation's key (the public half
handed to the provider from /plugins/servlet/oauth/consumer-info, as an administrator
of the provider would). Then what the call API refuses: URLs outside the provider,
unknown users and providers, users without a connection, and a provider that is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests

from tests.e2e import servers as s

CONNECTIONS = "/plugins/servlet/oauth/users/connections"
PROVIDERS = "/plugins/servlet/oauth/service-providers"
CONSUMER_INFO = "/plugins/servlet/oauth/consumer-info"
API = "/rest/oauthledger/1"
PROVIDER_KINDS = ("authlib", "oauthlib")
SIGNATURE_METHODS = ("HMAC-SHA1", "RSA-SHA1")


# -- the deployment and this installation's identity --------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[s.Stack]:
    """One gunicorn front end on its own schema and Redis prefix, allowed to reach the
    providers on loopback (OAUTHLEDGER_FETCH_ALLOW_PRIVATE; remote_fetch refuses private
    addresses otherwise)."""
    deployment = s.make_stack(servers=1, worker=False, OAUTHLEDGER_FETCH_ALLOW_PRIVATE="true")
    try:
        yield deployment
    finally:
        deployment.close()


@dataclass(frozen=True)
class Installation:
    """This installation's consumer identity as its consumer-info XML publishes it."""

    key: str
    public_key_file: Path


@pytest.fixture(scope="module")
def installation(stack: s.Stack) -> Installation:
    """Fetch /plugins/servlet/oauth/consumer-info from the running oauthledger (as the
    provider's administrator would) and keep its public key in a file for the providers."""
    resp = requests.get(stack.url + CONSUMER_INFO, timeout=10)
    assert resp.status_code == 200, resp.text
    root = ET.fromstring(resp.content)
    key, public_key = root.findtext("key"), root.findtext("publicKey")
    assert key and public_key and "PRIVATE" not in resp.text, resp.text
    path = stack.workdir / "installation-public.pem"
    path.write_text(public_key.strip() + "\n")
    return Installation(key=key, public_key_file=path)


# -- provider processes -----------------------------------------------------------------------


@dataclass
class Provider:
    """A provider process (started, stopped, started again on the same port with
    nothing in memory) and the name oauthledger knows it by."""

    kind: str
    name: str
    port: int
    method: str
    args: list[str]
    env: dict[str, str]
    workdir: Path
    process: s.Process | None = None

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until it answers."""
        self.process = s.spawn(f"{self.kind}-provider", self.args, self.env, self.workdir)
        s.wait_until(lambda: requests.get(self.base + "/", timeout=2).status_code == 200,
                     f"the {self.kind} provider on port {self.port}", self.process,
                     timeout=60)

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.alive()


@contextlib.contextmanager
def provider_process(stack: s.Stack, installation: Installation, kind: str,
                     method: str) -> Iterator[Provider]:
    """Start ``kind``'s provider for one consumer: this installation's key and public key
    (RSA-SHA1), or a key and secret of the provider's own (HMAC-SHA1, as third-party
    providers issue them); register it in oauthledger through the service layer (the
    same service the admin page, API and CLI use), and remove it again afterwards."""
    from oauthledger.services.providers import ProviderInput, add_provider, remove_provider

    port = s.free_port()
    args = [sys.executable, "-m", f"tests.e2e.providers.{kind}_provider",
            "--port", str(port)]
    if method == "RSA-SHA1":
        consumer_key, secret = installation.key, ""
        args += ["--client-key", consumer_key,
                 "--rsa-public-key-file", str(installation.public_key_file)]
    else:
        consumer_key, secret = f"oauthledger-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        args += ["--client-key", consumer_key, "--client-secret", secret]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    provider = Provider(kind, s.unique(f"{kind}-{method.split('-')[0].lower()}"), port,
                        method, args, env, stack.workdir)
    deps = stack.deps()
    try:
        provider.start()
        add_provider(deps.ledger, deps.sealer, ProviderInput(
            name=provider.name, description=f"The {kind} test provider",
            consumer_key=consumer_key, shared_secret=secret, use_rsa=method == "RSA-SHA1",
            request_token_url=provider.base + "/oauth/initiate",
            authorize_url=provider.base + "/oauth/authorize",
            access_token_url=provider.base + "/oauth/token"), {"actor": "e2e"})
        yield provider
        remove_provider(deps.ledger, provider.name, {"actor": "e2e"})
    finally:
        provider.stop()


# -- reading the connections page -------------------------------------------------------------


# HTML void elements (WHATWG HTML §13.1.2): a start tag with no end tag.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})


def status_text(html: str, provider: str) -> str | None:
    """The text of the ``connection-status`` element in the row ``connection-<provider>``
    (None when the page has no such row or status)."""
    row_id = f"connection-{provider}"
    found: list[str] = []
    state = {"row": 0, "status": 0}

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in _VOID:
                return  # no end tag follows: it must not count as a level
            a = dict(attrs)
            if state["status"]:
                state["status"] += 1
            elif state["row"] and "connection-status" in (a.get("class") or "").split():
                state["status"] = 1
                found.append("")
            if state["row"]:
                state["row"] += 1
            elif a.get("id") == row_id:
                state["row"] = 1

        def handle_endtag(self, tag: str) -> None:
            if tag in _VOID:
                return
            if state["status"]:
                state["status"] -= 1
            if state["row"]:
                state["row"] -= 1

        def handle_data(self, data: str) -> None:
            if state["status"]:
                found[-1] += data

    Parser().feed(html)
    return " ".join(found[0].split()) if found else None


def connect_form(page: requests.Response, provider: str) -> dict[str, Any]:
    """The Connect form of ``provider``'s row."""
    action = f"{PROVIDERS}/{quote(provider, safe='')}/connect"
    forms = [f for f in s.parse_forms(page.text) if f["action"] == action]
    assert len(forms) == 1, (action, s.parse_forms(page.text))
    assert forms[0]["method"].lower() == "post"
    assert forms[0]["inputs"].get("csrf"), "the Connect form carries the session's csrf"
    return forms[0]


# -- the dance as a person does it ------------------------------------------------------------


@dataclass
class Person:
    """An oauthledger user with a browser, and who they are at the provider."""

    user: str
    browser: s.Browser
    provider_identity: str


def sign_in(stack: s.Stack) -> Person:
    """A new oauthledger user signed in to the connections page."""
    user = s.add_user(stack)
    browser = s.Browser(stack.url)
    page = browser.login_page_for(CONNECTIONS, user)
    assert page.status_code == 200 and urlsplit(page.url).path == CONNECTIONS, page.url
    return Person(user, browser, f"at-provider-{user}")


def start_connect(stack: s.Stack, person: Person, provider: Provider,
                  status_before: str = "Not connected") -> str:
    """Press Connect (or Reconnect) for ``provider``, whose row's status starts with
    ``status_before``: returns the provider's authorize URL oauthledger sent the browser
    to (303)."""
    page = person.browser.get(CONNECTIONS)
    assert page.status_code == 200
    assert (status_text(page.text, provider.name) or "").startswith(status_before), page.text
    form = connect_form(page, provider.name)
    resp = person.browser.http.post(stack.url + form["action"], data=form["inputs"],
                                    allow_redirects=False, timeout=30)
    assert resp.status_code == 303, (resp.status_code, resp.headers, resp.text[:500])
    location = resp.headers["Location"]
    assert location.startswith(provider.base + "/oauth/authorize?"), location
    assert dict(parse_qsl(urlsplit(location).query)).get("oauth_token"), location
    return location


def decide_at_provider(person: Person, provider: Provider, authorize_url: str,
                       approve: bool) -> str:
    """Open the provider's authorize page, press Approve (as the person's identity there)
    or Deny; returns where the provider redirects the browser."""
    page = person.browser.http.get(authorize_url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    form = s.parse_forms(page.text)[0]
    assert {"approve", "deny"} <= set(form["buttons"]), form
    button = "approve" if approve else "deny"
    fields = {**form["inputs"], "user": person.provider_identity,
              button: form["buttons"][button]}
    resp = person.browser.http.post(provider.base + form["action"], data=fields,
                                    allow_redirects=False, timeout=10)
    assert resp.status_code in (302, 303), (resp.status_code, resp.text[:500])
    return resp.headers["Location"]


def come_back(stack: s.Stack, person: Person, provider: Provider,
              location: str) -> requests.Response:
    """Follow the provider's redirect to oauthledger's callback, and its 303 to the
    connections page."""
    callback = f"{stack.url}{PROVIDERS}/{quote(provider.name, safe='')}/callback"
    assert location.startswith(callback + "?"), (location, callback)
    page = person.browser.get(location)
    assert page.status_code == 200 and urlsplit(page.url).path == CONNECTIONS, page.url
    return page


def connect(stack: s.Stack, person: Person, provider: Provider,
            status_before: str = "Not connected") -> requests.Response:
    """The whole connection: Connect, approve at the provider, back to the page."""
    authorize_url = start_connect(stack, person, provider, status_before)
    location = decide_at_provider(person, provider, authorize_url, approve=True)
    page = come_back(stack, person, provider, location)
    assert s.element_text(page.text, "connection-message") == \
        f"Connected to {provider.name}.", page.text
    status = status_text(page.text, provider.name)
    assert status is not None and status.startswith("Connected"), page.text
    return page


def call(stack: s.Stack, provider: str, payload: dict[str, Any],
         auth: tuple[str, str]) -> requests.Response:
    """POST the call API."""
    return requests.post(f"{stack.url}{API}/service-providers/{quote(provider, safe='')}/call",
                         json=payload, auth=auth, timeout=30)


def problem(resp: requests.Response, status: int) -> dict[str, Any]:
    """The problem+json answer with ``status`` (RFC 9457)."""
    assert resp.status_code == status, (resp.status_code, resp.text[:1000])
    assert resp.headers["Content-Type"].startswith("application/problem+json"), resp.headers
    return resp.json()


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SIGNATURE_METHODS)
@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_connect_then_call_as_the_user(stack: s.Stack, installation: Installation, kind: str,
                                       method: str) -> None:
    """A person connects through the browser; the call API then reaches the provider's
    protected resource as that person, by absolute URL and by path."""
    with provider_process(stack, installation, kind, method) as provider:
        person = sign_in(stack)
        connect(stack, person, provider)

        for url in (provider.base + "/api/me", "/api/me"):
            resp = call(stack, provider.name, {"method": "GET", "url": url},
                        (person.user, s.PASSWORD))
            assert resp.status_code == 200, (url, resp.text)
            answer = resp.json()
            assert answer["status"] == 200, answer
            assert answer["connection"] == "connected"
            assert answer["headers"]["content-type"].startswith("application/json"), answer
            # The provider saw the person it issued the token to, from our consumer key.
            seen = json.loads(answer["body"])
            assert seen["name"] == person.provider_identity, seen
            assert seen["provider"] == kind
            if method == "RSA-SHA1":
                assert seen["consumer"] == installation.key

        # The service layer agrees: one connected connection for this person.
        from oauthledger.services.connections import connections_of_user, status_of

        deps = stack.deps()
        rows = {p.name: c for p, c in connections_of_user(deps.ledger, person.user)}
        assert status_of(rows[provider.name], deps.ledger.clock()) == "connected"


# Each provider denies its own way: the oauthlib provider redirects with oauth_token and
# oauth_problem=permission_denied; Authlib's AuthorizationServer with error=access_denied
# and neither oauth_token nor oauth_verifier. Both must end on the same sentence.
@pytest.mark.parametrize("kind", ["oauthlib", "authlib"])
def test_deny_at_the_provider(stack: s.Stack, installation: Installation, kind: str) -> None:
    """Denying at the provider brings the person back to the page with the sentence that
    nothing was granted, and nothing is connected."""
    with provider_process(stack, installation, kind, "HMAC-SHA1") as provider:
        person = sign_in(stack)
        authorize_url = start_connect(stack, person, provider)
        location = decide_at_provider(person, provider, authorize_url, approve=False)
        assert "oauth_verifier" not in dict(parse_qsl(urlsplit(location).query)), location
        page = come_back(stack, person, provider, location)
        assert s.element_text(page.text, "connection-message") == (
            f"Access was not granted at {provider.name}, so nothing was stored. "
            "Press Connect if you want to try again."), page.text
        assert status_text(page.text, provider.name) == "Not connected", page.text
        resp = call(stack, provider.name, {"method": "GET", "url": "/api/me"},
                    (person.user, s.PASSWORD))
        assert "Connect" in problem(resp, 409)["detail"]


def test_call_refusals(stack: s.Stack, installation: Installation) -> None:
    """What the call API refuses, each before anything is sent to the provider: a URL
    outside the provider's origin or a bad method (422), an unknown provider or user
    (404), a user with no connection (409), a user naming another user or a resource
    server not allowed to act for users (403); and a resource server allowed to act for
    users reaches the provider as the user it names."""
    from oauthledger.services.resource_servers import create_resource_server

    with provider_process(stack, installation, "oauthlib", "RSA-SHA1") as provider:
        person = sign_in(stack)
        connect(stack, person, provider)
        auth = (person.user, s.PASSWORD)
        store = stack.deps().store

        # Not an open proxy: another port on the same host, oauthledger itself, a path
        # that climbs out with "//", a scheme that is not http(s).
        other = s.free_port()
        for url in (f"http://127.0.0.1:{other}/api/me", stack.url + "/rest/api/2/myself",
                    "//127.0.0.1:1/api/me", "file:///etc/passwd"):
            before = store.head()
            body = problem(call(stack, provider.name, {"method": "GET", "url": url}, auth),
                           422)
            assert "url" in json.dumps(body), body
            assert store.head() == before, url

        # A method that is no HTTP method.
        problem(call(stack, provider.name, {"method": "FETCH", "url": "/api/me"}, auth), 422)

        # An unknown provider.
        problem(call(stack, s.unique("no-such-provider"), {"method": "GET", "url": "/api/me"},
                     auth), 404)

        # A user with no connection: told to press Connect.
        stranger = s.add_user(stack)
        detail = problem(call(stack, provider.name, {"method": "GET", "url": "/api/me"},
                              (stranger, s.PASSWORD)), 409)["detail"]
        assert "Connect" in detail and stranger in detail, detail

        # A user calls only as themselves.
        problem(call(stack, provider.name, {"method": "GET", "url": "/api/me",
                                            "user": person.user}, (stranger, s.PASSWORD)),
                403)

        # A resource server allowed to act for users names the user; one created without
        # that permission may not call at all.
        deps = stack.deps()
        plain_id = s.unique("rs")
        plain_secret = create_resource_server(deps.ledger, deps.sealer, plain_id, "e2e",
                                              {"actor": "e2e"})
        problem(call(stack, provider.name, {"method": "GET", "url": "/api/me",
                                            "user": person.user}, (plain_id, plain_secret)),
                403)
        server_id = s.unique("rs")
        secret = create_resource_server(deps.ledger, deps.sealer, server_id, "e2e",
                                        {"actor": "e2e"}, act_for_users=True)
        rs_auth = (server_id, secret)
        missing = s.unique("nobody")
        problem(call(stack, provider.name, {"method": "GET", "url": "/api/me",
                                            "user": missing}, rs_auth), 404)
        resp = call(stack, provider.name, {"method": "GET", "url": "/api/me",
                                           "user": person.user}, rs_auth)
        assert resp.status_code == 200, resp.text
        assert json.loads(resp.json()["body"])["name"] == person.provider_identity


def test_provider_down_is_502_and_stores_nothing(stack: s.Stack,
                                                 installation: Installation) -> None:
    """With the provider's process stopped, the call answers 502 naming the provider, and
    the event log is unchanged: the connection stays as it was."""
    from oauthledger.services.connections import connections_of_user, status_of

    with provider_process(stack, installation, "authlib", "HMAC-SHA1") as provider:
        person = sign_in(stack)
        connect(stack, person, provider)
        provider.stop()
        assert not provider.alive()

        store = stack.deps().store
        before = store.head()
        body = problem(call(stack, provider.name, {"method": "GET", "url": "/api/me"},
                            (person.user, s.PASSWORD)), 502)
        assert provider.name in body["detail"], body
        assert "could not be reached" in body["detail"], body
        assert store.head() == before

        deps = stack.deps()
        rows = {p.name: c for p, c in connections_of_user(deps.ledger, person.user)}
        assert status_of(rows[provider.name], deps.ledger.clock()) == "connected"


def test_provider_that_forgot_the_token_needs_reconnecting(stack: s.Stack,
                                                           installation: Installation
                                                           ) -> None:
    """The provider restarts and no longer knows the token (it answers 401 with
    oauth_problem=token_rejected, as Atlassian applications do): the call relays that
    answer and marks the connection as needing the user, the page says so, further calls
    are refused with 409, and pressing Reconnect mends it."""
    with provider_process(stack, installation, "oauthlib", "HMAC-SHA1") as provider:
        person = sign_in(stack)
        auth = (person.user, s.PASSWORD)
        connect(stack, person, provider)
        provider.stop()
        provider.start()  # same port, same consumer, no tokens

        resp = call(stack, provider.name, {"method": "GET", "url": "/api/me"}, auth)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["status"] == 401 and answer["connection"] == "needs_reconnect", answer
        assert "token_rejected" in answer["headers"].get("www-authenticate", ""), answer

        page = person.browser.get(CONNECTIONS)
        assert status_text(page.text, provider.name) == \
            "Needs reconnecting (token_rejected)", page.text
        detail = problem(call(stack, provider.name, {"method": "GET", "url": "/api/me"},
                              auth), 409)["detail"]
        assert "reconnect" in detail.lower(), detail

        connect(stack, person, provider, status_before="Needs reconnecting")
        resp = call(stack, provider.name, {"method": "GET", "url": "/api/me"}, auth)
        assert resp.status_code == 200 and resp.json()["status"] == 200, resp.text
        assert json.loads(resp.json()["body"])["name"] == person.provider_identity
