"""``oauthledger provider add|list|show|edit|remove|connections|drop|call``: the service
providers this installation consumes, the users' connections to them, and calls made
through them on a user's behalf (the same services as the Service Providers tab and the
JSON API; docs/cli.md, "Service providers")."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, BinaryIO

import click

from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    app_deps,
    cli_meta,
    fail_on_service_errors,
    pass_cli,
    read_stdin_line,
)

# The hand-added provider's options, refused together with --base-url. A field the
# service refuses is named by its option by the root group (FIELD_OPTIONS in
# services/cli/main.py).
_HAND_OPTIONS = {"consumer_key": "--consumer-key", "secret": "--secret",
                 "secret_stdin": "--secret-stdin", "use_rsa_key": "--use-rsa-key",
                 "request_token_url": "--request-token-url", "authorize_url": "--authorize-url",
                 "access_token_url": "--access-token-url"}
CONSUMER_INFO_PATH = "/plugins/servlet/oauth/consumer-info"


def _when(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _secret(secret: str | None, secret_stdin: bool) -> str | None:
    if secret is not None and secret_stdin:
        raise CliError("give --secret or --secret-stdin, not both")
    return read_stdin_line("shared secret") if secret_stdin else secret


@click.group("provider")
def provider() -> None:
    """Service providers this installation calls on its users' behalf."""


@provider.command("add")
@click.argument("name")
@click.option("--base-url", default=None,
              help="another oauthledger or Atlassian application: its endpoints under this "
                   "URL, signed with this installation's RSA key")
@click.option("--description", default="",
              help="(with --base-url, empty: from the application's manifest)")
@click.option("--consumer-key", default=None, help="the key the provider issued to us")
@click.option("--secret", default=None,
              help="the shared secret the provider issued (HMAC-SHA1); visible in the "
                   "process list, prefer --secret-stdin")
@click.option("--secret-stdin", is_flag=True, help="read the shared secret from standard input")
@click.option("--use-rsa-key", is_flag=True,
              help="sign RSA-SHA1 with this installation's key instead of a shared secret")
@click.option("--request-token-url", default=None)
@click.option("--authorize-url", default=None)
@click.option("--access-token-url", default=None)
@pass_cli
@fail_on_service_errors
def provider_add(ctx: CliContext, name: str, base_url: str | None, description: str,
                 **hand: Any) -> None:
    """Add a service provider: by another application's base URL, or by hand (consumer
    key, shared secret or --use-rsa-key, and the three endpoint URLs)."""
    from oauthledger.services import installation as inst
    from oauthledger.services import providers as prov

    deps = app_deps(ctx)
    meta = cli_meta("provider-add")
    if base_url is not None:
        given = [option for k, option in _HAND_OPTIONS.items() if hand.get(k)]
        if given:
            raise CliError(f"{', '.join(given)}: not with --base-url (a provider added by "
                           "its base URL is signed with this installation's RSA key)")
        if not description.strip():
            description = _manifest_description(ctx, base_url)
        prov.validate_provider(prov.by_base_url(name, base_url, "-", description))
        info = inst.ensure_installation(deps.ledger, deps.sealer, meta)
        state = prov.add_provider(deps.ledger, deps.sealer,
                                  prov.by_base_url(name, base_url, info.key, description), meta)
        click.echo(f"service provider {state.name} added (RSA-SHA1, at {state.base_url})")
        where = (f"{ctx.settings.base_url.rstrip('/')}{CONSUMER_INFO_PATH}"
                 if ctx.settings.base_url else
                 f"this installation's base URL + {CONSUMER_INFO_PATH} "
                 "(set OAUTHLEDGER_BASE_URL to have it printed)")
        click.echo(f"now add this installation as a consumer at {state.name}, by URL: {where} "
                   f"(consumer key {info.key})")
        return
    secret = _secret(hand["secret"], hand["secret_stdin"])
    data = prov.ProviderInput(
        name=name, description=description, consumer_key=hand["consumer_key"] or "",
        shared_secret=secret or "", use_rsa=hand["use_rsa_key"],
        request_token_url=hand["request_token_url"] or "",
        authorize_url=hand["authorize_url"] or "",
        access_token_url=hand["access_token_url"] or "")
    if data.use_rsa:
        prov.validate_provider(data)
        inst.ensure_installation(deps.ledger, deps.sealer, meta)
    state = prov.add_provider(deps.ledger, deps.sealer, data, meta)
    method = "HMAC-SHA1" if state.secret_sealed else "RSA-SHA1"
    click.echo(f"service provider {state.name} added ({method})")


def _manifest_description(ctx: CliContext, base_url: str) -> str:
    """A description from the application's manifest, "" when it publishes none."""
    from oauthledger.services import remote_fetch
    from oauthledger.services.applinks_manifest import fetch_manifest

    manifest = fetch_manifest(base_url, remote_fetch.policy(ctx.settings))
    if manifest is None:
        return ""
    # As the add-by-base-URL form fills it.
    from oauthledger.services.http.pages.service_providers import manifest_description

    return manifest_description(manifest)


@provider.command("list")
@pass_cli
def provider_list(ctx: CliContext) -> None:
    """List service providers: name, signature method, address, connected users."""
    from oauthledger.services.connections import connections_of_provider, status_of
    from oauthledger.services.providers import list_providers

    ledger = app_deps(ctx).ledger
    states = list_providers(ledger)
    if not states:
        click.echo("no service providers")
    now = ledger.clock()
    for s in states:
        connected = sum(1 for c in connections_of_provider(ledger, s.name)
                        if status_of(c, now) != "not_connected")
        method = "HMAC-SHA1" if s.secret_sealed else "RSA-SHA1"
        click.echo(f"{s.name}\t{method}\t{s.base_url or s.request_token_url}"
                   f"\t{connected} connection(s)")


@provider.command("show")
@click.argument("name")
@pass_cli
@fail_on_service_errors
def provider_show(ctx: CliContext, name: str) -> None:
    """Show one service provider as JSON (never its shared secret)."""
    from oauthledger.services.providers import load_provider, provider_view

    click.echo(json.dumps(provider_view(load_provider(app_deps(ctx).ledger, name)), indent=2))


@provider.command("edit")
@click.argument("name")
@click.option("--description", default=None)
@click.option("--consumer-key", default=None)
@click.option("--secret", default=None,
              help="a new shared secret (switches to HMAC-SHA1); prefer --secret-stdin")
@click.option("--secret-stdin", is_flag=True, help="read the new shared secret from stdin")
@click.option("--use-rsa-key", is_flag=True, help="switch to RSA-SHA1 with this installation's key")
@click.option("--request-token-url", default=None)
@click.option("--authorize-url", default=None)
@click.option("--access-token-url", default=None)
@click.option("--base-url", default=None,
              help="calls may go under it; '' clears it. The endpoint URLs move with it "
                   "when they are the Atlassian paths under the old one")
@pass_cli
@fail_on_service_errors
def provider_edit(ctx: CliContext, name: str, description: str | None,
                  consumer_key: str | None, secret: str | None, secret_stdin: bool,
                  use_rsa_key: bool, request_token_url: str | None, authorize_url: str | None,
                  access_token_url: str | None, base_url: str | None) -> None:
    """Change some fields of a service provider (not its name). The users' connections
    stay; if the consumer key changed, the provider refuses their tokens and they
    reconnect."""
    from oauthledger.services import installation as inst
    from oauthledger.services import providers as prov

    new_secret = _secret(secret, secret_stdin)
    if new_secret and use_rsa_key:
        raise CliError("give a shared secret or --use-rsa-key, not both")
    changes: dict[str, Any] = {k: v for k, v in (
        ("description", description), ("consumer_key", consumer_key),
        ("request_token_url", request_token_url), ("authorize_url", authorize_url),
        ("access_token_url", access_token_url), ("base_url", base_url)) if v is not None}
    if new_secret:
        changes.update(shared_secret=new_secret, use_rsa=False)
    if use_rsa_key:
        changes["use_rsa"] = True
    if not changes:
        raise CliError("nothing to change: give at least one option (see --help)")
    deps = app_deps(ctx)
    meta = cli_meta("provider-edit")
    from oauthledger.services.http.api.service_providers import with_moved_endpoints

    before = prov.load_provider(deps.ledger, name)
    changes = with_moved_endpoints(before, changes)
    if use_rsa_key:
        inst.ensure_installation(deps.ledger, deps.sealer, meta)
    after = prov.edit_provider(deps.ledger, deps.sealer, name, changes, meta)
    if after.version == before.version:
        click.echo(f"service provider {name}: nothing changed")
        return
    old, new = prov.provider_view(before), prov.provider_view(after)
    changed = [k for k in new if k != "version" and old.get(k) != new[k]]
    if new_secret and "sharedSecret" not in changed:
        changed.append("sharedSecret")
    click.echo(f"service provider {name} changed: {', '.join(changed)}; "
               "its users' connections stay")


@provider.command("remove")
@click.argument("name")
@pass_cli
@fail_on_service_errors
def provider_remove(ctx: CliContext, name: str) -> None:
    """Remove a service provider and forget every user's stored token for it."""
    from oauthledger.services.providers import remove_provider

    dropped = remove_provider(app_deps(ctx).ledger, name, cli_meta("provider-remove"),
                              by="cli")
    click.echo(f"service provider {name} removed; {dropped} user connection(s) dropped")


@provider.command("connections")
@click.argument("name")
@pass_cli
@fail_on_service_errors
def provider_connections(ctx: CliContext, name: str) -> None:
    """The users' connections to a service provider: user, status, connected since,
    expiry, and the provider's problem when one needs reconnecting."""
    from oauthledger.services.connections import connection_view, connections_of_provider
    from oauthledger.services.providers import load_provider

    ledger = app_deps(ctx).ledger
    state = load_provider(ledger, name)
    now = ledger.clock()
    views = [connection_view(state, c, now) for c in connections_of_provider(ledger, name)]
    views = [v for v in views if v["status"] != "not_connected"]
    if not views:
        click.echo(f"no user is connected to {name}")
    for v in views:
        click.echo(f"{v['user']}\t{v['status']}\tconnected {_when(v['connectedAt'])}"
                   f"\texpires {_when(v['expiresAt'])}"
                   + (f"\t{v['problem']}" if v["problem"] else ""))


@provider.command("drop")
@click.argument("name")
@click.argument("user")
@pass_cli
@fail_on_service_errors
def provider_drop(ctx: CliContext, name: str, user: str) -> None:
    """Forget USER's stored token for a service provider (the provider is not told)."""
    from oauthledger.services.connections import drop
    from oauthledger.services.providers import load_provider

    ledger = app_deps(ctx).ledger
    state = load_provider(ledger, name)
    if not drop(ledger, state.name, user, by="cli", reason="admin",
                meta=cli_meta("provider-drop")):
        raise CliError(f"{user} has no connection to {state.name}")
    click.echo(f"{user}'s connection to {state.name} dropped")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise CliError(f"--header {text!r}: write it as 'Name: value'")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        # RFC 9110 §5.5: a field value is ISO-8859-1 octets at most.
        raise CliError(f"--header {name.strip()}: the value must be ISO-8859-1 text") from None
    return name.strip(), value.strip()


@provider.command("call")
@click.argument("name")
@click.argument("method")
@click.argument("url")
@click.option("--user", required=True, help="the user whose connection signs the call")
@click.option("--header", "-H", "headers", multiple=True, help="'Name: value' (repeatable)")
@click.option("--data", "-d", default=None, help="the request body")
@click.option("--data-file", type=click.File("rb"), default=None,
              help="the request body from a file ('-': standard input)")
@click.option("--include", "-i", is_flag=True,
              help="print the status line and the relayed headers before the body")
@pass_cli
@fail_on_service_errors
def provider_call(ctx: CliContext, name: str, method: str, url: str, user: str,
                  headers: tuple[str, ...], data: str | None, data_file: BinaryIO | None,
                  include: bool) -> None:
    """Send METHOD URL to a service provider signed with USER's stored token and print
    its answer. URL is a path under the provider (/rest/api/2/myself) or an absolute URL
    at its address. The exit status is 0 whatever the provider answered (as curl's);
    1 when the call could not be made (not connected, unreachable, refused input)."""
    from oauthledger.services import remote_fetch
    from oauthledger.services.connections import call

    if data is not None and data_file is not None:
        raise CliError("give --data or --data-file, not both")
    body = data.encode("utf-8") if data is not None else (
        data_file.read() if data_file is not None else b"")
    parsed = dict(_header(h) for h in headers)
    deps = app_deps(ctx)
    result = call(deps.ledger, deps.sealer, name, user, method, url, parsed, body,
                  remote_fetch.policy(ctx.settings), cli_meta("provider-call"))
    view = result.view()
    if include:
        click.echo(f"HTTP {view['status']}")
        for header, value in view["headers"].items():
            click.echo(f"{header}: {value}")
        click.echo("")
    # The body as the provider sent it: bytes, not decoded (click writes bytes as is).
    click.echo(result.answer.body, nl=False)
    if result.answer.body and not result.answer.body.endswith(b"\n") and sys.stdout.isatty():
        # A terminal shows the body's last line and the prompt apart; a pipe gets the
        # bytes exactly as the provider sent them.
        click.echo("")
    if result.connection == "needs_reconnect":
        click.echo(f"oauthledger: warning: {name} refused {user}'s token; the connection "
                   "needs reconnecting (the user presses Connect on "
                   "/plugins/servlet/oauth/users/connections)", err=True)


COMMANDS = [provider]
