"""`oauthledger serve`, `user ...`, `consumer ...` and `resource-server ...`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from services.cli import CliContext, CliError, pass_cli
from services.consumers import ConsumerInput, consumer_public_view
from services.errors import Conflict, NotFound, ValidationError

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"


def _deps(ctx: CliContext):  # type: ignore[no-untyped-def]
    """Deps for a command: the same connections the server uses. On the embedded default
    the running server's in-process projection catches up from the log within its
    catch-up interval (OAUTHLEDGER_CATCHUP_INTERVAL)."""
    deps = ctx.extras.get("deps")
    if deps is None:
        from services.deps import build_deps

        settings = ctx.settings
        deps = build_deps(settings, wake=(lambda: None) if settings.embedded_broker else None)
        ctx.extras["deps"] = deps
    return deps


def _meta(kind: str) -> dict[str, str]:
    actor = os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"
    return {"actor": f"cli:{actor}", "request_id": f"cli-{kind}-{os.getpid()}"}


def _fail_on_service_errors(fn):  # type: ignore[no-untyped-def]
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except (ValidationError, Conflict, NotFound) as exc:
            raise CliError(str(exc)) from None

    return wrapper


@click.command()
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="gunicorn worker processes (default: 1 embedded, 2 x cores + 1 otherwise)")
@pass_cli
def serve(ctx: CliContext, bind: str, workers: int | None) -> None:
    """Run the HTTP server under gunicorn (deploy/gunicorn.conf.py)."""
    settings = ctx.settings
    if settings.embedded_broker and workers not in (None, 1):
        raise CliError("the embedded default runs in one process; set OAUTHLEDGER_DATABASE_URL, "
                       "OAUTHLEDGER_REDIS_URL and OAUTHLEDGER_BROKER_URL to run several workers")
    if not GUNICORN_CONF.exists():
        raise CliError(f"gunicorn config not found at {GUNICORN_CONF}")
    # Create and migrate the embedded database before forking workers.
    _ = ctx.store
    args = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    click.echo(f"oauthledger: serving on http://{bind} "
               f"({'embedded default' if settings.embedded_broker else 'production'} mode)",
               err=True)
    os.execv(sys.executable, args)


@click.group()
def user() -> None:
    """Manage user accounts."""


def _read_password(password_stdin: bool) -> str:
    if not password_stdin:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CliError("no password on standard input")
    return value


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="may use the OAuth Administration pages and API")
@click.option("--display-name", default=None)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@pass_cli
@_fail_on_service_errors
def user_add(ctx: CliContext, name: str, admin: bool, display_name: str | None,
             password_stdin: bool) -> None:
    """Create a user (password hashed with argon2id)."""
    from services.users import register_user

    password = _read_password(password_stdin)
    register_user(_deps(ctx).ledger, name, password, admin=admin, display_name=display_name,
                  meta=_meta("user-add"))
    click.echo(f"user {name} added{' (admin)' if admin else ''}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
@pass_cli
@_fail_on_service_errors
def user_passwd(ctx: CliContext, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    from services.users import change_password

    change_password(_deps(ctx).ledger, name, _read_password(password_stdin), _meta("passwd"))
    click.echo(f"password of {name} changed")


@user.command("disable")
@click.argument("name")
@pass_cli
@_fail_on_service_errors
def user_disable(ctx: CliContext, name: str) -> None:
    """Disable a user and revoke every access token the user granted."""
    from services.users import disable_user

    n = disable_user(_deps(ctx).ledger, name, _meta("user-disable"))
    click.echo(f"user {name} disabled; {n} access token(s) revoked")


@click.group()
def consumer() -> None:
    """Manage OAuth consumers."""


@consumer.command("add")
@click.argument("key")
@click.option("--name", required=True, help="shown to users when they approve")
@click.option("--description", default=None)
@click.option("--callback", default=None,
              help="default callback URL; callbacks must share its origin")
@click.option("--public-key", "public_key_file", type=click.File("r"), default=None,
              help="PEM public key or X.509 certificate file (RSA-* methods)")
@click.option("--secret", default=None, help="shared secret (HMAC-*, PLAINTEXT)")
@click.option("--generate-secret", is_flag=True, help="generate a shared secret, printed once")
@click.option("--signature-methods", default=None,
              help="comma-separated, e.g. RSA-SHA1,HMAC-SHA256 (default: from the credentials)")
@click.option("--two-legged-user", default=None, help="user that two-legged requests act as")
@click.option("--allow-impersonation", is_flag=True, help="xoauth_requestor_id names the user")
@click.option("--allow-oauth10", is_flag=True, help="allow OAuth 1.0 (no callback, no verifier)")
@click.option("--allow-plaintext-over-http", is_flag=True, help="allow PLAINTEXT without TLS")
@click.option("--no-three-legged", is_flag=True, help="refuse the three-legged dance")
@pass_cli
@_fail_on_service_errors
def consumer_add(ctx: CliContext, key: str, name: str, description: str | None,
                 callback: str | None, public_key_file, secret: str | None,  # type: ignore[no-untyped-def]
                 generate_secret: bool, signature_methods: str | None, two_legged_user: str | None,
                 allow_impersonation: bool, allow_oauth10: bool,
                 allow_plaintext_over_http: bool, no_three_legged: bool) -> None:
    """Register a consumer."""
    from services.consumers import register_consumer

    if secret and generate_secret:
        raise CliError("give --secret or --generate-secret, not both")
    deps = _deps(ctx)
    data = ConsumerInput(
        name=name, description=description or "", callback_url=callback,
        public_key=public_key_file.read() if public_key_file else None, secret=secret,
        generate_secret=generate_secret,
        signature_methods=signature_methods.split(",") if signature_methods else None,
        three_legged=not no_three_legged, two_legged_user=two_legged_user,
        allow_impersonation=allow_impersonation, allow_oauth10=allow_oauth10,
        allow_plaintext_over_http=allow_plaintext_over_http,
    )
    state, generated = register_consumer(deps.ledger, deps.sealer, key, data, _meta("consumer-add"))
    click.echo(f"consumer {state.key} registered ({', '.join(state.signature_methods)})")
    if generated:
        click.echo(f"shared secret (shown once): {generated}")


@consumer.command("list")
@pass_cli
def consumer_list(ctx: CliContext) -> None:
    """List registered consumers."""
    from services.consumers import list_consumers, outstanding_tokens

    deps = _deps(ctx)
    states = list_consumers(deps.ledger)
    counts = outstanding_tokens(deps.ledger, [s.key for s in states])
    if not states:
        click.echo("no consumers")
    for s in states:
        flags = [f for f, on in (("3LO", s.three_legged), ("2LO", bool(s.two_legged_user)),
                                 ("impersonation", s.allow_impersonation),
                                 ("oauth1.0", s.allow_oauth10)) if on]
        click.echo(f"{s.key}\t{s.name}\t{','.join(s.signature_methods)}\t{' '.join(flags)}"
                   f"\t{counts[s.key]} token(s)")


@consumer.command("show")
@click.argument("key")
@pass_cli
@_fail_on_service_errors
def consumer_show(ctx: CliContext, key: str) -> None:
    """Show one consumer (never its secret)."""
    import json

    from services.consumers import load_consumer

    click.echo(json.dumps(consumer_public_view(load_consumer(_deps(ctx).ledger, key)), indent=2))


@consumer.command("remove")
@click.argument("key")
@pass_cli
@_fail_on_service_errors
def consumer_remove(ctx: CliContext, key: str) -> None:
    """Remove a consumer and revoke every token it holds."""
    from services.consumers import remove_consumer

    n = remove_consumer(_deps(ctx).ledger, key, _meta("consumer-remove"))
    click.echo(f"consumer {key} removed; {n} access token(s) revoked")


@click.group("resource-server")
def resource_server() -> None:
    """Credentials for resource servers that call the verify API."""


@resource_server.command("add")
@click.argument("server_id")
@click.option("--description", default="")
@pass_cli
@_fail_on_service_errors
def resource_server_add(ctx: CliContext, server_id: str, description: str) -> None:
    """Create a credential; its secret is printed once."""
    from services.resource_servers import create_resource_server

    deps = _deps(ctx)
    secret = create_resource_server(deps.ledger, deps.sealer, server_id, description,
                                    _meta("rs-add"))
    click.echo(f"resource server {server_id} added")
    click.echo(f"secret (shown once): {secret}")


@resource_server.command("remove")
@click.argument("server_id")
@pass_cli
@_fail_on_service_errors
def resource_server_remove(ctx: CliContext, server_id: str) -> None:
    """Withdraw a credential."""
    from services.resource_servers import remove_resource_server

    remove_resource_server(_deps(ctx).ledger, server_id, _meta("rs-remove"))
    click.echo(f"resource server {server_id} removed")


COMMANDS = [serve, user, consumer, resource_server]
