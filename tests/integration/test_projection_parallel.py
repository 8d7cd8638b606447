"""The parallel rebuild (events/rebuild.py, events/rebuild_workers.py) against real Redis
and both store backends: the same read model as a one-process rebuild, whatever the
number of workers and however streams cross the ranges; a worker's failure surfaces as
the same error, every worker is stopped, nothing is switched; works inside a daemonic
process (a Celery prefork child); falls back to one process where workers cannot be
forked (the embedded in-process Redis)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from oauthledger.events import catalog as ev
from oauthledger.events.errors import StoreUnavailable
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import compare, snapshot
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.rebuild import rebuild, worker_count
from oauthledger.events.rebuild_lock import RebuildInterrupted
from oauthledger.events.rebuild_workers import RebuildWorkerDied, Workers, pack_error, unpack_error
from oauthledger.events.state import consumer_stream, token_stream, user_stream
from oauthledger.events.store import EventStore
from tests.conftest import REDIS_URL
from tests.integration.test_projection_support import make_history


def _layout() -> KeyLayout:
    return KeyLayout("oltest-par-" + uuid.uuid4().hex[:8])


@pytest.fixture
def layouts(redis_client: redis.Redis) -> Iterator[list[KeyLayout]]:
    """Key prefixes for several read models; their keys are deleted afterwards."""
    made: list[KeyLayout] = []
    yield made
    for layout in made:
        for key in redis_client.scan_iter(layout.pattern(), count=1000):
            redis_client.delete(key)


def _read_model(client: redis.Redis, layouts: list[KeyLayout]) -> ReadModel:
    layouts.append(_layout())
    return ReadModel(client, layouts[-1])


def _children() -> set[int]:
    """Child processes of this one, running or not yet reaped (Linux /proc)."""
    me = str(os.getpid())
    out = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue  # ended meanwhile
        if fields.get("PPid", "").strip() == me:
            out.add(int(status.parent.name))
    return out


@pytest.fixture
def no_workers_left() -> Iterator[None]:
    """The test leaves no rebuild worker behind (running or unreaped)."""
    before = _children()
    yield
    assert _children() <= before


def _crossing_history(store: EventStore) -> None:
    """Streams that cross every range boundary: tokens issued in the first part of the
    log and revoked, renewed or approved in the last; a user disabled and a consumer
    updated at the very end (rows the later ranges forward to earlier ones)."""
    now = time.time()
    h = make_history(store, 300, users=30, consumers=3, now=now, chunk=11)
    more = make_history(store, 200, users=30, consumers=3, now=now, seed=2, chunk=5,
                        register=False)
    pending = token_stream("late-request")
    store.append(pending, 0, [ev.RequestTokenIssued(
        token="late-request", consumer_key="consumer-0", secret_sealed="x",
        callback="oob", expires_at=now + 600)])
    for i, token in enumerate(sorted(h.active)[:40]):
        if i % 2:
            store.append(token_stream(token), 1, [ev.AccessTokenRevoked(token=token,
                                                                        by="admin")])
        else:
            store.append(token_stream(token), 1, [ev.AccessTokenRenewed(
                token=token, new_token=f"renewed-{i}")])
    for token in sorted(more.active)[:10]:
        store.append(token_stream(token), 1, [ev.AccessTokenExpired(token=token)])
    store.append(pending, 1, [ev.TokenApproved(token="late-request", user="user3",
                                               verifier_sealed="v")])
    store.append(user_stream("user1"), 1, [ev.UserDisabled(name="user1")])
    store.append(consumer_stream("consumer-2"), 1, [ev.ConsumerUpdated(
        key="consumer-2", changes={"name": "Renamed"})])


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_rebuild_equals_one_process(store, redis_client, layouts, workers,
                                             no_workers_left) -> None:
    _crossing_history(store)
    one = _read_model(redis_client, layouts)
    many = _read_model(redis_client, layouts)
    single = rebuild(store, one, workers=1)
    parallel = rebuild(store, many, workers=workers)
    assert (single.workers, parallel.workers) == (1, workers)
    assert parallel.events == single.events == store.head() == parallel.checkpoint
    assert parallel.entities == single.entities
    diffs = compare(one, one.namespace(), many.namespace())
    assert diffs == [], diffs[:5]
    content = snapshot(redis_client, many.namespace())
    assert len(content["expiry"]) > 100 and "u:user1" in content
    assert many.get("u", "user1").disabled and many.get("c", "consumer-2").name == "Renamed"
    assert many.get("t", "late-request").status == "approved"
    # Token keys carry the same expiry in the parallel path (docs/read-model.md, "Token
    # keys and their expiry"): none while an access token is active (the expiry index
    # lists it), expiry + grace once it has ended.
    token = content["expiry"][0][0]
    assert redis_client.ttl(KeyLayout.entity(many.namespace(), "t", token)) == -1
    tokens = [many.get("t", rel[2:]) for rel in content if rel.startswith("t:")]
    ended = [t.token for t in tokens if t.kind == "access" and t.status != "active"]
    assert len(ended) >= 50  # revoked, renewed, expired
    for name in [*ended[:20], "late-request"]:
        assert redis_client.ttl(KeyLayout.entity(many.namespace(), "t", name)) > 0, name


def test_progress_is_reported_across_workers(store, redis_client, layouts) -> None:
    make_history(store, 400, users=20, consumers=2, now=time.time(), chunk=17)
    seen: dict[str, list[tuple[int, int]]] = {}
    result = rebuild(store, _read_model(redis_client, layouts), workers=2,
                     progress=lambda phase, done, total: seen.setdefault(phase, []).append(
                         (done, total)))
    assert seen["replay"][-1] == (result.events, store.head())
    assert seen["write"][-1] == (result.entities, result.entities)


def test_a_broken_stream_in_a_worker_fails_like_one_process(store, redis_client, layouts,
                                                              no_workers_left) -> None:
    """A stream whose first event is not its first state (the reference fold cannot
    fold it) at the end of the log, i.e. in the last worker's range: the rebuild raises
    the reference fold's error, stops its workers and switches nothing."""
    make_history(store, 200, users=10, consumers=2, now=time.time(), chunk=13)
    store.append(token_stream("orphan"), 0, [ev.AccessTokenRevoked(token="orphan",
                                                                   by="x")])
    expected = _rebuild_error(store, redis_client, layouts, workers=1)
    rm = _read_model(redis_client, layouts)
    with pytest.raises(type(expected)) as got:
        rebuild(store, rm, workers=3)
    assert str(got.value) == str(expected)
    assert any("rebuild worker process" in note for note in got.value.__notes__)
    assert rm.checkpoint() is None and not redis_client.exists(rm.keys.active)
    assert not redis_client.exists(rm.keys.rebuild_lock)


def _rebuild_error(store: EventStore, client: redis.Redis, layouts: list[KeyLayout],
                   workers: int) -> BaseException:
    with pytest.raises(Exception) as err:
        rebuild(store, _read_model(client, layouts), workers=workers)
    return err.value


def test_namespace_taken_away_mid_rebuild(store, redis_client, layouts, no_workers_left) -> None:
    """Another rebuild or a flush takes the building namespace while the workers write:
    RebuildInterrupted, and the live pointer is never switched to it."""
    make_history(store, 600, users=10, consumers=2, now=time.time(), chunk=50)
    rm = _read_model(redis_client, layouts)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "replay":
            redis_client.set(rm.keys.building, "someone-else")

    with pytest.raises(RebuildInterrupted):
        rebuild(store, rm, progress=progress, workers=2)
    assert not redis_client.exists(rm.keys.active)
    assert redis_client.get(rm.keys.building) == b"someone-else"


# -- the worker plumbing, with real processes -------------------------------------------------


def _run_workers(run) -> Workers:
    pool = Workers(2)
    pool.start(run)
    return pool


def _raise_from_worker(run) -> BaseException:
    pool = _run_workers(run)
    try:
        with pytest.raises(BaseException) as err:
            pool.workers[0].wait("done", lambda: None)
        return err.value
    finally:
        pool.stop()


def test_worker_errors_arrive_as_the_same_exception() -> None:
    def store_down(ctx) -> None:
        raise StoreUnavailable("postgresql://db/x", "connection refused")

    err = _raise_from_worker(store_down)
    assert type(err) is StoreUnavailable and err.url == "postgresql://db/x"
    assert str(err) == "event store at postgresql://db/x is unavailable: connection refused"

    def interrupted(ctx) -> None:
        raise RebuildInterrupted("the namespace being built was taken away")

    err = _raise_from_worker(interrupted)
    assert type(err) is RebuildInterrupted and "taken away" in str(err)


def test_a_worker_that_dies_is_reported() -> None:
    def killed(ctx) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    err = _raise_from_worker(killed)
    assert type(err) is RebuildWorkerDied and "killed by signal 9" in str(err)


def test_unpicklable_errors_keep_their_text() -> None:
    class Local(Exception):
        pass

    err = unpack_error(pack_error(Local("odd")))
    assert type(err) is RuntimeError and str(err) == "Local: odd"


# -- where it runs -----------------------------------------------------------------------------


def _rebuild_in_daemon(url: str, prefix: str, out: multiprocessing.Queue) -> None:
    try:
        store = EventStore.from_url(url)
        result = rebuild(store, ReadModel(redis.Redis.from_url(REDIS_URL), KeyLayout(prefix)),
                         workers=2)
        out.put((result.workers, result.events))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out.put(repr(exc))


def test_rebuild_inside_a_daemonic_process(store, store_url, redis_client, layouts) -> None:
    """Celery's prefork children are daemonic: multiprocessing would refuse to give them
    children; the rebuild's forked workers still run."""
    make_history(store, 150, users=10, consumers=2, now=time.time())
    layouts.append(_layout())
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_rebuild_in_daemon, args=(store_url, layouts[-1].prefix, out),
                       daemon=True)
    proc.start()
    got = out.get(timeout=120)
    proc.join(30)
    assert got == (2, store.head())
    reference = _read_model(redis_client, layouts)
    rebuild(store, reference, workers=1)
    rm = ReadModel(redis_client, layouts[-2])
    assert compare(rm, rm.namespace(), reference.namespace()) == []


def test_embedded_redis_rebuilds_in_one_process(store) -> None:
    """fakeredis lives in this process's memory: a forked worker could not reach it."""
    make_history(store, 60, users=5, consumers=2, now=time.time())
    rm = ReadModel(fakeredis.FakeRedis(server=fakeredis.FakeServer()), KeyLayout())
    assert worker_count(2, store.head(), store, rm.redis) == 1
    result = rebuild(store, rm, workers=2)
    assert result.workers == 1 and rm.checkpoint() == store.head()


def test_default_worker_count(store, redis_client) -> None:
    assert worker_count(None, 1000, store, redis_client) == 1  # small log: one process
    assert worker_count(None, 10**6, store, redis_client) == min(os.cpu_count() or 1, 4)
    assert worker_count(3, 10**6, store, redis_client) == 3
