"""Service providers this installation consumes, in the JSON API:
/rest/oauthledger/1/service-providers[/{name}] (admins: list, add by hand or by base
URL, edit, remove), /service-providers/{name}/connections[/{user}] (admins: the users'
connections, and dropping one), and /service-providers/{name}/call (a user, or a
resource server acting for one: a request to the provider signed with the user's stored
token, its answer relayed in the body)."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import falcon

from oauthledger.events.state import ProviderState, ResourceServerState, UserState
from oauthledger.services import connections as conn
from oauthledger.services import installation as inst
from oauthledger.services import providers as prov
from oauthledger.services import remote_fetch
from oauthledger.services.applinks_manifest import fetch_manifest
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound, ValidationError
from oauthledger.services.http.access import ApiRefused, api_admin, api_user
from oauthledger.services.http.api.base import API, ApiBase, json_body
from oauthledger.services.http.context import basic_credentials, meta
from oauthledger.services.http.pages.service_providers import manifest_description
from oauthledger.services.resource_servers import load_resource_server

_PROVIDER_FIELDS = {
    "name": ("name", str), "description": ("description", str),
    "consumerKey": ("consumer_key", str), "sharedSecret": ("shared_secret", str),
    "useRsaKey": ("use_rsa", bool), "requestTokenUrl": ("request_token_url", str),
    "authorizeUrl": ("authorize_url", str), "accessTokenUrl": ("access_token_url", str),
}
# PATCH: the JSON names of provider_view, mapped to the ProviderInput names edit_provider
# takes. The name is the path's and cannot change.
_EDIT_FIELDS = {
    "description": ("description", str), "consumerKey": ("consumer_key", str),
    "sharedSecret": ("shared_secret", str), "useRsaKey": ("use_rsa", bool),
    "requestTokenUrl": ("request_token_url", str), "authorizeUrl": ("authorize_url", str),
    "accessTokenUrl": ("access_token_url", str), "baseUrl": ("base_url", str),
}
# Fields of provider_view that an edit cannot set (a client may send back what it read).
_READ_ONLY = frozenset({"signatureMethod", "hasSharedSecret", "version"})
_JSON_NAME = {service: name for name, (service, _) in _EDIT_FIELDS.items()}
# The add-by-base-URL form of POST (docs/admin.md, "Service Providers").
_BY_BASE_URL = ("name", "baseUrl", "description")
CONSUMER_INFO_PATH = "/plugins/servlet/oauth/consumer-info"


def provider_input(data: dict[str, Any]) -> prov.ProviderInput:
    """Map API JSON to ProviderInput, refusing unknown fields and wrong types by name."""
    errors: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        spec = _PROVIDER_FIELDS.get(name)
        if spec is None:
            errors[name] = "unknown field"
        elif value is not None and not isinstance(value, spec[1]):
            errors[name] = "must be true or false" if spec[1] is bool else "must be a string"
        elif value is not None:
            kwargs[spec[0]] = value
    if errors:
        raise ValidationError(errors)
    return prov.ProviderInput(**kwargs)


def edit_changes(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Map PATCH JSON (provider_view's names) to edit_provider's ``changes``, refusing
    unknown and read-only fields and wrong types by name. ``baseUrl: null`` clears the
    base URL; ``sharedSecret: null`` keeps the secret; a shared secret given without
    ``useRsaKey`` switches to HMAC-SHA1."""
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    for field, value in data.items():
        spec = _EDIT_FIELDS.get(field)
        if field == "name":
            if value != name:
                errors[field] = "cannot be changed: remove the provider and add it again"
        elif field in _READ_ONLY:
            errors[field] = "is read-only"
        elif spec is None:
            errors[field] = "unknown field"
        elif value is None and field in ("baseUrl", "sharedSecret"):
            if field == "baseUrl":
                changes["base_url"] = ""
        elif not isinstance(value, spec[1]):
            errors[field] = "must be true or false" if spec[1] is bool else "must be a string"
        else:
            changes[spec[0]] = value
    if errors:
        raise ValidationError(errors)
    if changes.get("shared_secret") and "use_rsa" not in changes:
        changes["use_rsa"] = False
    return changes


def with_moved_endpoints(state: ProviderState, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` plus, when they move a provider added by base URL to another base URL
    and its three endpoints are still the Atlassian paths under the old one (and this
    edit does not set them), the endpoints under the new base URL — as the edit page
    does (docs/admin.md, "Service Providers")."""
    old = (state.base_url or "").rstrip("/")
    new = (changes.get("base_url") or "").strip().rstrip("/")
    if not old or not new or new == old:
        return changes
    under_old = prov.endpoints_under(old)
    if any(changes.get(k, getattr(state, k)) != v for k, v in under_old.items()):
        return changes
    return {**changes, **prov.endpoints_under(new)}


def _json_names(exc: ValidationError) -> ValidationError:
    """The service's field names (ProviderInput's) as the JSON names the client sent."""
    return ValidationError({_JSON_NAME.get(k, k): v for k, v in exc.fields.items()})


def consumer_info_url(req: falcon.Request, deps: Deps) -> str:
    """Where the other application registers this installation as a consumer."""
    return (deps.settings.base_url or req.prefix).rstrip("/") + CONSUMER_INFO_PATH


def _by_base_url(req: falcon.Request, deps: Deps, data: dict[str, Any],
                 actor: str) -> prov.ProviderInput:
    """ProviderInput of the add-by-base-URL form: signed with this installation's RSA key,
    its consumer-info key as the consumer key; an empty name or description is taken
    from the application's manifest when it publishes one."""
    errors = {f: ("unknown field" if f not in _PROVIDER_FIELDS else
                  "cannot be given with baseUrl: a provider added by its base URL is "
                  "signed with this installation's RSA key, at the Atlassian paths")
              for f in data if f not in _BY_BASE_URL}
    errors.update({f: "must be a string" for f in _BY_BASE_URL
                   if data.get(f) is not None and not isinstance(data[f], str)})
    if errors:
        raise ValidationError(errors)
    name = (data.get("name") or "").strip()
    base_url = (data.get("baseUrl") or "").strip()
    description = data.get("description") or ""
    if base_url and (not name or not description.strip()):
        manifest = fetch_manifest(base_url, remote_fetch.policy(deps.settings, req.env))
        if manifest is not None:
            # As the add-by-base-URL form fills them (pages/service_providers.py).
            name = name or manifest.name.strip()[:prov.MAX_NAME]
            if not description.strip():
                description = manifest_description(manifest)
    # Refuse bad input before this installation's key pair is generated for it.
    prov.validate_provider(prov.by_base_url(name, base_url, "-", description))
    info = inst.ensure_installation(deps.ledger, deps.sealer, meta(req, actor))
    return prov.by_base_url(name, base_url, info.key, description)


class ProvidersResource(ApiBase):
    """GET lists service providers; POST adds one (by hand, or by its base URL)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api_admin(req, self.deps)
        resp.media = {"serviceProviders": [prov.provider_view(s)
                                           for s in prov.list_providers(self.deps.ledger)]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        admin = api_admin(req, self.deps)
        body = json_body(req)
        by_url = "baseUrl" in body
        if by_url:
            try:
                state = prov.add_provider(self.deps.ledger, self.deps.sealer,
                                          _by_base_url(req, self.deps, body, admin.name),
                                          meta(req, admin.name))
            except ValidationError as exc:
                # Errors name the JSON fields the client sent, not the service's.
                raise _json_names(exc) from None
        else:
            data = provider_input(body)
            if data.use_rsa:
                # Signing with our RSA key needs the key pair to exist.
                inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, admin.name))
            try:
                state = prov.add_provider(self.deps.ledger, self.deps.sealer, data,
                                          meta(req, admin.name))
            except ValidationError as exc:
                raise _json_names(exc) from None
        resp.status = falcon.HTTP_201
        resp.set_header("Location", f"{API}/service-providers/{quote(state.name, safe='')}")
        view = prov.provider_view(state)
        if by_url:
            # What the other side registers: this installation, as a consumer, by URL.
            view["consumerInfoUrl"] = consumer_info_url(req, self.deps)
        resp.media = view


class ProviderResource(ApiBase):
    """GET one service provider; PATCH edits it (its users' connections stay); DELETE
    removes it and drops every user's connection to it."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        api_admin(req, self.deps)
        resp.media = prov.provider_view(prov.load_provider(self.deps.ledger, name))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        admin = api_admin(req, self.deps)
        changes = edit_changes(name, json_body(req))
        # 404 before any key is generated.
        changes = with_moved_endpoints(prov.load_provider(self.deps.ledger, name), changes)
        if changes.get("use_rsa"):
            inst.ensure_installation(self.deps.ledger, self.deps.sealer, meta(req, admin.name))
        try:
            state = prov.edit_provider(self.deps.ledger, self.deps.sealer, name, changes,
                                       meta(req, admin.name))
        except ValidationError as exc:
            raise _json_names(exc) from None
        resp.media = prov.provider_view(state)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        admin = api_admin(req, self.deps)
        dropped = prov.remove_provider(self.deps.ledger, name, meta(req, admin.name),
                                       by=admin.name)
        resp.media = {"removed": name, "connectionsDropped": dropped}


class ProviderConnectionsResource(ApiBase):
    """GET every user's connection to a provider (never a token or secret)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        api_admin(req, self.deps)
        provider = prov.load_provider(self.deps.ledger, name)
        now = self.deps.ledger.clock()
        resp.media = {"connections": [
            conn.connection_view(provider, c, now)
            for c in conn.connections_of_provider(self.deps.ledger, provider.name)]}


class ProviderConnectionResource(ApiBase):
    """DELETE drops one user's connection: the stored token is forgotten (the provider
    is not told; OAuth 1.0a has no revocation request)."""

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  user: str) -> None:
        admin = api_admin(req, self.deps)
        provider = prov.load_provider(self.deps.ledger, name)
        if not conn.drop(self.deps.ledger, provider.name, user, by=admin.name,
                         reason="admin", meta=meta(req, admin.name)):
            raise NotFound(f"{user!r} has no connection to {provider.name!r}")
        resp.media = {"provider": provider.name, "user": user, "dropped": True}


# -- the call API ------------------------------------------------------------------------

# The call's JSON carries a body of up to MAX_CALL_BODY bytes as a JSON string, which
# escaping can make several times longer (a control character is six: \u001f). A
# request larger than this is refused (413) before it is parsed; a body field larger than
# MAX_CALL_BODY once decoded is a 422 on "body".
MAX_CALL_REQUEST = 4 * conn.MAX_CALL_BODY + 64 * 1024
# The longest URL a call may name: the outbound request carries at most 8000 characters
# (services/remote_fetch.py), and a path is put under a base URL of up to 2000
# (services.consumers.MAX_URL).
MAX_CALL_URL = 6000
_CALL_FIELDS = frozenset({"method", "url", "headers", "body", "user"})


@dataclass(frozen=True)
class Caller:
    """Who calls: a signed-in user (acting as themselves), or a resource server."""

    actor: str
    user: UserState | None = None
    server: ResourceServerState | None = None


def _resource_server(deps: Deps, server_id: str, secret: str) -> ResourceServerState | None:
    """The resource server whose id and secret these Basic credentials are, else None."""
    state = load_resource_server(deps.ledger, server_id)
    if state is None:
        return None
    expected = deps.sealer.open(state.secret_sealed)
    return state if hmac.compare_digest(expected.encode(), secret.encode()) else None


def call_caller(req: falcon.Request, deps: Deps) -> Caller:
    """Who is calling the call API.

    HTTP Basic credentials are a resource server's id and secret only when the id names
    an existing resource server and the secret is its own; every other Basic pair is a
    user's name and password (services.http.access.api_user, with the sign-in throttle);
    without Basic it is the browser session, whose changes must carry X-CSRF-Token.

    Why this order is safe: a resource-server secret is 256 random bits and compared
    in constant time, so trying it first costs no argon2 work and lets a resource server
    call even while the sign-in throttle has locked a same-named account or its address
    (a user's failures cannot lock it out). A wrong secret is not an answer of its own:
    the pair goes on to the user check, which counts the failure like /login, so an id
    that names a resource server gains an attacker nothing. And a name that is no
    resource server goes straight to the user check, so the throttle covers every user
    name; a user can never be taken for a resource server without its secret."""
    try:
        creds = basic_credentials(req)
    except ValueError as exc:
        raise ApiRefused(401, str(exc)) from None
    if creds is not None:
        server = _resource_server(deps, *creds)
        if server is not None:
            return Caller(actor=f"resource-server:{server.server_id}", server=server)
    user = api_user(req, deps)
    return Caller(actor=user.name, user=user)


def _call_json(req: falcon.Request) -> dict[str, Any]:
    """The call's JSON object: 415 for another content type, 413 past
    MAX_CALL_REQUEST, 400 for what is not a JSON object."""
    if not (req.content_type or "").split(";")[0].strip().lower().endswith("json"):
        raise falcon.HTTPUnsupportedMediaType(description="send Content-Type: application/json")
    limit = MAX_CALL_REQUEST
    if (req.content_length or 0) > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body over {limit} bytes")
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body over {limit} bytes")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise falcon.HTTPBadRequest(title="Malformed JSON",
                                    description="the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise falcon.HTTPBadRequest(
            title="Malformed JSON",
            description='send a JSON object: {"method", "url", "headers", "body", "user"}')
    return data


@dataclass(frozen=True)
class CallRequest:
    """The call API's body, its types checked."""

    method: str
    url: str
    headers: dict[str, Any]
    body: bytes
    user: str | None


def call_request(data: dict[str, Any]) -> CallRequest:
    """Check the call's fields by name (422): ``method`` (default GET) and ``url``
    strings, ``headers`` an object of strings, ``body`` a string, ``user`` a string."""
    errors = {f: "unknown field" for f in data if f not in _CALL_FIELDS}
    for field in ("method", "url", "body", "user"):
        if data.get(field) is not None and not isinstance(data[field], str):
            errors[field] = "must be a string"
    url = data.get("url")
    if isinstance(url, str) and (not url.isascii() or any(c < " " or c == "\x7f"
                                                          for c in url)):
        # RFC 3986 §2.1: a URL is printable ASCII; other characters travel
        # percent-encoded. Sent as is it could not be written on the wire, and that is the
        # caller's mistake, not an outage of the provider's (a 502).
        errors["url"] = ("must be printable ASCII: percent-encode other characters "
                         "(RFC 3986 §2.1)")
    elif isinstance(url, str) and len(url) > MAX_CALL_URL:
        errors["url"] = f"must be at most {MAX_CALL_URL} characters"
    headers = data.get("headers")
    if headers is not None and not isinstance(headers, dict):
        errors["headers"] = 'must be an object of strings, e.g. {"Accept": "application/json"}'
    elif headers:
        for name, value in headers.items():
            # RFC 9110 §5.5: a field value is ISO-8859-1 octets at most; anything else
            # cannot be sent, and is the caller's mistake, not the provider's outage.
            if isinstance(value, str) and not _latin1(value):
                errors[f"headers.{name}"] = "must be ISO-8859-1 text (RFC 9110 §5.5)"
    body = data.get("body") or ""
    encoded = b""
    if isinstance(body, str):
        try:
            encoded = body.encode("utf-8")
        except UnicodeEncodeError:
            errors["body"] = "is not text that can be sent as UTF-8 (an unpaired surrogate)"
    if errors:
        raise ValidationError(errors)
    return CallRequest(method=data.get("method") or "GET", url=data.get("url") or "",
                       headers=dict(headers or {}), body=encoded,
                       user=data.get("user") or None)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class ProviderCallResource(ApiBase):
    """POST a request to the provider on a user's behalf; 200 relays its answer
    ({"status", "headers", "body", "connection", "renewed"}) whatever its status."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        caller = call_caller(req, self.deps)
        if caller.server is not None and not caller.server.act_for_users:
            raise ApiRefused(403, f"resource server {caller.server.server_id!r} may not act "
                                  "for users: create it with `oauthledger resource-server "
                                  "add --act-for-users`")
        request = call_request(_call_json(req))
        if caller.user is not None:
            if request.user not in (None, caller.user.name):
                raise ApiRefused(403, "a user calls only as themselves: leave out \"user\", "
                                      "or call as a resource server that may act for users")
            acting = caller.user.name
        else:
            if not request.user:
                raise ValidationError({"user": "is required: the user this resource server "
                                               "acts for"})
            acting = request.user
        result = conn.call(self.deps.ledger, self.deps.sealer, name, acting, request.method,
                           request.url, request.headers, request.body,
                           remote_fetch.policy(self.deps.settings, req.env),
                           meta(req, caller.actor))
        resp.media = result.view()


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the service-provider routes."""
    app.add_route(f"{API}/service-providers", ProvidersResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}", ProviderResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}/connections",
                  ProviderConnectionsResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}/connections/{{user}}",
                  ProviderConnectionResource(deps))
    app.add_route(f"{API}/service-providers/{{name}}/call", ProviderCallResource(deps))
