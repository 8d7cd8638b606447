"""``oauthledger events``: read, follow, verify, export and summarise the event log.

These are audit commands: they read the log and never open a sealed secret
(docs/design.md, "Sealed secrets": the log can be exported and audited without exposing
a secret). ``tail`` and ``export`` decode every row they print and check its link in the
hash chain, so a corrupt or edited row stops them with one line naming its position;
``verify`` walks the whole chain from the first row.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from oauthledger.events.errors import CorruptEvent
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.sealing import DERIVED_PREFIX, reference
from oauthledger.events.store import EventStore, RecordedEvent
from oauthledger.services.cli.main import CliContext, CliError, pass_cli
from oauthledger.services.cli.store_access import db_errors, open_store

_SHORT = 40  # longest plain value shown whole in the text summary
_FLUSH_EVERY = 500  # lines between flushes when writing a backlog


# --- decoding rows -------------------------------------------------------------------


def row_object(rec: RecordedEvent) -> dict[str, Any]:
    """Every column of a stored row, ``data`` and ``metadata`` parsed, after checking
    that the row decodes (JSON, known type and schema). Raises :class:`CorruptEvent`."""
    _, data, meta = rec.decoded()
    return {
        "position": rec.position,
        "stream_id": rec.stream_id,
        "stream_version": rec.stream_version,
        "type": rec.type,
        "schema_version": rec.schema_version,
        "data": data,
        "metadata": meta,
        "hash": rec.hash,
    }


class ChainCheck:
    """Checks each row's link to the row before it (the hash covers the previous hash),
    fetching that predecessor when rows do not arrive back to back."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._prev: tuple[int, str] | None = None

    def check(self, rec: RecordedEvent) -> None:
        """Raise :class:`CorruptEvent` unless ``rec`` is chained to its predecessor."""
        if rec.position == 1:
            prev_hash = GENESIS_HASH
        elif self._prev is not None and self._prev[0] == rec.position - 1:
            prev_hash = self._prev[1]
        else:
            before = next(self.store.read_all(rec.position - 2, limit=1), None)
            if before is None or before.position != rec.position - 1:
                raise CorruptEvent(
                    rec.position,
                    f"the row before it (position {rec.position - 1}) is missing; "
                    "run `oauthledger events verify`",
                )
            prev_hash = before.hash
        if not rec.links_to(prev_hash):
            raise CorruptEvent(
                rec.position,
                "hash does not match the chain (the row was edited, or rows before it were "
                "deleted or reordered); run `oauthledger events verify`",
            )
        self._prev = (rec.position, rec.hash)


# --- the text form --------------------------------------------------------------------


def _sealed_label(value: Any) -> str:
    if value is None:
        return "null"
    ref = reference(value)
    # Anything in a *_sealed field that is not a sealed value is still never printed:
    # it may be a secret that escaped sealing, which is exactly what an audit looks for.
    if ref is None:
        return "<sealed:INVALID>"
    prefix, kid = ref
    return f"<{'derived' if prefix == DERIVED_PREFIX else 'sealed'}:{kid}>"


def _short(value: Any) -> str:
    if isinstance(value, str):
        if reference(value):
            return _sealed_label(value)
        text = " ".join(value.split())  # PEM and other multi-line text on one line
        if len(text) > _SHORT:
            text = text[: _SHORT - 1] + "…"
        plain = text and text == value and " " not in text and "=" not in text
        return text if plain else json.dumps(text, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def summarize(data: dict[str, Any], prefix: str = "") -> str:
    """A compact ``key=value`` summary of an event's data. Sealed secrets show as
    ``<sealed:KEYID>``, hashes as ``<hash>``, long text is cut; nothing is opened."""
    parts = []
    for key, value in data.items():
        name = prefix + key
        if key.endswith("_sealed"):
            parts.append(f"{name}={_sealed_label(value)}")
        elif key.endswith("_hash"):
            # Password and session-handle hashes: not secrets, but no use on a screen
            # and a gift to offline guessing.
            parts.append(f"{name}={'null' if value is None else '<hash>'}")
        elif isinstance(value, dict):
            inner = summarize(value, prefix=name + ".")
            parts.append(inner if inner else f"{name}={{}}")
        else:
            parts.append(f"{name}={_short(value)}")
    return " ".join(parts)


def _time_text(meta: dict[str, Any]) -> str:
    raw = meta.get("time")
    try:
        when = datetime.fromisoformat(raw).astimezone(UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-" if raw is None else str(raw)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def text_line(obj: dict[str, Any]) -> str:
    """One event as one line: position, time, stream@version, type, actor, request id,
    data summary."""
    meta = obj["metadata"]
    return (
        f"{obj['position']:>7}  {_time_text(meta)}  {obj['stream_id']}@{obj['stream_version']}"
        f"  {obj['type']}  actor={meta.get('actor') or '-'}  req={meta.get('request_id') or '-'}"
        f"  {summarize(obj['data'])}"
    ).rstrip()


def jsonl_line(obj: dict[str, Any]) -> str:
    """One event as one JSON object (the export format)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- helpers --------------------------------------------------------------------------


def _show_progress(choice: bool | None) -> bool:
    if choice is not None:
        return choice
    from rich.console import Console

    return Console(stderr=True).is_terminal


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (``total`` = head position), or a no-op."""
    if not enabled:
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total or None)
        yield lambda done: bar.update(task, completed=done)
        bar.update(task, completed=total)


def _quiet_broken_pipe() -> None:
    # The reader (e.g. `| head`) went away: stop quietly, and keep Python from
    # complaining again when it flushes stdout at exit.
    with suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


_progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress bar on stderr (default: only when stderr is a terminal).",
)


# --- commands -------------------------------------------------------------------------


@click.group("events")
def events() -> None:
    """Audit the event log: tail, verify, export, stats."""


@events.command("tail")
@click.option("-f", "--follow", is_flag=True, help="Keep polling for new events (Ctrl-C ends).")
@click.option("--stream", "stream", metavar="STREAM", help="Only events of this stream.")
@click.option("--after", type=click.IntRange(min=0), default=None, metavar="POSITION",
              help="Start after this position (default: from the first event).")
@click.option("-n", "--last", type=click.IntRange(min=0), default=None, metavar="N",
              help="Start with the last N events (of the stream, with --stream).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after printing N events.")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text",
              show_default=True)
@click.option("--interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              metavar="SECONDS", help="Poll interval with --follow.")
@click.option("--check-chain/--no-check-chain", default=True, show_default=True,
              help="Check each printed row's link in the hash chain.")
@pass_cli
@db_errors
def tail(
    cli_ctx: CliContext, follow: bool, stream: str | None, after: int | None,
    last: int | None, limit: int | None, fmt: str, interval: float, check_chain: bool,
) -> None:
    """Print events in position order; with --follow, keep printing new ones."""
    if after is not None and last is not None:
        raise click.UsageError("use either --after or --last, not both")
    store = open_store(cli_ctx)
    _known_position(store, after)
    render = text_line if fmt == "text" else jsonl_line
    chain = ChainCheck(store) if check_chain else None
    out: TextIO = sys.stdout
    state = {"printed": 0, "last": after or 0}

    def emit(rec: RecordedEvent) -> bool:
        """Print one row; False once --limit is reached."""
        if rec.position <= state["last"]:
            return True  # already printed (a stream backlog overlapping the follow)
        obj = row_object(rec)
        if chain is not None:
            chain.check(rec)
        out.write(render(obj) + "\n")
        state["printed"] += 1
        state["last"] = rec.position
        if state["printed"] % _FLUSH_EVERY == 0:
            out.flush()
        return limit is None or state["printed"] < limit

    try:
        with _stop_on_sigterm(follow):
            cursor = after or 0
            more = True
            if stream is not None:
                # A stream is small: read it directly rather than scanning the whole log.
                cursor = max(cursor, store.head())
                backlog = [r for r in store.read_stream(stream) if r.position > (after or 0)]
                if last is not None:
                    backlog = backlog[-last:] if last else []
                for rec in backlog:
                    more = emit(rec)
                    if not more:
                        break
            else:
                if last is not None:
                    cursor = max(0, store.head() - last)
                for rec in store.read_all(cursor):
                    cursor = rec.position
                    more = emit(rec)
                    if not more:
                        break
            out.flush()
            if follow and more:
                _follow(store, cursor, stream, emit, out, interval)
    except KeyboardInterrupt:
        if not follow:
            raise
        out.flush()  # Ctrl-C or SIGTERM ends a follow cleanly, status 0
    except BrokenPipeError:
        _quiet_broken_pipe()


def _known_position(store: EventStore, after: int | None) -> None:
    """Refuse a position the log has not reached: "after 900" of a 12-event log names
    nothing, and printing nothing would look like an empty answer."""
    if after:
        head = store.head()
        if after > head:
            raise CliError(f"position {after} is beyond the head of the event log "
                           f"({head}): give --after 0..{head}")


@contextmanager
def _stop_on_sigterm(enabled: bool) -> Iterator[None]:
    """While following, SIGTERM (systemd, a test harness) ends like Ctrl-C."""

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if enabled:
        with suppress(ValueError):  # not the main thread: Ctrl-C is all we get
            previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _follow(
    store: EventStore, cursor: int, stream: str | None,
    emit: Callable[[RecordedEvent], bool], out: TextIO, interval: float,
) -> None:
    """Poll ``read_all`` from ``cursor`` until interrupted. Positions are handed out in
    commit order (events/store.py), so "position > cursor" never skips a late commit."""
    while True:
        for rec in store.read_all(cursor):
            cursor = rec.position
            if stream is not None and rec.stream_id != stream:
                continue
            if not emit(rec):
                out.flush()
                return
        out.flush()
        time.sleep(interval)


@events.command("verify")
@_progress_option
@pass_cli
@db_errors
def verify(cli_ctx: CliContext, progress: bool | None) -> None:
    """Walk the hash chain from the first event. Exit 0 when intact, 1 at the first bad
    row (its position and why)."""
    store = open_store(cli_ctx)
    show = _show_progress(progress)
    total = store.head() if show else 0
    with _progress(show, total, "verifying") as update:
        result = store.verify(progress=update)
    if result.ok:
        # The hash of the last row verified, not head_hash(): appends may have landed since.
        last = next(store.read_all(result.count - 1, limit=1), None) if result.count else None
        click.echo(
            f"intact: {result.count} events, head hash {last.hash if last else GENESIS_HASH}"
        )
        return
    click.echo(
        f"broken at position {result.bad_position}: {result.reason} "
        f"({result.count} events before it are intact)"
    )
    click.get_current_context().exit(1)


@events.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (atomically) instead of stdout.")
@click.option("--after", type=click.IntRange(min=0), default=0, metavar="POSITION",
              help="Export events after this position.")
@click.option("--check-chain/--no-check-chain", default=True, show_default=True,
              help="Refuse rows whose link in the hash chain is broken.")
@_progress_option
@pass_cli
@db_errors
def export(
    cli_ctx: CliContext, fmt: str, output: Path | None, after: int, check_chain: bool,
    progress: bool | None,
) -> None:
    """Write every column of every event as JSON lines; sealed secrets stay sealed."""
    store = open_store(cli_ctx)
    _known_position(store, after)
    chain = ChainCheck(store) if check_chain else None
    show = output is not None and _show_progress(progress)
    total = max(0, store.head() - after) if show else 0

    def write_all(out: TextIO, update: Callable[[int], None]) -> tuple[int, int]:
        count, last = 0, after
        for rec in store.read_all(after):
            obj = row_object(rec)
            if chain is not None:
                chain.check(rec)
            out.write(jsonl_line(obj) + "\n")
            count, last = count + 1, rec.position
            if count % 1000 == 0:
                update(count)
        update(count)
        return count, last

    if output is None:
        try:
            write_all(sys.stdout, lambda _n: None)
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        return

    # Write beside the target and rename: a failed export never leaves a file that
    # looks complete.
    directory = output.resolve().parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh, \
                _progress(show, total, "exporting") as update:
            count, last = write_all(fh, update)
        os.replace(tmp, output)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    click.echo(f"exported {count} events (positions {after + 1}..{last}) to {output}", err=True)


@events.command("stats")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_cli
@db_errors
def stats(cli_ctx: CliContext, fmt: str) -> None:
    """Head position and hash, streams, events per type, first and last event time."""
    store = open_store(cli_ctx)
    head = store.head()
    by_type = store.count_by_type()
    first = next(store.read_all(0, limit=1), None)
    last = next(store.read_all(head - 1, limit=1), None) if head else None
    report = {
        "head_position": head,
        "head_hash": last.hash if last else GENESIS_HASH,
        "streams": store.stream_count(),
        "events": sum(by_type.values()),
        "first_event_time": _time_text(first.meta) if first else None,
        "last_event_time": _time_text(last.meta) if last else None,
        "events_by_type": by_type,
    }
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    rows = [
        ("head position", report["head_position"]),
        ("head hash", report["head_hash"]),
        ("events", report["events"]),
        ("streams", report["streams"]),
        ("first event", report["first_event_time"] or "-"),
        ("last event", report["last_event_time"] or "-"),
    ]
    for label, value in rows:
        click.echo(f"{label:<14} {value}")
    if report["events_by_type"]:
        click.echo("events by type")
        width = max(len(t) for t in report["events_by_type"])
        for type_name, n in report["events_by_type"].items():
            click.echo(f"  {type_name:<{width}}  {n}")


COMMANDS = [events]
