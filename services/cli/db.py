"""``oauthledger db``: schema migrations of the event store, as an explicit step.

The embedded SQLite database is upgraded on first use; PostgreSQL only by
``oauthledger db upgrade`` (docs/design.md, "Two ways to run"), so these commands open the
store *without* the automatic upgrade: what they print is what the database really holds.

This module also holds the small helpers the other audit command groups share
(``events``, ``keys``): turning database driver errors into one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import DBAPIError

from oauthledger.events.migrate import current_revision, head_revision, upgrade
from oauthledger.events.store import EventStore, safe_url
from oauthledger.services.cli.main import CliContext, CliError, pass_cli

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
    with one line (docs/design.md, "Errors that say why": no traceback for an expected
    failure)."""

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


def open_unmigrated(cli_ctx: CliContext) -> EventStore:
    """The configured store, never upgraded behind the operator's back."""
    from oauthledger.events.connections import open_store

    try:
        return open_store(cli_ctx.settings, migrate_embedded=False)
    except OSError as exc:  # the SQLite data directory cannot be created
        raise CliError(
            f"cannot open data directory {cli_ctx.settings.data_dir}: {exc.strerror}"
        ) from None


@click.group("db")
def db() -> None:
    """Event store schema: show and apply migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_cli
@db_errors
def db_upgrade(cli_ctx: CliContext, revision: str) -> None:
    """Migrate the event store to the newest schema (prints before -> after)."""
    store = open_unmigrated(cli_ctx)
    try:
        before, after = upgrade(store.engine, revision)
    finally:
        store.engine.dispose()
    note = " (already up to date)" if before == after else ""
    click.echo(f"{store.url}: {before or '(none)'} -> {after or '(none)'}{note}")


@db.command("current")
@click.option(
    "--check", is_flag=True,
    help="Exit 1 when the database is not at the newest revision this code knows.",
)
@pass_cli
@db_errors
def db_current(cli_ctx: CliContext, check: bool) -> None:
    """Show the revision the event store is at, and the newest one this code knows."""
    store = open_unmigrated(cli_ctx)
    try:
        current = current_revision(store.engine)
    finally:
        store.engine.dispose()
    head = head_revision()
    if current == head:
        click.echo(f"{current} (head)")
        return
    click.echo(
        f"{current or '(none)'} (this code's head is {head}: run `oauthledger db upgrade`)"
    )
    if check:
        click.get_current_context().exit(1)


COMMANDS = [db]
