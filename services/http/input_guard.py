"""Identifiers from clients, checked at the HTTP edge before anything is looked up.

Consumer keys, tokens, user names, resource-server ids and provider names are printable
text: none holds a control character or an unpaired surrogate
(:func:`oauthledger.services.oauth.request.unusable_character`, the same rule the OAuth
parameter parser applies). A client that sends one is answered at once in the form its
entry point uses — a 404 problem+json for a path, "wrong username or password" for a
sign-in — and nothing is read, recorded or counted. The event store refuses what the
database cannot hold too (docs/event-store.md, "Identifiers the database cannot hold");
this guard is the layer that gives the client a clear answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import falcon

from oauthledger.services.oauth.request import unusable_character


def impossible_identifier(text: str) -> bool:
    """True when ``text`` cannot be an identifier: it holds a control character
    (Unicode Cc) or an unpaired surrogate."""
    return unusable_character(text) is not None


def check_path_params(params: Mapping[str, Any]) -> None:
    """Raise a 404 (rendered as problem+json) when a path parameter of the route cannot
    be an identifier: no entity is named by it, so there is nothing to find."""
    for name, value in params.items():
        if isinstance(value, str) and impossible_identifier(value):
            raise falcon.HTTPNotFound(
                title="Not found",
                description=f"no such {name}: the path holds "
                            f"{unusable_character(value)}, a control character or unpaired "
                            "surrogate, which no identifier holds",
            )
