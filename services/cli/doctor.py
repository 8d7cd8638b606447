"""``oauthledger doctor``: check the configuration and the running system, one line per
check with what was found and, when something is wrong, what to do about it
(docs/operations.md, "oauthledger doctor").

Every check is bounded: the database connects with a timeout and runs its statements
under one, Redis and the broker get socket timeouts, the worker ping waits a fixed time,
and each check runs on a thread the command stops waiting for after
:data:`CHECK_DEADLINE` seconds, so a server that accepts connections and never answers
costs seconds, not minutes. Whatever a check runs into is one FAIL line, never a
traceback (docs/design.md, "Errors that say why"). The command changes nothing: it does
not create the embedded database or the key file, and does not migrate.

Services never import workers/ (docs/design.md, "The direction of imports"): the worker
ping uses a Celery app of its own on the configured broker, as the front ends' publisher
does (:func:`oauthledger.services.deps.celery_publisher`).
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from oauthledger.events.errors import SealingError, StoreUnavailable
from oauthledger.events.keys import KeyLayout
from oauthledger.events.migrate import current_revision, head_revision
from oauthledger.events.projection import status as projection_status
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.sealing import load_key_ring
from oauthledger.events.settings import Settings, SettingsError, load_settings
from oauthledger.events.store import EventStore, safe_url
from oauthledger.services.cli.store_access import describe_db_error

OK, FAIL, SKIP = "ok", "FAIL", "skip"

# Bounds (seconds) that keep a dead or silent server from hanging the command.
CONNECT_TIMEOUT = 3  # PostgreSQL connect_timeout, broker connect
STATEMENT_TIMEOUT_MS = 5000  # PostgreSQL statement_timeout of the doctor's own session
BROKER_SOCKET_TIMEOUT = 3.0
PING_TIMEOUT = 3.0  # how long the workers have to answer a ping
CHECK_DEADLINE = 15.0  # the backstop: a check still running after this is a FAIL

# Projection: FAIL when it is more than this far behind the log head.
PROJECTION_MAX_EVENTS = 1000
PROJECTION_MAX_SECONDS = 60.0
# Beat: FAIL when the last expiry sweep finished longer ago than this many intervals.
SWEEP_INTERVALS = 3
# Clock: FAIL beyond this skew against the database server. The timestamp window
# (OAUTHLEDGER_TIMESTAMP_WINDOW) is judged by the front end's own clock.
CLOCK_MAX_SKEW = 5.0


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``status`` is ok, FAIL or skip; ``fix`` says what to
    do (None when there is nothing to do)."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """The text form: ``<status>  <name>: <detail>[ — fix: <fix>]``."""
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.name}: {self.detail}{fix}"

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form."""
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix}


class Skipped(Exception):
    """Raised by a check that cannot run; the message says why."""


@dataclass
class Probe:
    """What the checks found so far, for the checks after them. A field is set only
    once its part answered."""

    settings: Settings | None = None
    store: EventStore | None = None  # reachable and at the head revision
    head: int | None = None  # log head position (0: empty or not created yet)
    redis: redis.Redis | None = None  # a Redis server that answered PING
    celery: Any = None  # a Celery app whose broker accepted a connection

    def need_settings(self) -> Settings:
        """The settings, or :class:`Skipped` when they are invalid."""
        if self.settings is None:
            raise Skipped("the settings are invalid (see settings)")
        return self.settings

    def close(self) -> None:
        """Let go of the connections (a check that is still stuck keeps its own)."""
        if self.store is not None:
            self.store.engine.dispose()
        if self.redis is not None:
            self.redis.close()
        if self.celery is not None:
            self.celery.close()


def masked(url: str | None) -> str:
    """A Redis or broker URL with any password replaced by ``***``."""
    if not url:
        return "(none)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# user:password@ in any URL a message quotes (a driver's error, a setting's value).
_PASSWORD_IN_URL = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def bounded_database_url(url: str) -> str:
    """``url`` with a connect timeout and a statement timeout for PostgreSQL (libpq's
    ``connect_timeout`` and ``options=-c statement_timeout=...``, added to any options
    the URL already carries); SQLite URLs are returned as they are."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    query: dict[str, str | tuple[str, ...]] = dict(parsed.query)
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    options = query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    query["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return parsed.set(query=query).render_as_string(hide_password=False)


def _unavailable_cause(exc: StoreUnavailable) -> str:
    # The message names the engine's URL, which carries the doctor's own timeouts; the
    # line names the configured URL instead.
    return str(exc).partition(" is unavailable: ")[2] or str(exc)


# -- the checks, in order ---------------------------------------------------------------


def check_settings(probe: Probe) -> Check:
    """The OAUTHLEDGER_* variables parse (a SettingsError names the variable)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return Check("settings", FAIL, str(exc),
                     f"set {exc.variable} to a valid value, or unset it for the default")
    probe.settings = settings
    if settings.embedded_redis and settings.embedded_broker:
        found = (f"embedded default: database {safe_url(settings.database_url)}, "
                 "in-process Redis and workers")
    else:
        broker = (masked(settings.broker_url) if settings.broker_url
                  else "none (the server runs the workers in its process)")
        found = (f"database {safe_url(settings.database_url)}, Redis "
                 f"{masked(settings.redis_url) if settings.redis_url else 'in-process'}, "
                 f"broker {broker}")
    return Check("settings", OK, found)


def _sqlite_file(settings: Settings) -> Path | None:
    name = make_url(settings.database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def check_store(probe: Probe) -> Check:
    """The event store answers and its schema is at this code's head revision."""
    settings = probe.need_settings()
    url = safe_url(settings.database_url)
    head_rev = head_revision()
    if settings.is_sqlite:
        path = _sqlite_file(settings)
        if path is not None and not path.exists():
            probe.head = 0
            return Check("store", OK, f"{url}: not created yet (the server creates it and "
                                      "upgrades its schema at first start)")
    store = EventStore.from_url(bounded_database_url(settings.database_url))
    try:
        current = current_revision(store.engine)
        if current != head_rev:
            at = current or "(none: never migrated)"
            if settings.is_sqlite:
                # SQLite is upgraded by the server at start (docs/design.md, "Two ways
                # to run"): behind is not wrong yet.
                store.engine.dispose()
                return Check("store", OK, f"{url}: schema at revision {at}, upgraded to "
                                          f"{head_rev} when the server next starts")
            store.engine.dispose()
            return Check("store", FAIL,
                         f"{url}: schema at revision {at}, this code's head is {head_rev}",
                         "run `oauthledger db upgrade` (before starting the front ends)")
        head = store.head()
    except StoreUnavailable as exc:
        store.engine.dispose()
        fix = ("run as the account the server runs as, or fix the data directory's "
               "owner and mode" if settings.is_sqlite
               else "start the database server, or correct OAUTHLEDGER_DATABASE_URL")
        return Check("store", FAIL, f"{url} is unreachable: {_unavailable_cause(exc)}", fix)
    except DBAPIError as exc:
        store.engine.dispose()
        return Check("store", FAIL, describe_db_error(url, exc),
                     "check OAUTHLEDGER_DATABASE_URL and the account's rights on the "
                     "database")
    except OSError as exc:  # an SQLite file or directory this account cannot use
        store.engine.dispose()
        return Check("store", FAIL, f"{url}: {exc.strerror or exc}",
                     "run as the account the server runs as, or fix the data "
                     "directory's owner and mode")
    probe.store, probe.head = store, head
    return Check("store", OK, f"{url}: schema at {head_rev} (head), log head at "
                              f"position {head}")


def check_redis(probe: Probe) -> Check:
    """The configured Redis answers PING."""
    settings = probe.need_settings()
    if settings.embedded_redis:
        raise Skipped("OAUTHLEDGER_REDIS_URL is not set: the embedded in-process store "
                      "lives inside the server process")
    from oauthledger.events.connections import open_redis

    # open_redis bounds the connect (2 s) and every reply (5 s).
    client = open_redis(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        return Check("redis", FAIL, f"{masked(settings.redis_url)}: {_first_line(exc)}",
                     "start Redis, or correct OAUTHLEDGER_REDIS_URL")
    probe.redis = client
    return Check("redis", OK, f"{masked(settings.redis_url)} answered PING")


def _celery_app(settings: Settings) -> Any:
    """A Celery app on the configured broker that gives up at once instead of retrying:
    one connection attempt, bounded by :data:`CONNECT_TIMEOUT`."""
    from celery import Celery

    app = Celery("oauthledger-doctor", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json", accept_content=["json"],
        broker_connection_retry=False, broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0, broker_connection_timeout=CONNECT_TIMEOUT,
        broker_transport_options={"max_retries": 0,
                                  "socket_connect_timeout": CONNECT_TIMEOUT,
                                  "socket_timeout": BROKER_SOCKET_TIMEOUT},
    )
    return app


def check_broker(probe: Probe) -> Check:
    """The Celery broker accepts a connection."""
    settings = probe.need_settings()
    if settings.embedded_broker:
        raise Skipped("OAUTHLEDGER_BROKER_URL is not set: the server runs the workers in "
                      "its own process")
    app = _celery_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0)
    except Exception as exc:  # noqa: BLE001 - each transport raises its own error types
        app.close()
        return Check("broker", FAIL, f"{masked(settings.broker_url)}: {_first_line(exc)}",
                     "start the broker, or correct OAUTHLEDGER_BROKER_URL")
    probe.celery = app
    return Check("broker", OK, f"{masked(settings.broker_url)} accepted a connection")


def check_projection(probe: Probe) -> Check:
    """The read model's checkpoint is close to the log head."""
    settings = probe.need_settings()
    if settings.embedded_redis:
        raise Skipped("the embedded projection lives inside the server process (rebuilt "
                      "from the log at every start)")
    if probe.store is None:
        raise Skipped("the event store is not usable (see store)")
    if probe.redis is None:
        raise Skipped("Redis is unreachable (see redis)")
    st = projection_status(probe.store, ReadModel(probe.redis, KeyLayout(settings.redis_prefix)))
    runner = ("a worker runs (`oauthledger worker`)" if settings.broker_url
              else "the server runs (it projects in its own process without a broker)")
    if st.checkpoint is None:
        if st.rebuild_running or st.building:
            return Check("projection", OK, f"no checkpoint in {st.namespace}: a rebuild "
                                           f"into {st.building or 'a new namespace'} is "
                                           "running (the hot path reads the store "
                                           "meanwhile)")
        if st.head == 0:
            return Check("projection", OK, "the log is empty: nothing to project yet")
        return Check("projection", FAIL,
                     f"no checkpoint in the live namespace {st.namespace} while the log is "
                     f"at position {st.head} (Redis was emptied, or nothing has projected "
                     "yet): the hot path falls back to the store",
                     f"make sure {runner} — its next projection rebuilds the read model — "
                     "or run `oauthledger projection rebuild`")
    events = st.lag_events or 0
    seconds = st.lag_seconds or 0.0
    found = (f"at position {st.checkpoint} of {st.head}: " + (
        f"{events} event(s) behind, the oldest unprojected one {seconds:.1f} s old"
        if events else "caught up"))
    if events > PROJECTION_MAX_EVENTS or seconds > PROJECTION_MAX_SECONDS:
        return Check("projection", FAIL,
                     f"{found} (limits: {PROJECTION_MAX_EVENTS} events, "
                     f"{PROJECTION_MAX_SECONDS:g} s)",
                     f"make sure {runner} and reaches the database and Redis "
                     "(`oauthledger projection status`)")
    return Check("projection", OK, found)


def check_workers(probe: Probe) -> Check:
    """At least one Celery worker answers a ping (``celery inspect ping``)."""
    settings = probe.need_settings()
    if settings.embedded_broker:
        raise Skipped("no broker: the server runs the workers in its own process")
    if probe.celery is None:
        raise Skipped("the broker is unreachable (see broker)")
    replies = probe.celery.control.ping(timeout=PING_TIMEOUT) or []
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check("workers", FAIL,
                     f"no worker answered a ping within {PING_TIMEOUT:g} s",
                     "start one or more: `oauthledger worker` (docs/workers.md, "
                     '"Running")')
    return Check("workers", OK, f"{len(names)} answered a ping: {', '.join(names)}")


def check_beat(probe: Probe) -> Check:
    """Beat's expiry sweep ran within the last few sweep intervals."""
    settings = probe.need_settings()
    if settings.embedded_broker:
        raise Skipped("no broker: the server sweeps expiries in its own process")
    if probe.redis is None:
        raise Skipped("Redis is unreachable (see redis)")
    key = KeyLayout(settings.redis_prefix).last_sweep
    limit = SWEEP_INTERVALS * settings.sweep_interval
    fix = ("run exactly one `oauthledger beat`, and a worker to run its sweeps "
           '(docs/workers.md, "Running")')
    raw = probe.redis.get(key)
    if raw is None:
        return Check("beat", FAIL, f"no expiry sweep recorded ({key}): beat has not had a "
                                   "sweep run since it started or Redis was emptied", fix)
    try:
        age = time.time() - float(raw)
    except ValueError:
        return Check("beat", FAIL, f"{key} holds {raw[:40]!r}, not a time", fix)
    limit_text = f"{SWEEP_INTERVALS} × OAUTHLEDGER_SWEEP_INTERVAL = {limit:g} s"
    if age > limit:
        return Check("beat", FAIL, f"the last expiry sweep finished {age:.0f} s ago, more "
                                   f"than {limit_text}", fix)
    # A negative age is the worker's clock running ahead of this host's (see clock).
    return Check("beat", OK, f"the last expiry sweep finished {max(age, 0.0):.0f} s ago "
                             f"(limit {limit_text})")


def check_key_file(probe: Probe) -> Check:
    """The key file exists, is readable by this account only, and parses."""
    settings = probe.need_settings()
    # Absolute, so the printed chmod works from any directory.
    path = Path(settings.secret_key_file).absolute()
    try:
        st = path.stat()
    except FileNotFoundError:
        if probe.head is None:
            raise Skipped(f"{path} does not exist; whether the log needs it is unknown "
                          "(see store)") from None
        if probe.head == 0:
            raise Skipped(f"{path} does not exist yet: the server generates it (mode "
                          "0600) at first use") from None
        return Check("key-file", FAIL,
                     f"{path} does not exist, but the log holds {probe.head} event(s): "
                     "secrets sealed under its keys cannot be opened, and the next start "
                     "would generate a new, different key",
                     f"restore {path} from a backup before starting the server")
    except OSError as exc:
        return Check("key-file", FAIL, f"{path}: {exc.strerror or exc}",
                     "run as the account the server runs as")
    if not stat.S_ISREG(st.st_mode):
        return Check("key-file", FAIL, f"{path} is not a regular file",
                     f"restore {path} from a backup")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check("key-file", FAIL,
                     f"{path} has mode {mode:04o}: other accounts can read the keys that "
                     "open every sealed secret",
                     f"chmod 600 {shlex.quote(str(path))}")
    try:
        ring = load_key_ring(path, create=False)
    except SealingError as exc:
        found = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        return Check("key-file", FAIL, found,
                     f"run as the account the server runs as; if {path} is damaged, "
                     "restore it from a backup")
    return Check("key-file", OK, f"{path}: mode {mode:04o}, {len(ring.keys)} key(s)")


def check_base_url(probe: Probe) -> Check:
    """OAUTHLEDGER_BASE_URL is set whenever OAUTHLEDGER_TRUSTED_PROXIES is."""
    settings = probe.need_settings()
    if settings.base_url:
        return Check("base-url", OK, f"OAUTHLEDGER_BASE_URL is {settings.base_url}")
    if not settings.trusted_proxies:
        return Check("base-url", OK, "no OAUTHLEDGER_BASE_URL and no trusted proxies: "
                                     "links are built from each request's Host header")
    proxies = ", ".join(str(net) for net in settings.trusted_proxies)
    return Check("base-url", FAIL,
                 f"OAUTHLEDGER_TRUSTED_PROXIES is set ({proxies}) but OAUTHLEDGER_BASE_URL "
                 "is not: the links this server hands out (serverInfo's baseUrl, the "
                 "application-links manifest, the consumer side's callbacks) name the "
                 "address the proxy forwards to, not the public one",
                 "set OAUTHLEDGER_BASE_URL to the public URL clients use, e.g. "
                 "https://jira.example.com")


def check_clock(probe: Probe) -> Check:
    """This host's clock agrees with the database server's within CLOCK_MAX_SKEW."""
    settings = probe.need_settings()
    if settings.is_sqlite:
        raise Skipped("SQLite runs on this host's clock: nothing to compare with")
    if probe.store is None:
        raise Skipped("the event store is not usable (see store)")
    with probe.store.engine.connect() as conn:
        before = time.time()
        server = float(conn.exec_driver_sql(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar_one())
        after = time.time()
    # The server read its clock somewhere within the round trip: compare with its middle
    # and allow half the round trip of doubt.
    skew = server - (before + after) / 2
    doubt = (after - before) / 2
    found = (f"the database server's clock is {skew:+.3f} s from this host's "
             f"(round trip {doubt * 2000:.0f} ms)")
    if abs(skew) - doubt > CLOCK_MAX_SKEW:
        return Check("clock", FAIL, f"{found}, more than {CLOCK_MAX_SKEW:g} s",
                     "synchronise both clocks (NTP: chrony, systemd-timesyncd): front ends "
                     "refuse an oauth_timestamp more than OAUTHLEDGER_TIMESTAMP_WINDOW "
                     f"({settings.timestamp_window:g} s) from their own clock")
    return Check("clock", OK, found)


# (name, check, fix when the check does not finish within CHECK_DEADLINE)
CHECKS: tuple[tuple[str, Callable[[Probe], Check], str], ...] = (
    ("settings", check_settings, "check the OAUTHLEDGER_* variables"),
    ("store", check_store, "check that the database server answers from this host"),
    ("redis", check_redis, "check that Redis answers from this host"),
    ("broker", check_broker, "check that the broker answers from this host"),
    ("projection", check_projection, "check that the database and Redis answer"),
    ("workers", check_workers, "check that the broker answers from this host"),
    ("beat", check_beat, "check that Redis answers from this host"),
    ("key-file", check_key_file, "check the file system holding the key file"),
    ("base-url", check_base_url, "check the OAUTHLEDGER_* variables"),
    ("clock", check_clock, "check that the database server answers from this host"),
)


def run_check(name: str, fn: Callable[[Probe], Check], probe: Probe, timeout_fix: str,
              deadline: float = CHECK_DEADLINE) -> Check:
    """Run one check on a thread and wait at most ``deadline`` seconds for it. A check
    that raises is a FAIL line naming the error; one that is still running is a FAIL
    line saying so (its thread is a daemon and is left behind)."""
    outcome: list[Check] = []

    def target() -> None:
        try:
            outcome.append(fn(probe))
        except Skipped as why:
            outcome.append(Check(name, SKIP, str(why)))
        except Exception as exc:  # noqa: BLE001 - docs/design.md, "Errors that say why"
            outcome.append(Check(name, FAIL, f"{type(exc).__name__}: {_first_line(exc)}",
                                 timeout_fix))

    thread = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(deadline)
    if not outcome:
        return Check(name, FAIL, f"no answer within {deadline:g} s", timeout_fix)
    check = outcome[0]
    # Settings errors quote the raw value and drivers their URL: never a password.
    return Check(check.name, check.status, hide_passwords(check.detail),
                 check.fix and hide_passwords(check.fix))


def run_checks(probe: Probe | None = None) -> Iterator[Check]:
    """Every check in order, each as soon as it is done."""
    probe = probe or Probe()
    try:
        for name, fn, timeout_fix in CHECKS:
            yield run_check(name, fn, probe, timeout_fix)
    finally:
        probe.close()


@click.command("doctor")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="One line per check, or one JSON document.")
def doctor(fmt: str) -> None:
    """Check the configuration and the running system; exit 1 if any check FAILs.

    Each line: ok|FAIL|skip, the check, what was found and, for a FAIL, the fix."""
    checks = []
    for check in run_checks():
        checks.append(check)
        if fmt == "text":
            click.echo(check.line())
    failed = any(check.status == FAIL for check in checks)
    if fmt == "json":
        click.echo(json.dumps({"ok": not failed,
                               "checks": [check.as_dict() for check in checks]}, indent=2))
    if failed:
        click.get_current_context().exit(1)


COMMANDS = [doctor]
