"""The consumer side of the OAuth 1.0a dance, as a client of a service provider: sign the
request-token, access-token and renewal requests and the calls made on a user's behalf,
send them (services/remote_fetch.py :func:`send`, vetted like every outbound request),
and read the provider's answers.

Signing is oauthlib's (``oauthlib.oauth1.Client``): HMAC-SHA1 with the shared secret the
provider issued, or RSA-SHA1 with this installation's private key. The only addition is
``oauth_session_handle`` on a renewal (the OAuth Session extension, which oauthlib's
client does not know).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from oauthlib import oauth1

from oauthledger.services.remote_fetch import Answer, FetchPolicy, Unreachable, send

# Problems after which the stored token is of no more use (the OAuth Problem Reporting
# extension): the connection needs the user again, unless a renewal helps first.
TOKEN_PROBLEMS = frozenset({"token_expired", "token_revoked", "token_rejected",
                            "permission_unknown", "token_used"})


@dataclass(frozen=True)
class Signer:
    """How to sign as the consumer of one provider: HMAC-SHA1 with ``secret``, or
    RSA-SHA1 with ``rsa_key`` (PEM)."""

    consumer_key: str
    secret: str | None = None
    rsa_key: str | None = None

    @property
    def method(self) -> str:
        """The signature method these credentials sign with."""
        return oauth1.SIGNATURE_HMAC_SHA1 if self.secret is not None else oauth1.SIGNATURE_RSA


# OAuth 2-style JSON error codes some OAuth 1.0a providers answer with, as the Problem
# Reporting extension names them.
_JSON_ERRORS = {"invalid_token": "token_rejected", "expired_token": "token_expired",
                "access_denied": "permission_denied"}


class ProviderRefused(Exception):
    """The provider answered with an error: ``problem`` is its ``oauth_problem`` (or
    ``http_<status>`` when it named none), ``advice`` its ``oauth_problem_advice``."""

    def __init__(self, status: int, problem: str, advice: str = "") -> None:
        super().__init__(f"{problem} (HTTP {status})" + (f": {advice}" if advice else ""))
        self.status = status
        self.problem = problem
        self.advice = advice


@dataclass(frozen=True)
class Credentials:
    """A token and its secret as a provider issued them, with what it said of their
    lifetime (the OAuth Session extension's ``oauth_expires_in``,
    ``oauth_authorization_expires_in`` and ``oauth_session_handle``)."""

    token: str
    secret: str
    callback_confirmed: bool = False
    session_handle: str | None = None
    expires_at: float | None = None
    authorization_expires_at: float | None = None


class _Client(oauth1.Client):
    """oauthlib's client, with extra ``oauth_*`` parameters in the signed set."""

    def __init__(self, *args: Any, extra_oauth: Sequence[tuple[str, str]] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra_oauth = list(extra_oauth)

    def get_oauth_params(self, request: Any) -> list[tuple[str, str]]:
        """oauthlib's parameters plus the extra ones."""
        return [*super().get_oauth_params(request), *self.extra_oauth]


def sign(signer: Signer, method: str, url: str, headers: Mapping[str, str] | None = None,
         body: bytes = b"", *, token: str | None = None, token_secret: str | None = None,
         callback: str | None = None, verifier: str | None = None,
         extra_oauth: Sequence[tuple[str, str]] = ()) -> tuple[str, dict[str, str], bytes]:
    """(url, headers, body) of the request signed in an Authorization header (RFC 5849
    §3.5.1). A form-encoded body's parameters are signed (§3.4.1.3.1); any other body is
    covered by ``oauth_body_hash``, as oauthlib's client adds it. Raises ValueError for
    a request oauthlib cannot sign."""
    client = _Client(signer.consumer_key, client_secret=signer.secret,
                     resource_owner_key=token, resource_owner_secret=token_secret,
                     callback_uri=callback, verifier=verifier,
                     signature_method=signer.method, rsa_key=signer.rsa_key,
                     extra_oauth=extra_oauth)
    text: str | None = None
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the body must be UTF-8 text") from None
    # oauthlib signs a form-encoded body's parameters and covers any other body with
    # oauth_body_hash (draft-eaton-oauth-bodyhash); it refuses a form-looking body sent
    # under another content type, and a GET or HEAD with a body (ValueError).
    signed_url, signed_headers, signed_body = client.sign(url, method, text,
                                                          dict(headers or {}))
    encoded = signed_body.encode("utf-8") if isinstance(signed_body, str) else (
        signed_body or b"")
    return signed_url, dict(signed_headers), encoded


def _problem(answer: Answer) -> ProviderRefused:
    """The provider's refusal: oauth_problem from the body (form-encoded, RFC 5849
    problem reporting) or from its WWW-Authenticate header."""
    fields: dict[str, str] = {}
    try:
        fields = dict(parse_qsl(answer.body.decode("utf-8", "replace").strip()))
    except ValueError:
        fields = {}
    problem = fields.get("oauth_problem", "")
    advice = fields.get("oauth_problem_advice", "")
    if not problem:
        challenge = answer.headers.get("www-authenticate", "")
        marker = 'oauth_problem="'
        if marker in challenge:
            problem = challenge.split(marker, 1)[1].split('"', 1)[0]
    if not problem and "json" in answer.headers.get("content-type", ""):
        # Providers built on OAuth 2-era libraries (Authlib) answer a JSON error instead
        # of OAuth Problem Reporting: {"error": "invalid_token"} means the token is not
        # (or no longer) known, which Problem Reporting calls token_rejected.
        try:
            error = json.loads(answer.body).get("error", "")
        except (ValueError, AttributeError):
            error = ""
        if isinstance(error, str) and error:
            problem = _JSON_ERRORS.get(error, error)[:100]
    return ProviderRefused(answer.status, problem or f"http_{answer.status}", advice[:500])


def _credentials(answer: Answer, now: float) -> Credentials:
    """Read a token response (RFC 5849 §2.1, §2.3: form-encoded oauth_token and
    oauth_token_secret)."""
    if answer.status != 200:
        raise _problem(answer)
    try:
        # keep_blank_values: a provider may issue an empty token secret (RFC 5849 §3.4.2
        # signs with "consumer-secret&" then).
        fields = dict(parse_qsl(answer.body.decode("utf-8").strip(), strict_parsing=True,
                                keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        raise ProviderRefused(answer.status, "bad_response",
                              "the provider's answer is not form-encoded") from None
    token, secret = fields.get("oauth_token"), fields.get("oauth_token_secret")
    if not token or secret is None:
        raise ProviderRefused(answer.status, "bad_response",
                              "the provider's answer has no oauth_token and "
                              "oauth_token_secret")

    def at(name: str) -> float | None:
        raw = fields.get(name, "")
        try:
            seconds = float(raw)
        except ValueError:
            return None
        return now + seconds if seconds > 0 else None

    return Credentials(
        token=token, secret=secret,
        callback_confirmed=fields.get("oauth_callback_confirmed") == "true",
        session_handle=fields.get("oauth_session_handle") or None,
        expires_at=at("oauth_expires_in"),
        authorization_expires_at=at("oauth_authorization_expires_in"))


def _post(signer: Signer, url: str, policy: FetchPolicy, **oauth: Any) -> Answer:
    signed_url, headers, body = sign(signer, "POST", url, {}, b"", **oauth)
    return send("POST", signed_url, headers, body, policy)


def request_token(signer: Signer, url: str, callback: str, policy: FetchPolicy,
                  now: float | None = None) -> Credentials:
    """Obtain temporary credentials (RFC 5849 §2.1). Raises ProviderRefused or
    Unreachable."""
    return _credentials(_post(signer, url, policy, callback=callback), now or time.time())


def access_token(signer: Signer, url: str, token: str, token_secret: str, verifier: str,
                 policy: FetchPolicy, now: float | None = None) -> Credentials:
    """Trade approved temporary credentials for token credentials (RFC 5849 §2.3)."""
    return _credentials(_post(signer, url, policy, token=token, token_secret=token_secret,
                              verifier=verifier), now or time.time())


def renew_token(signer: Signer, url: str, token: str, token_secret: str,
                session_handle: str, policy: FetchPolicy,
                now: float | None = None) -> Credentials:
    """Renew token credentials with their session handle (OAuth Session extension: the
    access-token URL with ``oauth_token`` and ``oauth_session_handle``)."""
    return _credentials(_post(signer, url, policy, token=token, token_secret=token_secret,
                              extra_oauth=[("oauth_session_handle", session_handle)]),
                        now or time.time())


def call(signer: Signer, method: str, url: str, headers: Mapping[str, str], body: bytes,
         token: str, token_secret: str, policy: FetchPolicy) -> Answer:
    """Send a protected-resource request signed with the user's token. Raises
    Unreachable; any answer, refusals included, is returned."""
    signed_url, signed_headers, signed_body = sign(
        signer, method, url, headers, body, token=token, token_secret=token_secret)
    return send(method, signed_url, signed_headers, signed_body, policy)


def refusal(answer: Answer) -> ProviderRefused | None:
    """The provider's refusal of the token, when ``answer`` is one (401 with an
    ``oauth_problem`` about the token), else None."""
    if answer.status not in (400, 401, 403):
        return None
    problem = _problem(answer)
    return problem if problem.problem in TOKEN_PROBLEMS else None


__all__ = ["Answer", "Credentials", "ProviderRefused", "Signer", "Unreachable",
           "access_token", "call", "refusal", "renew_token", "request_token", "sign"]
