"""The OAuth Administration pages and the users' token page through the Falcon app on real
PostgreSQL + Redis: who may see them, CSRF, field errors that change nothing, escaping,
secrets shown once, framing refused. (tests/browser drives the same pages in Chromium.)"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from oauthledger.events.state import consumer_stream, token_stream
from oauthledger.services.sessions import COOKIE
from tests.integration.test_admin_api import (  # noqa: F401
    ADMIN_PW,
    USER_PW,
    app,
    client,
    deps,
    grant,
    make_consumer,
)

ADMIN = "/plugins/servlet/oauth/admin"
MINE = "/plugins/servlet/oauth/users/access-tokens"
FORM = "application/x-www-form-urlencoded"
PAGES = [ADMIN, f"{ADMIN}/consumers/add", f"{ADMIN}/consumers/fetch", f"{ADMIN}/consumer-info",
         f"{ADMIN}/service-providers", f"{ADMIN}/tokens"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class Browser:
    def __init__(self, client, user: str, password: str) -> None:  # noqa: F811
        self.client = client
        page = client.simulate_get("/login")
        cookie = page.cookies[COOKIE].value
        resp = client.simulate_post("/login", headers={"Cookie": f"{COOKIE}={cookie}"},
                                    body=urlencode({"username": user, "password": password,
                                                    "csrf_token": csrf_of(page.text)}),
                                    content_type=FORM)
        assert resp.status_code == 303
        self.cookie = resp.cookies[COOKIE].value

    def get(self, path: str, **params):
        return self.client.simulate_get(path, params=params or None,
                                        headers={"Cookie": f"{COOKIE}={self.cookie}"})

    def post(self, path: str, fields, csrf: bool = True):
        fields = list(fields.items()) if isinstance(fields, dict) else list(fields)
        if csrf:
            fields.append(("csrf_token", csrf_of(self.get(MINE).text)))
        return self.client.simulate_post(path, body=urlencode(fields), content_type=FORM,
                                         headers={"Cookie": f"{COOKIE}={self.cookie}"})


def test_anonymous_users_are_sent_to_login_and_non_admins_refused(client):  # noqa: F811
    for path in PAGES:
        resp = client.simulate_get(path)
        assert resp.status_code == 303 and resp.headers["Location"].startswith("/login?next=")
    assert client.simulate_get(MINE).status_code == 303
    alice = Browser(client, "alice", USER_PW)
    for path in PAGES:
        resp = alice.get(path)
        assert resp.status_code == 403 and "Administrators only" in resp.text, path
        assert resp.headers["Content-Type"].startswith("text/html")
    resp = alice.post(f"{ADMIN}/consumers/add", {"key": "k", "name": "n",
                                                 "secret": "long-enough-secret"})
    assert resp.status_code == 403
    assert alice.get(MINE).status_code == 200


def test_admin_pages_render_and_cannot_be_framed(client, deps):  # noqa: F811
    make_consumer(deps, "jira:1")
    root = Browser(client, "root", ADMIN_PW)
    home = root.get("/")
    assert 'href="/plugins/servlet/oauth/admin"' in home.text
    for path in [*PAGES, MINE, f"{ADMIN}/consumers/edit?key=jira:1"]:
        resp = root.get(path.split("?")[0], **({"key": "jira:1"} if "?" in path else {}))
        assert resp.status_code == 200, (path, resp.text[:500])
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        for form in re.findall(r'<form method="post".*?</form>', resp.text, re.S):
            assert 'name="csrf_token"' in form, (path, form[:200])
        # Every visible input has a label.
        for field_id in re.findall(r'<(?:input|textarea|select) id="([^"]+)"', resp.text):
            assert f'for="{field_id}"' in resp.text, (path, field_id)
    assert root.get(f"{ADMIN}/consumers/edit", key="nope").status_code == 404


def test_add_consumer_by_hand_field_errors_csrf_and_secret_once(client, deps):  # noqa: F811
    root = Browser(client, "root", ADMIN_PW)
    no_csrf = root.post(f"{ADMIN}/consumers/add", {"key": "k1", "name": "n",
                                                   "generate_secret": "1"}, csrf=False)
    assert no_csrf.status_code == 403 and "Request refused" in no_csrf.text
    assert deps.ledger.load(consumer_stream("k1"))[0] is None

    bad = root.post(f"{ADMIN}/consumers/add", {
        "key": "k1", "name": "<script>alert(1)</script>", "description": "x" * 2001,
        "public_key": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----",
        "callback_url": "javascript:alert(1)"})
    assert bad.status_code == 422
    for field in ("description", "public_key", "callback_url"):
        assert f'id="e-{field}"' in bad.text, field
        assert f'aria-describedby="h-{field} e-{field}"' in bad.text or \
            f'aria-describedby="e-{field}"' in bad.text
    assert "<script>alert(1)</script>" not in bad.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bad.text  # kept, escaped
    assert deps.ledger.load(consumer_stream("k1"))[0] is None  # nothing changed

    ok = root.post(f"{ADMIN}/consumers/add", [
        ("key", "k1"), ("name", "<b>Bold</b> app"), ("generate_secret", "1"),
        ("signature_methods", "HMAC-SHA1"), ("signature_methods", "HMAC-SHA256"),
        ("three_legged", "1")])
    assert ok.status_code == 201, ok.text
    secret = re.search(r'id="shared-secret"[^>]*value="([^"]+)"', ok.text).group(1)
    state, _ = deps.ledger.load(consumer_stream("k1"))
    assert deps.sealer.open(state.secret_sealed) == secret
    assert state.signature_methods == ("HMAC-SHA1", "HMAC-SHA256")
    listing = root.get(ADMIN)
    assert "&lt;b&gt;Bold&lt;/b&gt; app" in listing.text and secret not in listing.text
    edit = root.get(f"{ADMIN}/consumers/edit", key="k1")
    assert secret not in edit.text  # shown once, never again
    assert "registered as" in edit.text and "root" in edit.text  # history from the log

    dup = root.post(f"{ADMIN}/consumers/add", {"key": "k1", "name": "again",
                                               "secret": "another-secret"})
    assert dup.status_code == 409 and 'id="e-key"' in dup.text


def test_edit_remove_and_revoke_from_pages(client, deps):  # noqa: F811
    make_consumer(deps, "c1")
    token = grant(deps, "c1", "alice")
    other = grant(deps, "c1", "bob")
    root = Browser(client, "root", ADMIN_PW)
    resp = root.post(f"{ADMIN}/consumers/edit", [
        ("key", "c1"), ("name", "Renamed"), ("description", "d"), ("callback_url", ""),
        ("public_key", ""), ("signature_methods", "HMAC-SHA1"), ("three_legged", "1"),
        ("two_legged_user", "")])
    assert resp.status_code == 303, resp.text
    assert deps.ledger.load(consumer_stream("c1"))[0].name == "Renamed"
    bad = root.post(f"{ADMIN}/consumers/edit", [("key", "c1"), ("name", "Renamed"),
                                                ("two_legged_user", "ghost")])
    assert bad.status_code == 422 and 'id="e-two_legged_user"' in bad.text
    assert 'id="e-signature_methods"' in bad.text
    assert deps.ledger.load(consumer_stream("c1"))[0].two_legged_user is None

    alice = Browser(client, "alice", USER_PW)
    page = alice.get(MINE)
    assert "Renamed" in page.text and other not in page.text
    # Alice cannot revoke Bob's token through her page.
    alice.post(MINE, {"token": other})
    assert deps.ledger.load(token_stream(other))[0].status == "active"
    assert alice.post(MINE, {"token": token}, csrf=False).status_code == 403
    assert deps.ledger.load(token_stream(token))[0].status == "active"
    done = alice.post(MINE, {"token": token})
    assert done.status_code == 303 and "token-revoked" in done.headers["Location"]
    assert deps.ledger.load(token_stream(token))[0].status == "revoked"

    tokens = root.get(f"{ADMIN}/tokens", user="bob")
    assert "bob" in tokens.text and 'value="' + other + '"' in tokens.text
    root.post(f"{ADMIN}/tokens", {"token": other, "user": "bob"})
    assert deps.ledger.load(token_stream(other))[0].status == "revoked"

    third = grant(deps, "c1", "alice")
    removed = root.post(f"{ADMIN}/consumers/remove", {"key": "c1"})
    assert removed.status_code == 303
    assert deps.ledger.load(consumer_stream("c1"))[0].removed
    assert deps.ledger.load(token_stream(third))[0].status == "revoked"


def test_consumer_info_and_service_provider_pages(client, deps):  # noqa: F811
    root = Browser(client, "root", ADMIN_PW)
    info = root.get(f"{ADMIN}/consumer-info")
    key = re.search(r'id="info-key">([^<]+)<', info.text).group(1)
    assert "PRIVATE" not in info.text
    bad = root.post(f"{ADMIN}/consumer-info", {"name": "", "description": ""})
    assert bad.status_code == 422 and 'id="e-name"' in bad.text
    root.post(f"{ADMIN}/consumer-info", {"name": "Prod ledger", "description": "ours"})
    before = re.search(r'id="info-public-key">([^<]+)<', root.get(f"{ADMIN}/consumer-info")
                       .text).group(1)
    assert root.post(f"{ADMIN}/consumer-info/rotate", {}).status_code == 303
    after_page = root.get(f"{ADMIN}/consumer-info").text
    assert "Prod ledger" in after_page and key in after_page and before not in after_page

    fields = {"name": "Photos", "description": "", "consumer_key": "ck", "signing": "secret",
              "shared_secret": "photo-secret",
              "request_token_url": "https://p.example/rt", "authorize_url": "https://p.example/a",
              "access_token_url": "https://p.example/at"}
    bad = root.post(f"{ADMIN}/service-providers", {**fields, "authorize_url": "nope",
                                                   "shared_secret": ""})
    assert bad.status_code == 422
    assert 'id="e-authorize_url"' in bad.text and 'id="e-shared_secret"' in bad.text
    added = root.post(f"{ADMIN}/service-providers", fields)
    assert added.status_code == 303 and "provider-added" in added.headers["Location"]
    assert root.post(f"{ADMIN}/service-providers", fields).status_code == 409
    view = root.get(f"{ADMIN}/service-providers/view", name="Photos")
    assert view.status_code == 200 and "photo-secret" not in view.text
    assert root.post(f"{ADMIN}/service-providers/remove", {"name": "Photos"}).status_code == 303
    assert root.get(f"{ADMIN}/service-providers/view", name="Photos").status_code == 404
