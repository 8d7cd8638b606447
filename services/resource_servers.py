"""Resource-server credentials: who may call the verify API."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.sealing import Sealer
from oauthledger.events.state import ResourceServerState, resource_server_stream
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Change, Ledger

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def create_resource_server(ledger: Ledger, sealer: Sealer, server_id: str, description: str,
                           meta: Mapping[str, Any]) -> str:
    """Create a credential and return its secret (shown once, stored sealed)."""
    if not _ID.match(server_id or ""):
        raise ValidationError({"id": "use 1-100 letters, digits, or . _ -"})
    state, version = ledger.load(resource_server_stream(server_id))
    assert state is None or isinstance(state, ResourceServerState)
    if state is not None and not state.removed:
        raise Conflict(f"resource server {server_id!r} already exists")
    secret = secrets.token_urlsafe(32)
    ledger.commit([Change(resource_server_stream(server_id), version, state, [
        ev.ResourceServerCredentialCreated(server_id=server_id, secret_sealed=sealer.seal(secret),
                                           description=description[:500])
    ])], meta)
    return secret


def remove_resource_server(ledger: Ledger, server_id: str, meta: Mapping[str, Any]) -> None:
    """Withdraw a credential."""
    state, version = ledger.load(resource_server_stream(server_id))
    assert state is None or isinstance(state, ResourceServerState)
    if state is None or state.removed:
        raise NotFound(f"no resource server {server_id!r}")
    ledger.commit([Change(resource_server_stream(server_id), version, state, [
        ev.ResourceServerCredentialRemoved(server_id=server_id)])], meta)
