"""Identifiers from clients holding NUL or another control character, at every entry point
that takes one, on SQLite and on PostgreSQL with the real Redis (``server_deps``).

PostgreSQL text cannot hold NUL: before the identifier rule such a consumer key, token,
user name or path reached the database and came back as a 500 with a traceback, while
SQLite answered 401. Now the HTTP edge answers each in its entry point's own form
(oauth_problem, "wrong username or password", problem+json 404, a page), and the store
treats what it cannot hold as "not found" (docs/event-store.md, "Identifiers the
database cannot hold"). Every test also checks that nothing was recorded: no event, no
nonce, no sign-in failure count.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

import falcon.testing
import pytest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature

from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.resource_servers import create_resource_server
from oauthledger.services.sessions import COOKIE
from oauthledger.services.users import register_user
from tests.support import CONSUMER_SECRET, META, PASSWORD, approved_request_token, hmac_consumer

HOST = "http://falconframework.org"  # falcon.testing's default host
FORM = "application/x-www-form-urlencoded"
API = "/rest/oauthledger/1"
ADMIN_PW = "admin-password"
# NUL first (what PostgreSQL refused with a 500), then other C0 controls, DEL and a C1
# control (U+0085, which str.strip() would take for a blank).
CONTROLS = ["\x00", "\x01", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


@dataclass
class Site:
    """The app over ``server_deps`` with an admin ``root``, a user ``bob``, the HMAC
    consumer ``app``, a resource server ``rs`` and an approved request token."""

    deps: Deps
    client: falcon.testing.TestClient
    rs_secret: str
    request_token: str

    def recorded(self) -> tuple[int, list[bytes]]:
        """What a refused request must not change: the log's head, and the Redis keys
        of nonces (``:n:``) and sign-in failures and locks (``:lf:``, ``:ll:``)."""
        prefix = self.deps.layout.prefix
        keys = sorted(key for kind in ("n", "lf", "ll")
                      for key in self.deps.redis.scan_iter(f"{prefix}:{kind}:*"))
        return self.deps.store.head(), keys


@pytest.fixture
def site(server_deps: Deps) -> Iterator[Site]:
    deps = server_deps
    register_user(deps.ledger, "root", ADMIN_PW, admin=True, meta=META)
    register_user(deps.ledger, "bob", PASSWORD, meta=META)
    consumer = hmac_consumer(deps, "app")
    rs_secret = create_resource_server(deps.ledger, deps.sealer, "rs", "a resource server",
                                       META)
    token, _ = approved_request_token(deps, consumer, "bob")
    yield Site(deps, falcon.testing.TestClient(create_app(deps)), rs_secret, token.token)


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def oauth_header(method: str, path: str, token_secret: str = "", **params: str) -> str:
    """An ``Authorization: OAuth`` header signed with HMAC-SHA1 by oauthlib over
    ``params`` (which may hold any character: values are percent-encoded)."""
    oauth = {"oauth_signature_method": "HMAC-SHA1", "oauth_timestamp": "1700000000",
             "oauth_nonce": "n0nce", "oauth_version": "1.0", **params}
    norm = oauth_signature.normalize_parameters(list(oauth.items()))
    base = oauth_signature.signature_base_string(
        method, oauth_signature.base_string_uri(HOST + path), norm)
    oauth["oauth_signature"] = oauth_signature.sign_hmac_sha1(
        base, CONSUMER_SECRET, token_secret)
    return "OAuth " + ", ".join(f'{quote(k, safe="~")}="{quote(v, safe="~")}"'
                                for k, v in oauth.items())


def assert_parameter_rejected(resp: falcon.testing.Result, name: str) -> None:
    assert resp.status_code == 400, resp.text
    body = dict(parse_qsl(resp.text))
    assert body["oauth_problem"] == "parameter_rejected", body
    assert body["oauth_parameters_rejected"] == name
    assert "control character" in body["oauth_problem_advice"]
    assert 'oauth_problem="parameter_rejected"' in resp.headers["WWW-Authenticate"]


def assert_problem(resp: falcon.testing.Result, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json["status"] == status
    return resp.json


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(site: Site, user: str = "bob", password: str = PASSWORD) -> dict[str, str]:
    """A signed-in browser's cookie header."""
    page = site.client.simulate_get("/login")
    resp = site.client.simulate_post(
        "/login", headers={"Cookie": f"{COOKIE}={page.cookies[COOKIE].value}"},
        body=urlencode({"username": user, "password": password,
                        "csrf_token": csrf_of(page.text)}), content_type=FORM)
    assert resp.status_code == 303, resp.text
    return {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}


# -- the dance and the protected resources: OAuth parameters --------------------------------


def test_request_token_refuses_a_consumer_key_with_a_control_character(site: Site) -> None:
    path = "/plugins/servlet/oauth/request-token"
    before = site.recorded()
    for ch in CONTROLS:
        for key in (ch, f"app{ch}", f"{ch}app"):
            header = oauth_header("POST", path, oauth_consumer_key=key, oauth_callback="oob")
            assert_parameter_rejected(
                site.client.simulate_post(path, headers={"Authorization": header}),
                "oauth_consumer_key")
        # The same in a form body and in the query string.
        form = urlencode({"oauth_consumer_key": f"app{ch}", "oauth_callback": "oob",
                          "oauth_signature_method": "PLAINTEXT", "oauth_signature": "x&"})
        assert_parameter_rejected(
            site.client.simulate_post(path, body=form, content_type=FORM),
            "oauth_consumer_key")
        assert_parameter_rejected(site.client.simulate_post(path, query_string=form),
                                  "oauth_consumer_key")
    assert site.recorded() == before


def test_access_token_refuses_parameters_with_a_control_character(site: Site) -> None:
    path = "/plugins/servlet/oauth/access-token"
    before = site.recorded()
    for ch in CONTROLS:
        for name in ("oauth_token", "oauth_verifier", "oauth_session_handle", "oauth_nonce",
                     "oauth_signature_method"):
            params = {"oauth_consumer_key": "app", "oauth_token": site.request_token,
                      "oauth_verifier": "verifier"}
            params[name] = (params.get(name) or "x") + ch
            resp = site.client.simulate_post(
                path, headers={"Authorization": oauth_header("POST", path, **params)})
            assert_parameter_rejected(resp, name)
    assert site.recorded() == before


def test_a_parameter_name_with_a_control_character_is_named_percent_encoded(
        site: Site) -> None:
    path = "/oauth/initiate"
    for ch in CONTROLS:
        resp = site.client.simulate_post(path, headers={"Authorization": oauth_header(
            "POST", path, oauth_consumer_key="app", oauth_callback="oob",
            **{f"oauth_x{ch}": "1"})})
        assert_parameter_rejected(resp, quote(f"oauth_x{ch}", safe=""))


def test_protected_resources_refuse_identifiers_with_a_control_character(
        site: Site) -> None:
    path = "/rest/api/2/myself"
    before = site.recorded()
    for ch in CONTROLS:
        for params in ({"oauth_consumer_key": f"app{ch}"},
                       {"oauth_consumer_key": "app", "oauth_token": f"{ch}"},
                       {"oauth_consumer_key": "app", "xoauth_requestor_id": f"bob{ch}"}):
            resp = site.client.simulate_get(
                path, headers={"Authorization": oauth_header("GET", path, **params)})
            name = next(n for n, v in params.items() if ch in v)
            assert_parameter_rejected(resp, name)
    assert site.recorded() == before


# -- sign-in: the login form and HTTP Basic ---------------------------------------------------


def test_login_with_a_control_character_in_the_name_is_a_wrong_password_and_counts_nothing(
        site: Site) -> None:
    page = site.client.simulate_get("/login")
    cookie = {"Cookie": f"{COOKIE}={page.cookies[COOKIE].value}"}
    before = site.recorded()
    # Far more attempts than the throttle allows (with bob's right password, and with a
    # control character also where str.strip() would remove a blank): none is counted.
    for ch in CONTROLS:
        for name in (f"bob{ch}", ch, f"{ch}bob", f"b{ch}ob"):
            resp = site.client.simulate_post(
                "/login", headers=cookie, content_type=FORM,
                body=urlencode({"username": name, "password": PASSWORD,
                                "csrf_token": csrf_of(page.text)}))
            assert resp.status_code == 401, (repr(name), resp.text)
            assert "Wrong username or password." in resp.text
            assert COOKIE not in resp.cookies, "no session was started"
    assert site.recorded() == before
    # Neither the address nor bob's account was locked by them.
    sign_in(site)


def test_basic_with_a_control_character_in_the_name_is_a_wrong_password_and_counts_nothing(
        site: Site) -> None:
    before = site.recorded()
    # 21 attempts, four times what the throttle allows (5): none is counted.
    for ch in CONTROLS:
        for name in (f"root{ch}", ch, f"{ch}root"):
            resp = site.client.simulate_get(f"{API}/users/me/access-tokens",
                                            headers=basic(name, ADMIN_PW))
            assert assert_problem(resp, 401)["detail"] == "wrong username or password"
            assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert site.recorded() == before
    ok = site.client.simulate_get(f"{API}/consumers", headers=basic("root", ADMIN_PW))
    assert ok.status_code == 200, ok.text


def test_verify_api_refuses_a_resource_server_id_with_a_control_character(
        site: Site) -> None:
    before = site.recorded()
    body = json.dumps({"method": "GET", "url": HOST + "/x", "headers": {}})
    for ch in CONTROLS:
        for server_id in (f"rs{ch}", ch):
            resp = site.client.simulate_post(f"{API}/verify", body=body,
                                             headers=basic(server_id, site.rs_secret))
            assert_problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert site.recorded() == before


def test_verify_api_relays_parameter_rejected_for_a_submitted_request(site: Site) -> None:
    before = site.recorded()
    for ch in CONTROLS:
        submitted = {"method": "GET", "url": HOST + "/rest/api/2/myself", "headers": {
            "Authorization": oauth_header("GET", "/rest/api/2/myself",
                                          oauth_consumer_key="app", oauth_token=f"t{ch}")}}
        resp = site.client.simulate_post(f"{API}/verify", body=json.dumps(submitted),
                                         headers=basic("rs", site.rs_secret))
        assert resp.status_code == 200, resp.text
        assert resp.json["valid"] is False
        assert resp.json["oauth_problem"] == "parameter_rejected"
        assert resp.json["params"] == {"oauth_parameters_rejected": "oauth_token"}
    assert site.recorded() == before


# -- the authorize page ---------------------------------------------------------------------


def test_authorize_page_answers_token_rejected_for_a_token_with_a_control_character(
        site: Site) -> None:
    cookies = sign_in(site)
    csrf = csrf_of(site.client.simulate_get("/", headers=cookies).text)
    before = site.recorded()
    for ch in CONTROLS:
        for path in ("/plugins/servlet/oauth/authorize", "/oauth/authorize"):
            page = site.client.simulate_get(path, params={"oauth_token": f"{ch}"},
                                            headers=cookies)
            assert page.status_code == 401, page.text
            assert page.headers["Content-Type"].startswith("text/html")
            assert "token_rejected" in page.text
        resp = site.client.simulate_post(
            "/plugins/servlet/oauth/authorize", headers=cookies, content_type=FORM,
            body=urlencode({"oauth_token": f"{site.request_token}{ch}", "approve": "1",
                            "csrf_token": csrf}))
        assert resp.status_code == 401, resp.text
        assert "token_rejected" in resp.text
    assert site.recorded() == before


# -- the admin JSON API: path parameters and filters --------------------------------------


ADMIN_PATHS = [
    ("GET", "/consumers/{}"), ("PATCH", "/consumers/{}"), ("PUT", "/consumers/{}"),
    ("DELETE", "/consumers/{}"), ("GET", "/consumers/app{}"), ("GET", "/consumers/a/b{}"),
    ("GET", "/tokens/{}"), ("DELETE", "/tokens/{}"),
    ("GET", "/service-providers/{}"), ("DELETE", "/service-providers/{}"),
    ("DELETE", "/users/me/access-tokens/{}"),
]


def test_admin_paths_that_cannot_name_anything_are_404(site: Site) -> None:
    before = site.recorded()
    for ch in CONTROLS:
        for method, path in ADMIN_PATHS:
            target = API + path.format(quote(ch))
            # Anonymous or admin alike: nothing is named, so nothing is looked up.
            for who in (basic("root", ADMIN_PW), {}):
                resp = site.client.simulate_request(
                    method, target, headers={**who, "Content-Type": "application/json"},
                    body="{}" if method in ("PATCH", "PUT") else None)
                assert assert_problem(resp, 404)["title"] == "Not found", (method, target)
    assert site.recorded() == before


def test_token_filters_with_a_control_character_find_nothing(site: Site) -> None:
    cookies = sign_in(site, "root", ADMIN_PW)  # one password check, not one per call
    for ch in CONTROLS:
        for query in ({"user": f"bob{ch}"}, {"consumer": f"app{ch}"}):
            resp = site.client.simulate_get(f"{API}/tokens", params=query, headers=cookies)
            assert resp.status_code == 200, resp.text
            assert resp.json == {"tokens": []}


# -- the admin pages -----------------------------------------------------------------------


def test_admin_pages_show_not_found_for_identifiers_with_a_control_character(
        site: Site) -> None:
    cookies = sign_in(site, "root", ADMIN_PW)
    admin = "/plugins/servlet/oauth/admin"
    csrf = csrf_of(site.client.simulate_get(admin, headers=cookies).text)
    before = site.recorded()
    for ch in CONTROLS:
        for path, query in ((f"{admin}/consumers/edit", {"key": f"app{ch}"}),
                            (f"{admin}/service-providers/view", {"name": f"{ch}"})):
            page = site.client.simulate_get(path, params=query, headers=cookies)
            assert page.status_code == 404, page.text
            assert page.headers["Content-Type"].startswith("text/html")
        for path, form in ((f"{admin}/consumers/remove", {"key": f"app{ch}"}),
                           (f"{admin}/service-providers/remove", {"name": ch})):
            page = site.client.simulate_post(path, headers=cookies, content_type=FORM,
                                             body=urlencode({**form, "csrf_token": csrf}))
            assert page.status_code == 404, page.text
        for path in (f"{admin}/tokens", "/plugins/servlet/oauth/users/access-tokens"):
            revoke = site.client.simulate_post(
                path, headers=cookies, content_type=FORM,
                body=urlencode({"token": f"{ch}", "csrf_token": csrf}))
            assert revoke.status_code == 303
            assert "done=token-gone" in revoke.headers["Location"]
    assert site.recorded() == before
