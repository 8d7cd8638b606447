"""User accounts: registration, passwords (argon2id), disabling.

Disabling a user revokes every grant the user gave (tokens that work and expired tokens
that could still be renewed), in the same commit, so a three-legged call never has to
look the user up (docs/design.md, "Read your writes"); two-legged calls, which name a
user without a grant, read the user's state (docs/oauth.md, "Two-legged requests and
impersonation")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from oauthledger.events import catalog as ev
from oauthledger.events.queries import streams_with
from oauthledger.events.state import TokenState, UserState, token_stream, user_stream
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
_hasher = PasswordHasher()
# A fixed hash to verify against when the user does not exist, so a login for an unknown
# name costs the same time as one for a known name (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("oauthledger-no-such-user")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def check_password(user: UserState | None, password: str) -> bool:
    """True when ``password`` matches; constant work whether or not the user exists."""
    target = user.password_hash if user and user.password_hash else _DUMMY_HASH
    try:
        ok = _hasher.verify(target, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and user is not None and not user.disabled and user.password_hash is not None


def validate_password(password: str) -> None:
    """Refuse passwords too short or too long to be sensible."""
    if len(password) < 8:
        raise ValidationError({"password": "must be at least 8 characters"})
    if len(password) > 1024:
        raise ValidationError({"password": "must be at most 1024 characters"})


def register_user(
    ledger: Ledger, name: str, password: str | None, *, admin: bool = False,
    display_name: str | None = None, meta: Mapping[str, Any],
) -> UserState:
    """Create a user. Names are letters, digits and ``._@+-`` (at most 100)."""
    if not _NAME.match(name or ""):
        raise ValidationError({"name": "use 1-100 letters, digits, or . _ @ + -"})
    if password is not None:
        validate_password(password)
    state, version = ledger.load(user_stream(name))
    if state is not None:
        raise Conflict(f"user {name!r} already exists")
    event = ev.UserRegistered(
        name=name, display_name=display_name or name,
        password_hash=hash_password(password) if password is not None else None, admin=admin,
    )
    return ledger.commit([Change(user_stream(name), version, None, [event])], meta)[
        user_stream(name)
    ]


def change_password(ledger: Ledger, name: str, password: str, meta: Mapping[str, Any]) -> None:
    """Set a new password."""
    validate_password(password)
    state, version = ledger.load(user_stream(name))
    if state is None:
        raise NotFound(f"no user {name!r}")
    ledger.commit(
        [Change(user_stream(name), version, state,
                [ev.UserPasswordChanged(name=name, password_hash=hash_password(password))])],
        meta,
    )


def user_access_tokens(ledger: Ledger, name: str) -> list[TokenState]:
    """Every access token the user ever held, newest first (from the store)."""
    sids = streams_with(ledger.store, ["AccessTokenIssued"], "user", name)
    states = [s for s, _ in ledger.load_many(sids).values() if isinstance(s, TokenState)]
    return sorted((s for s in states if s.user == name), key=lambda s: -s.issued_at)


def disable_user(ledger: Ledger, name: str, meta: Mapping[str, Any]) -> int:
    """Disable the account and revoke its grants at once: every token that works, and
    every expired token whose session handle could still renew it (docs/oauth.md,
    "Renewal"). Returns the grants revoked."""
    state, version = ledger.load(user_stream(name))
    if state is None:
        raise NotFound(f"no user {name!r}")
    changes = [Change(user_stream(name), version, state, [ev.UserDisabled(name=name)])]
    actor = str(meta.get("actor", "system"))
    now = ledger.clock()
    for tok in user_access_tokens(ledger, name):
        if tok.revocable_at(now):
            changes.append(
                Change(token_stream(tok.token), tok.version, tok,
                       [ev.AccessTokenRevoked(token=tok.token, by=actor, reason="user disabled")])
            )
    ledger.commit(changes, meta)
    return len(changes) - 1
