"""The ``oauthledger`` command line: the root group and its error handling.

Each command group lives in its own module under ``services/cli/``, listed in
``COMMAND_MODULES``. Expected failures (bad settings, unreachable database, corrupt rows, conflicts)
print one line to stderr and exit non-zero; no traceback (docs/design.md, "Errors that say
why"). A write that reached the log while Redis could not be told succeeds, with one
warning line on stderr (docs/cli.md, "Consumers and users").
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from oauthledger.events.errors import (
    EventStoreError,
    SealingError,
)
from oauthledger.events.settings import Settings, SettingsError, load_settings
from oauthledger.events.store import EventStore
from oauthledger.services.deps import Deps, build_deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import PublishDeferred, watch_publishes

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """Lazily opened dependencies shared by the commands of one invocation."""

    _settings: Settings | None = None
    _store: EventStore | None = None
    deps: Deps | None = None

    @property
    def settings(self) -> Settings:
        """Settings from the environment (read once)."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def store(self) -> EventStore:
        """The event store (the embedded database is created and upgraded on first use)."""
        if self._store is None:
            from oauthledger.events.connections import open_store

            self._store = open_store(self.settings)
        return self._store


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


class CliError(click.ClickException):
    """An expected failure: printed as one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"oauthledger: {self.format_message()}", err=True)


# EventStoreError covers StoreUnavailable, CorruptEvent and ConcurrencyConflict.
_EXPECTED = (SettingsError, SealingError, EventStoreError)


def app_deps(ctx: CliContext) -> Deps:
    """Deps for a command: the same connections the server uses. On the embedded default
    the running server's in-process projection catches up from the log within its
    catch-up interval (OAUTHLEDGER_CATCHUP_INTERVAL)."""
    deps = ctx.deps
    if deps is None:
        settings = ctx.settings
        deps = build_deps(settings, wake=(lambda: None) if settings.embedded_broker else None)
        ctx.deps = deps
    return deps


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


def fail_on_service_errors(fn: F) -> F:
    """Turn an application service's expected errors into one CLI line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except (ValidationError, Conflict, NotFound) as exc:
            raise CliError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def warn_deferred(deferred: list[PublishDeferred]) -> None:
    """The one stderr line for commits Redis could not be told of (the command itself
    succeeded: the change is in the log and the projection catches up from it)."""
    if deferred:
        click.echo(f"oauthledger: warning: {deferred[-1].warning()}", err=True)


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
            except _EXPECTED as exc:
                raise CliError(str(exc)) from None
            finally:
                warn_deferred(deferred)


@click.group(cls=_Root)
@click.version_option(package_name="oauthledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """oauthledger: an event-sourced OAuth 1.0a token authority."""
    ctx.ensure_object(CliContext)


# Every command group, one module each under services/cli/. A new group is added here.
COMMAND_MODULES = ("serve", "users", "consumers", "providers", "resource_servers", "db",
                   "events", "keys", "projection", "audit", "workers", "doctor", "debug")


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
