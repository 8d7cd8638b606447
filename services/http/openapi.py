"""The OpenAPI 3 description of the JSON API under /rest/oauthledger/1/, served at
/rest/oauthledger/1/openapi.json. A test walks the Falcon router and checks that every
route and method under the prefix is described here and every described one exists."""

from __future__ import annotations

import copy
from typing import Any

import falcon

from oauthledger.services.oauth.signatures import METHODS

API = "/rest/oauthledger/1"

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out.update(_json(schema))
    return out


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _PROBLEM}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(field: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [field],
            "properties": {field: {"type": "array", "items": _ref(item)}}}


# A user's sign-in through HTTP Basic shares the failure counters and locks of /login
# (services.http.access): while a lock holds, the password is not even checked.
_LOCKED = {**_problem("too many failed sign-ins for this account or address; retry after "
                      "Retry-After seconds"),
           "headers": {"Retry-After": {"description": "seconds until the lock ends (RFC 6585 §4)",
                                       "schema": {"type": "integer"}}}}

# Changes through the browser session must echo its anti-CSRF token (services.http.access,
# synchronizer-token pattern); Basic callers send nothing.
_CSRF = {"name": "X-CSRF-Token", "in": "header", "required": False,
         "description": "with the browser session (cookie): the session's anti-CSRF token, "
                        "required for every change; not needed with HTTP Basic",
         "schema": {"type": "string"}}
_CHANGES = ("post", "put", "patch", "delete")


def _op(summary: str, responses: dict[str, Any], *, admin: bool = True,
        body: dict[str, Any] | None = None, body_required: bool = True,
        params: list[dict[str, Any]] | None = None,
        security: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One operation. Admin operations refuse anonymous callers (401), non-admins and
    session changes without the anti-CSRF token (403), and locked accounts (429)."""
    out: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if admin:
        out["responses"].setdefault("401", _problem("not signed in / wrong credentials"))
        out["responses"].setdefault("403", _problem(
            "signed in, but not an administrator; or a change through the browser session "
            "without the session's X-CSRF-Token header"))
    if admin or (security is None and "401" in out["responses"]):
        out["responses"].setdefault("429", _LOCKED)
    if body is not None:
        out["requestBody"] = {"required": body_required, **_json(body)}
        out["responses"].setdefault("415", _problem("the body is not application/json"))
        out["responses"].setdefault("400", _problem("the body is not a JSON object"))
    if params:
        out["parameters"] = params
    if security is not None:
        out["security"] = security
    return out


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NSTR = {"type": "string", "nullable": True}
_METHODS = list(METHODS)

_CONSUMER_FIELDS = {
    "name": _STR, "description": _STR, "callbackUrl": _NSTR,
    "publicKey": {**_NSTR, "description": "PEM public key or X.509 certificate"},
    "sharedSecret": {**_STR, "writeOnly": True, "minLength": 8, "maxLength": 512},
    "generateSecret": {**_BOOL, "writeOnly": True,
                       "description": "generate a shared secret, returned once"},
    "signatureMethods": {"type": "array", "items": {"type": "string", "enum": _METHODS}},
    "threeLegged": _BOOL, "twoLeggedUser": _NSTR, "allowImpersonation": _BOOL,
    "allowOAuth10": _BOOL, "allowPlaintextOverHttp": _BOOL,
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object", "description": "RFC 9457 problem details",
        "properties": {"type": _STR, "title": _STR, "status": {"type": "integer"},
                       "detail": _STR,
                       "errors": {"type": "object", "additionalProperties": _STR,
                                  "description": "message per invalid field (422)"}},
    },
    "Consumer": {
        "type": "object",
        "properties": {"key": _STR, **{k: v for k, v in _CONSUMER_FIELDS.items()
                                       if not v.get("writeOnly")},
                       "hasSharedSecret": _BOOL, "tokensOutstanding": {"type": "integer"},
                       "publicKeyWarning": {**_NSTR, "description":
                                            "set when the RSA key is under 2048 bits"},
                       "version": {"type": "integer"},
                       "sharedSecret": {**_STR, "description":
                                        "only in the answer that generated it"},
                       "history": {"type": "array", "items": _ref("HistoryEntry")}},
    },
    "ConsumerCreate": {
        "type": "object", "required": ["key", "name"], "additionalProperties": False,
        "properties": {"key": {**_STR, "maxLength": 200}, **_CONSUMER_FIELDS},
    },
    "ConsumerUpdate": {
        "type": "object", "additionalProperties": False,
        "properties": {"key": {**_STR, "description": "may be sent, but cannot change"},
                       **_CONSUMER_FIELDS},
    },
    "HistoryEntry": {
        "type": "object",
        "properties": {"version": {"type": "integer"}, "type": _STR,
                       "time": {"type": "number"}, "actor": _NSTR, "requestId": _NSTR,
                       "summary": _STR},
    },
    "FailureEntry": {
        "type": "object", "description": "a refused signed request of the consumer (never "
                                         "a secret: verifiers and session handles show as "
                                         "(hidden), a PLAINTEXT signature is not kept)",
        "properties": {
            "time": {"type": "number", "description": "seconds since 1970"},
            "requestId": _STR, "route": _STR,
            "step": {"type": "string", "nullable": True,
                     "enum": ["resource", "request-token", "access-token", "renewal",
                              "verify"]},
            "method": _STR, "oauthProblem": _STR, "status": {"type": "integer"},
            "advice": _STR, "params": {"type": "object", "additionalProperties": _STR},
            "skewSeconds": {"type": "integer", "nullable": True,
                            "description": "oauth_timestamp minus the server clock"},
            "url": {**_NSTR, "description": "the URL the server rebuilt"},
            "baseString": {**_NSTR, "description": "the base string the server computed"},
            "signatureMethod": _NSTR,
            "signature": {**_NSTR, "description": "the client's signature; null for "
                          "PLAINTEXT (it is the secrets)"},
            "token": _NSTR,
            "debuggable": {**_BOOL, "description": "the signature debugger can run on it "
                           "(POST /debug/signature with requestId)"},
            "truncated": _BOOL},
    },
    "ConsumerFailures": {
        "type": "object",
        "properties": {
            "consumerKey": _STR, "removed": _BOOL,
            "keeps": {"type": "object", "properties": {
                "entries": {"type": "integer"}, "retentionSeconds": {"type": "integer"}}},
            "total": {"type": "integer", "description": "refused requests kept"},
            "failures": {"type": "array", "items": _ref("FailureEntry"),
                         "description": "newest first"},
            "byProblem": {"type": "array", "items": {"type": "object", "properties": {
                "oauthProblem": _STR, "lastHour": {"type": "integer"},
                "lastDay": {"type": "integer"},
                "latest": {"type": "number", "nullable": True}, "advice": _NSTR,
                "kept": {"type": "integer"}}}},
            "hours": {"type": "array", "description": "the last 24 hours, oldest first",
                      "items": {"type": "object", "properties": {
                          "start": {"type": "integer"}, "accepted": {"type": "integer"},
                          "refused": {"type": "integer"}}}}},
    },
    "ConsumerInfo": {
        "type": "object",
        "properties": {"key": _STR, "name": _STR, "description": _STR, "publicKey": _STR,
                       "version": {"type": "integer"}},
    },
    "ConsumerInfoUpdate": {
        "type": "object", "additionalProperties": False,
        "properties": {"name": {**_STR, "maxLength": 255},
                       "description": {**_STR, "maxLength": 2000}},
    },
    "RemoteConsumerInfo": {
        "type": "object",
        "properties": {"url": _STR, "key": _STR, "name": _STR, "description": _STR,
                       "publicKey": _STR, "callbackUrl": _NSTR},
    },
    "ServiceProvider": {
        "type": "object",
        "properties": {"name": _STR, "description": _STR, "consumerKey": _STR,
                       "signatureMethod": {"type": "string",
                                           "enum": ["HMAC-SHA1", "RSA-SHA1"]},
                       "hasSharedSecret": _BOOL, "useRsaKey": _BOOL,
                       "requestTokenUrl": _STR, "authorizeUrl": _STR,
                       "accessTokenUrl": _STR,
                       "baseUrl": {**_NSTR, "description": "set when added by base URL: "
                                   "calls may go under it"},
                       "consumerInfoUrl": {**_STR, "description": "only in the answer of "
                                           "an add by base URL: the URL the other "
                                           "application registers this installation by"},
                       "version": {"type": "integer"}},
    },
    "ServiceProviderCreate": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "consumerKey", "requestTokenUrl", "authorizeUrl",
                     "accessTokenUrl"],
        "properties": {"name": {**_STR, "maxLength": 100}, "description": _STR,
                       "consumerKey": _STR,
                       "sharedSecret": {**_STR, "writeOnly": True,
                                        "description": "unless useRsaKey"},
                       "useRsaKey": {**_BOOL, "description":
                                     "sign with this installation's RSA key"},
                       "requestTokenUrl": _STR, "authorizeUrl": _STR, "accessTokenUrl": _STR},
    },
    "ServiceProviderByBaseUrl": {
        "type": "object", "additionalProperties": False, "required": ["baseUrl"],
        "description": "another application (oauthledger, Atlassian) by its base URL: its "
                       "endpoints at the Atlassian paths under it, signed RSA-SHA1 with "
                       "this installation's key, the consumer-info key as consumer key. "
                       "An empty name or description is taken from the application's "
                       "manifest when it publishes one.",
        "properties": {"name": {**_STR, "maxLength": 100}, "baseUrl": _STR,
                       "description": _STR},
    },
    "ServiceProviderUpdate": {
        "type": "object", "additionalProperties": False,
        "description": "only the fields to change; the users' connections stay",
        "properties": {"name": {**_STR, "description": "may be sent, but cannot change"},
                       "description": _STR, "consumerKey": _STR,
                       "sharedSecret": {**_NSTR, "writeOnly": True, "description":
                                        "a new shared secret (switches to HMAC-SHA1 unless "
                                        "useRsaKey is sent); null or absent keeps it"},
                       "useRsaKey": _BOOL, "requestTokenUrl": _STR, "authorizeUrl": _STR,
                       "accessTokenUrl": _STR,
                       "baseUrl": {**_NSTR, "description": "null or empty clears it"}},
    },
    "Connection": {
        "type": "object", "description": "a user's connection to a service provider "
                                         "(never its token or secret)",
        "properties": {"provider": _STR, "user": _NSTR,
                       "status": {"type": "string",
                                  "enum": ["not_connected", "connected", "needs_reconnect"]},
                       "connectedAt": {"type": "integer", "nullable": True},
                       "renewedAt": {"type": "integer", "nullable": True},
                       "expiresAt": {"type": "integer", "nullable": True},
                       "renewable": _BOOL,
                       "problem": {**_NSTR, "description": "the provider's oauth_problem "
                                   "when the connection needs reconnecting"}},
    },
    "ProviderCall": {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "method": {"type": "string", "default": "GET",
                       "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
            "url": {**_STR, "description": "a path under the provider's base URL "
                    "(/rest/api/2/myself) or an absolute URL at its origin"},
            "headers": {"type": "object", "additionalProperties": _STR,
                        "description": "Authorization, Host, Cookie and hop-by-hop "
                                       "headers are dropped: oauthledger signs the request"},
            "body": {**_STR, "description": "sent as UTF-8, at most 262144 bytes"},
            "user": {**_STR, "description": "the user to act for: required for a resource "
                     "server; a user may name only themselves"}},
    },
    "ProviderAnswer": {
        "type": "object", "description": "the provider's answer, relayed: its status is "
                                         "in the body, never this response's status",
        "properties": {"status": {"type": "integer"},
                       "headers": {"type": "object", "additionalProperties": _STR},
                       "body": {**_STR, "description": "the answer as text (UTF-8, "
                                "undecodable bytes replaced)"},
                       "connection": {"type": "string",
                                      "enum": ["connected", "needs_reconnect"]},
                       "renewed": {**_BOOL, "description": "the token was renewed with its "
                                   "session handle on the way"}},
    },
    "AccessToken": {
        "type": "object",
        "properties": {"token": _STR, "user": _STR, "consumerKey": _STR,
                       "consumerName": _STR, "consumerDescription": _STR,
                       "issuedAt": {"type": "integer"}, "expiresAt": {"type": "integer"},
                       "status": {"type": "string",
                                  "enum": ["active", "expired", "revoked", "renewed"]}},
    },
}

_STATUS = _query("status", "only tokens in this status",
                 ["active", "expired", "revoked", "renewed"])
_NOT_FOUND = _problem("no such entity")
_INVALID = _problem("invalid input; `errors` names each bad field")


def _paths() -> dict[str, Any]:
    key = _path_param("key", "the consumer key (may contain slashes)")
    name = _path_param("name", "the service provider's name")
    token = _path_param("token", "the access token")
    return {
        "/openapi.json": {"get": _op("This document", {"200": _ok("OpenAPI 3 document")},
                                     admin=False, security=[])},
        "/verify": {"post": _op(
            "Verify a signed request on behalf of another resource server",
            {"200": _ok("valid: true with user and consumer, or valid: false with the "
                        "oauth_problem to relay"),
             "400": _problem("the body is not the JSON described"),
             "401": _problem("the resource server's credentials were refused")},
            admin=False, security=[{"resourceServer": []}],
            body={"type": "object", "properties": {
                "method": _STR, "url": _STR, "headers": {"type": "object"}, "body": _STR}})},
        "/debug/signature": {
            # The signature debugger's route (services/http/api/debug.py).
            "post": _op("Explain why a signed request verifies or not: the debugger's "
                        "report (never a secret, nor a signature computed with one), for "
                        "a request as a client sent it or a refused request of the "
                        "failure history",
                        {"200": _ok("the report, whatever its verdict", {"type": "object"}),
                         "404": _problem("requestId: the failure history does not hold "
                                         "it (any more)"),
                         "422": _INVALID,
                         "503": _problem("requestId: Redis cannot be reached")},
                        body={"oneOf": [
                            {"type": "object", "additionalProperties": False,
                             "required": ["method", "url"],
                             "properties": {"method": _STR, "url": _STR,
                                            "headers": {"type": "object",
                                                        "additionalProperties": _STR},
                                            "body": _STR,
                                            "remoteAddr": {**_STR, "description":
                                                           "the address the request came "
                                                           "from"}}},
                            {"type": "object", "additionalProperties": False,
                             "required": ["requestId"],
                             "properties": {"requestId": {**_STR, "description":
                                                          "a refused request's id"},
                                            "consumerKey": {**_STR, "description":
                                                            "whose history holds it "
                                                            "(default: every consumer's)"}}},
                        ]}),
        },
        "/consumers": {
            "get": _op("List consumers", {"200": _ok("consumers",
                                                     _list_of("consumers", "Consumer"))}),
            "post": _op("Register a consumer",
                        {"201": _ok("registered; a generated secret is returned once",
                                    _ref("Consumer")),
                         "409": _problem("the key is in use"), "422": _INVALID},
                        body=_ref("ConsumerCreate")),
        },
        "/consumers/{key}": {
            "get": _op("One consumer (with ?include=history, its recent events)",
                       {"200": _ok("the consumer", _ref("Consumer")), "404": _NOT_FOUND},
                       params=[key, _query("include", "history: add the recent events",
                                           ["history"])]),
            "patch": _op("Change a consumer (never its key)",
                         {"200": _ok("the consumer", _ref("Consumer")), "404": _NOT_FOUND,
                          "409": _problem("changed concurrently; retry"), "422": _INVALID},
                         body=_ref("ConsumerUpdate"), params=[key]),
            "put": _op("Same as PATCH", {"200": _ok("the consumer", _ref("Consumer")),
                                         "404": _NOT_FOUND, "422": _INVALID},
                       body=_ref("ConsumerUpdate"), params=[key]),
            "delete": _op("Remove a consumer and revoke all its tokens at once",
                          {"200": _ok("removed", {"type": "object", "properties": {
                              "removed": _STR, "tokensRevoked": {"type": "integer"}}}),
                           "404": _NOT_FOUND}, params=[key]),
        },
        "/consumer-secrets/{key}": {
            "post": _op("Replace a consumer's shared secret; the old one is refused from the "
                        "next request on. The consumer's settings and tokens stay. Without "
                        "a body (or without sharedSecret) a secret is generated.",
                        {"200": _ok("the consumer with its new sharedSecret, in this answer "
                                    "only (Cache-Control: no-store)", _ref("Consumer")),
                         "404": _NOT_FOUND,
                         "409": _problem("changed concurrently; retry"),
                         "422": _problem("the consumer has no shared secret (it signs with "
                                         "RSA), or sharedSecret is not 8-512 characters "
                                         "or is the current one")},
                        body={"type": "object", "additionalProperties": False,
                              "properties": {"sharedSecret": {
                                  **_STR, "writeOnly": True, "minLength": 8, "maxLength": 512,
                                  "description": "the new secret; omit to generate one"}}},
                        body_required=False, params=[key]),
        },
        "/consumer-failures/{key}": {
            # Not /consumers/{key}/failures: a key may contain slashes
            # (services/http/api/consumers.py).
            "get": _op("A consumer's failure history: refused signed requests newest first, "
                       "counted by problem for the last hour and day, and accepted vs "
                       "refused per hour over the last 24 hours (kept in Redis only)",
                       {"200": _ok("the history", _ref("ConsumerFailures")),
                        "404": _problem("no consumer was ever registered with this key"),
                        "422": _INVALID,
                        "503": _problem("Redis cannot be reached")},
                       params=[key, {**_query("limit", "the newest N refused requests "
                                                       "(default: all kept)"),
                                     "schema": {"type": "integer", "minimum": 1}}]),
        },
        "/consumer-info": {
            "get": _op("This installation's consumer identity (generated on first use)",
                       {"200": _ok("identity", _ref("ConsumerInfo"))}),
            "patch": _op("Change its name and description",
                         {"200": _ok("identity", _ref("ConsumerInfo")), "422": _INVALID},
                         body=_ref("ConsumerInfoUpdate")),
        },
        "/consumer-info/rotate": {
            "post": _op("Replace the RSA key pair",
                        {"200": _ok("identity with the new public key",
                                    _ref("ConsumerInfo"))}),
        },
        "/remote-consumer-info": {
            "get": _op("Fetch another application's consumer-info XML (stores nothing)",
                       {"200": _ok("what the other application says",
                                   _ref("RemoteConsumerInfo")),
                        "422": _problem("bad URL, unreachable, too large, or not "
                                        "consumer-info XML")},
                       params=[{**_query("baseUrl", "the application's base URL"),
                                "required": True}]),
        },
        "/service-providers": {
            "get": _op("List service providers",
                       {"200": _ok("providers", _list_of("serviceProviders",
                                                         "ServiceProvider"))}),
            "post": _op("Add a service provider, by hand or by its base URL",
                        {"201": _ok("added", _ref("ServiceProvider")),
                         "409": _problem("the name is in use"), "422": _INVALID},
                        body={"oneOf": [_ref("ServiceProviderCreate"),
                                        _ref("ServiceProviderByBaseUrl")]}),
        },
        "/service-providers/{name}": {
            "get": _op("One service provider", {"200": _ok("provider",
                                                          _ref("ServiceProvider")),
                                               "404": _NOT_FOUND}, params=[name]),
            "patch": _op("Change a service provider (never its name); the users' "
                         "connections stay",
                         {"200": _ok("the provider", _ref("ServiceProvider")),
                          "404": _NOT_FOUND, "409": _problem("changed concurrently; retry"),
                          "422": _INVALID},
                         body=_ref("ServiceProviderUpdate"), params=[name]),
            "delete": _op("Remove a service provider and drop every user's connection to "
                          "it in the same commit",
                          {"200": _ok("removed", {"type": "object", "properties": {
                              "removed": _STR, "connectionsDropped": {"type": "integer"}}}),
                           "404": _NOT_FOUND}, params=[name]),
        },
        "/service-providers/{name}/connections": {
            "get": _op("Every user's connection to a service provider",
                       {"200": _ok("connections", _list_of("connections", "Connection")),
                        "404": _NOT_FOUND}, params=[name]),
        },
        "/service-providers/{name}/connections/{user}": {
            "delete": _op("Drop a user's connection (the stored token is forgotten; the "
                          "provider is not told)",
                          {"200": _ok("dropped", {"type": "object", "properties": {
                              "provider": _STR, "user": _STR, "dropped": _BOOL}}),
                           "404": _problem("no such provider, or the user has no "
                                           "connection to it")},
                          params=[name, _path_param("user", "the user's name")]),
        },
        "/service-providers/{name}/call": {
            "post": {**_op(
                "Call the service provider on a user's behalf",
                {"200": _ok("the provider's answer, whatever its status",
                            _ref("ProviderAnswer")),
                 "401": _problem("not signed in / wrong credentials"),
                 "404": _problem("no such provider or user"),
                 "409": _problem("the user is not connected, or the connection needs "
                                 "reconnecting: the user must press Connect on "
                                 "/plugins/servlet/oauth/users/connections"),
                 "413": _problem("the request is over 1 MiB"),
                 "422": _problem("bad method, URL (not at the provider), header or body "
                                 "(over 262144 bytes); `errors` names each"),
                 "429": _LOCKED,
                 "502": _problem("the provider could not be reached or answered nothing "
                                 "usable; nothing was stored")},
                admin=False, body=_ref("ProviderCall"), params=[name, _CSRF],
                security=[{"basic": []}, {"session": []}, {"resourceServer": []}]),
                "description": "The caller is a signed-in user acting as themselves (the "
                               "browser session with X-CSRF-Token, or HTTP Basic name and "
                               "password), or a resource server created with `oauthledger "
                               "resource-server add --act-for-users` (HTTP Basic id and "
                               "secret) naming the user in `user`. Answers 403 when a user "
                               "names another user, when a resource server may not act for "
                               "users, and for a session call without X-CSRF-Token."},
        },
        "/tokens": {
            "get": _op("Every user's access tokens, newest first",
                       {"200": _ok("tokens", _list_of("tokens", "AccessToken")),
                        "422": _INVALID},
                       params=[_query("user", "only this user's tokens"),
                               _query("consumer", "only this consumer's tokens"), _STATUS]),
        },
        "/tokens/{token}": {
            "get": _op("One access token", {"200": _ok("token", _ref("AccessToken")),
                                            "404": _NOT_FOUND}, params=[token]),
            "delete": _op("Revoke an access token (effective on the next request)",
                          {"200": _ok("the revoked token", _ref("AccessToken")),
                           "404": _NOT_FOUND}, params=[token]),
        },
        "/users/me/access-tokens": {
            "get": _op("The signed-in user's own access tokens",
                       {"200": _ok("tokens", _list_of("tokens", "AccessToken")),
                        "401": _problem("not signed in"), "422": _INVALID},
                       admin=False, params=[_STATUS]),
        },
        "/users/me/connections": {
            "get": _op("The signed-in user's connection to every service provider",
                       {"200": _ok("connections", _list_of("connections", "Connection")),
                        "401": _problem("not signed in")}, admin=False),
        },
        "/users/me/connections/{name}": {
            "delete": _op("Disconnect the signed-in user from a service provider (the "
                          "stored token is forgotten)",
                          {"200": _ok("the connection after it", _ref("Connection")),
                           "401": _problem("not signed in"),
                           "404": _problem("no such provider, or no connection to it")},
                          admin=False, params=[name]),
        },
        "/users/me/access-tokens/{token}": {
            "delete": _op("Revoke one of the signed-in user's own tokens",
                          {"200": _ok("the revoked token", _ref("AccessToken")),
                           "401": _problem("not signed in"),
                           "404": _problem("no such token of this user")},
                          admin=False, params=[token]),
        },
    }


def _with_csrf_header(paths: dict[str, Any]) -> dict[str, Any]:
    """Name the anti-CSRF header on every change a signed-in user may make (the
    operations with their own security, /verify, take no session)."""
    for ops in paths.values():
        for method, op in ops.items():
            if method in _CHANGES and "security" not in op:
                op["parameters"] = [*op.get("parameters", []), _CSRF]
    return paths


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document (a fresh copy each call)."""
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {"title": "oauthledger admin API", "version": "1",
                 "description": "Consumers and their failure history, this "
                                "installation's consumer info, service providers, the "
                                "users' connections to them and calls through them, and "
                                "access tokens. Errors are application/problem+json "
                                "(RFC 9457)."},
        "servers": [{"url": API}],
        "security": [{"basic": []}, {"session": []}],
        "paths": _with_csrf_header(_paths()),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic",
                          "description": "an admin's name and password; failures count "
                                         "against the sign-in throttle of /login, and a "
                                         "locked account or address answers 429 with "
                                         "Retry-After"},
                "session": {"type": "apiKey", "in": "cookie", "name": "oauthledger_session",
                            "description": "the browser session from /login; every change "
                                           "(POST, PUT, PATCH, DELETE) must also send the "
                                           "session's anti-CSRF token in the X-CSRF-Token "
                                           "header, or it answers 403 and changes nothing"},
                "resourceServer": {"type": "http", "scheme": "basic",
                                   "description": "a resource server's id and secret; "
                                                  "for the call API it must have been "
                                                  "created with --act-for-users"},
            },
        },
    })


class OpenApiResource:
    """GET the OpenAPI 3 description of this API (public: it holds no data)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = openapi_document()


def add_routes(app: falcon.App, deps: object) -> None:
    """Mount /rest/oauthledger/1/openapi.json."""
    app.add_route(f"{API}/openapi.json", OpenApiResource())
