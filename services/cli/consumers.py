"""``oauthledger consumer add|list|show|reset-secret|remove|failures``: the consumer
registry, and each consumer's failure history (services/failures.py).

``consumer add --url BASE_URL`` adds another application by its base URL, as the admin
page and API can: its consumer info (key, name, public key) is fetched through the
vetted fetch of services/remote_fetch.py and it is registered for RSA-SHA1 — the other
half of an application link (docs/application-links.md)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    app_deps,
    cli_meta,
    fail_on_service_errors,
    pass_cli,
    read_stdin_line,
)
from oauthledger.services.consumers import ConsumerInput, consumer_public_view
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.installation import RemoteConsumerInfo
from oauthledger.services.oauth.signatures import rsa_key_warning


@click.group()
def consumer() -> None:
    """Manage OAuth consumers."""


@consumer.command("add")
@click.argument("key", required=False)
@click.option("--url", "base_url", default=None, metavar="BASE_URL",
              help="another application's base URL: take key, name and public key from "
                   "its consumer info (RSA-SHA1)")
@click.option("--name", default=None,
              help="shown to users when they approve (required without --url)")
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
@fail_on_service_errors
def consumer_add(ctx: CliContext, key: str | None, base_url: str | None, name: str | None,
                 description: str | None,
                 callback: str | None, public_key_file, secret: str | None,  # type: ignore[no-untyped-def]
                 generate_secret: bool, signature_methods: str | None, two_legged_user: str | None,
                 allow_impersonation: bool, allow_oauth10: bool,
                 allow_plaintext_over_http: bool, no_three_legged: bool) -> None:
    """Register a consumer: KEY with --name and its credentials, or another application
    by --url BASE_URL (its consumer info gives key, name and public key)."""
    from oauthledger.services.consumers import register_consumer

    if secret and generate_secret:
        raise CliError("give --secret or --generate-secret, not both")
    public_key = public_key_file.read() if public_key_file else None
    fetched_from = None
    if base_url is not None:
        if public_key is not None or secret or generate_secret:
            raise CliError("--url takes the public key from the application's consumer "
                           "info (RSA-SHA1): give no --public-key, --secret or "
                           "--generate-secret with it")
        info = _fetch_info(ctx, base_url)
        if key is not None and key != info.key:
            raise CliError(f"the consumer info at {info.url} names the key {info.key!r}, "
                           f"not {key!r}")
        key, public_key, fetched_from = info.key, info.public_key, info.url
        name = name or info.name
        description = info.description if description is None else description
        callback = callback or info.callback_url
        # Application links sign with RSA-SHA1 (what Atlassian applications send).
        signature_methods = signature_methods or "RSA-SHA1"
    elif key is None:
        raise CliError("give the consumer's KEY, or --url BASE_URL to take it from the "
                       "application's consumer info")
    elif not name:
        raise CliError("--name is required (it is shown to users when they approve)")
    deps = app_deps(ctx)
    data = ConsumerInput(
        name=name, description=description or "", callback_url=callback,
        public_key=public_key, secret=secret,
        generate_secret=generate_secret,
        signature_methods=signature_methods.split(",") if signature_methods else None,
        three_legged=not no_three_legged, two_legged_user=two_legged_user,
        allow_impersonation=allow_impersonation, allow_oauth10=allow_oauth10,
        allow_plaintext_over_http=allow_plaintext_over_http,
    )
    state, generated = register_consumer(deps.ledger, deps.sealer, key, data,
                                         cli_meta("consumer-add"))
    click.echo(f"consumer {state.key} registered ({', '.join(state.signature_methods)})")
    if fetched_from:
        click.echo(f"name: {state.name} (from {fetched_from})")
    if generated:
        click.echo(f"shared secret (shown once): {generated}")
    if state.public_key and (warning := rsa_key_warning(state.public_key)):
        click.echo(f"warning: {warning}", err=True)


def _fetch_info(ctx: CliContext, base_url: str) -> RemoteConsumerInfo:
    """The consumer info at ``base_url`` under this installation's fetch policy
    (OAUTHLEDGER_FETCH_ALLOW_PRIVATE, OAUTHLEDGER_BASE_URL); a refusal is one line that
    says why in the admin page's words (the detail goes to the log)."""
    from oauthledger.services import remote_fetch

    try:
        return remote_fetch.fetch_consumer_info(base_url,
                                                remote_fetch.policy(ctx.settings))
    except ValidationError as exc:
        raise CliError("--url: " + "; ".join(exc.fields.values())) from None


@consumer.command("list")
@pass_cli
def consumer_list(ctx: CliContext) -> None:
    """List registered consumers."""
    from oauthledger.services.consumers import list_consumers, outstanding_tokens

    deps = app_deps(ctx)
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
@fail_on_service_errors
def consumer_show(ctx: CliContext, key: str) -> None:
    """Show one consumer (never its secret)."""
    import json

    from oauthledger.services.consumers import load_consumer

    view = consumer_public_view(load_consumer(app_deps(ctx).ledger, key))
    click.echo(json.dumps(view, indent=2))
    if view["publicKeyWarning"]:
        # NIST SP 800-131A disallows new RSA keys under 2048 bits: said on stderr as
        # well, where it is not lost in the JSON (or in a script's pipe).
        click.echo(f"warning: {view['publicKeyWarning']}", err=True)


@consumer.command("reset-secret")
@click.argument("key")
@click.option("--secret-stdin", is_flag=True,
              help="set the secret read from standard input instead of generating one")
@pass_cli
@fail_on_service_errors
def consumer_reset_secret(ctx: CliContext, key: str, secret_stdin: bool) -> None:
    """Replace a consumer's shared secret (generated and printed once, unless given on
    standard input). The consumer and its tokens stay; the old secret stops working."""
    from oauthledger.services.consumers import reset_secret

    given = read_stdin_line("secret") if secret_stdin else None
    deps = app_deps(ctx)
    _, secret = reset_secret(deps.ledger, deps.sealer, key, cli_meta("consumer-reset-secret"),
                             given)
    click.echo(f"consumer {key}: shared secret replaced; the old one no longer works")
    if given is None:
        click.echo(f"shared secret (shown once): {secret}")


@consumer.command("remove")
@click.argument("key")
@pass_cli
@fail_on_service_errors
def consumer_remove(ctx: CliContext, key: str) -> None:
    """Remove a consumer and revoke every token it holds."""
    from oauthledger.services.consumers import remove_consumer

    n = remove_consumer(app_deps(ctx).ledger, key, cli_meta("consumer-remove"))
    click.echo(f"consumer {key} removed; {n} access token(s) revoked")


F = TypeVar("F", bound=Callable[..., Any])


def history_deps(ctx: CliContext) -> Deps:
    """Deps for reading the failure history, which lives in Redis only. On the embedded
    default that is the server process's own in-process store, which no other process
    can read: one line says where to look instead."""
    if ctx.settings.embedded_redis:
        raise CliError("the failure history lives in the server process's in-process store "
                       "(embedded default, OAUTHLEDGER_REDIS_URL unset): read it on the "
                       "consumer's admin page or GET /rest/oauthledger/1/consumer-failures/"
                       "KEY")
    return app_deps(ctx)


def redis_errors(fn: F) -> F:
    """Decorate a command that reads Redis: a Redis error ends it with one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CliError(f"Redis cannot be reached: {first} — fix: start Redis, or "
                           "correct OAUTHLEDGER_REDIS_URL") from None

    return wrapper  # type: ignore[return-value]


def _iso(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def failures_text(report: dict[str, Any]) -> str:
    """The failure history for a person (``consumer failures``' default output)."""
    keeps = report["keeps"]
    accepted = sum(h["accepted"] for h in report["hours"])
    refused = sum(h["refused"] for h in report["hours"])
    lines = [f"consumer {report['consumerKey']}: {report['total']} refused request(s) kept "
             f"(the newest {keeps['entries']} for {keeps['retentionSeconds']} s, in Redis only)",
             f"last 24 hours: {accepted} accepted, {refused} refused"]
    if report["byProblem"]:
        lines += ["", "by problem (last hour / last day):"]
        width = max(len(g["oauthProblem"]) for g in report["byProblem"])
        for g in report["byProblem"]:
            lines.append(f"  {g['oauthProblem'].ljust(width)}  {g['lastHour']:>5} / "
                         f"{g['lastDay']:<5}  latest {_iso(g['latest'])}")
    if report["failures"]:
        lines += ["", "refused requests, newest first:"]
    for e in report["failures"]:
        skew = "" if e.get("skewSeconds") is None else f"  skew {e['skewSeconds']:+d} s"
        lines.append(f"  {_iso(e.get('time'))}  {e.get('requestId')}  {e.get('step') or '-'} "
                     f"{e.get('method')} {e.get('route')}  {e.get('oauthProblem')}{skew}")
        if e.get("advice"):
            lines.append(f"      advice: {e['advice']}")
        if e.get("url"):
            lines.append(f"      url: {e['url']}")
        if e.get("baseString"):
            lines.append(f"      base string: {e['baseString']}")
    return "\n".join(lines) + "\n"


@consumer.command("failures")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="the newest N refused requests")
@pass_cli
@fail_on_service_errors
@redis_errors
def consumer_failures(ctx: CliContext, key: str, fmt: str, limit: int) -> None:
    """Show a consumer's failure history: its refused signed requests, newest first,
    counted by problem for the last hour and day, and accepted vs refused over the last
    24 hours. Kept in Redis only; never a secret."""
    from oauthledger.events.state import ConsumerState, consumer_stream
    from oauthledger.services.errors import NotFound
    from oauthledger.services.failures import failure_history

    deps = history_deps(ctx)
    state, _ = deps.ledger.load(consumer_stream(key))
    if not isinstance(state, ConsumerState):
        raise NotFound(f"no consumer with key {key!r}")
    report = failure_history(deps).consumer_report(key, limit)
    report["removed"] = state.removed
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(failures_text(report), nl=False)


COMMANDS = [consumer]
