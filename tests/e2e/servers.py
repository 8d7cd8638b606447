"""Real processes for the end-to-end tests: gunicorn front ends (``oauthledger serve``,
i.e. the packaged oauthledger.services.http.gunicorn_conf) and a Celery worker, on a fresh
PostgreSQL schema, the real Redis under a unique prefix, and a Redis broker.

A :class:`Stack` is one deployment: its environment (the only way the processes are
configured, as in production), its schema, the front ends and the worker. The tests share
one stack for the whole session (:func:`shared_stack`); tests that need other settings
(an unreachable Redis, short lifetimes) start their own :class:`Server` on that stack's
environment.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy as sa

from tests.conftest import PG_URL, REDIS_URL, pg_schema_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OAUTHLEDGER = str(BIN / "oauthledger")
CELERY = str(BIN / "celery")
START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def celery_app_available() -> bool:
    """True once the Celery app (workers/celery_app.py) exists."""
    return (ROOT / "workers" / "celery_app.py").exists()


@dataclass
class Process:
    """A child process with its output in a log file; killed by process group."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's output (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def spawn(name: str, args: list[str], env: Mapping[str, str], workdir: Path) -> Process:
    """Start ``args`` in its own process group (so stop() reaches gunicorn's workers too)."""
    log_path = workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    out = log_path.open("wb")
    proc = subprocess.Popen(args, env=dict(env), cwd=str(ROOT), stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    out.close()
    return Process(name, proc, log_path)


@dataclass
class Server:
    """One gunicorn front end."""

    process: Process
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate gunicorn and its workers."""
        self.process.stop()


def wait_until(check: Callable[[], bool], what: str, process: Process | None = None,
               timeout: float = START_TIMEOUT) -> None:
    """Poll ``check`` until it is true; fail with the process's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode} "
                               f"before {what}:\n{process.log_tail()}")
        try:
            if check():
                return
        except (requests.RequestException, redis.RedisError, OSError):
            pass
        time.sleep(0.2)
    tail = process.log_tail() if process else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def start_server(env: Mapping[str, str], workdir: Path, workers: int | None = 2,
                 wait_for: str = "/healthz", port: int | None = None,
                 skip_preflight: bool = False) -> Server:
    """``oauthledger serve`` (gunicorn with oauthledger.services.http.gunicorn_conf) on a
    free port (or ``port``: a restart where clients expect it); returns once ``wait_for``
    answers 200. ``workers=None`` keeps the configuration's worker count (2 x cores + 1).
    ``skip_preflight`` starts gunicorn as ``serve`` execs it, without serve's checks: a
    front end whose dependency went down after it started (``serve`` refuses to start
    then)."""
    port = port or free_port()
    if skip_preflight:
        args = [sys.executable, "-m", "oauthledger.services.http.server", "-c",
                "python:oauthledger.services.http.gunicorn_conf", "--bind", f"127.0.0.1:{port}"]
    else:
        args = [OAUTHLEDGER, "serve", "--bind", f"127.0.0.1:{port}"]
    if workers is not None:
        args += ["--workers", str(workers)]
    proc = spawn(f"gunicorn-{port}", args, env, workdir)
    server = Server(proc, port)
    try:
        wait_until(lambda: requests.get(server.url + wait_for, timeout=2).status_code == 200,
                   f"{wait_for} on port {port}", proc)
    except BaseException:
        server.stop()
        raise
    return server


def start_worker(env: Mapping[str, str], workdir: Path) -> Process:
    """A real Celery worker process (oauthledger.workers.celery_app) on the stack's broker."""
    args = [CELERY, "-A", "oauthledger.workers.celery_app", "worker", "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "-n", f"e2e-{uuid.uuid4().hex[:8]}@%h"]
    return spawn("celery-worker", args, env, workdir)


@dataclass
class Stack:
    """One deployment: environment, schema, front ends, worker."""

    env: dict[str, str]
    workdir: Path
    schema: str
    servers: list[Server] = field(default_factory=list)
    worker: Process | None = None
    broker_lease: tuple[int, str] | None = None
    _deps: Any = None

    @property
    def url(self) -> str:
        """The first front end's base URL."""
        return self.servers[0].url

    @property
    def prefix(self) -> str:
        """The stack's Redis key prefix."""
        return self.env["OAUTHLEDGER_REDIS_PREFIX"]

    def cli(self, *args: str, stdin: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Run ``oauthledger ARGS`` against this stack."""
        done = subprocess.run([OAUTHLEDGER, *args], env=self.env, cwd=str(ROOT), input=stdin,
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"oauthledger {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def cli_many(self, commands: list[tuple[list[str], str | None]]) -> list[str]:
        """Run several CLI commands concurrently (each costs seconds of imports on this
        machine); returns their stdout in order, failing on any non-zero exit."""
        procs = [subprocess.Popen([OAUTHLEDGER, *args], env=self.env, cwd=str(ROOT),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for args, _ in commands]
        outs = []
        for p, (args, stdin) in zip(procs, commands, strict=True):
            out, err = p.communicate(stdin, timeout=120)
            if p.returncode != 0:
                raise AssertionError(f"oauthledger {' '.join(args)} failed:\n{out}\n{err}")
            outs.append(out)
        return outs

    def deps(self) -> Any:
        """In-process Deps on the same store, Redis and key file (what the CLI builds):
        for setting up fixtures quickly. Wakes nothing; the worker's catch-up projects."""
        if self._deps is None:
            from oauthledger.events.settings import load_settings
            from oauthledger.services.deps import build_deps

            self._deps = build_deps(load_settings(self.env), wake=lambda: None)
        return self._deps

    def redis(self) -> redis.Redis:
        """A client of the stack's Redis."""
        return redis.Redis.from_url(self.env["OAUTHLEDGER_REDIS_URL"])

    def start_server(self, workers: int = 2, skip_preflight: bool = False,
                     **overrides: str) -> Server:
        """Another front end on this stack (optionally with other settings)."""
        env = {**self.env, **overrides}
        server = start_server(env, self.workdir, workers=workers,
                              skip_preflight=skip_preflight)
        return server

    def close(self) -> None:
        """Stop every process, drop the schema and the Redis keys."""
        for server in self.servers:
            server.stop()
        if self.worker is not None:
            self.worker.stop()
        if self._deps is not None:
            with contextlib.suppress(Exception):
                self._deps.store.engine.dispose()
        drop_schema(self.schema)
        if self.broker_lease is not None:
            release_broker_db(*self.broker_lease)
        with contextlib.suppress(redis.RedisError):
            client = self.redis()
            for key in client.scan_iter(f"{self.prefix}:*", count=1000):
                client.delete(key)
            client.close()


def create_schema() -> tuple[str, str]:
    """A fresh PostgreSQL schema (as the pg_url fixture makes), returns (name, URL)."""
    schema = "e2e_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    admin.dispose()
    return schema, pg_schema_url(schema)


def drop_schema(schema: str) -> None:
    """Drop a schema made by create_schema."""
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.dispose()


# Broker databases are leased with the same keys as tests/e2e/conftest.py's broker_url
# fixture, so no two tests (or sessions) ever share a queue and hand each other's
# workers their wake-ups.
BROKER_DBS = range(8, 16)
LEASE_SECONDS = 3600


def lease_broker_db() -> tuple[int, str]:
    """A Redis database number for a broker, leased to the caller; (db, lease token)."""
    client = redis.Redis.from_url(REDIS_URL)
    token = uuid.uuid4().hex
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for db in random.sample(list(BROKER_DBS), len(BROKER_DBS)):
                if client.set(f"oauthledger-test:broker-db:{db}", token, nx=True,
                              ex=LEASE_SECONDS):
                    redis.Redis.from_url(_db_url(db)).flushdb()
                    return db, token
            time.sleep(0.5)
        raise RuntimeError("no free broker database number (8-15) on the test Redis")
    finally:
        client.close()


def release_broker_db(db: int, token: str) -> None:
    """Flush and give back a leased broker database."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        redis.Redis.from_url(_db_url(db)).flushdb()
        lease = f"oauthledger-test:broker-db:{db}"
        if client.get(lease) == token.encode():
            client.delete(lease)
    finally:
        client.close()


def _db_url(db: int) -> str:
    return REDIS_URL.rsplit("/", 1)[0] + f"/{db}"


def stack_env(database_url: str, workdir: Path, broker_db: int, **extra: str
              ) -> dict[str, str]:
    """Production-mode environment: PostgreSQL, Redis with a unique prefix, a Redis
    broker on a leased database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env.update({
        "OAUTHLEDGER_DATABASE_URL": database_url,
        "OAUTHLEDGER_REDIS_URL": REDIS_URL,
        "OAUTHLEDGER_REDIS_PREFIX": "e2e-" + uuid.uuid4().hex[:10],
        "OAUTHLEDGER_BROKER_URL": _db_url(broker_db),
        "OAUTHLEDGER_DATA_DIR": str(workdir / "data"),
        "OAUTHLEDGER_SECRET_KEY_FILE": str(workdir / "secret-keys.json"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The embedded default's environment: no database, Redis or broker URL, so
    ``oauthledger serve`` runs one process on the SQLite file and in-process Redis under
    ``data_dir`` (start it with ``start_server(env, workdir, workers=None)``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env.update({"OAUTHLEDGER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def make_stack(servers: int = 2, worker: bool = True, **extra: str) -> Stack:
    """Create schema and environment, migrate, start the worker and ``servers`` front
    ends. The caller must close() it."""
    workdir = Path(tempfile.mkdtemp(prefix="oauthledger-e2e-"))
    schema, url = create_schema()
    lease = lease_broker_db()
    stack = Stack(env=stack_env(url, workdir, lease[0], **extra), workdir=workdir,
                  schema=schema, broker_lease=lease)
    try:
        stack.cli("db", "upgrade")
        if worker and celery_app_available():
            stack.worker = start_worker(stack.env, workdir)
        for _ in range(servers):
            stack.servers.append(start_server(stack.env, workdir))
    except BaseException:
        stack.close()
        raise
    return stack


def projection_position(stack: Stack) -> int | None:
    """The read model's checkpoint as /readyz reports it (None while it has none)."""
    body = requests.get(stack.url + "/readyz", timeout=5).json()
    at = body["checks"].get("projection", "")
    return int(at[3:]) if at.startswith("at ") else None


_shared: Stack | None = None


def shared_stack(config: Any) -> Stack:
    """The session's stack, started on first use and stopped when pytest ends."""
    global _shared
    if _shared is None:
        _shared = make_stack()
        config.add_cleanup(_close_shared)
    return _shared


def _close_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None


@contextlib.contextmanager
def extra_server(stack: Stack, skip_preflight: bool = False,
                 **overrides: str) -> Iterator[Server]:
    """A front end with other settings for the duration of a ``with`` block."""
    server = stack.start_server(skip_preflight=skip_preflight, **overrides)
    try:
        yield server
    finally:
        server.stop()


# -- accounts and consumers -------------------------------------------------------------

ALL_METHODS = ("HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512", "RSA-SHA1", "RSA-SHA256",
               "RSA-SHA512", "PLAINTEXT")
PASSWORD = "correct horse battery"
CALLBACK = "http://client.test:8765/oauth/callback"


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RsaPair:
    """An RSA key pair as PEM text."""

    private_pem: str
    public_pem: str


def rsa_pair() -> RsaPair:
    """A fresh 2048-bit RSA key pair (PKCS#8 private key, SubjectPublicKeyInfo public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return RsaPair(private, public)


@dataclass(frozen=True)
class Consumer:
    """A registered consumer and the credentials a client needs."""

    key: str
    secret: str
    rsa: RsaPair
    name: str


def add_user(stack: Stack, name: str | None = None) -> str:
    """Register a user (password :data:`PASSWORD`) through the service layer."""
    from oauthledger.services.users import register_user

    name = name or unique("user")
    register_user(stack.deps().ledger, name, PASSWORD, display_name=f"User {name}",
                  meta={"actor": "e2e"})
    return name


def add_consumer(stack: Stack, rsa: RsaPair, *, key: str | None = None,
                 methods: tuple[str, ...] = ALL_METHODS, callback: str | None = CALLBACK,
                 **flags: Any) -> Consumer:
    """Register a consumer with a shared secret and ``rsa``'s public key, through the
    same service the CLI and admin API use."""
    from oauthledger.services.consumers import ConsumerInput, register_consumer

    key = key or unique("consumer")
    secret = "s3cret-" + uuid.uuid4().hex
    name = f"Client {key}"
    data = ConsumerInput(name=name, description=f"The e2e client {key}", callback_url=callback,
                         public_key=rsa.public_pem, secret=secret,
                         signature_methods=list(methods), **flags)
    deps = stack.deps()
    register_consumer(deps.ledger, deps.sealer, key, data, {"actor": "e2e"})
    return Consumer(key, secret, rsa, name)


# -- the browser part of the dance -----------------------------------------------------


def parse_forms(html: str) -> list[dict[str, Any]]:
    """Every <form> in ``html``: its action, method, inputs (name -> value) and buttons
    (name -> value)."""
    from html.parser import HTMLParser

    forms: list[dict[str, Any]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                forms.append({"action": a.get("action", ""), "method": a.get("method", "get"),
                              "inputs": {}, "buttons": {}})
            elif forms and tag == "input" and "name" in a:
                forms[-1]["inputs"][a["name"]] = a.get("value", "")
            elif forms and tag == "button" and "name" in a:
                forms[-1]["buttons"][a["name"]] = a.get("value", "")

    Parser().feed(html)
    return forms


def element_text(html: str, element_id: str) -> str | None:
    """The text inside the element with id ``element_id`` (None if there is none)."""
    from html.parser import HTMLParser

    found: list[str] = []
    state = {"depth": 0}

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if state["depth"]:
                state["depth"] += 1
            elif dict(attrs).get("id") == element_id:
                state["depth"] = 1
                found.append("")

        def handle_endtag(self, tag: str) -> None:
            if state["depth"]:
                state["depth"] -= 1

        def handle_data(self, data: str) -> None:
            if state["depth"]:
                found[-1] += data

    Parser().feed(html)
    return found[0].strip() if found else None


class Browser:
    """A person with a browser: requests.Session, redirects followed by hand so that a
    redirect to the consumer's callback is observed, never fetched."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def get(self, url: str) -> requests.Response:
        """GET, following redirects that stay on the server."""
        from urllib.parse import urljoin

        resp = self.http.get(urljoin(self.base, url), allow_redirects=False, timeout=10)
        while resp.status_code in (301, 302, 303, 307) and self._local(resp):
            resp = self.http.get(urljoin(self.base, resp.headers["Location"]),
                                 allow_redirects=False, timeout=10)
        return resp

    def _local(self, resp: requests.Response) -> bool:
        loc = resp.headers.get("Location", "")
        return loc.startswith("/") or loc.startswith(self.base)

    def submit(self, page: requests.Response, fields: Mapping[str, str],
               form_index: int = 0, follow: bool = True) -> requests.Response:
        """Submit a form of ``page`` with its hidden inputs plus ``fields``."""
        from urllib.parse import urljoin

        form = parse_forms(page.text)[form_index]
        data = {**form["inputs"], **fields}
        resp = self.http.post(urljoin(page.url, form["action"]), data=data,
                              allow_redirects=False, timeout=10)
        if follow and resp.status_code in (301, 302, 303) and self._local(resp):
            return self.get(resp.headers["Location"])
        return resp

    def login_page_for(self, url: str, user: str) -> requests.Response:
        """Open ``url``; if the server sends us to /login, sign in as ``user``. Returns
        the page reached after login."""
        page = self.get(url)
        if "/login" in page.url and parse_forms(page.text):
            forms = parse_forms(page.text)
            assert "csrf_token" in forms[0]["inputs"], "the login form carries a CSRF token"
            page = self.submit(page, {"username": user, "password": PASSWORD})
        return page

    def decide(self, authorize_url: str, user: str, approve: bool = True
               ) -> requests.Response:
        """Log in if needed, check the authorize page, press approve or deny. Returns
        the response to the POST (a redirect to the callback, or the oob page)."""
        page = self.login_page_for(authorize_url, user)
        assert page.status_code == 200, page.text
        form = parse_forms(page.text)[0]
        assert {"approve", "deny"} <= set(form["buttons"]), form
        assert form["inputs"].get("csrf_token"), "the authorize form carries a CSRF token"
        button = "approve" if approve else "deny"
        return self.submit(page, {button: form["buttons"][button]}, follow=False)


def callback_params(resp: requests.Response) -> dict[str, str]:
    """The query parameters of the redirect to the consumer's callback."""
    from urllib.parse import parse_qsl, urlsplit

    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK.split("?")[0]) or "://" in location, location
    return dict(parse_qsl(urlsplit(location).query))


def authorize_url(base: str, token: str) -> str:
    """The Atlassian authorize URL for a request token."""
    from urllib.parse import quote

    return f"{base}/plugins/servlet/oauth/authorize?oauth_token={quote(token)}"
