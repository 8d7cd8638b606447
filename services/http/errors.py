"""Error responses: RFC 9457 problem+json, OAuth Problem Reporting, and the handlers that
map every expected failure to one of them (a 503 names the dependency that is down)."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import redis

from oauthledger.events.errors import ConcurrencyConflict, SealingError, StoreUnavailable
from oauthledger.events.store import UnstorableText
from oauthledger.services.connections import ProviderUnavailable
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.oauth.problems import OAuthProblem

log = logging.getLogger(__name__)


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

    def on_provider(req, resp, ex: ProviderUnavailable, params) -> None:  # type: ignore[no-untyped-def]
        # RFC 9110 §15.6.3: the upstream (the service provider) gave no usable answer.
        # Nothing was stored; the sentence names the provider and says what to do.
        problem_json(resp, 502, "Service provider unavailable", str(ex))

    def on_store(req, resp, ex: StoreUnavailable, params) -> None:  # type: ignore[no-untyped-def]
        log.error("event store unavailable: %s", ex)
        resp.set_header("Retry-After", "5")
        problem_json(resp, 503, "Event store unavailable",
                     "the event store (database) cannot be reached; nothing was changed",
                     dependency="store")

    def on_redis(req, resp, ex: Exception, params) -> None:  # type: ignore[no-untyped-def]
        # Only a request that cannot be answered without Redis gets here: a write that
        # reached the log answers success even when Redis cannot be told of it
        # (services.ledger.Ledger.commit; docs/design.md, "Read your writes").
        log.error("redis unavailable: %s", ex)
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
