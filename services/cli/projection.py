"""``oauthledger projection status|rebuild``: where the Redis projection stands, and a
full rebuild from the log (optionally verified against the live read model)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import redis

from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import snapshot, status
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild
from oauthledger.events.rebuild_lock import RebuildBusy, RebuildInterrupted
from oauthledger.services.cli.main import CliContext, CliError, describe_error, pass_cli


def _read_model(cli: CliContext) -> ReadModel:
    from oauthledger.events.connections import open_redis

    settings = cli.settings
    if settings.embedded_redis:
        raise CliError(
            "OAUTHLEDGER_REDIS_URL is not set: the embedded projection lives inside the "
            "server process (it is rebuilt from the log at every start)"
        )
    client = open_redis(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        # One line naming the fix, the URL's password masked (the root group's wording).
        raise CliError(describe_error(exc, cli) or str(exc)) from None
    return ReadModel(client, KeyLayout(settings.redis_prefix))


@click.group("projection")
def projection() -> None:
    """The Redis read model projected from the event log."""


@projection.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@pass_cli
def status_cmd(cli: CliContext, fmt: str) -> None:
    """Head position, live namespace, checkpoint and lag."""
    st = status(cli.store, _read_model(cli))
    if fmt == "json":
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    click.echo(f"head position:   {st.head}")
    click.echo(f"live namespace:  {st.namespace}")
    if st.checkpoint is None:
        click.echo("checkpoint:      none (flushed or never built; the hot path reads the "
                   "store until a rebuild completes)")
    else:
        click.echo(f"checkpoint:      {st.checkpoint}")
        click.echo(f"lag:             {st.lag_events} events, {st.lag_seconds:.3f} s")
    if st.building:
        click.echo(f"rebuilding into: {st.building}")
    if st.rebuild_running:
        click.echo("rebuild lock:    held")


def _progress_bar() -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=False)
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            label = {"replay": "replaying events", "write": "writing entities"}[phase]
            tasks[phase] = progress.add_task(label, total=total)
        progress.update(tasks[phase], completed=done, total=max(total, done))

    return progress, update


@projection.command("rebuild")
@click.option("--verify", is_flag=True,
              help="Compare the rebuilt read model with the live one and list differences.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes to replay with (default: one per CPU, at most 4, for logs "
                   "of 50,000 events or more).")
@pass_cli
def rebuild_cmd(cli: CliContext, verify: bool, workers: int | None) -> None:
    """Replay the whole log into a fresh namespace and switch to it atomically."""
    read_model = _read_model(cli)
    store = cli.store
    before = None
    if verify:
        live = read_model.namespace()
        if read_model.checkpoint(live) is None:
            click.echo(f"live namespace {live} has no checkpoint: nothing to verify against")
            verify = False
        else:
            before = snapshot(read_model.redis, live)
    try:
        if sys.stderr.isatty():
            bar, update = _progress_bar()
            with bar:
                result = rebuild(store, read_model, progress=update, workers=workers)
        else:
            result = rebuild(store, read_model, workers=workers)
    except RebuildBusy:
        raise CliError("another rebuild is running (lock held); try again later") from None
    except RebuildInterrupted as exc:
        raise CliError(f"rebuild interrupted: {exc}") from None
    click.echo(
        f"rebuilt {result.namespace} from {result.events} events ({result.entities} "
        f"entities) in {result.seconds:.2f} s ({result.rate:,.0f} events/s, "
        f"{result.workers} process{'es' if result.workers > 1 else ''}); "
        f"replaced {result.replaced}"
    )
    if before is not None:
        after = snapshot(read_model.redis, result.namespace)
        diffs = _diff(before, after)
        # Events committed while the rebuild ran legitimately change some keys: only
        # keys touched by those events may differ.
        if not diffs:
            click.echo("verify: the rebuilt read model equals the live one (0 differences)")
            return
        click.echo(f"verify: {len(diffs)} difference(s) (live -> rebuilt):")
        for key, a, b in diffs[:50]:
            click.echo(f"  {key}: {a!r} -> {b!r}")
        raise CliError(f"{len(diffs)} difference(s) between the live and rebuilt read model")


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


COMMANDS = [projection]
