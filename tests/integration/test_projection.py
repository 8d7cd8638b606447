"""The projector against real Redis and both store backends: checkpointed, idempotent,
concurrent projectors converge, a missing checkpoint triggers one rebuild, a rebuild
switches namespaces atomically and its result equals the live projection."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from oauthledger.events import catalog as ev
from oauthledger.events.expiry_index import BUCKET_LOAD, bucket_layout, expiry_hours, expiry_ms
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import (
    project_coalesced,
    project_pending,
    snapshot,
    status,
)
from oauthledger.events.rebuild import _BULK_INDEX, index_calls, rebuild
from oauthledger.events.rebuild_lock import RebuildBusy
from oauthledger.events.state import TokenState, fold_stream, token_stream
from tests.integration.test_projection_support import assert_equals_fresh_rebuild, make_history


def test_project_pending_then_equals_rebuild(store, read_model, reference) -> None:
    now = time.time()
    h = make_history(store, 300, users=20, consumers=3, now=now)
    # A fresh namespace has no checkpoint: the first call rebuilds (never projects from 0).
    first = project_pending(store, read_model)
    assert first.rebuilt and first.checkpoint == h.events
    more = make_history(store, 100, users=5, consumers=1, now=now, seed=2, register=False)
    result = project_pending(store, read_model, batch_size=37)
    assert (result.start, result.checkpoint, result.events) == (
        h.events, h.events + more.events, more.events)
    assert result.applied > 0
    assert_equals_fresh_rebuild(store, read_model, reference)
    # Active tokens are usable from Redis, ended ones are not.
    token = next(iter(more.active))
    assert read_model.get("t", token).usable_at(now)
    # The expiry index holds exactly the active access tokens, at their expiry (ms, up).
    active = h.active | more.active
    want = sorted((t, expiry_ms(fold_stream(store.read_stream(token_stream(t))).expires_at))
                  for t in active)
    assert read_model.expiry_index() == want
    # No per-user token sets any more (the users' pages read the store).
    assert not list(read_model.redis.scan_iter(f"{read_model.namespace()}:ut:*"))


def test_projecting_twice_changes_nothing(store, read_model, reference) -> None:
    make_history(store, 200, now=time.time())
    project_pending(store, read_model)
    ns = read_model.namespace()
    before = snapshot(read_model.redis, ns)
    # Pretend the checkpoint was lost mid-way: every event is applied a second time.
    read_model.redis.set(KeyLayout.checkpoint(ns), 0)
    again = project_pending(store, read_model, batch_size=50)
    assert again.events == store.head() and again.applied == 0
    assert snapshot(read_model.redis, ns) == before
    assert_equals_fresh_rebuild(store, read_model, reference)


def test_concurrent_projectors_converge(store, read_model, reference) -> None:
    project_pending(store, read_model)  # establishes the checkpoint on an empty log
    stop = threading.Event()
    errors: list[BaseException] = []

    def projector(batch: int) -> None:
        try:
            while not stop.is_set():
                project_pending(store, read_model, batch_size=batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=projector, args=(b,)) for b in (7, 50, 333, 1000)]
    for t in threads:
        t.start()
    try:
        for seed in range(4):
            make_history(store, 100, users=10, consumers=2, now=time.time(), seed=seed,
                         chunk=13, register=seed == 0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors
    project_pending(store, read_model)
    assert_equals_fresh_rebuild(store, read_model, reference)


def test_missing_checkpoint_rebuilds_once(store, read_model, reference) -> None:
    make_history(store, 150, now=time.time())
    project_pending(store, read_model)
    old_ns = read_model.namespace()
    # Redis "flushed": every key of the prefix gone, then a front end writes a state.
    for key in read_model.redis.scan_iter(read_model.keys.pattern()):
        read_model.redis.delete(key)
    token = "fresh-" + uuid.uuid4().hex
    store.append(token_stream(token), 0, [ev.RequestTokenIssued(
        token=token, consumer_key="consumer-0", secret_sealed="x", callback="oob",
        expires_at=time.time() + 600)])
    read_model.publish_states([fold_stream(store.read_stream(token_stream(token)))])
    assert read_model.lookup("consumer-0", token).complete is False  # hot path -> store
    # While another process holds the rebuild lock, projectors wait for it.
    read_model.redis.set(read_model.keys.rebuild_lock, "someone", px=5000)
    busy = project_pending(store, read_model)
    assert busy.rebuild_running and busy.checkpoint is None
    with pytest.raises(RebuildBusy):
        rebuild(store, read_model)
    read_model.redis.delete(read_model.keys.rebuild_lock)
    result = project_pending(store, read_model)
    assert result.rebuilt and result.checkpoint == store.head()
    # The counter restarted with the flush, so the name may repeat; the content is new.
    assert read_model.namespace() == result.namespace and old_ns
    assert read_model.get("t", token).status == "pending"
    assert read_model.lookup("consumer-0", token).complete is True
    assert_equals_fresh_rebuild(store, read_model, reference)


def test_rebuild_switches_and_retires_the_old_namespace(store, read_model) -> None:
    make_history(store, 100, now=time.time())
    project_pending(store, read_model)
    old = read_model.namespace()
    result = rebuild(store, read_model)
    assert result.replaced == old and read_model.namespace() == result.namespace != old
    assert not list(read_model.redis.scan_iter(KeyLayout.namespace_pattern(old)))
    assert read_model.building_namespace() is None
    # A projector that still held the old namespace name cannot resurrect it.
    state = fold_stream(store.read_stream("consumer-consumer-0"))
    assert read_model.apply([state], checkpoint=1, namespace=old) == -1
    assert not list(read_model.redis.scan_iter(KeyLayout.namespace_pattern(old)))


def test_status_reports_lag(store, read_model) -> None:
    make_history(store, 20, now=time.time())
    project_pending(store, read_model)
    st = status(store, read_model)
    assert (st.lag_events, st.checkpoint, st.head) == (0, store.head(), store.head())
    rows = store.append(token_stream("late"), 0, [ev.RequestTokenIssued(
        token="late", consumer_key="consumer-0", secret_sealed="x", callback="oob",
        expires_at=time.time() + 600)])
    st = status(store, read_model, now=rows[0].time + 2.5)
    assert st.lag_events == 1 and st.lag_seconds == pytest.approx(2.5)


def test_coalesced_wake_ups(store, read_model) -> None:
    """A wake-up that finds a projector looping only flags more work (and, once, asks for
    a re-check in case that projector died); the holder loops until no flag is left."""
    make_history(store, 30, now=time.time())
    project_pending(store, read_model)
    keys = read_model.keys
    read_model.redis.set(keys.projector_lock, "someone-else", px=5000)
    busy = project_coalesced(store, read_model)
    assert not busy.ran and busy.recheck_ms is not None and 0 < busy.recheck_ms <= 5000
    assert read_model.redis.exists(keys.projector_pending)
    again = project_coalesced(store, read_model)
    assert not again.ran and again.recheck_ms is None  # one re-check is scheduled already
    read_model.redis.delete(keys.projector_lock)  # "the holder died"
    more = make_history(store, 20, now=time.time(), seed=3, register=False)
    done = project_coalesced(store, read_model)
    # The flag left by the busy wake-ups makes the new holder run a second round.
    assert done.ran and done.rounds == 2 and done.events == more.events
    assert done.checkpoint == read_model.checkpoint() == store.head()
    assert not read_model.redis.exists(keys.projector_lock, keys.projector_pending)


def _access(token: str, expires_at: float, status: str = "active", version: int = 1):
    return TokenState(token=token, kind="access", consumer_key="c", secret_sealed="x",
                      status=status, expires_at=expires_at, issued_at=expires_at - 60,
                      user="u", version=version)


def test_bulk_expiry_index_agrees_with_incremental_writes(read_model) -> None:
    """The rebuild lays out an hour's expiry buckets at once; tokens a front end indexed
    into the same hour meanwhile are merged, and every token can be removed again by
    the incremental script (same bucket addresses)."""
    client = read_model.redis
    ns = read_model.keys.namespace(1)
    client.set(read_model.keys.building, ns)
    hour_start = (int(time.time() // 3600) + 5) * 3600.0
    # Seeded, not uuid4: how many tokens share a bucket is up to their hashes, and
    # 2 x BUCKET_LOAD below is the usual bound of linear hashing, not a hard one (an
    # unsplit bucket covers twice the hash range of a split one): random tokens broke
    # it in about one run in fifteen. The hard bound is the listpack encoding above it.
    rng = random.Random(20261204)

    def tail() -> str:
        return f"{rng.getrandbits(80):020x}"

    early = [_access(f"fe{i:03d}-{tail()}", hour_start + i) for i in range(30)]
    assert read_model.apply(early, namespace=ns) == 30  # a front end, during the rebuild
    bulk = client.register_script(_BULK_INDEX)
    keys = [read_model.keys.active, read_model.keys.building]
    hour = int(hour_start // 3600)
    other_hour = [_access(f"bk{i:04d}-{tail()}", hour_start + 3600 + i * 0.5)
                  for i in range(500)]
    same_hour = [_access(f"bs{i:03d}-{tail()}", hour_start + 30 + i)
                 for i in range(100)]

    def calls(states, chunk):
        hours = expiry_hours((s.token, s.expires_at) for s in states)
        return [args for _, _, args in index_calls(ns, hours, chunk)]

    # The same hour as the front end's tokens: laid out differently, so the script
    # adds them one by one (incremental splits) instead.
    assert [bulk(keys=keys, args=args) for args in calls(same_hour, 100)] == [1]
    assert bucket_layout(len(other_hour)) == (3, 5)  # 13 buckets of at most 40
    other = calls(other_hour, 200)
    assert [args[1:5] for args in other] == [[hour + 1, 3, 5, "new"]] + [
        [hour + 1, 3, 5, "add"]] * (len(other) - 1)
    assert [bulk(keys=keys, args=args) for args in other] == [0] * len(other)
    everything = early + same_hour + other_hour
    assert read_model.expiry_index(ns) == sorted(
        (s.token, expiry_ms(s.expires_at)) for s in everything)
    buckets = list(client.scan_iter(KeyLayout.expiry_bucket_prefix(ns) + "*"))
    assert {client.object("encoding", b) for b in buckets} == {b"listpack"}
    assert max(client.zcard(b) for b in buckets) <= 2 * BUCKET_LOAD
    revoked = [_access(s.token, s.expires_at, "revoked", 2) for s in everything]
    assert read_model.apply(revoked, namespace=ns) == len(everything)
    assert read_model.expiry_index(ns) == []
    assert not client.exists(KeyLayout.expiry(ns))
