"""This installation's consumer identity in the JSON API (the Consumer Info tab), the
public consumer-info XML other applications fetch, and fetching another application's
consumer info (adding a consumer by URL)."""

from __future__ import annotations

from typing import Any

import falcon

from oauthledger.services import installation as inst
from oauthledger.services import remote_fetch
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.access import api_admin
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.http.context import meta


def _system_meta(req: falcon.Request) -> dict[str, Any]:
    # The identity is generated on first use, possibly by an anonymous XML fetch.
    return meta(req, "system")


class ConsumerInfoXml(ApiBase):
    """GET this installation's consumer info as XML (docs/oauth.md, "Endpoints")."""

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
    """GET ?baseUrl=...: fetch another application's consumer info (nothing is stored),
    vetted by services/remote_fetch.py (docs/admin.md, "Add by URL")."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        base = req.get_param("baseUrl") or ""
        if not base:
            raise ValidationError({"baseUrl": "is required"})
        # The request's environ tells the fetch this server's own addresses: a sync
        # worker must never fetch from itself.
        fetch_policy = remote_fetch.policy(self.deps.settings, req.env)
        try:
            info = remote_fetch.fetch_consumer_info(base, fetch_policy)
        except ValidationError as exc:
            # Named as the client sent it: the query parameter baseUrl.
            raise ValidationError({("baseUrl" if k == "base_url" else k): v
                                   for k, v in exc.fields.items()}) from None
        resp.media = info.view()


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the consumer-info routes."""
    app.add_route(inst.CONSUMER_INFO_PATH, ConsumerInfoXml(deps))
    app.add_route(f"{API}/consumer-info", ConsumerInfoResource(deps))
    app.add_route(f"{API}/consumer-info/rotate", RotateResource(deps))
    app.add_route(f"{API}/remote-consumer-info", RemoteConsumerInfoResource(deps))
