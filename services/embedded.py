"""In-process workers for the embedded default (no broker).

One daemon thread does what the Celery workers and beat do in production: it projects
pending events when woken (``wake()``, injected into the front end), catches up every
``catchup_interval`` and sweeps expiries every ``sweep_interval``. On start it starts the
nonce memory's epoch and rebuilds the in-process projection from the log (docs/design.md,
"Two ways to run"). It calls the same functions in events/ as the Celery tasks; it does not
import workers/.

Thread-safe: the front end's request threads call :meth:`EmbeddedWorkers.wake` (a
``threading.Event``); start and stop take a lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable

from oauthledger.events.expiry import sweep_expired
from oauthledger.events.metrics import metrics
from oauthledger.events.projection import project_pending
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild
from oauthledger.events.rebuild_lock import RebuildBusy
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    """Background projector, catch-up and sweep on one daemon thread."""

    def __init__(
        self, store: EventStore, read_model: ReadModel, settings: Settings | None = None, *,
        catchup_interval: float | None = None, sweep_interval: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Intervals come from ``settings`` unless given explicitly."""
        self.store = store
        self.read_model = read_model
        self.catchup_interval = catchup_interval or (
            settings.catchup_interval if settings else 5.0)
        self.sweep_interval = sweep_interval or (settings.sweep_interval if settings else 60.0)
        self.clock = clock
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # start() and stop() from any thread
        self._thread: threading.Thread | None = None
        self.errors = 0  # failed rounds (logged; the next round retries)

    def wake(self) -> None:
        """Ask for a projection round soon (called by the front end after a commit)."""
        self._woken.set()

    def start(self, rebuild_first: bool = True) -> None:
        """Start the nonce memory's epoch, replay the log into the projection, then
        start the thread."""
        with self._lock:
            if self._thread is not None:
                return
            # The in-process store is new with this process: the nonces of the previous
            # one are gone. Rounded up, because a timestamp of the second under way may
            # have been used against the old memory just before it went (docs/oauth.md,
            # "Replays across restarts"). SET NX: a second runner keeps the first epoch.
            epoch = self.read_model.start_nonce_epoch(math.ceil(self.clock()))
            if rebuild_first:
                # RebuildBusy: another runner of this process rebuilds; our rounds catch up.
                with contextlib.suppress(RebuildBusy):
                    rebuild(self.store, self.read_model)
            # Serve only once the epoch's second has begun, so a request signed after the
            # server first answers is never older than its memory (under a second, and
            # the rebuild has mostly used it up).
            time.sleep(min(1.0, max(0.0, epoch - self.clock())))
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="oauthledger-embedded-workers", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after its current round)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping.set()
            self._woken.set()
            thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_catchup = time.monotonic() + self.catchup_interval
        next_sweep = time.monotonic()  # sweep once at start: tokens may have expired offline
        while not self._stopping.is_set():
            timeout = max(0.0, min(next_catchup, next_sweep) - time.monotonic())
            woken = self._woken.wait(timeout)
            if self._stopping.is_set():
                break
            self._woken.clear()
            now = time.monotonic()
            try:
                if woken or now >= next_catchup:
                    project_pending(self.store, self.read_model)
                    if now >= next_catchup:
                        next_catchup = now + self.catchup_interval
                if now >= next_sweep:
                    sweep_expired(self.store, self.read_model, now=self.clock())
                    next_sweep = now + self.sweep_interval
            except Exception as exc:  # noqa: BLE001 - keep the thread alive; next round retries
                self.errors += 1
                # The same counter as a Celery task's failure (docs/operations.md,
                # "Metrics"); the sweep's own metrics are counted by sweep_expired.
                metrics().count_exception(exc, "worker")
                log.exception("embedded worker round failed; retrying next round")
