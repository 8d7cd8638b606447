"""How the audit and maintenance commands (``events``, ``keys``, ``db``) reach the event
store: opening it, and turning what goes wrong on the way into one line (docs/design.md,
"Errors that say why": no traceback for an expected failure).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.exc import DBAPIError

from oauthledger.events.store import EventStore, safe_url
from oauthledger.services.cli.main import CliContext, CliError

F = TypeVar("F", bound=Callable[..., Any])

# PostgreSQL SQLSTATE 42P01 (undefined_table): the schema was never migrated.
_UNDEFINED_TABLE = "42P01"


def describe_db_error(url: str, exc: DBAPIError) -> str:
    """One line for a driver error the store did not already translate."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else type(orig).__name__
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE or "no such table" in first:
        return (
            f"event store at {url} has no events table (run `oauthledger db upgrade` first): "
            f"{first}"
        )
    return f"event store at {url} failed: {first}"


def db_errors(fn: F) -> F:
    """Decorate a command so that a driver error or an unusable data directory ends it
    with one line (docs/design.md, "Errors that say why")."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DBAPIError as exc:
            obj = click.get_current_context().find_object(CliContext)
            url = safe_url(obj.settings.database_url) if obj is not None else "(unknown)"
            raise CliError(describe_db_error(url, exc)) from None
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


def open_store(cli_ctx: CliContext) -> EventStore:
    """The command's event store (:attr:`CliContext.store`: the embedded database is
    created and upgraded on first use)."""
    with _data_dir_errors(cli_ctx):
        return cli_ctx.store


def open_unmigrated(cli_ctx: CliContext) -> EventStore:
    """The configured store, never upgraded behind the operator's back (``db``: what it
    prints is what the database really holds)."""
    from oauthledger.events.connections import open_store as connect

    with _data_dir_errors(cli_ctx):
        return connect(cli_ctx.settings, migrate_embedded=False)
