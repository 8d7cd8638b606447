"""The catalog of event types.

Events are frozen dataclasses named in the past tense. Every field is JSON-friendly
(str, int, float, bool, None, tuples of those). Fields that hold a secret end in
``_sealed`` and carry the output of :meth:`oauthledger.events.sealing.Sealer.seal`,
never plaintext.

Each type has a ``SCHEMA_VERSION``; stored rows written under an older version are
upcast on read by :mod:`oauthledger.events.upcasting`, never rewritten
(docs/design.md, "Append only").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of all events. Subclasses set ``SCHEMA_VERSION`` when their shape changes."""

    SCHEMA_VERSION: ClassVar[int] = 1

    @property
    def type_name(self) -> str:
        """The name stored in the ``type`` column."""
        return type(self).__name__

    def to_data(self) -> dict[str, Any]:
        """The JSON object stored in the ``data`` column."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# --- consumers -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerRegistered(Event):
    """An admin registered a consumer. Schema 2 replaced the single Atlassian-style
    ``signature_method`` with the list ``signature_methods`` (see upcasting.py)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    key: str
    name: str
    description: str = ""
    callback_url: str | None = None
    public_key: str | None = None  # PEM public key or self-signed X.509 certificate
    secret_sealed: str | None = None  # shared secret for HMAC-* and PLAINTEXT
    signature_methods: tuple[str, ...] = ("RSA-SHA1",)
    three_legged: bool = True
    two_legged_user: str | None = None
    allow_impersonation: bool = False
    allow_oauth10: bool = False
    allow_plaintext_over_http: bool = False


@dataclass(frozen=True)
class ConsumerUpdated(Event):
    """Some fields of a consumer changed; ``changes`` maps field name to new value.
    The key itself never changes."""

    key: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class ConsumerRemoved(Event):
    """A consumer was removed; every token it holds is revoked with it."""

    key: str


# --- the dance ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestTokenIssued(Event):
    """A consumer obtained a request token (temporary credentials, RFC 5849 §2.1)."""

    token: str
    consumer_key: str
    secret_sealed: str
    callback: str | None  # None: OAuth 1.0 (no callback); "oob": show the verifier
    expires_at: float


@dataclass(frozen=True)
class TokenApproved(Event):
    """A user approved a request token; the verifier is what the consumer must echo."""

    token: str
    user: str
    verifier_sealed: str | None  # None for OAuth 1.0 tokens, which have no verifier


@dataclass(frozen=True)
class TokenDenied(Event):
    """A user denied a request token."""

    token: str
    user: str


@dataclass(frozen=True)
class RequestTokenExchanged(Event):
    """An approved request token was traded for an access token (single use)."""

    token: str
    access_token: str


@dataclass(frozen=True)
class RequestTokenExpired(Event):
    """A request token passed its lifetime unused."""

    token: str


@dataclass(frozen=True)
class VerifierRejected(Event):
    """The consumer sent a wrong ``oauth_verifier`` for an approved request token;
    ``attempts`` counts the wrong verifiers so far, this one included."""

    token: str
    attempts: int


@dataclass(frozen=True)
class RequestTokenBurned(Event):
    """The request token can no longer be exchanged (too many wrong verifiers): the
    consumer must start the authorization again."""

    token: str
    reason: str


@dataclass(frozen=True)
class AccessTokenIssued(Event):
    """A consumer obtained an access token for a user."""

    token: str
    consumer_key: str
    user: str
    secret_sealed: str
    session_handle_hash: str  # SHA-256 of the handle: only ever compared, never shown
    expires_at: float
    authorization_expires_at: float
    request_token: str | None = None
    renewed_from: str | None = None


@dataclass(frozen=True)
class AccessTokenRenewed(Event):
    """The token was retired in favour of ``new_token`` (session-handle renewal)."""

    token: str
    new_token: str


@dataclass(frozen=True)
class AccessTokenRevoked(Event):
    """A user, an admin, the disabling of the user or the removal of the consumer
    revoked the grant: the token stops working and its session handle can no longer
    renew it, whether or not the token had expired (docs/oauth.md, "Renewal")."""

    token: str
    by: str
    reason: str = "revoked"


@dataclass(frozen=True)
class AccessTokenExpired(Event):
    """The token passed ``expires_at``; appended once by the expiry sweep."""

    token: str


# --- users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRegistered(Event):
    """A user account was created. ``password_hash`` is an argon2/scrypt hash."""

    name: str
    display_name: str
    password_hash: str | None
    admin: bool = False


@dataclass(frozen=True)
class UserPasswordChanged(Event):
    """A user's password hash changed."""

    name: str
    password_hash: str


@dataclass(frozen=True)
class UserDisabled(Event):
    """A user can no longer sign in or use tokens."""

    name: str


# --- this installation --------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerInfoChanged(Event):
    """This installation's own consumer identity (the Consumer Info tab) changed."""

    key: str
    name: str
    description: str
    public_key: str
    private_key_sealed: str


@dataclass(frozen=True)
class ServiceProviderAdded(Event):
    """A third-party service provider this installation consumes was added."""

    name: str
    description: str
    consumer_key: str
    secret_sealed: str | None  # None: sign with this installation's RSA key
    request_token_url: str
    authorize_url: str
    access_token_url: str
    # The application's base URL when it was added by base URL (an application link):
    # its endpoints are then the Atlassian paths under it.
    base_url: str | None = None


@dataclass(frozen=True)
class ServiceProviderUpdated(Event):
    """Some fields of a service provider changed; ``changes`` maps field name to new
    value (a new shared secret arrives sealed, as ``secret_sealed``). The name stays, and
    so do the users' connections to it."""

    name: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class ServiceProviderRemoved(Event):
    """A third-party service provider was removed; every user's stored token for it is
    dropped with it (ProviderTokenDropped on each connection)."""

    name: str


# --- the consumer side: this installation's users connected to service providers ------


@dataclass(frozen=True)
class ProviderTokenRequested(Event):
    """A user started connecting to a service provider: the provider issued this request
    token, which only the browser session that asked may bring back (``session_hash``,
    SHA-256 of the session id) before ``expires_at``."""

    provider: str
    user: str
    request_token: str
    secret_sealed: str
    session_hash: str
    expires_at: float


@dataclass(frozen=True)
class ProviderTokenRequestEnded(Event):
    """A pending request token will not be exchanged: the user denied access at the
    provider, it expired, or the provider refused the exchange (``reason`` says which).
    A connection the user had before stays as it was."""

    provider: str
    user: str
    request_token: str
    reason: str


@dataclass(frozen=True)
class ProviderTokenObtained(Event):
    """The provider exchanged the approved request token for an access token; token,
    token secret and session handle are kept sealed. ``expires_at`` and
    ``authorization_expires_at`` are None when the provider did not say."""

    provider: str
    user: str
    token_sealed: str
    secret_sealed: str
    session_handle_sealed: str | None
    expires_at: float | None
    authorization_expires_at: float | None
    request_token: str = ""


@dataclass(frozen=True)
class ProviderTokenRenewed(Event):
    """The stored access token was renewed with its session handle (the provider issued
    a new token and retired the old one)."""

    provider: str
    user: str
    token_sealed: str
    secret_sealed: str
    session_handle_sealed: str | None
    expires_at: float | None
    authorization_expires_at: float | None


@dataclass(frozen=True)
class ProviderTokenRejected(Event):
    """The provider refused the stored token (``problem``: token_expired, token_revoked,
    token_rejected, permission_unknown, ...) and it could not be renewed: the user must
    connect again."""

    provider: str
    user: str
    problem: str


@dataclass(frozen=True)
class ProviderTokenDropped(Event):
    """The stored token was forgotten: the user disconnected, an admin dropped it, or
    the provider or the user was removed (``reason``; ``by`` names who)."""

    provider: str
    user: str
    by: str
    reason: str


@dataclass(frozen=True)
class ResourceServerCredentialCreated(Event):
    """A resource server may call the verify API with this id and secret; with
    ``act_for_users`` it may also call service providers on behalf of a user it names."""

    server_id: str
    secret_sealed: str
    description: str = ""
    act_for_users: bool = False


@dataclass(frozen=True)
class ResourceServerCredentialRemoved(Event):
    """A resource server credential was withdrawn."""

    server_id: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        ConsumerRegistered,
        ConsumerUpdated,
        ConsumerRemoved,
        RequestTokenIssued,
        TokenApproved,
        TokenDenied,
        RequestTokenExchanged,
        RequestTokenExpired,
        VerifierRejected,
        RequestTokenBurned,
        AccessTokenIssued,
        AccessTokenRenewed,
        AccessTokenRevoked,
        AccessTokenExpired,
        UserRegistered,
        UserPasswordChanged,
        UserDisabled,
        ConsumerInfoChanged,
        ServiceProviderAdded,
        ServiceProviderUpdated,
        ServiceProviderRemoved,
        ProviderTokenRequested,
        ProviderTokenRequestEnded,
        ProviderTokenObtained,
        ProviderTokenRenewed,
        ProviderTokenRejected,
        ProviderTokenDropped,
        ResourceServerCredentialCreated,
        ResourceServerCredentialRemoved,
    )
}
