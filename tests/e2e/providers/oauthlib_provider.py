"""An OAuth 1.0a service provider built directly on oauthlib's endpoints
(``oauthlib.oauth1``: RequestTokenEndpoint, AuthorizationEndpoint, AccessTokenEndpoint,
ResourceEndpoint) and a :class:`Validator` keeping everything in memory, served by
wsgiref with a thread per request. What it serves and its command line: see
:mod:`tests.e2e.providers`.

oauthlib's RequestValidator refuses client keys, tokens, nonces and verifiers outside
20-30 letters and digits by default. This one accepts keys of 1-200 characters that may
also hold ``: - _ . ~`` (RFC 3986 unreserved characters and the colon), so the consumer
key of an Atlassian-style installation, ``oauthledger:123456789``, is accepted as it is.

Denying at the authorize page redirects to the callback with ``oauth_token`` and
``oauth_problem=permission_denied`` and no verifier (the OAuth Problem Reporting
extension's code for a user who said no).
"""

from __future__ import annotations

import contextlib
import json
import string
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlencode, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import Request as OAuthRequest
from oauthlib.common import add_params_to_uri, safe_string_equals
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_RSA_SHA1,
    AccessTokenEndpoint,
    AuthorizationEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)
from oauthlib.oauth1.rfc5849.errors import OAuth1Error
from werkzeug.wrappers import Request, Response

from tests.e2e.providers import (
    NONCE_TTL,
    TEMPORARY_TTL,
    MemoryCache,
    ProviderConfig,
    authorize_page,
    decision_of,
    parse_args,
)

_SAFE = frozenset(string.ascii_letters + string.digits + ":-_.~")
_DUMMY_SECRET = "dummy-secret-for-unknown-clients"


def _dummy_rsa_public_key() -> str:
    """A public key nobody holds the private half of: oauthlib verifies unknown clients'
    signatures against it so that they take as long as known ones (and fail)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Validator(RequestValidator):
    """oauthlib's storage and policy hooks: one consumer, tokens and nonces in memory."""

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__()
        self.config = config
        self.lock = threading.Lock()
        # request token -> {secret, client, callback, verifier, user, used}
        self.request_tokens = MemoryCache()
        # access token -> {secret, client, user}
        self.access_tokens: dict[str, dict[str, str]] = {}
        self.nonces = MemoryCache()
        self._dummy_rsa = _dummy_rsa_public_key() if config.rsa_public_key else None

    # -- policy --------------------------------------------------------------------------

    @property
    def enforce_ssl(self) -> bool:
        """Plain HTTP on loopback: the tests run without TLS."""
        return False

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        """HMAC-SHA1 with a shared secret, RSA-SHA1 with a public key."""
        return tuple(m for m, ok in ((SIGNATURE_HMAC_SHA1, self.config.client_secret),
                                     (SIGNATURE_RSA_SHA1, self.config.rsa_public_key)) if ok)

    @property
    def safe_characters(self) -> set[str]:
        """Letters, digits and ``: - _ . ~`` (see the module docstring)."""
        return set(_SAFE)

    @property
    def client_key_length(self) -> tuple[int, int]:
        """Any consumer key of 1-200 characters (oauthledger's are ``name:digits``)."""
        return 1, 200

    @property
    def request_token_length(self) -> tuple[int, int]:
        """oauthlib generates 30-character tokens; accept 20-64."""
        return 20, 64

    @property
    def access_token_length(self) -> tuple[int, int]:
        """As for request tokens."""
        return 20, 64

    @property
    def nonce_length(self) -> tuple[int, int]:
        """oauthlib's client sends 18-30 digit nonces, others send hex or base64 ones."""
        return 8, 64

    @property
    def verifier_length(self) -> tuple[int, int]:
        """oauthlib generates 30-character verifiers."""
        return 20, 64

    # -- dummies (oauthlib keeps unknown clients and tokens as slow as known ones) -----------

    @property
    def dummy_client(self) -> str:
        """A consumer key that is never registered."""
        return "dummy-client"

    @property
    def dummy_request_token(self) -> str:
        """A request token that is never issued."""
        return "dummy-request-token-000000"

    @property
    def dummy_access_token(self) -> str:
        """An access token that is never issued."""
        return "dummy-access-token-0000000"

    # -- secrets and keys --------------------------------------------------------------

    def get_client_secret(self, client_key: str, request: OAuthRequest) -> str:
        """The shared secret of the registered consumer (a dummy one for others)."""
        if client_key == self.config.client_key and self.config.client_secret:
            return self.config.client_secret
        return _DUMMY_SECRET

    def get_rsa_key(self, client_key: str, request: OAuthRequest) -> str | None:
        """The registered consumer's RSA public key (the dummy key for others)."""
        if client_key == self.config.client_key and self.config.rsa_public_key:
            return self.config.rsa_public_key
        return self._dummy_rsa

    def get_request_token_secret(self, client_key: str, token: str,
                                 request: OAuthRequest) -> str:
        """The secret of an issued request token."""
        entry = self.request_tokens.get(token)
        return entry["secret"] if entry else _DUMMY_SECRET

    def get_access_token_secret(self, client_key: str, token: str,
                                request: OAuthRequest) -> str:
        """The secret of an issued access token."""
        entry = self.access_tokens.get(token)
        return entry["secret"] if entry else _DUMMY_SECRET

    def get_default_realms(self, client_key: str, request: OAuthRequest) -> list[str]:
        """No realms: this provider has one kind of access."""
        return []

    def get_realms(self, token: str, request: OAuthRequest) -> list[str]:
        """No realms."""
        return []

    def get_redirect_uri(self, token: str, request: OAuthRequest) -> str:
        """The ``oauth_callback`` the request token was issued with."""
        entry = self.request_tokens.get(token)
        return entry["callback"] if entry else "oob"

    # -- validation --------------------------------------------------------------------

    def validate_client_key(self, client_key: str, request: OAuthRequest) -> bool:
        """Only the registered consumer."""
        return safe_string_equals(client_key, self.config.client_key)

    def validate_timestamp_and_nonce(self, client_key: str, timestamp: str, nonce: str,
                                     request: OAuthRequest, request_token: str | None = None,
                                     access_token: str | None = None) -> bool:
        """RFC 5849 §3.3: a nonce is used once per timestamp, client and token."""
        key = f"{client_key}:{timestamp}:{nonce}:{request_token or ''}:{access_token or ''}"
        return self.nonces.add(key, 1, timeout=NONCE_TTL)

    def validate_redirect_uri(self, client_key: str, redirect_uri: str,
                              request: OAuthRequest) -> bool:
        """An absolute http(s) URL, or ``oob`` (RFC 5849 §2.1)."""
        if redirect_uri == "oob":
            return True
        parts = urlsplit(redirect_uri)
        return parts.scheme in ("http", "https") and bool(parts.hostname)

    def validate_requested_realms(self, client_key: str, realms: list[str],
                                  request: OAuthRequest) -> bool:
        """No realms are asked for or refused."""
        return True

    def validate_realms(self, client_key: str, token: str, request: OAuthRequest,
                        uri: str | None = None, realms: list[str] | None = None) -> bool:
        """No realms."""
        return True

    def validate_request_token(self, client_key: str, token: str,
                               request: OAuthRequest) -> bool:
        """An unused request token issued to this consumer."""
        entry = self.request_tokens.get(token)
        return bool(entry and not entry["used"] and entry["client"] == client_key)

    def validate_access_token(self, client_key: str, token: str,
                              request: OAuthRequest) -> bool:
        """An access token issued to this consumer."""
        entry = self.access_tokens.get(token)
        return bool(entry and entry["client"] == client_key)

    def validate_verifier(self, client_key: str, token: str, verifier: str,
                          request: OAuthRequest) -> bool:
        """The verifier handed out when the user approved this token (§2.3)."""
        entry = self.request_tokens.get(token)
        if not entry or not entry.get("verifier"):
            return False
        return safe_string_equals(verifier, entry["verifier"])

    def verify_request_token(self, token: str, request: OAuthRequest) -> bool:
        """The authorize page only shows for an issued, unused request token."""
        entry = self.request_tokens.get(token)
        return bool(entry and not entry["used"])

    def verify_realms(self, token: str, realms: list[str], request: OAuthRequest) -> bool:
        """No realms."""
        return True

    # -- storage -----------------------------------------------------------------------

    def save_request_token(self, token: dict[str, Any], request: OAuthRequest) -> None:
        """Remember the temporary credentials with their consumer and callback."""
        self.request_tokens.set(token["oauth_token"], {
            "secret": token["oauth_token_secret"], "client": request.client_key,
            "callback": request.redirect_uri, "verifier": None, "user": None,
            "used": False}, timeout=TEMPORARY_TTL)

    def approve(self, token: str, user: str) -> None:
        """Record who approves ``token`` (before oauthlib issues the verifier)."""
        with self.lock:
            entry = self.request_tokens.get(token)
            if entry is not None:
                entry["user"] = user

    def save_verifier(self, token: str, verifier: dict[str, str],
                      request: OAuthRequest) -> None:
        """Bind the verifier to the request token."""
        with self.lock:
            entry = self.request_tokens.get(token)
            if entry is not None:
                entry["verifier"] = verifier["oauth_verifier"]

    def invalidate_request_token(self, client_key: str, request_token: str,
                                 request: OAuthRequest) -> None:
        """A request token is exchanged once (§2.3)."""
        with self.lock:
            entry = self.request_tokens.get(request_token)
            if entry is not None:
                entry["used"] = True

    def save_access_token(self, token: dict[str, Any], request: OAuthRequest) -> None:
        """Issue token credentials to the user who approved the request token."""
        entry = self.request_tokens.get(request.resource_owner_key) or {}
        self.access_tokens[token["oauth_token"]] = {
            "secret": token["oauth_token_secret"], "client": request.client_key,
            "user": entry.get("user") or self.config.user}


class App:
    """The WSGI application: routes to oauthlib's endpoints."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.validator = Validator(config)
        self.request_token = RequestTokenEndpoint(self.validator)
        self.authorization = AuthorizationEndpoint(self.validator)
        self.access_token = AccessTokenEndpoint(self.validator)
        self.resource = ResourceEndpoint(self.validator)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """One request to its endpoint."""
        route = (request.method, request.path)
        if route == ("GET", "/"):
            return Response("oauthlib OAuth 1.0a provider\n", mimetype="text/plain")
        if route == ("POST", "/oauth/initiate"):
            return self._endpoint(self.request_token.create_request_token_response, request)
        if route == ("POST", "/oauth/token"):
            return self._endpoint(self.access_token.create_access_token_response, request)
        if request.path == "/oauth/authorize" and request.method in ("GET", "POST"):
            return self.authorize(request)
        if route == ("GET", "/api/me"):
            return self.me(request)
        return Response("Not found\n", status=404, mimetype="text/plain")

    @staticmethod
    def _signed(request: Request) -> tuple[str, str, str, dict[str, str]]:
        """(uri, method, body, headers) as oauthlib reads them: the URL the client signed
        is the one it sent (no proxy here)."""
        return (request.url, request.method, request.get_data(as_text=True),
                dict(request.headers))

    def _endpoint(self, create: Callable[..., tuple[dict[str, str], str | None, int]],
                  request: Request) -> Response:
        uri, method, body, headers = self._signed(request)
        # oauthlib's answer as it gives it: a refusal of the credentials is a bare 401.
        out_headers, out_body, status = create(uri, http_method=method, body=body,
                                               headers=headers)
        return Response(out_body or "", status=status, headers=out_headers)

    def authorize(self, request: Request) -> Response:
        """The approval form (GET), or the user's decision (its POST, or the
        ``decision`` query flag)."""
        values = {k: v for k, v in request.values.items()}
        token = values.get("oauth_token", "")
        if not self.validator.verify_request_token(token, None):
            return Response("Cannot authorize: unknown or used request token\n",
                            status=400, mimetype="text/plain")
        decision = decision_of(values)
        if decision is None:
            return Response(authorize_page("oauthlib", token, self.config.user),
                            mimetype="text/html")
        if decision == "deny":
            # No verifier: the consumer must not get token credentials.
            callback = self.validator.get_redirect_uri(token, None)
            self.validator.invalidate_request_token(self.config.client_key, token, None)
            if callback == "oob":
                return Response("Access denied\n", mimetype="text/plain")
            location = add_params_to_uri(callback, [("oauth_token", token),
                                                    ("oauth_problem", "permission_denied")])
            return Response("", status=302, headers={"Location": location})
        self.validator.approve(token, values.get("user") or self.config.user)
        uri = f"{request.host_url.rstrip('/')}/oauth/authorize?" + urlencode(
            {"oauth_token": token})
        try:
            headers, body, status = self.authorization.create_authorization_response(uri)
        except OAuth1Error as error:
            return Response(f"Cannot authorize: {error.description}\n", status=400,
                            mimetype="text/plain")
        return Response(body or "", status=status, headers=headers)

    def me(self, request: Request) -> Response:
        """The protected resource: who the token belongs to."""
        uri, method, body, headers = self._signed(request)
        valid, req = self.resource.validate_protected_resource_request(
            uri, http_method=method, body=body, headers=headers)
        if not valid:
            # The Problem Reporting extension's codes, as Atlassian applications send
            # them in WWW-Authenticate: an unknown token is token_rejected.
            checks = req.validator_log if req is not None else {}
            if checks.get("resource_owner") is False:
                problem = "token_rejected"
            elif checks.get("signature") is False:
                problem = "signature_invalid"
            else:
                problem = "parameter_rejected"
            return Response(json.dumps({"error": problem}), status=401,
                            mimetype="application/json",
                            headers={"WWW-Authenticate":
                                     f'OAuth realm="oauthlib", oauth_problem="{problem}"'})
        entry = self.validator.access_tokens[req.resource_owner_key]
        return Response(json.dumps({"name": entry["user"], "consumer": req.client_key,
                                    "provider": "oauthlib"}),
                        mimetype="application/json")


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, a thread per request (the browser and the consumer's calls may
    overlap)."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without the reverse DNS lookup per logged request."""

    def address_string(self) -> str:
        """The client's address as a number."""
        return str(self.client_address[0])


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed, on 127.0.0.1 only."""
    config = parse_args("oauthlib_provider", argv)
    with make_server("127.0.0.1", config.port, App(config), server_class=ThreadingWSGIServer,
                     handler_class=QuietHandler) as server:
        print(f"oauthlib provider listening on {config.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
