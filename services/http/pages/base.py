"""What every OAuth Administration page shares: the paths, the admin check, the anti-CSRF
refusal, notices after a redirect, ``see_other`` and the ``when`` template filter.

Rules every handler follows (docs/admin.md, "Who may use it"): admins only (anonymous
users go to the login page, others get 403); every POST carries the session's anti-CSRF
token (synchronizer-token pattern) or changes nothing; invalid input is shown next to its
field and changes nothing; secrets are shown once, on the page that created them; the
security headers of services.http.rendering (X-Frame-Options DENY, CSP frame-ancestors
'none') apply to every page.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import falcon

from oauthledger.events.state import UserState
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.http.access import page_session
from oauthledger.services.http.context import form, meta
from oauthledger.services.http.rendering import render, templates
from oauthledger.services.sessions import Session

ADMIN = "/plugins/servlet/oauth/admin"
USER_TOKENS = "/plugins/servlet/oauth/users/access-tokens"

# Notices after a redirect (Post/Redirect/Get) are codes, never text from the request,
# so nothing a third party puts in a link is displayed.
NOTICES = {
    "consumer-updated": "The consumer was saved.",
    "consumer-removed": "The consumer was removed and all its tokens were revoked.",
    "info-updated": "The consumer info was saved.",
    "key-rotated": "A new key pair was generated. Give service providers the new public key.",
    "provider-added": "The service provider was added.",
    "provider-removed": "The service provider was removed.",
    "token-revoked": "The access token was revoked. The application can no longer use it.",
    "token-gone": "That token was already revoked, renewed or expired.",
}

# What a 404 page names -> (its tab, the page it links back to).
_NOT_FOUND_TABS = {
    "consumer": ("consumers", ADMIN),
    "service provider": ("service-providers", f"{ADMIN}/service-providers"),
}


def when(ts: float | None) -> str:
    """A timestamp for people: UTC, to the minute."""
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def use_page_filters(deps: Deps) -> None:
    """Give the templates the ``when`` filter (each pages module calls this; idempotent)."""
    templates(deps).filters.setdefault("when", when)


# -- guards ------------------------------------------------------------------------------


def admin_session(req: falcon.Request, resp: falcon.Response, deps: Deps
                  ) -> tuple[UserState, Session] | None:
    """The admin and their session; anonymous users are sent to log in (page_session),
    other users get a 403 page. None means the response is already rendered."""
    user, sess = page_session(req, deps)
    if not user.admin:
        render(resp, deps, "admin_forbidden.html", status=403, user=user, csrf=sess.csrf)
        return None
    return user, sess


def csrf_refused(req: falcon.Request, resp: falcon.Response, deps: Deps, user: UserState,
                 sess: Session, data: dict[str, str]) -> bool:
    """True (and a 403 page rendered) when the form lacks the session's CSRF token."""
    if deps.sessions.csrf_ok(sess, data.get("csrf_token")):
        return False
    render(resp, deps, "admin_forbidden.html", status=403, user=user, csrf=sess.csrf,
           reason="csrf")
    return True


def form_lists(req: falcon.Request) -> dict[str, list[str]]:
    """Every value of every form field (checkbox groups repeat their name)."""
    form(req)  # reads and caches the body (64 KiB cap)
    out: dict[str, list[str]] = {}
    for k, v in parse_qsl(req.context.body.decode("utf-8"), keep_blank_values=True):
        out.setdefault(k, []).append(v)
    return out


def see_other(path: str, **params: str) -> falcon.HTTPSeeOther:
    """A 303 to ``path`` with ``params`` as its query (Post/Redirect/Get)."""
    return falcon.HTTPSeeOther(path + ("?" + urlencode(params) if params else ""))


def notice(req: falcon.Request) -> str | None:
    """The text of the ``done`` code a redirect carried, if it names a known notice."""
    return NOTICES.get(req.get_param("done") or "")


class Page:
    """Base of the page resources: the deps, the admin-and-CSRF check of a POST, and
    rendering with the user and their CSRF token."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def admin_post(self, req: falcon.Request, resp: falcon.Response
                   ) -> tuple[UserState, Session, dict[str, str]] | None:
        """The admin, their session and the posted form, once both the admin check and
        the anti-CSRF check passed; None when a refusal page is already rendered."""
        who = admin_session(req, resp, self.deps)
        if who is None:
            return None
        user, sess = who
        data = form(req)
        if csrf_refused(req, resp, self.deps, user, sess, data):
            return None
        return user, sess, data

    def page(self, resp: falcon.Response, template: str, user: UserState, sess: Session,
             status: int = 200, **context: Any) -> None:
        """Render ``template`` for ``user`` with the session's CSRF token."""
        render(resp, self.deps, template, status=status, user=user, csrf=sess.csrf,
               **context)

    def not_found(self, resp: falcon.Response, user: UserState, sess: Session,
                  what: str) -> None:
        """The 404 page for a consumer or a service provider, linking back to its tab."""
        tab, back = _NOT_FOUND_TABS[what]
        self.page(resp, "admin_not_found.html", user, sess, status=404, tab=tab, what=what,
                  back=back)


class RemoveAction(Page):
    """POST ``field``: remove one entity through its service, then back to its tab with
    a notice; the 404 page when it is already gone. Subclasses name the form field, the
    service call, the noun of the 404 page and where to go."""

    field: str
    noun: str
    back: str
    done: str

    def remove(self, ident: str, event_meta: Mapping[str, Any]) -> object:
        """Call the service that removes the entity (NotFound when there is none)."""
        raise NotImplementedError

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        try:
            self.remove(data.get(self.field, ""), meta(req, user.name))
        except NotFound:
            self.not_found(resp, user, sess, self.noun)
            return
        raise see_other(self.back, done=self.done)
