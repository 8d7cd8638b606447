"""Each registered consumer's failure history: the signed requests refused for it, and
hourly counts of its refused and accepted requests — kept in Redis only.

Operational data, not events: nothing here is derived from the log or written to it. The
keys live outside the projection namespaces (events/keys.py), a rebuild leaves them
alone, and a Redis flush (or the restart of the embedded default's in-process store)
loses them, which is fine: the history helps an administrator see why a client fails
*now*; every decision that must last is in the log (docs/admin.md, "Failure history").

Bounded, whatever clients send:

- per consumer at most ``history`` entries (``LTRIM``), each at most :data:`ENTRY_LIMIT`
  bytes, and the list expires ``retention`` seconds after its newest refusal
  (``EXPIRE``); entries older than ``retention`` are left out on reading as well;
- per consumer one hash per hour (refusals per ``oauth_problem``, and ``accepted``), kept
  a day after its hour ends;
- refusals that name no registered consumer — their consumer key is whatever a client
  chose to send — only add to one counter per hour (``<prefix>:fu:<hour>``), never a key
  of their own.

What it costs the hot path (docs/design.md, "One round trip"): a refusal one round trip
more (:meth:`FailureStore.record`: one script decides, against the live projection,
whether the consumer is registered and writes the entry and its count); an accepted
request none: :class:`AcceptedCounter` adds in process memory, and a background thread
writes the sums every :data:`FLUSH_INTERVAL` seconds with one pipeline.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from oauthledger.events.keys import KeyLayout

log = logging.getLogger(__name__)

# Bytes of one stored entry (JSON). A refused request's URL, base string and the parts
# the debugger needs fit many times over; a 64 KiB form does not, and loses the
# debugger's part first, then the end of its longest texts (:func:`encode_entry`).
ENTRY_LIMIT = 8192
# Seconds between two writes of the accepted counts of one process.
FLUSH_INTERVAL = 10.0
# (consumer, hour) sums a process holds while Redis cannot take them; beyond, new ones
# are dropped (a chart, not a ledger).
MAX_PENDING = 100_000
# The field of an hour's hash that counts accepted requests (problem codes are
# lower-case words with underscores, never this).
ACCEPTED = "accepted"
# An hour's counts outlive it by a day: the chart shows the last 24 hours.
COUNT_TTL = 86400
TRUNCATED = "…"

_RECORD = """
-- KEYS: the live-namespace pointer, the consumer's history list, the consumer's count
--       hash of this hour, the unattributed counter of this hour.
-- ARGV: default namespace, consumer key ('' = none was read), entry JSON, entries kept,
--       retention seconds, oauth_problem, when the counts expire (seconds since 1970).
-- A consumer is registered when the live projection holds it (removed ones included:
-- their key was registered once); anything else is counted, never stored by its key.
local ns = redis.call('GET', KEYS[1]) or ARGV[1]
if ARGV[2] ~= '' and redis.call('EXISTS', ns .. ':c:' .. ARGV[2]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
  redis.call('EXPIREAT', KEYS[3], ARGV[7])
  return 1
end
redis.call('INCR', KEYS[4])
redis.call('EXPIREAT', KEYS[4], ARGV[7])
return 0
"""


def hour_of(ts: float) -> int:
    """POSIX hours: the hour ``ts`` falls in."""
    return int(ts // 3600)


def _counts_expire_at(hour: int) -> int:
    return (hour + 1) * 3600 + COUNT_TTL


def encode_entry(entry: Mapping[str, Any], limit: int = ENTRY_LIMIT) -> str:
    """``entry`` as compact JSON of at most ``limit`` UTF-8 bytes: over it, the
    debugger's part (``request``) goes first (``debuggable`` becomes false), then the
    longest texts are cut (``truncated`` is set)."""
    out = dict(entry)
    text = _dump(out)
    if len(text.encode("utf-8")) <= limit:
        return text
    if "request" in out:
        out.pop("request")
        out["debuggable"] = False
        text = _dump(out)
    for _ in range(64):
        if len(text.encode("utf-8")) <= limit:
            return text
        longest = max((name for name, v in out.items() if isinstance(v, str)),
                      key=lambda name: len(out[name]), default=None)
        if longest is None or len(out[longest]) <= 16:
            break
        value: str = out[longest]
        out[longest] = value[: len(value) // 2] + TRUNCATED
        out["truncated"] = True
        text = _dump(out)
    if len(text.encode("utf-8")) <= limit:
        return text
    # Only short texts are left and it is still too large (many small fields): keep
    # what identifies the refusal.
    keep = ("time", "requestId", "route", "step", "method", "oauthProblem", "status")
    return _dump({**{n: out[n] for n in keep if n in out}, "truncated": True,
                  "debuggable": False})


def _dump(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def _decode(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class HourCounts:
    """One consumer's counts in one hour: refusals per oauth_problem, and accepted."""

    hour: int
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        """Every refusal of the hour."""
        return sum(self.refused.values())


class FailureStore:
    """The Redis keys of the failure history (module docstring) under one
    :class:`KeyLayout`. ``history`` and ``retention`` are the settings
    OAUTHLEDGER_FAILURE_HISTORY and OAUTHLEDGER_FAILURE_RETENTION."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, *, history: int,
                 retention: float) -> None:
        self.redis = client
        self.keys = layout
        self.history = max(1, int(history))
        # EXPIRE takes whole seconds, and 0 would delete the list at once.
        self.retention = max(1, math.ceil(retention))
        self._record = client.register_script(_RECORD)

    # -- writing ---------------------------------------------------------------------

    def record(self, consumer_key: str | None, entry: Mapping[str, Any], problem: str,
               now: float) -> bool:
        """Keep a refused request in ``consumer_key``'s history and count it in this
        hour, in one round trip, when the live projection holds that consumer; otherwise
        only count it as unattributed. True when it was kept for the consumer."""
        hour = hour_of(now)
        key = consumer_key or ""
        done = self._record(
            keys=[self.keys.active, self.keys.failure_history(key),
                  self.keys.failure_counts(hour, key), self.keys.failure_unknown(hour)],
            args=[self.keys.default_namespace, key, encode_entry(entry), self.history,
                  self.retention, problem, _counts_expire_at(hour)])
        return int(done) == 1

    def add_accepted(self, counts: Mapping[tuple[str, int], int]) -> None:
        """Add accepted requests per (consumer key, hour), in one pipeline."""
        if not counts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (consumer_key, hour), n in counts.items():
            name = self.keys.failure_counts(hour, consumer_key)
            pipe.hincrby(name, ACCEPTED, n)
            pipe.expireat(name, _counts_expire_at(hour))
        pipe.execute()

    # -- reading ---------------------------------------------------------------------

    def entries(self, consumer_key: str, now: float) -> list[dict[str, Any]]:
        """The consumer's kept refusals, newest first, none older than the retention."""
        raws = self.redis.lrange(self.keys.failure_history(consumer_key), 0, self.history - 1)
        return self._fresh(raws, now)

    def _fresh(self, raws: Iterable[bytes | str], now: float) -> list[dict[str, Any]]:
        oldest = now - self.retention
        out = []
        for raw in raws:
            entry = _decode(raw)
            if entry is None:
                continue
            t = entry.get("time")
            if isinstance(t, int | float) and t >= oldest:
                out.append(entry)
        return out

    def hour_counts(self, consumer_key: str, hours: Sequence[int]) -> list[HourCounts]:
        """The consumer's counts for each of ``hours``, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(self.keys.failure_counts(hour, consumer_key))
        out = []
        for hour, raw in zip(hours, pipe.execute(), strict=True):
            accepted = 0
            refused: dict[str, int] = {}
            for name, value in raw.items():
                label = name.decode() if isinstance(name, bytes) else str(name)
                try:
                    n = int(value)
                except ValueError:
                    continue
                if label == ACCEPTED:
                    accepted = n
                else:
                    refused[label] = n
            out.append(HourCounts(hour, accepted, refused))
        return out

    def unknown_counts(self, hours: Sequence[int]) -> list[int]:
        """Refusals naming no registered consumer, for each of ``hours``."""
        if not hours:
            return []
        raws = self.redis.mget([self.keys.failure_unknown(h) for h in hours])
        return [int(r) if r is not None else 0 for r in raws]

    def find(self, request_id: str, consumer_keys: Iterable[str], now: float,
             batch: int = 50) -> tuple[str, dict[str, Any]] | None:
        """The newest kept refusal with ``request_id`` in the histories of
        ``consumer_keys`` (searched in that order, ``batch`` lists per round trip):
        (consumer key, entry), or None."""
        keys = list(consumer_keys)
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            pipe = self.redis.pipeline(transaction=False)
            for consumer_key in chunk:
                pipe.lrange(self.keys.failure_history(consumer_key), 0, self.history - 1)
            for consumer_key, raws in zip(chunk, pipe.execute(), strict=True):
                # A cheap test before decoding: the id is written as a JSON string.
                needle = json.dumps(request_id).encode()
                for entry in self._fresh((r for r in raws if needle in _as_bytes(r)), now):
                    if entry.get("requestId") == request_id:
                        return consumer_key, entry
        return None


def _as_bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode("utf-8")


# Every live counter, so a forked child starts with empty sums and no thread (a thread
# does not survive fork; sums the parent had are the parent's to write).
_COUNTERS: weakref.WeakSet[AcceptedCounter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for counter in list(_COUNTERS):
        counter._forget()


def _flush_at_exit() -> None:
    # A normal exit (a gunicorn worker's graceful stop) writes what is left; best effort.
    for counter in list(_COUNTERS):
        # The process is ending (Redis may be gone too): nothing left to tell anyone.
        with contextlib.suppress(Exception):
            counter.flush()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)


class AcceptedCounter:
    """Accepted requests per (consumer key, hour), summed in process memory and written
    by a background thread every ``interval`` seconds, so that counting costs an accepted
    request no Redis round trip (docs/design.md, "One round trip"). The thread starts
    with the first count and ends after an interval with nothing to write. Sums not yet
    written are lost when the process dies (at most one interval's worth; a normal exit
    writes them)."""

    def __init__(self, store: FailureStore, interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        _COUNTERS.add(self)

    def note(self, consumer_key: str, now: float) -> None:
        """Count one accepted request of a registered consumer at ``now``."""
        slot = (consumer_key, hour_of(now))
        with self._lock:
            n = self._pending.get(slot)
            if n is None and len(self._pending) >= MAX_PENDING:
                return
            self._pending[slot] = (n or 0) + 1
            if self._thread is None and not self._stop.is_set():
                self._start()

    def pending(self) -> dict[tuple[str, int], int]:
        """A copy of the sums not written yet."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        """Write the sums now; the number of requests written (0 when Redis refused:
        the sums are kept for the next try)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            self.store.add_accepted(pending)
        except redis.RedisError as exc:
            log.warning("accepted-request counts not written (Redis: %s); kept for the "
                        "next try", exc)
            with self._lock:
                for slot, n in pending.items():
                    if slot in self._pending or len(self._pending) < MAX_PENDING:
                        self._pending[slot] = self._pending.get(slot, 0) + n
            return 0
        return sum(pending.values())

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 5)
        self.flush()

    def _start(self) -> None:
        # Under self._lock.
        thread = threading.Thread(target=self._run, name="oauthledger-accepted-counts",
                                  daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            written = self.flush()
            with self._lock:
                if written == 0 and not self._pending:
                    self._thread = None  # idle: the next note() starts a new one
                    return
        with self._lock:
            self._thread = None

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pending = {}
        self._thread = None


def counted_hours(now: float, hours: int = 24) -> list[int]:
    """The ``hours`` hours up to and including the one ``now`` falls in, oldest first."""
    current = hour_of(now)
    return list(range(current - hours + 1, current + 1))

