"""Service providers this installation consumes, in the JSON API:
/rest/oauthledger/1/service-providers[/{name}]."""

from __future__ import annotations

from typing import Any

import falcon

from oauthledger.services import installation as inst
from oauthledger.services import providers as prov
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.access import api_admin
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.http.context import meta

_PROVIDER_FIELDS = {
    "name": ("name", str), "description": ("description", str),
    "consumerKey": ("consumer_key", str), "sharedSecret": ("shared_secret", str),
    "useRsaKey": ("use_rsa", bool), "requestTokenUrl": ("request_token_url", str),
    "authorizeUrl": ("authorize_url", str), "accessTokenUrl": ("access_token_url", str),
}


def provider_input(data: dict[str, Any]) -> prov.ProviderInput:
    """Map API JSON to ProviderInput, refusing unknown fields and wrong types by name."""
    errors: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        spec = _PROVIDER_FIELDS.get(name)
        if spec is None:
            errors[name] = "unknown field"
        elif value is not None and not isinstance(value, spec[1]):
            errors[name] = "must be true or false" if spec[1] is bool else "must be a string"
        elif value is not None:
            kwargs[spec[0]] = value
    if errors:
        raise ValidationError(errors)
    return prov.ProviderInput(**kwargs)


class ProvidersResource(ApiBase):
    """GET lists service providers; POST adds one."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        resp.media = {"serviceProviders": [prov.provider_view(s)
                                           for s in prov.list_providers(self.deps.ledger)]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        data = provider_input(json_body(req))
        if data.use_rsa:
            # Signing with our RSA key needs the key pair to exist.
            inst.ensure_installation(self.deps.ledger, self.deps.sealer, meta(req, admin.name))
        state = prov.add_provider(self.deps.ledger, self.deps.sealer, data,
                                  meta(req, admin.name))
        resp.status = falcon.HTTP_201
        resp.set_header("Location", f"{API}/service-providers/{state.name}")
        resp.media = prov.provider_view(state)


class ProviderResource(ApiBase):
    """GET one service provider; DELETE removes it."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        api_admin(req, self.deps)
        resp.media = prov.provider_view(prov.load_provider(self.deps.ledger, name))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        admin = api_admin(req, self.deps)
        prov.remove_provider(self.deps.ledger, name, meta(req, admin.name))
        resp.media = {"removed": name}


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the service-provider routes."""
    app.add_route(f"{API}/service-providers", ProvidersResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}", ProviderResource(deps))
