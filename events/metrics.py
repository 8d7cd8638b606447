"""Every metric oauthledger exports (prometheus-client), the multiprocess directory that
lets every gunicorn worker and Celery process count, and the text a scrape returns.

What is measured and why is docs/operations.md, "Metrics". In short:

- :class:`Metrics` defines every metric once. It is built on first use
  (:func:`metrics`), never at import, because prometheus-client decides per process
  whether values live in memory or in memory-mapped files, and that must be settled
  before the first value exists.
- **One process**: values live in memory; a scrape reads them (tests, the CLI, any WSGI
  server other than the packaged gunicorn configuration).
- **A process tree** (a gunicorn server, a Celery worker and its pool): the tree's root
  calls :func:`start_process_tree` before it forks. The tree gets a fresh directory
  ``<base>/<role>-<pid>-<random>`` that its processes write their values into (one file
  per process and metric type), held by an ``flock`` for as long as any process of the
  tree lives and removed when the root exits. ``<base>`` is ``PROMETHEUS_MULTIPROC_DIR``
  when set, else ``<data dir>/metrics`` (:func:`metrics_base_dir`): the front ends and
  the Celery workers of one host that share it are all counted by one scrape of
  ``/metrics``, which merges the files of every tree under ``<base>``. A tree that died
  without cleaning up (SIGKILL) leaves an unlocked directory; the next tree to start
  removes it. Nobody ever empties a directory another live tree writes to.
- :class:`ProjectionCollector` computes the projection's checkpoint and lag at scrape
  time, bounded in time, and never fails the scrape.

Label values are bounded by construction: event types, token kinds, dance steps and
dependency names are closed sets here; the HTTP side (services/http/metrics.py) bounds
route groups, ``oauth_problem`` codes and consumer keys (registered ones only, capped).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from oauthledger.events.catalog import EVENT_TYPES, Event
from oauthledger.events.errors import ConcurrencyConflict, EventStoreError, StoreUnavailable
from oauthledger.events.process_id import current_pid

log = logging.getLogger(__name__)

# prometheus-client's own variable: where a process writes its values in multiprocess
# mode. prometheus-client reads it itself; it is read here too (not in events/settings.py)
# because it is that library's interface, and a tree root sets it for its children.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# In a tree's directory: locked (flock) by the tree for its life; names the tree's root.
OWNER_FILE = "owner.lock"
_TREE_DIR = re.compile(r"^(web|worker|bench)-\d+-[A-Za-z0-9_]+$")
_TREE_ROLES = ("web", "worker", "bench")
# A directory still being set up by a starting tree (hidden name until it is locked).
_SETUP_GRACE = 3600.0

# The Prometheus text exposition format (version 0.0.4), which every Prometheus version
# and agent reads; the names here are all plain, so it is what prometheus-client's newer
# format would print too.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# -- label value sets (closed) ------------------------------------------------------------

ROUTE_GROUPS = ("dance", "resource", "admin_api", "pages", "other")
SIGNED_KINDS = ("resource", "dance")
OUTCOMES = ("accepted", "refused")
DANCE_STEPS = ("request_token_issued", "authorized", "denied", "access_token_issued",
               "renewed")
TOKEN_CHANGES = (("request", "issued"), ("request", "expired"), ("access", "issued"),
                 ("access", "renewed"), ("access", "revoked"), ("access", "expired"))
DEPENDENCIES = ("store", "redis", "broker", "other")
ERROR_SOURCES = ("http", "worker", "publish", "wake")
APPEND_FAILURES = ("conflict", "unavailable", "error")
OTHER = "other"

# Event type -> dance step it completes (a renewal's new AccessTokenIssued is not an
# exchange: it carries renewed_from and is counted as "renewed" through its partner
# AccessTokenRenewed).
_DANCE_STEP_OF = {"RequestTokenIssued": "request_token_issued", "TokenApproved": "authorized",
                  "TokenDenied": "denied", "AccessTokenIssued": "access_token_issued",
                  "AccessTokenRenewed": "renewed"}
_TOKEN_CHANGE_OF = {"RequestTokenIssued": ("request", "issued"),
                    "RequestTokenExpired": ("request", "expired"),
                    "AccessTokenIssued": ("access", "issued"),
                    "AccessTokenRenewed": ("access", "renewed"),
                    "AccessTokenRevoked": ("access", "revoked"),
                    "AccessTokenExpired": ("access", "expired")}

# Latency buckets: the hot path answers in well under a millisecond to a few
# milliseconds, pages and appends in milliseconds; seconds mean trouble.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)
APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0)
SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SWEEP_TOKEN_BUCKETS = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)


class Metrics:
    """Every metric of oauthledger, in its own registry (not prometheus-client's global
    one). Build through :func:`metrics`; the HTTP layer binds label children once."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http_duration = Histogram(
            "oauthledger_http_request_duration_seconds",
            "Time from the first middleware to the response, per route group.",
            ["group"], buckets=HTTP_BUCKETS, registry=r)
        self.http_responses = Counter(
            "oauthledger_http_responses", "HTTP responses by route group and status class.",
            ["group", "code"], registry=r)
        self.signed_requests = Counter(
            "oauthledger_signed_requests",
            "Signed requests (resource calls and dance token steps) by outcome and "
            "oauth_problem (empty when accepted).",
            ["kind", "outcome", "oauth_problem"], registry=r)
        self.signed_by_consumer = Counter(
            "oauthledger_signed_requests_by_consumer",
            "Signed requests of registered consumers by outcome (the first consumer keys "
            "a process sees, then 'other').",
            ["consumer", "kind", "outcome"], registry=r)
        self.dance_steps = Counter(
            "oauthledger_dance_steps", "OAuth dance steps completed (recorded in the log).",
            ["step"], registry=r)
        self.token_events = Counter(
            "oauthledger_token_events", "Tokens issued, renewed, revoked and expired.",
            ["kind", "change"], registry=r)
        self.events_appended = Counter(
            "oauthledger_events_appended", "Events appended to the log, by event type.",
            ["type"], registry=r)
        self.appends = Counter(
            "oauthledger_store_appends", "Append calls (transactions) that committed.",
            registry=r)
        self.append_failures = Counter(
            "oauthledger_store_append_failures",
            "Append calls that wrote nothing: conflict (stale version), unavailable "
            "(database down), error.", ["reason"], registry=r)
        self.append_duration = Histogram(
            "oauthledger_store_append_duration_seconds",
            "Time of one append call (one transaction), committed or not.",
            buckets=APPEND_BUCKETS, registry=r)
        self.sweeps = Counter(
            "oauthledger_expiry_sweeps", "Expiry sweeps run, by outcome (ok, failed).",
            ["outcome"], registry=r)
        self.sweep_duration = Histogram(
            "oauthledger_expiry_sweep_duration_seconds", "Time of one expiry sweep.",
            buckets=SWEEP_BUCKETS, registry=r)
        self.sweep_expired = Histogram(
            "oauthledger_expiry_sweep_expired_tokens",
            "Tokens one sweep recorded as expired (access and request).",
            buckets=SWEEP_TOKEN_BUCKETS, registry=r)
        # "max": the newest sweep of any process counts, also of processes gone since.
        self.sweep_last_success = Gauge(
            "oauthledger_expiry_sweep_last_success_timestamp_seconds",
            "Unix time the last successful expiry sweep finished.",
            registry=r, multiprocess_mode="max")
        self.dependency_errors = Counter(
            "oauthledger_dependency_errors",
            "Failures of a dependency (store, redis, broker) where they were met: http "
            "(a 503 answered), worker (a task or embedded round), publish (a commit Redis "
            "could not be told of), wake (the projector could not be woken).",
            ["dependency", "where"], registry=r)

        # Pre-bound children: every series exists from the start (dashboards show 0,
        # not "no data"), and the hot paths look a child up in a dict.
        self.steps = {s: self.dance_steps.labels(s) for s in DANCE_STEPS}
        self.changes = {c: self.token_events.labels(*c) for c in TOKEN_CHANGES}
        self.by_type = {t: self.events_appended.labels(t) for t in (*sorted(EVENT_TYPES),
                                                                     OTHER)}
        self.failures = {f: self.append_failures.labels(f) for f in APPEND_FAILURES}
        self.sweep_outcomes = {o: self.sweeps.labels(o) for o in ("ok", "failed")}
        self.dependency = {(d, w): self.dependency_errors.labels(d, w)
                           for d in DEPENDENCIES for w in ERROR_SOURCES}
        for group in ROUTE_GROUPS:
            self.http_duration.labels(group)
            for code in ("2xx", "3xx", "4xx", "5xx"):
                self.http_responses.labels(group, code)

    # -- the store's append path (events/store.py) --------------------------------------

    def appended(self, events: Iterable[Event], seconds: float) -> None:
        """One committed append: its latency and each event by type, dance step and
        token change."""
        self.append_duration.observe(seconds)
        self.appends.inc()
        by_type, steps, changes = self.by_type, self.steps, self.changes
        for event in events:
            name = type(event).__name__
            (by_type.get(name) or by_type[OTHER]).inc()
            step = _DANCE_STEP_OF.get(name)
            if step is not None and not (step == "access_token_issued"
                                         and getattr(event, "renewed_from", None)):
                steps[step].inc()
            change = _TOKEN_CHANGE_OF.get(name)
            if change is not None:
                changes[change].inc()

    def append_failed(self, exc: BaseException, seconds: float) -> None:
        """One append that wrote nothing; a database that is down also counts as a
        store dependency error."""
        self.append_duration.observe(seconds)
        if isinstance(exc, ConcurrencyConflict):
            self.failures["conflict"].inc()
        elif isinstance(exc, StoreUnavailable):
            self.failures["unavailable"].inc()
        else:
            self.failures["error"].inc()

    # -- dependencies ---------------------------------------------------------------------

    def dependency_error(self, dependency: str, where: str) -> None:
        """Count one failure of ``dependency`` (store, redis, broker) met ``where``
        (http, worker, publish, wake); anything else counts as "other"."""
        child = self.dependency.get((dependency, where))
        if child is None:
            child = self.dependency[(OTHER, where if where in ERROR_SOURCES else "worker")]
        child.inc()

    def count_exception(self, exc: BaseException, where: str) -> None:
        """Count ``exc`` as a dependency error when it is one (store unavailable, a
        Redis error); other exceptions are not dependency failures."""
        dependency = dependency_of(exc)
        if dependency is not None:
            self.dependency_error(dependency, where)

    @contextlib.contextmanager
    def counting_errors(self, where: str) -> Iterator[None]:
        """Count a store or Redis failure raised inside the block, and re-raise it."""
        try:
            yield
        except BaseException as exc:
            self.count_exception(exc, where)
            raise

    # -- the expiry sweep (events/expiry.py) ----------------------------------------------

    def swept(self, expired: int, seconds: float, finished_at: float) -> None:
        """One successful sweep: how many tokens it expired and how long it took."""
        self.sweep_outcomes["ok"].inc()
        self.sweep_duration.observe(seconds)
        self.sweep_expired.observe(expired)
        self.sweep_last_success.set(finished_at)

    def sweep_failed(self, exc: BaseException, seconds: float) -> None:
        """One sweep that raised."""
        self.sweep_outcomes["failed"].inc()
        self.sweep_duration.observe(seconds)


def dependency_of(exc: BaseException) -> str | None:
    """The dependency an exception says is failing: "store", "redis", or None."""
    if isinstance(exc, StoreUnavailable):
        return "store"
    if isinstance(exc, redis.RedisError):
        return "redis"
    return None


_built: Metrics | None = None
_build_lock = threading.Lock()


def metrics() -> Metrics:
    """The process's metrics, built on first use: in a process tree's directory when
    :func:`start_process_tree` ran in this process or a parent, else in memory."""
    built = _built
    return built if built is not None else _build()


def _build() -> Metrics:
    global _built
    with _build_lock:
        if _built is None:
            # prometheus-client picks the value class when it is imported, from the
            # environment alone; it is decided here instead, so that a process outside
            # a tree (the CLI, with PROMETHEUS_MULTIPROC_DIR in its environment file)
            # never writes files into a directory no scrape reads.
            tree = current_tree_dir()
            # The process id it checks before every increment (to notice a fork) comes
            # from events/process_id.py: os.getpid() was a system call per increment,
            # several per request.
            prometheus_values.ValueClass = (
                prometheus_values.MultiProcessValue(process_identifier=current_pid)
                if tree is not None else prometheus_values.MutexValue)
            _built = Metrics()
        return _built


def multiprocess() -> bool:
    """True when this process writes its values into a process tree's directory."""
    return current_tree_dir() is not None


# -- process-tree directories -------------------------------------------------------------


def current_tree_dir() -> Path | None:
    """The tree directory this process belongs to (from its environment), or None."""
    raw = os.environ.get(MULTIPROC_ENV)
    if not raw:
        return None
    path = Path(raw)
    return path if (path / OWNER_FILE).is_file() else None


def metrics_base_dir(data_dir: Path) -> Path:
    """Where process trees put their directories: ``PROMETHEUS_MULTIPROC_DIR`` when set
    (when it names a tree's own directory, inherited by a re-executed server, its
    parent), else ``<data_dir>/metrics``."""
    raw = os.environ.get(MULTIPROC_ENV)
    if raw:
        path = Path(raw).expanduser()
        return path.parent if (path / OWNER_FILE).is_file() else path
    return data_dir.expanduser().resolve() / "metrics"


@dataclass
class TreeDir:
    """A process tree's metrics directory, locked while the tree lives."""

    path: Path
    fd: int

    @classmethod
    def create(cls, base: Path, role: str) -> TreeDir:
        """A fresh, locked directory ``<base>/<role>-<pid>-<random>``; removes the
        directories of trees that are gone first. Raises OSError."""
        if role not in _TREE_ROLES:
            raise ValueError(f"unknown process-tree role {role!r}")
        # The data directory holds the key file and the SQLite log: when this is the
        # first to make it, it is made private like connections.make_private does.
        base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        base.mkdir(mode=0o700, exist_ok=True)
        remove_stale_trees(base)
        # Set up under a hidden name, renamed once locked: a tree starting at the same
        # moment never sees it unlocked and takes it for a dead one.
        setup = Path(tempfile.mkdtemp(prefix=f".{role}-", dir=base))
        fd = os.open(setup / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()} {role}\n".encode())
            final = base / f"{role}-{os.getpid()}-{setup.name.split('-', 1)[1]}"
            setup.rename(final)
        except OSError:
            os.close(fd)
            shutil.rmtree(setup, ignore_errors=True)
            raise
        return cls(final, fd)

    def remove(self) -> None:
        """Delete the directory and release the lock (the tree has ended)."""
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def remove_stale_trees(base: Path) -> list[Path]:
    """Remove the directories under ``base`` of trees that are gone (their lock is
    free) and set-ups abandoned long ago; returns what was removed. Directories of live
    trees, and anything not named like a tree's, are left alone."""
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if entry.name.startswith(tuple(f".{r}-" for r in _TREE_ROLES)):
                if entry.is_dir() and now - entry.stat().st_mtime > _SETUP_GRACE:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
                continue
            if not (_TREE_DIR.match(entry.name) and entry.is_dir()):
                continue
            fd = os.open(entry / OWNER_FILE, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # locked: a live tree
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


_tree: TreeDir | None = None


def start_process_tree(data_dir: Path, role: str) -> Path | None:
    """Called by a tree's root before it forks (gunicorn's master, a Celery worker's
    main process): create the tree's directory and point this process and its future
    children at it (``PROMETHEUS_MULTIPROC_DIR``). Returns the directory, or None when
    none could be made (then each process counts in memory on its own) or the metrics
    of this process already exist in memory."""
    global _tree
    if _tree is not None:
        return _tree.path
    if _built is not None and not multiprocess():
        log.warning("metrics: this process counts in memory already; its children will "
                    "not share a metrics directory")
        return None
    base = metrics_base_dir(data_dir)
    try:
        tree = TreeDir.create(base, role)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"oauthledger-metrics-{os.getuid()}"
        log.warning("metrics: cannot use %s (%s); using %s", base, exc, fallback)
        try:
            tree = TreeDir.create(fallback, role)
        except OSError as exc2:
            log.warning("metrics: no metrics directory (%s); each process counts alone",
                        exc2)
            return None
    os.environ[MULTIPROC_ENV] = str(tree.path)
    _tree = tree
    return tree.path


def end_process_tree() -> None:
    """Called by the tree's root when it exits: remove the directory. The tree's
    counters leave the scrape with it (Prometheus reads that as a counter reset)."""
    global _tree
    tree, _tree = _tree, None
    if tree is not None:
        tree.remove()


def process_dead(pid: int) -> None:
    """Bookkeeping for a child of this tree that exited (gunicorn's ``child_exit``, a
    Celery pool process): its live gauges leave the scrape; its counters stay."""
    path = current_tree_dir()
    if path is not None:
        with contextlib.suppress(OSError):
            mark_process_dead(pid, str(path))


# -- the scrape ---------------------------------------------------------------------------


class Collector(Protocol):
    """What a registry asks of a collector."""

    def collect(self) -> Iterable[Metric]:
        """The metric families to export now."""
        ...


class _TreeFiles:
    """Every live process tree's files under one base directory, merged."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def collect(self) -> Iterable[Metric]:
        for _attempt in range(3):
            files = [f for f in glob.glob(str(self.base / "*" / "*.db"))
                     if _TREE_DIR.match(Path(f).parent.name)]
            try:
                return MultiProcessCollector.merge(files, accumulate=True)
            except FileNotFoundError:
                continue  # a tree ended between the listing and the read: list again
        return []


class _Chain:
    def __init__(self, collectors: Sequence[Collector]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render(extra: Sequence[Collector] = ()) -> bytes:
    """The scrape's text: every process of the trees under this tree's base directory
    (or this process's own values), then ``extra`` collectors (computed now)."""
    built = metrics()
    tree = current_tree_dir()
    source: Collector = _TreeFiles(tree.parent) if tree is not None else built.registry
    return generate_latest(_Chain([source, *extra]))  # type: ignore[arg-type]


# -- computed at scrape time --------------------------------------------------------------


class ProjectionStatus(Protocol):
    """What :func:`oauthledger.events.projection.status` answers (the fields read)."""

    head: int
    checkpoint: int | None
    lag_events: int | None
    lag_seconds: float | None
    rebuild_running: bool


class ProjectionCollector:
    """The projection's checkpoint, the log's head and the lag between them, read when
    scraped (``status`` is :func:`oauthledger.events.projection.status` over the
    process's store and read model).

    Bounded in time and never failing the scrape: ``status`` runs on a daemon thread and
    is waited for at most ``timeout`` seconds; a store or Redis that is down or slow
    turns into ``oauthledger_projection_up 0`` with the reason, and the other families
    are left out. One reading at a time: while a slow one is still running, a scrape
    waits for that one again instead of starting another (no pile of stuck threads).
    A reading that runs past the bound is reported as ``timeout`` — or, when the last
    reading that did finish failed, as that failure: a client that retries a refused
    connection for longer than the bound (redis-py does, for seconds) still shows as
    ``redis`` from the second scrape on.
    """

    def __init__(self, status: Callable[[], ProjectionStatus], timeout: float = 1.0) -> None:
        self.status = status
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: _Reading | None = None
        self._last_failure: str | None = None

    def _reading(self) -> _Reading:
        with self._lock:
            running = self._running
            if running is None or running.done.is_set():
                if running is not None:
                    self._last_failure = None if running.result is not None \
                        else running.failure
                running = self._running = _Reading(self.status)
            return running

    def collect(self) -> Iterator[Metric]:
        """The projection's families, or ``up 0`` and the reason."""
        reading = self._reading()
        finished = reading.done.wait(self.timeout)
        up = GaugeMetricFamily(
            "oauthledger_projection_up",
            "1 when the projection's checkpoint and the log's head could be read at "
            "this scrape; 0 with the reason (timeout, store, redis, error).",
            labels=["reason"])
        status = reading.result if finished else None
        if status is None:
            reason = reading.failure if finished else (self._last_failure or "timeout")
            up.add_metric([reason], 0.0)
            yield up
            return
        up.add_metric([""], 1.0)
        yield up
        yield GaugeMetricFamily("oauthledger_log_head_position",
                                "Position of the last event in the log.", value=status.head)
        if status.checkpoint is not None:
            yield GaugeMetricFamily(
                "oauthledger_projection_checkpoint_position",
                "Last log position the live projection has applied.",
                value=status.checkpoint)
        if status.lag_events is not None:
            yield GaugeMetricFamily(
                "oauthledger_projection_lag_events",
                "Events in the log the live projection has not applied yet.",
                value=status.lag_events)
        if status.lag_seconds is not None:
            yield GaugeMetricFamily(
                "oauthledger_projection_lag_seconds",
                "Age of the oldest event the live projection has not applied (0 when "
                "caught up).", value=status.lag_seconds)
        yield GaugeMetricFamily(
            "oauthledger_projection_rebuild_running", "1 while a rebuild holds its lock.",
            value=1.0 if status.rebuild_running else 0.0)


class _Reading:
    """One run of ``status`` on a daemon thread (a daemon: a hung socket never holds
    up the process's exit)."""

    def __init__(self, status: Callable[[], ProjectionStatus]) -> None:
        self.done = threading.Event()
        self.result: ProjectionStatus | None = None
        self.failure = "error"
        threading.Thread(target=self._run, args=(status,), daemon=True,
                         name="oauthledger-metrics-projection").start()

    def _run(self, status: Callable[[], ProjectionStatus]) -> None:
        try:
            self.result = status()
        except Exception as exc:  # noqa: BLE001 - the scrape reports it as up 0
            self.failure = dependency_of(exc) or (
                "store" if isinstance(exc, EventStoreError) else "error")
        finally:
            self.done.set()


# -- what the scrape can name (for the dashboard's and the docs' checks) ------------------

PROJECTION_FAMILIES = ("oauthledger_projection_up", "oauthledger_log_head_position",
                       "oauthledger_projection_checkpoint_position",
                       "oauthledger_projection_lag_events", "oauthledger_projection_lag_seconds",
                       "oauthledger_projection_rebuild_running")


def exported_names() -> dict[str, str]:
    """Every sample name a scrape can hold -> the family (as documented) it belongs to:
    ``_total`` for counters, ``_bucket``/``_sum``/``_count`` for histograms."""
    out: dict[str, str] = {}
    for family in metrics().registry.collect():
        if family.type == "counter":
            out[family.name + "_total"] = family.name + "_total"
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[family.name + suffix] = family.name
        else:
            out[family.name] = family.name
    for name in PROJECTION_FAMILIES:
        out[name] = name
    return out


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in scrape ``text`` (None when absent): for tests and the
    benchmark, which read what a scraper reads."""
    from prometheus_client.parser import text_string_to_metric_families

    want = labels or {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                return float(sample.value)
    return None
