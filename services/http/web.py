"""Request plumbing shared by the resources: request ids and metadata, the client
address behind trusted proxies, the signed URL, sessions, templates, security headers
and the error handlers (OAuth problems, problem+json, 503 naming the dependency)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import falcon
import jinja2
import redis

from oauthledger.events.errors import ConcurrencyConflict, SealingError, StoreUnavailable
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import ReadModelUnavailable
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest, parse_request
from oauthledger.services.oauth.urls import is_trusted, signed_url
from oauthledger.services.sessions import COOKIE, Session

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
TEMPLATES = Path(__file__).with_name("templates")

# Pages must never be framed (clickjacking an approve button): both the legacy header
# and CSP frame-ancestors. No form-action: Chromium applies it to the redirect that
# carries the verifier to the consumer's callback.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def make_templates() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template (all output is escaped)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


# -- per-request context ---------------------------------------------------------------


def client_address(req: falcon.Request, deps: Deps) -> str:
    """The client's address; X-Forwarded-For is believed only from a trusted proxy."""
    remote = req.remote_addr or ""
    if is_trusted(remote, deps.settings.trusted_proxies):
        forwarded = req.get_header("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return remote


def basic_credentials(req: falcon.Request) -> tuple[str, str] | None:
    """(name, password) of an ``Authorization: Basic`` header; None without one.
    Raises ValueError when the header is not base64 of ``name:password`` in UTF-8."""
    scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed Basic credentials") from None
    if not sep:
        raise ValueError("malformed Basic credentials")
    return name, password


def meta(req: falcon.Request, actor: str) -> dict[str, Any]:
    """Event metadata: who acted, the request id, and from where."""
    return {"actor": actor, "request_id": req.context.request_id,
            "address": req.context.address}


def external_url(req: falcon.Request, deps: Deps) -> str:
    """The URL the client signed (REFERENCE.md: rebuilt from OAUTHLEDGER_BASE_URL or from
    forwarding headers of trusted proxies)."""
    raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    else:
        path = quote(req.env.get("SCRIPT_NAME", "") + req.env.get("PATH_INFO", ""),
                     safe="/:@!$&'()*+,;=-._~%")
        query = req.env.get("QUERY_STRING", "")
    return signed_url(
        base_url=deps.settings.base_url, scheme=req.scheme, host=req.get_header("Host") or "",
        path=path, query=query, remote_addr=req.remote_addr, headers=req.headers_lower,
        trusted_proxies=deps.settings.trusted_proxies,
    )


def is_https(url: str) -> bool:
    """True when the signed URL is https (PLAINTEXT is allowed only there)."""
    return url.startswith("https://")


def read_body(req: falcon.Request) -> bytes:
    """The request body, refused past 64 KiB (a form of OAuth parameters is far smaller)."""
    length = req.content_length or 0
    if length > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description="request body over 64 KiB")
    body = req.bounded_stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description="request body over 64 KiB")
    return body


def signed_request(req: falcon.Request, deps: Deps) -> tuple[SignedRequest, bool]:
    """Parse the OAuth parameters of ``req`` (header, form body or query). Returns the
    request and whether it arrived over https (as the client saw it)."""
    url = external_url(req, deps)
    body = read_body(req) if req.method in ("POST", "PUT", "PATCH") else b""
    req.context.body = body
    # Falcon builds (and caches) the lower-cased header map once per request.
    sreq = parse_request(req.method, url, req.headers_lower, body, req.content_type)
    return sreq, is_https(url)


def form(req: falcon.Request) -> dict[str, str]:
    """A urlencoded form body as a dict (the last value of a repeated field wins)."""
    body = getattr(req.context, "body", None)
    if body is None:
        body = read_body(req)
        req.context.body = body
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(description="the form is not UTF-8") from None


# -- sessions ----------------------------------------------------------------------------


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


# -- rendering ---------------------------------------------------------------------------


def render(resp: falcon.Response, deps: Deps, template: str, status: int = 200,
           **context: Any) -> None:
    """Render an HTML page."""
    env: jinja2.Environment = deps.extras["templates"]
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = env.get_template(template).render(**context)


def problem_json(resp: falcon.Response, status: int, title: str, detail: str | None = None,
                 **extra: Any) -> None:
    """RFC 9457 problem details."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    resp.status = status
    resp.content_type = "application/problem+json"
    resp.text = json.dumps(body)


def oauth_problem_response(resp: falcon.Response, deps: Deps, problem: OAuthProblem) -> None:
    """OAuth Problem Reporting: WWW-Authenticate and the same pairs in a form body."""
    resp.status = problem.status
    resp.set_header("WWW-Authenticate", problem.www_authenticate(deps.settings.realm))
    resp.content_type = "application/x-www-form-urlencoded"
    resp.text = problem.body()


# -- middleware and error handlers -------------------------------------------------------


class RequestContext:
    """Request id, client address, security headers, and the session cookie."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        rid = req.get_header("X-Request-Id")
        req.context.request_id = rid if rid and _REQUEST_ID.match(rid) else secrets.token_hex(8)
        req.context.address = client_address(req, self.deps)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        resp.set_header("X-Request-Id", req.context.get("request_id", ""))
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Content-Security-Policy", CSP)
        # Authorize URLs carry the request token: never leak them in a Referer.
        resp.set_header("Referrer-Policy", "no-referrer")
        if resp.content_type and resp.content_type.startswith("text/html"):
            resp.set_header("Cache-Control", "no-store")
        new = req.context.get("new_session")
        if new is not None:
            set_session_cookie(req, resp, new)
        elif req.context.get("end_session"):
            set_session_cookie(req, resp, None)


def _wants_json(req: falcon.Request) -> bool:
    return req.path.startswith("/rest/")


def install_error_handlers(app: falcon.App, deps: Deps) -> None:
    """Map every expected failure to a clear response; nothing a client sends is a 500."""

    def on_oauth(req: falcon.Request, resp: falcon.Response, ex: OAuthProblem,
                 params: dict) -> None:
        oauth_problem_response(resp, deps, ex)

    def on_validation(req: falcon.Request, resp: falcon.Response, ex: ValidationError,
                      params: dict) -> None:
        problem_json(resp, 422, "Invalid input", str(ex), errors=ex.fields)

    def on_not_found(req, resp, ex: NotFound, params) -> None:  # type: ignore[no-untyped-def]
        problem_json(resp, 404, "Not found", str(ex))

    def on_conflict(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        problem_json(resp, 409, "Conflict", str(ex) if isinstance(ex, Conflict) else
                     "the entity changed while this request was processed; retry")

    def on_store(req, resp, ex: StoreUnavailable, params) -> None:  # type: ignore[no-untyped-def]
        log.error("event store unavailable: %s", ex)
        resp.set_header("Retry-After", "5")
        problem_json(resp, 503, "Event store unavailable",
                     "the event store (database) cannot be reached; nothing was changed",
                     dependency="store")

    def on_redis(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        log.error("redis unavailable: %s", ex)
        resp.set_header("Retry-After", "5")
        detail = ("the change was recorded in the event log and takes effect as soon as "
                  "Redis is reachable" if isinstance(ex, ReadModelUnavailable)
                  else "Redis cannot be reached")
        problem_json(resp, 503, "Redis unavailable", detail, dependency="redis")

    def on_sealing(req, resp, ex: SealingError, params) -> None:  # type: ignore[no-untyped-def]
        log.error("sealing key problem: %s", ex)
        problem_json(resp, 503, "Sealing key unavailable",
                     "a secret could not be opened with the configured key ring",
                     dependency="keys")

    def on_unexpected(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        # Falcon's own HTTPError and HTTPStatus keep their more specific handlers.
        log.exception("unexpected error on %s %s", req.method, req.path)
        problem_json(resp, 500, "Internal error",
                     f"request {req.context.get('request_id', '')} failed; see the server log")

    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(OAuthProblem, on_oauth)
    app.add_error_handler(ValidationError, on_validation)
    app.add_error_handler(NotFound, on_not_found)
    app.add_error_handler(Conflict, on_conflict)
    app.add_error_handler(ConcurrencyConflict, on_conflict)
    app.add_error_handler(StoreUnavailable, on_store)
    app.add_error_handler(redis.RedisError, on_redis)
    app.add_error_handler(ReadModelUnavailable, on_redis)
    app.add_error_handler(SealingError, on_sealing)

    def serialize(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
        # Falcon's own HTTP errors (404, 405, 413, bad form) as problem+json.
        problem_json(resp, ex.status_code, ex.title or "Error", ex.description)
        for name, value in (ex.headers or {}).items():
            resp.set_header(name, value)

    app.set_error_serializer(serialize)
