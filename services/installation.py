"""This installation's own consumer identity (the Consumer Info tab), its consumer-info
XML, and parsing another application's consumer-info XML (adding a consumer by URL; the
fetch itself, and what it refuses, is services/remote_fetch.py).

The identity is generated on first use (docs/oauth.md, "What the administration keeps"):
a key ``<name>:<digits>`` as Atlassian applications make them, and an RSA-2048 key pair.
The private key only ever enters the log sealed (``private_key_sealed``).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oauthledger.events import catalog as ev
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import INSTALLATION_STREAM, InstallationState
from oauthledger.services.errors import ValidationError
from oauthledger.services.ledger import Change, Ledger
from oauthledger.services.oauth.signatures import load_public_key

CONSUMER_INFO_PATH = "/plugins/servlet/oauth/consumer-info"
DEFAULT_NAME = "oauthledger"
MAX_NAME = 255
MAX_DESCRIPTION = 2000


def _new_key_pair() -> tuple[str, str]:
    """(private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) of a fresh RSA-2048 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii").strip()
    return private, public


def _new_key(name: str) -> str:
    # Atlassian consumer keys look like "jira:1234567": the application name, a colon,
    # random digits.
    return f"{name}:{secrets.randbelow(10**9):09d}"


def load_installation(ledger: Ledger) -> InstallationState | None:
    """The identity as it stands, or None before first use."""
    state, _ = ledger.load(INSTALLATION_STREAM)
    assert state is None or isinstance(state, InstallationState)
    return state


def ensure_installation(ledger: Ledger, sealer: Sealer, meta: Mapping[str, Any],
                        name: str = DEFAULT_NAME) -> InstallationState:
    """The identity, generating key and key pair on first use. Two front ends racing to
    generate it both end up with the one that was committed first (optimistic
    concurrency on the installation stream)."""
    state, version = ledger.load(INSTALLATION_STREAM)
    if state is not None:
        assert isinstance(state, InstallationState)
        return state
    private, public = _new_key_pair()
    event = ev.ConsumerInfoChanged(key=_new_key(name), name=name, description="",
                                   public_key=public, private_key_sealed=sealer.seal(private))
    try:
        return ledger.commit([Change(INSTALLATION_STREAM, version, None, [event])],
                             meta)[INSTALLATION_STREAM]
    except ConcurrencyConflict:
        state, _ = ledger.load(INSTALLATION_STREAM)
        assert isinstance(state, InstallationState)  # the one committed first
        return state


def update_installation(ledger: Ledger, sealer: Sealer, name: str, description: str,
                        meta: Mapping[str, Any]) -> InstallationState:
    """Change the name and description shown to service providers (the key stays)."""
    name = (name or "").strip()
    description = (description or "").strip()
    errors: dict[str, str] = {}
    if not name or len(name) > MAX_NAME:
        errors["name"] = f"is required (at most {MAX_NAME} characters)"
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
    if errors:
        raise ValidationError(errors)
    current = ensure_installation(ledger, sealer, meta)
    if (current.name, current.description) == (name, description):
        return current
    event = ev.ConsumerInfoChanged(key=current.key, name=name, description=description,
                                   public_key=current.public_key,
                                   private_key_sealed=current.private_key_sealed)
    return ledger.commit([Change(INSTALLATION_STREAM, current.version, current, [event])],
                         meta)[INSTALLATION_STREAM]


def rotate_key_pair(ledger: Ledger, sealer: Sealer,
                    meta: Mapping[str, Any]) -> InstallationState:
    """Replace the RSA key pair; service providers must be given the new public key."""
    current = ensure_installation(ledger, sealer, meta)
    private, public = _new_key_pair()
    event = ev.ConsumerInfoChanged(key=current.key, name=current.name,
                                   description=current.description, public_key=public,
                                   private_key_sealed=sealer.seal(private))
    return ledger.commit([Change(INSTALLATION_STREAM, current.version, current, [event])],
                         meta)[INSTALLATION_STREAM]


def private_key_pem(state: InstallationState, sealer: Sealer) -> str:
    """The installation's private key (for signing as a consumer); never shown."""
    return sealer.open(state.private_key_sealed)


def installation_view(state: InstallationState) -> dict[str, Any]:
    """What the API shows: never the private key."""
    return {"key": state.key, "name": state.name, "description": state.description,
            "publicKey": state.public_key, "version": state.version}


def consumer_info_xml(state: InstallationState) -> str:
    """``<consumer><key/><name/><publicKey/><description/></consumer>`` with the public
    key as PEM (docs/oauth.md, "Endpoints"). ElementTree escapes the text."""
    root = ET.Element("consumer")
    for tag, value in (("key", state.key), ("name", state.name),
                       ("publicKey", state.public_key), ("description", state.description)):
        ET.SubElement(root, tag).text = value
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


# -- reading another application's consumer info -----------------------------------------


@dataclass(frozen=True)
class RemoteConsumerInfo:
    """What another application's consumer-info XML says about it."""

    url: str
    key: str
    name: str
    description: str
    public_key: str
    callback_url: str | None = None

    def view(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {"url": self.url, "key": self.key, "name": self.name,
                "description": self.description, "publicKey": self.public_key,
                "callbackUrl": self.callback_url}


def parse_consumer_info(body: bytes, url: str = "") -> RemoteConsumerInfo:
    """Parse consumer-info XML. Refuses DTDs outright (no entity expansion, no external
    entities: a consumer-info document never needs one) and documents without a key."""
    field = "base_url"
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValidationError({field: "the consumer info contains a DTD, which is refused"})
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValidationError({field: f"the answer is not consumer-info XML ({exc})"}) from None
    if root.tag != "consumer":
        raise ValidationError({field: f"expected a <consumer> document, got <{root.tag}>"})

    def text(tag: str) -> str:
        el = root.find(tag)
        return (el.text or "").strip() if el is not None else ""

    key, public_key = text("key"), text("publicKey")
    if not key:
        raise ValidationError({field: "the consumer info has no <key>"})
    if not public_key:
        raise ValidationError({field: "the consumer info has no <publicKey>"})
    try:
        load_public_key(public_key)
    except ValueError as exc:
        raise ValidationError({field: f"the consumer info's public key is unusable: {exc}"}) \
            from None
    callback = text("callback") or None
    return RemoteConsumerInfo(url=url, key=key, name=text("name") or key,
                              description=text("description"), public_key=public_key,
                              callback_url=callback)
