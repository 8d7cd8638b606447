"""Process plumbing of the parallel rebuild (events/rebuild.py): forking partition
workers, the pipes between them, and carrying a worker's failure back to the rebuild.

Workers are made with ``os.fork``, not ``multiprocessing``: a Celery prefork worker is
daemonic, and ``multiprocessing`` refuses to give a daemonic process children. A forked
worker never returns into its parent's frames (it ends with ``os._exit``), opens its own
database and Redis connections, and never touches (or lets the garbage collector close)
the ones it inherited.

Pipes (all made before the first fork, so each process can close what it does not use):

- a *report* pipe from each worker to the parent: ("folded", ...), ("done", ...) or
  ("error", exception, traceback) — read by a thread, so a failure is noticed while the
  parent is still busy with its own partition;
- a *forward* pipe from worker ``k`` to the process of partition ``k - 1``: rows of
  streams that began before ``k``'s range, in position order, then an end marker.

A worker that cannot go on raises; the parent kills (SIGKILL) and reaps every worker
before it lets the exception out of ``rebuild()``, so no worker keeps writing for a
rebuild that failed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import queue
import signal
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

import redis

from oauthledger.events.rebuild_lock import RebuildInterrupted
from oauthledger.events.store import EventStore


class RebuildWorkerDied(RebuildInterrupted):
    """A rebuild worker process ended without reporting (killed, out of memory)."""


class ChainBroken(RebuildWorkerDied):
    """The worker of the next partition stopped before it had forwarded all rows (its
    own failure is the cause; the parent reports that one when it arrives)."""


_FRAME = struct.Struct("<Q")
_END = b"end"
# Objects a worker inherited and must never finalize (closing the parent's database
# connection from a child can, e.g., make SQLite checkpoint and remove its WAL). The
# worker ends with os._exit, so what is kept here is never collected.
_INHERITED: list[Any] = []
# Per partition, in shared memory: events replayed, entities folded, entities written.
COUNTERS = struct.Struct("<qqq")


def can_fork(store: EventStore, client: redis.Redis) -> bool:
    """Whether partition workers can be forked: they open their own connections to the
    same servers, so not with the embedded in-process Redis (fakeredis) or an
    in-memory SQLite database, nor where there is no ``os.fork``."""
    if not hasattr(os, "fork"):
        return False
    pool = getattr(client, "connection_pool", None)
    if pool is None or pool.connection_class not in (
            redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection):
        return False  # exact classes: fakeredis' connection subclasses redis.Connection
    if store.is_sqlite:
        url = store.engine.url
        if (not url.database or url.database == ":memory:"
                or "memory" in str(url.query.get("mode", ""))):
            return False
    return True


def client_factory(client: redis.Redis) -> Callable[[], redis.Redis]:
    """Makes a client with ``client``'s connection settings and a pool of its own."""
    pool = client.connection_pool
    cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    return lambda: redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=cls, **kwargs))


def reconnect_store(store: EventStore) -> None:
    """In a forked worker: give the store's engine a fresh pool (SQLAlchemy's
    ``dispose(close=False)``), keeping the inherited one referenced, never closed."""
    _INHERITED.append(store.engine.pool)
    store.engine.dispose(close=False)


# -- errors across the pipe ------------------------------------------------------------------


def pack_error(exc: BaseException) -> bytes:
    """An exception as bytes the parent turns back into the same type and message.
    Store errors take several constructor arguments, so they are rebuilt without calling
    ``__init__``; anything that does not survive this becomes a RuntimeError with the
    same text."""
    try:
        blob = pickle.dumps((type(exc), exc.args, dict(exc.__dict__)))
        unpack_error(blob)
    except Exception:  # noqa: BLE001 - any failure: fall back to the text
        blob = pickle.dumps((RuntimeError, (f"{type(exc).__name__}: {exc}",), {}))
    return blob


def unpack_error(blob: bytes) -> BaseException:
    """The exception :func:`pack_error` packed."""
    cls, args, attrs = pickle.loads(blob)  # noqa: S301 - from our own worker process
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(attrs)
    return exc


# -- framed pipes ----------------------------------------------------------------------------


def send(out: BinaryIO, message: Any) -> None:
    """Write one pickled message (length-prefixed) and flush."""
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(blob)))
    out.write(blob)
    out.flush()


def _frames(fd: int) -> Iterator[bytes]:
    """The frames read from ``fd`` until end of file (a cut-off frame ends it too)."""
    with os.fdopen(fd, "rb") as pipe:
        while True:
            head = pipe.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            (size,) = _FRAME.unpack(head)
            body = pipe.read(size)
            if len(body) < size:
                return
            yield body


class Inbox:
    """Rows forwarded by the worker of the next partition, collected by a thread (so the
    sender never blocks) and handed out, in order, once this process has folded its own
    range."""

    def __init__(self, fd: int) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(fd,), daemon=True,
                         name="rebuild-inbox").start()

    def _read(self, fd: int) -> None:
        complete = False
        try:
            for body in _frames(fd):
                if body == _END:
                    complete = True
                    break
                self._queue.put(pickle.loads(body))  # noqa: S301 - our own worker
        finally:
            self._queue.put(complete)

    def batches(self, check: Callable[[], None]) -> Iterator[list[tuple]]:
        """The forwarded row batches until the sender's end marker; raises
        :class:`ChainBroken` if the sender stopped before it. ``check`` runs while
        waiting (liveness of the rest of the rebuild)."""
        while True:
            try:
                item = self._queue.get(timeout=1)
            except queue.Empty:
                check()
                continue
            if item is True:
                return
            if item is False:
                raise ChainBroken("the rebuild worker of the next partition stopped")
            yield item


class Outbox:
    """Rows this worker forwards to the process of the previous partition."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "wb")

    def send(self, rows: list[tuple]) -> None:
        """Forward a batch of rows (position order)."""
        if rows:
            send(self._out, rows)

    def close(self) -> None:
        """Send the end marker: everything was forwarded."""
        self._out.write(_FRAME.pack(len(_END)))
        self._out.write(_END)
        self._out.close()


# -- the parent's view of its workers --------------------------------------------------------


@dataclass
class Worker:
    """A forked partition worker as the parent sees it."""

    pid: int
    partition: int
    failed: threading.Event
    messages: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    failure: tuple[Any, ...] | None = None  # ("error", blob, traceback) or ("died",)
    ended: threading.Event = field(default_factory=threading.Event)
    reaped: bool = False
    status: int = 0  # wait status, once reaped

    def listen(self, fd: int) -> None:
        """Read the report pipe on a thread."""
        threading.Thread(target=self._read, args=(fd,), daemon=True,
                         name=f"rebuild-worker-{self.partition}").start()

    def _read(self, fd: int) -> None:
        try:
            for body in _frames(fd):
                message = pickle.loads(body)  # noqa: S301 - from our own worker
                if message[0] == "error":
                    self.failure = message
                    break
                self.messages.put(message)
                if message[0] == "done":
                    return
            if self.failure is None:
                self.failure = ("died",)  # the pipe closed before "done"
            self.failed.set()
        finally:
            self.ended.set()
            self.messages.put(("end",))

    def wait(self, kind: str, tick: Callable[[], None]) -> tuple[Any, ...]:
        """The next message, which must be ``kind``; raises the worker's failure
        instead. ``tick`` runs every few seconds while waiting (extends the lock)."""
        while True:
            try:
                message = self.messages.get(timeout=5)
            except queue.Empty:
                tick()
                continue
            if message[0] == kind:
                return message
            self.raise_failure()
            raise RebuildWorkerDied(f"rebuild worker process {self.pid} sent "
                                    f"{message[0]!r} instead of {kind!r}")

    def raise_failure(self) -> None:
        """Raise what made this worker fail (its error, or that it died), if it did."""
        if self.failure is None:
            return
        if self.failure[0] == "error":
            exc = unpack_error(self.failure[1])
            exc.add_note(f"(raised in rebuild worker process {self.pid}, partition "
                         f"{self.partition})\n{self.failure[2]}")
            raise exc
        status = self.reap()
        raise RebuildWorkerDied(
            f"rebuild worker process {self.pid} (partition {self.partition}) ended "
            f"without reporting ({_describe_status(status)})")

    def reap(self, kill: bool = False) -> int:
        """Wait for the process to end (killing it first if asked); its wait status."""
        if not self.reaped:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            _, self.status = os.waitpid(self.pid, 0)
            self.reaped = True
        return self.status


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


@dataclass
class Context:
    """What a worker is given: its partition, its pipes, progress reporting."""

    partition: int
    report_out: BinaryIO
    inbox: Inbox | None  # rows forwarded by partition + 1
    outbox: Outbox | None  # rows forwarded to partition - 1
    _counters: mmap.mmap
    _parent: int

    def progress(self, replayed: int | None = None, entities: int | None = None,
                 written: int | None = None) -> None:
        """Publish progress counters; raises if the rebuild's process is gone (the
        worker then stops instead of working for nobody)."""
        at = COUNTERS.size * self.partition
        old = COUNTERS.unpack_from(self._counters, at)
        COUNTERS.pack_into(self._counters, at,
                           old[0] if replayed is None else replayed,
                           old[1] if entities is None else entities,
                           old[2] if written is None else written)
        self.check()

    def check(self) -> None:
        """Raise if the rebuild's process is gone."""
        if os.getppid() != self._parent:
            raise RebuildInterrupted("the rebuild process ended")

    def report(self, *message: Any) -> None:
        """Send a message to the parent."""
        send(self.report_out, message)


class Workers:
    """The forked partition workers of one rebuild (partition 0 is the parent)."""

    def __init__(self, parts: int) -> None:
        self.parts = parts
        self.workers: list[Worker] = []
        self.failed = threading.Event()
        self.counters = mmap.mmap(-1, COUNTERS.size * parts)  # shared with the workers
        self.inbox: Inbox | None = None  # the parent's: rows forwarded by partition 1

    def start(self, run: Callable[[Context], None]) -> None:
        """Fork a worker per partition 1..parts-1, each running ``run(context)``."""
        # forward[k]: partition k -> partition k - 1 (k >= 1)
        forward = {k: os.pipe() for k in range(1, self.parts)}
        parent = os.getpid()
        try:
            for k in range(1, self.parts):
                report_r, report_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(report_r)
                    self._worker(k, report_w, forward, parent, run)
                os.close(report_w)
                worker = Worker(pid, k, self.failed)
                worker.listen(report_r)
                self.workers.append(worker)
        finally:
            for k, (r, w) in forward.items():
                os.close(w)
                if k != 1 or len(self.workers) != self.parts - 1:
                    os.close(r)
        self.inbox = Inbox(forward[1][0])

    def _worker(self, k: int, report_w: int, forward: dict[int, tuple[int, int]],
                parent: int, run: Callable[[Context], None]) -> NoReturn:
        code = 1
        try:
            out = os.fdopen(report_w, "wb")
            try:
                # Keep only this worker's ends of the forward pipes: an end left open
                # here would hide the end of file of a sender that died.
                for j, (r, w) in forward.items():
                    if j != k + 1:
                        os.close(r)
                    if j != k:
                        os.close(w)
                inbox = Inbox(forward[k + 1][0]) if k + 1 in forward else None
                ctx = Context(k, out, inbox, Outbox(forward[k][1]), self.counters, parent)
                run(ctx)
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                with contextlib.suppress(BaseException):
                    send(out, ("error", pack_error(exc), traceback.format_exc()))
        finally:
            os._exit(code)  # no atexit handlers, no flushing of inherited buffers

    def check(self) -> None:
        """Raise the cause of the first worker failure that has arrived, if any."""
        if self.failed.is_set():
            self.raise_cause()

    def raise_cause(self, fallback: BaseException | None = None, wait: float = 10.0
                    ) -> None:
        """Raise the cause of a failure: a worker's error, or that it died. A
        :class:`ChainBroken` (or ``fallback``) only says that some later worker stopped,
        so it is raised only if no cause arrives within ``wait`` seconds. Returns if
        nothing failed."""
        deadline = time.monotonic() + wait
        while True:
            broken = fallback
            for worker in self.workers:
                try:
                    worker.raise_failure()
                except ChainBroken as exc:
                    broken = broken or exc
            if broken is None:
                return
            if time.monotonic() >= deadline:
                raise broken
            time.sleep(0.05)

    def total(self, column: int) -> int:
        """Sum of one progress counter over the workers."""
        return sum(COUNTERS.unpack_from(self.counters, COUNTERS.size * w.partition)[column]
                   for w in self.workers)

    def stop(self) -> None:
        """Kill and reap every worker still running (after a failure or when done)."""
        for worker in self.workers:
            worker.reap(kill=True)
        self.counters.close()
