"""How the audit and maintenance commands (``events``, ``keys``, ``db``, ``audit``,
``debug``) reach the event store: opening it, and turning what goes wrong on the way
into one line (docs/design.md, "Errors that say why": no traceback for an expected
failure). The root group (services/cli/main.py) maps the same errors for every command;
:func:`db_errors` stays for the commands that name it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.exc import DBAPIError

from oauthledger.events.store import EventStore, safe_url
from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    describe_db_error,
    describe_error,
    missing_installation_line,
)

__all__ = ["db_errors", "describe_db_error", "open_store", "open_unmigrated",
           "store_exists"]

F = TypeVar("F", bound=Callable[..., Any])


def db_errors(fn: F) -> F:
    """Decorate a command so that a driver error or an unusable data directory ends it
    with one line (docs/design.md, "Errors that say why")."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DBAPIError as exc:
            obj = click.get_current_context().find_object(CliContext)
            line = describe_error(exc, obj)
            if line is None:  # pragma: no cover - describe_error maps every DBAPIError
                url = safe_url(obj.settings.database_url) if obj is not None else "(unknown)"
                line = describe_db_error(url, exc)
            raise CliError(line) from None
        except BrokenPipeError:
            raise  # the reader went away; the command decides what that means
        except PermissionError as exc:
            raise CliError(f"{exc.filename or 'file'}: permission denied") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def _data_dir_errors(cli_ctx: CliContext) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # the SQLite data directory cannot be created
        raise CliError(
            f"cannot open data directory {cli_ctx.settings.data_dir}: {exc.strerror}"
        ) from None


def store_exists(cli_ctx: CliContext) -> bool:
    """False when the store is an embedded database that does not exist (yet)."""
    from oauthledger.events.connections import sqlite_file

    path = sqlite_file(cli_ctx.settings.database_url)
    return path is None or path.exists()


def open_store(cli_ctx: CliContext) -> EventStore:
    """The command's event store (:attr:`CliContext.store`: the embedded database is
    upgraded on first use; a missing one is one line saying where the command looked,
    unless the command may create an installation)."""
    with _data_dir_errors(cli_ctx):
        return cli_ctx.store


def open_unmigrated(cli_ctx: CliContext) -> EventStore:
    """The configured store, never upgraded behind the operator's back (``db``: what it
    prints is what the database really holds). A missing embedded database is created
    only by a command that may create an installation (``db upgrade``)."""
    from oauthledger.events.connections import open_store as connect

    if not store_exists(cli_ctx) and not cli_ctx.may_create:
        raise CliError(missing_installation_line(cli_ctx.settings, "store"))
    with _data_dir_errors(cli_ctx):
        return connect(cli_ctx.settings, migrate_embedded=False)
