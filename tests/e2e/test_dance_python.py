"""The full three-legged dance through real gunicorn front ends and a real Celery worker
on PostgreSQL and Redis, driven by requests-oauthlib and by Authlib, for every signature
method each library signs with; oob and callback variants, deny, renewal, two-legged and
impersonation."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from tests.e2e import servers as s

MYSELF = "/rest/api/2/myself"
REQUEST = "/plugins/servlet/oauth/request-token"
ACCESS = "/plugins/servlet/oauth/access-token"
AUTHORIZE = "/plugins/servlet/oauth/authorize"

# requests-oauthlib signs through oauthlib: every method oauthlib's client knows.
OAUTHLIB_METHODS = s.ALL_METHODS
# Authlib's OAuth1 client ships these three (ClientAuth.SIGNATURE_METHODS).
AUTHLIB_METHODS = ("HMAC-SHA1", "RSA-SHA1", "PLAINTEXT")


@pytest.fixture(scope="module")
def consumer(stack: s.Stack, rsa: s.RsaPair) -> s.Consumer:
    """A consumer allowed every method; PLAINTEXT over http needs the flag (the CLI's
    --allow-plaintext-over-http) since these servers speak plain http."""
    return s.add_consumer(stack, rsa, allow_plaintext_over_http=True)


# -- the two libraries behind one small interface ---------------------------------------


class Client:
    """One OAuth 1.0a client library session."""

    def __init__(self, lib: str, consumer: s.Consumer, method: str,
                 callback: str | None = s.CALLBACK, **token: str) -> None:
        self.lib = lib
        secret = None if method.startswith("RSA") else consumer.secret
        rsa_key = consumer.rsa.private_pem if method.startswith("RSA") else None
        if lib == "requests-oauthlib":
            from requests_oauthlib import OAuth1Session

            self.session: Any = OAuth1Session(
                consumer.key, client_secret=secret, rsa_key=rsa_key, signature_method=method,
                callback_uri=callback, resource_owner_key=token.get("key"),
                resource_owner_secret=token.get("secret"))
        else:
            from authlib.integrations.requests_client import OAuth1Session

            self.session = OAuth1Session(
                consumer.key, client_secret=secret, rsa_key=rsa_key, signature_method=method,
                redirect_uri=callback, token=token.get("key"),
                token_secret=token.get("secret"))

    def request_token(self, base: str) -> dict[str, str]:
        """POST the request-token step."""
        return dict(self.session.fetch_request_token(base + REQUEST))

    def access_token(self, base: str, verifier: str) -> dict[str, str]:
        """POST the access-token step with the verifier."""
        return dict(self.session.fetch_access_token(base + ACCESS, verifier=verifier))

    def get(self, url: str) -> requests.Response:
        """A signed GET."""
        return self.session.get(url, timeout=10)


def dance(stack: s.Stack, lib: str, consumer: s.Consumer, method: str, user: str,
          callback: str = s.CALLBACK) -> tuple[Client, dict[str, str]]:
    """Request token on front end A, approval in a browser, access token on A."""
    base = stack.servers[0].url
    client = Client(lib, consumer, method, callback=callback)
    rt = client.request_token(base)
    assert rt["oauth_callback_confirmed"] == "true"
    browser = s.Browser(base)
    decision = browser.decide(s.authorize_url(base, rt["oauth_token"]), user)
    if callback == "oob":
        assert decision.status_code == 200, decision.text
        verifier = s.element_text(decision.text, "oauth-verifier")
        assert verifier and verifier != "denied"
    else:
        params = s.callback_params(decision)
        assert decision.headers["Location"].startswith(callback)
        assert params["oauth_token"] == rt["oauth_token"]
        verifier = params["oauth_verifier"]
    access = client.access_token(base, verifier)
    return client, access


def check_access_reply(access: dict[str, str], stack: s.Stack) -> None:
    """The access-token reply carries what docs/oauth.md, "Endpoints" lists."""
    assert set(access) >= {"oauth_token", "oauth_token_secret", "oauth_expires_in",
                           "oauth_authorization_expires_in", "oauth_session_handle"}
    assert 0 < int(access["oauth_expires_in"]) <= 7 * 86400
    assert int(access["oauth_authorization_expires_in"]) >= int(access["oauth_expires_in"])


def myself_on(server: s.Server, lib: str, consumer: s.Consumer, method: str,
              access: dict[str, str]) -> requests.Response:
    """GET /rest/api/2/myself with the access token, signed by ``lib``."""
    client = Client(lib, consumer, method, callback=None, key=access["oauth_token"],
                    secret=access["oauth_token_secret"])
    return client.get(server.url + MYSELF)


CASES = [("requests-oauthlib", m) for m in OAUTHLIB_METHODS] + [
    ("authlib", m) for m in AUTHLIB_METHODS]


@pytest.mark.parametrize(("lib", "method"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_three_legged_dance_with_callback(stack: s.Stack, consumer: s.Consumer, user: str,
                                          lib: str, method: str) -> None:
    """Callback variant: the verifier arrives on the redirect; the token works on the
    OTHER front end on the very next call (read your writes across front ends)."""
    client, access = dance(stack, lib, consumer, method, user)
    check_access_reply(access, stack)
    resp = myself_on(stack.servers[1], lib, consumer, method, access)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == user
    assert body["displayName"] == f"User {user}"
    assert body["oauth"]["consumerKey"] == consumer.key
    assert body["oauth"]["twoLegged"] is False
    # The session that did the dance holds the token too and signs with it.
    again = client.get(stack.servers[0].url + MYSELF)
    assert again.status_code == 200, again.text


@pytest.mark.parametrize("lib", ["requests-oauthlib", "authlib"])
@pytest.mark.parametrize("method", ["HMAC-SHA1", "RSA-SHA1"])
def test_three_legged_dance_oob(stack: s.Stack, consumer: s.Consumer, user: str, lib: str,
                                method: str) -> None:
    """oob: the page shows the verifier in #oauth-verifier; the user types it in."""
    _, access = dance(stack, lib, consumer, method, user, callback="oob")
    resp = myself_on(stack.servers[1], lib, consumer, method, access)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == user


@pytest.mark.parametrize("callback", [s.CALLBACK + "?state=xyz", "oob"])
def test_deny(stack: s.Stack, consumer: s.Consumer, user: str, callback: str) -> None:
    """Deny: the callback gets oauth_verifier=denied (the oob page shows it), and the
    exchange is refused with permission_denied."""
    base = stack.url
    client = Client("requests-oauthlib", consumer, "HMAC-SHA1", callback=callback)
    rt = client.request_token(base)
    resp = s.Browser(base).decide(s.authorize_url(base, rt["oauth_token"]), user,
                                  approve=False)
    if callback == "oob":
        assert resp.status_code == 200
        assert s.element_text(resp.text, "oauth-verifier") == "denied"
    else:
        params = s.callback_params(resp)
        assert params == {"state": "xyz", "oauth_token": rt["oauth_token"],
                          "oauth_verifier": "denied"}
    from requests_oauthlib import OAuth1

    auth = OAuth1(consumer.key, client_secret=consumer.secret,
                  resource_owner_key=rt["oauth_token"],
                  resource_owner_secret=rt["oauth_token_secret"], verifier="denied")
    answer = requests.post(base + ACCESS, auth=auth, timeout=10)
    assert answer.status_code == 401
    assert dict(parse_qsl(answer.text))["oauth_problem"] == "permission_denied"


def test_renewal_with_session_handle(stack: s.Stack, consumer: s.Consumer, user: str
                                     ) -> None:
    """Renewal: the old token and its session handle buy a new token; the new one works,
    the old one is refused from then on."""
    from requests_oauthlib import OAuth1

    _, access = dance(stack, "requests-oauthlib", consumer, "HMAC-SHA1", user)
    base = stack.url
    auth = OAuth1(consumer.key, client_secret=consumer.secret,
                  resource_owner_key=access["oauth_token"],
                  resource_owner_secret=access["oauth_token_secret"])
    resp = requests.post(base + ACCESS, auth=auth, timeout=10,
                         data={"oauth_session_handle": access["oauth_session_handle"]})
    assert resp.status_code == 200, resp.text
    renewed = dict(parse_qsl(resp.text))
    check_access_reply(renewed, stack)
    assert renewed["oauth_token"] != access["oauth_token"]
    new = myself_on(stack.servers[1], "requests-oauthlib", consumer, "HMAC-SHA1", renewed)
    assert new.status_code == 200, new.text
    old = myself_on(stack.servers[1], "requests-oauthlib", consumer, "HMAC-SHA1", access)
    assert old.status_code == 401
    assert dict(parse_qsl(old.text))["oauth_problem"] == "token_used"
    assert "oauth_problem=\"token_used\"" in old.headers["WWW-Authenticate"]


def test_two_legged_and_impersonation(stack: s.Stack, rsa: s.RsaPair, user: str) -> None:
    """Consumers registered with the CLI: --two-legged-user acts as that user without
    a token; --allow-impersonation lets xoauth_requestor_id name the user."""
    from requests_oauthlib import OAuth1

    robot = s.add_user(stack)
    key2, key3 = s.unique("twolegged"), s.unique("impersonator")
    key_file = stack.workdir / f"{key3}.pem"
    key_file.write_text(rsa.public_pem)
    stack.cli_many([
        (["consumer", "add", key2, "--name", "Two-legged client", "--secret",
          "two-legged-secret", "--two-legged-user", robot, "--no-three-legged"], None),
        (["consumer", "add", key3, "--name", "Impersonator", "--public-key", str(key_file),
          "--allow-impersonation"], None),
    ])
    base = stack.servers[1].url

    auth = OAuth1(key2, client_secret="two-legged-secret")
    resp = requests.get(base + MYSELF, auth=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == robot
    assert resp.json()["oauth"]["twoLegged"] is True

    auth = OAuth1(key3, signature_method="RSA-SHA1", rsa_key=rsa.private_pem)
    resp = requests.get(base + MYSELF, params={"xoauth_requestor_id": user}, auth=auth,
                        timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == user
    assert resp.json()["oauth"] == {"consumerKey": key3, "consumerName": "Impersonator",
                                    "twoLegged": True, "tokenExpiresAt": None}
    # Without a requestor id, the impersonating consumer has no user to act as.
    resp = requests.get(base + MYSELF, auth=OAuth1(key3, signature_method="RSA-SHA1",
                                                   rsa_key=rsa.private_pem), timeout=10)
    assert resp.status_code == 401
    assert dict(parse_qsl(resp.text))["oauth_problem"] == "permission_denied"
    # The two-legged-only consumer may not name someone else.
    resp = requests.get(base + MYSELF, params={"xoauth_requestor_id": user},
                        auth=OAuth1(key2, client_secret="two-legged-secret"), timeout=10)
    assert resp.status_code == 400
    assert dict(parse_qsl(resp.text))["oauth_parameters_rejected"] == "xoauth_requestor_id"
