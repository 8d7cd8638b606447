"""The Falcon app in process (falcon.testing) against the real PostgreSQL and Redis: the
dance's read-your-writes into Redis and the projector wake-up, login defences, error
rendering, and outages. What needs no separate process is tested here; tests/e2e runs
the same app under gunicorn."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import falcon.testing
import pytest
import redis
from oauthlib.oauth1 import Client as OAuthClient

from oauthledger.events import keys as k
from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.migrate import upgrade
from oauthledger.events.settings import load_settings
from oauthledger.events.store import EventStore
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import REDIS_URL

HOST = "http://falconframework.org"  # falcon.testing's default host
SECRET = "integration-secret"
PASSWORD = "integration password"
CALLBACK = "http://client.test/cb?state=abc"


class App:
    """The app, its deps and a recording ``wake``."""

    def __init__(self, deps: Deps, wakes: list[int]) -> None:
        self.deps = deps
        self.wakes = wakes
        self.client = falcon.testing.TestClient(create_app(deps))


def make_app(pg_url: str, redis_client: redis.Redis, layout: KeyLayout, tmp: Path,
             wake=None, **env: str) -> App:  # type: ignore[no-untyped-def]
    settings = load_settings({
        "OAUTHLEDGER_DATABASE_URL": pg_url, "OAUTHLEDGER_REDIS_URL": REDIS_URL,
        "OAUTHLEDGER_REDIS_PREFIX": layout.prefix, "OAUTHLEDGER_DATA_DIR": str(tmp),
        "OAUTHLEDGER_SECRET_KEY_FILE": str(tmp / "keys.json"), **env})
    store = EventStore.from_url(pg_url)
    upgrade(store.engine)
    wakes: list[int] = []
    deps = Deps(settings=settings, store=store, redis=redis_client,
                sealer=open_sealer(settings), wake=wake or (lambda: wakes.append(1)),
                layout=layout)
    return App(deps, wakes)


@pytest.fixture
def app(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout, tmp_path: Path) -> App:
    """An app with a user ``alice`` and an HMAC consumer ``c1``."""
    a = make_app(pg_url, redis_client, key_layout, tmp_path)
    register_user(a.deps.ledger, "alice", PASSWORD, meta={"actor": "t"})
    register_consumer(a.deps.ledger, a.deps.sealer, "c1", ConsumerInput(
        name="Client One", callback_url="http://client.test/", secret=SECRET,
        signature_methods=["HMAC-SHA1"]), {"actor": "t"})
    yield a
    a.deps.store.engine.dispose()


def signed(app: App, method: str, path: str, **client: str) -> falcon.testing.Result:
    c = OAuthClient("c1", client_secret=SECRET, **client)
    _, headers, _ = c.sign(HOST + path, method)
    return app.client.simulate_request(method, path, headers=headers)


def login(app: App, user: str = "alice", password: str = PASSWORD, next_: str = "/"
          ) -> tuple[falcon.testing.Result, dict[str, str]]:
    """Sign in; returns the POST's result and the cookies to use afterwards."""
    page = app.client.simulate_get("/login")
    cookies = {c.name: c.value for c in page.cookies.values()}
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = app.client.simulate_post(
        "/login", cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"username": user, "password": password, "csrf_token": csrf,
                        "next": next_}))
    cookies.update({c.name: c.value for c in resp.cookies.values()})
    return resp, cookies


def test_dance_writes_redis_before_answering_and_wakes_the_projector(app: App) -> None:
    rt = dict(parse_qsl(signed(app, "POST", "/plugins/servlet/oauth/request-token",
                               callback_uri=CALLBACK).text))
    assert rt["oauth_callback_confirmed"] == "true"
    resp, cookies = login(app)
    assert resp.status_code == 303
    page = app.client.simulate_get("/plugins/servlet/oauth/authorize",
                                   params={"oauth_token": rt["oauth_token"]}, cookies=cookies)
    assert page.status_code == 200 and "Client One" in page.text
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = app.client.simulate_post(
        "/plugins/servlet/oauth/authorize", cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"csrf_token": csrf, "oauth_token": rt["oauth_token"], "approve": "1"}))
    assert done.status_code == 303
    location = urlsplit(done.headers["Location"])
    params = dict(parse_qsl(location.query))
    # The registered callback's own query survives; ours is appended.
    assert params["state"] == "abc" and params["oauth_token"] == rt["oauth_token"]
    at = dict(parse_qsl(signed(app, "POST", "/plugins/servlet/oauth/access-token",
                               resource_owner_key=rt["oauth_token"],
                               resource_owner_secret=rt["oauth_token_secret"],
                               verifier=params["oauth_verifier"]).text))
    # docs/design.md, "Read your writes": the token is in Redis once the reply is out.
    state = app.deps.read_model.get(k.TOKEN, at["oauth_token"])
    assert state is not None and state.status == "active" and state.user == "alice"
    assert app.wakes, "every commit wakes the projector"
    me = signed(app, "GET", "/rest/api/2/myself", resource_owner_key=at["oauth_token"],
                resource_owner_secret=at["oauth_token_secret"])
    assert me.status_code == 200 and me.json["name"] == "alice"


def test_a_broken_broker_does_not_fail_the_dance(pg_url: str, redis_client: redis.Redis,
                                                 key_layout: KeyLayout, tmp_path: Path
                                                 ) -> None:
    """The wake-up is best effort (the catch-up closes gaps): a broker outage must not
    turn a committed change into an error."""
    def broken() -> None:
        raise ConnectionError("broker down")

    a = make_app(pg_url, redis_client, key_layout, tmp_path, wake=broken)
    register_consumer(a.deps.ledger, a.deps.sealer, "c1", ConsumerInput(
        name="Client One", secret=SECRET, signature_methods=["HMAC-SHA1"]), {"actor": "t"})
    resp = signed(a, "POST", "/plugins/servlet/oauth/request-token", callback_uri="oob")
    assert resp.status_code == 200, resp.text
    a.deps.store.engine.dispose()


def test_login_throttles_repeated_failures(app: App) -> None:
    statuses = [login(app, password="wrong password")[0].status_code for _ in range(8)]
    assert statuses[0] == 401
    assert 429 in statuses
    locked = [r for r in (login(app, password="wrong password")[0],) if r.status_code == 429]
    for r in locked:
        assert int(r.headers["Retry-After"]) >= 1


def test_login_never_redirects_off_site(app: App) -> None:
    # Browsers strip tab/CR/LF and read "\\" as "/": each of these is //evil.test to them.
    hostile = ("//evil.test/", "http://evil.test/", "\\\\evil.test", "evil", "/\t/evil.test",
               "/\n/evil.test", "/\r\n/evil.test", "/\\evil.test", "\\/evil.test", "/\t\\evil.test")
    for target in hostile:
        resp, cookies = login(app, next_=target)
        assert resp.status_code == 303, target
        assert resp.headers["Location"] in ("/", "http://falconframework.org/"), target
    # Signed in already: GET /login?next=... redirects at once, by the same rule.
    for target in hostile:
        resp = app.client.simulate_get("/login", params={"next": target}, cookies=cookies)
        assert resp.status_code == 303, target
        assert resp.headers["Location"] in ("/", "http://falconframework.org/"), target


def test_login_next_with_header_breaking_characters_is_encoded_not_a_500(app: App) -> None:
    for target, expected in (("/a\rb", "/ab"), ("/a\x00b", "/a%00b"), ("/a\x0bb", "/a%0Bb"),
                             ("/a\x7fb", "/a%7Fb"), ("/a€b", "/a%E2%82%ACb")):
        resp, _ = login(app, next_=target)
        assert resp.status_code == 303, target
        assert resp.headers["Location"].endswith(expected), (target, resp.headers["Location"])


def test_login_form_needs_its_csrf_token(app: App) -> None:
    resp = app.client.simulate_post(
        "/login", headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"username": "alice", "password": PASSWORD}))
    assert resp.status_code == 403
    assert "form expired" in resp.text
    assert "Location" not in resp.headers


def test_errors_are_rendered_not_raised(app: App) -> None:
    """Unknown path: problem+json 404; GET on the token endpoints: an OAuth problem."""
    resp = app.client.simulate_get("/no/such/path")
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    for path in ("/plugins/servlet/oauth/access-token", "/oauth/token", "/oauth/initiate"):
        resp = app.client.simulate_get(path)
        assert resp.status_code == 400
        assert dict(parse_qsl(resp.text))["oauth_problem"] == "parameter_rejected"
    resp = app.client.simulate_get("/rest/api/2/serverInfo")
    assert resp.json["serverTitle"] == "oauthledger"


def test_redis_outage_is_a_503_naming_redis(pg_url: str, key_layout: KeyLayout,
                                            tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    a = make_app(pg_url, dead, key_layout, tmp_path)
    resp = signed(a, "GET", "/rest/api/2/myself")
    assert resp.status_code == 503
    assert resp.json["dependency"] == "redis"
    ready = a.client.simulate_get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["redis"].startswith("down")
    a.deps.store.engine.dispose()


@pytest.mark.parametrize("payload", [
    [], 3, "text", {"method": "GET"}, {"url": "http://rs.test/x"},
    {"method": "GET", "url": "garbage"}, {"method": "GET", "url": "http://[::1/x"},
    {"method": "GET", "url": "http://rs.test:99999/x"}, {"method": "GET", "url": ""},
    {"method": "GET", "url": "http://rs.test/x", "headers": ["Authorization"]},
    {"method": "GET", "url": "http://rs.test/x", "headers": {"Authorization": "OAuth a=\"%zz\""}},
    {"method": ["GET"], "url": {"u": 1}, "headers": None, "body": {"b": 1}},
    {"method": "POST", "url": "http://rs.test/x?%E0%A4%A=1", "body": "a=%ZZ",
     "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
])
def test_verify_api_odd_payloads_are_4xx_or_refusals(app: App, payload: object) -> None:
    """Whatever a resource server posts, the verify API answers 400 or a refusal, never
    a 500."""
    import base64
    import json

    from oauthledger.services.resource_servers import create_resource_server

    secret = create_resource_server(app.deps.ledger, app.deps.sealer, "rs1", "", {"actor": "t"})
    auth = "Basic " + base64.b64encode(f"rs1:{secret}".encode()).decode()
    resp = app.client.simulate_post("/rest/oauthledger/1/verify", body=json.dumps(payload),
                                    headers={"Authorization": auth,
                                             "Content-Type": "application/json"})
    assert resp.status_code < 500, resp.text
    if resp.status_code == 200:
        assert resp.json["valid"] is False and resp.json["oauth_problem"]
    else:
        assert resp.status_code == 400
        assert resp.headers["Content-Type"].startswith("application/problem+json")


def test_responses_that_carry_secrets_are_never_cached(app: App) -> None:
    rt = signed(app, "POST", "/plugins/servlet/oauth/request-token", callback_uri=CALLBACK)
    assert "oauth_token_secret=" in rt.text
    assert rt.headers["Cache-Control"] == "no-store"
    page = app.client.simulate_get("/login")
    assert page.headers["Cache-Control"] == "no-store"
    api = app.client.simulate_get("/rest/oauthledger/1/openapi.json")
    assert api.headers["Cache-Control"] == "no-store"
    assert "no-store" not in app.client.simulate_get("/static/style.css").headers.get(
        "Cache-Control", "")
