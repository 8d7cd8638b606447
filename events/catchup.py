"""Projecting a range of the log into one namespace of the read model: the step the
projector (:func:`oauthledger.events.projection.project_pending`) repeats from a
namespace's checkpoint, and the rebuild (:mod:`oauthledger.events.rebuild`) runs to catch
up with what was committed while it replayed.

Idempotent and checkpointed (docs/design.md, "Idempotent projection"): every batch folds
the *full* streams it touches up to the batch's last position and writes them with the
version-guarded apply script, which raises the checkpoint in the same script. Any number
of projectors, in any order, with duplicated or lost wake-ups, converge on the same keys.
"""

from __future__ import annotations

from collections.abc import Callable

from oauthledger.events.readmodel import ReadModel, iter_states
from oauthledger.events.rebuild_lock import RebuildInterrupted
from oauthledger.events.state import State, fold_stream
from oauthledger.events.store import EventStore, RecordedEvent


def states_for_batch(store: EventStore, batch: list[RecordedEvent]) -> list[State]:
    """Fold every stream the batch touches, from its first event up to the batch's last
    position: a stream's state then never depends on what an earlier batch wrote.
    A stream whose first event (version 1) is in the batch is folded from the batch
    alone — the batch holds every position up to its last, so it holds the whole stream
    up to there; only streams that began earlier are loaded from the store."""
    last = batch[-1].position
    by_stream: dict[str, list[RecordedEvent]] = {}
    for rec in batch:
        by_stream.setdefault(rec.stream_id, []).append(rec)
    older = sorted(sid for sid, recs in by_stream.items() if recs[0].stream_version != 1)
    if older:
        for sid, records in store.read_streams(older).items():
            by_stream[sid] = [rec for rec in records if rec.position <= last]
    return iter_states([fold_stream(records) for records in by_stream.values()])


def project_into(
    store: EventStore, read_model: ReadModel, namespace: str, after: int,
    batch_size: int = 1000, until: int | None = None,
    on_batch: Callable[[], object] | None = None,
) -> tuple[int, int, int]:
    """Project events after position ``after`` (up to ``until``) into ``namespace``.

    Returns (events read, states applied, last position). Raises
    :class:`oauthledger.events.rebuild_lock.RebuildInterrupted` if the namespace stopped
    being live or building."""
    events = applied = 0
    position = after
    while until is None or position < until:
        limit = batch_size if until is None else min(batch_size, until - position)
        batch = list(store.read_all(position, limit=limit, batch_size=limit))
        if not batch:
            break
        n = read_model.apply(
            states_for_batch(store, batch), checkpoint=batch[-1].position,
            namespace=namespace,
        )
        if n < 0:
            raise RebuildInterrupted(f"namespace {namespace} was retired while projecting")
        events += len(batch)
        applied += n
        position = batch[-1].position
        if on_batch is not None:
            on_batch()
        if len(batch) < limit:
            break
    return events, applied, position
