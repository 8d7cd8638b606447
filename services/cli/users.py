"""``oauthledger user add|passwd|disable``: user accounts."""

from __future__ import annotations

import click

from oauthledger.services.cli.main import (
    CliContext,
    announce_created,
    app_deps,
    cli_meta,
    fail_on_service_errors,
    pass_cli,
    read_stdin_line,
)


@click.group()
def user() -> None:
    """Manage user accounts."""


def _read_password(password_stdin: bool) -> str:
    if not password_stdin:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return read_stdin_line("password")


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="may use the OAuth Administration pages and API")
@click.option("--display-name", default=None)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@pass_cli
@fail_on_service_errors
def user_add(ctx: CliContext, name: str, admin: bool, display_name: str | None,
             password_stdin: bool) -> None:
    """Create a user (password hashed with argon2id). The first one may start a new
    installation where there is none (the data directory, its database and key file)."""
    from oauthledger.services.users import register_user, validate_password

    password = _read_password(password_stdin)
    validate_password(password)  # before a new installation is started for nothing
    register_user(app_deps(ctx).ledger, name, password, admin=admin, display_name=display_name,
                  meta=cli_meta("user-add"))
    click.echo(f"user {name} added{' (admin)' if admin else ''}")
    announce_created(ctx)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
@pass_cli
@fail_on_service_errors
def user_passwd(ctx: CliContext, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    from oauthledger.services.users import change_password

    # The installation first: no password prompt in a directory that has none.
    ledger = app_deps(ctx).ledger
    change_password(ledger, name, _read_password(password_stdin), cli_meta("passwd"))
    click.echo(f"password of {name} changed")


@user.command("disable")
@click.argument("name")
@pass_cli
@fail_on_service_errors
def user_disable(ctx: CliContext, name: str) -> None:
    """Disable a user and revoke every access token the user granted."""
    from oauthledger.services.users import disable_user

    n = disable_user(app_deps(ctx).ledger, name, cli_meta("user-disable"))
    click.echo(f"user {name} disabled; {n} access token(s) revoked")


COMMANDS = [user]
