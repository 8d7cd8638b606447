"""Shared by the JSON API resources under /rest/oauthledger/1/: the prefix, JSON bodies
and the resource base. Errors are application/problem+json (RFC 9457)."""

from __future__ import annotations

import json
from typing import Any

import falcon

from oauthledger.services.deps import Deps
from oauthledger.services.http.context import read_body

API = "/rest/oauthledger/1"


def json_body(req: falcon.Request) -> dict[str, Any]:
    """A JSON object body; anything else is a 400/415 problem."""
    if not (req.content_type or "").split(";")[0].strip().lower().endswith("json"):
        raise falcon.HTTPUnsupportedMediaType(description="send Content-Type: application/json")
    try:
        data = json.loads(read_body(req) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise falcon.HTTPBadRequest(title="Malformed JSON",
                                    description="the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise falcon.HTTPBadRequest(title="Malformed JSON", description="send a JSON object")
    return data


class ApiBase:
    """Shared by the API resources: the deps (each responder makes its own access check)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
