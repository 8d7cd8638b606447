"""Resource-server credentials: who may call the verify API, and — created with
``act_for_users`` — the call API of the consumer side on behalf of a user it names
(POST /rest/oauthledger/1/service-providers/{name}/call)."""

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


def is_server_id(text: str) -> bool:
    """True when ``text`` has the shape of a resource-server id (1-100 letters, digits,
    or . _ -, starting with a letter or digit): anything else names none."""
    return bool(_ID.match(text or ""))


def create_resource_server(ledger: Ledger, sealer: Sealer, server_id: str, description: str,
                           meta: Mapping[str, Any], act_for_users: bool = False) -> str:
    """Create a credential and return its secret (shown once, stored sealed). With
    ``act_for_users`` the resource server may also call service providers on behalf of
    any user it names; without it, only the verify API."""
    if not is_server_id(server_id):
        raise ValidationError({"id": "use 1-100 letters, digits, or . _ -"})
    state, version = ledger.load(resource_server_stream(server_id))
    assert state is None or isinstance(state, ResourceServerState)
    if state is not None and not state.removed:
        raise Conflict(f"resource server {server_id!r} already exists")
    secret = secrets.token_urlsafe(32)
    ledger.commit([Change(resource_server_stream(server_id), version, state, [
        ev.ResourceServerCredentialCreated(server_id=server_id, secret_sealed=sealer.seal(secret),
                                           description=description[:500],
                                           act_for_users=act_for_users)
    ])], meta)
    return secret


def load_resource_server(ledger: Ledger, server_id: str) -> ResourceServerState | None:
    """The credential as the event log has it (not removed), or None. Read from the store,
    not Redis: who may act for users must not lag behind a removal."""
    if not is_server_id(server_id):
        return None
    state, _ = ledger.load(resource_server_stream(server_id))
    assert state is None or isinstance(state, ResourceServerState)
    return None if state is None or state.removed else state


def remove_resource_server(ledger: Ledger, server_id: str, meta: Mapping[str, Any]) -> None:
    """Withdraw a credential."""
    state, version = ledger.load(resource_server_stream(server_id))
    assert state is None or isinstance(state, ResourceServerState)
    if state is None or state.removed:
        raise NotFound(f"no resource server {server_id!r}")
    ledger.commit([Change(resource_server_stream(server_id), version, state, [
        ev.ResourceServerCredentialRemoved(server_id=server_id)])], meta)
