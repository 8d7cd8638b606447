"""Protected resources (Jira-style ``/rest/api/2/myself``), the public server info, and
the verify API other resource servers call."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

import falcon

from oauthledger.events import keys as k
from oauthledger.events.state import (
    ResourceServerState,
    UserState,
    resource_server_stream,
    user_stream,
)
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import basic_credentials, read_body
from oauthledger.services.http.errors import problem_json
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import parse_request

VERSION = "0.1.0"
_NAME_TTL = 30.0


class MyselfResource:
    """GET the authenticated user, Jira style, plus the consumer that acts for them."""

    oauth_protected = True

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # Display names are cosmetic, so a short in-process cache keeps the hot path at
        # one Redis round trip; disabling a user revokes their tokens, which the
        # authenticator sees at once.
        self._names: dict[str, tuple[float, str]] = {}

    def _display_name(self, name: str) -> str:
        now = time.monotonic()
        hit = self._names.get(name)
        if hit and hit[0] > now:
            return hit[1]
        user = self.deps.read_model.get(k.USER, name)
        if user is None:
            user, _ = self.deps.ledger.load(user_stream(name))
        assert user is None or isinstance(user, UserState)
        display = user.display_name if user else name
        if len(self._names) > 10000:
            self._names.clear()
        self._names[name] = (now + _NAME_TTL, display)
        return display

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context.oauth
        name = ctx.user
        base = self.deps.settings.base_url or req.prefix
        resp.media = {
            "self": f"{base}/rest/api/2/user?username={name}",
            "key": name,
            "name": name,
            "displayName": self._display_name(name),
            "active": True,
            "oauth": {
                "consumerKey": ctx.consumer.key,
                "consumerName": ctx.consumer.name,
                "twoLegged": ctx.two_legged,
                "tokenExpiresAt": int(ctx.token.expires_at) if ctx.token else None,
            },
        }


class ServerInfoResource:
    """GET without authentication (Jira's serverInfo)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        base = self.deps.settings.base_url or req.prefix
        resp.media = {"baseUrl": base, "version": VERSION, "serverTitle": "oauthledger",
                      "deploymentType": "Server"}


class VerifyResource:
    """POST a request another resource server received; answer who it authenticates.

    The caller authenticates with HTTP Basic (resource-server id and secret from
    ``oauthledger resource-server add``). Body: ``{"method", "url", "headers", "body"}``.
    A refused request is ``{"valid": false, "oauth_problem": ..., "status": ...,
    "wwwAuthenticate": ...}`` so the resource server can relay it verbatim."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _caller(self, req: falcon.Request) -> ResourceServerState | None:
        try:
            creds = basic_credentials(req)
        except ValueError:
            return None
        if creds is None:
            return None
        server_id, secret = creds
        state = self.deps.read_model.get(k.RESOURCE_SERVER, server_id)
        if state is None:
            state, _ = self.deps.ledger.load(resource_server_stream(server_id))
        assert state is None or isinstance(state, ResourceServerState)
        if state is None or state.removed:
            return None
        expected = self.deps.sealer.open(state.secret_sealed)
        return state if hmac.compare_digest(expected.encode(), secret.encode()) else None

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        if self._caller(req) is None:
            resp.set_header("WWW-Authenticate", 'Basic realm="oauthledger resource servers"')
            problem_json(resp, 401, "Resource-server credential required",
                         "authenticate with the id and secret from "
                         "`oauthledger resource-server add`")
            return
        try:
            payload = json.loads(read_body(req) or b"{}")
            method = str(payload["method"]).upper()
            url = str(payload["url"])
            raw_headers = dict(payload.get("headers") or {})
            headers = {str(a).lower(): str(b) for a, b in raw_headers.items()}
            body = str(payload.get("body") or "").encode("utf-8")
        except (ValueError, KeyError, TypeError, AttributeError):
            problem_json(resp, 400, "Bad verify request",
                         'send JSON {"method": ..., "url": ..., "headers": {...}, "body": ...}')
            return
        try:
            # The caller submits the URL its client signed; parse_request normalizes it
            # (RFC 5849 §3.4.1.2) and refuses one it cannot use.
            sreq = parse_request(method, url, headers, body, headers.get("content-type"))
            ctx = deps.authenticator.authenticate_resource(sreq, https=url.startswith("https"))
        except OAuthProblem as problem:
            resp.media = _refused(problem, deps.settings.realm)
            return
        out: dict[str, Any] = {
            "valid": True,
            "user": ctx.user,
            "consumer": {"key": ctx.consumer.key, "name": ctx.consumer.name},
            "twoLegged": ctx.two_legged,
            "tokenExpiresAt": int(ctx.token.expires_at) if ctx.token else None,
        }
        resp.media = out


def _refused(problem: OAuthProblem, realm: str) -> dict[str, Any]:
    return {"valid": False, "oauth_problem": problem.problem, "status": problem.status,
            "advice": problem.advice, "params": problem.params,
            "wwwAuthenticate": problem.www_authenticate(realm)}


def add_routes(app: Any, deps: Deps) -> None:
    """Mount the REST resources."""
    app.add_route("/rest/api/2/myself", MyselfResource(deps))
    app.add_route("/rest/api/2/serverInfo", ServerInfoResource(deps))
    app.add_route("/rest/oauthledger/1/verify", VerifyResource(deps))
