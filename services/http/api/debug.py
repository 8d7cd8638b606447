"""The signature debugger in the admin JSON API: POST /rest/oauthledger/1/debug/signature
with ``{"method", "url", "headers": {...}, "body": "..."}`` (and optionally
``"remoteAddr"``, the address the request came from) answers the debugger's report
(services.oauth.debugger; docs/oauth.md, "Debugging signatures"). Or, with
``{"requestId": "..."}`` (and optionally ``"consumerKey"``), the report of a refused
request of the failure history, rebuilt from what the history kept (services/failures.py).
Admins only. The report never holds a secret nor a signature computed with one."""

from __future__ import annotations

from typing import Any

import falcon

from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.failures import history_report
from oauthledger.services.http.access import api_admin
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.oauth.debugger import debug_request, debug_signature, store_loader

_FIELDS = ("method", "url", "headers", "body", "remoteAddr")
_HISTORY_FIELDS = ("requestId", "consumerKey")


class SignatureDebugResource(ApiBase):
    """POST a request as a client sent it, or the id of a refused request in the
    failure history; the answer is the debugger's report (200 whatever the verdict; 404
    when the history does not hold the id; 422 names each bad field)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        data = json_body(req)
        if "requestId" in data:
            unknown: dict[str, Any] = {
                name: "give requestId alone (with consumerKey), or the request"
                for name in data if name not in _HISTORY_FIELDS}
            if unknown:
                raise ValidationError(unknown)
            report = history_report(self.deps, data["requestId"], data.get("consumerKey"))
            resp.media = report.to_dict()
            return
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
