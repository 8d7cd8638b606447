"""Access tokens: the admins' Tokens tab (every token, filterable, revocable) and the
page where each signed-in user sees and revokes the access they granted."""

from __future__ import annotations

import falcon

from oauthledger.services import consumers as svc
from oauthledger.services import tokens as tok
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.http.access import page_session
from oauthledger.services.http.context import form, meta
from oauthledger.services.http.pages.base import (
    ADMIN,
    USER_TOKENS,
    Page,
    admin_session,
    csrf_refused,
    notice,
    see_other,
    use_page_filters,
)


class AdminTokensPage(Page):
    """GET every access token, filterable by user, consumer and status; POST revokes."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        filters = {k: (req.get_param(k) or "").strip()[:200] for k in ("user", "consumer",
                                                                      "status")}
        if filters["status"] not in ("", *tok.STATUSES):
            filters["status"] = ""
        rows = tok.list_access_tokens(self.deps.ledger, user=filters["user"] or None,
                                      consumer=filters["consumer"] or None,
                                      status=filters["status"] or None)
        self.page(resp, "tokens_admin.html", *who, tab="tokens", rows=rows,
                  filters=filters, statuses=tok.STATUSES,
                  consumers=svc.list_consumers(self.deps.ledger), notice=notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        done = _revoke(self.deps, req, data.get("token", ""), user.name, owner=None)
        back = {k: data[k] for k in ("user", "consumer", "status") if data.get(k)}
        raise see_other(f"{ADMIN}/tokens", **back, done=done)


def _revoke(deps: Deps, req: falcon.Request, token: str, by: str, owner: str | None) -> str:
    try:
        state = tok.revoke_token(deps.ledger, token, by=by, meta=meta(req, by), owner=owner)
    except NotFound:
        return "token-gone"
    return "token-revoked" if state.status == "revoked" else "token-gone"


class UserTokensPage(Page):
    """GET the signed-in user's access tokens; POST revokes one of them."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        rows = tok.list_access_tokens(self.deps.ledger, user=user.name)
        self.page(resp, "tokens_user.html", user, sess,
                  active=[r for r in rows if r.revocable],
                  past=[r for r in rows if not r.revocable][:50], notice=notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        data = form(req)
        if csrf_refused(req, resp, self.deps, user, sess, data):
            return
        done = _revoke(self.deps, req, data.get("token", ""), user.name, owner=user.name)
        raise see_other(USER_TOKENS, done=done)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the admins' Tokens tab and the users' own access-token page."""
    use_page_filters(deps)
    app.add_route(f"{ADMIN}/tokens", AdminTokensPage(deps))
    app.add_route(USER_TOKENS, UserTokensPage(deps))
