"""The token lifecycle, written once: for every token event type, the token kind it
belongs to, the statuses the token must be in before it (none: the event opens the
stream), the status it leaves the token in, and the token fields it sets from the
event's own fields.

Request tokens: pending -> approved | denied; approved -> approved (a wrong verifier,
counted) | exchanged; pending | approved -> expired | burned. Access tokens: active ->
expired; active | expired -> revoked | renewed (RFC 5849 §2 for the request/access
credentials; renewal by session handle within the authorization lifetime, and revocation
of an expired but still renewable grant, docs/oauth.md "Renewal").

Everything that folds token events reads this table: :func:`oauthledger.events.state.fold`
(the reference fold), the audit's :class:`oauthledger.events.audit.FastReplay` and the
rebuild's :class:`oauthledger.events.rebuild.RowReplay`. Adding a token event type means
adding its event class to the catalog and one :class:`Transition` here;
``tests/unit/test_token_lifecycle.py`` checks that every event type of the catalog with
a ``token`` field has one, and that both fast replays equal the reference fold for each.

``requires`` is what the services check before appending; the fold applies a recorded
event whatever the status (docs/design.md, "The log is the truth").

This module depends on the catalog only, so the state module can build on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from oauthledger.events import catalog as ev

REQUEST = "request"
ACCESS = "access"


@dataclass(frozen=True)
class Transition:
    """What one token event type does to the token's state."""

    event: type[ev.Event]
    kind: str  # REQUEST or ACCESS
    requires: frozenset[str]  # statuses it follows; empty: it opens the token's stream
    status: str  # the status it produces
    # (token state field, event field) pairs: the state field takes the event's value.
    sets: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """The event type's name (the store's ``type`` column)."""
        return self.event.__name__

    @property
    def opens(self) -> bool:
        """The event creates the token (its stream's first event)."""
        return not self.requires

    def event_defaults(self) -> dict[str, object]:
        """Event fields of :attr:`sets` that have a default: a stored row may omit them
        (decoding fills the default in)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self.event):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
        return {src: out[src] for _, src in self.sets if src in out}


def _same(*names: str) -> tuple[tuple[str, str], ...]:
    """Fields the token state and the event name alike."""
    return tuple((n, n) for n in names)


TRANSITIONS: tuple[Transition, ...] = (
    Transition(ev.RequestTokenIssued, REQUEST, frozenset(), "pending",
               _same("token", "consumer_key", "secret_sealed", "expires_at", "callback")),
    Transition(ev.TokenApproved, REQUEST, frozenset({"pending"}), "approved",
               _same("user", "verifier_sealed")),
    Transition(ev.TokenDenied, REQUEST, frozenset({"pending"}), "denied", _same("user")),
    Transition(ev.RequestTokenExchanged, REQUEST, frozenset({"approved"}), "exchanged",
               (("successor", "access_token"),)),
    Transition(ev.RequestTokenExpired, REQUEST, frozenset({"pending", "approved"}),
               "expired"),
    Transition(ev.VerifierRejected, REQUEST, frozenset({"approved"}), "approved",
               (("verifier_failures", "attempts"),)),
    Transition(ev.RequestTokenBurned, REQUEST, frozenset({"pending", "approved"}), "burned"),
    Transition(ev.AccessTokenIssued, ACCESS, frozenset(), "active",
               _same("token", "consumer_key", "user", "secret_sealed", "session_handle_hash",
                     "expires_at", "authorization_expires_at", "request_token",
                     "renewed_from")),
    Transition(ev.AccessTokenRenewed, ACCESS, frozenset({"active", "expired"}), "renewed",
               (("successor", "new_token"),)),
    # A grant is revoked whole: an expired token's session handle could renew it.
    Transition(ev.AccessTokenRevoked, ACCESS, frozenset({"active", "expired"}), "revoked"),
    Transition(ev.AccessTokenExpired, ACCESS, frozenset({"active"}), "expired"),
)

BY_NAME: dict[str, Transition] = {t.name: t for t in TRANSITIONS}
"""Transitions by event type name (raw rows carry the name)."""

BY_EVENT: dict[type[ev.Event], Transition] = {t.event: t for t in TRANSITIONS}
"""Transitions by event class (decoded events)."""
