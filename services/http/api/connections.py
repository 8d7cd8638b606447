"""The signed-in user's own connections to service providers, in the JSON API:
/rest/oauthledger/1/users/me/connections[/{name}] (the JSON twin of the connections page,
/plugins/servlet/oauth/users/connections)."""

from __future__ import annotations

import falcon

from oauthledger.services import connections as conn
from oauthledger.services import providers as prov
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.http.access import api_user
from oauthledger.services.http.api.base import API, ApiBase
from oauthledger.services.http.context import meta


class MyConnectionsResource(ApiBase):
    """GET a row per service provider: the user's connection to it (never a token)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = api_user(req, self.deps)
        now = self.deps.ledger.clock()
        rows = []
        for provider, state in conn.connections_of_user(self.deps.ledger, user.name):
            view = conn.connection_view(provider, state, now)
            view["user"] = user.name  # a provider never connected to has no state to say so
            rows.append(view)
        resp.media = {"connections": rows}


class MyConnectionResource(ApiBase):
    """DELETE disconnects the user from one provider: the stored token is forgotten
    (the provider is not told; the user may revoke the grant there too). Through the
    browser session it needs X-CSRF-Token, like every change."""

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        user = api_user(req, self.deps)
        provider = prov.load_provider(self.deps.ledger, name)
        if not conn.drop(self.deps.ledger, provider.name, user.name, by=user.name,
                         reason="user", meta=meta(req, user.name)):
            raise NotFound(f"you have no connection to {provider.name!r}")
        state, _ = conn.load_connection(self.deps.ledger, user.name, provider.name)
        view = conn.connection_view(provider, state, self.deps.ledger.clock())
        view["user"] = user.name
        resp.media = view


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the user's connection routes."""
    app.add_route(f"{API}/users/me/connections", MyConnectionsResource(deps))
    app.add_route(f"{API}/users/me/connections/{{name}}", MyConnectionResource(deps))
