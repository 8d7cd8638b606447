"""The authenticator on a store and a read model: events are appended, folded,
published, and signed requests made by client libraries (oauthlib, authlib) go through
authenticate_resource.

Shared by both tiers: ``deps`` is the embedded Deps (SQLite + in-process Redis) in
tests/unit/conftest.py, and the real-server Deps in
tests/integration/test_app_services_servers.py, which runs these same functions."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from dataclasses import dataclass, field

import pytest
from authlib.oauth1 import SIGNATURE_RSA_SHA1, ClientAuth
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import Client

from oauthledger.events import catalog as ev
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import consumer_stream, fold_stream, token_stream, user_stream
from oauthledger.events.store import EventStore
from oauthledger.services.deps import Deps
from oauthledger.services.oauth.authenticator import Authenticator, require_verifier
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest, parse_request

API = "https://jira.example.com/rest/api/2/issue/ABC-1"
WINDOW = 300.0


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_public(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()


@dataclass
class World:
    """Store + read model + sealer + an authenticator whose clock the test moves."""

    store: EventStore
    read_model: ReadModel
    sealer: Sealer
    auth: Authenticator
    skew: list[float] = field(default_factory=lambda: [0.0])

    def now(self) -> float:
        return time.time() + self.skew[0]

    def publish(self, *streams: str) -> None:
        recs = self.store.read_streams(list(streams))
        states = [fold_stream(recs[s]) for s in streams]
        self.read_model.apply(states, checkpoint=self.store.head())

    def consumer(self, key: str, **kw) -> str:
        kw.setdefault("secret_sealed", self.sealer.seal(f"secret-{key}"))
        kw.setdefault("signature_methods", ("HMAC-SHA1",))
        self.store.append(consumer_stream(key), 0,
                          [ev.ConsumerRegistered(key=key, name=f"App {key}", **kw)])
        self.publish(consumer_stream(key))
        return key

    def access_token(self, consumer_key: str, user: str = "alice",
                     ttl: float = 7 * 86400) -> str:
        token = "at-" + uuid.uuid4().hex
        now = self.now()
        self.store.append(token_stream(token), 0, [ev.AccessTokenIssued(
            token=token, consumer_key=consumer_key, user=user,
            secret_sealed=self.sealer.seal(f"tsecret-{token}"),
            session_handle_hash=hashlib.sha256(b"handle").hexdigest(),
            expires_at=now + ttl, authorization_expires_at=now + ttl + 30 * 86400,
        )])
        self.publish(token_stream(token))
        return token

    def append(self, stream: str, event: ev.Event) -> None:
        self.store.append(stream, None, [event])
        self.publish(stream)

    def user(self, name: str) -> str:
        """Register an active user (a two-legged request may act only as one)."""
        self.store.append(user_stream(name), 0, [ev.UserRegistered(
            name=name, display_name=name, password_hash=None)])
        self.publish(user_stream(name))
        return name


@pytest.fixture
def world(deps: Deps) -> World:
    """The store, read model and sealer of ``deps``, with an authenticator on the test's
    clock and a timestamp window of :data:`WINDOW`."""
    settings = dataclasses.replace(deps.settings, timestamp_window=WINDOW)
    w = World(store=deps.store, read_model=deps.read_model, sealer=deps.sealer,
              auth=None)  # type: ignore[arg-type]
    w.auth = Authenticator(read_model=deps.read_model, store=deps.store, sealer=deps.sealer,
                           settings=settings, clock=w.now)
    for name in ("alice", "bob", "svc"):  # the users the tests below act as
        w.user(name)
    return w


def signed(consumer_key: str, token: str | None = None, *, method: str = "HMAC-SHA1",
           secret: str | None = None, token_secret: str | None = None,
           url: str = API, http_method: str = "GET", timestamp: str | None = None,
           nonce: str | None = None) -> SignedRequest:
    """A request signed by oauthlib's client, parsed as the server would."""
    client = Client(
        consumer_key,
        client_secret=secret if secret is not None else f"secret-{consumer_key}",
        resource_owner_key=token,
        resource_owner_secret=(token_secret if token_secret is not None
                               else (f"tsecret-{token}" if token else None)),
        signature_method=method, timestamp=timestamp, nonce=nonce,
    )
    uri, headers, body = client.sign(url, http_method=http_method)
    return parse_request(http_method, uri, headers, (body or "").encode(), None)


def problem_of(world: World, req: SignedRequest, https: bool = True) -> OAuthProblem:
    with pytest.raises(OAuthProblem) as info:
        world.auth.authenticate_resource(req, https=https)
    return info.value


# --- success -----------------------------------------------------------------------------


def test_hmac_three_legged_success(world: World) -> None:
    ck = world.consumer("app1")
    tok = world.access_token(ck)
    ctx = world.auth.authenticate_resource(signed(ck, tok), https=True)
    assert ctx.user == "alice"
    assert not ctx.two_legged
    assert ctx.consumer.key == ck
    assert ctx.token is not None and ctx.token.token == tok


def test_rsa_three_legged_success_with_authlib(world: World, rsa_key) -> None:
    ck = world.consumer("jira:1234", secret_sealed=None, public_key=_pem_public(rsa_key),
                        signature_methods=("RSA-SHA1",))
    tok = world.access_token(ck, user="bob")
    auth = ClientAuth(ck, token=tok, signature_method=SIGNATURE_RSA_SHA1,
                      rsa_key=_pem_private(rsa_key))
    uri, headers, _ = auth.prepare("GET", API + "?fields=summary", {}, b"")
    req = parse_request("GET", uri, headers, b"", None)
    ctx = world.auth.authenticate_resource(req, https=True)
    assert ctx.user == "bob"


# --- consumers and methods ----------------------------------------------------------------


def test_consumer_key_unknown(world: World) -> None:
    p = problem_of(world, signed("nobody"))
    assert (p.problem, p.status) == ("consumer_key_unknown", 401)
    assert "nobody" in p.advice


def test_consumer_key_rejected_after_removal(world: World) -> None:
    ck = world.consumer("gone")
    tok = world.access_token(ck)
    world.append(consumer_stream(ck), ev.ConsumerRemoved(key=ck))
    p = problem_of(world, signed(ck, tok))
    assert (p.problem, p.status) == ("consumer_key_rejected", 401)


def test_signature_method_rejected_names_registered_methods(world: World, rsa_key) -> None:
    ck = world.consumer("rsaonly", public_key=_pem_public(rsa_key),
                        signature_methods=("RSA-SHA1", "RSA-SHA256"))
    p = problem_of(world, signed(ck, None, method="HMAC-SHA1"))
    assert (p.problem, p.status) == ("signature_method_rejected", 400)
    assert "RSA-SHA1, RSA-SHA256" in p.advice


def test_plaintext_only_over_https_unless_allowed(world: World) -> None:
    ck = world.consumer("plain", signature_methods=("PLAINTEXT",), two_legged_user="svc")
    p = problem_of(world, signed(ck, None, method="PLAINTEXT"), https=False)
    assert (p.problem, p.status) == ("signature_method_rejected", 400)
    assert "https" in p.advice
    ctx = world.auth.authenticate_resource(signed(ck, None, method="PLAINTEXT"), https=True)
    assert ctx.user == "svc"
    ck2 = world.consumer("plainhttp", signature_methods=("PLAINTEXT",), two_legged_user="svc",
                         allow_plaintext_over_http=True)
    ctx = world.auth.authenticate_resource(signed(ck2, None, method="PLAINTEXT"), https=False)
    assert ctx.two_legged


def test_plaintext_without_timestamp_and_nonce(world: World) -> None:
    ck = world.consumer("plain2", signature_methods=("PLAINTEXT",))
    tok = world.access_token(ck)
    header = (f'OAuth oauth_consumer_key="{ck}", oauth_token="{tok}", '
              'oauth_signature_method="PLAINTEXT", '
              f'oauth_signature="secret-{ck}%26tsecret-{tok}"')
    req = parse_request("GET", API, {"Authorization": header}, b"", None)
    assert world.auth.authenticate_resource(req, https=True).user == "alice"
    # No nonce to remember: the same request works again.
    assert world.auth.authenticate_resource(req, https=True).user == "alice"


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-WINDOW - 60, WINDOW + 60])
def test_timestamp_refused(world: World, offset: float) -> None:
    ck = world.consumer("clock")
    tok = world.access_token(ck)
    now = world.now()
    p = problem_of(world, signed(ck, tok, timestamp=str(int(now + offset))))
    assert (p.problem, p.status) == ("timestamp_refused", 400)
    low, high = (int(x) for x in p.params["oauth_acceptable_timestamps"].split("-"))
    assert high - low == int(2 * WINDOW)
    assert abs(low - (now - WINDOW)) <= 2
    assert ("ahead of" if offset > 0 else "behind") in p.advice
    assert "±300 s" in p.advice


def test_timestamp_in_milliseconds_is_explained(world: World) -> None:
    ck = world.consumer("millis")
    p = problem_of(world, signed(ck, timestamp=str(int(world.now() * 1000))))
    assert p.problem == "timestamp_refused"
    assert "milliseconds" in p.advice


def test_timestamp_inside_window_accepted(world: World) -> None:
    ck = world.consumer("skewok")
    tok = world.access_token(ck)
    req = signed(ck, tok, timestamp=str(int(world.now() - WINDOW + 30)))
    assert world.auth.authenticate_resource(req, https=True).user == "alice"


# --- tokens --------------------------------------------------------------------------------


def test_token_rejected_unknown_and_other_consumers(world: World) -> None:
    ck = world.consumer("a1")
    other = world.consumer("a2")
    p = problem_of(world, signed(ck, "no-such-token", token_secret="x"))
    assert (p.problem, p.status) == ("token_rejected", 401)
    tok = world.access_token(other)
    p = problem_of(world, signed(ck, tok))
    assert p.problem == "token_rejected"


def test_request_token_is_not_an_access_token(world: World) -> None:
    ck = world.consumer("rt")
    world.store.append(token_stream("req-1"), 0, [ev.RequestTokenIssued(
        token="req-1", consumer_key=ck, secret_sealed=world.sealer.seal("tsecret-req-1"),
        callback="oob", expires_at=world.now() + 600)])
    world.publish(token_stream("req-1"))
    p = problem_of(world, signed(ck, "req-1"))
    assert p.problem == "token_rejected"
    assert "request token" in p.advice


def test_expired_by_time_while_status_still_active(world: World) -> None:
    ck = world.consumer("exp")
    tok = world.access_token(ck, ttl=100)
    assert world.auth.authenticate_resource(signed(ck, tok), https=True).user == "alice"
    world.skew[0] = 101  # the second passed; no AccessTokenExpired event yet
    assert world.read_model.get("t", tok).status == "active"
    p = problem_of(world, signed(ck, tok, timestamp=str(int(world.now()))))
    assert (p.problem, p.status) == ("token_expired", 401)


def test_expired_by_event(world: World) -> None:
    ck = world.consumer("exp2")
    tok = world.access_token(ck)
    world.append(token_stream(tok), ev.AccessTokenExpired(token=tok))
    assert problem_of(world, signed(ck, tok)).problem == "token_expired"


def test_revoked(world: World) -> None:
    ck = world.consumer("rev")
    tok = world.access_token(ck)
    world.append(token_stream(tok), ev.AccessTokenRevoked(token=tok, by="alice"))
    p = problem_of(world, signed(ck, tok))
    assert (p.problem, p.status) == ("token_revoked", 401)


def test_renewed_token_is_used(world: World) -> None:
    ck = world.consumer("ren")
    tok = world.access_token(ck)
    world.append(token_stream(tok), ev.AccessTokenRenewed(token=tok, new_token="at-new"))
    p = problem_of(world, signed(ck, tok))
    assert (p.problem, p.status) == ("token_used", 401)


# --- signature and nonce -------------------------------------------------------------------


def test_signature_invalid_advice_and_nonce_not_burned(world: World) -> None:
    ck = world.consumer("sig")
    tok = world.access_token(ck)
    ts = str(int(world.now()))
    bad = signed(ck, tok, secret="wrong", timestamp=ts, nonce="samenonce")
    p = problem_of(world, bad)
    assert (p.problem, p.status) == ("signature_invalid", 401)
    assert API in p.advice and "HMAC-SHA1" in p.advice
    assert "OAUTHLEDGER_BASE_URL" in p.advice
    # No base string, no secret in the advice.
    assert "%26oauth_nonce" not in p.advice and "samenonce" not in p.advice
    assert f"secret-{ck}" not in p.advice
    # The hot path records the nonce in the lookup's round trip and takes it back when
    # the request is refused: nothing of the refused request stays in Redis.
    rm = world.auth.read_model
    assert not list(rm.redis.scan_iter(rm.keys.nonce(ck, "*", "*", "*")))
    good = signed(ck, tok, timestamp=ts, nonce="samenonce")
    assert world.auth.authenticate_resource(good, https=True).user == "alice"
    assert len(list(rm.redis.scan_iter(rm.keys.nonce(ck, "*", "*", "*")))) == 1


def test_signature_over_another_url_is_invalid(world: World) -> None:
    """The proxy case: the client signed the external URL, the server rebuilt another."""
    ck = world.consumer("proxy")
    tok = world.access_token(ck)
    client_req = signed(ck, tok, url="https://jira.example.com/jira/rest/api/2/issue/ABC-1")
    seen_by_server = SignedRequest(
        method=client_req.method, base_uri="http://127.0.0.1:8080/rest/api/2/issue/ABC-1",
        params=client_req.params, oauth=client_req.oauth, signature=client_req.signature)
    p = problem_of(world, seen_by_server)
    assert p.problem == "signature_invalid"
    assert "http://127.0.0.1:8080/rest/api/2/issue/ABC-1" in p.advice


def test_nonce_reuse(world: World) -> None:
    ck = world.consumer("nonce")
    tok = world.access_token(ck)
    req = signed(ck, tok)
    world.auth.authenticate_resource(req, https=True)
    p = problem_of(world, req)
    assert (p.problem, p.status) == ("nonce_used", 401)
    # The same nonce with another timestamp is a different request (RFC 5849 §3.3).
    other_ts = signed(ck, tok, nonce=req.nonce, timestamp=str(int(req.timestamp) - 1))
    assert world.auth.authenticate_resource(other_ts, https=True).user == "alice"


# --- store fallback ------------------------------------------------------------------------


def test_store_fallback_when_checkpoint_missing(world: World) -> None:
    ck = world.consumer("fb")
    tok = world.access_token(ck)
    ns = world.read_model.namespace()
    layout = world.read_model.keys
    # Flushed projection: no checkpoint, no entities.
    for key in world.read_model.redis.scan_iter(f"{ns}:*"):
        world.read_model.redis.delete(key)
    assert world.read_model.checkpoint() is None
    assert world.read_model.lookup(ck, tok).consumer is None
    ctx = world.auth.authenticate_resource(signed(ck, tok), https=True)
    assert ctx.user == "alice" and ctx.consumer.key == ck
    # Revocation appended to the log only (projection not caught up): the store answers.
    world.store.append(token_stream(tok), None, [ev.AccessTokenRevoked(token=tok, by="admin")])
    assert problem_of(world, signed(ck, tok)).problem == "token_revoked"
    # An entity Redis does not know, with the checkpoint key deleted but entities present.
    world.publish(consumer_stream(ck))
    world.read_model.redis.delete(layout.checkpoint(ns))
    ck2 = "storeonly"
    world.store.append(consumer_stream(ck2), 0, [ev.ConsumerRegistered(
        key=ck2, name="x", secret_sealed=world.sealer.seal(f"secret-{ck2}"),
        signature_methods=("HMAC-SHA1",), two_legged_user="svc")])
    assert world.read_model.lookup(ck2, None).complete is False
    assert world.auth.authenticate_resource(signed(ck2), https=True).user == "svc"


def test_complete_projection_is_trusted(world: World) -> None:
    """With a checkpoint, the hot path reads Redis only: an entity only in the log is
    unknown until published (read-your-writes is the writer's job)."""
    world.consumer("anchor")
    ck = "notyetprojected"
    world.store.append(consumer_stream(ck), 0, [ev.ConsumerRegistered(
        key=ck, name="x", secret_sealed=world.sealer.seal(f"secret-{ck}"),
        signature_methods=("HMAC-SHA1",), two_legged_user="svc")])
    assert problem_of(world, signed(ck)).problem == "consumer_key_unknown"


# --- two-legged and impersonation ---------------------------------------------------------


def test_two_legged(world: World) -> None:
    ck = world.consumer("tl", two_legged_user="svc")
    ctx = world.auth.authenticate_resource(signed(ck), https=True)
    assert (ctx.user, ctx.two_legged, ctx.token) == ("svc", True, None)


def test_two_legged_not_enabled(world: World) -> None:
    ck = world.consumer("nl")
    p = problem_of(world, signed(ck))
    assert (p.problem, p.status) == ("permission_denied", 401)
    assert "two-legged access is not enabled for this consumer" in p.advice


def test_impersonation(world: World) -> None:
    ck = world.consumer("imp", allow_impersonation=True, two_legged_user="svc")
    ctx = world.auth.authenticate_resource(
        signed(ck, url=API + "?xoauth_requestor_id=bob"), https=True)
    assert (ctx.user, ctx.two_legged) == ("bob", True)


def test_impersonation_not_allowed(world: World) -> None:
    ck = world.consumer("noimp", two_legged_user="svc")
    p = problem_of(world, signed(ck, url=API + "?xoauth_requestor_id=bob"))
    assert (p.problem, p.status) == ("parameter_rejected", 400)
    assert p.params == {"oauth_parameters_rejected": "xoauth_requestor_id"}


def test_requestor_id_must_match_three_legged_user(world: World) -> None:
    ck = world.consumer("imp3", allow_impersonation=True)
    tok = world.access_token(ck, user="alice")
    ok = signed(ck, tok, url=API + "?xoauth_requestor_id=alice")
    assert world.auth.authenticate_resource(ok, https=True).user == "alice"
    p = problem_of(world, signed(ck, tok, url=API + "?xoauth_requestor_id=mallory"))
    assert p.params == {"oauth_parameters_rejected": "xoauth_requestor_id"}


# --- the dance steps' checks ---------------------------------------------------------------


def test_check_signed_for_access_token_step(world: World) -> None:
    ck = world.consumer("dance")
    world.store.append(token_stream("rq"), 0, [ev.RequestTokenIssued(
        token="rq", consumer_key=ck, secret_sealed=world.sealer.seal("tsecret-rq"),
        callback="https://app.example.com/cb", expires_at=world.now() + 600)])
    url = "https://jira.example.com/plugins/servlet/oauth/access-token"

    def check() -> None:
        consumer, token = world.auth.load(ck, "rq")
        req = signed(ck, "rq", url=url, http_method="POST")
        world.auth.check_signed(req, consumer, token, https=True, token_kind="request")
        require_verifier(world.sealer, token, parse_request(
            "POST", url + "?oauth_verifier=v123",
            {"Authorization": _auth_header(req)}, b"", None).verifier)

    with pytest.raises(OAuthProblem) as info:
        check()
    assert info.value.problem == "permission_unknown"
    world.store.append(token_stream("rq"), None, [ev.TokenApproved(
        token="rq", user="alice", verifier_sealed=world.sealer.seal("v123"))])
    check()  # approved, signature and verifier fine
    consumer, token = world.auth.load(ck, "rq")
    with pytest.raises(OAuthProblem) as info:
        require_verifier(world.sealer, token,
                         signed(ck, "rq", url=url + "?oauth_verifier=nope").verifier)
    assert info.value.problem == "token_rejected"
    world.store.append(token_stream("rq"), None, [ev.RequestTokenExchanged(
        token="rq", access_token="at-x")])
    with pytest.raises(OAuthProblem) as info:
        check()
    assert info.value.problem == "token_used"


def _auth_header(req: SignedRequest) -> str:
    from urllib.parse import quote

    return "OAuth " + ", ".join(f'{k}="{quote(v, safe="~")}"' for k, v in req.oauth.items())
