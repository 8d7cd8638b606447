"""Through real gunicorn front ends: the verify API for other resource servers, health and
readiness (naming the dependency that is down), the Celery worker's projection, and a
fuzz of malformed input that must never produce a 5xx."""

from __future__ import annotations

import random
import re
import string
import time
from urllib.parse import parse_qsl, quote

import pytest
import requests
from oauthlib.oauth1 import Client as OAuthClient

from tests.e2e import servers as s
from tests.e2e.test_problems import access_token, myself

VERIFY = "/rest/oauthledger/1/verify"
RS_URL = "http://rs.test:7000/api/things?id=42"


@pytest.fixture(scope="module")
def consumer(stack: s.Stack) -> s.Consumer:
    """A consumer with HMAC-SHA1 and RSA-SHA1."""
    return s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1", "RSA-SHA1"))


@pytest.fixture(scope="module")
def resource_server(stack: s.Stack) -> tuple[str, str]:
    """(id, secret) from `oauthledger resource-server add`."""
    rs_id = s.unique("rs")
    out = stack.cli("resource-server", "add", rs_id, "--description", "e2e").stdout
    secret = out.split("secret (shown once):", 1)[1].strip()
    return rs_id, secret


def signed_for_rs(consumer: s.Consumer, at: dict[str, str], url: str = RS_URL,
                  method: str = "GET") -> dict[str, object]:
    """What a resource server received from a client: method, URL, headers."""
    c = OAuthClient(consumer.key, client_secret=consumer.secret,
                    resource_owner_key=at["oauth_token"],
                    resource_owner_secret=at["oauth_token_secret"])
    _, headers, _ = c.sign(url, method)
    return {"method": method, "url": url, "headers": headers, "body": ""}


def test_verify_api(stack: s.Stack, consumer: s.Consumer, user: str,
                    resource_server: tuple[str, str]) -> None:
    """A valid request -> user, consumer and expiry; a replay of it -> the problem to
    relay; the token revoked -> token_revoked."""
    at = access_token(stack.url, consumer, user)
    payload = signed_for_rs(consumer, at)
    resp = requests.post(stack.servers[1].url + VERIFY, json=payload, auth=resource_server,
                         timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["valid"] is True
    assert body["user"] == user
    assert body["consumer"] == {"key": consumer.key, "name": consumer.name}
    assert body["twoLegged"] is False
    assert 0 < body["tokenExpiresAt"] - time.time() <= 7 * 86400 + 5

    replay = requests.post(stack.url + VERIFY, json=payload, auth=resource_server, timeout=10)
    assert replay.status_code == 200
    refused = replay.json()
    assert refused["valid"] is False
    assert refused["oauth_problem"] == "nonce_used"
    assert refused["status"] == 401
    assert 'oauth_problem="nonce_used"' in refused["wwwAuthenticate"]

    tampered = signed_for_rs(consumer, at)
    tampered["url"] = RS_URL.replace("42", "43")  # signed for another URL
    refused = requests.post(stack.url + VERIFY, json=tampered, auth=resource_server,
                            timeout=10).json()
    assert refused["valid"] is False and refused["oauth_problem"] == "signature_invalid"


def test_verify_api_needs_the_credential(stack: s.Stack, consumer: s.Consumer, user: str,
                                         resource_server: tuple[str, str]) -> None:
    """No credential, a wrong secret, an unknown id: 401 problem+json, nothing verified."""
    at = access_token(stack.url, consumer, user)
    payload = signed_for_rs(consumer, at)
    rs_id, secret = resource_server
    for auth in (None, (rs_id, secret + "x"), ("nobody", secret)):
        resp = requests.post(stack.url + VERIFY, json=payload, auth=auth, timeout=10)
        assert resp.status_code == 401
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert resp.json()["status"] == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    # The request was not consumed by the refused calls: its nonce is still fresh.
    resp = requests.post(stack.url + VERIFY, json=payload, auth=resource_server, timeout=10)
    assert resp.json()["valid"] is True
    bad = requests.post(stack.url + VERIFY, data=b"{not json", auth=resource_server,
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("application/problem+json")


def test_health_and_readiness(stack: s.Stack) -> None:
    for server in stack.servers:
        assert requests.get(server.url + "/healthz", timeout=5).text == "ok\n"
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert ready.json()["checks"]["store"] == "ok"
        assert ready.json()["checks"]["redis"] == "ok"


def test_celery_worker_projects_the_log(stack: s.Stack, consumer: s.Consumer) -> None:
    """The real worker process follows the log: the read model's checkpoint (reported by
    /readyz) reaches the store's last position."""
    assert s.celery_app_available(), "workers/celery_app.py is missing"
    assert stack.worker is not None and stack.worker.alive(), (
        stack.worker.log_tail() if stack.worker else "no worker")
    last = stack.deps().store.head()
    assert last > 0
    s.wait_until(lambda: (s.projection_position(stack) or 0) >= last,
                 "the worker's checkpoint to reach the log's end", stack.worker, timeout=60)


def test_readyz_names_redis_when_it_is_down(stack: s.Stack, consumer: s.Consumer,
                                            user: str) -> None:
    """A front end pointed at a Redis port where nothing listens: alive, not ready, and
    says which dependency is down; protected calls get a 503 naming Redis, not a 500."""
    dead = f"redis://127.0.0.1:{s.free_port()}/0"
    # `serve` refuses to start with Redis down: this is Redis gone after the start.
    with s.extra_server(stack, skip_preflight=True, OAUTHLEDGER_REDIS_URL=dead) as server:
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["store"] == "ok"
        assert checks["redis"].startswith("down")
        at = access_token(stack.url, consumer, user)
        resp = myself(server.url, consumer, at)
        assert resp.status_code == 503
        assert resp.json()["dependency"] == "redis"


def test_readyz_names_the_store_when_it_is_down(stack: s.Stack) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{s.free_port()}/test"
    # `serve` refuses to start with the store down: this is the store gone after the start.
    with s.extra_server(stack, skip_preflight=True, OAUTHLEDGER_DATABASE_URL=dead) as server:
        ready = requests.get(server.url + "/readyz", timeout=20)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["store"].startswith("down")
        assert checks["redis"] == "ok"


# -- fuzz ------------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/plugins/servlet/oauth/request-token"),
    ("GET", "/plugins/servlet/oauth/request-token"),
    ("POST", "/plugins/servlet/oauth/access-token"),
    ("POST", "/oauth/token"),
    ("GET", "/plugins/servlet/oauth/authorize"),
    ("POST", "/plugins/servlet/oauth/authorize"),
    ("GET", "/rest/api/2/myself"),
    ("POST", "/rest/api/2/myself"),
    ("POST", VERIFY),
    ("POST", "/login"),
    ("GET", "/login"),
    ("GET", "/rest/oauthledger/1/consumers"),
    ("POST", "/rest/oauthledger/1/consumers"),
]
PIECES = ['oauth_consumer_key', 'oauth_token', 'oauth_signature_method', 'oauth_signature',
          'oauth_timestamp', 'oauth_nonce', 'oauth_version', 'oauth_callback', 'realm',
          'oauth_verifier', 'xoauth_requestor_id', 'oauth_session_handle', '=', '"', ',',
          '%', '%zz', '%C3%28', '\\', ' ', '&', '+', 'HMAC-SHA1', 'RSA-SHA1', 'PLAINTEXT',
          '1.0', '99999999999999999999', '-1', '\t', 'é', '\x7f', 'OAuth', 'Basic', ';',
          '{', '}', '[', ']', 'null', '0', '%00', '\u00ff']


def _fuzz_text(rng: random.Random, consumer_key: str) -> str:
    parts = rng.choices(PIECES + [consumer_key, rng.choice(string.printable)],
                        k=rng.randint(0, 30))
    return "".join(parts)


def test_malformed_input_never_5xx(stack: s.Stack, consumer: s.Consumer) -> None:
    """A few hundred malformed Authorization headers, bodies and query strings at every
    endpoint: each answer is < 500."""
    rng = random.Random(20240517)
    http = requests.Session()
    base = stack.servers[1].url
    failures = []
    for i in range(400):
        method, path = ENDPOINTS[i % len(ENDPOINTS)]
        headers = {}
        kind = rng.random()
        if kind < 0.6:
            text = _fuzz_text(rng, consumer.key)
            headers["Authorization"] = (rng.choice(["OAuth ", "oauth ", "", "OAuth"]) + text)
        if rng.random() < 0.5:
            headers["Content-Type"] = rng.choice([
                "application/x-www-form-urlencoded", "application/json",
                "application/x-www-form-urlencoded; charset=utf-8", "text/plain", "",
                "multipart/form-data; boundary=x"])
        query = quote(_fuzz_text(rng, consumer.key), safe="=&%+,;\"") if rng.random() < 0.5 \
            else _fuzz_text(rng, consumer.key).replace(" ", "+").replace("#", "")
        body = _fuzz_text(rng, consumer.key).encode("utf-8") if method == "POST" else None
        if rng.random() < 0.1:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        try:
            # Header values as latin-1 text (UTF-8 bytes on the wire); requests itself
            # refuses line breaks and leading whitespace, so those are left out.
            resp = http.request(method, f"{base}{path}?{query}", headers={
                k: re.sub(r"[\r\n\x0b\x0c]", "", v).strip().encode("utf-8").decode("latin-1")
                for k, v in headers.items()},
                data=body, allow_redirects=False, timeout=10)
        except requests.RequestException as exc:
            failures.append((method, path, headers, query, body, repr(exc)))
            continue
        if resp.status_code >= 500:
            failures.append((method, path, headers, query, body, resp.status_code,
                             resp.text[:300]))
    assert not failures, failures[:5]


def test_oversized_and_odd_requests(stack: s.Stack, consumer: s.Consumer) -> None:
    """A body over 64 KiB, duplicated parameters, a parameter in header and body with
    different values: clear 4xx answers."""
    base = stack.url
    big = requests.post(base + "/plugins/servlet/oauth/request-token", data=b"a=" * 40000,
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                        timeout=10)
    assert big.status_code == 413
    c = OAuthClient(consumer.key, client_secret=consumer.secret, callback_uri="oob")
    _, headers, _ = c.sign(base + "/plugins/servlet/oauth/request-token", "POST")
    resp = requests.post(base + "/plugins/servlet/oauth/request-token", headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded"},
        data="oauth_callback=http%3A%2F%2Fother.test%2F", timeout=10)
    assert resp.status_code == 400
    assert dict(parse_qsl(resp.text))["oauth_parameters_rejected"] == "oauth_callback"
