"""The consumer side: this installation's users connected to service providers.

A user connects (:func:`start_connect`: a request token from the provider, remembered
for the browser session that asked, then the provider's authorize page), comes back
(:func:`finish_connect`: only that request token, from that session, before it expires,
is exchanged), and from then on this installation calls the provider on the user's
behalf (:func:`call`) with the stored token — renewing it with its session handle when
it reaches its expiry, and marking the connection as needing the user again when the
provider refuses it. Users disconnect and admins drop connections (:func:`drop`).

Every step is an event on the stream ``connection-<user>/<provider>``; token, token
secret and session handle are only ever stored sealed (docs/application-links.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

from oauthledger.events import catalog as ev
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.queries import streams_with
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import (
    ConnectionState,
    ProviderState,
    UserState,
    connection_stream,
    user_stream,
)
from oauthledger.services import installation as inst
from oauthledger.services import provider_client as pc
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger
from oauthledger.services.providers import drop_change, list_providers, load_provider
from oauthledger.services.remote_fetch import SEND_MAX_BYTES, Answer, FetchPolicy, Unreachable

log = logging.getLogger(__name__)

CONNECTIONS_PAGE = "/plugins/servlet/oauth/users/connections"
PROVIDER_PATH = "/plugins/servlet/oauth/service-providers"
# How long a started connection waits for the user to come back from the provider.
PENDING_TTL = 600.0
# Renew a little before the provider's expiry: clocks differ, and the call takes time.
RENEW_MARGIN = 30.0
# The call API relays requests, not uploads: bodies both ways are capped.
MAX_CALL_BODY = 256 * 1024
CALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Headers the caller may not set: oauthledger signs and frames the request itself
# (RFC 9110 §7.6.1 hop-by-hop fields, and credentials that are not the caller's to give).
_DROPPED_HEADERS = frozenset({
    "authorization", "host", "content-length", "connection", "transfer-encoding",
    "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "upgrade",
    "cookie",
})
_RELAYED_ANSWER_HEADERS = frozenset({
    "content-type", "content-language", "etag", "last-modified", "location",
    "www-authenticate", "retry-after", "cache-control", "link",
})


class NotConnected(Conflict):
    """The user has no usable token for the provider; the message says what to do."""


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered nothing usable; nothing was
    stored. The message is for a person."""


@dataclass(frozen=True)
class ConnectOutcome:
    """How a return from the provider ended: ``ok``, and a sentence for the user."""

    ok: bool
    message: str


@dataclass(frozen=True)
class CallResult:
    """The provider's answer to a call, and the connection's status after it."""

    answer: Answer
    connection: str
    renewed: bool = False

    def view(self) -> dict[str, Any]:
        """The JSON the call API answers with: status, relayed headers, body as text."""
        headers = {n: v for n, v in self.answer.headers.items()
                   if n in _RELAYED_ANSWER_HEADERS}
        return {"status": self.answer.status, "headers": headers,
                "body": self.answer.body.decode("utf-8", "replace"),
                "connection": self.connection, "renewed": self.renewed}


def session_hash(session_id: str) -> str:
    """SHA-256 of a browser session id: what the log keeps to tie a pending request
    token to the session that asked for it (the id itself is a credential)."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def callback_url(base_url: str, provider: str) -> str:
    """Where the provider sends the user back: ``<base>/plugins/servlet/oauth/
    service-providers/<name>/callback`` (the name percent-encoded)."""
    return f"{base_url.rstrip('/')}{PROVIDER_PATH}/{quote(provider, safe='')}/callback"


def signer_for(ledger: Ledger, sealer: Sealer, provider: ProviderState) -> pc.Signer:
    """The credentials to sign as this provider's consumer: its shared secret
    (HMAC-SHA1), or this installation's RSA key (RSA-SHA1)."""
    if provider.secret_sealed is not None:
        return pc.Signer(provider.consumer_key, secret=sealer.open(provider.secret_sealed))
    info = inst.load_installation(ledger)
    if info is None:
        raise ProviderUnavailable("this installation has no RSA key yet; open the Consumer "
                                  "Info tab once to create it")
    return pc.Signer(provider.consumer_key, rsa_key=inst.private_key_pem(info, sealer))


def load_connection(ledger: Ledger, user: str,
                    provider: str) -> tuple[ConnectionState | None, int]:
    """(state, version) of a user's connection to a provider, (None, 0) if never."""
    state, version = ledger.load(connection_stream(user, provider))
    assert state is None or isinstance(state, ConnectionState)
    return state, version


def connections_of_user(ledger: Ledger,
                        user: str) -> list[tuple[ProviderState, ConnectionState | None]]:
    """Every provider, by name, with this user's connection to it (None: never)."""
    providers = list_providers(ledger)
    loaded = ledger.load_many([connection_stream(user, p.name) for p in providers])
    out: list[tuple[ProviderState, ConnectionState | None]] = []
    for p in providers:
        state = loaded.get(connection_stream(user, p.name), (None, 0))[0]
        out.append((p, state if isinstance(state, ConnectionState) else None))
    return out


def connections_of_provider(ledger: Ledger, provider: str) -> list[ConnectionState]:
    """Every user's connection to ``provider`` that holds or awaits a token, by user."""
    sids = streams_with(ledger.store, ["ProviderTokenRequested"], "provider", provider)
    states = [s for s, _ in ledger.load_many(sids).values()]
    return sorted((s for s in states if isinstance(s, ConnectionState)
                   and s.provider == provider
                   and (s.status in ("connected", "needs_reconnect") or s.pending_token)),
                  key=lambda s: s.user)


def status_of(conn: ConnectionState | None, now: float) -> str:
    """What the user sees: ``not_connected``, ``connected`` or ``needs_reconnect``. A
    connected token past its expiry with no way to renew it needs the user again."""
    if conn is None or conn.status in ("none", "dropped"):
        return "not_connected"
    if conn.status == "connected" and conn.expired_at(now) and not conn.renewable_at(now):
        return "needs_reconnect"
    return "connected" if conn.status == "connected" else "needs_reconnect"


def connection_view(provider: ProviderState, conn: ConnectionState | None,
                    now: float) -> dict[str, Any]:
    """The JSON form of one connection (never a token, secret or handle)."""
    status = status_of(conn, now)
    connected = status != "not_connected" and conn is not None
    return {
        "provider": provider.name, "user": conn.user if conn else None, "status": status,
        "connectedAt": int(conn.connected_at) if connected and conn.connected_at else None,
        "renewedAt": int(conn.renewed_at) if connected and conn.renewed_at else None,
        "expiresAt": int(conn.expires_at) if connected and conn.expires_at else None,
        "renewable": bool(connected and conn.renewable_at(now)),
        "problem": conn.problem if conn and status == "needs_reconnect" else None,
    }


# -- connecting ------------------------------------------------------------------------------


def start_connect(ledger: Ledger, sealer: Sealer, provider_name: str, user: str,
                  session_id: str, base_url: str, policy: FetchPolicy,
                  meta: Mapping[str, Any]) -> str:
    """Obtain a request token from the provider with our callback, remember it for this
    session (ProviderTokenRequested) and return the provider's authorize URL to send
    the user to. Raises NotFound, or ProviderUnavailable with a sentence for the user
    (nothing is stored then)."""
    provider = load_provider(ledger, provider_name)
    signer = signer_for(ledger, sealer, provider)
    try:
        creds = pc.request_token(signer, provider.request_token_url,
                                 callback_url(base_url, provider.name), policy,
                                 now=ledger.clock())
    except Unreachable as exc:
        log.info("request token from %s: %s", provider.name, exc.detail)
        raise ProviderUnavailable(f"{provider.name} could not be reached ({exc.reason}). "
                                  "Try again later, or ask an administrator to check the "
                                  "service provider's URLs.") from None
    except pc.ProviderRefused as exc:
        log.info("request token from %s refused: %s", provider.name, exc)
        raise ProviderUnavailable(
            f"{provider.name} refused to start the connection ({exc.problem}"
            + (f": {exc.advice}" if exc.advice else "") + "). An administrator must check "
            "that this installation is registered there as a consumer.") from None
    state, version = load_connection(ledger, user, provider.name)
    now = ledger.clock()
    event = ev.ProviderTokenRequested(
        provider=provider.name, user=user, request_token=creds.token,
        secret_sealed=sealer.seal(creds.secret), session_hash=session_hash(session_id),
        expires_at=now + PENDING_TTL)
    ledger.commit([Change(connection_stream(user, provider.name), version, state, [event])],
                  meta)
    return _with_query(provider.authorize_url, [("oauth_token", creds.token)])


def _with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(pairs)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _end_pending(ledger: Ledger, state: ConnectionState, version: int, reason: str,
                 meta: Mapping[str, Any]) -> None:
    assert state.pending_token is not None
    event = ev.ProviderTokenRequestEnded(provider=state.provider, user=state.user,
                                         request_token=state.pending_token, reason=reason)
    # Another return from the provider may have settled it first: that stands.
    with contextlib.suppress(ConcurrencyConflict):
        ledger.commit([Change(connection_stream(state.user, state.provider), version, state,
                              [event])], meta)


def finish_connect(ledger: Ledger, sealer: Sealer, provider_name: str, user: str,
                   session_id: str, params: Mapping[str, str], policy: FetchPolicy,
                   meta: Mapping[str, Any]) -> ConnectOutcome:
    """Handle the provider's redirect back (``oauth_token``, ``oauth_verifier``): only
    the request token this session asked for, before it expires, is exchanged, once.
    Returns the sentence the connections page shows."""
    try:
        provider = load_provider(ledger, provider_name)
    except NotFound:
        return ConnectOutcome(False, f"There is no service provider named {provider_name!r} "
                                     "any more.")
    state, version = load_connection(ledger, user, provider.name)
    token = params.get("oauth_token", "")
    denied = bool(params.get("oauth_problem") or params.get("error")
                  or params.get("denied") or params.get("oauth_verifier") == "denied")
    if not token and denied and state is not None and state.pending_token and (
            state.pending_session_hash == session_hash(session_id)):
        # Some providers send a denial back without the request token (OAuth 2-style
        # ``error=access_denied``, as Authlib does; Twitter's ``denied=<token>``): it can
        # only end this session's own pending request, so take it as that.
        token = params.get("denied") or state.pending_token
    if (state is None or not state.pending_token or not token
            or state.pending_token != token
            or state.pending_session_hash != session_hash(session_id)):
        return ConnectOutcome(False, f"This return from {provider.name} does not match a "
                                     "connection started from this browser session, or it "
                                     "was used already. Press Connect to start again.")
    if ledger.clock() >= (state.pending_expires_at or 0):
        _end_pending(ledger, state, version, "expired", meta)
        return ConnectOutcome(False, f"The connection to {provider.name} took too long and "
                                     "expired. Press Connect to start again.")
    verifier = params.get("oauth_verifier", "")
    if denied or not verifier:
        _end_pending(ledger, state, version, "denied", meta)
        return ConnectOutcome(False, f"Access was not granted at {provider.name}, so nothing "
                                     "was stored. Press Connect if you want to try again.")
    assert state.pending_secret_sealed is not None
    try:
        creds = pc.access_token(signer_for(ledger, sealer, provider),
                                provider.access_token_url, token,
                                sealer.open(state.pending_secret_sealed), verifier, policy,
                                now=ledger.clock())
    except Unreachable as exc:
        _end_pending(ledger, state, version, "unreachable", meta)
        return ConnectOutcome(False, f"{provider.name} could not be reached to finish the "
                                     f"connection ({exc.reason}). Try again later.")
    except pc.ProviderRefused as exc:
        _end_pending(ledger, state, version, f"refused: {exc.problem}", meta)
        return ConnectOutcome(False, f"{provider.name} refused to complete the connection "
                                     f"({exc.problem}). Press Connect to start again.")
    event = ev.ProviderTokenObtained(
        provider=provider.name, user=user, token_sealed=sealer.seal(creds.token),
        secret_sealed=sealer.seal(creds.secret),
        session_handle_sealed=(sealer.seal(creds.session_handle)
                               if creds.session_handle else None),
        expires_at=creds.expires_at, authorization_expires_at=creds.authorization_expires_at,
        request_token=token)
    try:
        ledger.commit([Change(connection_stream(user, provider.name), version, state,
                              [event])], meta)
    except ConcurrencyConflict:
        return ConnectOutcome(False, "This return was already handled. Reload the page "
                                     "to see the connection.")
    return ConnectOutcome(True, f"Connected to {provider.name}.")


# -- dropping --------------------------------------------------------------------------------


def drop(ledger: Ledger, provider_name: str, user: str, by: str, reason: str,
         meta: Mapping[str, Any]) -> bool:
    """Forget a user's stored token for a provider (the user disconnects, an admin drops
    it). False when there was nothing to forget. The provider is not told: OAuth 1.0a has
    no revocation request, so the user may also revoke the grant there."""
    state, version = load_connection(ledger, user, provider_name)
    change = drop_change(state, version, by, reason) if state is not None else None
    if change is None:
        return False
    ledger.commit([change], meta)
    return True


# -- calling -----------------------------------------------------------------------------


def allowed_origins(provider: ProviderState) -> set[tuple[str, str]]:
    """(scheme, host[:port]) pairs calls may go to: the provider's base URL, or, for one
    added by hand, the origins of its request-token and access-token URLs."""
    urls = [provider.base_url] if provider.base_url else [provider.request_token_url,
                                                          provider.access_token_url]
    return {_origin(u) for u in urls if u}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    if ":" in host:  # IPv6
        netloc = f"[{host}]" if port in (None, default) else f"[{host}]:{port}"
    return scheme, netloc


def resolve_call_url(provider: ProviderState, url: str) -> str:
    """The absolute URL a call goes to: a path (``/rest/api/2/myself``) is taken under
    the provider's base URL (or its access-token URL's origin); an absolute URL must lie
    at one of :func:`allowed_origins` — the call API is no open proxy. Raises
    ValidationError on ``url``."""
    url = (url or "").strip()
    if not url:
        raise ValidationError({"url": "is required: a path such as /rest/api/2/myself, or "
                                      "an absolute URL at the service provider"})
    if any(c in url for c in "\r\n\t\x00 \\"):
        raise ValidationError({"url": "must not contain spaces, control characters or "
                                      "backslashes"})
    if url.startswith("/") and not url.startswith("//"):
        base = provider.base_url or "{}://{}".format(*_origin(provider.access_token_url))
        url = base.rstrip("/") + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError({"url": "is not a valid URL"}) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": "must be a path or an absolute http(s) URL"})
    if "@" in parts.netloc:
        raise ValidationError({"url": "must not contain a user name or password"})
    if parts.fragment:
        url = urlunsplit(parts._replace(fragment=""))
    allowed = allowed_origins(provider)
    if _origin(url) not in allowed:
        where = ", ".join(sorted(f"{s}://{n}" for s, n in allowed))
        raise ValidationError({"url": f"must lie at {provider.name}'s own address ({where}); "
                                      "oauthledger is not an open proxy"})
    if provider.base_url:
        # Under the base path too: an application at https://host/jira owns /jira/...
        base_path = urlsplit(provider.base_url).path.rstrip("/")
        path = urljoin("/", parts.path or "/")
        if base_path and not (path == base_path or path.startswith(base_path + "/")):
            raise ValidationError({"url": f"must lie under {provider.base_url}"})
    return url


def _clean_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            errors[f"headers.{name}"] = "header names and values must be strings"
            continue
        if (not name or not all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}'
                                for c in name)):
            errors[f"headers.{name[:40]}"] = "is not a valid header name (RFC 9110 §5.1)"
            continue
        if any(c in value for c in "\r\n\x00"):
            errors[f"headers.{name}"] = "must not contain line breaks or NUL"
            continue
        if name.lower() in _DROPPED_HEADERS:
            continue  # ours to set: see _DROPPED_HEADERS
        out[name] = value
    if errors:
        raise ValidationError(errors)
    return out


def _acting_user(ledger: Ledger, user: str) -> None:
    state, _ = ledger.load(user_stream(user))
    if not isinstance(state, UserState):
        raise NotFound(f"no user named {user!r}")
    if state.disabled:
        raise NotConnected(f"the user {user!r} is disabled")


def _usable(state: ConnectionState | None) -> bool:
    return state is not None and state.status == "connected" and bool(state.token_sealed)


# A provider refuses the second of two renewals of one token (oauthledger: token_used;
# a conflict while it records the first: HTTP 409): the first renewal is then being
# recorded here by another call, and is waited for rather than taken for a rejection.
_RENEWED_ELSEWHERE = frozenset({"token_used", "http_409"})
_RENEWAL_POLL = 0.05


def _renew(ledger: Ledger, sealer: Sealer, provider: ProviderState, state: ConnectionState,
           version: int, policy: FetchPolicy,
           meta: Mapping[str, Any]) -> tuple[ConnectionState | None, int]:
    """Renew the stored token with its session handle. Returns the connection after it
    (connected, with a token), or (None, version) when it cannot be used: the provider
    refused (the connection is then marked ProviderTokenRejected) or it was dropped
    meanwhile. Raises ProviderUnavailable when the provider is down.

    Two calls may renew at once: the provider accepts one. The refused one waits for the
    accepted one's ProviderTokenRenewed and uses it; the accepted one records its token
    even over a rejection recorded meanwhile, since it holds the only token the provider
    honours now — but never over a drop."""
    assert state.session_handle_sealed and state.token_sealed and state.secret_sealed
    sid = connection_stream(state.user, provider.name)
    try:
        creds = pc.renew_token(signer_for(ledger, sealer, provider), provider.access_token_url,
                               sealer.open(state.token_sealed),
                               sealer.open(state.secret_sealed),
                               sealer.open(state.session_handle_sealed), policy,
                               now=ledger.clock())
    except Unreachable as exc:
        raise ProviderUnavailable(f"{provider.name} could not be reached to renew the "
                                  f"token ({exc.reason}); try again later") from None
    except pc.ProviderRefused as exc:
        deadline = time.monotonic() + (policy.timeout if exc.problem in _RENEWED_ELSEWHERE
                                       else 0.0)
        while True:
            again, again_version = load_connection(ledger, state.user, state.provider)
            if again_version != version:
                return (again, again_version) if _usable(again) else (None, again_version)
            if time.monotonic() >= deadline:
                break
            time.sleep(_RENEWAL_POLL)
        _reject(ledger, state, version, exc.problem, meta)
        return None, version
    event = ev.ProviderTokenRenewed(
        provider=provider.name, user=state.user, token_sealed=sealer.seal(creds.token),
        secret_sealed=sealer.seal(creds.secret),
        session_handle_sealed=(sealer.seal(creds.session_handle) if creds.session_handle
                               else state.session_handle_sealed),
        expires_at=creds.expires_at,
        authorization_expires_at=creds.authorization_expires_at
        or state.authorization_expires_at)
    current, current_version = state, version
    for _ in range(5):
        try:
            new = ledger.commit([Change(sid, current_version, current, [event])], meta)[sid]
            return new, current_version + 1
        except ConcurrencyConflict:
            loaded, current_version = load_connection(ledger, state.user, provider.name)
            if loaded is None or loaded.status not in ("connected", "needs_reconnect"):
                return None, current_version  # dropped meanwhile: that stands
            current = loaded
    return load_connection(ledger, state.user, provider.name)


def _reject(ledger: Ledger, state: ConnectionState, version: int, problem: str,
            meta: Mapping[str, Any]) -> None:
    event = ev.ProviderTokenRejected(provider=state.provider, user=state.user,
                                     problem=problem)
    # The connection may have changed meanwhile (renewed, dropped): that state stands.
    with contextlib.suppress(ConcurrencyConflict):
        ledger.commit([Change(connection_stream(state.user, state.provider), version, state,
                              [event])], meta)


def _not_connected(provider: str, user: str, state: ConnectionState | None) -> NotConnected:
    if state is not None and state.status == "needs_reconnect":
        return NotConnected(f"{user}'s connection to {provider} needs reconnecting "
                            f"({state.problem}): the user must press Connect on "
                            f"{CONNECTIONS_PAGE}")
    return NotConnected(f"{user} is not connected to {provider}: the user must press "
                        f"Connect on {CONNECTIONS_PAGE}")


def call(ledger: Ledger, sealer: Sealer, provider_name: str, user: str, method: str,
         url: str, headers: Mapping[str, Any], body: bytes, policy: FetchPolicy,
         meta: Mapping[str, Any]) -> CallResult:
    """Send a request to the provider signed with ``user``'s stored token and return its
    answer. The token is renewed first when it has reached its expiry, and once more
    when the provider answers ``token_expired``; a refusal of the token that renewal
    cannot mend marks the connection as needing reconnection (ProviderTokenRejected) and
    is returned as the provider gave it.

    Raises NotFound (provider, user), ValidationError (method, URL, headers, body),
    NotConnected, ProviderUnavailable (nothing is stored then)."""
    provider = load_provider(ledger, provider_name)
    method = (method or "").upper()
    if method not in CALL_METHODS:
        raise ValidationError({"method": f"must be one of {', '.join(sorted(CALL_METHODS))}"})
    target = resolve_call_url(provider, url)
    clean = _clean_headers(headers)
    if len(body) > MAX_CALL_BODY:
        raise ValidationError({"body": f"must be at most {MAX_CALL_BODY} bytes"})
    _acting_user(ledger, user)
    state, version = load_connection(ledger, user, provider.name)
    if state is None or state.status != "connected" or not state.token_sealed:
        raise _not_connected(provider.name, user, state)
    renewed = False
    now = ledger.clock()
    if state.expires_at is not None and now >= state.expires_at - RENEW_MARGIN:
        if not state.renewable_at(now):
            _reject(ledger, state, version, "token_expired", meta)
            raise _not_connected(provider.name, user, dataclasses.replace(
                state, status="needs_reconnect", problem="token_expired"))
        got, version = _renew(ledger, sealer, provider, state, version, policy, meta)
        if got is None:
            raise _not_connected(provider.name, user,
                                 load_connection(ledger, user, provider.name)[0])
        state, renewed = got, True
    signer = signer_for(ledger, sealer, provider)
    # The answer is relayed, so it may be larger than a token response.
    policy = dataclasses.replace(policy, max_bytes=max(policy.max_bytes, SEND_MAX_BYTES))
    renewal_tried = False
    for _ in range(3):
        if not _usable(state) or not state.secret_sealed:
            raise _not_connected(provider.name, user, state)
        assert state.token_sealed is not None
        try:
            answer = pc.call(signer, method, target, clean, body,
                             sealer.open(state.token_sealed), sealer.open(state.secret_sealed),
                             policy)
        except ValueError as exc:
            raise ValidationError({"body": str(exc)}) from None
        except Unreachable as exc:
            raise ProviderUnavailable(f"{provider.name} could not be reached "
                                      f"({exc.reason}); nothing was stored") from None
        refused = pc.refusal(answer)
        if refused is None:
            return CallResult(answer, "connected", renewed)
        again, again_version = load_connection(ledger, user, provider.name)
        if again_version != version:
            # Another call renewed (or dropped) the token while this one was on its way:
            # the refusal was of the old token, so try with what stands now.
            state, version = again, again_version  # type: ignore[assignment]
            continue
        if (not renewal_tried and refused.problem == "token_expired"
                and state.renewable_at(ledger.clock())):
            renewal_tried = True
            got, version = _renew(ledger, sealer, provider, state, version, policy, meta)
            if got is not None:
                state, renewed = got, True
                continue
            return CallResult(answer, "needs_reconnect", renewed)
        _reject(ledger, state, version, refused.problem, meta)
        return CallResult(answer, "needs_reconnect", renewed)
    raise ProviderUnavailable(f"{provider.name} kept refusing the token while it was being "
                              "renewed; try again")

