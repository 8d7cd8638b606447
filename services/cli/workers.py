"""``oauthledger worker`` and ``oauthledger beat``: start the Celery worker and beat.

Both exec the Celery command line on the app named as a string (``oauthledger.workers.celery_app``):
services never import workers/ (docs/design.md, "The direction of imports"). Settings are
checked first, so a missing broker is one clear line, not a Celery traceback.

The exec goes through this module's :func:`celery_main` (``python -m
oauthledger.services.cli.workers ...``), which hooks the log format
(OAUTHLEDGER_LOG_FORMAT, docs/operations.md, "Logs") into Celery's logging setup before
running Celery's own command line: JSON lines from the worker, its pool processes and
beat, or Celery's plain lines with secrets redacted.
"""

from __future__ import annotations

import os
import sys

import click

from oauthledger.events.settings import Settings, SettingsError, load_settings
from oauthledger.services.cli.main import CliContext, CliError, pass_cli
from oauthledger.services.logs import install_celery_logging

CELERY_APP = "oauthledger.workers.celery_app"
# This module, run as the exec'd program (see celery_main).
LAUNCHER = "oauthledger.services.cli.workers"


def _need_broker(settings: Settings) -> None:
    if settings.broker_url is None:
        raise CliError(
            "OAUTHLEDGER_BROKER_URL is not set: the embedded default runs its workers "
            "inside the server process; set a broker (and OAUTHLEDGER_REDIS_URL) to run "
            "workers separately"
        )


def _exec(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", LAUNCHER, *argv])


def celery_argv(log_format: str, argv: list[str]) -> list[str]:
    """Celery's command line for ``argv`` (``worker ...`` or ``beat ...``) on our app. In
    JSON, ``--quiet``: the start-up banner is several lines of text on standard output,
    which a log collector expecting one JSON object per line would choke on."""
    quiet = ["--quiet"] if log_format == "json" else []
    return ["-A", CELERY_APP, *quiet, *argv]


def celery_main(argv: list[str]) -> None:
    """The exec'd program: hook the log format into Celery, then run Celery's command
    line with ``argv`` (the Celery program, as ``celery worker ...`` would)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"oauthledger: {exc}", file=sys.stderr)
        sys.exit(1)
    install_celery_logging(settings.log_format)
    sys.argv = ["celery", *celery_argv(settings.log_format, argv)]
    from celery.__main__ import main as celery

    celery()


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=None,
              help="Worker processes (default: one per CPU).")
@click.option("--name", "-n", default=None, help="Node name (default: oauthledger@%h).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@pass_cli
def worker(cli: CliContext, concurrency: int | None, name: str | None, loglevel: str) -> None:
    """Run a Celery worker: projection, catch-up, expiry sweep, rebuild tasks."""
    _need_broker(cli.settings)
    argv = ["worker", "--loglevel", loglevel, "--hostname", name or "oauthledger@%h",
            # Gossip/mingle/heartbeat events cost broker traffic and buy nothing here.
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    _exec(argv)


@click.command("beat")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@pass_cli
def beat(cli: CliContext, loglevel: str) -> None:
    """Run Celery beat: sends catch-up and expiry-sweep tasks. Run exactly one."""
    _need_broker(cli.settings)
    cli.settings.data_dir.mkdir(parents=True, exist_ok=True)
    _exec(["beat", "--loglevel", loglevel,
           "--schedule", str(cli.settings.data_dir / "celerybeat-schedule")])


COMMANDS = [worker, beat]


if __name__ == "__main__":
    celery_main(sys.argv[1:])
