"""The OAuth checks in order, and the protected-resource hot path.

Order (each failure raises :class:`OAuthProblem` with advice for a person): the consumer,
the signature method, the timestamp window, the token, the signature, then the nonce.
Only a verified request keeps its nonce, so unsigned traffic can neither fill Redis nor
burn a client's nonces (docs/design.md, "One round trip"). The dance endpoints load consumer
and token from the store themselves and call :meth:`Authenticator.check_signed` and then
:meth:`Authenticator.consume_nonce`; protected resources call
:meth:`Authenticator.authenticate_resource`, which records the nonce in the same Redis
round trip as the lookup and takes it back if the request is refused.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from oauthledger.events.readmodel import Lookup, ReadModel
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.state import (
    ConsumerState,
    TokenState,
    UserState,
    consumer_stream,
    fold_stream,
    token_stream,
    user_stream,
)
from oauthledger.events.store import EventStore
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import PLAINTEXT, SignedRequest
from oauthledger.services.oauth.signatures import (
    METHODS,
    RSA_METHODS,
    load_public_key,
    needs_secret,
    verify,
)

REQUESTOR_ID = "xoauth_requestor_id"
_CACHE_LIMIT = 4096
_TOKEN_CACHE_LIMIT = 65536


@dataclass(frozen=True)
class AuthContext:
    """Who a verified request acts for. ``user`` is the token's user, the consumer's
    two-legged user, or the impersonated ``xoauth_requestor_id``."""

    consumer: ConsumerState
    token: TokenState | None
    user: str | None
    two_legged: bool


@dataclass(frozen=True)
class _ConsumerMaterial:
    secret: str | None
    public_key: RSAPublicKey | None
    key_error: str | None


def _put(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    # Bounded: drop the oldest entry (dicts keep insertion order). Dict operations are
    # atomic under the GIL, so threads of one worker share the cache safely.
    if len(cache) >= limit:
        try:
            del cache[next(iter(cache))]
        except (StopIteration, KeyError, RuntimeError):
            cache.clear()
    cache[key] = value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def require_exchangeable(token: TokenState, now: float) -> None:
    """A request token the user approved, not yet exchanged and not expired; otherwise
    the access-token step's problem (docs/oauth.md, "The dance, step by step": token_used,
    token_expired, permission_denied, permission_unknown). Shared by the signature checks of the
    access-token endpoint and the exchange service."""
    status = token.status
    if status == "exchanged":
        raise OAuthProblem(
            "token_used",
            "this request token was already exchanged for an access token; "
            "a request token is good for one exchange",
        )
    if status == "burned":
        raise OAuthProblem(
            "token_rejected",
            "this request token was withdrawn after too many wrong oauth_verifier values; "
            "start the authorization again",
        )
    if status == "expired" or token.expires_at <= now:
        raise OAuthProblem(
            "token_expired",
            f"this request token expired at {_iso(token.expires_at)}; start the "
            "authorization again",
        )
    if status == "denied":
        raise OAuthProblem("permission_denied", "the user denied access to this consumer")
    if status == "pending":
        raise OAuthProblem(
            "permission_unknown",
            "the user has not yet approved this request token; send the user to the "
            "authorize page first",
        )


def require_verifier(sealer: Sealer, token: TokenState, sent: str | None) -> None:
    """RFC 5849 §2.3: the access-token request echoes the verifier of an approved 1.0a
    request token (constant-time compare). OAuth 1.0 tokens have none."""
    if token.verifier_sealed is None:
        return
    if not sent:
        raise OAuthProblem(
            "parameter_absent",
            "this token was approved under OAuth 1.0a; send the oauth_verifier the "
            "callback received (or the page showed)",
            oauth_parameters_absent="oauth_verifier",
        )
    expected = sealer.open(token.verifier_sealed)
    if not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        raise WrongVerifier(
            "token_rejected",
            "the oauth_verifier does not match the one issued for this token",
        )


class WrongVerifier(OAuthProblem):
    """The consumer sent a verifier, and it is not this token's: the exchange counts it
    (docs/oauth.md, "The dance, step by step")."""


def _nonce_used() -> OAuthProblem:
    """RFC 5849 §3.3: the problem for a replayed nonce (the dance endpoints and the hot
    path say the same)."""
    return OAuthProblem(
        "nonce_used",
        "this nonce was already used with this timestamp and token; send a fresh "
        "random nonce with every request (a retried request must be signed anew)",
    )


class Authenticator:
    """Verifies signed requests against consumers and tokens."""

    def __init__(
        self,
        *,
        read_model: ReadModel,
        store: EventStore,
        sealer: Sealer,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read_model = read_model
        self.store = store
        self.sealer = sealer
        self.settings = settings
        self.clock = clock
        # Opened secrets and parsed keys per (consumer key, stream version): an update of
        # the consumer bumps the version, so a stale entry is never used.
        self._consumers: dict[tuple[str, int], _ConsumerMaterial] = {}
        self._token_secrets: dict[tuple[str, str], str] = {}

    # -- material ---------------------------------------------------------------------

    def _consumer_material(self, consumer: ConsumerState) -> _ConsumerMaterial:
        key = (consumer.key, consumer.version)
        hit = self._consumers.get(key)
        if hit is not None:
            return hit
        secret = self.sealer.open(consumer.secret_sealed) if consumer.secret_sealed else None
        public_key = None
        key_error = None
        if consumer.public_key:
            try:
                public_key = load_public_key(consumer.public_key)
            except ValueError as exc:
                key_error = str(exc)
        hit = _ConsumerMaterial(secret, public_key, key_error)
        _put(self._consumers, key, hit, _CACHE_LIMIT)
        return hit

    def _token_secret(self, token: TokenState) -> str:
        # Keyed by the sealed text too: a token's secret never changes, but a cache must
        # not outlive what it caches.
        key = (token.token, token.secret_sealed)
        hit = self._token_secrets.get(key)
        if hit is None:
            hit = self.sealer.open(token.secret_sealed)
            _put(self._token_secrets, key, hit, _TOKEN_CACHE_LIMIT)
        return hit

    # -- the checks -------------------------------------------------------------------

    def check_signed(
        self,
        req: SignedRequest,
        consumer: ConsumerState | None,
        token: TokenState | None,
        *,
        https: bool,
        token_kind: str | None,
        renewal: bool = False,
    ) -> None:
        """Every check but loading and the nonce: consumer, signature method, timestamp,
        token, signature. ``token_kind`` is ``"request"`` for the access-token step,
        ``"access"`` for protected resources (and session-handle renewal, with
        ``renewal=True``: an expired access token is acceptable there), ``None`` for the
        request-token step (no token)."""
        now = self.clock()
        self._check_consumer(req, consumer)
        assert consumer is not None
        material = self._check_method(req, consumer, https)
        self._check_timestamp(req, now)
        token_secret = None
        if token_kind is not None:
            self._check_token(req, consumer, token, token_kind, now, renewal)
            if token is not None and req.token:
                token_secret = self._token_secret(token)
        if not verify(
            req,
            consumer_secret=material.secret,
            token_secret=token_secret,
            public_key=material.public_key,
        ):
            names = sorted({name for name, _ in req.params})
            raise OAuthProblem(
                "signature_invalid",
                f"the {req.signature_method} signature does not verify. The server computed "
                f"it over {req.method} {req.base_uri} with the parameters "
                f"{', '.join(names)}. If the client signed another URL (a proxy in front "
                "of the server: scheme, host, port or path prefix differ), set "
                "OAUTHLEDGER_BASE_URL or OAUTHLEDGER_TRUSTED_PROXIES; otherwise check the "
                + (
                    "consumer's private key against the public key registered here"
                    if req.signature_method in RSA_METHODS
                    else "consumer secret"
                )
                + (" and the token secret" if token_secret is not None else "")
                + ", and that query and form parameters are signed too.",
            )

    def _check_consumer(self, req: SignedRequest, consumer: ConsumerState | None) -> None:
        if consumer is None:
            raise OAuthProblem(
                "consumer_key_unknown",
                f"no consumer with key {req.consumer_key!r} is registered here; check the "
                "consumer key configured in the client (keys go stale when an application "
                "link is re-created on one side only)",
            )
        if consumer.removed:
            raise OAuthProblem(
                "consumer_key_rejected",
                f"the consumer {req.consumer_key!r} was removed by an administrator; "
                "register it again to restore access",
            )

    def _check_method(
        self, req: SignedRequest, consumer: ConsumerState, https: bool
    ) -> _ConsumerMaterial:
        method = req.signature_method
        allowed = ", ".join(consumer.signature_methods) or "none"
        if method not in METHODS or method not in consumer.signature_methods:
            raise OAuthProblem(
                "signature_method_rejected",
                f"this consumer is registered for {allowed}; the request was signed with "
                f"{method!r}. Sign with a registered method, or ask an administrator to "
                "allow this one for the consumer",
            )
        if (
            method == PLAINTEXT
            and not https
            and not (consumer.allow_plaintext_over_http or self.settings.allow_plaintext_over_http)
        ):
            raise OAuthProblem(
                "signature_method_rejected",
                "PLAINTEXT sends the secrets in the clear and is accepted only over https; "
                f"use https or another registered method ({allowed})",
            )
        material = self._consumer_material(consumer)
        if needs_secret(method) and material.secret is None:
            raise OAuthProblem(
                "signature_method_rejected",
                f"{method} needs a shared secret and none is registered for this consumer; "
                "sign with RSA or register a secret",
            )
        if method in RSA_METHODS and material.public_key is None:
            reason = material.key_error or "none is registered for this consumer"
            raise OAuthProblem(
                "signature_method_rejected",
                f"{method} needs the consumer's RSA public key: {reason}",
            )
        return material

    def _check_timestamp(self, req: SignedRequest, now: float, epoch: int | None = None
                         ) -> None:
        """The timestamp window (RFC 5849 §3.3), and with ``epoch`` (the second the nonce
        memory started) the epoch rule: a request signed before the memory started may
        have been used against the memory that was lost, so it is refused
        (docs/oauth.md, "Replays across restarts")."""
        raw = req.timestamp
        if raw is None:
            return  # RFC 5849 §3.1: PLAINTEXT may omit it
        ts = int(raw)
        window = self.settings.timestamp_window
        if abs(ts - now) <= window:
            if epoch is not None and ts < epoch:
                raise OAuthProblem(
                    "timestamp_refused",
                    f"oauth_timestamp {raw} was signed before this server's replay memory "
                    f"started at {_iso(epoch)} ({epoch}); sign the request again (with a "
                    "fresh nonce and the current time)",
                    oauth_acceptable_timestamps=f"{epoch}-{max(epoch, int(now + window))}",
                )
            return
        delta = ts - now
        hint = ""
        if ts > now * 100:
            hint = " It looks like milliseconds; send seconds."
        raise OAuthProblem(
            "timestamp_refused",
            f"oauth_timestamp {raw} is {abs(delta):.0f} s "
            f"{'ahead of' if delta > 0 else 'behind'} the server clock "
            f"({_iso(now)}, {int(now)} seconds since 1970-01-01 UTC); accepted are "
            f"timestamps within ±{window:.0f} s. Check the client's clock and that it sends "
            f"seconds since 1970-01-01 UTC, not local time.{hint}",
            oauth_acceptable_timestamps=f"{int(now - window)}-{int(now + window)}",
        )

    def _check_token(
        self,
        req: SignedRequest,
        consumer: ConsumerState,
        token: TokenState | None,
        kind: str,
        now: float,
        renewal: bool,
    ) -> None:
        if not req.token:
            if kind == "request":
                raise OAuthProblem(
                    "parameter_absent",
                    "the access-token request needs the request token in oauth_token",
                    oauth_parameters_absent="oauth_token",
                )
            return  # two-legged: decided by the caller
        if token is None or token.consumer_key != consumer.key:
            raise OAuthProblem(
                "token_rejected",
                f"the token {req.token!r} is not known for this consumer; obtain a new one",
            )
        if token.kind != kind:
            advice = (
                "this is a request token; exchange it at the access-token endpoint first"
                if token.kind == "request"
                else "this is an access token; the access-token step needs the request token"
            )
            raise OAuthProblem("token_rejected", advice)
        if kind == "request":
            require_exchangeable(token, now)
        else:
            self._check_access_token(token, now, renewal)

    @staticmethod
    def _check_access_token(token: TokenState, now: float, renewal: bool) -> None:
        status = token.status
        if status == "revoked":
            raise OAuthProblem(
                "token_revoked",
                "this access token was revoked (by the user, an administrator, or the "
                "removal of the consumer); ask the user to authorize again",
            )
        if status == "renewed":
            raise OAuthProblem(
                "token_used",
                "this access token was renewed; use the token issued by the renewal",
            )
        if renewal and status in ("active", "expired"):
            return
        # The status may still read "active" until the sweep runs: the second counts.
        if status == "expired" or token.expires_at <= now:
            raise OAuthProblem(
                "token_expired",
                f"this access token expired at {_iso(token.expires_at)}; renew it with the "
                "session handle or ask the user to authorize again",
            )
        if status != "active":
            raise OAuthProblem("token_rejected", f"this access token is {status}")

    def consume_nonce(self, req: SignedRequest) -> None:
        """RFC 5849 §3.3: record the nonce per (consumer, token, timestamp, nonce); a
        repeat is ``nonce_used``, and a timestamp older than the nonce memory is
        ``timestamp_refused`` (docs/oauth.md, "Replays across restarts"). Call only after
        the signature verified."""
        if req.nonce is None:
            return  # PLAINTEXT without nonce (RFC 5849 §3.1)
        now = self.clock()
        record = self.read_model.consume_nonce(
            req.consumer_key, req.token or "", req.timestamp or "", req.nonce,
            self.settings.timestamp_window, now=now,
        )
        try:
            self._check_timestamp(req, now, record.epoch)
        except OAuthProblem:
            if record.fresh:  # a refused request keeps no nonce (docs/design.md, "One round trip")
                self.read_model.release_nonce(
                    req.consumer_key, req.token or "", req.timestamp or "", req.nonce)
            raise
        if not record.fresh:
            raise _nonce_used()

    # -- the hot path -----------------------------------------------------------------

    def load(self, consumer_key: str, token: str | None
             ) -> tuple[ConsumerState | None, TokenState | None]:
        """Consumer and token from the store (strongly consistent; docs/design.md,
        "What Redis holds" and "Store fallback")."""
        cstream = consumer_stream(consumer_key)
        streams = [cstream]
        if token:
            streams.append(token_stream(token))
        recs = self.store.read_streams(streams)
        consumer = fold_stream(recs[cstream])
        tok = fold_stream(recs[token_stream(token)]) if token else None
        return (
            consumer if isinstance(consumer, ConsumerState) else None,
            tok if isinstance(tok, TokenState) else None,
        )

    def authenticate_resource(self, req: SignedRequest, *, https: bool) -> AuthContext:
        """Authenticate a call to a protected resource: one Redis round trip for the
        lookup and the nonce (the store when the projection is incomplete), every check,
        then the nonce's verdict."""
        # One Redis round trip: the lookup and the nonce's SET NX go in one pipeline.
        # Only a verified request may keep a nonce (docs/design.md, "One round trip"), so
        # that unsigned traffic can neither fill Redis nor burn a client's nonces. Writing it
        # first and deleting it again when the request is refused keeps both properties
        # (a refused request leaves nothing behind; burning a client's nonce would mean
        # guessing it before the client sends it) and halves the round trips of every
        # valid request, which is the hot path's budget. Refusals pay one more.
        nonce = (
            (req.timestamp or "", req.nonce, self.settings.timestamp_window)
            if req.nonce is not None else None
        )
        now = self.clock()
        lookup = self.read_model.lookup(req.consumer_key, req.token, nonce=nonce, now=now)
        try:
            ctx = self._authorize(req, lookup, https)
            # The nonce's verdict begins with the epoch rule: the memory cannot say
            # whether a request signed before it started was used already
            # (docs/oauth.md, "Replays across restarts").
            self._check_timestamp(req, now, lookup.nonce_epoch)
        except OAuthProblem:
            if lookup.nonce_fresh:
                self.read_model.release_nonce(
                    req.consumer_key, req.token or "", req.timestamp or "", req.nonce or "")
            raise
        if lookup.nonce_fresh is False:
            raise _nonce_used()
        return ctx

    def _user_is_active(self, name: str, lookup: Lookup) -> bool:
        """Whether ``name`` is an existing user whose account is not disabled, now.

        Read from the same namespace as the request's lookup; a user key is written
        before the response that registered or disabled the user goes out
        (docs/design.md, "Read your writes"), so a disabled account is refused on the very
        next request. This costs one more Redis round trip, paid only by two-legged
        requests (the three-legged path needs none: disabling a user revokes the user's
        tokens in the same commit). When the projection is incomplete the store answers
        (docs/design.md, "Store fallback")."""
        complete, user = (
            self.read_model.lookup_user(name, lookup.namespace)
            if lookup.complete else (False, None)
        )
        if not complete:
            stream = user_stream(name)
            state = fold_stream(self.store.read_streams([stream])[stream])
            user = state if isinstance(state, UserState) else None
        return user is not None and not user.disabled

    def _authorize(self, req: SignedRequest, lookup: Lookup, https: bool) -> AuthContext:
        """Every check of a resource request but the nonce."""
        consumer, token = lookup.consumer, lookup.token
        if not lookup.complete:
            # docs/design.md, "Store fallback": no checkpoint (flushed, rebuilding) ->
            # Redis may be missing entities; answer from the log rather than answer wrongly.
            consumer, token = self.load(req.consumer_key, req.token)
        self.check_signed(req, consumer, token, https=https, token_kind="access")
        assert consumer is not None
        requestor = req.other_params.get(REQUESTOR_ID)
        if req.token:
            assert token is not None
            if not consumer.three_legged:
                raise OAuthProblem(
                    "permission_denied",
                    "three-legged access is disabled for this consumer",
                )
            if requestor and requestor != token.user:
                raise OAuthProblem(
                    "parameter_rejected",
                    f"{REQUESTOR_ID} names another user than the access token's; leave it "
                    "out of three-legged calls",
                    oauth_parameters_rejected=REQUESTOR_ID,
                )
            user, two_legged = token.user, False
        elif requestor:
            if not consumer.allow_impersonation:
                raise OAuthProblem(
                    "parameter_rejected",
                    f"user impersonation ({REQUESTOR_ID}) is not enabled for this consumer",
                    oauth_parameters_rejected=REQUESTOR_ID,
                )
            # docs/oauth.md, "Two-legged requests and impersonation": only an existing,
            # enabled user may be named. Unknown and disabled names get the same answer,
            # so a consumer cannot tell which accounts exist.
            if not self._user_is_active(requestor, lookup):
                raise OAuthProblem(
                    "parameter_rejected",
                    f"{REQUESTOR_ID} does not name an active user of this installation "
                    "(no such user, or the account is disabled); name an existing user "
                    "whose account is enabled",
                    oauth_parameters_rejected=REQUESTOR_ID,
                )
            user, two_legged = requestor, True
        elif consumer.two_legged_user:
            # The same rule for the configured user: it was checked when it was set, but
            # it may have been disabled since (docs/oauth.md, "Two-legged requests and
            # impersonation").
            if not self._user_is_active(consumer.two_legged_user, lookup):
                raise OAuthProblem(
                    "permission_denied",
                    "the two-legged user configured for this consumer is not an active user "
                    "of this installation (no such user, or the account is disabled); ask "
                    "an administrator to configure an active user for the consumer",
                )
            user, two_legged = consumer.two_legged_user, True
        else:
            raise OAuthProblem(
                "permission_denied",
                "two-legged access is not enabled for this consumer"
                + (
                    f"; name the user in {REQUESTOR_ID}"
                    if consumer.allow_impersonation
                    else "; obtain an access token through the authorization dance"
                ),
            )
        return AuthContext(consumer=consumer, token=token, user=user, two_legged=two_legged)
