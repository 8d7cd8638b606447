"""Access tokens in the JSON API: every token for admins (/rest/oauthledger/1/tokens),
one's own for every user (/rest/oauthledger/1/users/me/access-tokens)."""

from __future__ import annotations

import falcon

from oauthledger.services import tokens as tok
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.access import api_admin, api_user
from oauthledger.services.http.api.base import API, ApiBase
from oauthledger.services.http.context import meta


def _status_param(req: falcon.Request) -> str | None:
    status = req.get_param("status") or None
    if status is not None and status not in tok.STATUSES:
        raise ValidationError({"status": f"must be one of {', '.join(tok.STATUSES)}"})
    return status


class TokensResource(ApiBase):
    """GET every access token, filtered by ?user=, ?consumer= and ?status=."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        rows = tok.list_access_tokens(self.deps.ledger, user=req.get_param("user") or None,
                                      consumer=req.get_param("consumer") or None,
                                      status=_status_param(req))
        resp.media = {"tokens": [r.view() for r in rows]}


class TokenResource(ApiBase):
    """GET one access token; DELETE revokes it (the next signed call gets token_revoked)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        api_admin(req, self.deps)
        resp.media = tok.token_row(self.deps.ledger, token).view()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        admin = api_admin(req, self.deps)
        tok.revoke_token(self.deps.ledger, token, by=admin.name, meta=meta(req, admin.name))
        resp.media = tok.token_row(self.deps.ledger, token).view()


class MyTokensResource(ApiBase):
    """GET the signed-in user's own access tokens (any user, not only admins)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = api_user(req, self.deps)
        rows = tok.list_access_tokens(self.deps.ledger, user=user.name,
                                      status=_status_param(req))
        resp.media = {"tokens": [r.view() for r in rows]}


class MyTokenResource(ApiBase):
    """DELETE revokes one of the signed-in user's own access tokens."""

    def on_delete(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        user = api_user(req, self.deps)
        tok.revoke_token(self.deps.ledger, token, by=user.name, meta=meta(req, user.name),
                         owner=user.name)
        resp.media = tok.token_row(self.deps.ledger, token, user.name).view()


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the token routes."""
    app.add_route(f"{API}/tokens", TokensResource(deps))
    app.add_route(f"{API}/tokens/{{token}}", TokenResource(deps))
    app.add_route(f"{API}/users/me/access-tokens", MyTokensResource(deps))
    app.add_route(f"{API}/users/me/access-tokens/{{token}}", MyTokenResource(deps))
