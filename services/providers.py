"""Third-party service providers this installation consumes (the Service Providers tab):
validate, add, list, remove. Stored and validated only; the consumer side of the dance
is not run from here.

A provider either shares a secret with us (HMAC-SHA1, as Atlassian does for third-party
providers) or is given this installation's public key and we sign with RSA-SHA1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.queries import streams_of_type
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import ProviderState, provider_stream
from oauthledger.services.consumers import validate_url
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger

MAX_NAME = 100
MAX_DESCRIPTION = 2000
MAX_CONSUMER_KEY = 200


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
    for field in ("request_token_url", "authorize_url", "access_token_url"):
        try:
            out[field] = validate_url(field, getattr(data, field))
        except ValidationError as exc:
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


def remove_provider(ledger: Ledger, name: str, meta: Mapping[str, Any]) -> None:
    """Remove a provider."""
    state, version = _load_live(ledger, name)
    ledger.commit([Change(provider_stream(name), version, state,
                          [ev.ServiceProviderRemoved(name=name)])], meta)


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
        "accessTokenUrl": state.access_token_url, "version": state.version,
    }
