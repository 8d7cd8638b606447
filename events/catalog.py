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


@dataclass(frozen=True)
class ServiceProviderRemoved(Event):
    """A third-party service provider was removed."""

    name: str


@dataclass(frozen=True)
class ResourceServerCredentialCreated(Event):
    """A resource server may call the verify API with this id and secret."""

    server_id: str
    secret_sealed: str
    description: str = ""


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
        ServiceProviderRemoved,
        ResourceServerCredentialCreated,
        ResourceServerCredentialRemoved,
    )
}
