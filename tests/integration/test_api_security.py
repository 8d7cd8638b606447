"""The JSON API's two defences on real PostgreSQL + Redis: HTTP Basic shares the sign-in
throttle of /login (one failure count and lock per account and address, no argon2 work
while locked), and a change made through the browser session must echo the session's
anti-CSRF token in X-CSRF-Token, whatever the content type; Basic calls need none."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import falcon.testing
import pytest
from argon2 import PasswordHasher

from oauthledger.services import users
from oauthledger.services.deps import Deps
from oauthledger.services.http.access import CSRF_HEADER
from oauthledger.services.sessions import COOKIE
from tests.integration.test_admin_api import (  # noqa: F401
    ADMIN,
    ADMIN_PW,
    ALICE,
    API,
    USER_PW,
    app,
    basic,
    call,
    client,
    deps,
    grant,
    make_consumer,
)

FORM = "application/x-www-form-urlencoded"
MINE = "/users/me/access-tokens"
ALLOWED = 5  # OAUTHLEDGER_LOGIN_MAX_FAILURES's default, which the deps fixture keeps


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, counting the verifications it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.verifies += 1
        return super().verify(hash, password)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    """Every password check of the app goes through this hasher."""
    counting = CountingHasher()
    monkeypatch.setattr(users, "_hasher", counting)
    return counting


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login_form(client: falcon.testing.TestClient) -> tuple[str, str]:  # noqa: F811
    """A fresh anonymous session: its cookie and the login form's CSRF token."""
    page = client.simulate_get("/login")
    return page.cookies[COOKIE].value, csrf_of(page.text)


def post_login(client: falcon.testing.TestClient, form: tuple[str, str],  # noqa: F811
               user: str, password: str, **kw) -> falcon.testing.Result:
    cookie, csrf = form
    return client.simulate_post("/login", headers={"Cookie": f"{COOKIE}={cookie}"},
                                body=urlencode({"username": user, "password": password,
                                                "csrf_token": csrf}),
                                content_type=FORM, **kw)


class Session:
    """A signed-in browser: the session cookie and that session's CSRF token."""

    def __init__(self, client: falcon.testing.TestClient, user: str,  # noqa: F811
                 password: str) -> None:
        self.client = client
        resp = post_login(client, login_form(client), user, password)
        assert resp.status_code == 303, resp.text
        self.cookie = resp.cookies[COOKIE].value
        self.csrf = csrf_of(client.simulate_get("/", headers=self.cookies()).text)

    def cookies(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"}

    def call(self, method: str, path: str, body=None, csrf: str | None = None,
             content_type: str | None = None) -> falcon.testing.Result:
        headers = self.cookies()
        if csrf is not None:
            headers[CSRF_HEADER] = csrf
        if content_type is not None:
            headers["Content-Type"] = content_type
        return call(self.client, method, path, who=headers, body=body)


def assert_locked(resp: falcon.testing.Result) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json["status"] == 429 and resp.json["title"] == "Too Many Requests"


# -- HTTP Basic shares the sign-in throttle ---------------------------------------------------


def test_basic_failures_lock_basic_and_login_and_skip_argon2_while_locked(
        client, hasher: CountingHasher):  # noqa: F811
    form = login_form(client)
    for _ in range(ALLOWED):
        wrong = call(client, "GET", MINE, who=basic("alice", "wrong-password"))
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert hasher.verifies == ALLOWED
    # Locked: the right password, by Basic or at /login, waits; nothing is verified.
    assert_locked(call(client, "GET", MINE, who=ALICE))
    assert_locked(call(client, "GET", MINE, who=basic("alice", "wrong-password")))
    assert_locked(call(client, "POST", "/consumer-info/rotate", who=ALICE))
    assert post_login(client, form, "alice", USER_PW).status_code == 429
    assert hasher.verifies == ALLOWED


def test_login_failures_lock_basic(client, hasher: CountingHasher):  # noqa: F811
    form = login_form(client)
    for _ in range(ALLOWED):
        assert post_login(client, form, "Alice", "wrong-password").status_code == 401
    verified = hasher.verifies
    # The account is locked for every address (names compare without case), not only
    # for the one the failures came from.
    assert_locked(call(client, "GET", MINE, who=ALICE, remote_addr="192.0.2.7"))
    # The address is locked too, for any account.
    assert_locked(call(client, "GET", MINE, who=ADMIN))
    assert hasher.verifies == verified
    # Another account from another address is untouched.
    assert call(client, "GET", MINE, who=ADMIN, remote_addr="192.0.2.8").status_code == 200


def test_a_right_password_clears_the_count_for_both(client):  # noqa: F811
    form = login_form(client)
    for _ in range(ALLOWED - 1):
        assert call(client, "GET", MINE, who=basic("alice", "nope")).status_code == 401
    assert call(client, "GET", MINE, who=ALICE).status_code == 200
    # Without that reset these would make 2 * (ALLOWED - 1) failures: past the limit.
    for _ in range(ALLOWED - 1):
        assert post_login(client, form, "alice", "nope").status_code == 401
    resp = post_login(client, form, "alice", USER_PW)
    assert resp.status_code == 303
    for _ in range(ALLOWED - 1):
        assert call(client, "GET", MINE, who=basic("alice", "nope")).status_code == 401
    assert call(client, "GET", MINE, who=ALICE).status_code == 200


# -- CSRF for changes through the browser session ---------------------------------------------


def test_rotate_through_the_session_needs_the_csrf_header(client):  # noqa: F811
    root = Session(client, "root", ADMIN_PW)
    before = root.call("GET", "/consumer-info")
    assert before.status_code == 200
    key = before.json["publicKey"]
    for content_type in (FORM, "text/plain", None):
        refused = root.call("POST", "/consumer-info/rotate", content_type=content_type)
        assert refused.status_code == 403, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert CSRF_HEADER in refused.json["detail"]
    wrong = root.call("POST", "/consumer-info/rotate", content_type=FORM, csrf="x" * 43)
    assert wrong.status_code == 403
    assert root.call("GET", "/consumer-info").json["publicKey"] == key
    rotated = root.call("POST", "/consumer-info/rotate", content_type=FORM, csrf=root.csrf)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json["publicKey"] != key


def test_json_changes_through_the_session_need_the_csrf_header(client, deps: Deps):  # noqa: F811
    root = Session(client, "root", ADMIN_PW)
    body = {"name": "Renamed by the session"}
    refused = root.call("PATCH", "/consumer-info", body=body)
    assert refused.status_code == 403 and CSRF_HEADER in refused.json["detail"]
    assert root.call("GET", "/consumer-info").json["name"] != body["name"]
    done = root.call("PATCH", "/consumer-info", body=body, csrf=root.csrf)
    assert done.status_code == 200 and done.json["name"] == body["name"]
    # Another session's token is not this session's.
    other = Session(client, "root", ADMIN_PW)
    assert root.call("PATCH", "/consumer-info", body=body, csrf=other.csrf).status_code == 403

    # A plain user's own-token revocation (api_user, not only api_admin) is guarded too.
    make_consumer(deps, "jira:1")
    token = grant(deps, "jira:1", "alice")
    alice = Session(client, "alice", USER_PW)
    assert alice.call("DELETE", f"{MINE}/{token}").status_code == 403
    assert alice.call("GET", MINE).json["tokens"][0]["status"] == "active"
    revoked = alice.call("DELETE", f"{MINE}/{token}", csrf=alice.csrf)
    assert revoked.status_code == 200, revoked.text


def test_every_session_write_route_refuses_without_the_header(client):  # noqa: F811
    doc = client.simulate_get(f"{API}/openapi.json").json
    writes = [(method.upper(), re.sub(r"\{\w+\}", "x", path))
              for path, methods in doc["paths"].items()
              for method, op in methods.items()
              if method.upper() in ("POST", "PUT", "PATCH", "DELETE")
              and op.get("security") != [{"resourceServer": []}]]
    assert len(writes) >= 8
    root = Session(client, "root", ADMIN_PW)
    for method, path in writes:
        resp = root.call(method, path, body={} if method != "DELETE" else None)
        assert resp.status_code == 403, (method, path, resp.text)
        assert CSRF_HEADER in resp.json["detail"], (method, path)


def test_basic_changes_need_no_csrf_token(client):  # noqa: F811
    key = call(client, "GET", "/consumer-info").json["publicKey"]
    rotated = client.simulate_post(f"{API}/consumer-info/rotate", headers=ADMIN,
                                   content_type=FORM)
    assert rotated.status_code == 200 and rotated.json["publicKey"] != key
    renamed = call(client, "PATCH", "/consumer-info", body={"name": "By Basic"})
    assert renamed.status_code == 200 and renamed.json["name"] == "By Basic"


def test_session_reads_need_no_csrf_token(client):  # noqa: F811
    root = Session(client, "root", ADMIN_PW)
    for path in ("/consumer-info", "/consumers", MINE):
        assert root.call("GET", path).status_code == 200, path
