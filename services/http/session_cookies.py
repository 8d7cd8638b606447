"""The browser session of a request: read from the session cookie (or made for the user a
trusted single sign-on proxy names), created on demand, and sent back as a cookie."""

from __future__ import annotations

import falcon

from oauthledger.services.deps import Deps
from oauthledger.services.oauth.urls import is_trusted
from oauthledger.services.sessions import COOKIE, Session


def current_session(req: falcon.Request, deps: Deps) -> Session | None:
    """The browser's session (from the cookie), or a session for the SSO user when a
    trusted proxy names one."""
    header = deps.settings.sso_user_header
    if header and is_trusted(req.remote_addr, deps.settings.trusted_proxies):
        user = req.get_header(header)
        if user:
            sess = req.context.get("sso_session")
            if sess is None:
                existing = deps.sessions.load(_cookie(req))
                sess = existing if existing and existing.user == user else \
                    deps.sessions.login(existing, user)
                req.context.sso_session = sess
                req.context.new_session = sess
            return sess
    return deps.sessions.load(_cookie(req))


def _cookie(req: falcon.Request) -> str | None:
    values = req.get_cookie_values(COOKIE)
    return values[0] if values else None


def ensure_session(req: falcon.Request, deps: Deps) -> Session:
    """The session, creating an anonymous one (it carries the login form's CSRF token)."""
    sess = current_session(req, deps)
    if sess is None:
        sess = deps.sessions.new()
        req.context.new_session = sess
    return sess


def set_session_cookie(req: falcon.Request, resp: falcon.Response, sess: Session | None) -> None:
    """Send the session cookie: HttpOnly, SameSite=Lax, Secure under https."""
    secure = req.scheme == "https" or (req.get_header("X-Forwarded-Proto") == "https")
    if sess is None:
        resp.unset_cookie(COOKIE, path="/")
        return
    resp.set_cookie(COOKIE, sess.sid, path="/", http_only=True, secure=secure,
                    same_site="Lax", max_age=8 * 3600)
