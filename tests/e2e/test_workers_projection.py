"""Real Celery worker and beat processes (Redis broker) against real PostgreSQL and Redis:
kill -9 mid-batch, Redis flushed under the projection, purged broker queue, two workers
at once. In every case the read model ends equal to a fresh rebuild of the log."""

from __future__ import annotations

import threading
import time

import redis

from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending, snapshot
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import fold_stream, token_stream
from oauthledger.events.store import EventStore
from oauthledger.events.token_codec import redis_view
from tests.e2e.conftest import wait_for
from tests.integration.test_projection_support import assert_equals_fresh_rebuild, make_history


def caught_up(store: EventStore, rm: ReadModel) -> bool:
    return rm.checkpoint() == store.head()


def test_kill9_mid_batch_then_restart(pg_store, read_model, reference, procs, sender) -> None:
    project_pending(pg_store, read_model)  # checkpoint on the empty log
    h = make_history(pg_store, 2400, users=100, consumers=5, now=time.time(), chunk=500)
    head = pg_store.head()
    assert h.events == head >= 10_000
    worker = procs.worker("w1", concurrency=1)
    sender("oauthledger.project", batch_size=100)
    cp = wait_for(lambda: (read_model.checkpoint() or 0) > 0 and read_model.checkpoint(),
                  60, "the worker to start projecting")
    procs.kill9(worker)
    at_kill = read_model.checkpoint()
    assert cp <= at_kill < head, "the worker finished before it could be killed mid-batch"

    procs.worker("w2", concurrency=1)
    sender("oauthledger.project")  # the next commit's wake-up
    wait_for(lambda: caught_up(pg_store, read_model), 120, "the restarted worker to catch up")
    assert_equals_fresh_rebuild(pg_store, read_model, reference)

    # Applying events twice changes nothing: rewind the checkpoint and project again.
    ns = read_model.namespace()
    before = snapshot(read_model.redis, ns)
    read_model.redis.set(KeyLayout.checkpoint(ns), at_kill // 2)
    sender("oauthledger.project", batch_size=500)
    wait_for(lambda: caught_up(pg_store, read_model), 120, "the re-projection")
    assert snapshot(read_model.redis, ns) == before


def test_flushed_redis_rebuilds_by_itself(pg_store, read_model, reference, procs) -> None:
    h = make_history(pg_store, 600, users=30, now=time.time())
    procs.worker("w1", concurrency=2)
    procs.beat("beat")
    wait_for(lambda: caught_up(pg_store, read_model), 120, "the first projection")
    token = sorted(h.active)[0]
    expected = redis_view(fold_stream(pg_store.read_stream(token_stream(token))))
    wrong: list[object] = []
    seen = {"incomplete": 0, "complete": 0}
    stop = threading.Event()

    def reader() -> None:
        # Reads continue throughout: whenever Redis claims completeness, it must be right.
        while not stop.is_set():
            try:
                found = read_model.lookup(expected.consumer_key, token)
            except redis.RedisError as exc:  # pragma: no cover - reported below
                wrong.append(exc)
                continue
            if found.complete:
                seen["complete"] += 1
                if found.token != expected:
                    wrong.append(found)
            else:
                seen["incomplete"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        # FLUSHALL limited to this test's prefix: in one MULTI/EXEC, atomic like the
        # real command (deleting key by key would show readers a half-flushed keyspace
        # that no Redis failure produces).
        flush = read_model.redis.pipeline(transaction=True)
        for key in read_model.redis.scan_iter(read_model.keys.pattern(), count=1000):
            flush.delete(key)
        flush.execute()
        wait_for(lambda: caught_up(pg_store, read_model), 120,
                 "the projection to notice the flush and rebuild")
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert wrong == []
    assert seen["incomplete"] > 0 and seen["complete"] > 0
    assert_equals_fresh_rebuild(pg_store, read_model, reference)


def test_purged_queue_catch_up_closes_the_gap(
    pg_store, read_model, reference, procs, sender, broker_url
) -> None:
    project_pending(pg_store, read_model)
    make_history(pg_store, 300, now=time.time())
    for _ in range(3):
        sender("oauthledger.project")
    broker = redis.Redis.from_url(broker_url)
    assert broker.llen("celery") == 3
    broker.delete("celery")  # lost messages
    assert read_model.checkpoint() == 0
    procs.worker("w1")
    procs.beat("beat")
    wait_for(lambda: caught_up(pg_store, read_model), 60, "the catch-up task")
    assert "oauthledger.catch_up" in procs.log_text("w1")
    assert "oauthledger.project[" not in procs.log_text("w1")  # nothing else did it
    assert_equals_fresh_rebuild(pg_store, read_model, reference)


def test_two_workers_converge(pg_store, read_model, reference, procs, sender) -> None:
    project_pending(pg_store, read_model)
    procs.worker("w1", concurrency=2)
    procs.worker("w2", concurrency=2)
    for seed in range(6):
        make_history(pg_store, 150, users=20, consumers=3, now=time.time(), seed=seed,
                     chunk=20, register=seed == 0)
        for _ in range(4):
            sender("oauthledger.project", batch_size=50)
    wait_for(lambda: caught_up(pg_store, read_model), 120, "both workers to finish")
    for name in ("w1", "w2"):
        assert "oauthledger.project" in procs.log_text(name), f"{name} did no work"
    assert_equals_fresh_rebuild(pg_store, read_model, reference)
