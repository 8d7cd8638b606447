"""A small Python client of oauthledger's call API, for other programs: call a service
provider on a user's behalf through oauthledger, which signs the request with the user's
stored token (docs/admin.md, "Calling a service provider").

Plain ``urllib``: no dependency beyond the standard library, so a script or another
service can copy or import it alone. Two ways to authenticate, as the API takes them:

- ``resource_server=(id, secret)``: a resource server created with
  ``oauthledger resource-server add ID --act-for-users``, which names the user of every
  call (``user=...``);
- ``basic=(name, password)``: a user acting as themselves (``user`` left out).

Example::

    from oauthledger.services.client import OAuthLedgerClient, OAuthLedgerError

    ledger = OAuthLedgerClient("https://ledger.example.com",
                               resource_server=("reports", "the-secret"))
    try:
        answer = ledger.call("Jira", "GET", "/rest/api/2/myself", user="alice")
    except OAuthLedgerError as exc:
        # 409: alice must press Connect; 502: Jira could not be reached; ...
        print(exc.status, exc.detail)
    else:
        print(answer.status, answer.json()["displayName"])

The provider's own status is ``answer.status``: a 404 from Jira is an answer, not an
exception. An exception means oauthledger refused or could not make the call.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

API = "/rest/oauthledger/1"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ProviderAnswer:
    """The service provider's answer as oauthledger relayed it: its status, the headers
    relayed (lower-case names), its body as text, and the connection's status after the
    call (``connected``, or ``needs_reconnect`` when the provider refused the token)."""

    status: int
    headers: dict[str, str]
    body: str
    connection: str
    renewed: bool = False

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not JSON)."""
        return json.loads(self.body)


class OAuthLedgerError(Exception):
    """oauthledger refused the call or could not make it: ``status`` is its HTTP status
    (None when oauthledger itself could not be reached), ``problem`` the RFC 9457
    problem details it answered with (``title``, ``detail``, and ``errors`` — a message
    per field — on a 422)."""

    def __init__(self, status: int | None, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.title = str(self.problem.get("title") or "")
        self.detail = str(self.problem.get("detail") or "")
        self.errors: dict[str, str] = dict(self.problem.get("errors") or {})
        where = f"HTTP {status}" if status is not None else "unreachable"
        super().__init__(f"{where}: {self.title}" + (f": {self.detail}" if self.detail else ""))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Credentials go to the configured server only: a redirect is an answer."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class OAuthLedgerClient:
    """A client of one oauthledger installation at ``base_url``. Give exactly one of
    ``resource_server=(id, secret)`` and ``basic=(name, password)``."""

    base_url: str
    resource_server: tuple[str, str] | None = None
    basic: tuple[str, str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.resource_server is None) == (self.basic is None):
            raise ValueError("give exactly one of resource_server=(id, secret) and "
                             "basic=(name, password)")
        self.base_url = self.base_url.rstrip("/")
        handlers: list[Any] = [_NoRedirects()]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never the secret or password
        who = (f"resource_server={self.resource_server[0]!r}" if self.resource_server
               else f"basic={self.basic[0]!r}" if self.basic else "")
        return f"OAuthLedgerClient({self.base_url!r}, {who})"

    def _authorization(self) -> str:
        name, secret = self.resource_server or self.basic or ("", "")
        return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode("ascii")

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self.base_url + API + path, data=data, method=method)
        req.add_header("Authorization", self._authorization())
        req.add_header("Accept", "application/json, application/problem+json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OAuthLedgerError(None, {"title": "oauthledger could not be reached",
                                          "detail": str(reason)}) from None
        if status >= 300:
            raise OAuthLedgerError(status, _problem(status, raw))
        try:
            return json.loads(raw)
        except ValueError:
            raise OAuthLedgerError(status, {"title": "not a JSON answer",
                                            "detail": raw[:200].decode("utf-8", "replace")}
                                   ) from None

    def call(self, provider: str, method: str, url: str, *, user: str | None = None,
             headers: Mapping[str, str] | None = None,
             body: str | bytes | None = None) -> ProviderAnswer:
        """Send ``method url`` to ``provider`` signed with the user's stored token and
        return its answer. ``url`` is a path under the provider (``/rest/api/2/myself``)
        or an absolute URL at its address; ``body`` is text (bytes are decoded as
        UTF-8). A resource server names ``user``; a Basic user leaves it out.

        Raises OAuthLedgerError: 404 no such provider or user, 409 not connected (the
        user must press Connect), 422 bad input (``errors`` names each field), 502 the
        provider could not be reached (nothing was stored), 401/403 refused caller."""
        payload: dict[str, Any] = {"method": method, "url": url,
                                   "headers": dict(headers or {})}
        if body is not None:
            payload["body"] = body.decode("utf-8") if isinstance(body, bytes) else body
        if user is not None:
            payload["user"] = user
        got = self._request("POST", f"/service-providers/{quote(provider, safe='')}/call",
                            payload)
        return ProviderAnswer(status=int(got["status"]), headers=dict(got["headers"]),
                              body=str(got["body"]), connection=str(got["connection"]),
                              renewed=bool(got.get("renewed")))

    def connections(self) -> list[dict[str, Any]]:
        """The Basic user's connection to every service provider: dicts with
        ``provider``, ``status`` (``not_connected``, ``connected``,
        ``needs_reconnect``), ``connectedAt``, ``expiresAt``, ... (a resource server
        has no connections of its own: 401)."""
        return list(self._request("GET", "/users/me/connections")["connections"])


def _problem(status: int, raw: bytes) -> dict[str, Any]:
    """The problem+json of an error answer, or one made from whatever came instead."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {"title": f"HTTP {status}", "status": status,
            "detail": raw[:200].decode("utf-8", "replace")}


__all__ = ["OAuthLedgerClient", "OAuthLedgerError", "ProviderAnswer"]
