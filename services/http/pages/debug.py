"""The signature debugger page on the Consumers tab: a form for a request as a client sent
it (method, URL, headers as ``Name: value`` lines, body) and the debugger's report under
it (services.oauth.debugger; docs/oauth.md, "Debugging signatures"). Admins only; the
POST carries the session's anti-CSRF token like every admin form (docs/admin.md, "Who
may use it"). What the admin typed is shown again; no secret ever is.

A refused request of a consumer's failure history is debugged by its request id: the
second form of the page, or the link of each refusal on the consumer's page
(``?requestId=...&consumer=...``, a GET: it only reads).
"""

from __future__ import annotations

from typing import Any

import falcon
import redis

from oauthledger.events.state import UserState
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound, ValidationError
from oauthledger.services.failures import history_report
from oauthledger.services.http.pages.base import ADMIN, Page, admin_session, use_page_filters
from oauthledger.services.oauth.debugger import (
    Report,
    debug_request,
    debug_signature,
    header_lines,
    store_loader,
)
from oauthledger.services.sessions import Session

PATH = f"{ADMIN}/consumers/debug-signature"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_EMPTY = {"method": "GET", "url": "", "headers": "", "body": "", "remote_addr": ""}
# Text that marks a field as holding a secret: a verifier, a session handle, or a
# PLAINTEXT signature (the secrets themselves). Such fields are not filled in again.
_SECRET_MARKERS = ("oauth_verifier", "oauth_session_handle", "plaintext")


def _refill(values: dict[str, str]) -> tuple[dict[str, str], bool]:
    """What the admin typed, to show again; the URL, headers and body are left empty
    when one of them holds a secret (docs/design.md, "Sealed secrets": a page never
    shows one). The second value says whether that happened."""
    text = " ".join(values[k] for k in ("url", "headers", "body")).lower()
    if not any(marker in text for marker in _SECRET_MARKERS):
        return values, False
    return {**values, "url": "", "headers": "", "body": ""}, True


class SignatureDebugPage(Page):
    """GET the empty form; POST runs the debugger and shows the report under the form."""

    def _show(self, resp: falcon.Response, user: UserState, sess: Session,
              values: dict[str, str], errors: dict[str, str], report: Report | None,
              status: int = 200, history: dict[str, str] | None = None) -> None:
        shown, cleared = _refill(values)
        self.page(resp, "admin_debug_signature.html", user, sess, status=status,
                  tab="consumers", values=shown, cleared=cleared, errors=errors,
                  methods=METHODS, report=report,
                  history=history or {"request_id": "", "consumer": ""})

    def _from_history(self, resp: falcon.Response, user: UserState, sess: Session,
                      request_id: str, consumer: str) -> None:
        """The report of a refusal of the failure history, or the page with the error
        next to the request-id field."""
        history = {"request_id": request_id, "consumer": consumer}
        try:
            report = history_report(self.deps, request_id.strip(), consumer.strip() or None)
        except (ValidationError, NotFound) as exc:
            message = ("is not a request id (1-100 characters of A-Z a-z 0-9 . _ : -)"
                       if isinstance(exc, ValidationError) else str(exc))
            self._show(resp, user, sess, dict(_EMPTY), {"request_id": message}, None,
                       status=422 if isinstance(exc, ValidationError) else 404,
                       history=history)
            return
        except redis.RedisError:
            self._show(resp, user, sess, dict(_EMPTY), {
                "request_id": "the failure history cannot be read now: Redis cannot be "
                              "reached"}, None, status=503, history=history)
            return
        self._show(resp, user, sess, dict(_EMPTY), {}, report, history=history)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        request_id = req.get_param("requestId")
        if request_id is not None:
            self._from_history(resp, *who, request_id, req.get_param("consumer") or "")
            return
        self._show(resp, *who, dict(_EMPTY), {}, None)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        if "request_id" in data:
            self._from_history(resp, user, sess, data["request_id"], data.get("consumer", ""))
            return
        values: dict[str, Any] = {k: data.get(k, "") for k in _EMPTY}
        try:
            dreq = debug_request(values["method"], values["url"],
                                 header_lines(values["headers"]), values["body"],
                                 values["remote_addr"].strip() or None)
        except ValidationError as exc:
            errors = {("remote_addr" if k == "remoteAddr" else k): v
                      for k, v in exc.fields.items()}
            self._show(resp, user, sess, values, errors, None, status=422)
            return
        report = debug_signature(dreq, store_loader(self.deps.store, self.deps.sealer),
                                 self.deps.settings, now=self.deps.clock())
        self._show(resp, user, sess, values, {}, report)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the signature debugger page."""
    use_page_filters(deps)
    app.add_route(PATH, SignatureDebugPage(deps))
