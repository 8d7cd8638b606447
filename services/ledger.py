"""Loading entity state from the log and committing new events.

Every application service goes through :class:`Ledger`: it loads the streams it decides
on from the store (strongly consistent, docs/design.md, "What Redis holds"), appends with
the version it read (optimistic concurrency; "No silent overwrite"), then — before the HTTP
response acknowledges anything — writes each changed entity's new state into Redis,
version-guarded ("Read your writes"), and finally wakes the projector so the checkpoint catches up.

A commit that reached the log stands even when Redis cannot be told: the projection
catches up from the log (docs/read-model.md, "Consistency rules as implemented"), so
the failure is logged and recorded as a :class:`PublishDeferred` for the front end to
show as a warning (:func:`watch_publishes`), never raised as an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events.catalog import Event
from oauthledger.events.metrics import metrics
from oauthledger.events.readmodel import ReadModel, iter_states
from oauthledger.events.state import State, fold, fold_stream
from oauthledger.events.store import EventStore, StreamWrite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishDeferred:
    """A commit that is in the log while Redis could not be told of it: the change
    stands, and the read model shows it once the projector catches up from the log."""

    position: int  # the last log position the commit wrote
    reason: str  # what the Redis client said

    def warning(self) -> str:
        """One line for a person: what happened and that nothing needs redoing."""
        return (f"the change is recorded in the event log (position {self.position}), but "
                f"the read model (Redis) could not be updated now ({self.reason}); it "
                "catches up from the log once Redis is reachable")


# The deferred publishes of the current front-end call (one CLI command, one HTTP
# request). A ContextVar, not a Ledger field: one Ledger serves every thread of a
# front end, and each caller must see only its own commits.
_WATCHING: ContextVar[list[PublishDeferred] | None] = ContextVar(
    "oauthledger_deferred_publishes", default=None)


@contextmanager
def watch_publishes() -> Iterator[list[PublishDeferred]]:
    """Collect the commits made inside the block whose new states could not be written
    to Redis, for the caller to report as a warning. Nested blocks also pass theirs to
    the enclosing one."""
    collected: list[PublishDeferred] = []
    token = _WATCHING.set(collected)
    try:
        yield collected
    finally:
        _WATCHING.reset(token)
        outer = _WATCHING.get()
        if outer is not None:
            outer.extend(collected)


@dataclass(frozen=True)
class Change:
    """Events for one stream, decided on the state loaded at ``version``."""

    stream_id: str
    version: int
    state: State | None  # None: the stream is new (version 0)
    events: Sequence[Event]


@dataclass
class Ledger:
    """The write side: store + read model + a callable that wakes the projector."""

    store: EventStore
    read_model: ReadModel
    wake: Callable[[], None]
    clock: Callable[[], float] = time.time

    def load(self, stream_id: str) -> tuple[State | None, int]:
        """(state, version) of a stream folded from the store; (None, 0) if it is empty."""
        records = self.store.read_stream(stream_id)
        if not records:
            return None, 0
        return fold_stream(records), records[-1].stream_version

    def load_many(self, stream_ids: Sequence[str]) -> dict[str, tuple[State | None, int]]:
        """Several streams in one query."""
        out: dict[str, tuple[State | None, int]] = {}
        for sid, records in self.store.read_streams(stream_ids).items():
            out[sid] = (fold_stream(records), records[-1].stream_version) if records else (None, 0)
        return out

    def commit(self, changes: Sequence[Change], meta: Mapping[str, Any]) -> dict[str, Any]:
        """Append all changes atomically, publish the new states, wake the projector.

        Returns the new state of each changed stream. Raises ConcurrencyConflict if any
        stream moved on since it was loaded (nothing is written then). Once the append
        succeeded the commit succeeds: if Redis cannot be told, that is logged and
        recorded for :func:`watch_publishes`, and the new states are returned anyway."""
        records = self.store.append_many(
            [StreamWrite(c.stream_id, c.version, c.events) for c in changes], meta
        )
        states = {c.stream_id: c.state for c in changes}
        for rec in records:
            states[rec.stream_id] = fold(states[rec.stream_id], rec)
        try:
            self.read_model.publish_states(iter_states(states.values()))
        except redis.RedisError as exc:
            # docs/design.md, "The log is the truth": the change is made once it is in the
            # log. Failing the call now would hide a commit from its caller (a generated
            # secret nobody saw, a retry that conflicts with itself); the projector brings
            # Redis up to date from the log instead (docs/read-model.md).
            deferred = PublishDeferred(records[-1].position if records else 0, str(exc))
            metrics().dependency_error("redis", "publish")
            log.warning("%s", deferred.warning())
            watching = _WATCHING.get()
            if watching is not None:
                watching.append(deferred)
        self._wake_quietly()
        return states

    def _wake_quietly(self) -> None:
        # A lost wake-up only delays projection: the catch-up task closes the gap
        # (docs/design.md, "Idempotent projection").
        try:
            self.wake()
        except Exception as exc:  # noqa: BLE001 - the broker being down must not fail a commit
            metrics().dependency_error("broker", "wake")
            log.warning("could not wake the projector: %s", exc)
