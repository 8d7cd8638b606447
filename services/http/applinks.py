"""The application-links manifest Atlassian applications read when they are given this
installation's URL (docs/oauth.md, "Server info and the application-links manifest"):
``GET /rest/applinks/1.0/manifest``, XML as Atlassian publishes it, JSON when asked for."""

from __future__ import annotations

from typing import Any

import falcon

from oauthledger.services import installation as inst
from oauthledger.services.applinks_manifest import MANIFEST_PATH, build_manifest, manifest_xml
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import meta

# Atlassian answers XML unless the client prefers JSON; a client that accepts neither
# still gets the XML (the document has one form per media type, nothing to negotiate
# away).
_OFFERED = ("application/xml", "text/xml", "application/json")


class ManifestResource:
    """GET this installation's manifest: no sign-in, like the consumer info."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The id is derived from the consumer-info key, so the identity is generated on
        # first use here as on the consumer-info XML (docs/oauth.md, "Endpoints").
        state = inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, "system"))
        manifest = build_manifest(state, self.deps.settings.base_url or req.prefix)
        resp.vary = ("Accept",)
        if req.client_prefers(_OFFERED) == "application/json":
            resp.media = manifest.view()
        else:
            resp.content_type = "application/xml; charset=utf-8"
            resp.text = manifest_xml(manifest)


def add_routes(app: Any, deps: Deps) -> None:
    """Mount the manifest."""
    app.add_route(MANIFEST_PATH, ManifestResource(deps))
