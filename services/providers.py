"""Third-party service providers this installation consumes (the Service Providers tab):
validate, add (by hand, or by another application's base URL), edit, list, remove. The
users' connections to them and the calls made through them are services/connections.py.

A provider either shares a secret with us (HMAC-SHA1, as Atlassian does for third-party
providers) or is given this installation's public key and we sign with RSA-SHA1 — the
application link between two Atlassian-style applications, where this installation's
consumer-info key is the consumer key (docs/application-links.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.queries import streams_of_type, streams_with
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import (
    ConnectionState,
    ProviderState,
    connection_stream,
    provider_stream,
)
from oauthledger.services.consumers import validate_url
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger

MAX_NAME = 100
MAX_DESCRIPTION = 2000
MAX_CONSUMER_KEY = 200
# The Atlassian paths of the dance under an application's base URL.
REQUEST_TOKEN_PATH = "/plugins/servlet/oauth/request-token"
AUTHORIZE_PATH = "/plugins/servlet/oauth/authorize"
ACCESS_TOKEN_PATH = "/plugins/servlet/oauth/access-token"


@dataclass(frozen=True)
class ProviderInput:
    """Fields an admin supplies for a new service provider."""

    name: str = ""
    description: str = ""
    consumer_key: str = ""
    shared_secret: str = ""
    use_rsa: bool = False
    request_token_url: str = ""
    authorize_url: str = ""
    access_token_url: str = ""
    base_url: str = ""


def endpoints_under(base_url: str) -> dict[str, str]:
    """The three dance endpoints of an Atlassian-style application at ``base_url``."""
    base = base_url.rstrip("/")
    return {"request_token_url": base + REQUEST_TOKEN_PATH,
            "authorize_url": base + AUTHORIZE_PATH,
            "access_token_url": base + ACCESS_TOKEN_PATH}


def by_base_url(name: str, base_url: str, consumer_key: str,
                description: str = "") -> ProviderInput:
    """A provider added by its base URL: its endpoints at the Atlassian paths under it,
    signed with this installation's RSA key, ``consumer_key`` being this installation's
    consumer-info key (the other side registers us by our consumer-info URL)."""
    base = (base_url or "").strip().rstrip("/")
    return ProviderInput(name=name, description=description, consumer_key=consumer_key,
                         use_rsa=True, base_url=base, **endpoints_under(base))


def _printable(text: str) -> bool:
    return all(c.isprintable() for c in text)


def validate_provider(data: ProviderInput) -> dict[str, Any]:
    """Check every field at once; returns the cleaned fields or raises ValidationError
    with a message per bad field."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    name = data.name.strip()
    if not name or len(name) > MAX_NAME or not _printable(name):
        errors["name"] = f"is required: 1-{MAX_NAME} printable characters"
    elif "/" in name:
        # The name is a path segment of the connect and callback URLs, and routers
        # decode %2F before they match a route.
        errors["name"] = "must not contain /"
    out["name"] = name
    if len(data.description) > MAX_DESCRIPTION:
        errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
    out["description"] = data.description.strip()
    key = data.consumer_key.strip()
    if not key or len(key) > MAX_CONSUMER_KEY or any(c.isspace() or not c.isprintable()
                                                     for c in key):
        errors["consumer_key"] = (f"is required: 1-{MAX_CONSUMER_KEY} printable characters "
                                  "without spaces")
    out["consumer_key"] = key
    if data.use_rsa:
        if data.shared_secret:
            errors["shared_secret"] = ("leave empty when signing with this installation's "
                                       "RSA key")
        out["shared_secret"] = None
    elif not (1 <= len(data.shared_secret) <= 512):
        errors["shared_secret"] = ("give the shared secret the provider issued (1-512 "
                                   "characters), or choose to sign with our RSA key")
    else:
        out["shared_secret"] = data.shared_secret
    if data.base_url:
        try:
            out["base_url"] = validate_url("base_url", data.base_url).rstrip("/")
        except ValidationError as exc:
            errors.update(exc.fields)
        if "?" in data.base_url or "#" in data.base_url:
            errors["base_url"] = "must be the application's base URL, without ? or #"
    else:
        out["base_url"] = None
    for field in ("request_token_url", "authorize_url", "access_token_url"):
        try:
            out[field] = validate_url(field, getattr(data, field))
        except ValidationError as exc:
            if not (data.base_url and "base_url" in errors):
                errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    return out


def add_provider(ledger: Ledger, sealer: Sealer, data: ProviderInput,
                 meta: Mapping[str, Any]) -> ProviderState:
    """Add a provider. A name in use is a Conflict; a removed provider's name may be
    used again (its stream continues)."""
    fields = validate_provider(data)
    sid = provider_stream(fields["name"])
    current, version = ledger.load(sid)
    assert current is None or isinstance(current, ProviderState)
    if current is not None and not current.removed:
        raise Conflict(f"a service provider named {fields['name']!r} already exists")
    secret = fields.pop("shared_secret")
    event = ev.ServiceProviderAdded(
        **fields, secret_sealed=sealer.seal(secret) if secret is not None else None)
    return ledger.commit([Change(sid, version, current, [event])], meta)[sid]


def _load_live(ledger: Ledger, name: str) -> tuple[ProviderState, int]:
    """A provider that was not removed and its stream version, or NotFound."""
    state, version = ledger.load(provider_stream(name))
    assert state is None or isinstance(state, ProviderState)
    if state is None or state.removed:
        raise NotFound(f"no service provider named {name!r}")
    return state, version


def load_provider(ledger: Ledger, name: str) -> ProviderState:
    """A provider that was not removed, or NotFound."""
    return _load_live(ledger, name)[0]


# Fields an edit may change, as ProviderInput names them.
EDITABLE = ("description", "consumer_key", "shared_secret", "use_rsa", "request_token_url",
            "authorize_url", "access_token_url", "base_url")


def edit_provider(ledger: Ledger, sealer: Sealer, name: str, changes: Mapping[str, Any],
                  meta: Mapping[str, Any]) -> ProviderState:
    """Change some fields of a provider (``changes`` keyed as :class:`ProviderInput`;
    the name stays). The whole result is validated as for a new provider; a shared secret
    left out is kept. The users' stored tokens stay: they were issued to the consumer key,
    and if the key changed the provider refuses them and the users reconnect."""
    state, version = _load_live(ledger, name)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError({f: "cannot be changed" if f == "name" else "unknown field"
                               for f in sorted(unknown)})
    use_rsa = bool(changes.get("use_rsa", state.secret_sealed is None))
    secret = changes.get("shared_secret") or ""
    keep_secret = not use_rsa and not secret and state.secret_sealed is not None
    base_url = changes.get("base_url", state.base_url or "") or ""
    merged = ProviderInput(
        name=state.name, description=changes.get("description", state.description),
        consumer_key=changes.get("consumer_key", state.consumer_key),
        shared_secret="x" if keep_secret else secret, use_rsa=use_rsa,
        request_token_url=changes.get("request_token_url", state.request_token_url),
        authorize_url=changes.get("authorize_url", state.authorize_url),
        access_token_url=changes.get("access_token_url", state.access_token_url),
        base_url=base_url)
    fields = validate_provider(merged)
    new_secret = fields.pop("shared_secret")
    fields.pop("name")
    diff: dict[str, Any] = {k: v for k, v in fields.items() if getattr(state, k) != v}
    if use_rsa and state.secret_sealed is not None:
        diff["secret_sealed"] = None
    elif not use_rsa and not keep_secret:
        diff["secret_sealed"] = sealer.seal(new_secret)
    if not diff:
        return state
    return ledger.commit([Change(provider_stream(name), version, state,
                                 [ev.ServiceProviderUpdated(name=name, changes=diff)])],
                         meta)[provider_stream(name)]


def drop_change(state: ConnectionState, version: int, by: str,
                reason: str) -> Change | None:
    """The change that forgets a connection's token (and pending request), or None when
    there is nothing to forget."""
    if state.status not in ("connected", "needs_reconnect") and not state.pending_token:
        return None
    return Change(connection_stream(state.user, state.provider), version, state,
                  [ev.ProviderTokenDropped(provider=state.provider, user=state.user, by=by,
                                           reason=reason)])


def remove_provider(ledger: Ledger, name: str, meta: Mapping[str, Any],
                    by: str = "admin") -> int:
    """Remove a provider and forget every user's stored token for it, in one commit.
    Returns how many connections were dropped."""
    state, version = _load_live(ledger, name)
    sids = streams_with(ledger.store, ["ProviderTokenRequested"], "provider", name)
    drops: list[Change] = []
    for conn, conn_version in ledger.load_many(sids).values():
        if isinstance(conn, ConnectionState) and conn.provider == name:
            change = drop_change(conn, conn_version, by, "provider-removed")
            if change is not None:
                drops.append(change)
    ledger.commit([Change(provider_stream(name), version, state,
                          [ev.ServiceProviderRemoved(name=name)]), *drops], meta)
    return len(drops)


def list_providers(ledger: Ledger) -> list[ProviderState]:
    """Providers that were not removed, by name."""
    sids = streams_of_type(ledger.store, "ServiceProviderAdded")
    states = [s for s, _ in ledger.load_many(sids).values()]
    return sorted((s for s in states if isinstance(s, ProviderState) and not s.removed),
                  key=lambda s: s.name.lower())


def provider_view(state: ProviderState) -> dict[str, Any]:
    """What the API and pages show: never the shared secret."""
    return {
        "name": state.name, "description": state.description,
        "consumerKey": state.consumer_key,
        "signatureMethod": "HMAC-SHA1" if state.secret_sealed else "RSA-SHA1",
        "hasSharedSecret": state.secret_sealed is not None,
        "useRsaKey": state.secret_sealed is None,
        "requestTokenUrl": state.request_token_url, "authorizeUrl": state.authorize_url,
        "accessTokenUrl": state.access_token_url, "baseUrl": state.base_url,
        "version": state.version,
    }
