"""The admin JSON API under /rest/oauthledger/1/ on real PostgreSQL + Redis: every route,
each refusal (401 anonymous, 403 non-admin, 422 field errors, 404, 409), event metadata,
and the OpenAPI document against the routes the Falcon router really holds."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import falcon
import falcon.testing
import pytest

from oauthledger.events import keys
from oauthledger.events.state import (
    INSTALLATION_STREAM,
    consumer_stream,
    provider_stream,
    token_stream,
)
from oauthledger.services import dance
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import pg_deps

API = "/rest/oauthledger/1"
ADMIN_PW = "admin-password"
USER_PW = "alice-password"
PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvj5e+aOQ9Zz1MHhxoVRa
yGkNjC1NUc04HTvFqDbB6HwuV24pQ7UtOfkjQH2EKbfzRYnDZwWU1PrNoqMvp3Iz
qPBxnMRHchj6ixnTLnQiOg9vUPGlCDYv7H8iTZVLMvm4vCzXFNSxfqwVyq9Un2lW
AGo/Ra19ZUGDaHLoMAG2K3EFa/tLFaGt4g6FHlkfeUnXuHNP3oHW0Al7pa1NFNmt
E1xBPCeA3LKNuDA0NHDSxo5GqpPhhXRSSLomSGlL6plFrV7a+8hMtqM2kFcwz37V
5SBMIVb2BgQwFn5oHW5BCPlGdEH8Wu2DR1a2g9R6Z8hX4L8jbZkPDKfx2WDBanZd
KQIDAQAB
-----END PUBLIC KEY-----"""


@pytest.fixture
def deps(pg_url, redis_client, key_layout, tmp_path) -> Iterator[Deps]:
    """Deps on a fresh PostgreSQL schema and a test-unique Redis prefix, with an admin
    (``root``) and two plain users (``alice``, ``bob``)."""
    # The tests send X-Request-Id from 127.0.0.1: a trusted proxy's header is believed.
    with pg_deps(pg_url, redis_client, key_layout, tmp_path,
                 TRUSTED_PROXIES="127.0.0.1/32") as d:
        register_user(d.ledger, "root", ADMIN_PW, admin=True, meta={"actor": "test"})
        register_user(d.ledger, "alice", USER_PW, meta={"actor": "test"})
        register_user(d.ledger, "bob", USER_PW, meta={"actor": "test"})
        yield d


@pytest.fixture
def app(deps) -> falcon.App:
    return create_app(deps)


@pytest.fixture
def client(app) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(app)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("root", ADMIN_PW)
ALICE = basic("alice", USER_PW)


def call(client, method: str, path: str, who: dict[str, str] | None = ADMIN,
         body=None, headers: dict[str, str] | None = None, **kw):
    hdrs = dict(who or {})
    hdrs.update(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
        kw["body"] = json.dumps(body)
    return client.simulate_request(method, API + path, headers=hdrs, **kw)


def make_consumer(deps: Deps, key: str = "jira:1234", **extra) -> None:
    data = ConsumerInput(name=f"Consumer {key}", description="A test consumer",
                         secret="consumer-secret", signature_methods=["HMAC-SHA1"], **extra)
    register_consumer(deps.ledger, deps.sealer, key, data, {"actor": "test"})


def grant(deps: Deps, consumer_key: str, user: str) -> str:
    """Run the dance through the services and return the access token."""
    consumer, _ = deps.ledger.load(consumer_stream(consumer_key))
    m = {"actor": consumer_key}
    rt = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                   "https://client.test/cb", m)
    token, _ = deps.ledger.load(token_stream(rt.token))
    verifier = dance.decide(deps.ledger, deps.sealer, token, user, True, m)
    token, _ = deps.ledger.load(token_stream(rt.token))
    return dance.exchange(deps.ledger, deps.sealer, deps.settings, token, verifier, m).token


# -- the OpenAPI document against the router ----------------------------------------------

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def router_routes(app: falcon.App) -> dict[str, set[str]]:
    """Every URI template the Falcon router holds under the API prefix, with the methods
    its resource implements (Falcon's defaults for the others are not routes)."""
    out: dict[str, set[str]] = {}

    def walk(nodes) -> None:
        for node in nodes:
            if node.resource is not None and node.uri_template.startswith(API + "/"):
                methods = {m for m in _METHODS if hasattr(node.resource, "on_" + m.lower())}
                template = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}",
                                  node.uri_template[len(API):])
                out[template] = methods
            walk(node.children)

    walk(app._router._roots)
    return out


def test_openapi_describes_exactly_the_routes(client, app):
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert doc["openapi"].startswith("3.")
    described = {path: {m.upper() for m in ops} for path, ops in doc["paths"].items()}
    routes = router_routes(app)
    assert routes, "the router walk found no API routes"
    assert described == routes
    # Every $ref resolves.
    schemas = doc["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc)):
        assert ref in schemas


# -- refusals for every admin route --------------------------------------------------------


def admin_operations(doc) -> list[tuple[str, str]]:
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if "403" in op["responses"]:
                ops.append((method.upper(), re.sub(r"\{\w+\}", "x", path)))
    return ops


def test_every_admin_route_refuses_anonymous_and_non_admin(client):
    doc = client.simulate_get(f"{API}/openapi.json").json
    ops = admin_operations(doc)
    assert len(ops) >= 15
    for method, path in ops:
        body = {} if method in ("POST", "PATCH", "PUT") else None
        anon = call(client, method, path, who=None, body=body)
        assert anon.status_code == 401, (method, path, anon.text)
        assert anon.headers["Content-Type"] == "application/problem+json"
        assert anon.headers["WWW-Authenticate"].startswith("Basic")
        user = call(client, method, path, who=ALICE, body=body)
        assert user.status_code == 403, (method, path, user.text)
        wrong = call(client, method, path, who=basic("root", "wrong-password"), body=body)
        assert wrong.status_code == 401, (method, path)
        # Wrong Basic passwords count toward the sign-in lock (429 after
        # OAUTHLEDGER_LOGIN_MAX_FAILURES); the right one clears the count, as at /login.
        assert call(client, "GET", "/users/me/access-tokens").status_code == 200


def test_user_routes_need_a_signed_in_user(client):
    assert call(client, "GET", "/users/me/access-tokens", who=None).status_code == 401
    assert call(client, "DELETE", "/users/me/access-tokens/x", who=None).status_code == 401


# -- consumers -----------------------------------------------------------------------------


def test_consumer_crud_history_and_refusals(client, deps):
    created = call(client, "POST", "/consumers", body={
        "key": "confluence:42", "name": "Confluence", "publicKey": PUBLIC_PEM,
        "generateSecret": True, "signatureMethods": ["RSA-SHA1", "HMAC-SHA256"]},
        headers={"X-Request-Id": "req-create-1"})
    assert created.status_code == 201, created.text
    secret = created.json["sharedSecret"]
    assert len(secret) >= 32
    one = call(client, "GET", "/consumers/confluence:42")
    assert one.status_code == 200 and "sharedSecret" not in one.json  # shown once only
    assert one.json["hasSharedSecret"] is True and one.json["tokensOutstanding"] == 0

    dup = call(client, "POST", "/consumers", body={"key": "confluence:42", "name": "Again",
                                                   "sharedSecret": "another-secret"})
    assert dup.status_code == 409
    bad = call(client, "POST", "/consumers", body={
        "key": "has space", "name": "", "publicKey": "-----BEGIN PUBLIC KEY-----\nnope\n"
        "-----END PUBLIC KEY-----", "callbackUrl": "ftp://x"})
    assert bad.status_code == 422
    assert set(bad.json["errors"]) >= {"key"}
    bad2 = call(client, "POST", "/consumers", body={
        "key": "k2", "name": "x" * 300, "publicKey": "-----BEGIN PUBLIC KEY-----\nnope\n"
        "-----END PUBLIC KEY-----", "callbackUrl": "ftp://x", "description": "d" * 3000})
    assert bad2.status_code == 422
    # Errors name the JSON fields the client sent (docs/admin.md, "The JSON API").
    assert {"name", "publicKey", "callbackUrl", "description"} <= set(bad2.json["errors"])
    assert call(client, "GET", "/consumers/k2").status_code == 404  # nothing changed

    patched = call(client, "PATCH", "/consumers/confluence:42",
                   body={"name": "Confluence Wiki", "allowOAuth10": True},
                   headers={"X-Request-Id": "req-edit-1"})
    assert patched.status_code == 200 and patched.json["name"] == "Confluence Wiki"
    assert call(client, "PATCH", "/consumers/confluence:42",
                body={"key": "other"}).status_code == 422
    assert call(client, "PATCH", "/consumers/nope", body={"name": "x"}).status_code == 404

    hist = call(client, "GET", "/consumers/confluence:42", params={"include": "history"})
    entries = hist.json["history"]
    assert [e["type"] for e in entries] == ["ConsumerUpdated", "ConsumerRegistered"]
    assert entries[0]["actor"] == "root" and entries[0]["requestId"] == "req-edit-1"
    assert entries[1]["requestId"] == "req-create-1"
    assert "allow_oauth10" in entries[0]["summary"] and "name" in entries[0]["summary"]

    token = grant(deps, "confluence:42", "alice")
    listed = call(client, "GET", "/consumers").json["consumers"]
    assert [c["tokensOutstanding"] for c in listed if c["key"] == "confluence:42"] == [1]
    removed = call(client, "DELETE", "/consumers/confluence:42")
    assert removed.json == {"removed": "confluence:42", "tokensRevoked": 1}
    state, _ = deps.ledger.load(token_stream(token))
    assert state.status == "revoked"
    assert call(client, "DELETE", "/consumers/confluence:42").status_code == 404


def test_malformed_bodies(client):
    resp = client.simulate_post(f"{API}/consumers", headers={**ADMIN,
                                "Content-Type": "text/plain"}, body="key=x")
    assert resp.status_code == 415
    resp = client.simulate_post(f"{API}/service-providers", headers={
        **ADMIN, "Content-Type": "application/json"}, body="{not json")
    assert resp.status_code == 400
    resp = call(client, "PATCH", "/consumer-info", body={"name": 5, "colour": "red"})
    assert resp.status_code == 422 and set(resp.json["errors"]) == {"name", "colour"}


# -- consumer info -------------------------------------------------------------------------


def test_consumer_info_generated_once_edited_and_rotated(client, deps):
    first = call(client, "GET", "/consumer-info", headers={"X-Request-Id": "gen-1"})
    assert first.status_code == 200
    info = first.json
    assert re.fullmatch(r"oauthledger:\d{9}", info["key"])
    assert "PRIVATE" not in json.dumps(info)
    assert call(client, "GET", "/consumer-info").json == info  # generated only once

    edited = call(client, "PATCH", "/consumer-info",
                  body={"name": "Ledger <prod>", "description": "Our & theirs"},
                  headers={"X-Request-Id": "edit-1"})
    assert edited.status_code == 200
    assert edited.json["key"] == info["key"] and edited.json["publicKey"] == info["publicKey"]
    assert edited.json["name"] == "Ledger <prod>"
    assert call(client, "PATCH", "/consumer-info", body={"name": ""}).status_code == 422
    too_long = call(client, "PATCH", "/consumer-info", body={"description": "x" * 2001})
    assert too_long.status_code == 422 and "description" in too_long.json["errors"]

    rotated = call(client, "POST", "/consumer-info/rotate", headers={"X-Request-Id": "rot-1"})
    assert rotated.status_code == 200
    assert rotated.json["publicKey"] != info["publicKey"]
    assert rotated.json["key"] == info["key"] and rotated.json["name"] == "Ledger <prod>"

    records = deps.store.read_stream(INSTALLATION_STREAM)
    assert [r.meta["request_id"] for r in records] == ["gen-1", "edit-1", "rot-1"]
    assert all(r.meta["actor"] == "root" for r in records)
    # The private key entered the log sealed only.
    assert all("PRIVATE KEY" not in r.data for r in records)
    assert all(json.loads(r.data)["private_key_sealed"].startswith("s1.") for r in records)

    xml = client.simulate_get("/plugins/servlet/oauth/consumer-info")
    assert "Ledger &lt;prod&gt;" in xml.text and "Our &amp; theirs" in xml.text


class _Serve:
    """A real HTTP server in a thread answering every GET with a fixed body."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        outer = self
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Serve:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_remote_consumer_info_fetch(client, deps):
    # The server below is on loopback: allowed only with OAUTHLEDGER_FETCH_ALLOW_PRIVATE
    # (tests/integration/test_consumer_info_fetch.py covers the refusals in depth).
    deps.settings = dataclasses.replace(deps.settings, fetch_allow_private=True)
    xml = client.simulate_get("/plugins/servlet/oauth/consumer-info").text.encode()
    with _Serve(xml) as srv:
        got = call(client, "GET", "/remote-consumer-info", params={"baseUrl": srv.url + "/"})
        assert got.status_code == 200, got.text
        assert srv.paths == ["/plugins/servlet/oauth/consumer-info"]
    info = call(client, "GET", "/consumer-info").json
    assert got.json["key"] == info["key"] and got.json["publicKey"] == info["publicKey"]

    def refused(base: str) -> str:
        resp = call(client, "GET", "/remote-consumer-info", params={"baseUrl": base})
        assert resp.status_code == 422, resp.text
        return resp.json["errors"]["baseUrl"]

    assert "http" in refused("ftp://example.com")
    assert "http" in refused("file:///etc/passwd")
    assert "required" in refused("")
    with _Serve(b"<consumer><key>k</key><publicKey>" + b"A" * 70000 + b"</publicKey></consumer>") \
            as srv:
        assert "no valid consumer info" in refused(srv.url)
    with _Serve(b"<html>not it</html>") as srv:
        assert "consumer" in refused(srv.url)
    with _Serve(b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaa">]><consumer/>') as srv:
        assert "no valid consumer info" in refused(srv.url)
    with _Serve(b"gone", status=404) as srv:
        assert refused(srv.url).endswith(": no valid consumer info there")
    # Nothing listens on a port we just closed.
    with _Serve(b"") as srv:
        dead = srv.url
    assert "could not fetch" in refused(dead)


# -- service providers ---------------------------------------------------------------------


PROVIDER = {"name": "Example Photos", "description": "photos",
            "consumerKey": "our-key-at-photos", "sharedSecret": "photos-secret",
            "requestTokenUrl": "https://photos.example.net/initiate",
            "authorizeUrl": "https://photos.example.net/authorize",
            "accessTokenUrl": "https://photos.example.net/token"}


def test_service_providers(client, deps):
    created = call(client, "POST", "/service-providers", body=PROVIDER,
                   headers={"X-Request-Id": "sp-1"})
    assert created.status_code == 201, created.text
    assert created.json["signatureMethod"] == "HMAC-SHA1"
    assert "photos-secret" not in created.text
    assert call(client, "POST", "/service-providers", body=PROVIDER).status_code == 409
    rsa = call(client, "POST", "/service-providers", body={
        **PROVIDER, "name": "RSA one", "sharedSecret": None, "useRsaKey": True})
    assert rsa.status_code == 201 and rsa.json["useRsaKey"] is True
    # Signing with our key generated this installation's identity.
    assert call(client, "GET", "/consumer-info").status_code == 200

    bad = call(client, "POST", "/service-providers", body={
        "name": "", "consumerKey": "has space", "requestTokenUrl": "javascript:alert(1)",
        "authorizeUrl": "https://ok.example", "accessTokenUrl": "nope"})
    assert bad.status_code == 422
    assert set(bad.json["errors"]) == {"name", "consumerKey", "sharedSecret",
                                       "requestTokenUrl", "accessTokenUrl"}
    assert call(client, "POST", "/service-providers",
                body={**PROVIDER, "name": "x", "colour": 1}).status_code == 422

    listed = call(client, "GET", "/service-providers").json["serviceProviders"]
    assert [p["name"] for p in listed] == ["Example Photos", "RSA one"]
    one = call(client, "GET", "/service-providers/Example Photos")
    assert one.status_code == 200 and one.json["consumerKey"] == "our-key-at-photos"
    assert call(client, "GET", "/service-providers/none").status_code == 404
    assert call(client, "DELETE", "/service-providers/Example Photos").status_code == 200
    assert call(client, "GET", "/service-providers/Example Photos").status_code == 404
    assert call(client, "DELETE", "/service-providers/Example Photos").status_code == 404
    records = deps.store.read_stream(provider_stream("Example Photos"))
    assert [r.type for r in records] == ["ServiceProviderAdded", "ServiceProviderRemoved"]
    assert records[0].meta["request_id"] == "sp-1" and records[0].meta["actor"] == "root"
    assert "photos-secret" not in records[0].data


# -- tokens --------------------------------------------------------------------------------


def test_tokens_list_filter_revoke(client, deps):
    make_consumer(deps, "c-one")
    make_consumer(deps, "c-two")
    t1 = grant(deps, "c-one", "alice")
    t2 = grant(deps, "c-two", "alice")
    t3 = grant(deps, "c-one", "bob")

    def tokens(**params):
        resp = call(client, "GET", "/tokens", params=params)
        assert resp.status_code == 200, resp.text
        return {t["token"] for t in resp.json["tokens"]}

    assert tokens() == {t1, t2, t3}
    assert tokens(user="alice") == {t1, t2}
    assert tokens(consumer="c-one") == {t1, t3}
    assert tokens(user="alice", consumer="c-one") == {t1}
    assert tokens(user="nobody") == set()
    assert call(client, "GET", "/tokens", params={"status": "bogus"}).status_code == 422

    one = call(client, "GET", f"/tokens/{t1}").json
    assert one["consumerName"] == "Consumer c-one" and one["status"] == "active"
    assert "secret" not in json.dumps(one).lower()
    revoked = call(client, "DELETE", f"/tokens/{t1}", headers={"X-Request-Id": "rv-1"})
    assert revoked.status_code == 200 and revoked.json["status"] == "revoked"
    assert tokens(status="revoked") == {t1} and tokens(status="active") == {t2, t3}
    rec = deps.store.read_stream(token_stream(t1))[-1]
    assert rec.type == "AccessTokenRevoked" and rec.meta["request_id"] == "rv-1"
    assert call(client, "GET", "/tokens/unknown-token").status_code == 404
    assert call(client, "DELETE", "/tokens/unknown-token").status_code == 404
    # The read model knows at once: the hot path refuses the token on the next call.
    state = deps.read_model.get(keys.TOKEN, t1)
    assert state.status == "revoked"

    # A user sees and revokes only their own tokens.
    mine = call(client, "GET", "/users/me/access-tokens", who=ALICE).json["tokens"]
    assert {t["token"] for t in mine} == {t1, t2}
    assert call(client, "DELETE", f"/users/me/access-tokens/{t3}", who=ALICE).status_code \
        == 404
    bob_token, _ = deps.ledger.load(token_stream(t3))
    assert bob_token.status == "active"
    own = call(client, "DELETE", f"/users/me/access-tokens/{t2}", who=ALICE)
    assert own.status_code == 200 and own.json["status"] == "revoked"
    rec = deps.store.read_stream(token_stream(t2))[-1]
    assert rec.meta["actor"] == "alice"


# -- docs/admin.md -------------------------------------------------------------------------

DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "admin.md"


def test_docs_route_table_and_example_match_the_api(client):
    text = DOC.read_text()
    documented = {re.sub(r"\?.*", "", m) for m in re.findall(r"^\| `(/[^`]+)` \|", text, re.M)
                  if not m.startswith("/plugins")}
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert documented == set(doc["paths"]) - {"/openapi.json", "/verify"}
    # The curl example registers a consumer as shown.
    payload = json.loads(re.search(r"-d '(\{.*?\})'", text).group(1))
    resp = call(client, "POST", "/consumers", body=payload)
    assert resp.status_code == 201 and resp.json["sharedSecret"]
