"""The signature debugger in the admin JSON API: POST /rest/oauthledger/1/debug/signature
with ``{"method", "url", "headers": {...}, "body": "..."}`` (and optionally
``"remoteAddr"``, the address the request came from) answers the debugger's report
(services.oauth.debugger; docs/oauth.md, "Debugging signatures"). Admins only. The
report never holds a secret nor a signature computed with one."""

from __future__ import annotations

import falcon

from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.access import api_admin
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.oauth.debugger import debug_request, debug_signature, store_loader

_FIELDS = ("method", "url", "headers", "body", "remoteAddr")


class SignatureDebugResource(ApiBase):
    """POST a request as a client sent it; the answer is the debugger's report (200
    whatever the verdict; 422 names each bad field)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        data = json_body(req)
        unknown = {name: "unknown field" for name in data if name not in _FIELDS}
        if unknown:
            raise ValidationError(unknown)
        dreq = debug_request(data.get("method"), data.get("url"), data.get("headers"),
                             data.get("body"), data.get("remoteAddr"))
        report = debug_signature(dreq, store_loader(self.deps.store, self.deps.sealer),
                                 self.deps.settings, now=self.deps.clock())
        resp.media = report.to_dict()


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the signature debugger's API route."""
    app.add_route(f"{API}/debug/signature", SignatureDebugResource(deps))
