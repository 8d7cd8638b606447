"""``oauthledger serve``: the HTTP server under gunicorn, with the packaged config."""

from __future__ import annotations

import logging
import os
import sys

import click

from oauthledger.events.settings import Settings
from oauthledger.services.cli.main import (
    CliContext,
    CliError,
    pass_cli,
)
from oauthledger.services.cli.preflight import check_dependencies, check_port_free, parse_bind
from oauthledger.services.logs import configure_logging

# gunicorn loads its config from an importable module ("python:" prefix), so the config
# ships inside the package and works the same from a wheel and from a checkout.
GUNICORN_CONFIG = "python:oauthledger.services.http.gunicorn_conf"
SERVER_MODULE = "oauthledger.services.http.server"


def run_mode(settings: Settings) -> str:
    """The mode as it will run: "embedded default mode" only when nothing is external;
    otherwise what the store, the read model and the workers are."""
    if settings.is_sqlite and settings.embedded_redis and settings.embedded_broker:
        return "embedded default mode"
    store = "SQLite" if settings.is_sqlite else "PostgreSQL"
    read_model = "embedded Redis" if settings.embedded_redis else "Redis"
    workers = "in-process workers" if settings.embedded_broker else "Celery workers"
    return f"{store}, {read_model}, {workers}"


@click.command()
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="gunicorn worker processes (default: 1 embedded, 2 x cores + 1 otherwise)")
@click.option("--connections", type=click.IntRange(1, 100_000), default=None,
              help="connections each worker serves at once (default: 1000; a client that "
                   "stalls mid-request holds one)")
@pass_cli
def serve(ctx: CliContext, bind: str, workers: int | None, connections: int | None) -> None:
    """Run the HTTP server under gunicorn (the packaged oauthledger.services.http.gunicorn_conf)."""
    settings = ctx.settings
    if settings.embedded_broker and workers not in (None, 1):
        raise CliError("the embedded default runs in one process; set OAUTHLEDGER_DATABASE_URL, "
                       "OAUTHLEDGER_REDIS_URL and OAUTHLEDGER_BROKER_URL to run several workers")
    # Everything that can be checked is checked before "serving on" is printed: the
    # address, the store and Redis, the port. One line names what is wrong.
    address = parse_bind(bind)
    check_dependencies(settings)
    check_port_free(address)
    # Create and migrate the embedded database before forking workers.
    _ = ctx.store
    # The launcher patches the standard library for gevent before gunicorn starts
    # (docs/operations.md, "Worker model").
    args = [sys.executable, "-m", SERVER_MODULE, "-c", GUNICORN_CONFIG, "--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    if connections:
        args += ["--worker-connections", str(connections)]
    mode = run_mode(settings)
    if settings.log_format == "json":
        # Under a log collector every line of the process is JSON, this one too
        # (docs/operations.md, "Logs"); gunicorn's logger class takes over after the exec.
        configure_logging("json")
        logging.getLogger(__name__).info("serving on http://%s (%s)", bind, mode)
        for handler in logging.getLogger().handlers:
            handler.flush()
    else:
        click.echo(f"oauthledger: serving on http://{bind} ({mode})", err=True)
    os.execv(sys.executable, args)


COMMANDS = [serve]
