"""The ``oauthledger`` command line: the root group and its error handling.

Each command group lives in its own module (``services/cli_<group>.py``) and is added
below. Expected failures (bad settings, unreachable database, corrupt rows, conflicts)
print one line to stderr and exit non-zero; no traceback (DESIGN.md, "Errors").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import click

from events.errors import (
    EventStoreError,
    SealingError,
)
from events.settings import Settings, SettingsError, load_settings
from events.store import EventStore


@dataclass
class CliContext:
    """Lazily opened dependencies shared by the commands of one invocation."""

    _settings: Settings | None = None
    _store: EventStore | None = None
    extras: dict[str, Any] = field(default_factory=dict)

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
            from events.connections import open_store

            self._store = open_store(self.settings)
        return self._store


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


class CliError(click.ClickException):
    """An expected failure: printed as one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"oauthledger: {self.format_message()}", err=True)


# EventStoreError covers StoreUnavailable, CorruptEvent and ConcurrencyConflict.
_EXPECTED = (SettingsError, SealingError, EventStoreError)


class _Root(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _EXPECTED as exc:
            raise CliError(str(exc)) from None


@click.group(cls=_Root)
@click.version_option(package_name="oauthledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """oauthledger: an event-sourced OAuth 1.0a token authority."""
    ctx.ensure_object(CliContext)


def _register() -> None:
    # Groups are imported here, not at module top, so `oauthledger --help` stays fast and
    # a group's heavy imports (Celery, gunicorn) load only when it runs.
    import importlib
    import pkgutil

    import services

    for mod in pkgutil.iter_modules(services.__path__):
        if mod.name.startswith("cli_"):
            module = importlib.import_module(f"services.{mod.name}")
            for command in getattr(module, "COMMANDS", ()):
                cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    try:
        cli.main(args=argv, prog_name="oauthledger", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
