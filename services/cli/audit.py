"""``oauthledger audit at|token|user|provider``: questions answered from the event log
alone."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import click

from oauthledger.events.audit import (
    AuditError,
    ConnectionEntry,
    iso,
    parse_timestamp,
    provider_history,
    state_at,
    token_history,
    user_connections,
    user_grants,
)
from oauthledger.events.state import user_stream
from oauthledger.services.cli.main import CliContext, CliError, pass_cli

# A moment further ahead than this is a typo (epoch milliseconds for seconds, a wrong
# year), not a question about the log: it would answer "as of now" without saying so.
_FUTURE_SLACK = 86400.0

_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]),
                       default="text", show_default=True)


@click.group("audit")
def audit() -> None:
    """Replay the event log to answer who could do what, and when."""


@audit.command("at")
@click.argument("timestamp")
@_FORMAT
@pass_cli
def at_cmd(cli: CliContext, timestamp: str, fmt: str) -> None:
    """Consumers and access tokens as they stood at TIMESTAMP (ISO 8601 or epoch)."""
    try:
        moment = parse_timestamp(timestamp)
    except AuditError as exc:
        raise CliError(str(exc)) from None
    if not math.isfinite(moment) or moment > time.time() + _FUTURE_SLACK:
        hint = " (epoch seconds, not milliseconds)" if moment > 1e11 else ""
        raise CliError(f"{timestamp!r} is in the future{hint}: give a moment the log has "
                       "seen, e.g. 2025-06-01T12:00:00Z")
    store = cli.store
    if store.head() == 0:
        raise CliError("the event log is empty: nothing existed at any moment yet")
    result = state_at(store, moment)
    if result.position == 0:
        first = next(store.read_all(0, limit=1))
        raise CliError(f"{timestamp!r} is before the first event (position 1, at "
                       f"{iso(first.time)}): nothing existed yet")
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"as of {result.at} (log position {result.position})")
    click.echo(f"consumers ({len(result.consumers)}):")
    for c in result.consumers:
        click.echo(f"  {c.key}  {c.name}{'  [removed]' if c.removed else ''}")
    valid = [t for t in result.tokens if t.valid]
    click.echo(f"valid access tokens ({len(valid)} of {len(result.tokens)} issued):")
    for t in valid:
        click.echo(f"  {t.token}  user={t.user}  consumer={t.consumer_key}  "
                   f"issued={t.issued_at}  expires={t.expires_at}")


@audit.command("token")
@click.argument("token")
@_FORMAT
@pass_cli
def token_cmd(cli: CliContext, token: str, fmt: str) -> None:
    """The whole history of TOKEN and the tokens linked to it."""
    try:
        entries = token_history(cli.store, token)
    except AuditError as exc:
        raise CliError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
        return
    for e in entries:
        details = " ".join(f"{k}={v}" for k, v in e.details.items())
        click.echo(f"{e.time}  #{e.position}  {e.token}  {e.type}  actor={e.actor}  "
                   f"request={e.request_id}  {details}".rstrip())


def _step(e: ConnectionEntry, show_user: bool) -> str:
    """One line of a history: time, position, the user it concerns (``show_user``),
    what happened, who did it, and the details (never a sealed value)."""
    whom = f"user={e.user}  " if show_user and e.user else ""
    details = " ".join(f"{k}={v}" for k, v in e.details.items())
    return (f"{e.time}  #{e.position}  {whom}{e.action}  actor={e.actor}  "
            f"request={e.request_id}  {details}").rstrip()


@audit.command("user")
@click.argument("name")
@_FORMAT
@pass_cli
def user_cmd(cli: CliContext, name: str, fmt: str) -> None:
    """Every grant user NAME made and how it ended, and NAME's connections to service
    providers (connected, renewed, rejected, dropped: when, and by whom)."""
    grants = user_grants(cli.store, name)
    connections = user_connections(cli.store, name)
    # Known to the log: registered, or named by a grant or a connection (a user signed
    # in by the SSO header has no registration of its own).
    if not grants and not connections and not cli.store.stream_version(user_stream(name)):
        raise CliError(f"no user {name!r} in the event log: it never registered, made a "
                       "grant or connected to a service provider")
    if fmt == "json":
        click.echo(json.dumps({"user": name,
                               "grants": [dataclasses.asdict(g) for g in grants],
                               "connections": [dataclasses.asdict(c) for c in connections]},
                              indent=2))
        return
    if not grants:
        click.echo(f"{name} made no grants")
    for g in grants:
        ended = f" at {g.ended_at}" if g.ended_at else ""
        by = f" by {g.ended_by}" if g.ended_by else ""
        click.echo(f"{g.decided_at}  {g.decision}  consumer={g.consumer_key}  "
                   f"request={g.request_token}  access={','.join(g.access_tokens) or '-'}  "
                   f"-> {g.outcome}{ended}{by}")
    if not connections:
        click.echo(f"{name} has no connections to service providers")
        return
    click.echo(f"connections to service providers ({len(connections)}):")
    for c in connections:
        click.echo(f"  {c.provider}: {c.status}")
        for e in c.history:
            click.echo(f"    {_step(e, show_user=False)}")


@audit.command("provider")
@click.argument("name")
@_FORMAT
@pass_cli
def provider_cmd(cli: CliContext, name: str, fmt: str) -> None:
    """The history of service provider NAME (added, edited, removed) and every user's
    connection events with it."""
    try:
        entries = provider_history(cli.store, name)
    except AuditError as exc:
        raise CliError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps({"provider": name,
                               "history": [dataclasses.asdict(e) for e in entries]},
                              indent=2))
        return
    for e in entries:
        click.echo(_step(e, show_user=True))


COMMANDS = [audit]
