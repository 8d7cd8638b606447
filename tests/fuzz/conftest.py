"""The fuzz tier's site: the real Falcon app (``create_app``) on each backend — the
embedded default (SQLite file and the in-process Redis-compatible store) and production
(a fresh PostgreSQL schema and the real Redis) — seeded once per backend with what lets a
fuzzed request get deep: an admin and a user with their browser sessions, HMAC consumers
(``app`` for three-legged calls, ``app2lo`` for two-legged ones, ``other`` for the fuzzer
to change), a pending request token, approved request tokens and access tokens (topped
up by :meth:`Site.refresh_tokens` as the fuzzer uses them up) and a resource server.

The site lives as long as the tier runs: Hypothesis sends hundreds of requests to it, and
what the fuzzer changes (a consumer removed, a token renewed) stays changed, as it would
on a server. Every request goes through :meth:`Site.send`: any 5xx, or an exception that
escapes the app, fails the test with the request written as a ``simulate_request`` call
and the server's traceback. Replay one with ``site.send(Request(...))``, pasting the
``Request`` Hypothesis prints (docs/testing.md, "The fuzz tier").
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import pytest
import redis
import sqlalchemy as sa
from argon2 import PasswordHasher

from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending
from oauthledger.events.state import ConsumerState, TokenState, consumer_stream, token_stream
from oauthledger.services import dance, users
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.resource_servers import create_resource_server
from oauthledger.services.sessions import COOKIE, Session
from oauthledger.services.users import register_user
from tests.conftest import PG_URL, REDIS_URL, embedded_deps_in, pg_deps, pg_schema_url

META = {"actor": "fuzz-seed", "request_id": "fuzz-seed"}
ADMIN, ADMIN_PW = "root", "root-password"
USER, USER_PW = "bob", "bob-password"
CONSUMER_SECRET = "fuzz-consumer-secret"
# Requests from this address are a trusted proxy's, so the X-Forwarded-* headers the
# fuzzer sends are believed (docs/oauth.md, "The URL that is signed"); from any other
# address they are ignored. The fuzzer sends from both.
TRUSTED = "127.0.0.1"
UNTRUSTED = "192.0.2.10"


def examples(default: int) -> int:
    """``max_examples`` for one fuzz test: ``default`` keeps the tier within its CI
    budget (docs/testing.md, "The fuzz tier"); OAUTHLEDGER_FUZZ_SCALE multiplies it for a
    longer local run."""
    return max(1, int(default * float(os.environ.get("OAUTHLEDGER_FUZZ_SCALE", "1"))))


@dataclass(frozen=True)
class Request:
    """One fuzzed request, as ``falcon.testing`` takes it."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    remote_addr: str = TRUSTED

    def snippet(self) -> str:
        """The request as a call that replays it (tests/fuzz/conftest.py, ``site``)."""
        return (f"site.client.simulate_request({self.method!r}, {self.path!r}, "
                f"extras={{'QUERY_STRING': {self.query!r}}}, headers={self.headers!r}, "
                f"body={self.body!r}, remote_addr={self.remote_addr!r})")


class _LastError(logging.Handler):
    """Keeps the traceback the app's catch-all handler logs, for the failure message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.text = logging.Formatter().formatException(record.exc_info)


@dataclass(repr=False)
class Site:
    """The app under fuzzing and what was seeded into it."""

    backend: str
    deps: Deps
    app: falcon.App
    client: falcon.testing.TestClient
    ids: dict[str, list[str]]  # kind -> seeded identifiers (consumer, token, user, ...)
    secrets: dict[str, str]  # token -> its secret
    verifiers: dict[str, str]  # approved request token -> its verifier
    handles: dict[str, str]  # access token -> its session handle
    approved: list[str]  # request tokens approved and not yet exchanged (refresh_tokens)
    access: list[str]  # access tokens that work (refresh_tokens)
    sessions: dict[str, Session]  # "admin" / "user" -> a signed-in browser session
    rs_secret: str
    routes: list[tuple[str, tuple[str, ...]]]  # URI template -> the methods it serves
    errors: _LastError

    def __repr__(self) -> str:
        # Hypothesis prints the test's arguments with a failure: the backend says it all.
        return f"<Site {self.backend}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis's pretty printer (IPython's protocol) would list every field.
        printer.text(repr(self))

    def send(self, request: Request) -> falcon.testing.Result:
        """Send ``request``; fail the test on a 5xx or an exception out of the app,
        naming the request (docs/design.md, "Errors that say why": no client input
        produces a 500)."""
        self.errors.text = ""
        try:
            # The query goes in as the server's QUERY_STRING: falcon.testing's own
            # query_string refuses one that starts with "?", which a server passes on.
            result = self.client.simulate_request(
                request.method, request.path, extras={"QUERY_STRING": request.query},
                headers=request.headers, body=request.body,
                remote_addr=request.remote_addr)
        except Exception as exc:  # noqa: BLE001 - any escape is the finding to report
            pytest.fail(f"[{self.backend}] the app raised {exc!r} for\n{request.snippet()}",
                        pytrace=False)
        if result.status_code >= 500:
            pytest.fail(f"[{self.backend}] {result.status} for\n{request.snippet()}\n"
                        f"response: {result.text[:500]}\n{self.errors.text}", pytrace=False)
        self._keep_sessions()
        return result

    @property
    def cookies(self) -> dict[str, str]:
        """"admin" / "user" -> the session's cookie value."""
        return {who: sess.sid for who, sess in self.sessions.items()}

    @property
    def csrf(self) -> dict[str, str]:
        """"admin" / "user" -> the session's anti-CSRF token."""
        return {who: sess.csrf for who, sess in self.sessions.items()}

    def refresh_tokens(self) -> None:
        """Keep :data:`POOL` approved request tokens and :data:`POOL` working access
        tokens: fuzzed exchanges and renewals use them up, and a request with a used
        token stops at ``token_used`` instead of reaching the work."""
        now = self.deps.clock()
        states = {sid[len("token-"):]: st for sid, (st, _) in self.deps.ledger.load_many(
            [token_stream(t) for t in self.approved + self.access]).items()}
        self.approved = [t for t in self.approved if isinstance(states[t], TokenState)
                         and states[t].status == "approved" and now < states[t].expires_at]
        self.access = [t for t in self.access if isinstance(states[t], TokenState)
                       and states[t].usable_at(now)]
        consumer, _ = self.deps.ledger.load(consumer_stream("app"))
        assert isinstance(consumer, ConsumerState) and not consumer.removed, \
            "a fuzz test removed the seeded consumer the signed requests use"
        while len(self.approved) < POOL:
            token, secret, verifier = _approved(self.deps, consumer)
            self.approved.append(token)
            self.secrets[token] = secret
            self.verifiers[token] = verifier
        while len(self.access) < POOL:
            access = _access(self.deps, consumer)
            self.access.append(access.token)
            self.secrets[access.token] = access.secret
            self.handles[access.token] = access.session_handle

    def _keep_sessions(self) -> None:
        # A fuzzed /logout or sign-in with a seeded cookie and its CSRF token ends that
        # session, as it should; put it back so later requests still get past sign-in.
        for sess in self.sessions.values():
            current = self.deps.sessions.load(sess.sid)
            if current is None or current.user != sess.user:
                self.deps.sessions._save(sess)


def _router_routes(app: falcon.App) -> list[tuple[str, tuple[str, ...]]]:
    """Every URI template the router holds, with the methods its resource implements:
    the fuzzer covers all routes, including ones added after this file was written."""
    out: list[tuple[str, tuple[str, ...]]] = []

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node.resource is not None:
                methods = tuple(m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                                if hasattr(node.resource, "on_" + m.lower()))
                out.append((node.uri_template, methods))
            walk(node.children)

    walk(app._router._roots)
    return sorted(out)


POOL = 2  # approved request tokens and working access tokens kept for signed requests


def _approved(deps: Deps, consumer: ConsumerState) -> tuple[str, str, str]:
    """A request token the user approved: (token, secret, verifier)."""
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "oob", META)
    token, _ = deps.ledger.load(token_stream(issued.token))
    verifier = dance.decide(deps.ledger, deps.sealer, token, USER, True, META)
    assert verifier is not None
    return issued.token, issued.secret, verifier


def _access(deps: Deps, consumer: ConsumerState) -> dance.IssuedAccessToken:
    """A fresh access token of the user for ``consumer``."""
    token_id, _, verifier = _approved(deps, consumer)
    token, _ = deps.ledger.load(token_stream(token_id))
    return dance.exchange(deps.ledger, deps.sealer, deps.settings, token, verifier, META)


def _seed(deps: Deps) -> dict[str, Any]:
    register_user(deps.ledger, ADMIN, ADMIN_PW, admin=True, meta=META)
    register_user(deps.ledger, USER, USER_PW, meta=META)
    consumers: dict[str, ConsumerState] = {}
    for key, extra in (("app", {"callback_url": "http://client.test/",
                                "signature_methods": ["HMAC-SHA1", "HMAC-SHA256", "PLAINTEXT"],
                                "allow_plaintext_over_http": True}),
                       ("app2lo", {"two_legged_user": USER, "allow_impersonation": True,
                                   "signature_methods": ["HMAC-SHA1", "HMAC-SHA256",
                                                         "PLAINTEXT"],
                                   "allow_plaintext_over_http": True}),
                       ("other", {})):
        state, _ = register_consumer(deps.ledger, deps.sealer, key, ConsumerInput(
            name=f"Fuzz {key}", secret=CONSUMER_SECRET,
            **{"signature_methods": ["HMAC-SHA1"], **extra}), META)
        consumers[key] = state
    pending = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings,
                                        consumers["app"], "oob", META)
    approved = [_approved(deps, consumers["app"]) for _ in range(POOL)]
    access = [_access(deps, consumers["app"]) for _ in range(POOL)]
    secrets = {pending.token: pending.secret, **{t: sec for t, sec, _ in approved},
               **{a.token: a.secret for a in access}}
    verifiers = {t: v for t, _, v in approved}
    handles = {a.token: a.session_handle for a in access}
    request_tokens = [pending.token, *verifiers]
    access_tokens = [a.token for a in access]
    rs_secret = create_resource_server(deps.ledger, deps.sealer, "rs", "fuzz", META)
    sessions = {"admin": deps.sessions.new(ADMIN), "user": deps.sessions.new(USER)}
    # The projector catches up once, so the hot path answers from Redis (its checkpoint
    # exists) as in production; later commits reach Redis by read-your-writes.
    project_pending(deps.store, deps.read_model)
    return {
        "ids": {"consumer": list(consumers), "request_token": request_tokens,
                "access_token": access_tokens, "user": [ADMIN, USER],
                "resource_server": ["rs"], "provider": []},
        "secrets": secrets, "verifiers": verifiers, "handles": handles,
        "approved": list(verifiers), "access": list(access_tokens),
        "sessions": sessions, "rs_secret": rs_secret,
    }


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    """The seeded app on one backend, shared by every fuzz test (package scope: the
    cheaper password hashing below ends with the tier)."""
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    env = {
        "TRUSTED_PROXIES": f"{TRUSTED}/32",
        # The throttle would lock the fuzzer's address after five wrong passwords and
        # turn every later sign-in into a 429; keep sign-ins reaching the password check.
        "LOGIN_MAX_FAILURES": "1000000",
    }
    with ExitStack() as stack:
        # argon2 at its default cost (~0.2 s a check on this machine) would spend the
        # tier's whole budget on passwords: the same argon2id with a small cost. The
        # hash records its parameters, so checks cost what the hash was made with.
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setattr(users, "_hasher", cheap)
        patch.setattr(users, "_DUMMY_HASH", cheap.hash("oauthledger-no-such-user"))
        if request.param == "sqlite":
            deps = stack.enter_context(embedded_deps_in(tmp, **env))
        else:
            schema = "fuzz_" + uuid.uuid4().hex[:12]
            admin = sa.create_engine(PG_URL)
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

            def drop() -> None:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()

            stack.callback(drop)
            client = redis.Redis.from_url(REDIS_URL)
            stack.callback(client.close)
            layout = KeyLayout("olfuzz-" + uuid.uuid4().hex[:10])

            def flush() -> None:
                for key in client.scan_iter(layout.pattern(), count=1000):
                    client.delete(key)

            stack.callback(flush)
            deps = stack.enter_context(pg_deps(pg_schema_url(schema), client, layout, tmp,
                                               **env))
        seeded = _seed(deps)
        app = create_app(deps)
        errors = _LastError()
        logger = logging.getLogger("oauthledger.services.http.errors")
        logger.addHandler(errors)
        stack.callback(logger.removeHandler, errors)
        yield Site(backend=request.param, deps=deps, app=app,
                   client=falcon.testing.TestClient(app), routes=_router_routes(app),
                   errors=errors, **seeded)


def cookie_header(site: Site, who: str | None) -> dict[str, str]:
    """The Cookie header of the admin's or the user's session (none for None)."""
    return {"Cookie": f"{COOKIE}={site.cookies[who]}"} if who else {}
