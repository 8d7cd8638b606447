"""The expiry sweep: appends AccessTokenExpired / RequestTokenExpired for tokens past due.

docs/design.md, "Nothing scheduled days ahead": beat runs this sweep every
``sweep_interval`` instead. Tokens stop working at their second whatever the sweep does,
because every reader checks ``expires_at`` (:meth:`TokenState.usable_at`); the sweep only
records the fact in the log and reclaims the index entries.

Idempotent: candidates come from the read model's expiry index, are confirmed against
the store (the token stream is folded), and the Expired event is appended with
``expected_version`` = the folded version. Two overlapping sweeps therefore append each
Expired event exactly once; the loser gets :class:`ConcurrencyConflict` and moves on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from oauthledger.events import catalog as ev
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.metrics import metrics
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import TokenState, fold, fold_stream, token_stream
from oauthledger.events.store import EventStore

SWEEP_ACTOR = "system:expiry-sweep"


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    expired_access: int
    expired_request: int
    conflicts: int  # another sweep (or a revoke) got there first
    stale_index: int  # index entries for tokens already ended: republished

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Celery task results)."""
        return dict(self.__dict__)


def _expired_event(state: TokenState, now: float) -> ev.Event | None:
    if state.expires_at > now:
        return None
    if state.kind == "access" and state.status == "active":
        return ev.AccessTokenExpired(token=state.token)
    if state.kind == "request" and state.status in ("pending", "approved"):
        return ev.RequestTokenExpired(token=state.token)
    return None


def sweep_expired(
    store: EventStore, read_model: ReadModel, now: float | None = None, limit: int = 1000,
    max_rounds: int = 100,
) -> SweepResult:
    """Append the Expired events due at ``now`` and publish the new token states.

    Counted in the expiry-sweep metrics (docs/operations.md, "Metrics"), here where the
    Celery task and the embedded sweeper both pass: the tokens it expired, its duration,
    success or failure."""
    started = time.perf_counter()
    try:
        result = _sweep(store, read_model, time.time() if now is None else now, limit,
                        max_rounds)
    except BaseException as exc:
        metrics().sweep_failed(exc, time.perf_counter() - started)
        raise
    metrics().swept(result.expired_access + result.expired_request,
                    time.perf_counter() - started, time.time())
    return result


def _sweep(store: EventStore, read_model: ReadModel, now: float, limit: int,
           max_rounds: int) -> SweepResult:
    access = request = conflicts = stale = 0
    seen: set[str] = set()
    for _ in range(max_rounds):
        due_access, due_request = read_model.due_tokens(now, limit)
        candidates = [t for t in due_access + due_request if t not in seen]
        if not candidates:
            break
        seen.update(candidates)
        streams = store.read_streams([token_stream(t) for t in candidates])
        publish: list[Any] = []
        for token in candidates:
            records = streams[token_stream(token)]
            state = fold_stream(records)
            if state is None:  # not in the log: an index entry without truth behind it
                continue
            assert isinstance(state, TokenState)  # a token stream
            if state.expires_at > now:
                continue  # the index holds ms rounded up; a float edge: not due yet
            event = _expired_event(state, now)
            if event is None:
                stale += 1
                publish.append(state)  # drops the stale index entry (version-guarded)
                continue
            try:
                rows = store.append(
                    token_stream(token), state.version, [event],
                    {"actor": SWEEP_ACTOR, "request_id": f"sweep-{int(now)}"},
                )
            except ConcurrencyConflict:
                conflicts += 1
                fresh = fold_stream(store.read_stream(token_stream(token)))
                if fresh is not None:
                    publish.append(fresh)
                continue
            publish.append(fold(state, rows[0]))
            if state.kind == "access":
                access += 1
            else:
                request += 1
        if publish:
            read_model.publish_states(publish)
        if len(due_access) < limit and len(due_request) < limit:
            break
    return SweepResult(access, request, conflicts, stale)
