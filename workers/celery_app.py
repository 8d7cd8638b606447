"""The Celery app of the workers and of beat (``celery -A workers.celery_app ...``, or
``oauthledger worker`` / ``oauthledger beat`` which exec that).

Built from :func:`oauthledger.events.settings.load_settings` when this module is imported,
which only the worker and beat processes do (services never import workers/). No connection is
opened here: Celery connects when the worker starts, the tasks open the store and Redis
lazily in each worker process (after the prefork).

Reliability settings (docs/design.md, "Idempotent projection"): JSON only; ``acks_late`` plus
``task_reject_on_worker_lost`` so a task whose process dies is redelivered; prefetch of
one so a dying worker holds back at most one message per process; and every task is
idempotent, so redelivery and duplicates are harmless. Beat sends the catch-up (closes
any gap left by lost messages) and the expiry sweep on short fixed intervals; nothing is
ever scheduled days ahead (docs/design.md, "Nothing scheduled days ahead"). Projection
wake-ups are coalesced in the task (``oauthledger.events.projection.project_coalesced``):
one worker process loops while commits keep arriving, the others only flag more work, so a
burst of per-commit messages does not turn into a queue of redundant projections
(docs/workers.md).

Metrics (docs/operations.md, "Metrics"): a worker is a process tree like a gunicorn
server. Its main process makes the tree's metrics directory before the pool forks
(``worker_init``), under the same base as the host's front ends
(``PROMETHEUS_MULTIPROC_DIR``, else ``<data dir>/metrics``), so the front ends'
``/metrics`` also reports the workers' sweeps, appends and errors; a pool process that
exits is marked dead, and the directory goes when the worker shuts down. Beat runs no
task and makes none.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from oauthledger.events import metrics as metrics_dirs
from oauthledger.events.settings import Settings, SettingsError, load_settings

TASK_PROJECT = "oauthledger.project"
TASK_CATCH_UP = "oauthledger.catch_up"
TASK_SWEEP = "oauthledger.sweep_expired"
TASK_REBUILD = "oauthledger.rebuild"


def create_app(settings: Settings | None = None) -> Celery:
    """The configured Celery app (raises :class:`SettingsError` without a broker)."""
    settings = settings or load_settings()
    if settings.broker_url is None:
        raise SettingsError(
            "OAUTHLEDGER_BROKER_URL",
            "not set: workers need a broker (the embedded default runs them in-process)",
        )
    app = Celery("oauthledger", broker=settings.broker_url, include=["oauthledger.workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
        enable_utc=True,
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        beat_schedule={
            "catch-up": {
                "task": TASK_CATCH_UP,
                "schedule": settings.catchup_interval,
                # A catch-up that waited longer than its interval is superseded by the next.
                "options": {"expires": max(1.0, settings.catchup_interval)},
            },
            "sweep-expired": {
                "task": TASK_SWEEP,
                "schedule": settings.sweep_interval,
                "options": {"expires": max(1.0, settings.sweep_interval)},
            },
        },
    )
    app.conf.oauthledger_settings = settings
    return app


app = create_app()


@signals.worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    """Main process, before the pool forks: the worker's metrics directory."""
    settings: Settings = app.conf.oauthledger_settings
    metrics_dirs.start_process_tree(settings.data_dir, "worker")


@signals.worker_process_shutdown.connect
def _pool_process_done(pid: int | None = None, **_: Any) -> None:
    """A pool process about to exit: its live gauges leave the scrape."""
    if pid is not None:
        metrics_dirs.process_dead(pid)


@signals.worker_shutdown.connect
def _end_metrics(sender: Any = None, **_: Any) -> None:
    """Main process, shutting down: remove the worker's metrics directory."""
    metrics_dirs.end_process_tree()
