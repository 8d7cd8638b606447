"""Login, logout and the home page."""

from __future__ import annotations

import falcon

from oauthledger.events.state import UserState, user_stream
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import form
from oauthledger.services.http.input_guard import impossible_identifier
from oauthledger.services.http.rendering import render
from oauthledger.services.http.session_cookies import current_session, ensure_session
from oauthledger.services.oauth.redirects import local_target
from oauthledger.services.sessions import login_subjects
from oauthledger.services.users import check_password


def safe_next(target: str | None) -> str:
    """Only paths a browser resolves to this site are followed after login (no open
    redirect: ``/<TAB>/evil.example.com`` is ``//evil.example.com`` to a browser); the
    result is ASCII, safe for the ``Location`` header (services.oauth.redirects)."""
    return local_target(target)


class LoginResource:
    """GET shows the form; POST checks the password, throttling repeated failures."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        sess = ensure_session(req, self.deps)
        if sess.user:
            raise falcon.HTTPSeeOther(safe_next(req.get_param("next")))
        render(resp, self.deps, "login.html", csrf=sess.csrf, next=safe_next(req.get_param("next")),
               error=None, username="")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        sess = ensure_session(req, deps)
        data = form(req)
        raw_username = data.get("username", "")
        username = raw_username.strip()[:100]
        target = safe_next(data.get("next"))

        def fail(message: str, status: int = 401) -> None:
            render(resp, deps, "login.html", status=status, csrf=sess.csrf, next=target,
                   error=message, username=username)

        if not deps.sessions.csrf_ok(sess, data.get("csrf_token")):
            fail("The form expired. Please sign in again.", 403)
            return
        if impossible_identifier(raw_username):
            # No account has such a name (services.http.input_guard), wherever the control
            # character sits (str.strip() would take U+001F or U+0085 for a blank): the
            # answer of a wrong password, without a lookup or a failure count.
            fail("Wrong username or password.")
            return
        subjects = login_subjects(username, req.context.address)
        wait = deps.sessions.wait_seconds(*subjects)
        if wait:
            resp.set_header("Retry-After", str(wait))
            fail(f"Too many failed sign-ins. Try again in {wait} seconds.", 429)
            return
        user, _ = deps.ledger.load(user_stream(username)) if username else (None, 0)
        assert user is None or isinstance(user, UserState)
        if not check_password(user, data.get("password", "")):
            deps.sessions.record_failure(*subjects, allowed=deps.settings.login_max_failures)
            fail("Wrong username or password.")
            return
        deps.sessions.clear_failures(*subjects)
        req.context.new_session = deps.sessions.login(sess, username)
        raise falcon.HTTPSeeOther(target)


class LogoutResource:
    """POST ends the session (with the CSRF token, so a third party cannot log you out)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        sess = current_session(req, self.deps)
        data = form(req)
        if sess is not None and self.deps.sessions.csrf_ok(sess, data.get("csrf_token")):
            self.deps.sessions.logout(sess)
            req.context.end_session = True
        raise falcon.HTTPSeeOther("/login")


class HomeResource:
    """The signed-in user's start page."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        sess = current_session(req, self.deps)
        if sess is None or sess.user is None:
            raise falcon.HTTPSeeOther("/login")
        user, _ = self.deps.ledger.load(user_stream(sess.user))
        render(resp, self.deps, "home.html", user=user, csrf=sess.csrf)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount login, logout and home."""
    app.add_route("/login", LoginResource(deps))
    app.add_route("/logout", LogoutResource(deps))
    app.add_route("/", HomeResource(deps))
