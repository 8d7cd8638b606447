"""Per-request context: the request id and event metadata, the client address behind
trusted proxies, Basic credentials, the URL the client signed, the (capped) body and
form, and the ``RequestContext`` middleware that sets them up, refuses path parameters
no identifier can be, and finishes every response (security headers, session
cookie). It also tells the logs which request is being served (services.logs: the
request id, route template, consumer and user of every log line, and the access log's
entry in the WSGI environ)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any
from urllib.parse import parse_qsl, quote

import falcon

from oauthledger.services import logs
from oauthledger.services.deps import Deps
from oauthledger.services.http.input_guard import check_path_params
from oauthledger.services.http.rendering import set_security_headers
from oauthledger.services.http.session_cookies import set_session_cookie
from oauthledger.services.oauth.request import SignedRequest, parse_request
from oauthledger.services.oauth.urls import is_trusted, signed_url

MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_PROBLEM = re.compile(r'oauth_problem="([a-z_]{1,64})"')


def client_address(req: falcon.Request, deps: Deps) -> str:
    """The client's address; X-Forwarded-For is believed only from a trusted proxy."""
    remote = req.remote_addr or ""
    if is_trusted(remote, deps.settings.trusted_proxies):
        forwarded = req.get_header("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return remote


def request_id(req: falcon.Request, deps: Deps) -> str:
    """The request's id: a well-formed ``X-Request-Id`` sent by a trusted proxy
    (OAUTHLEDGER_TRUSTED_PROXIES), which ties our lines to the proxy's; otherwise a new
    one. From anyone else the header is ignored: a client could otherwise give its
    requests the id of someone else's and muddle the audit trail (event metadata) and
    the logs (docs/operations.md, "Logs")."""
    rid = req.get_header("X-Request-Id")
    if rid and _REQUEST_ID.match(rid) and is_trusted(req.remote_addr,
                                                     deps.settings.trusted_proxies):
        return rid
    return secrets.token_hex(8)


def _problem_of(resp: falcon.Response) -> str | None:
    """The oauth_problem a response names in WWW-Authenticate (OAuth Problem Reporting),
    for a refusal whose handler recorded no Refusal on the request."""
    header = resp.get_header("WWW-Authenticate") or ""
    match = _PROBLEM.search(header)
    return match.group(1) if match else None


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
    """The URL the client signed (docs/oauth.md, "The URL that is signed": rebuilt from
    OAUTHLEDGER_BASE_URL or from forwarding headers of trusted proxies)."""
    raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        # gunicorn's RAW_URI carries the query; a server whose RAW_URI is the path alone
        # (falcon.testing's) still hands over the raw query in QUERY_STRING (PEP 3333).
        query = query or req.env.get("QUERY_STRING", "")
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


class RequestContext:
    """Request id, client address, security headers, and the session cookie."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Set ``req.context.request_id`` (:func:`request_id`) and
        ``req.context.address``, and start the request's log entry: the log records
        written while it is served carry its fields, and gunicorn's access log finds it
        in the environ."""
        req.context.request_id = request_id(req, self.deps)
        req.context.address = client_address(req, self.deps)
        entry = logs.RequestLog(req.context.request_id, method=req.method,
                                address=req.context.address, context=req.context)
        req.env[logs.ENVIRON_KEY] = entry
        logs.begin_request(entry)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        """Answer 404 for a path parameter no identifier can be (a control character or
        an unpaired surrogate) before any responder looks it up
        (services.http.input_guard). The log names the route by its template
        (``/rest/oauthledger/1/tokens/{token}``), never by the path: a path carries
        identifiers and, sent by a confused client, secrets."""
        _log_route(req)
        check_path_params(params)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        """Echo the request id, add the security headers, send or clear the cookie, and
        finish the request's log entry (its route and problem; gunicorn writes the access
        line from it after the body is sent)."""
        resp.set_header("X-Request-Id", req.context.get("request_id", ""))
        entry = req.env.get(logs.ENVIRON_KEY)
        if isinstance(entry, logs.RequestLog):
            _log_route(req)
            if entry.oauth_problem is None and resp.get_header("WWW-Authenticate"):
                entry.oauth_problem = _problem_of(resp)
        logs.end_request()
        set_security_headers(resp)
        # Token secrets, generated shared secrets, verifiers and session pages must never
        # sit in a browser or proxy cache (RFC 9111 §5.2.2.5); only static files may.
        if not req.path.startswith("/static/"):
            resp.set_header("Cache-Control", "no-store")
        new = req.context.get("new_session")
        if new is not None:
            set_session_cookie(req, resp, new)
        elif req.context.get("end_session"):
            set_session_cookie(req, resp, None)


def _log_route(req: falcon.Request) -> None:
    entry = req.env.get(logs.ENVIRON_KEY)
    if isinstance(entry, logs.RequestLog) and req.uri_template:
        entry.route = req.uri_template
