"""Loading entity state from the log and committing new events.

Every application service goes through :class:`Ledger`: it loads the streams it decides
on from the store (strongly consistent, docs/design.md, "What Redis holds"), appends with
the version it read (optimistic concurrency; "No silent overwrite"), then — before the HTTP
response acknowledges anything — writes each changed entity's new state into Redis,
version-guarded ("Read your writes"), and finally wakes the projector so the checkpoint catches up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events.catalog import Event
from oauthledger.events.readmodel import ReadModel, iter_states
from oauthledger.events.state import State, fold, fold_stream
from oauthledger.events.store import EventStore, StreamWrite

log = logging.getLogger(__name__)


class ReadModelUnavailable(Exception):
    """The change committed, but Redis could not be told; it takes effect once the
    projector reaches Redis again. Rendered as 503 naming Redis."""


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
        stream moved on since it was loaded (nothing is written then)."""
        records = self.store.append_many(
            [StreamWrite(c.stream_id, c.version, c.events) for c in changes], meta
        )
        states = {c.stream_id: c.state for c in changes}
        for rec in records:
            states[rec.stream_id] = fold(states[rec.stream_id], rec)
        try:
            self.read_model.publish_states(iter_states(states.values()))
        except redis.RedisError as exc:
            log.warning("committed up to %s but Redis is unavailable: %s",
                        records[-1].position if records else "-", exc)
            self._wake_quietly()
            raise ReadModelUnavailable(str(exc)) from None
        self._wake_quietly()
        return states

    def _wake_quietly(self) -> None:
        # A lost wake-up only delays projection: the catch-up task closes the gap
        # (docs/design.md, "Idempotent projection").
        try:
            self.wake()
        except Exception as exc:  # noqa: BLE001 - the broker being down must not fail a commit
            log.warning("could not wake the projector: %s", exc)
