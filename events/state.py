"""Folding streams into entity state.

Stream names (one place): ``consumer-<key>``, ``token-<token>`` (request and access
tokens alike), ``user-<name>``, ``installation`` (this application's consumer identity),
``provider-<name>`` (third-party service providers), ``resource-server-<id>``,
``connection-<user>/<provider>`` (a user's token at a service provider; user names
never hold ``/``).

Each ``fold`` is a pure function of the previous state and one recorded event, so the
front end (after its own append), the projector and the audit replay all compute the
same state from the same events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oauthledger.events import catalog as ev
from oauthledger.events.store import RecordedEvent
from oauthledger.events.token_lifecycle import BY_EVENT, Transition


def consumer_stream(key: str) -> str:
    """Stream id of a consumer."""
    return f"consumer-{key}"


def token_stream(token: str) -> str:
    """Stream id of a request or access token."""
    return f"token-{token}"


def user_stream(name: str) -> str:
    """Stream id of a user."""
    return f"user-{name}"


def provider_stream(name: str) -> str:
    """Stream id of a third-party service provider."""
    return f"provider-{name}"


def connection_stream(user: str, provider: str) -> str:
    """Stream id of one user's connection to one service provider. User names cannot
    hold ``/`` (services.users), so the split is unambiguous."""
    return f"connection-{user}/{provider}"


CONNECTION_PREFIX = "connection-"


def resource_server_stream(server_id: str) -> str:
    """Stream id of a resource-server credential."""
    return f"resource-server-{server_id}"


INSTALLATION_STREAM = "installation"


@dataclass(frozen=True)
class ConsumerState:
    """A consumer as it stands. A ``removed`` consumer's key may be registered again,
    which starts a new registration (``registered_at``)."""

    key: str
    name: str
    description: str
    callback_url: str | None
    public_key: str | None
    secret_sealed: str | None
    signature_methods: tuple[str, ...]
    three_legged: bool
    two_legged_user: str | None
    allow_impersonation: bool
    allow_oauth10: bool
    allow_plaintext_over_http: bool
    removed: bool = False
    # When this registration was recorded. Removing a consumer and registering its key
    # again makes a new consumer: grants of the earlier registration never renew under
    # the new one (docs/oauth.md, "Renewal").
    registered_at: float = 0.0
    version: int = 0


# Statuses, and which event moves a token from one to the next: events/token_lifecycle.py.
@dataclass(frozen=True)
class TokenState:
    """A request or access token as it stands."""

    token: str
    kind: str  # "request" or "access"
    consumer_key: str
    secret_sealed: str
    status: str
    expires_at: float
    issued_at: float
    user: str | None = None
    callback: str | None = None
    verifier_sealed: str | None = None
    session_handle_hash: str | None = None
    authorization_expires_at: float | None = None
    request_token: str | None = None
    renewed_from: str | None = None
    successor: str | None = None  # the access token this one was exchanged/renewed for
    verifier_failures: int = 0  # wrong oauth_verifier values sent for this request token
    version: int = 0

    def usable_at(self, now: float) -> bool:
        """An access token is usable while active and before its expiry second."""
        return self.kind == "access" and self.status == "active" and now < self.expires_at

    def renewable_at(self, now: float) -> bool:
        """Its session handle can still renew it: an access token neither revoked nor
        renewed (active, or expired), within its authorization lifetime. Needs the
        state as the store folds it (the read model leaves out
        ``authorization_expires_at``)."""
        return (self.kind == "access" and self.status in ("active", "expired")
                and self.authorization_expires_at is not None
                and now < self.authorization_expires_at)

    def revocable_at(self, now: float) -> bool:
        """Revoking it takes something away: the token works now, or its grant can
        still be renewed (docs/oauth.md, "Renewal")."""
        return self.usable_at(now) or self.renewable_at(now)


@dataclass(frozen=True)
class UserState:
    """A user account."""

    name: str
    display_name: str
    password_hash: str | None
    admin: bool
    disabled: bool = False
    version: int = 0


@dataclass(frozen=True)
class InstallationState:
    """This application's own consumer identity (Consumer Info tab)."""

    key: str
    name: str
    description: str
    public_key: str
    private_key_sealed: str
    version: int = 0


@dataclass(frozen=True)
class ProviderState:
    """A third-party service provider this application consumes."""

    name: str
    description: str
    consumer_key: str
    secret_sealed: str | None
    request_token_url: str
    authorize_url: str
    access_token_url: str
    base_url: str | None = None
    removed: bool = False
    version: int = 0


@dataclass(frozen=True)
class ConnectionState:
    """One user's connection to one service provider (the consumer side).

    ``status``: ``none`` (never connected, or only pending), ``connected``,
    ``needs_reconnect`` (the provider refused the token: ``problem`` says how) or
    ``dropped``. A pending request token (``pending_*``) lives beside the connection,
    so starting to connect again does not lose a working token."""

    provider: str
    user: str
    status: str = "none"
    token_sealed: str | None = None
    secret_sealed: str | None = None
    session_handle_sealed: str | None = None
    expires_at: float | None = None
    authorization_expires_at: float | None = None
    connected_at: float | None = None
    renewed_at: float | None = None
    problem: str | None = None
    pending_token: str | None = None
    pending_secret_sealed: str | None = None
    pending_session_hash: str | None = None
    pending_expires_at: float | None = None
    version: int = 0

    def expired_at(self, now: float) -> bool:
        """The stored token has reached the expiry the provider gave it."""
        return self.expires_at is not None and now >= self.expires_at

    def renewable_at(self, now: float) -> bool:
        """A session handle exists and the authorization has not run out."""
        return (self.session_handle_sealed is not None
                and (self.authorization_expires_at is None
                     or now < self.authorization_expires_at))


@dataclass(frozen=True)
class ResourceServerState:
    """A credential with which another resource server may call the verify API (and,
    with ``act_for_users``, call service providers on behalf of a user it names)."""

    server_id: str
    secret_sealed: str
    description: str
    act_for_users: bool = False
    removed: bool = False
    version: int = 0


State = (
    ConsumerState | TokenState | UserState | InstallationState | ProviderState
    | ResourceServerState | ConnectionState
)
"""The state of any stream."""


def fold_token(transition: Transition, state: State | None, event: ev.Event,
               rec: RecordedEvent) -> TokenState:
    """Apply one token event as its lifecycle transition says: an opening event builds
    the token (issued at the record's commit time), any other sets the status and the
    transition's fields on the token's state before it (TypeError if there is none)."""
    values = {name: getattr(event, src) for name, src in transition.sets}
    if transition.opens:
        return TokenState(kind=transition.kind, status=transition.status,
                          issued_at=rec.time, version=rec.stream_version, **values)
    if not isinstance(state, TokenState):
        raise TypeError(f"{rec.type} at position {rec.position} follows no token state")
    return dataclasses.replace(state, status=transition.status, version=rec.stream_version,
                               **values)


_Updated = TypeVar("_Updated", ConsumerState, UserState, ProviderState, ResourceServerState,
                   ConnectionState)

_NO_TOKEN: dict[str, Any] = {
    "token_sealed": None, "secret_sealed": None, "session_handle_sealed": None,
    "expires_at": None, "authorization_expires_at": None,
}
_NO_PENDING: dict[str, Any] = {
    "pending_token": None, "pending_secret_sealed": None, "pending_session_hash": None,
    "pending_expires_at": None,
}


def fold_connection(state: State | None, e: ev.Event, rec: RecordedEvent) -> ConnectionState:
    """Apply one consumer-side event to a user's connection to a provider."""
    v = rec.stream_version
    if isinstance(e, ev.ProviderTokenRequested):
        prior = state if isinstance(state, ConnectionState) else ConnectionState(
            provider=e.provider, user=e.user)
        return dataclasses.replace(
            prior, pending_token=e.request_token, pending_secret_sealed=e.secret_sealed,
            pending_session_hash=e.session_hash, pending_expires_at=e.expires_at, version=v)
    prior = _prior(state, rec, ConnectionState)
    match e:
        case ev.ProviderTokenRequestEnded():
            return dataclasses.replace(prior, **_NO_PENDING, version=v)
        case ev.ProviderTokenObtained():
            return dataclasses.replace(
                prior, **_NO_PENDING, status="connected", token_sealed=e.token_sealed,
                secret_sealed=e.secret_sealed, session_handle_sealed=e.session_handle_sealed,
                expires_at=e.expires_at, authorization_expires_at=e.authorization_expires_at,
                connected_at=rec.time, renewed_at=None, problem=None, version=v)
        case ev.ProviderTokenRenewed():
            return dataclasses.replace(
                prior, status="connected", token_sealed=e.token_sealed,
                secret_sealed=e.secret_sealed, session_handle_sealed=e.session_handle_sealed,
                expires_at=e.expires_at, authorization_expires_at=e.authorization_expires_at,
                renewed_at=rec.time, problem=None, version=v)
        case ev.ProviderTokenRejected():
            return dataclasses.replace(prior, **_NO_TOKEN, status="needs_reconnect",
                                       problem=e.problem, version=v)
        case ev.ProviderTokenDropped():
            return dataclasses.replace(prior, **_NO_TOKEN, **_NO_PENDING, status="dropped",
                                       problem=None, version=v)
    raise ValueError(f"no connection fold for {rec.type}")  # pragma: no cover


_CONNECTION_EVENTS = (ev.ProviderTokenRequested, ev.ProviderTokenRequestEnded,
                      ev.ProviderTokenObtained, ev.ProviderTokenRenewed,
                      ev.ProviderTokenRejected, ev.ProviderTokenDropped)


def _prior(state: State | None, rec: RecordedEvent, cls: type[_Updated]) -> _Updated:
    """The state an updating event applies to: a ``cls`` (a stream holds one entity
    kind, its name says which); TypeError otherwise, as ``dataclasses.replace`` raises
    on None."""
    if not isinstance(state, cls):
        raise TypeError(f"{rec.type} at position {rec.position} follows no "
                        f"{cls.__name__} (its stream's state: {type(state).__name__})")
    return state


def fold(state: State | None, rec: RecordedEvent) -> State:
    """Apply one recorded event to the state of its stream (None before the first)."""
    e = rec.event
    v = rec.stream_version
    transition = BY_EVENT.get(type(e))
    if transition is not None:
        return fold_token(transition, state, e, rec)
    if isinstance(e, _CONNECTION_EVENTS):
        return fold_connection(state, e, rec)
    match e:
        case ev.ConsumerRegistered():
            fields = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
            return ConsumerState(**fields, registered_at=rec.time, version=v)
        case ev.ConsumerUpdated():
            allowed = {f.name for f in dataclasses.fields(ConsumerState)} - {
                "key", "removed", "registered_at", "version",
            }
            changes: dict[str, Any] = {k: (tuple(x) if isinstance(x, list) else x)
                                       for k, x in e.changes.items() if k in allowed}
            return dataclasses.replace(_prior(state, rec, ConsumerState), **changes, version=v)
        case ev.ConsumerRemoved():
            return dataclasses.replace(_prior(state, rec, ConsumerState), removed=True,
                                       version=v)
        case ev.UserRegistered():
            return UserState(
                name=e.name, display_name=e.display_name, password_hash=e.password_hash,
                admin=e.admin, version=v,
            )
        case ev.UserPasswordChanged():
            return dataclasses.replace(_prior(state, rec, UserState),
                                       password_hash=e.password_hash, version=v)
        case ev.UserDisabled():
            return dataclasses.replace(_prior(state, rec, UserState), disabled=True, version=v)
        case ev.ConsumerInfoChanged():
            return InstallationState(
                key=e.key, name=e.name, description=e.description, public_key=e.public_key,
                private_key_sealed=e.private_key_sealed, version=v,
            )
        case ev.ServiceProviderAdded():
            fields = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
            return ProviderState(**fields, version=v)
        case ev.ServiceProviderUpdated():
            allowed = {f.name for f in dataclasses.fields(ProviderState)} - {
                "name", "removed", "version"}
            provider_changes = {k: x for k, x in e.changes.items() if k in allowed}
            return dataclasses.replace(_prior(state, rec, ProviderState), **provider_changes,
                                       version=v)
        case ev.ServiceProviderRemoved():
            return dataclasses.replace(_prior(state, rec, ProviderState), removed=True,
                                       version=v)
        case ev.ResourceServerCredentialCreated():
            return ResourceServerState(
                server_id=e.server_id, secret_sealed=e.secret_sealed,
                description=e.description, act_for_users=e.act_for_users, version=v,
            )
        case ev.ResourceServerCredentialRemoved():
            return dataclasses.replace(_prior(state, rec, ResourceServerState), removed=True,
                                       version=v)
    raise ValueError(f"no fold for {rec.type}")  # pragma: no cover - catalog is closed


def fold_stream(records: Iterable[RecordedEvent], state: State | None = None) -> State | None:
    """Fold a stream's records (in version order) into its current state (``state``,
    None by default, when there are none)."""
    for rec in records:
        state = fold(state, rec)
    return state


@dataclass
class Replay:
    """State of every stream, built by folding the log in position order.

    Used by rebuilds and by the audit commands (which stop at a point in time)."""

    states: dict[str, State] = field(default_factory=dict)
    position: int = 0

    def apply(self, rec: RecordedEvent) -> State:
        """Fold one record into its stream's state and return the new state."""
        new = fold(self.states.get(rec.stream_id), rec)
        self.states[rec.stream_id] = new
        self.position = rec.position
        return new
