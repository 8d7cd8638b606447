"""Access tokens as users and admins see them: listing with filters, and revoking.

Loaded from the store (docs/design.md, "What Redis holds": admin pages read the log,
strongly consistent).
Revoking goes through :func:`oauthledger.services.dance.revoke`, which publishes the new state to
Redis before returning, so the very next signed request with the token fails with
``token_revoked`` (docs/design.md, "Read your writes").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oauthledger.events.queries import streams_of_type, streams_with
from oauthledger.events.state import ConsumerState, TokenState, consumer_stream, token_stream
from oauthledger.services import dance
from oauthledger.services.errors import NotFound
from oauthledger.services.ledger import Ledger

STATUSES = ("active", "expired", "revoked", "renewed")
MAX_LIST = 1000


@dataclass(frozen=True)
class TokenRow:
    """One access token with its consumer, for a listing."""

    token: TokenState
    consumer_name: str
    consumer_description: str
    status: str  # "active" until its expiry second even before the sweep marks it
    # The grant can still be renewed with its session handle until this time (None: it
    # cannot). An expired token with a renewable grant is still access the user gave.
    renewable_until: float | None = None

    @property
    def revocable(self) -> bool:
        """Revoking takes access away: the token works, or its grant can be renewed."""
        return self.status == "active" or self.renewable_until is not None

    def view(self) -> dict[str, Any]:
        """JSON form (never the token secret or session handle)."""
        t = self.token
        return {
            "token": t.token, "user": t.user, "consumerKey": t.consumer_key,
            "consumerName": self.consumer_name,
            "consumerDescription": self.consumer_description,
            "issuedAt": int(t.issued_at), "expiresAt": int(t.expires_at),
            "status": self.status,
            "renewableUntil": (int(self.renewable_until)
                               if self.renewable_until is not None else None),
            "revocable": self.revocable,
        }


def effective_status(token: TokenState, now: float) -> str:
    """``expired`` from the expiry second on, whatever the sweep has recorded yet."""
    if token.status == "active" and now >= token.expires_at:
        return "expired"
    return token.status


def list_access_tokens(ledger: Ledger, *, user: str | None = None,
                       consumer: str | None = None, status: str | None = None,
                       limit: int = MAX_LIST) -> list[TokenRow]:
    """Access tokens, newest first, optionally only one user's, one consumer's, or in one
    status (``active``, ``expired``, ``revoked``, ``renewed``)."""
    sets: list[set[str]] = []
    if user:
        sets.append(set(streams_with(ledger.store, ["AccessTokenIssued"], "user", user)))
    if consumer:
        sets.append(set(streams_with(ledger.store, ["AccessTokenIssued"], "consumer_key",
                                     consumer)))
    sids = set.intersection(*sets) if sets else set(
        streams_of_type(ledger.store, "AccessTokenIssued"))
    states: list[TokenState] = [s for s, _ in ledger.load_many(sorted(sids)).values()
                                if isinstance(s, TokenState) and s.kind == "access"]
    # The substring query is a prefilter; the folded state is the truth.
    states = [s for s in states if (not user or s.user == user)
              and (not consumer or s.consumer_key == consumer)]
    now = ledger.clock()
    if status:
        states = [s for s in states if effective_status(s, now) == status]
    states.sort(key=lambda s: -s.issued_at)
    states = states[:limit]
    keys = sorted({s.consumer_key for s in states})
    consumers: dict[str, ConsumerState | None] = {
        sid[len("consumer-"):]: st if isinstance(st, ConsumerState) else None
        for sid, (st, _) in ledger.load_many([consumer_stream(k) for k in keys]).items()
    }
    return [_row(s, consumers.get(s.consumer_key), now) for s in states]


def _row(state: TokenState, consumer: ConsumerState | None, now: float) -> TokenRow:
    name = consumer.name if consumer is not None else state.consumer_key
    if consumer is not None and consumer.removed:
        name += " (removed)"
    renewable = (state.authorization_expires_at
                 if state.renewable_at(now) and _same_registration(state, consumer) else None)
    return TokenRow(state, name, consumer.description if consumer is not None else "",
                    effective_status(state, now), renewable)


def _same_registration(state: TokenState, consumer: ConsumerState | None) -> bool:
    """The grant belongs to the consumer's current registration (a key removed and
    registered again is a new consumer, whose renewal refuses older grants)."""
    return (consumer is not None and not consumer.removed
            and state.issued_at >= consumer.registered_at)


def _load_access(ledger: Ledger, token: str, owner: str | None) -> TokenState:
    state, _ = ledger.load(token_stream(token))
    assert state is None or isinstance(state, TokenState)
    if state is None or state.kind != "access" or (owner is not None and state.user != owner):
        raise NotFound("no such access token")
    return state


def token_row(ledger: Ledger, token: str, owner: str | None = None) -> TokenRow:
    """One access token with its consumer; with ``owner``, only that user's."""
    state = _load_access(ledger, token, owner)
    consumer, _ = ledger.load(consumer_stream(state.consumer_key))
    assert consumer is None or isinstance(consumer, ConsumerState)
    return _row(state, consumer, ledger.clock())


def revoke_token(ledger: Ledger, token: str, *, by: str, meta: Mapping[str, Any],
                 owner: str | None = None) -> TokenState:
    """Revoke an access token. With ``owner``, only that user's token may be revoked;
    someone else's is reported as not found (never confirm another user's token)."""
    _load_access(ledger, token, owner)
    reason = "revoked by the user" if owner is not None else f"revoked by admin {by}"
    return dance.revoke(ledger, token, by, meta, reason=reason)
