"""Negative tests through real gunicorn front ends: every ``oauth_problem`` the server
produces, with its status, its ``WWW-Authenticate`` header and its form-encoded body;
replays, stale timestamps, foreign tokens, reused request tokens and verifiers, the
authorize page's framing and CSRF defences, and token lifetimes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
import requests
from oauthlib.oauth1 import Client as OAuthClient
from requests_oauthlib import OAuth1

from tests.e2e import servers as s

MYSELF = "/rest/api/2/myself"
REQUEST = "/plugins/servlet/oauth/request-token"
ACCESS = "/plugins/servlet/oauth/access-token"
SHORT_TTL = 3  # seconds, for the expiry tests' front end


@pytest.fixture(scope="module")
def consumer(stack: s.Stack, rsa: s.RsaPair) -> s.Consumer:
    """A consumer with HMAC and RSA methods (no PLAINTEXT over http)."""
    return s.add_consumer(stack, rsa, methods=("HMAC-SHA1", "RSA-SHA1"))


@pytest.fixture(scope="module")
def other(stack: s.Stack, rsa: s.RsaPair) -> s.Consumer:
    """A second consumer, whose tokens the first must not be able to use."""
    return s.add_consumer(stack, rsa, methods=("HMAC-SHA1",))


@pytest.fixture(scope="module")
def short(stack: s.Stack):  # type: ignore[no-untyped-def]
    """A front end whose request and access tokens live SHORT_TTL seconds."""
    with s.extra_server(stack, OAUTHLEDGER_ACCESS_TOKEN_TTL=f"{SHORT_TTL}s",
                        OAUTHLEDGER_REQUEST_TOKEN_TTL=f"{SHORT_TTL}s") as server:
        yield server


# -- helpers -----------------------------------------------------------------------------


def assert_problem(resp: requests.Response, status: int, problem: str,
                   **params: str | Callable[[str], bool]) -> dict[str, str]:
    """The OAuth Problem Reporting answer: status, WWW-Authenticate and the same pairs
    form-encoded in the body, plus advice for a person."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    body = dict(parse_qsl(resp.text, keep_blank_values=True))
    www = resp.headers["WWW-Authenticate"]
    assert www.startswith('OAuth realm="oauthledger"'), www
    header = {k: unquote(v) for k, v in re.findall(r'([a-z_]+)="([^"]*)"', www)}
    assert body["oauth_problem"] == header["oauth_problem"] == problem, (body, www)
    assert body.get("oauth_problem_advice") and header.get("oauth_problem_advice")
    for name, want in params.items():
        assert name in body and body[name] == header[name], (name, body, www)
        assert want(body[name]) if callable(want) else body[name] == want, (name, body)
    return body


def signed(consumer: s.Consumer, method: str, url: str, *, sig: str = "HMAC-SHA1",
           secret: str | None = None, data: dict[str, str] | None = None,
           edit: Callable[[str], str] | None = None, **client: Any) -> requests.Response:
    """Sign with oauthlib's client (``client`` passes timestamp, nonce, token, verifier,
    callback_uri ...), optionally edit the Authorization header afterwards, and send."""
    rsa = sig.startswith("RSA")
    c = OAuthClient(consumer.key, client_secret=None if rsa else (secret or consumer.secret),
                    rsa_key=consumer.rsa.private_pem if rsa else None, signature_method=sig,
                    **client)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
    from urllib.parse import urlencode

    body = urlencode(data) if data else None
    uri, headers, body = c.sign(url, method, body=body, headers=headers)
    if edit is not None:
        headers["Authorization"] = edit(headers["Authorization"])
    return requests.request(method, uri, headers=headers, data=body, timeout=10)


def request_token(base: str, consumer: s.Consumer, callback: str = s.CALLBACK
                  ) -> dict[str, str]:
    """A fresh request token."""
    resp = signed(consumer, "POST", base + REQUEST, callback_uri=callback)
    assert resp.status_code == 200, resp.text
    return dict(parse_qsl(resp.text))


def approve(base: str, token: str, user: str) -> str:
    """The user approves in a browser; returns the verifier from the callback."""
    return s.callback_params(s.Browser(base).decide(s.authorize_url(base, token), user))[
        "oauth_verifier"]


def exchange(base: str, consumer: s.Consumer, rt: dict[str, str], verifier: str | None,
             ) -> requests.Response:
    """The access-token request."""
    return signed(consumer, "POST", base + ACCESS, resource_owner_key=rt["oauth_token"],
                  resource_owner_secret=rt["oauth_token_secret"], verifier=verifier)


def access_token(base: str, consumer: s.Consumer, user: str) -> dict[str, str]:
    """A whole dance; the access-token reply."""
    rt = request_token(base, consumer)
    resp = exchange(base, consumer, rt, approve(base, rt["oauth_token"], user))
    assert resp.status_code == 200, resp.text
    return dict(parse_qsl(resp.text))


def myself(base: str, consumer: s.Consumer, at: dict[str, str], **kw: Any
           ) -> requests.Response:
    """GET /rest/api/2/myself with an access token."""
    return signed(consumer, "GET", base + MYSELF, resource_owner_key=at["oauth_token"],
                  resource_owner_secret=at["oauth_token_secret"], **kw)


# -- parsing and parameter problems --------------------------------------------------------


def test_version_rejected(stack: s.Stack, consumer: s.Consumer) -> None:
    resp = signed(consumer, "POST", stack.url + REQUEST, callback_uri="oob",
                  edit=lambda h: h.replace('oauth_version="1.0"', 'oauth_version="2.0"'))
    assert_problem(resp, 400, "version_rejected", oauth_acceptable_versions="1.0-1.0")


def test_parameter_absent(stack: s.Stack, consumer: s.Consumer) -> None:
    resp = signed(consumer, "GET", stack.url + MYSELF,
                  edit=lambda h: re.sub(r'oauth_nonce="[^"]*",\s*', "", h))
    assert_problem(resp, 400, "parameter_absent", oauth_parameters_absent="oauth_nonce")
    # No Authorization at all on a protected resource: every required parameter absent.
    resp = requests.get(stack.url + MYSELF, timeout=10)
    assert_problem(resp, 400, "parameter_absent",
                   oauth_parameters_absent=lambda v: "oauth_consumer_key" in v.split("&"))


def test_callback_rules(stack: s.Stack, consumer: s.Consumer, rsa: s.RsaPair) -> None:
    """1.0a needs a callback unless the consumer allows 1.0; a callback must be an
    absolute http(s) URL with the registered callback's origin."""
    base = stack.url
    resp = signed(consumer, "POST", base + REQUEST)
    assert_problem(resp, 400, "parameter_absent", oauth_parameters_absent="oauth_callback")
    for bad in ("/relative/path", "ftp://client.test:8765/cb", "javascript:alert(1)",
                "http://evil.test:8765/oauth/callback", "http://client.test:9999/cb"):
        resp = signed(consumer, "POST", base + REQUEST, callback_uri=bad)
        assert_problem(resp, 400, "parameter_rejected",
                       oauth_parameters_rejected="oauth_callback")
    ok = signed(consumer, "POST", base + REQUEST, callback_uri=s.CALLBACK + "/deeper?x=1")
    assert ok.status_code == 200
    assert dict(parse_qsl(ok.text))["oauth_callback_confirmed"] == "true"


def test_request_token_is_post_only(stack: s.Stack, consumer: s.Consumer) -> None:
    resp = signed(consumer, "GET", stack.url + REQUEST, callback_uri="oob")
    body = assert_problem(resp, 400, "parameter_rejected")
    assert "POST" in body["oauth_problem_advice"]


def test_oauth10_only_for_flagged_consumers(stack: s.Stack, rsa: s.RsaPair, user: str
                                            ) -> None:
    """A consumer flagged for OAuth 1.0 may omit the callback: no
    oauth_callback_confirmed, approval without a verifier, exchange without one."""
    legacy = s.add_consumer(stack, rsa, methods=("HMAC-SHA1",), allow_oauth10=True)
    base = stack.url
    rt = dict(parse_qsl(signed(legacy, "POST", base + REQUEST).text))
    assert "oauth_token" in rt and "oauth_callback_confirmed" not in rt
    page = s.Browser(base).decide(s.authorize_url(base, rt["oauth_token"]), user)
    assert page.status_code == 200
    assert s.element_text(page.text, "oauth-verifier") is None
    resp = exchange(base, legacy, rt, None)
    assert resp.status_code == 200, resp.text
    at = dict(parse_qsl(resp.text))
    assert myself(stack.servers[1].url, legacy, at).json()["name"] == user


def test_timestamp_refused_stale(stack: s.Stack, consumer: s.Consumer) -> None:
    now = int(time.time())
    resp = signed(consumer, "POST", stack.url + REQUEST, callback_uri="oob",
                  timestamp=str(now - 3600))

    def window(v: str) -> bool:
        lo, hi = (int(x) for x in v.split("-"))
        return lo <= now <= hi and hi - lo == 600

    assert_problem(resp, 400, "timestamp_refused", oauth_acceptable_timestamps=window)


def test_nonce_used_on_replay(stack: s.Stack, consumer: s.Consumer, user: str) -> None:
    """The same signed request twice: the second is nonce_used, on any front end."""
    at = access_token(stack.url, consumer, user)
    c = OAuthClient(consumer.key, client_secret=consumer.secret,
                    resource_owner_key=at["oauth_token"],
                    resource_owner_secret=at["oauth_token_secret"])
    _, headers, _ = c.sign(stack.url + MYSELF, "GET")
    first = requests.get(stack.url + MYSELF, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    replay = requests.get(stack.url + MYSELF, headers=headers, timeout=10)
    assert_problem(replay, 401, "nonce_used")
    # A replay of a request-token request is refused the same way.
    c = OAuthClient(consumer.key, client_secret=consumer.secret, callback_uri="oob")
    _, headers, _ = c.sign(stack.url + REQUEST, "POST")
    assert requests.post(stack.url + REQUEST, headers=headers, timeout=10).status_code == 200
    assert_problem(requests.post(stack.url + REQUEST, headers=headers, timeout=10), 401,
                   "nonce_used")


def test_signature_method_rejected(stack: s.Stack, consumer: s.Consumer) -> None:
    """A method the consumer is not registered for, and PLAINTEXT over http."""
    for sig in ("HMAC-SHA256", "PLAINTEXT"):
        resp = signed(consumer, "POST", stack.url + REQUEST, sig=sig, callback_uri="oob")
        assert_problem(resp, 400, "signature_method_rejected")
    resp = signed(consumer, "POST", stack.url + REQUEST, callback_uri="oob",
                  edit=lambda h: h.replace('"HMAC-SHA1"', '"MD5-FANCY"'))
    assert_problem(resp, 400, "signature_method_rejected")


def test_signature_invalid(stack: s.Stack, consumer: s.Consumer, rsa: s.RsaPair) -> None:
    resp = signed(consumer, "POST", stack.url + REQUEST, secret="wrong-secret",
                  callback_uri="oob")
    body = assert_problem(resp, 401, "signature_invalid")
    assert "HMAC-SHA1" in body["oauth_problem_advice"]
    impostor = s.Consumer(consumer.key, consumer.secret, s.rsa_pair(), consumer.name)
    resp = signed(impostor, "POST", stack.url + REQUEST, sig="RSA-SHA1", callback_uri="oob")
    assert_problem(resp, 401, "signature_invalid")


def test_consumer_key_unknown(stack: s.Stack, rsa: s.RsaPair) -> None:
    ghost = s.Consumer(s.unique("ghost"), "whatever-secret", rsa, "Ghost")
    resp = signed(ghost, "POST", stack.url + REQUEST, callback_uri="oob")
    assert_problem(resp, 401, "consumer_key_unknown")


def test_consumer_key_rejected_after_removal(stack: s.Stack, rsa: s.RsaPair, user: str
                                            ) -> None:
    """`oauthledger consumer remove`: the consumer and its tokens stop working at once,
    on every front end."""
    doomed = s.add_consumer(stack, rsa, methods=("HMAC-SHA1",))
    at = access_token(stack.url, doomed, user)
    assert myself(stack.servers[1].url, doomed, at).status_code == 200
    out = stack.cli("consumer", "remove", doomed.key).stdout
    assert "1 access token(s) revoked" in out
    for server in stack.servers:
        assert_problem(myself(server.url, doomed, at), 401, "consumer_key_rejected")
        resp = signed(doomed, "POST", server.url + REQUEST, callback_uri="oob")
        assert_problem(resp, 401, "consumer_key_rejected")


# -- tokens --------------------------------------------------------------------------------


def test_token_rejected(stack: s.Stack, consumer: s.Consumer, other: s.Consumer, user: str
                        ) -> None:
    """Unknown token; another consumer's token; a request token at a resource; an
    access token at the access-token step."""
    base = stack.url
    unknown = {"oauth_token": "no-such-token", "oauth_token_secret": "x"}
    assert_problem(myself(base, consumer, unknown), 401, "token_rejected")
    theirs = access_token(base, other, user)
    assert myself(base, other, theirs).status_code == 200
    # Signed with our own secret and their token (and its secret): still refused.
    assert_problem(myself(base, consumer, theirs), 401, "token_rejected")
    rt = request_token(base, consumer)
    assert_problem(myself(base, consumer, rt), 401, "token_rejected")
    ours = access_token(base, consumer, user)
    assert_problem(exchange(base, consumer, ours, "whatever"), 401, "token_rejected")
    # A request token of the other consumer at the access-token step.
    their_rt = request_token(base, other)
    verifier = approve(base, their_rt["oauth_token"], user)
    assert_problem(exchange(base, consumer, their_rt, verifier), 401, "token_rejected")


def test_wrong_verifier_then_verifier_reuse(stack: s.Stack, consumer: s.Consumer, user: str
                                           ) -> None:
    """A wrong verifier is token_rejected and does not burn the token; the right one
    works once; the same verifier (and request token) again is token_used."""
    base = stack.url
    rt = request_token(base, consumer)
    verifier = approve(base, rt["oauth_token"], user)
    assert_problem(exchange(base, consumer, rt, verifier + "x"), 401, "token_rejected")
    assert_problem(exchange(base, consumer, rt, None), 400, "parameter_absent",
                   oauth_parameters_absent="oauth_verifier")
    first = exchange(base, consumer, rt, verifier)
    assert first.status_code == 200, first.text
    assert_problem(exchange(base, consumer, rt, verifier), 401, "token_used")
    assert_problem(exchange(stack.servers[1].url, consumer, rt, verifier), 401, "token_used")


def test_permission_unknown_before_approval(stack: s.Stack, consumer: s.Consumer) -> None:
    rt = request_token(stack.url, consumer)
    assert_problem(exchange(stack.url, consumer, rt, "guess"), 401, "permission_unknown")


def test_permission_denied(stack: s.Stack, consumer: s.Consumer, rsa: s.RsaPair, user: str
                           ) -> None:
    """Denied by the user; two-legged call of a consumer without 2LO; the dance for a
    consumer registered with three-legged access off."""
    base = stack.url
    rt = request_token(base, consumer)
    resp = s.Browser(base).decide(s.authorize_url(base, rt["oauth_token"]), user,
                                  approve=False)
    assert s.callback_params(resp)["oauth_verifier"] == "denied"
    assert_problem(exchange(base, consumer, rt, "denied"), 401, "permission_denied")
    resp = requests.get(base + MYSELF, auth=OAuth1(consumer.key, consumer.secret), timeout=10)
    assert_problem(resp, 401, "permission_denied")
    no3lo = s.add_consumer(stack, rsa, methods=("HMAC-SHA1",), three_legged=False)
    resp = signed(no3lo, "POST", base + REQUEST, callback_uri="oob")
    assert_problem(resp, 401, "permission_denied")


def test_token_revoked_on_the_next_call(stack: s.Stack, consumer: s.Consumer, user: str
                                        ) -> None:
    """A revoked access token fails on the very next call, on every front end."""
    from oauthledger.services.dance import revoke

    at = access_token(stack.url, consumer, user)
    assert myself(stack.servers[1].url, consumer, at).status_code == 200
    revoke(stack.deps().ledger, at["oauth_token"], user, {"actor": user})
    for server in stack.servers:
        assert_problem(myself(server.url, consumer, at), 401, "token_revoked")


def test_request_token_expires(short: s.Server, stack: s.Stack, consumer: s.Consumer,
                               user: str) -> None:
    """OAUTHLEDGER_REQUEST_TOKEN_TTL: past it the authorize page and the exchange both
    say token_expired."""
    rt = request_token(short.url, consumer)
    approved = request_token(short.url, consumer)
    verifier = approve(short.url, approved["oauth_token"], user)
    time.sleep(SHORT_TTL + 1)
    page = s.Browser(stack.url).login_page_for(s.authorize_url(stack.url, rt["oauth_token"]),
                                               user)
    assert page.status_code == 401
    assert s.element_text(page.text, "approve") is None
    assert "token_expired" in page.text
    assert_problem(exchange(stack.url, consumer, rt, "x"), 401, "token_expired")
    assert_problem(exchange(stack.url, consumer, approved, verifier), 401, "token_expired")


def test_access_token_expires(short: s.Server, stack: s.Stack, consumer: s.Consumer,
                              user: str) -> None:
    """OAUTHLEDGER_ACCESS_TOKEN_TTL: the reply says how long, and past it every front
    end answers token_expired."""
    at = access_token(short.url, consumer, user)
    assert int(at["oauth_expires_in"]) <= SHORT_TTL
    assert myself(stack.url, consumer, at).status_code == 200
    time.sleep(SHORT_TTL + 1)
    for server in stack.servers:
        assert_problem(myself(server.url, consumer, at), 401, "token_expired")
    # Within the authorization lifetime the session handle still renews it.
    resp = signed(consumer, "POST", stack.url + ACCESS, resource_owner_key=at["oauth_token"],
                  resource_owner_secret=at["oauth_token_secret"],
                  data={"oauth_session_handle": at["oauth_session_handle"]})
    assert resp.status_code == 200, resp.text
    renewed = dict(parse_qsl(resp.text))
    assert myself(stack.servers[1].url, consumer, renewed).status_code == 200
    assert_problem(myself(stack.url, consumer, at), 401, "token_used")


# -- the authorize page ---------------------------------------------------------------------


def test_authorize_page_cannot_be_framed(stack: s.Stack, consumer: s.Consumer, user: str
                                         ) -> None:
    rt = request_token(stack.url, consumer)
    page = s.Browser(stack.url).login_page_for(s.authorize_url(stack.url, rt["oauth_token"]),
                                               user)
    assert page.status_code == 200
    assert consumer.name in page.text and f"The e2e client {consumer.key}" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_authorize_redirects_to_login(stack: s.Stack, consumer: s.Consumer) -> None:
    rt = request_token(stack.url, consumer)
    resp = requests.get(s.authorize_url(stack.url, rt["oauth_token"]), allow_redirects=False,
                        timeout=10)
    assert resp.status_code == 303
    assert resp.headers["Location"].startswith("/login?next=")


def test_approve_without_csrf_token_changes_nothing(stack: s.Stack, consumer: s.Consumer,
                                                    user: str) -> None:
    base = stack.url
    rt = request_token(base, consumer)
    browser = s.Browser(base)
    page = browser.login_page_for(s.authorize_url(base, rt["oauth_token"]), user)
    assert page.status_code == 200
    for csrf in (None, "forged-token"):
        data = {"oauth_token": rt["oauth_token"], "approve": "1"}
        if csrf:
            data["csrf_token"] = csrf
        resp = browser.http.post(base + "/plugins/servlet/oauth/authorize", data=data,
                                 allow_redirects=False, timeout=10)
        assert resp.status_code == 403
        assert "Location" not in resp.headers
    # Nothing changed: the token is still pending.
    assert_problem(exchange(base, consumer, rt, "x"), 401, "permission_unknown")
    again = browser.get(s.authorize_url(base, rt["oauth_token"]))
    assert {"approve", "deny"} <= set(s.parse_forms(again.text)[0]["buttons"])


def test_authorize_page_problems(stack: s.Stack, consumer: s.Consumer, user: str) -> None:
    """Unknown token: token_rejected; already decided: token_used (page, not a form)."""
    base = stack.url
    browser = s.Browser(base)
    page = browser.login_page_for(s.authorize_url(base, "no-such-token"), user)
    assert page.status_code == 401
    assert s.element_text(page.text, "approve") is None
    assert "token_rejected" in page.text
    rt = request_token(base, consumer)
    approve(base, rt["oauth_token"], user)
    page = browser.get(s.authorize_url(base, rt["oauth_token"]))
    assert page.status_code == 401 and "token_used" in page.text
    assert not s.parse_forms(page.text)
