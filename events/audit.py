"""Audit queries answered from the event log alone (never from Redis).

- :func:`state_at`: consumers and tokens as they stood at a moment — which access tokens
  were valid then, for whom.
- :func:`token_history`: the whole life of a token and the tokens it is linked to (its
  request token, the access token it was exchanged for, renewals), event by event, with
  the actor and request id recorded in each event's metadata.
- :func:`user_grants`: every grant a user made (approved or denied a request token) and
  how it ended.
- :func:`user_connections`: the consumer side — a user's connections to service
  providers (started, connected, renewed, rejected, dropped), each step with its time
  and who did it.
- :func:`provider_history`: a service provider's own history (added, edited, removed)
  and every user's connection events with it.

Sealed fields (tokens, token secrets, session handles, shared secrets) are never part of
an answer, sealed or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from oauthledger.events.queries import streams_with
from oauthledger.events.state import (
    ConnectionState,
    ConsumerState,
    State,
    TokenState,
    connection_stream,
    fold,
    fold_stream,
    provider_stream,
    token_stream,
)
from oauthledger.events.store import EventStore, RecordedEvent
from oauthledger.events.token_lifecycle import TRANSITIONS, Transition

TOKEN_PREFIX = "token-"


class AuditError(ValueError):
    """The question cannot be answered as asked (unknown token, bad timestamp)."""


def parse_timestamp(raw: str) -> float:
    """POSIX seconds from an epoch number or an ISO 8601 time (naive means UTC)."""
    text = raw.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise AuditError(
            f"{raw!r} is not a time: use ISO 8601 (2025-06-01T12:00:00Z) or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC text of a POSIX time."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


# -- the fold of state_at ------------------------------------------------------------------


class FastReplay:
    """Folds the log in position order into the full state of every stream (all fields,
    for :func:`state_at`), like :class:`oauthledger.events.state.Replay`, but several times faster:
    the token events (nearly all of a large log) update a plain dict per stream instead
    of building an event object and a new frozen state per event, and the frozen states
    are built once at the end. The token events' fast paths are built from the token
    lifecycle table (:mod:`oauthledger.events.token_lifecycle`).
    Every other event, and any row that needs upcasting, goes through
    :func:`oauthledger.events.state.fold` itself.
    ``tests/unit/test_projection_replay.py`` and ``tests/unit/test_token_lifecycle.py``
    check the result equals ``Replay``'s for every event type."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any] | State] = {}
        self.position = 0
        self.count = 0
        self._meta = ""
        self._time = 0.0

    def record_time(self, rec: RecordedEvent) -> float:
        """The record's commit time; events appended together share their metadata
        text, so it is parsed once per append."""
        if rec.metadata != self._meta:
            self._time = rec.time
            self._meta = rec.metadata
        return self._time

    def apply(self, rec: RecordedEvent) -> None:
        """Fold one record."""
        sid = rec.stream_id
        state = self.states.get(sid)
        self.position = rec.position
        self.count += 1
        handler = _FAST_REPLAY.get(rec.type)
        if (handler is not None and rec.schema_version == _FAST_REPLAY_SCHEMA[rec.type]
                and (state is None or type(state) is dict)):
            try:
                data = orjson.loads(rec.data)
                new = handler(self, state, data, rec)
            except (ValueError, KeyError, TypeError):
                new = None  # let the reference fold raise its precise error
            if new is not None:
                self.states[sid] = new
                return
        if isinstance(state, dict):
            state = TokenState(**state)
        self.states[sid] = fold(state, rec)

    def final_states(self) -> list[State]:
        """Every stream's state as the frozen state classes."""
        return [TokenState(**s) if isinstance(s, dict) else s for s in self.states.values()]


# A fast-path handler: (replay, the stream's state dict or None, the row's data, the
# record) -> the new state dict, or None to leave the row to the reference fold.
Handler = Callable[["FastReplay", dict[str, Any] | None, dict[str, Any], RecordedEvent],
                   dict[str, Any] | None]


def _handler(transition: Transition) -> Handler:
    """The fast path of one token event type, from its lifecycle transition: the same
    fields :func:`oauthledger.events.state.fold_token` sets, read from the row's data."""
    defaults = transition.event_defaults()
    required = tuple((name, src) for name, src in transition.sets if src not in defaults)
    optional = tuple((name, src, defaults[src]) for name, src in transition.sets
                     if src in defaults)
    kind, status = transition.kind, transition.status

    def opening(r: FastReplay, state: dict[str, Any] | None, d: dict[str, Any],
                rec: RecordedEvent) -> dict[str, Any]:
        new = {"kind": kind, "status": status, "issued_at": r.record_time(rec),
               "version": rec.stream_version}
        for name, src in required:
            new[name] = d[src]
        for name, src, default in optional:
            new[name] = d.get(src, default)
        return new

    def updating(r: FastReplay, state: dict[str, Any] | None, d: dict[str, Any],
                 rec: RecordedEvent) -> dict[str, Any] | None:
        if state is None:
            return None  # the reference fold reports the broken stream
        # A row missing a field raises KeyError here and the reference fold then raises
        # its precise error, so a half-updated dict is never kept.
        for name, src in required:
            state[name] = d[src]
        for name, src, default in optional:
            state[name] = d.get(src, default)
        state["status"] = status
        state["version"] = rec.stream_version
        return state

    return opening if transition.opens else updating


_FAST_REPLAY: dict[str, Handler] = {t.name: _handler(t) for t in TRANSITIONS}
_FAST_REPLAY_SCHEMA = {t.name: t.event.SCHEMA_VERSION for t in TRANSITIONS}


# -- state at a moment ----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAt:
    """An access token as it stood at the audited moment."""

    token: str
    consumer_key: str
    user: str | None
    status: str  # the recorded status then
    valid: bool  # usable at that moment (active and not past expires_at)
    issued_at: str | None
    expires_at: str | None


@dataclass(frozen=True)
class ConsumerAt:
    """A consumer as it stood at the audited moment."""

    key: str
    name: str
    removed: bool


@dataclass(frozen=True)
class StateAt:
    """Everything :func:`state_at` reports."""

    at: str
    position: int  # last event committed at or before the moment
    consumers: list[ConsumerAt]
    tokens: list[TokenAt]  # access tokens issued by then (valid or not)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)


def state_at(store: EventStore, at: float) -> StateAt:
    """Replay the events committed at or before ``at`` (by their recorded time)."""
    replay = FastReplay()
    for rec in store.read_all(0, batch_size=20000):
        # Commit order is position order, but clocks of several front ends may disagree
        # slightly: filter on each event's own time rather than stopping at the first later.
        if replay.record_time(rec) <= at:
            replay.apply(rec)
    consumers: list[ConsumerAt] = []
    tokens: list[TokenAt] = []
    for state in replay.final_states():
        if isinstance(state, ConsumerState):
            consumers.append(ConsumerAt(state.key, state.name, state.removed))
        elif isinstance(state, TokenState) and state.kind == "access":
            tokens.append(TokenAt(
                token=state.token, consumer_key=state.consumer_key, user=state.user,
                status=state.status, valid=state.usable_at(at), issued_at=iso(state.issued_at),
                expires_at=iso(state.expires_at),
            ))
    consumers.sort(key=lambda c: c.key)
    tokens.sort(key=lambda t: (t.issued_at or "", t.token))
    return StateAt(iso(at) or "", replay.position, consumers, tokens)


# -- token history ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One event in a token's history."""

    position: int
    time: str | None
    token: str
    type: str
    actor: str | None
    request_id: str | None
    details: dict[str, Any]


# Event fields worth showing per type (secrets, sealed or not, are never shown).
_DETAILS = {
    "RequestTokenIssued": ("consumer_key", "callback", "expires_at"),
    "TokenApproved": ("user",),
    "TokenDenied": ("user",),
    "RequestTokenExchanged": ("access_token",),
    "RequestTokenExpired": (),
    "VerifierRejected": ("attempts",),
    "RequestTokenBurned": ("reason",),
    "AccessTokenIssued": ("consumer_key", "user", "expires_at", "request_token",
                          "renewed_from"),
    "AccessTokenRenewed": ("new_token",),
    "AccessTokenRevoked": ("by", "reason"),
    "AccessTokenExpired": (),
}


def _entry(rec: RecordedEvent) -> Entry:
    event = rec.event
    meta = rec.meta
    details = {}
    for name in _DETAILS.get(rec.type, ()):
        value = getattr(event, name, None)
        if name == "expires_at" and value is not None:
            value = iso(value)
        if value is not None:
            details[name] = value
    return Entry(
        position=rec.position, time=iso(rec.time), token=rec.stream_id[len(TOKEN_PREFIX):],
        type=rec.type, actor=meta.get("actor"), request_id=meta.get("request_id"),
        details=details,
    )


def _linked(state: TokenState) -> list[str]:
    return [t for t in (state.request_token, state.renewed_from, state.successor) if t]


def token_history(store: EventStore, token: str) -> list[Entry]:
    """Every event of ``token`` and of the tokens linked to it, in log order."""
    seen: set[str] = set()
    todo = [token]
    records: list[RecordedEvent] = []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        stream = store.read_stream(token_stream(current))
        if not stream:
            if current == token:
                raise AuditError(f"no token {token!r} in the event log")
            continue
        records += stream
        state = fold_stream(stream)
        assert isinstance(state, TokenState)  # a token stream with events
        todo += [t for t in _linked(state) if t not in seen]
    records.sort(key=lambda r: r.position)
    return [_entry(r) for r in records]


# -- a user's grants ----------------------------------------------------------------------------


@dataclass
class Grant:
    """One authorization a user gave (or refused) and how it ended."""

    consumer_key: str
    request_token: str | None
    decision: str  # "approved", "denied", "pending" (never decided), "direct"
    decided_at: str | None
    access_tokens: list[str] = field(default_factory=list)
    outcome: str = ""  # active, revoked, expired, renewed, denied, not exchanged, ...
    ended_at: str | None = None
    ended_by: str | None = None


def user_grants(store: EventStore, user: str) -> list[Grant]:
    """Every grant ``user`` made, oldest first, with how each ended."""
    needle = '"user":'
    mine: list[str] = []  # root token streams: request tokens the user decided, or tokens
    for rec in store.read_all(0, batch_size=20000):
        if rec.type not in ("TokenApproved", "TokenDenied", "AccessTokenIssued"):
            continue
        if needle not in rec.data:
            continue
        ev = rec.event  # decoded once: a property that parses the row on every access
        if getattr(ev, "user", None) != user:
            continue
        if rec.type == "AccessTokenIssued":
            if ev.request_token is None and ev.renewed_from is None:
                mine.append(rec.stream_id)  # issued without a request token (direct)
        else:
            mine.append(rec.stream_id)
    grants: list[Grant] = []
    for sid in mine:
        history = store.read_stream(sid)
        root = fold_stream(history)
        assert isinstance(root, TokenState)  # a token stream with events
        last_state: TokenState | None
        if root.kind == "request":
            decided = next((r for r in history if r.type in ("TokenApproved", "TokenDenied")),
                           None)
            grant = Grant(
                consumer_key=root.consumer_key, request_token=root.token,
                decision={"TokenApproved": "approved", "TokenDenied": "denied"}.get(
                    decided.type if decided else "", "pending"),
                decided_at=iso(decided.time) if decided else None,
            )
            current = root.successor
            last_state, last_records = root, history
        else:
            grant = Grant(consumer_key=root.consumer_key, request_token=None,
                          decision="direct", decided_at=iso(history[0].time))
            current, last_state, last_records = root.token, None, []
        while current:  # follow exchange and renewals to the token in force
            records = store.read_stream(token_stream(current))
            if not records:
                break
            grant.access_tokens.append(current)
            last_records = records
            folded = fold_stream(records)
            assert isinstance(folded, TokenState)  # a token stream with events
            last_state = folded
            current = last_state.successor if last_state.status == "renewed" else None
        grant.outcome, grant.ended_at, grant.ended_by = _outcome(last_state, last_records)
        grants.append(grant)
    grants.sort(key=lambda g: (g.decided_at or "", g.request_token or ""))
    return grants


def _outcome(state: TokenState | None, records: list[RecordedEvent]
             ) -> tuple[str, str | None, str | None]:
    if state is None:
        return "unknown", None, None
    last = records[-1] if records else None
    if state.kind == "request":
        outcome = {"pending": "not decided", "approved": "approved, never exchanged",
                   "denied": "denied", "expired": "request token expired"}.get(
                       state.status, state.status)
        ended = iso(last.time) if last and state.status in ("denied", "expired") else None
        by = last.meta.get("actor") if last and ended else None
        return outcome, ended, by
    if state.status == "active":
        return "active", None, None
    by = None
    if last is not None and last.type == "AccessTokenRevoked":
        by = last.event.by
    elif last is not None:
        by = last.meta.get("actor")
    return state.status, iso(last.time) if last else None, by


# -- the consumer side: connections to service providers ---------------------------------------


@dataclass(frozen=True)
class ConnectionEntry:
    """One step in the history of a service provider or of a user's connection to one.
    ``user`` is None for the provider's own events (added, edited, removed). ``actor``
    is who made the request that recorded it (the event's metadata); a drop also names
    in ``details`` whether the user or an administrator asked for it (``by``)."""

    position: int
    time: str | None
    provider: str
    user: str | None
    type: str
    action: str
    actor: str | None
    request_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class ConnectionHistory:
    """A user's connection to one service provider: where it stands now (``status``:
    ``connected``, ``needs_reconnect``, ``dropped``, or ``never connected`` when no
    connection was completed) and every step that led there."""

    provider: str
    user: str
    status: str
    history: list[ConnectionEntry]


_CONNECTION_ACTIONS = {
    "ServiceProviderAdded": "added",
    "ServiceProviderUpdated": "edited",
    "ServiceProviderRemoved": "removed",
    "ProviderTokenRequested": "connect started",
    "ProviderTokenRequestEnded": "connect ended",
    "ProviderTokenObtained": "connected",
    "ProviderTokenRenewed": "renewed",
    "ProviderTokenRejected": "rejected",
    "ProviderTokenDropped": "dropped",
}
# Event fields shown per type; sealed values are never among them (docs/design.md,
# "Sealed secrets"): an audit answer is copied around like the export.
_CONNECTION_DETAILS = {
    "ServiceProviderAdded": ("consumer_key", "base_url", "request_token_url",
                             "authorize_url", "access_token_url"),
    "ServiceProviderRemoved": (),
    "ProviderTokenRequested": ("expires_at",),
    "ProviderTokenRequestEnded": ("reason",),
    "ProviderTokenObtained": ("expires_at", "authorization_expires_at"),
    "ProviderTokenRenewed": ("expires_at", "authorization_expires_at"),
    "ProviderTokenRejected": ("problem",),
    "ProviderTokenDropped": ("by", "reason"),
}
_TIMES = frozenset({"expires_at", "authorization_expires_at"})


def _connection_details(rec: RecordedEvent) -> dict[str, Any]:
    event = rec.event
    if rec.type == "ServiceProviderUpdated":
        changes = dict(getattr(event, "changes", {}))
        details: dict[str, Any] = {}
        for name in sorted(changes):
            if name == "secret_sealed":
                # Only that it changed: a new shared secret, or none (signing with RSA).
                details["shared_secret"] = "replaced" if changes[name] else "removed"
            elif not name.endswith("_sealed"):
                details[name] = changes[name]
        return details
    details = {}
    for name in _CONNECTION_DETAILS.get(rec.type, ()):
        value = getattr(event, name, None)
        if name in _TIMES and value is not None:
            value = iso(value)
        if value is not None:
            details[name] = value
    if rec.type == "ServiceProviderAdded":
        details["signing"] = "HMAC-SHA1" if getattr(event, "secret_sealed", None) \
            else "RSA-SHA1"
    return details


def _connection_entry(rec: RecordedEvent, provider: str) -> ConnectionEntry:
    meta = rec.meta
    return ConnectionEntry(
        position=rec.position, time=iso(rec.time), provider=provider,
        user=getattr(rec.event, "user", None), type=rec.type,
        action=_CONNECTION_ACTIONS.get(rec.type, rec.type), actor=meta.get("actor"),
        request_id=meta.get("request_id"), details=_connection_details(rec))


def _status(state: State | None) -> str:
    if not isinstance(state, ConnectionState) or state.connected_at is None:
        # Only ever started (or ended) without a token: no connection was made.
        return "never connected"
    return state.status


def user_connections(store: EventStore, user: str) -> list[ConnectionHistory]:
    """Every connection ``user`` has or had to a service provider, by provider name,
    each with its history in log order. Every connection stream opens with
    ProviderTokenRequested, which names the user."""
    sids = streams_with(store, ["ProviderTokenRequested"], "user", user)
    out: list[ConnectionHistory] = []
    for sid, records in store.read_streams(sids).items():
        if not records:
            continue
        first = records[0].event
        provider = getattr(first, "provider", "")
        # The substring query is a prefilter; the stream's own name is the truth.
        if getattr(first, "user", None) != user or sid != connection_stream(user, provider):
            continue
        out.append(ConnectionHistory(
            provider=provider, user=user, status=_status(fold_stream(records)),
            history=[_connection_entry(r, provider) for r in records]))
    out.sort(key=lambda c: c.provider)
    return out


def provider_history(store: EventStore, name: str) -> list[ConnectionEntry]:
    """The history of service provider ``name`` in log order: its own events (added,
    edited, removed — again if the name was reused) and every user's connection events
    with it. Raises AuditError when the log never had a provider of that name."""
    own = store.read_stream(provider_stream(name))
    if not own:
        raise AuditError(f"no service provider {name!r} in the event log")
    sids = streams_with(store, ["ProviderTokenRequested"], "provider", name)
    records = list(own)
    for sid, stream in store.read_streams(sids).items():
        first = stream[0].event if stream else None
        # The substring query is a prefilter; the stream's own name is the truth.
        if first is not None and getattr(first, "provider", None) == name \
                and sid == connection_stream(getattr(first, "user", ""), name):
            records += stream
    records.sort(key=lambda r: r.position)
    return [_connection_entry(r, name) for r in records]
