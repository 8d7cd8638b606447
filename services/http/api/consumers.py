"""The admin JSON API for consumers: /rest/oauthledger/1/consumers[/{key}],
/rest/oauthledger/1/consumer-secrets/{key} to replace a consumer's shared secret, and
/rest/oauthledger/1/consumer-failures/{key}: its failure history (services/failures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import falcon

from oauthledger.events.state import ConsumerState, consumer_stream
from oauthledger.services import consumers as svc
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound, ValidationError
from oauthledger.services.failures import failure_history
from oauthledger.services.http.access import ApiRefused, api_admin
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.http.context import meta
from oauthledger.services.http.errors import problem_json

_FIELDS = {
    # JSON name -> (ConsumerInput field, type)
    "name": ("name", str), "description": ("description", str),
    "callbackUrl": ("callback_url", str), "publicKey": ("public_key", str),
    "sharedSecret": ("secret", str), "generateSecret": ("generate_secret", bool),
    "signatureMethods": ("signature_methods", list), "threeLegged": ("three_legged", bool),
    "twoLeggedUser": ("two_legged_user", str), "allowImpersonation": ("allow_impersonation", bool),
    "allowOAuth10": ("allow_oauth10", bool),
    "allowPlaintextOverHttp": ("allow_plaintext_over_http", bool),
}


# Service field -> the JSON name a client sent: errors name what the client typed.
_JSON_NAME = {field: name for name, (field, _) in _FIELDS.items()} | {
    "callback_url": "callbackUrl", "public_key": "publicKey", "secret": "sharedSecret"}


@contextmanager
def json_field_names() -> Iterator[None]:
    """Re-raise a ValidationError from the service with the JSON field names."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError({_JSON_NAME.get(k, k): v for k, v in exc.fields.items()}) \
            from None


def consumer_input(data: dict[str, Any]) -> svc.ConsumerInput:
    """Map API JSON to ConsumerInput, refusing unknown fields and wrong types by name."""
    errors: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "key":
            continue
        spec = _FIELDS.get(name)
        if spec is None:
            errors[name] = "unknown field"
            continue
        field, typ = spec
        if value is None and typ is not bool:
            kwargs[field] = ""
            continue
        bad_list = isinstance(value, list) and not all(isinstance(x, str) for x in value)
        if not isinstance(value, typ) or bad_list:
            errors[name] = {str: "must be a string", bool: "must be true or false",
                            list: "must be a list of strings"}[typ]
            continue
        kwargs[field] = value
    if errors:
        raise ValidationError(errors)
    return svc.ConsumerInput(**kwargs)


class ConsumersResource(ApiBase):
    """GET lists consumers; POST registers one (the generated secret is returned once)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        states = svc.list_consumers(self.deps.ledger)
        counts = svc.outstanding_tokens(self.deps.ledger, [s.key for s in states])
        resp.media = {"consumers": [svc.consumer_public_view(s, counts[s.key]) for s in states]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        data = json_body(req)
        key = data.get("key")
        if not isinstance(key, str):
            raise ValidationError({"key": "is required"})
        with json_field_names():
            state, secret = svc.register_consumer(self.deps.ledger, self.deps.sealer, key,
                                                  consumer_input(data), meta(req, admin.name))
        body = svc.consumer_public_view(state, 0)
        if secret is not None:
            body["sharedSecret"] = secret  # shown once, here, and never again
        resp.status = falcon.HTTP_201
        resp.set_header("Location", f"{API}/consumers/{key}")
        resp.media = body


class ConsumerResource(ApiBase):
    """GET, PATCH (fields; the key cannot change) and DELETE (revokes all its tokens)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        api_admin(req, self.deps)
        state = svc.load_consumer(self.deps.ledger, key)
        body = svc.consumer_public_view(
            state, svc.outstanding_tokens(self.deps.ledger, [key])[key])
        if req.get_param("include") == "history":
            body["history"] = svc.consumer_history(self.deps.ledger, key)
        resp.media = body

    def on_patch(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        admin = api_admin(req, self.deps)
        data = json_body(req)
        if "key" in data and data["key"] != key:
            raise ValidationError({"key": "a consumer's key cannot change"})
        with json_field_names():
            state, secret = svc.update_consumer(self.deps.ledger, self.deps.sealer, key,
                                                consumer_input(data), meta(req, admin.name))
        body = svc.consumer_public_view(state)
        if secret is not None:
            body["sharedSecret"] = secret
        resp.media = body

    on_put = on_patch

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        admin = api_admin(req, self.deps)
        revoked = svc.remove_consumer(self.deps.ledger, key, meta(req, admin.name))
        resp.media = {"removed": key, "tokensRevoked": revoked}


def _given_secret(req: falcon.Request) -> str | None:
    """The secret an admin chose (``{"sharedSecret": "..."}``), or None to generate one.
    No body at all also means "generate"."""
    if not req.content_length and req.content_type is None:
        return None
    data = json_body(req)
    errors = {name: "unknown field" for name in data if name != "sharedSecret"}
    value = data.get("sharedSecret")
    if value is not None and not isinstance(value, str):
        errors["sharedSecret"] = "must be a string"
    if errors:
        raise ValidationError(errors)
    return value


class ConsumerSecretResource(ApiBase):
    """POST replaces the consumer's shared secret: a generated one, or ``sharedSecret``
    from the body. The new secret is in this answer only."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        admin = api_admin(req, self.deps)
        given = _given_secret(req)
        try:
            state, secret = svc.reset_secret(self.deps.ledger, self.deps.sealer, key,
                                             meta(req, admin.name), given)
        except ValidationError as exc:
            # The service names its field "secret"; this API calls it sharedSecret.
            raise ValidationError({("sharedSecret" if k == "secret" else k): v
                                   for k, v in exc.fields.items()}) from None
        body = svc.consumer_public_view(state)
        body["sharedSecret"] = secret  # shown once, here, and never again
        # RFC 9111 §5.2.2.5: no cache may keep the one copy of the new secret.
        resp.set_header("Cache-Control", "no-store")
        resp.media = body


def failures_limit(raw: str | None, most: int) -> int | None:
    """The ``limit`` query parameter: None when absent, else a whole number from 1 to
    ``most`` (ValidationError names ``limit`` otherwise)."""
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValidationError({"limit": f"must be a whole number from 1 to {most}"})
    return int(raw)


class ConsumerFailuresResource(ApiBase):
    """GET a consumer's failure history: its refused signed requests newest first
    (``?limit=N``), counted by problem for the last hour and day, and accepted vs refused
    per hour over the last 24 hours. A removed consumer's history is kept too; a key
    never registered is a 404. Read from Redis only (a 503 when it is down)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        api_admin(req, self.deps)
        history = failure_history(self.deps)
        limit = failures_limit(req.get_param("limit"), history.store.history)
        state, _ = self.deps.ledger.load(consumer_stream(key))
        if not isinstance(state, ConsumerState):
            raise NotFound(f"no consumer with key {key!r}")
        body = history.consumer_report(key, limit)
        body["removed"] = state.removed
        resp.media = body


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the admin API and its 401/403/429 rendering."""
    app.add_route(f"{API}/consumers", ConsumersResource(deps))
    app.add_route(f"{API}/consumers/{{key:path}}", ConsumerResource(deps))
    # Not /consumers/{key}/secret: a key may contain slashes, so /consumers/{key:path}
    # takes everything after /consumers/ and Falcon refuses a route below it.
    app.add_route(f"{API}/consumer-secrets/{{key:path}}", ConsumerSecretResource(deps))
    # For the same reason not /consumers/{key}/failures.
    app.add_route(f"{API}/consumer-failures/{{key:path}}", ConsumerFailuresResource(deps))

    def on_refused(req: falcon.Request, resp: falcon.Response, ex: ApiRefused,
                   params: dict) -> None:
        if ex.status == 401:
            resp.set_header("WWW-Authenticate", 'Basic realm="oauthledger"')
        if ex.retry_after is not None:
            # RFC 6585 §4: a 429 may say how long to wait.
            resp.set_header("Retry-After", str(ex.retry_after))
        problem_json(resp, ex.status, HTTPStatus(ex.status).phrase, ex.detail)

    app.add_error_handler(ApiRefused, on_refused)
