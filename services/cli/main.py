"""The ``oauthledger`` command line: the root group and its error handling.

Each command group lives in its own module under ``services/cli/``, listed in
``COMMAND_MODULES``. Expected failures (bad settings, unreachable database or Redis, a
database that was never migrated, corrupt rows, conflicts, refused input) print one line
to stderr and exit 1; no traceback (docs/design.md, "Errors that say why"). The root
group maps them all (:func:`describe_error`), so a new command cannot forget one. A
write that reached the log while Redis could not be told succeeds, with one warning line
on stderr (docs/cli.md, "Consumers and users").

Which installation a command talks to: the data directory (``--data-dir`` or
OAUTHLEDGER_DATA_DIR, default ``./.oauthledger``). Only the commands in
:data:`CREATES_INSTALLATION` may create a new one; every other command run where there
is none says where it looked and how to point elsewhere (:func:`require_installation`).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from sqlalchemy.exc import DBAPIError, OperationalError

from oauthledger.events.connections import InstallationMissing, sqlite_file
from oauthledger.events.errors import (
    EventStoreError,
    SealingError,
    StoreUnavailable,
)
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings, SettingsError, load_settings
from oauthledger.events.store import EventStore, UnstorableText, safe_url
from oauthledger.services.deps import Deps, build_deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import PublishDeferred, watch_publishes

F = TypeVar("F", bound=Callable[..., Any])

# Commands that may create a new installation where there is none: the server, and the
# first admin (the README's quick start). `db upgrade` creates the schema it is asked
# for and prints it. Every other command refuses to start an empty installation with a
# new sealing key in whatever directory it happens to run from.
CREATES_INSTALLATION = frozenset({"serve", "user add", "db upgrade"})


@dataclass
class CliContext:
    """Lazily opened dependencies shared by the commands of one invocation."""

    _settings: Settings | None = None
    _store: EventStore | None = None
    deps: Deps | None = None
    command: str = ""
    """The running command's path without the program name (``"consumer add"``), set
    by :func:`pass_cli`."""
    params: dict[str, Any] = field(default_factory=dict)
    """The running command's parameters (what the user typed), set by :func:`pass_cli`."""
    created: list[str] = field(default_factory=list)
    """What this command created (a new installation), for the command to say so."""

    @property
    def settings(self) -> Settings:
        """Settings from the environment (read once)."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def may_create(self) -> bool:
        """True when the running command may create a new installation."""
        return self.command in CREATES_INSTALLATION

    @property
    def store(self) -> EventStore:
        """The event store. The embedded database is upgraded on first use, and created
        only by the commands of :data:`CREATES_INSTALLATION`; for any other a missing
        one is a :class:`CliError` saying where the command looked."""
        if self._store is None:
            from oauthledger.events.connections import open_store

            settings = self.settings
            path = sqlite_file(settings.database_url)
            if path is not None and not path.exists():
                if not self.may_create:
                    raise CliError(missing_installation_line(settings, "store"))
                self.created.append(f"a new installation in {path.parent.absolute()} "
                                    f"({path.name} and the key file)")
            self._store = open_store(settings, create=self.may_create)
        return self._store


def command_path(ctx: click.Context) -> str:
    """``ctx``'s command path without the program name (``"consumer add"``)."""
    names: list[str] = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def pass_cli(fn: F) -> F:
    """Pass the invocation's :class:`CliContext` as the first argument (as
    ``click.make_pass_decorator`` does), recording which command runs and with which
    parameters: the root group's error handling names options by them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        obj = ctx.ensure_object(CliContext)
        obj.command = command_path(ctx)
        obj.params = dict(ctx.params)
        return ctx.invoke(fn, obj, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CliError(click.ClickException):
    """An expected failure: printed as one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        # One line, even when a driver's or a peer's message brings line breaks.
        line = " ".join(self.format_message().splitlines())
        click.echo(f"oauthledger: {line}", err=True)


# --- which installation -----------------------------------------------------------------


def data_dir_source(settings: Settings) -> str:
    """Where the data directory comes from, for a person."""
    if os.environ.get("OAUTHLEDGER_DATA_DIR"):
        return "from OAUTHLEDGER_DATA_DIR or --data-dir"
    return "OAUTHLEDGER_DATA_DIR is not set: the default, ./.oauthledger of the current directory"


_POINT = "point to yours with --data-dir DIR or OAUTHLEDGER_DATA_DIR=DIR"


def missing_installation_line(settings: Settings, what: str, events: int = 0) -> str:
    """The one line for a command run where there is no installation: where it looked,
    why, and how to point elsewhere (``what``: ``"store"`` or ``"key file"``)."""
    data_dir = settings.data_dir.absolute()
    if what == "key file":
        key_file = Path(settings.secret_key_file).absolute()
        if os.environ.get("OAUTHLEDGER_SECRET_KEY_FILE"):
            source = "OAUTHLEDGER_SECRET_KEY_FILE"
        else:
            source = f"in the data directory: {data_dir_source(settings)}"
        held = (f", but the event store at {safe_url(settings.database_url)} holds "
                f"{events} event(s) sealed under another one" if events else "")
        return (f"no key file at {key_file} ({source}){held}: this is not an installation's "
                f"data directory — fix: {_POINT} (or OAUTHLEDGER_SECRET_KEY_FILE=FILE), or "
                "start one here with `oauthledger user add NAME --admin --password-stdin`")
    path = sqlite_file(settings.database_url)
    if os.environ.get("OAUTHLEDGER_DATABASE_URL"):
        return (f"no event database at {path} (OAUTHLEDGER_DATABASE_URL) — fix: correct "
                "OAUTHLEDGER_DATABASE_URL, or create it with `oauthledger db upgrade`")
    found = ("the data directory does not exist" if not data_dir.exists()
             else f"it holds no {path.name if path else 'event database'}")
    return (f"no installation in {data_dir} ({found}; {data_dir_source(settings)}) — fix: "
            f"{_POINT}, or start one here with `oauthledger user add NAME --admin "
            "--password-stdin`")


def require_installation(ctx: CliContext) -> None:
    """Refuse (one line) to run where there is no installation: the embedded database
    and the key file must exist unless the command may create an installation
    (:data:`CREATES_INSTALLATION`); even that command may not start a key file for a
    log that already holds events (they were sealed under another key file, and a new
    one would seal under a key no server has)."""
    settings = ctx.settings
    store = ctx.store  # the embedded database: refused unless the command may create it
    key_file = Path(settings.secret_key_file)
    if key_file.exists():
        return
    if not ctx.may_create:
        raise CliError(missing_installation_line(settings, "key file"))
    # Even a command that may create an installation: a log with events is an existing
    # one, whose key file is elsewhere.
    events = store.head()
    if events:
        raise CliError(missing_installation_line(settings, "key file", events))
    ctx.created.append(f"a new key file {key_file.absolute()}")


def app_deps(ctx: CliContext) -> Deps:
    """Deps for a command: the same connections the server uses, after
    :func:`require_installation`. On the embedded default the running server's
    in-process projection catches up from the log within its catch-up interval
    (OAUTHLEDGER_CATCHUP_INTERVAL)."""
    deps = ctx.deps
    if deps is None:
        settings = ctx.settings
        require_installation(ctx)
        deps = build_deps(settings, wake=(lambda: None) if settings.embedded_broker else None)
        ctx.deps = deps
    return deps


def cli_sealer(ctx: CliContext) -> Sealer:
    """The key file's sealer for a command that opens secrets without :func:`app_deps`,
    after :func:`require_installation` (so it starts no key file where there is none)."""
    from oauthledger.events.connections import open_sealer

    require_installation(ctx)
    return open_sealer(ctx.settings)


def announce_created(ctx: CliContext) -> None:
    """One stderr line for what this command created (a new installation, or a key
    file): starting an installation is never silent. A new installation's line covers
    its key file too."""
    for what in ctx.created[:1]:
        click.echo(f"oauthledger: created {what}; other commands find it from this "
                   f"directory, or with --data-dir {ctx.settings.data_dir.absolute()}",
                   err=True)


def cli_meta(kind: str) -> dict[str, str]:
    """Event metadata for a command: the OS user as actor, a per-process request id."""
    actor = os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"
    return {"actor": f"cli:{actor}", "request_id": f"cli-{kind}-{os.getpid()}"}


def read_stdin_line(what: str) -> str:
    """One line of standard input without its line end (a password or a secret piped
    in, so it never shows in the process list or the shell history); an empty line is
    a CliError naming ``what``."""
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CliError(f"no {what} on standard input")
    return value


# --- refused input, named by what the user typed ------------------------------------------

Label = str | Callable[[str, str, Mapping[str, Any]], str]
"""How a service field reads on a command line: an option or argument name, or a
function of (field, message, the command's parameters) for a field whose option depends
on what was given."""


def _given(*pairs: tuple[str, str], default: str) -> Label:
    """The option of the first parameter that was given, else ``default``."""
    def label(_field: str, _message: str, params: Mapping[str, Any]) -> str:
        return next((option for param, option in pairs if params.get(param)), default)
    return label


def _consumer_public_key(_field: str, message: str, params: Mapping[str, Any]) -> str:
    # "give a public key (RSA) or a shared secret (HMAC)": any of three options fixes it.
    if message.startswith("give "):
        return "--public-key, --secret or --generate-secret"
    return "--public-key"


def _consumer_secret(_field: str, message: str, params: Mapping[str, Any]) -> str:
    return "--secret or --generate-secret" if message.startswith("HMAC") else "--secret"


def _header(field_name: str, _message: str, _params: Mapping[str, Any]) -> str:
    # The call service names a refused header as "headers.<Name>".
    name = field_name.partition(".")[2]
    return f"--header {name}" if name else "--header"


_CONSUMER = {"key": "KEY", "name": "--name", "description": "--description",
             "callback_url": "--callback", "public_key": _consumer_public_key,
             "secret": _consumer_secret, "signature_methods": "--signature-methods",
             "two_legged_user": "--two-legged-user"}
_PROVIDER = {"name": "NAME", "description": "--description",
             "consumer_key": "--consumer-key",
             "shared_secret": _given(("secret_stdin", "--secret-stdin"), ("secret", "--secret"),
                                     default="--secret, --secret-stdin or --use-rsa-key"),
             "use_rsa": "--use-rsa-key", "request_token_url": "--request-token-url",
             "authorize_url": "--authorize-url", "access_token_url": "--access-token-url",
             "base_url": "--base-url"}
_PASSWORD = _given(("password_stdin", "the password on standard input"),
                   default="the password")

# The service fields of each command that can be refused, as the user typed them
# (tests/integration/test_cli_no_traceback.py checks every key is a real command).
FIELD_OPTIONS: dict[str, dict[str, Label]] = {
    "consumer add": _CONSUMER,
    "consumer reset-secret": {"secret": _given(("secret_stdin", "the secret on standard "
                                                "input"), default="the shared secret")},
    "provider add": _PROVIDER,
    "provider edit": _PROVIDER,
    "provider call": {"url": "URL", "method": "METHOD", "user": "--user",
                      "body": _given(("data_file", "--data-file"), default="--data"),
                      "headers.*": _header},
    "user add": {"name": "NAME", "password": _PASSWORD},
    "user passwd": {"password": _PASSWORD},
    "resource-server add": {"id": "SERVER_ID", "description": "--description"},
    "debug signature": {"method": "--method", "url": "--url", "headers": "--header",
                        "body": _given(("data_file", "--data-file"), default="--data"),
                        "remoteAddr": "--remote-addr", "requestId": "--request-id",
                        "consumerKey": "--consumer"},
}


def describe_validation(exc: ValidationError, command: str,
                        params: Mapping[str, Any] | None = None) -> str:
    """A refusal as one line, each service field named by the option or argument of
    ``command`` that gives it (``callback_url`` → ``--callback``)."""
    table = FIELD_OPTIONS.get(command, {})
    parts = []
    for name, message in exc.fields.items():
        label = table.get(name)
        if label is None and "." in name:
            label = table.get(name.partition(".")[0] + ".*")
        if label is None:
            label = name
        elif not isinstance(label, str):
            label = label(name, message, params or {})
        parts.append(f"{label}: {message}")
    return "; ".join(parts)


def fail_on_service_errors(fn: F) -> F:
    """Turn an application service's expected errors into one CLI line (the root group
    does this for every command too; this decorator is kept for the commands that name
    it)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            ctx = click.get_current_context()
            raise CliError(describe_validation(exc, command_path(ctx), ctx.params)) from None
        except (Conflict, NotFound) as exc:
            raise CliError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


# --- every expected failure as one line -----------------------------------------------------

# PostgreSQL SQLSTATE 42P01 (undefined_table): the schema was never migrated.
_UNDEFINED_TABLE = "42P01"
_UPGRADE = "run `oauthledger db upgrade` first"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _missing_table(orig: BaseException, text: str) -> bool:
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE:
        return True
    return ("relation " in text and "does not exist" in text) or "no such table" in text


def describe_db_error(url: str, exc: DBAPIError) -> str:
    """One line for a driver error the store did not already translate (no fix: the
    caller adds its own)."""
    orig = getattr(exc, "orig", None) or exc
    first = _first_line(orig)
    if _missing_table(orig, first):
        return f"event store at {url} has no events table ({_UPGRADE}): {first}"
    if isinstance(exc, OperationalError):
        return f"event store at {url} is unavailable: {first}"
    return f"event store at {url} failed: {first}"


def _store_fix(settings: Settings | None) -> str:
    if settings is not None and settings.is_sqlite:
        return (" — fix: check the data directory and its permissions "
                f"({settings.data_dir.absolute()}; --data-dir or OAUTHLEDGER_DATA_DIR)")
    return " — fix: start the database server, or correct OAUTHLEDGER_DATABASE_URL"


def masked_url(url: str) -> str:
    """A Redis or broker URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _redis_line(settings: Settings | None, exc: redis.RedisError) -> str:
    where = (f"Redis at {masked_url(settings.redis_url)}"
             if settings is not None and settings.redis_url else "Redis")
    if isinstance(exc, redis.AuthenticationError):
        return (f"{where} refused the login: {_first_line(exc)} — fix: correct the "
                "password in OAUTHLEDGER_REDIS_URL")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return (f"{where} is unavailable: {_first_line(exc)} — fix: start Redis, or "
                "correct OAUTHLEDGER_REDIS_URL")
    return f"{where} answered an error: {_first_line(exc)}"


def _sealing_line(settings: Settings | None, exc: SealingError) -> str:
    text = str(exc)
    if settings is not None and "is not in the key ring" in text:
        return (f"{text} (key file {Path(settings.secret_key_file).absolute()}) — fix: "
                "use this installation's key file (--data-dir or "
                "OAUTHLEDGER_SECRET_KEY_FILE), or copy the newest one from the host that "
                "rotated it")
    return text


def _settings_of(cli_ctx: CliContext | None) -> Settings | None:
    """The settings if they load (an error about them is reported as itself)."""
    if cli_ctx is None:
        return None
    try:
        return cli_ctx.settings
    except SettingsError:
        return None


def describe_error(exc: BaseException, cli_ctx: CliContext | None = None) -> str | None:
    """The one line for an expected failure, or None for anything else (a bug keeps
    its traceback: it is not the user's to fix)."""
    settings = _settings_of(cli_ctx)
    if isinstance(exc, ValidationError):
        return describe_validation(exc, cli_ctx.command if cli_ctx else "",
                                   cli_ctx.params if cli_ctx else None)
    if isinstance(exc, Conflict | NotFound | SettingsError | UnstorableText):
        return str(exc)
    if isinstance(exc, StoreUnavailable):
        cause = str(exc).partition(" is unavailable: ")[2]
        if _missing_table(exc, cause):
            return f"event store at {exc.url} has no events table ({_UPGRADE}): {cause}"
        return str(exc) + _store_fix(settings)
    if isinstance(exc, EventStoreError):  # CorruptEvent, ConcurrencyConflict
        return str(exc)
    if isinstance(exc, DBAPIError):
        url = safe_url(settings.database_url) if settings is not None else "(unknown)"
        line = describe_db_error(url, exc)
        return line + (_store_fix(settings) if isinstance(exc, OperationalError)
                       and _UPGRADE not in line else "")
    psycopg = sys.modules.get("psycopg")
    if isinstance(exc, sqlite3.Error) or (psycopg is not None and isinstance(exc, psycopg.Error)):
        # A driver's own error that reached us unwrapped (the store reads some rows on
        # a raw connection).
        url = safe_url(settings.database_url) if settings is not None else "(unknown)"
        if _missing_table(exc, _first_line(exc)):
            return f"event store at {url} has no events table ({_UPGRADE}): {_first_line(exc)}"
        return f"event store at {url} failed: {_first_line(exc)}"
    if isinstance(exc, redis.RedisError):
        return _redis_line(settings, exc)
    if isinstance(exc, SealingError):
        return _sealing_line(settings, exc)
    if isinstance(exc, InstallationMissing):
        return (missing_installation_line(settings, "store") if settings is not None
                else str(exc))
    # Errors of modules a command may have loaded; never imported here just to check.
    kombu_errors = sys.modules.get("kombu.exceptions")
    if kombu_errors is not None and isinstance(exc, kombu_errors.OperationalError):
        broker = masked_url(settings.broker_url) if settings and settings.broker_url else ""
        return (f"broker {broker} is unavailable: {_first_line(exc)} — fix: start it, or "
                "correct OAUTHLEDGER_BROKER_URL")
    for module, name in (("oauthledger.services.connections", "ProviderUnavailable"),
                         ("oauthledger.events.audit", "AuditError"),
                         ("oauthledger.events.rebuild_lock", "RebuildBusy")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return str(exc)
    if isinstance(exc, PermissionError):
        return f"{exc.filename or 'file'}: permission denied — fix: run as the account " \
               "that owns the installation"
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def warn_deferred(deferred: list[PublishDeferred]) -> None:
    """The one stderr line for commits Redis could not be told of (the command itself
    succeeded: the change is in the log and the projection catches up from it)."""
    if deferred:
        click.echo(f"oauthledger: warning: {deferred[-1].warning()}", err=True)


def _quiet_broken_pipe() -> None:
    # The reader (`| head`) went away: stop quietly, and keep Python from complaining
    # again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Root(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        # The ledger logs a publish it could not make; the command reports it in its own
        # one line (warn_deferred), so Python's last-resort handler must not print the
        # log record as well when nothing configured logging.
        ledger_log = logging.getLogger("oauthledger.services.ledger")
        if not ledger_log.handlers:
            ledger_log.addHandler(logging.NullHandler())
        with watch_publishes() as deferred:
            try:
                return super().invoke(ctx)
            except (click.exceptions.ClickException, click.exceptions.Exit,
                    click.exceptions.Abort):
                raise
            except BrokenPipeError:
                _quiet_broken_pipe()
                raise click.exceptions.Exit(1) from None
            except Exception as exc:
                line = describe_error(exc, ctx.find_object(CliContext))
                if line is None:
                    raise
                raise CliError(line) from None
            finally:
                warn_deferred(deferred)


@click.group(cls=_Root)
@click.version_option(package_name="oauthledger")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="The installation's data directory (embedded database, key file): sets "
                   "OAUTHLEDGER_DATA_DIR for the command. Default: ./.oauthledger")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """oauthledger: an event-sourced OAuth 1.0a token authority."""
    if data_dir is not None:
        if not data_dir.strip():
            # An unset shell variable (--data-dir "$DIR") must not mean the cwd.
            raise click.BadParameter("must name a directory", param_hint="--data-dir")
        # The environment, not just this process's settings: `serve`, `worker` and
        # `beat` exec programs that read it, and `doctor` reads the settings itself.
        # Absolute, so that what a command prints names it whatever the cwd.
        os.environ["OAUTHLEDGER_DATA_DIR"] = str(Path(data_dir).expanduser().absolute())
    ctx.ensure_object(CliContext)


# Every command group, one module each under services/cli/. A new group is added here.
COMMAND_MODULES = ("serve", "users", "consumers", "providers", "resource_servers", "db",
                   "events", "keys", "projection", "audit", "workers", "doctor", "debug",
                   "status")


def _register() -> None:
    # Groups are imported here, not at module top, so `oauthledger --help` stays fast and
    # a group's heavy imports (Celery, gunicorn) load only when it runs.
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"oauthledger.services.cli.{name}")
        for command in module.COMMANDS:
            if command.name not in cli.commands:
                cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    try:
        cli.main(args=argv, prog_name="oauthledger", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
