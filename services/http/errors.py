"""Error responses: RFC 9457 problem+json, OAuth Problem Reporting, and the handlers that
map every expected failure to one of them (a 503 names the dependency that is down).

The handler that answers an ``oauth_problem`` also tells the observers what happened
(services/http/outcome.py): it puts a :class:`Refusal` on ``req.context.refusal`` and
records the refusal in the consumer's failure history (services/failures.py) — one Redis
round trip, and only a registered consumer's key is ever kept or named. The 503 handlers
put the dependency that is down on ``req.context.dependency_error``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import falcon
import redis

from oauthledger.events.errors import ConcurrencyConflict, SealingError, StoreUnavailable
from oauthledger.events.store import UnstorableText
from oauthledger.services.connections import ProviderUnavailable
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.failures import RefusedRequest, failure_history
from oauthledger.services.http.context import external_url
from oauthledger.services.http.outcome import Refusal
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest

log = logging.getLogger(__name__)

VERIFY_ROUTE = "/rest/oauthledger/1/verify"


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


def mark_signed_request(req: falcon.Request, sreq: SignedRequest, step: str) -> None:
    """Tell the handler of an ``OAuthProblem`` raised while ``req`` is answered that it
    is the signed request ``sreq`` at ``step`` (services.failures.STEPS), so that a
    refusal is recorded with its parameters (protect.py and dance.py call this)."""
    req.context.signed_request = sreq
    req.context.oauth_step = step


def _received_url(req: falcon.Request) -> str:
    """The URL as it reached this server (before OAUTHLEDGER_BASE_URL or a trusted
    proxy's headers rebuild it): the debugger rebuilds the server's URL from it the way
    the front end does (services.http.context.external_url reads the path the same way)."""
    raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
    if raw and raw.startswith(("http://", "https://")):
        return raw  # absolute-form request target
    if raw:
        target = raw if "?" in raw or not req.env.get("QUERY_STRING") else \
            f"{raw}?{req.env['QUERY_STRING']}"
    else:
        target = quote(req.env.get("SCRIPT_NAME", "") + req.env.get("PATH_INFO", ""),
                       safe="/:@!$&'()*+,;=-._~%")
        if req.env.get("QUERY_STRING"):
            target += "?" + req.env["QUERY_STRING"]
    return f"{req.scheme}://{req.get_header('Host') or ''}{target}"


def _seen(req: falcon.Request, deps: Deps) -> RefusedRequest:
    sreq = req.context.get("signed_request")
    received = server = ""
    if sreq is not None:
        received, server = _received_url(req), external_url(req, deps)
    return RefusedRequest(
        request_id=req.context.get("request_id", ""),
        route=req.uri_template or req.path, step=req.context.get("oauth_step"),
        method=req.method, received_url=received, server_url=server,
        headers=req.headers_lower, body=req.context.get("body") or b"",
        remote_addr=req.remote_addr, signed=sreq)


def record_refusal(req: falcon.Request, deps: Deps, problem: OAuthProblem,
                   describe: Callable[[], RefusedRequest]) -> Refusal:
    """Record a refused signed request (as ``describe`` tells it) in its consumer's
    failure history and put the :class:`Refusal` on ``req.context.refusal`` (its
    consumer key only when it names a registered consumer). The answer to the client
    does not depend on it: when Redis cannot be told, the refusal is logged and answered
    all the same."""
    registered: str | None = None
    rid = req.context.get("request_id", "")
    try:
        registered = failure_history(deps).record(problem, describe())
    except redis.RedisError as exc:
        log.warning("failure history: refusal %s not recorded (Redis: %s)", rid, exc)
    except Exception:
        # An observer must never turn the client's oauth_problem into a 500.
        log.exception("failure history: refusal %s not recorded", rid)
    refusal = Refusal(problem.problem, registered, problem.advice or "")
    req.context.refusal = refusal
    return refusal


def record_verify_refusal(req: falcon.Request, deps: Deps, problem: OAuthProblem,
                          method: str, url: str, headers: Mapping[str, str], body: bytes,
                          sreq: SignedRequest | None) -> Refusal:
    """The verify API's refusal on behalf of a resource server (services/http/rest.py):
    the submitted request (``headers`` with lower-case names) recorded like a refusal of
    this server's own, under step ``verify``. ``sreq`` is the parsed request, None when
    its parameters could not be read."""
    def describe() -> RefusedRequest:
        return RefusedRequest(
            request_id=req.context.get("request_id", ""), route=VERIFY_ROUTE,
            step="verify", method=method, received_url=url, server_url=url,
            headers=headers, body=body, remote_addr=None, signed=sreq)

    return record_refusal(req, deps, problem, describe)


def note_accepted(deps: Deps, consumer_key: str) -> None:
    """Count an accepted signed request of a registered consumer for the chart of its
    failure history: in process memory, no Redis round trip (events/failures.py)."""
    failure_history(deps).note_accepted(consumer_key)


def install_error_handlers(app: falcon.App, deps: Deps) -> None:
    """Map every expected failure to a clear response; nothing a client sends is a 500."""

    def on_oauth(req: falcon.Request, resp: falcon.Response, ex: OAuthProblem,
                 params: dict) -> None:
        oauth_problem_response(resp, deps, ex)
        record_refusal(req, deps, ex, lambda: _seen(req, deps))

    def on_validation(req: falcon.Request, resp: falcon.Response, ex: ValidationError,
                      params: dict) -> None:
        problem_json(resp, 422, "Invalid input", str(ex), errors=ex.fields)

    def on_not_found(req, resp, ex: NotFound, params) -> None:  # type: ignore[no-untyped-def]
        problem_json(resp, 404, "Not found", str(ex))

    def on_conflict(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        problem_json(resp, 409, "Conflict", str(ex) if isinstance(ex, Conflict) else
                     "the entity changed while this request was processed; retry")

    def on_provider(req, resp, ex: ProviderUnavailable, params) -> None:  # type: ignore[no-untyped-def]
        # RFC 9110 §15.6.3: the upstream (the service provider) gave no usable answer.
        # Nothing was stored; the sentence names the provider and says what to do.
        problem_json(resp, 502, "Service provider unavailable", str(ex))

    def on_store(req, resp, ex: StoreUnavailable, params) -> None:  # type: ignore[no-untyped-def]
        log.error("event store unavailable: %s", ex)
        req.context.dependency_error = "store"
        resp.set_header("Retry-After", "5")
        problem_json(resp, 503, "Event store unavailable",
                     "the event store (database) cannot be reached; nothing was changed",
                     dependency="store")

    def on_redis(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        # Only a request that cannot be answered without Redis gets here: a write that
        # reached the log answers success even when Redis cannot be told of it
        # (services.ledger.Ledger.commit; docs/design.md, "Read your writes").
        log.error("redis unavailable: %s", ex)
        req.context.dependency_error = "redis"
        resp.set_header("Retry-After", "5")
        problem_json(resp, 503, "Redis unavailable", "Redis cannot be reached",
                     dependency="redis")

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

    def on_not_text(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        # JSON can spell an unpaired surrogate ("\ud800"), which no database, key ring or
        # signature can encode as UTF-8 (RFC 3629 §3), and the store refuses what the
        # database cannot hold: the client's input, not a fault (docs/event-store.md,
        # "Identifiers the database cannot hold").
        if isinstance(ex, UnicodeEncodeError) and ex.reason != "surrogates not allowed":
            on_unexpected(req, resp, ex, params)
            return
        problem_json(resp, 422, "Invalid input",
                     "a value in the request is not text that can be stored: an unpaired "
                     "surrogate (such as \\ud800 in JSON) or NUL in a name; send UTF-8 "
                     "text without control characters")

    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(UnstorableText, on_not_text)
    app.add_error_handler(UnicodeEncodeError, on_not_text)
    app.add_error_handler(OAuthProblem, on_oauth)
    app.add_error_handler(ValidationError, on_validation)
    app.add_error_handler(NotFound, on_not_found)
    app.add_error_handler(Conflict, on_conflict)
    app.add_error_handler(ProviderUnavailable, on_provider)
    app.add_error_handler(ConcurrencyConflict, on_conflict)
    app.add_error_handler(StoreUnavailable, on_store)
    app.add_error_handler(redis.RedisError, on_redis)
    app.add_error_handler(SealingError, on_sealing)

    def serialize(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
        # Falcon's own HTTP errors (404, 405, 413, bad form) as problem+json.
        problem_json(resp, ex.status_code, ex.title or "Error", ex.description)
        for name, value in (ex.headers or {}).items():
            resp.set_header(name, value)

    app.set_error_serializer(serialize)
