"""``oauthledger status``: which installation this command line talks to.

The data directory defaults to ``./.oauthledger`` of wherever the command runs, so the
first question on a new host is where the installation is: the data directory in use
(and whether it exists), the event store (its URL, password masked), Redis and the
broker (embedded or their URLs), the mode, the key file, and the installation's own
consumer key. It creates nothing and changes nothing; the only connection it opens is
to the event store, with a connect timeout. ``oauthledger doctor`` checks everything
else (docs/cli.md, "oauthledger status").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from oauthledger.events.connections import sqlite_file
from oauthledger.events.settings import Settings
from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    data_dir_source,
    describe_error,
    masked_url,
    missing_installation_line,
    pass_cli,
)

EMBEDDED = "embedded (in process)"


def mode_of(settings: Settings) -> str:
    """The mode ``oauthledger serve`` runs in with these settings (the same rule)."""
    if settings.embedded_broker:
        return "embedded default" + ("" if settings.embedded_redis else
                                     " (one process, with a shared Redis)")
    return "production"


def _read_store(settings: Settings) -> tuple[int | None, str | None, str | None]:
    """(events in the log, the installation's consumer key, a problem) — reading the
    store without creating or migrating it, under a connect timeout."""
    from oauthledger.events.state import INSTALLATION_STREAM, InstallationState, fold_stream
    from oauthledger.events.store import EventStore
    from oauthledger.services.cli.doctor import bounded_database_url

    store = EventStore.from_url(bounded_database_url(settings.database_url))
    cli = CliContext(_settings=settings)
    try:
        head = store.head()
        state = fold_stream(store.read_stream(INSTALLATION_STREAM)) if head else None
    except Exception as exc:  # noqa: BLE001 - reported as the problem, when expected
        line = describe_error(exc, cli)
        if line is None:
            raise
        # The timeouts are the status command's own; the line names the configured URL.
        return None, None, line.replace(store.url, _store_url(settings))
    finally:
        store.engine.dispose()
    key = state.key if isinstance(state, InstallationState) else None
    return head, key, None


def _store_url(settings: Settings) -> str:
    from oauthledger.events.store import safe_url

    return safe_url(settings.database_url)


def status_report(settings: Settings) -> dict[str, Any]:
    """Everything ``status`` prints, as a JSON-ready dict; ``problem`` is None when the
    installation is there and its store answered."""
    data_dir = settings.data_dir.absolute()
    db_file = sqlite_file(settings.database_url)
    key_file = Path(settings.secret_key_file).absolute()
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "data_dir_exists": data_dir.is_dir(),
        "data_dir_source": data_dir_source(settings),
        "mode": mode_of(settings),
        "store": _store_url(settings),
        "store_exists": None if db_file is None else db_file.exists(),
        "events": None,
        "redis": EMBEDDED if settings.redis_url is None else masked_url(settings.redis_url),
        "broker": (EMBEDDED if settings.broker_url is None
                   else masked_url(settings.broker_url)),
        "key_file": str(key_file),
        "key_file_exists": key_file.is_file(),
        "consumer_key": None,
        "base_url": settings.base_url,
        "problem": None,
    }
    if db_file is not None and not db_file.exists():
        report["problem"] = missing_installation_line(settings, "store")
        return report
    events, key, problem = _read_store(settings)
    report.update(events=events, consumer_key=key, problem=problem)
    if problem is None and not report["key_file_exists"]:
        report["problem"] = missing_installation_line(settings, "key file", events)
    return report


def _yes(value: bool | None) -> str:
    return "exists" if value else "does not exist"


def status_text(report: dict[str, Any]) -> str:
    """The text form: one aligned line per item."""
    store = report["store"]
    if report["store_exists"] is not None:
        store += f" ({_yes(report['store_exists'])})"
    if report["events"] is not None:
        store += f", {report['events']} event(s)"
    rows = [
        ("data directory", f"{report['data_dir']} ({_yes(report['data_dir_exists'])}; "
                           f"{report['data_dir_source']})"),
        ("mode", report["mode"]),
        ("store", store),
        ("redis", report["redis"]),
        ("broker", report["broker"]),
        ("key file", f"{report['key_file']} ({_yes(report['key_file_exists'])})"),
        ("consumer key", report["consumer_key"] or (
            "none yet (generated on first use)" if report["problem"] is None else "-")),
        ("base URL", report["base_url"] or "from each request (OAUTHLEDGER_BASE_URL "
                                           "is not set)"),
    ]
    return "".join(f"{label:<15} {value}\n" for label, value in rows)


@click.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_cli
def status(cli: CliContext, fmt: str) -> None:
    """Which installation this command talks to: data directory, store, Redis, broker,
    mode, key file, and the installation's consumer key. Exit 1 (after the report) when
    there is no installation there or its store does not answer."""
    report = status_report(cli.settings)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(status_text(report), nl=False)
    if report["problem"]:
        raise CliError(report["problem"])


COMMANDS = [status]
