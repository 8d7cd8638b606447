"""Login, logout, the home page and the health checks."""

from __future__ import annotations

import time

import falcon
import redis

from oauthledger.events.errors import StoreUnavailable
from oauthledger.events.state import user_stream
from oauthledger.services.deps import Deps
from oauthledger.services.http.web import current_session, ensure_session, form, render
from oauthledger.services.users import check_password


def safe_next(target: str | None) -> str:
    """Only same-site relative paths are followed after login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


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
        username = data.get("username", "").strip()[:100]
        target = safe_next(data.get("next"))

        def fail(message: str, status: int = 401) -> None:
            render(resp, deps, "login.html", status=status, csrf=sess.csrf, next=target,
                   error=message, username=username)

        if not deps.sessions.csrf_ok(sess, data.get("csrf_token")):
            fail("The form expired. Please sign in again.", 403)
            return
        subjects = (f"user:{username.lower()}", f"addr:{req.context.address}")
        wait = deps.sessions.wait_seconds(*subjects)
        if wait:
            resp.set_header("Retry-After", str(wait))
            fail(f"Too many failed sign-ins. Try again in {wait} seconds.", 429)
            return
        user, _ = deps.ledger.load(user_stream(username)) if username else (None, 0)
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


class HealthResource:
    """Liveness: answers without touching the store or Redis."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class ReadyResource:
    """Readiness: checks the store and Redis and says which is down."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, str] = {}
        started = time.monotonic()
        try:
            self.deps.store.ping()
            checks["store"] = "ok"
        except StoreUnavailable as exc:
            checks["store"] = f"down: {exc}"
        try:
            self.deps.redis.ping()
            checkpoint = self.deps.read_model.checkpoint()
            checks["redis"] = "ok"
            checks["projection"] = "rebuilding" if checkpoint is None else f"at {checkpoint}"
        except redis.RedisError as exc:
            checks["redis"] = f"down: {exc}"
        ok = checks.get("store") == "ok" and checks.get("redis") == "ok"
        resp.status = falcon.HTTP_200 if ok else falcon.HTTP_503
        resp.media = {"status": "ready" if ok else "unavailable", "checks": checks,
                      "elapsedMs": round((time.monotonic() - started) * 1000, 1)}


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount login, logout, home and health."""
    app.add_route("/login", LoginResource(deps))
    app.add_route("/logout", LogoutResource(deps))
    app.add_route("/", HomeResource(deps))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(deps))
