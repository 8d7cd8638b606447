"""Protecting routes with OAuth: a Falcon middleware for resources that declare
``oauth_protected = True``, and a hook for single responders (``@falcon.before``).

Both run the hot path (services.oauth.authenticator.Authenticator.authenticate_resource):
one Redis round trip for consumer, token and the nonce, every check including the
signature, then the nonce's verdict (a refused request's nonce is taken back). The
result is put on ``req.context.oauth`` as an AuthContext.

For the consumer's failure history (services/failures.py): a refused request is marked
for the error handler that records it (services.http.errors.mark_signed_request), and an
accepted one is counted in process memory — the accepted path makes no Redis round trip
more than the hot path's one (docs/design.md, "One round trip").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from oauthledger.services.deps import Deps
from oauthledger.services.failures import failure_history
from oauthledger.services.http.context import signed_request
from oauthledger.services.http.errors import mark_signed_request
from oauthledger.services.oauth.authenticator import AuthContext
from oauthledger.services.oauth.problems import OAuthProblem


def authenticate(req: falcon.Request, deps: Deps) -> AuthContext:
    """Authenticate a signed resource request or raise OAuthProblem."""
    sreq, https = signed_request(req, deps)
    try:
        ctx = deps.authenticator.authenticate_resource(sreq, https=https)
    except OAuthProblem:
        mark_signed_request(req, sreq, "resource")
        raise
    req.context.oauth = ctx
    failure_history(deps).note_accepted(ctx.consumer.key)
    return ctx


class OAuthProtection:
    """Middleware: every resource with ``oauth_protected = True`` requires a valid
    OAuth 1.0a signature (three-legged or two-legged)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if resource is not None and getattr(resource, "oauth_protected", False):
            authenticate(req, self.deps)


def require_oauth(deps: Deps) -> Callable[..., None]:
    """A ``falcon.before`` hook with the same effect as the middleware, for one responder."""

    def hook(req: falcon.Request, resp: falcon.Response, resource: Any,
             params: dict[str, Any]) -> None:
        authenticate(req, deps)

    return hook
