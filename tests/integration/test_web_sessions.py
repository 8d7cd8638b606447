"""Login, sessions, CSRF and throttling through the Falcon app on real PostgreSQL + Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator

import falcon.testing
import pytest

from oauthledger.events.settings import load_settings
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.sessions import COOKIE, throttle_delay
from oauthledger.services.users import register_user
from tests.conftest import pg_deps


@pytest.fixture
def deps(pg_url, redis_client, key_layout, tmp_path) -> Iterator[Deps]:
    with pg_deps(pg_url, redis_client, key_layout, tmp_path, LOGIN_MAX_FAILURES="3") as d:
        register_user(d.ledger, "alice", "alice-password", admin=True,
                      meta={"actor": "test"})
        yield d


@pytest.fixture
def client(deps) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(deps))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, username="alice", password="alice-password", headers=None):
    page = client.simulate_get("/login", headers=headers)
    cookie = page.cookies[COOKIE].value
    return client.simulate_post(
        "/login", headers={**(headers or {}), "Cookie": f"{COOKIE}={cookie}"},
        body=f"username={username}&password={password}&next=/&csrf_token={csrf_of(page.text)}",
        content_type="application/x-www-form-urlencoded",
    ), cookie


def test_login_sets_a_new_httponly_samesite_session(client):
    resp, anon = login(client)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/")
    cookie = resp.cookies[COOKIE]
    assert cookie.value != anon  # session id changes at login (fixation)
    assert cookie.http_only and cookie.same_site == "Lax"
    home = client.simulate_get("/", headers={"Cookie": f"{COOKIE}={cookie.value}"})
    assert home.status_code == 200 and "Welcome, alice" in home.text
    assert home.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]


def test_login_without_csrf_token_is_refused(client):
    page = client.simulate_get("/login")
    resp = client.simulate_post(
        "/login", headers={"Cookie": f"{COOKIE}={page.cookies[COOKIE].value}"},
        body="username=alice&password=alice-password",
        content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 403 and COOKIE not in resp.cookies


def test_wrong_password_then_throttled_even_with_the_right_one(client):
    for _ in range(3):
        resp, _ = login(client, password="wrong-password")
        assert resp.status_code == 401 and "Wrong username or password" in resp.text
    resp, _ = login(client)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert throttle_delay(3, 3) == 1.0 and throttle_delay(10, 3) == 60.0


def test_logout_ends_the_session_on_the_server(client):
    resp, _ = login(client)
    sid = resp.cookies[COOKIE].value
    home = client.simulate_get("/", headers={"Cookie": f"{COOKIE}={sid}"})
    out = client.simulate_post("/logout", headers={"Cookie": f"{COOKIE}={sid}"},
                               body=f"csrf_token={csrf_of(home.text)}",
                               content_type="application/x-www-form-urlencoded")
    assert out.status_code == 303
    again = client.simulate_get("/", headers={"Cookie": f"{COOKIE}={sid}"})
    assert again.status_code == 303 and again.headers["Location"] == "/login"


def test_next_parameter_cannot_redirect_off_site(client):
    page = client.simulate_get("/login", params={"next": "//evil.example/x"})
    assert 'name="next" value="/"' in page.text


def test_sso_header_only_from_trusted_proxy(deps):
    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(deps.settings.data_dir),
                              "OAUTHLEDGER_DATABASE_URL": deps.settings.database_url,
                              "OAUTHLEDGER_SSO_USER_HEADER": "X-Remote-User",
                              "OAUTHLEDGER_TRUSTED_PROXIES": "10.9.9.9"})
    d = Deps(settings=settings, store=deps.store, redis=deps.redis, sealer=deps.sealer,
             wake=lambda: None, layout=deps.layout)
    c = falcon.testing.TestClient(create_app(d))
    trusted = c.simulate_get("/", headers={"X-Remote-User": "alice"}, remote_addr="10.9.9.9")
    assert trusted.status_code == 200 and "Welcome, alice" in trusted.text
    spoofed = c.simulate_get("/", headers={"X-Remote-User": "alice"}, remote_addr="10.1.1.1")
    assert spoofed.status_code == 303
