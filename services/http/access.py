"""Who is asking: admin checks for the JSON API (session or HTTP Basic) and the pages."""

from __future__ import annotations

from urllib.parse import urlencode

import falcon

from oauthledger.events.state import UserState, user_stream
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import basic_credentials
from oauthledger.services.http.input_guard import impossible_identifier
from oauthledger.services.http.session_cookies import current_session
from oauthledger.services.sessions import Session, login_subjects
from oauthledger.services.users import check_password

# The request header that carries the session's anti-CSRF token on API changes made
# through the browser session (docs/admin.md, "The JSON API").
CSRF_HEADER = "X-CSRF-Token"
# Methods that change nothing (RFC 9110 §9.2.1); every other one needs the CSRF header
# when the caller is the browser session.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiRefused(Exception):
    """401, 403 or 429 for the JSON API, rendered as problem+json; ``retry_after`` (429)
    is the seconds to send in ``Retry-After``."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def api_user(req: falcon.Request, deps: Deps) -> UserState:
    """The signed-in user of a JSON API call: HTTP Basic (name and password) or the
    browser session. Basic shares the sign-in throttle of /login; a change made through
    the session must echo the session's anti-CSRF token in :data:`CSRF_HEADER`, since
    the cookie is sent whatever page made the request (synchronizer-token pattern, OWASP
    CSRF cheat sheet). Basic calls need no token: a browser adds no Basic credentials
    to a request on its own."""
    try:
        creds = basic_credentials(req)
    except ValueError as exc:
        raise ApiRefused(401, str(exc)) from None
    if creds is not None:
        state = _basic_user(req, deps, *creds)
    else:
        sess = current_session(req, deps)
        if sess is None or not sess.user:
            raise ApiRefused(401, "sign in, or send HTTP Basic credentials of an admin")
        if req.method not in _SAFE_METHODS and not deps.sessions.csrf_ok(
                sess, req.get_header(CSRF_HEADER)):
            raise ApiRefused(403, f"a change through the browser session must send the "
                                  f"session's anti-CSRF token in the {CSRF_HEADER} header")
        loaded = deps.ledger.load(user_stream(sess.user))[0]
        assert loaded is None or isinstance(loaded, UserState)
        state = loaded
    if state is None or state.disabled:
        raise ApiRefused(401, "this account is disabled")
    return state


def _basic_user(req: falcon.Request, deps: Deps, name: str, password: str) -> UserState | None:
    """The user whose Basic password is right, counted against the same failure counters
    and locks as /login (services.sessions.login_subjects). While a lock holds the
    password is not checked at all, so a locked account costs no argon2 work. A name no
    account can have (services.http.input_guard) is refused the same way as a wrong
    password, before any lookup or count: there is no account to protect."""
    if impossible_identifier(name):
        raise ApiRefused(401, "wrong username or password")
    subjects = login_subjects(name, req.context.address)
    wait = deps.sessions.wait_seconds(*subjects)
    if wait:
        raise ApiRefused(429, f"too many failed sign-ins; try again in {wait} seconds",
                         retry_after=wait)
    state = deps.ledger.load(user_stream(name))[0] if name else None
    assert state is None or isinstance(state, UserState)
    # check_password refuses a missing or disabled user as well as a wrong password.
    if not check_password(state, password):
        deps.sessions.record_failure(*subjects, allowed=deps.settings.login_max_failures)
        raise ApiRefused(401, "wrong username or password")
    deps.sessions.clear_failures(*subjects)
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
    assert state is None or isinstance(state, UserState)
    if state is None or state.disabled:
        deps.sessions.logout(sess)
        raise falcon.HTTPSeeOther("/login")
    return state, sess

