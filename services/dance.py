"""The three-legged dance as application services: issue a request token, approve or
deny it, exchange it for an access token, renew, revoke.

Protocol decisions follow RFC 5849 and Atlassian's service provider (docs/oauth.md, "The
dance, step by step"). State is loaded from the store (docs/design.md, "What Redis
holds"); every change is an event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.state import (
    ConsumerState,
    TokenState,
    UserState,
    token_stream,
    user_stream,
)
from oauthledger.services.errors import NotFound
from oauthledger.services.ledger import Change, Ledger
from oauthledger.services.oauth.authenticator import (
    WrongVerifier,
    require_exchangeable,
    require_verifier,
)
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.redirects import absolute_http_url


def new_token() -> str:
    """A token identifier: 22 URL-safe characters, 128 random bits (not guessable; and the
    identifier is no secret: it travels in every request, the 192-bit secret does not).
    Shorter than Atlassian's 32: the Redis key of a token (``ol:p0:t:<token>``) then fits in 30
    bytes, the smallest allocation a key name can have (docs/read-model.md, "Memory")."""
    return secrets.token_urlsafe(16)


def new_verifier() -> str:
    """Atlassian's verifier is 6 letters and digits; a longer one costs nothing and
    cannot be guessed within a request token's lifetime (docs/oauth.md, "Lifetimes and
    settings")."""
    return secrets.token_urlsafe(16)


def handle_hash(handle: str) -> str:
    """Session handles are stored as SHA-256 only: compared on renewal, never shown."""
    return hashlib.sha256(handle.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedRequestToken:
    """What the request-token endpoint returns."""

    token: str
    secret: str
    callback_confirmed: bool


@dataclass(frozen=True)
class IssuedAccessToken:
    """What the access-token endpoint returns."""

    token: str
    secret: str
    expires_in: int
    authorization_expires_in: int
    session_handle: str


def check_callback(consumer: ConsumerState, callback: str | None) -> str | None:
    """Validate ``oauth_callback`` (RFC 5849 §2.1: an absolute URI, or ``oob`` when the
    verifier is shown to the user; no callback at all only for consumers flagged for
    OAuth 1.0, which is open to session fixation). Returns the URL to store."""
    if callback is None:
        if not consumer.allow_oauth10:
            raise OAuthProblem(
                "parameter_absent",
                "OAuth 1.0a requires oauth_callback (a URL, or 'oob' to show the verifier); "
                "OAuth 1.0 without a callback is not enabled for this consumer",
                oauth_parameters_absent="oauth_callback",
            )
        return None
    if callback == "oob":
        return callback
    # Judged the way the user's browser will follow it (services.oauth.redirects): a
    # callback that a browser reads differently from us is refused, not guessed at.
    checked = absolute_http_url(callback)
    if checked is None:
        raise OAuthProblem(
            "parameter_rejected",
            "oauth_callback must be an absolute http(s) URL or 'oob', without user info, "
            "spaces, backslashes, control or non-ASCII characters (percent-encode them)",
            oauth_parameters_rejected="oauth_callback",
        )
    if consumer.callback_url:
        registered = absolute_http_url(consumer.callback_url)
        if registered is None or checked.origin != registered.origin:
            shown = registered.origin if registered else "the registered callback"
            raise OAuthProblem(
                "parameter_rejected",
                f"oauth_callback must share the origin of the consumer's registered "
                f"callback {shown}",
                oauth_parameters_rejected="oauth_callback",
            )
    # Plain printable ASCII by now, so it is also safe in the Location header.
    return callback


def issue_request_token(
    ledger: Ledger, sealer: Sealer, settings: Settings, consumer: ConsumerState,
    callback: str | None, meta: Mapping[str, Any],
) -> IssuedRequestToken:
    """RFC 5849 §2.1: temporary credentials for a consumer."""
    if not consumer.three_legged:
        raise OAuthProblem(
            "permission_denied", "three-legged access is not enabled for this consumer"
        )
    callback = check_callback(consumer, callback)
    token = new_token()
    # The secret is derived from the token, not stored (events.sealing): the event holds
    # where to derive it from.
    secret, secret_ref = sealer.token_secret(token)
    event = ev.RequestTokenIssued(
        token=token, consumer_key=consumer.key, secret_sealed=secret_ref,
        callback=callback, expires_at=ledger.clock() + settings.request_token_ttl,
    )
    ledger.commit([Change(token_stream(token), 0, None, [event])], meta)
    return IssuedRequestToken(token, secret, callback is not None)


def authorizable(token: TokenState | None, now: float) -> TokenState:
    """A request token the authorize page may act on, else its problem (docs/oauth.md,
    "The dance, step by step")."""
    if token is None or token.kind != "request":
        raise OAuthProblem("token_rejected", "this request token is unknown")
    if token.status in ("approved", "denied", "exchanged", "burned"):
        raise OAuthProblem("token_used", "this request token was already approved or denied")
    if token.status == "expired" or now >= token.expires_at:
        raise OAuthProblem("token_expired", "this request token has expired; start again")
    return token


def decide(
    ledger: Ledger, sealer: Sealer, token: TokenState, user: str, approve: bool,
    meta: Mapping[str, Any],
) -> str | None:
    """Record the user's decision. Returns the verifier (None on deny or for OAuth 1.0,
    which has no verifier)."""
    token = authorizable(token, ledger.clock())
    if not approve:
        event: ev.Event = ev.TokenDenied(token=token.token, user=user)
        verifier = None
    else:
        verifier = new_verifier() if token.callback is not None else None
        event = ev.TokenApproved(
            token=token.token, user=user,
            verifier_sealed=sealer.seal(verifier) if verifier else None,
        )
    ledger.commit([Change(token_stream(token.token), token.version, token, [event])], meta)
    return verifier


def _grant(
    ledger: Ledger, sealer: Sealer, settings: Settings, consumer_key: str, user: str,
    authorization_expires_at: float | None,
) -> tuple[IssuedAccessToken, ev.AccessTokenIssued]:
    now = ledger.clock()
    token, handle = new_token(), secrets.token_urlsafe(24)
    secret, secret_ref = sealer.token_secret(token)
    auth_exp = authorization_expires_at or now + settings.renewal_ttl
    expires_at = min(now + settings.access_token_ttl, auth_exp)
    event = ev.AccessTokenIssued(
        token=token, consumer_key=consumer_key, user=user, secret_sealed=secret_ref,
        session_handle_hash=handle_hash(handle), expires_at=expires_at,
        authorization_expires_at=auth_exp,
    )
    issued = IssuedAccessToken(
        token, secret, max(0, int(expires_at - now)), max(0, int(auth_exp - now)), handle
    )
    return issued, event


def exchange(
    ledger: Ledger, sealer: Sealer, settings: Settings, request: TokenState,
    verifier: str | None, meta: Mapping[str, Any],
) -> IssuedAccessToken:
    """RFC 5849 §2.3: trade an approved request token for an access token (single use)."""
    require_exchangeable(request, ledger.clock())
    try:
        require_verifier(sealer, request, verifier)
    except WrongVerifier as wrong:
        raise _count_wrong_verifier(ledger, request, wrong, meta) from None
    assert request.user is not None
    issued, event = _grant(ledger, sealer, settings, request.consumer_key, request.user, None)
    event = dataclasses.replace(event, request_token=request.token)
    ledger.commit(
        [
            Change(token_stream(request.token), request.version, request,
                   [ev.RequestTokenExchanged(token=request.token, access_token=issued.token)]),
            Change(token_stream(issued.token), 0, None, [event]),
        ],
        meta,
    )
    return issued


MAX_VERIFIER_ATTEMPTS = 5
"""Wrong verifiers a request token survives; the last one burns it (docs/oauth.md,
"The dance, step by step")."""


def _count_wrong_verifier(ledger: Ledger, request: TokenState, wrong: WrongVerifier,
                          meta: Mapping[str, Any]) -> OAuthProblem:
    """Record a wrong verifier; at :data:`MAX_VERIFIER_ATTEMPTS` the request token is
    burned in the same commit. Returns the problem to answer. A verifier has 128 bits,
    so guessing is hopeless anyway; the bound keeps a stolen request token from being
    tried forever and leaves every attempt in the log for the audit."""
    for _ in range(3):
        attempts = request.verifier_failures + 1
        events: list[ev.Event] = [ev.VerifierRejected(token=request.token, attempts=attempts)]
        if attempts >= MAX_VERIFIER_ATTEMPTS:
            events.append(ev.RequestTokenBurned(
                token=request.token, reason=f"{attempts} wrong oauth_verifier values"))
        try:
            ledger.commit([Change(token_stream(request.token), request.version, request,
                                  events)], meta)
        except ConcurrencyConflict:
            # Another attempt was recorded first: count on top of it.
            state, _ = ledger.load(token_stream(request.token))
            if not isinstance(state, TokenState) or state.status != "approved":
                return wrong
            request = state
            continue
        if attempts >= MAX_VERIFIER_ATTEMPTS:
            return OAuthProblem(
                "token_rejected",
                f"the oauth_verifier does not match; after {attempts} wrong verifiers this "
                "request token is withdrawn: start the authorization again",
            )
        left = MAX_VERIFIER_ATTEMPTS - attempts
        return OAuthProblem(
            "token_rejected",
            f"the oauth_verifier does not match the one issued for this token "
            f"({left} more wrong {'attempt' if left == 1 else 'attempts'} withdraw it)",
        )
    return wrong


def renew(
    ledger: Ledger, sealer: Sealer, settings: Settings, consumer: ConsumerState,
    old: TokenState, session_handle: str, meta: Mapping[str, Any],
) -> IssuedAccessToken:
    """Renew an access token with its session handle (Atlassian/OAuth Session extension):
    a new token is issued and the old one retired, within the authorization lifetime.

    The session handle belongs to the grant (docs/oauth.md, "Renewal"): renewal succeeds
    only for a grant never revoked, whose user is still active, issued under the
    consumer's current registration (a key removed and registered again is a new
    consumer)."""
    now = ledger.clock()
    if old.status in ("revoked", "renewed"):
        raise OAuthProblem("token_revoked" if old.status == "revoked" else "token_used",
                           "this access token can no longer be renewed")
    if not old.session_handle_hash or not hmac.compare_digest(
        old.session_handle_hash, handle_hash(session_handle)
    ):
        raise OAuthProblem("token_rejected", "oauth_session_handle does not match this token",
                           oauth_parameters_rejected="oauth_session_handle")
    if old.authorization_expires_at is not None and now >= old.authorization_expires_at:
        raise OAuthProblem("token_expired", "the authorization has expired; the user must "
                           "approve access again")
    if old.consumer_key != consumer.key or old.issued_at < consumer.registered_at:
        raise OAuthProblem("token_revoked", "this access was granted to an earlier "
                           "registration of this consumer key; ask the user to authorize "
                           "again")
    assert old.user is not None
    user, _ = ledger.load(user_stream(old.user))
    if not isinstance(user, UserState) or user.disabled:
        raise OAuthProblem("token_revoked", "the user who granted this access is no longer "
                           "active; access cannot be renewed")
    issued, event = _grant(ledger, sealer, settings, old.consumer_key, old.user,
                           old.authorization_expires_at)
    event = dataclasses.replace(event, renewed_from=old.token)
    try:
        ledger.commit(
            [
                Change(token_stream(old.token), old.version, old,
                       [ev.AccessTokenRenewed(token=old.token, new_token=issued.token)]),
                Change(token_stream(issued.token), 0, None, [event]),
            ],
            meta,
        )
    except ConcurrencyConflict:
        # Two renewals of one token at the same moment: the first one recorded wins, and
        # to the other this token is used up, as if it had come a moment later.
        raise OAuthProblem("token_used", "this access token was renewed by another "
                           "request at the same moment") from None
    return issued


def revoke(ledger: Ledger, token: str, by: str, meta: Mapping[str, Any],
           reason: str = "revoked") -> TokenState:
    """Revoke an access token's grant; effective on the very next request (docs/design.md,
    "Read your writes"). An expired token whose session handle could still renew it is
    revoked too (docs/oauth.md, "Renewal"); revoking a grant that is over (revoked,
    renewed, or past its authorization lifetime) changes nothing."""
    state, version = ledger.load(token_stream(token))
    assert state is None or isinstance(state, TokenState)
    if state is None or state.kind != "access":
        raise NotFound(f"no access token {token!r}")
    if not state.revocable_at(ledger.clock()):
        return state
    states = ledger.commit(
        [Change(token_stream(token), version, state,
                [ev.AccessTokenRevoked(token=token, by=by, reason=reason)])],
        meta,
    )
    return states[token_stream(token)]
