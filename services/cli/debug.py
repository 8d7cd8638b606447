"""``oauthledger debug signature``: the signature debugger on the command line
(services.oauth.debugger; docs/oauth.md, "Debugging signatures").

It reads the consumer and the token from the event store and opens their secrets with
the key file, as the server does; it changes nothing and uses up no nonce. The report
names the secret combination or the single difference that reproduces the client's
signature, never a secret.

``--request-id ID`` debugs a refused request of the failure history instead
(services/failures.py), rebuilt from what the history kept; the history is in Redis, so
this needs OAUTHLEDGER_REDIS_URL (the embedded default keeps it inside the server).
"""

from __future__ import annotations

import json
from typing import Any

import click

from oauthledger.services.cli.consumers import history_deps, redis_errors
from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    cli_sealer,
    fail_on_service_errors,
    pass_cli,
)
from oauthledger.services.cli.store_access import db_errors, open_store


@click.group()
def debug() -> None:
    """Diagnose what goes wrong between a client and this server."""


@debug.command("signature")
@click.option("--method", "-X", "method", default="GET", show_default=True,
              help="the request's HTTP method")
@click.option("--url", default=None, help="the URL the client sent the request to")
@click.option("--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="a request header as sent, e.g. -H 'Authorization: OAuth ...' (repeat)")
@click.option("--data", "-d", default=None, help="the request body as sent")
@click.option("--data-file", type=click.File("r", encoding="utf-8"), default=None,
              help="read the request body from a file ('-' for standard input)")
@click.option("--remote-addr", default=None,
              help="the address the request came from (forwarding headers count only from "
                   "a trusted proxy)")
@click.option("--request-id", default=None, metavar="ID",
              help="instead of a request: the id of a refused request in a consumer's "
                   "failure history")
@click.option("--consumer", default=None, metavar="KEY",
              help="with --request-id: the consumer whose history holds it (default: "
                   "search every consumer's)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_cli
@db_errors
@fail_on_service_errors
@redis_errors
def debug_signature_command(ctx: CliContext, method: str, url: str | None,  # type: ignore[no-untyped-def]
                            headers: tuple[str, ...], data: str | None, data_file,
                            remote_addr: str | None, request_id: str | None,
                            consumer: str | None, fmt: str) -> None:
    """Show what the server computes for a signed request and why its signature does
    (not) match: the parameters and where they came from, the URL and base string the
    server uses, the verdict, and the diagnosis. Give the request (--url, -H, --data), or
    --request-id of a refused request in the failure history. Secrets are never printed."""
    from oauthledger.services.oauth.debugger import (
        Report,
        debug_request,
        debug_signature,
        header_lines,
        store_loader,
    )

    report: Report
    if request_id is not None:
        given = [name for name, value in (("--url", url), ("--header", headers),
                                          ("--data", data), ("--data-file", data_file),
                                          ("--remote-addr", remote_addr)) if value]
        if given:
            raise CliError(f"give --request-id alone (with --consumer), not with "
                           f"{', '.join(given)}")
        from oauthledger.services.failures import history_report

        report = history_report(history_deps(ctx), request_id, consumer)
        _print(report, fmt)
        return
    if consumer is not None:
        raise CliError("--consumer goes with --request-id")
    if url is None:
        raise CliError("give --url (and the request's headers and body), or --request-id")
    if data is not None and data_file is not None:
        raise CliError("give --data or --data-file, not both")
    if data_file is not None:
        try:
            data = data_file.read()
        except UnicodeDecodeError:
            raise CliError("--data-file: the body is not UTF-8 text") from None
    pairs = header_lines("\n".join(headers))
    dreq = debug_request(method, url, pairs, data, remote_addr)
    store = open_store(ctx)
    sealer = cli_sealer(ctx)  # never starts a key file where there is none
    report = debug_signature(dreq, store_loader(store, sealer), ctx.settings)
    _print(report, fmt)


def _print(report: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.to_text(), nl=False)


COMMANDS = [debug]
