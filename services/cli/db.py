"""``oauthledger db``: schema migrations of the event store, as an explicit step.

The embedded SQLite database is upgraded on first use; PostgreSQL only by
``oauthledger db upgrade`` (docs/design.md, "Two ways to run"), so these commands open the
store *without* the automatic upgrade
(:func:`oauthledger.services.cli.store_access.open_unmigrated`): what they print is what
the database really holds.
"""

from __future__ import annotations

import click

from oauthledger.events.migrate import current_revision, head_revision, upgrade
from oauthledger.services.cli.main import CliContext, pass_cli
from oauthledger.services.cli.store_access import db_errors, open_unmigrated, store_exists


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
    head = head_revision()
    if not store_exists(cli_ctx):
        # Say so without creating it: a `db current` run from the wrong directory must
        # not leave an empty installation behind.
        from oauthledger.events.connections import sqlite_file

        path = sqlite_file(cli_ctx.settings.database_url)
        click.echo(f"(none) (no event database at {path.absolute() if path else '?'}; "
                   f"this code's head is {head}: `oauthledger db upgrade` creates it, or "
                   "point --data-dir or OAUTHLEDGER_DATA_DIR at the installation)")
        if check:
            click.get_current_context().exit(1)
        return
    store = open_unmigrated(cli_ctx)
    try:
        current = current_revision(store.engine)
    finally:
        store.engine.dispose()
    if current == head:
        click.echo(f"{current} (head)")
        return
    click.echo(
        f"{current or '(none)'} (this code's head is {head}: run `oauthledger db upgrade`)"
    )
    if check:
        click.get_current_context().exit(1)


COMMANDS = [db]
