"""The token lifecycle table (events/token_lifecycle.py) covers every token event type of
the catalog, and the fast replays built from it — the audit's FastReplay and the
rebuild's RowReplay — fold every one of them exactly as events.state.fold does.

The set of token event types is derived from the catalog (every event type with a
``token`` field: those are the events appended to ``token-<token>`` streams), never
listed by hand: adding a token event type to the catalog without its transition fails
here."""

from __future__ import annotations

import collections
import dataclasses
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthledger.events.audit import FastReplay
from oauthledger.events.catalog import EVENT_TYPES, Event
from oauthledger.events.chain import canonical_json
from oauthledger.events.rebuild import RowReplay
from oauthledger.events.state import Replay, TokenState, token_stream
from oauthledger.events.store import RecordedEvent
from oauthledger.events.token_codec import redis_view
from oauthledger.events.token_lifecycle import BY_EVENT, BY_NAME, TRANSITIONS, Transition

TOKEN_EVENT_TYPES = sorted(
    name for name, cls in EVENT_TYPES.items()
    if "token" in {f.name for f in dataclasses.fields(cls)}
)


def test_the_catalog_has_token_events() -> None:
    """The derivation above finds the token events (guards against a vacuous set)."""
    assert {"RequestTokenIssued", "AccessTokenIssued", "AccessTokenRevoked"} <= set(
        TOKEN_EVENT_TYPES)


def test_every_token_event_type_has_one_transition() -> None:
    assert sorted(BY_NAME) == TOKEN_EVENT_TYPES
    assert len(TRANSITIONS) == len(BY_NAME) == len(BY_EVENT)
    assert all(EVENT_TYPES[t.name] is t.event for t in TRANSITIONS)


@pytest.mark.parametrize("name", TOKEN_EVENT_TYPES)
def test_transition_fields_exist(name: str) -> None:
    """What a transition sets is a token state field, taken from an event field."""
    t = BY_NAME[name]
    state_fields = {f.name for f in dataclasses.fields(TokenState)}
    event_fields = {f.name for f in dataclasses.fields(t.event)}
    for target, source in t.sets:
        assert target in state_fields - {"kind", "status", "issued_at", "version"}, target
        assert source in event_fields, source
    if t.opens:  # an opening event gives every state field that has no default
        required = {f.name for f in dataclasses.fields(TokenState)
                    if f.default is dataclasses.MISSING}
        assert required - {"kind", "status", "issued_at"} <= {n for n, _ in t.sets}


def _path(t: Transition) -> list[Transition]:
    """The shortest chain of transitions from an opening event of ``t``'s kind to a
    status ``t`` requires, then ``t``."""
    if t.opens:
        return [t]
    todo = collections.deque((o.status, [o]) for o in TRANSITIONS
                             if o.opens and o.kind == t.kind)
    seen: set[str] = set()
    while todo:
        status, path = todo.popleft()
        if status in t.requires:
            return [*path, t]
        if status in seen:
            continue
        seen.add(status)
        todo.extend((n.status, [*path, n]) for n in TRANSITIONS
                    if not n.opens and n.kind == t.kind and status in n.requires)
    raise AssertionError(f"{t.name}: no status it requires is reachable")


@pytest.mark.parametrize("name", TOKEN_EVENT_TYPES)
def test_every_transition_is_reachable(name: str) -> None:
    path = _path(BY_NAME[name])
    assert path[0].opens and path[-1] is BY_NAME[name]
    assert all(prev.status in nxt.requires for prev, nxt in zip(path, path[1:], strict=False))


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
_SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    str: _TEXT, float: _FLOAT, int: st.integers(-(2**53), 2**53), bool: st.booleans(),
    str | None: st.none() | _TEXT, float | None: st.none() | _FLOAT,
}


def _events(cls: type[Event], token: str) -> st.SearchStrategy[Event]:
    """Events of ``cls`` for the token ``token``, every other field drawn by its type
    (an unknown field type fails: extend ``_SCALARS``)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _SCALARS[hints[f.name]] for f in dataclasses.fields(cls)
              if f.name != "token"}
    return st.builds(cls, token=st.just(token), **fields)


@st.composite
def _history(draw: st.DrawFn, name: str) -> list[RecordedEvent]:
    """A token stream leading to an event of type ``name``, as stored rows."""
    token = draw(_TEXT.filter(bool))
    times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=st.just(UTC))
    records = []
    for version, t in enumerate(_path(BY_NAME[name]), start=1):
        event = draw(_events(t.event, token))
        meta = canonical_json({"actor": "a", "time": draw(times).isoformat()})
        records.append(RecordedEvent(version, token_stream(token), version, t.name,
                                     t.event.SCHEMA_VERSION, canonical_json(event.to_data()),
                                     meta, "0" * 64))
    return records


@pytest.mark.parametrize("name", TOKEN_EVENT_TYPES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fast_replays_equal_the_reference_fold(name: str, data: st.DataObject) -> None:
    """For every token event type: the reference fold (events.state.fold), the audit's
    FastReplay and the rebuild's RowReplay give the same state, each fast replay on its
    fast path (not by handing the rows to the reference fold)."""
    records = data.draw(_history(name))
    sid = records[0].stream_id
    reference = Replay()
    audit = FastReplay()
    for rec in records:
        reference.apply(rec)
        audit.apply(rec)
    want = reference.states[sid]
    assert isinstance(want, TokenState) and want.status == BY_NAME[name].status
    assert type(audit.states[sid]) is dict  # folded on the fast path
    assert audit.final_states() == [want]

    rows = RowReplay()
    rows.feed([(r.position, r.stream_id, r.stream_version, r.type, r.schema_version, r.data,
                r.metadata) for r in records])
    assert sid in rows.tokens and not rows.slow and not rows.others  # the fast path
    assert rows.states() == [redis_view(want)]
    assert rows.count == rows.position == len(records)
