"""Consumer registry: register, update, reset the shared secret, remove (revoking every
token), list.

Used by the CLI, the admin JSON API and the admin pages alike, so validation lives here
once and every entry point reports the same field messages.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.errors import SealingError
from oauthledger.events.queries import streams_of_type, streams_with
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import (
    ConsumerState,
    TokenState,
    consumer_stream,
    token_stream,
    user_stream,
)
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger
from oauthledger.services.oauth.redirects import absolute_http_url
from oauthledger.services.oauth.signatures import (
    HMAC_METHODS,
    METHODS,
    RSA_METHODS,
    load_public_key,
    rsa_key_warning,
)

MAX_KEY = 200
MAX_NAME = 255
MAX_DESCRIPTION = 2000
MAX_URL = 2000
MAX_PEM = 20000
MIN_SECRET = 8
MAX_SECRET = 512


@dataclass(frozen=True)
class ConsumerInput:
    """Fields an admin supplies. ``None`` in an update means "leave as is"."""

    name: str | None = None
    description: str | None = None
    callback_url: str | None = None
    public_key: str | None = None
    secret: str | None = None
    generate_secret: bool = False
    signature_methods: Sequence[str] | None = None
    three_legged: bool | None = None
    two_legged_user: str | None = None
    allow_impersonation: bool | None = None
    allow_oauth10: bool | None = None
    allow_plaintext_over_http: bool | None = None


def validate_key(key: str) -> None:
    """Consumer keys: 1-200 printable characters without whitespace (Atlassian keys such
    as ``jira:12345`` or a base URL are fine)."""
    if not key or len(key) > MAX_KEY or any(c.isspace() or not c.isprintable() for c in key):
        raise ValidationError(
            {"key": f"must be 1-{MAX_KEY} printable characters without spaces"}
        )


def validate_url(name: str, url: str) -> str:
    """An absolute http(s) URL (RFC 5849 §2.1: callbacks are absolute URIs) that a browser
    reads as we do (services.oauth.redirects)."""
    checked = absolute_http_url(url.strip())
    if checked is None or len(url.strip()) > MAX_URL:
        raise ValidationError({name: "must be an absolute http:// or https:// URL without user "
                                     "info, spaces, backslashes, control or non-ASCII "
                                     "characters"})
    return url.strip()


def _check_public_key(pem: str) -> str:
    pem = pem.strip()
    if len(pem) > MAX_PEM:
        raise ValidationError({"public_key": "is too long to be a public key"})
    try:
        load_public_key(pem)
    except ValueError as exc:
        raise ValidationError({"public_key": str(exc)}) from None
    return pem


def _resolve(
    ledger: Ledger, current: ConsumerState | None, data: ConsumerInput, sealer: Sealer
) -> tuple[dict[str, Any], str | None]:
    """Validate ``data`` against ``current`` and return (fields, generated secret)."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    generated: str | None = None

    def check(name: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ValidationError as exc:
            errors.update(exc.fields)
            return None

    if data.name is not None or current is None:
        name = (data.name or "").strip()
        if not name or len(name) > MAX_NAME:
            errors["name"] = f"is required (at most {MAX_NAME} characters)"
        out["name"] = name
    if data.description is not None:
        if len(data.description) > MAX_DESCRIPTION:
            errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
        out["description"] = data.description.strip()
    if data.callback_url is not None:
        out["callback_url"] = (
            check("callback_url", validate_url, "callback_url", data.callback_url)
            if data.callback_url.strip() else None
        )
    if data.public_key is not None:
        out["public_key"] = (
            check("public_key", _check_public_key, data.public_key)
            if data.public_key.strip() else None
        )
    if data.generate_secret:
        generated = secrets.token_urlsafe(32)
        out["secret_sealed"] = sealer.seal(generated)
    elif data.secret is not None:
        if data.secret and not (MIN_SECRET <= len(data.secret) <= MAX_SECRET):
            errors["secret"] = f"must be {MIN_SECRET}-{MAX_SECRET} characters"
        out["secret_sealed"] = sealer.seal(data.secret) if data.secret else None
    for flag in ("three_legged", "allow_impersonation", "allow_oauth10",
                 "allow_plaintext_over_http"):
        value = getattr(data, flag)
        if value is not None:
            out[flag] = bool(value)
    if data.two_legged_user is not None:
        user = data.two_legged_user.strip() or None
        if user is not None:
            state, _ = ledger.load(user_stream(user))
            if state is None:
                errors["two_legged_user"] = f"there is no user {user!r}"
        out["two_legged_user"] = user

    has_key = out.get("public_key", current.public_key if current else None) is not None
    has_secret = out.get("secret_sealed", current.secret_sealed if current else None) is not None
    if data.signature_methods is not None:
        methods = tuple(dict.fromkeys(m.strip().upper() for m in data.signature_methods if m))
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            errors["signature_methods"] = (
                f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}"
            )
        elif not methods:
            errors["signature_methods"] = "choose at least one signature method"
        out["signature_methods"] = methods
    elif current is None:
        # Defaults follow the credentials given: RSA methods for a public key (what
        # Atlassian applications send), HMAC methods for a shared secret.
        out["signature_methods"] = (RSA_METHODS if has_key else ()) + (
            HMAC_METHODS if has_secret else ()
        )
    methods = out.get("signature_methods", current.signature_methods if current else ())
    if not errors:
        if not has_key and not has_secret:
            errors["public_key"] = "give a public key (RSA) or a shared secret (HMAC)"
        elif any(m.startswith("RSA") for m in methods) and not has_key:
            errors["public_key"] = "RSA signature methods need the consumer's public key"
        elif any(not m.startswith("RSA") for m in methods) and not has_secret:
            errors["secret"] = "HMAC and PLAINTEXT signature methods need a shared secret"
    if errors:
        raise ValidationError(errors)
    return out, generated


def register_consumer(
    ledger: Ledger, sealer: Sealer, key: str, data: ConsumerInput, meta: Mapping[str, Any]
) -> tuple[ConsumerState, str | None]:
    """Register a consumer. Returns its state and the generated secret (shown once)."""
    validate_key(key)
    current, version = ledger.load(consumer_stream(key))
    assert current is None or isinstance(current, ConsumerState)
    if current is not None and not current.removed:
        raise Conflict(f"a consumer with key {key!r} already exists")
    fields, generated = _resolve(ledger, None, data, sealer)
    event = ev.ConsumerRegistered(
        key=key,
        name=fields["name"],
        description=fields.get("description", ""),
        callback_url=fields.get("callback_url"),
        public_key=fields.get("public_key"),
        secret_sealed=fields.get("secret_sealed"),
        signature_methods=tuple(fields["signature_methods"]),
        three_legged=fields.get("three_legged", True),
        two_legged_user=fields.get("two_legged_user"),
        allow_impersonation=fields.get("allow_impersonation", False),
        allow_oauth10=fields.get("allow_oauth10", False),
        allow_plaintext_over_http=fields.get("allow_plaintext_over_http", False),
    )
    states = ledger.commit([Change(consumer_stream(key), version, current, [event])], meta)
    return states[consumer_stream(key)], generated


def update_consumer(
    ledger: Ledger, sealer: Sealer, key: str, data: ConsumerInput, meta: Mapping[str, Any]
) -> tuple[ConsumerState, str | None]:
    """Change some fields of a consumer (never its key)."""
    current, version = ledger.load(consumer_stream(key))
    assert current is None or isinstance(current, ConsumerState)
    if current is None or current.removed:
        raise NotFound(f"no consumer with key {key!r}")
    fields, generated = _resolve(ledger, current, data, sealer)
    changes = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()
               if getattr(current, k) != v}
    if not changes:
        return current, None
    states = ledger.commit(
        [Change(consumer_stream(key), version, current,
                [ev.ConsumerUpdated(key=key, changes=changes)])],
        meta,
    )
    return states[consumer_stream(key)], generated


def _is_current_secret(sealer: Sealer, sealed: str, candidate: str) -> bool:
    try:
        current = sealer.open(sealed)
    except SealingError:
        # The key that sealed the old secret is gone: replacing it is what the admin
        # needs, and the candidate cannot be the secret nobody can open any more.
        return False
    return secrets.compare_digest(current.encode(), candidate.encode())


def reset_secret(
    ledger: Ledger, sealer: Sealer, key: str, meta: Mapping[str, Any], secret: str | None = None
) -> tuple[ConsumerState, str]:
    """Replace a consumer's shared secret with ``secret``, or with a generated one when
    ``secret`` is None. Returns the new state and the new secret (for the caller to show
    once). The consumer, its settings and its tokens stay.

    One ConsumerUpdated event carries the newly sealed secret. It bumps the consumer's
    version, which is what the hot path caches opened secrets by, so the old secret is
    refused from the very next request on (docs/design.md, "A signed request to a
    protected resource", and "Read your writes")."""
    current, version = ledger.load(consumer_stream(key))
    assert current is None or isinstance(current, ConsumerState)
    if current is None or current.removed:
        raise NotFound(f"no consumer with key {key!r}")
    if current.secret_sealed is None:
        # A new secret here would be one no signature method uses; adding HMAC to an
        # RSA consumer is an edit of its methods and secret together.
        raise ValidationError({"secret": f"consumer {key!r} has no shared secret (it signs "
                                         "with its RSA key); add one by editing the consumer"})
    if secret is None:
        secret = secrets.token_urlsafe(32)
    elif not (MIN_SECRET <= len(secret) <= MAX_SECRET):
        raise ValidationError({"secret": f"must be {MIN_SECRET}-{MAX_SECRET} characters"})
    elif _is_current_secret(sealer, current.secret_sealed, secret):
        # A reset that keeps the secret would leave whoever has the old one signing on.
        raise ValidationError({"secret": "is the current secret; give a different one"})
    event = ev.ConsumerUpdated(key=key, changes={"secret_sealed": sealer.seal(secret)})
    states = ledger.commit([Change(consumer_stream(key), version, current, [event])], meta)
    return states[consumer_stream(key)], secret


def consumer_tokens(ledger: Ledger, key: str) -> list[TokenState]:
    """Every request and access token the consumer ever held (from the store)."""
    sids = streams_with(ledger.store, ["AccessTokenIssued", "RequestTokenIssued"],
                        "consumer_key", key)
    states = [s for s, _ in ledger.load_many(sids).values() if isinstance(s, TokenState)]
    return [s for s in states if s.consumer_key == key]


def remove_consumer(ledger: Ledger, key: str, meta: Mapping[str, Any]) -> int:
    """Remove a consumer and revoke every grant it holds, in one commit: tokens that
    work and expired tokens that could still be renewed (docs/oauth.md, "Renewal");
    pending and approved request tokens expire. Returns how many grants were revoked."""
    current, version = ledger.load(consumer_stream(key))
    assert current is None or isinstance(current, ConsumerState)
    if current is None or current.removed:
        raise NotFound(f"no consumer with key {key!r}")
    actor = str(meta.get("actor", "system"))
    changes = [Change(consumer_stream(key), version, current, [ev.ConsumerRemoved(key=key)])]
    revoked = 0
    now = ledger.clock()
    for tok in consumer_tokens(ledger, key):
        if tok.revocable_at(now):
            revoked += 1
            changes.append(Change(token_stream(tok.token), tok.version, tok, [
                ev.AccessTokenRevoked(token=tok.token, by=actor, reason="consumer removed")
            ]))
        elif tok.kind == "request" and tok.status in ("pending", "approved"):
            changes.append(Change(token_stream(tok.token), tok.version, tok,
                                  [ev.RequestTokenExpired(token=tok.token)]))
    ledger.commit(changes, meta)
    return revoked


def load_consumer(ledger: Ledger, key: str) -> ConsumerState:
    """A registered (not removed) consumer, or NotFound."""
    state, _ = ledger.load(consumer_stream(key))
    assert state is None or isinstance(state, ConsumerState)
    if state is None or state.removed:
        raise NotFound(f"no consumer with key {key!r}")
    return state


def list_consumers(ledger: Ledger) -> list[ConsumerState]:
    """Registered consumers, by key."""
    sids = streams_of_type(ledger.store, "ConsumerRegistered")
    states = [s for s, _ in ledger.load_many(sids).values()]
    return sorted((s for s in states if isinstance(s, ConsumerState) and not s.removed),
                  key=lambda s: s.key)


def outstanding_tokens(ledger: Ledger, keys: Iterable[str]) -> dict[str, int]:
    """Active access tokens per consumer key."""
    return {k: sum(1 for t in consumer_tokens(ledger, k)
                   if t.kind == "access" and t.status == "active"
                   and t.expires_at > ledger.clock()) for k in keys}


def consumer_public_view(state: ConsumerState, outstanding: int | None = None) -> dict[str, Any]:
    """What the API and pages show of a consumer: never the secret, only whether it has one."""
    out = {
        "key": state.key,
        "name": state.name,
        "description": state.description,
        "callbackUrl": state.callback_url,
        "publicKey": state.public_key,
        "publicKeyWarning": rsa_key_warning(state.public_key) if state.public_key else None,
        "hasSharedSecret": state.secret_sealed is not None,
        "signatureMethods": list(state.signature_methods),
        "threeLegged": state.three_legged,
        "twoLeggedUser": state.two_legged_user,
        "allowImpersonation": state.allow_impersonation,
        "allowOAuth10": state.allow_oauth10,
        "allowPlaintextOverHttp": state.allow_plaintext_over_http,
        "version": state.version,
    }
    if outstanding is not None:
        out["tokensOutstanding"] = outstanding
    return out


def consumer_history(ledger: Ledger, key: str, limit: int = 50) -> list[dict[str, Any]]:
    """The consumer's recent events from the log, newest first: what happened, when, who
    did it and in which request. Changed fields are named, never their values (a sealed
    secret is still a secret)."""
    out: list[dict[str, Any]] = []
    for rec in ledger.store.read_stream(consumer_stream(key)):
        meta = rec.meta
        event = rec.event
        if isinstance(event, ev.ConsumerUpdated):
            summary = "changed " + ", ".join(sorted(event.changes))
        elif isinstance(event, ev.ConsumerRegistered):
            summary = f"registered as {event.name!r}"
        elif isinstance(event, ev.ConsumerRemoved):
            summary = "removed; its tokens were revoked"
        else:  # pragma: no cover - consumer streams hold only the three types above
            summary = rec.type
        out.append({"version": rec.stream_version, "type": rec.type, "time": rec.time,
                    "actor": meta.get("actor"), "requestId": meta.get("request_id"),
                    "summary": summary})
    return out[::-1][:limit]
