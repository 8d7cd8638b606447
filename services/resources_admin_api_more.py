"""More of the admin JSON API under /rest/oauthledger/1/: this installation's consumer
info, fetching another application's consumer info, service providers, access tokens
(all users' for admins, one's own for everybody), the OpenAPI document, and the public
consumer-info XML. Errors are application/problem+json (RFC 9457)."""

from __future__ import annotations

from typing import Any

import falcon

from services import installation as inst
from services import providers as prov
from services import tokens as tok
from services.access import api_admin, api_user
from services.deps import Deps
from services.errors import ValidationError
from services.openapi import openapi_document
from services.resources_admin_api import API, ApiBase, json_body
from services.web import meta


def _system_meta(req: falcon.Request) -> dict[str, Any]:
    # The identity is generated on first use, possibly by an anonymous XML fetch.
    return meta(req, "system")


class ConsumerInfoXml(ApiBase):
    """GET this installation's consumer info as XML (REFERENCE.md "Endpoints")."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = inst.ensure_installation(self.deps.ledger, self.deps.sealer, _system_meta(req))
        resp.content_type = "application/xml; charset=utf-8"
        resp.text = inst.consumer_info_xml(state)


class ConsumerInfoResource(ApiBase):
    """GET the identity; PATCH its name and description."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        state = inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, admin.name))
        resp.media = inst.installation_view(state)

    def on_patch(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        data = json_body(req)
        unknown = {k: "unknown field" for k in data if k not in ("name", "description")}
        bad = {k: "must be a string" for k in ("name", "description")
               if k in data and not isinstance(data[k], str)}
        if unknown or bad:
            raise ValidationError({**unknown, **bad})
        current = inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                           meta(req, admin.name))
        state = inst.update_installation(
            self.deps.ledger, self.deps.sealer, data.get("name", current.name),
            data.get("description", current.description), meta(req, admin.name))
        resp.media = inst.installation_view(state)


class RotateResource(ApiBase):
    """POST: replace the RSA key pair."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        state = inst.rotate_key_pair(self.deps.ledger, self.deps.sealer, meta(req, admin.name))
        resp.media = inst.installation_view(state)


class RemoteConsumerInfoResource(ApiBase):
    """GET ?baseUrl=...: fetch another application's consumer info (nothing is stored)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        base = req.get_param("baseUrl") or ""
        if not base:
            raise ValidationError({"base_url": "is required"})
        resp.media = inst.fetch_consumer_info(base).view()


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


class OpenApiResource:
    """GET the OpenAPI 3 description of this API (public: it holds no data)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = openapi_document()


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the routes (see services/openapi.py for their description)."""
    app.add_route(inst.CONSUMER_INFO_PATH, ConsumerInfoXml(deps))
    app.add_route(f"{API}/openapi.json", OpenApiResource())
    app.add_route(f"{API}/consumer-info", ConsumerInfoResource(deps))
    app.add_route(f"{API}/consumer-info/rotate", RotateResource(deps))
    app.add_route(f"{API}/remote-consumer-info", RemoteConsumerInfoResource(deps))
    app.add_route(f"{API}/service-providers", ProvidersResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}", ProviderResource(deps))
    app.add_route(f"{API}/tokens", TokensResource(deps))
    app.add_route(f"{API}/tokens/{{token}}", TokenResource(deps))
    app.add_route(f"{API}/users/me/access-tokens", MyTokensResource(deps))
    app.add_route(f"{API}/users/me/access-tokens/{{token}}", MyTokenResource(deps))
