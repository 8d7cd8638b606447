"""Who is asking: admin checks for the JSON API (session or HTTP Basic) and the pages."""

from __future__ import annotations

from urllib.parse import urlencode

import falcon

from oauthledger.events.state import UserState, user_stream
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import basic_credentials
from oauthledger.services.http.session_cookies import current_session
from oauthledger.services.sessions import Session
from oauthledger.services.users import check_password


class ApiRefused(Exception):
    """401 or 403 for the JSON API, rendered as problem+json."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def api_user(req: falcon.Request, deps: Deps) -> UserState:
    """The signed-in user of a JSON API call: HTTP Basic (name and password) or the
    browser session. Browser calls that change state must send JSON (Content-Type
    application/json), which a cross-site form cannot, so no CSRF token is needed."""
    try:
        creds = basic_credentials(req)
    except ValueError as exc:
        raise ApiRefused(401, str(exc)) from None
    if creds is not None:
        name, password = creds
        state = deps.ledger.load(user_stream(name))[0] if name else None
        # check_password refuses a missing or disabled user as well as a wrong password.
        if not check_password(state, password):
            raise ApiRefused(401, "wrong username or password")
    else:
        sess = current_session(req, deps)
        if sess is None or not sess.user:
            raise ApiRefused(401, "sign in, or send HTTP Basic credentials of an admin")
        state = deps.ledger.load(user_stream(sess.user))[0]
    if state is None or state.disabled:
        raise ApiRefused(401, "this account is disabled")
    return state


def api_admin(req: falcon.Request, deps: Deps) -> UserState:
    """An admin user, or ApiRefused (401 anonymous, 403 non-admin)."""
    user = api_user(req, deps)
    if not user.admin:
        raise ApiRefused(403, "only administrators may use this API")
    return user


def page_session(req: falcon.Request, deps: Deps) -> tuple[UserState, Session]:
    """The signed-in user of a page and their session (one session read), or a redirect
    to the login page."""
    sess = current_session(req, deps)
    if sess is None or sess.user is None:
        raise falcon.HTTPSeeOther("/login?" + urlencode({"next": req.relative_uri}))
    state, _ = deps.ledger.load(user_stream(sess.user))
    if state is None or state.disabled:
        deps.sessions.logout(sess)
        raise falcon.HTTPSeeOther("/login")
    return state, sess

