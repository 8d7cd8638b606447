"""``oauthledger worker`` and ``oauthledger beat``: start the Celery worker and beat.

Both exec the Celery command line on the app named as a string (``oauthledger.workers.celery_app``):
services never import workers/ (docs/design.md, "The direction of imports"). Settings are
checked first, so a missing broker is one clear line, not a Celery traceback.
"""

from __future__ import annotations

import os
import sys

import click

from oauthledger.events.settings import Settings
from oauthledger.services.cli.main import CliContext, CliError, pass_cli

CELERY_APP = "oauthledger.workers.celery_app"


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
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", CELERY_APP, *argv])


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
