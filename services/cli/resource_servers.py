"""``oauthledger resource-server add|remove``: credentials for the verify API (and, with
``--act-for-users``, the consumer side's call API on behalf of a named user)."""

from __future__ import annotations

import click

from oauthledger.services.cli.main import (
    CliContext,
    app_deps,
    cli_meta,
    fail_on_service_errors,
    pass_cli,
)


@click.group("resource-server")
def resource_server() -> None:
    """Credentials for resource servers that call the verify API."""


@resource_server.command("add")
@click.argument("server_id")
@click.option("--description", default="")
@click.option("--act-for-users", is_flag=True,
              help="may also call service providers on behalf of any user it names "
                   "(POST /rest/oauthledger/1/service-providers/NAME/call)")
@pass_cli
@fail_on_service_errors
def resource_server_add(ctx: CliContext, server_id: str, description: str,
                        act_for_users: bool) -> None:
    """Create a credential; its secret is printed once."""
    from oauthledger.services.resource_servers import create_resource_server

    deps = app_deps(ctx)
    secret = create_resource_server(deps.ledger, deps.sealer, server_id, description,
                                    cli_meta("rs-add"), act_for_users=act_for_users)
    click.echo(f"resource server {server_id} added"
               + (" (may act for users through the call API)" if act_for_users else ""))
    click.echo(f"secret (shown once): {secret}")


@resource_server.command("remove")
@click.argument("server_id")
@pass_cli
@fail_on_service_errors
def resource_server_remove(ctx: CliContext, server_id: str) -> None:
    """Withdraw a credential."""
    from oauthledger.services.resource_servers import remove_resource_server

    remove_resource_server(app_deps(ctx).ledger, server_id, cli_meta("rs-remove"))
    click.echo(f"resource server {server_id} removed")


COMMANDS = [resource_server]
