"""Thin task wrappers around :mod:`oauthledger.events.projection`,
:mod:`oauthledger.events.rebuild` and :mod:`oauthledger.events.expiry`.

Front ends send these by name (``send_task("oauthledger.project")``). Each task is
idempotent: projection is checkpointed and version-guarded, the sweep appends with an
expected version, the rebuild is guarded by a Redis lock.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from oauthledger.events.connections import open_redis, open_store
from oauthledger.events.expiry import sweep_expired
from oauthledger.events.keys import KeyLayout
from oauthledger.events.metrics import metrics
from oauthledger.events.projection import project_coalesced
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild
from oauthledger.events.rebuild_lock import RebuildBusy
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore
from oauthledger.workers.celery_app import (
    TASK_CATCH_UP,
    TASK_PROJECT,
    TASK_REBUILD,
    TASK_SWEEP,
    app,
)

_lock = threading.Lock()
_runtime: dict[int, tuple[EventStore, ReadModel]] = {}


def _deps() -> tuple[EventStore, ReadModel]:
    """Store and read model of this process, opened on first use. Keyed by pid: a
    prefork child must not share its parent's sockets."""
    pid = os.getpid()
    with _lock:
        found = _runtime.get(pid)
        if found is None:
            settings: Settings = app.conf.oauthledger_settings
            store = open_store(settings)
            read_model = ReadModel(open_redis(settings), KeyLayout(settings.redis_prefix))
            found = _runtime[pid] = (store, read_model)
    return found


def _coalesced(task: Any, batch_size: int) -> dict[str, Any]:
    """Project, or flag the projector that is already looping (events.projection,
    "coalesced wake-ups"). A busy answer that asks for a re-check re-sends this task
    shortly — a few seconds, never days ahead (docs/design.md, "Nothing scheduled days
    ahead") — in case the holder died without seeing the flag."""
    store, read_model = _deps()
    result = project_coalesced(store, read_model, batch_size=batch_size)
    if result.recheck_ms is not None:
        task.apply_async(kwargs={"batch_size": batch_size},
                         countdown=result.recheck_ms / 1000 + 0.1)
    return result.as_dict()


@app.task(name=TASK_PROJECT, bind=True)
def project(self: Any, batch_size: int = 1000) -> dict[str, Any]:
    """Project pending events (sent by front ends after each commit)."""
    with metrics().counting_errors("worker"):
        return _coalesced(self, batch_size)


@app.task(name=TASK_CATCH_UP, bind=True)
def catch_up(self: Any, batch_size: int = 1000) -> dict[str, Any]:
    """Beat: project whatever lost or delayed messages left behind (docs/design.md,
    "Idempotent projection")."""
    with metrics().counting_errors("worker"):
        return _coalesced(self, batch_size)


@app.task(name=TASK_SWEEP)
def sweep() -> dict[str, Any]:
    """Beat: append Expired events for tokens past due (docs/design.md, "Nothing
    scheduled days ahead")."""
    store, read_model = _deps()
    # A store or Redis failure counts in oauthledger_dependency_errors_total (the sweep's
    # own metrics are counted by sweep_expired): docs/operations.md, "Metrics".
    with metrics().counting_errors("worker"):
        result = sweep_expired(store, read_model).as_dict()
        # Only beat sends this task, so when it last finished tells whether beat (and a
        # worker to run its sweeps) is alive: `oauthledger doctor` reads it
        # (docs/operations.md, "oauthledger doctor"). Recorded after the sweep, so a
        # sweep that keeps failing shows as a stale time.
        read_model.redis.set(read_model.keys.last_sweep, f"{time.time():.3f}")
    return result


@app.task(name=TASK_REBUILD)
def rebuild_task() -> dict[str, Any]:
    """Replay the log into a fresh namespace and switch to it."""
    store, read_model = _deps()
    try:
        with metrics().counting_errors("worker"):
            return rebuild(store, read_model).as_dict()
    except RebuildBusy:
        return {"skipped": "another rebuild is running"}
