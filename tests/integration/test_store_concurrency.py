"""Concurrent writers and a live follower, on SQLite and PostgreSQL.

docs/design.md, "No silent overwrite": a stale writer gets a conflict, never a silent
overwrite; and commit order equals position order, so a follower that reads
``position > checkpoint`` never skips an event whose transaction committed late.

How these tests are known to be able to fail:
- Without the append serialization (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``)
  the writers of :func:`test_follower_sees_every_event_once_in_order` collide: on
  PostgreSQL two appenders compute the same next position and one dies on the primary
  key, on SQLite a deferred transaction cannot upgrade to a writer (``database is
  locked``). Either is a writer error the test reports.
- An appender that takes positions from a sequence without the lock (the usual
  "BIGSERIAL" design) loses events for a follower when an earlier position commits after
  a later one: :func:`test_unserialized_sequence_appender_loses_events` replays that
  interleaving deterministically and shows the same follower check catching the loss.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from oauthledger.events.catalog import AccessTokenRevoked
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.migrate import upgrade
from oauthledger.events.store import EventStore, StreamWrite
from oauthledger.events.store_postgres import APPEND_LOCK_CLASS

pytestmark = pytest.mark.timeout(180)

# What oauthledger_append (migration 0002) runs first: holding it stalls every append.
PG_APPEND_LOCK_SQL = (
    f"SELECT pg_advisory_xact_lock({APPEND_LOCK_CLASS}, 'events'::regclass::oid::int4)"
)

JOIN_TIMEOUT = 120.0  # seconds; a hung thread fails the test instead of hanging the run


def revoked(n: int, by: str) -> AccessTokenRevoked:
    """A small event whose payload identifies its writer."""
    return AccessTokenRevoked(token=f"tok-{n}", by=by)


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Run each target in its own thread; return the exceptions they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                with lock:
                    errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"
    return errors


# -- one stream, twenty writers ---------------------------------------------------------


def test_twenty_writers_same_expected_version_exactly_one_wins(store: EventStore) -> None:
    n = 20
    store.append("token-hot", 0, [revoked(0, by="setup")])
    barrier = threading.Barrier(n)
    outcomes: dict[int, object] = {}

    def writer(i: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait(timeout=30)
            try:
                outcomes[i] = store.append(
                    "token-hot", 1, [revoked(i, by=f"w{i}"), revoked(100 + i, by=f"w{i}")]
                )
            except ConcurrencyConflict as exc:
                outcomes[i] = exc

        return run

    assert run_threads([writer(i) for i in range(n)]) == []
    winners = [i for i, o in outcomes.items() if isinstance(o, list)]
    losers = [o for o in outcomes.values() if isinstance(o, ConcurrencyConflict)]
    assert len(outcomes) == n
    assert len(winners) == 1
    assert len(losers) == n - 1
    assert all(c.expected == 1 and c.actual == 3 for c in losers)
    rows = store.read_stream("token-hot")
    assert [r.event.by for r in rows] == ["setup", f"w{winners[0]}", f"w{winners[0]}"]
    assert store.head() == 3

    # Every loser now retries from the version it reloads, until it wins: no write is
    # lost or duplicated and each writer's two events stay adjacent (one transaction).
    def retrier(i: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(500):
                version = store.stream_version("token-hot")
                try:
                    store.append(
                        "token-hot", version, [revoked(i, by=f"w{i}"), revoked(100 + i, by=f"w{i}")]
                    )
                    return
                except ConcurrencyConflict:
                    continue
            raise AssertionError(f"writer {i} never got through")

        return run

    assert run_threads([retrier(i) for i in range(n) if i not in winners]) == []
    rows = store.read_stream("token-hot")
    assert [r.stream_version for r in rows] == list(range(1, 2 * n + 2))
    assert [r.position for r in rows] == list(range(1, 2 * n + 2))
    writers = [r.event.by for r in rows[1:]]
    assert sorted(writers) == sorted(f"w{i}" for i in range(n) for _ in range(2))
    assert all(writers[k] == writers[k + 1] for k in range(0, len(writers), 2))
    result = store.verify()
    assert result.ok and result.count == 2 * n + 1


# -- many streams, one follower -----------------------------------------------------------


def follow(store: EventStore, writers_done: threading.Event, seen: list[tuple[int, str, int]]):
    """The follower loop a projector runs: read after the checkpoint, advance it to the
    last position read. Stops once the writers are done and a read comes back empty."""

    def run() -> None:
        checkpoint = 0
        while True:
            done = writers_done.is_set()  # read before the query: the last read is complete
            rows = list(store.read_all(after_position=checkpoint, batch_size=7))
            for r in rows:
                seen.append((r.position, r.stream_id, r.stream_version))
                checkpoint = r.position
            if done and not rows:
                return

    return run


def check_follower(seen: list[tuple[int, str, int]], written: set[tuple[int, str, int]]) -> None:
    """Every written event seen exactly once, in strictly increasing position order."""
    positions = [p for p, _, _ in seen]
    assert positions == sorted(set(positions)), "follower saw an event twice or out of order"
    missing = sorted(written - set(seen))
    assert not missing, f"follower never saw {len(missing)} events, first {missing[:3]}"
    assert set(seen) == written


def test_follower_sees_every_event_once_in_order(store: EventStore) -> None:
    writers, appends_each = 5, 40
    writers_done = threading.Event()
    seen: list[tuple[int, str, int]] = []
    written: set[tuple[int, str, int]] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(w)
            versions = {f"token-w{w}-a": 0, f"token-w{w}-b": 0}
            barrier.wait(timeout=30)
            for i in range(appends_each):
                if rnd.random() < 0.3:
                    # A transaction over two streams (expected versions are exact: any
                    # conflict here would be a store bug, and fails the test).
                    rows = store.append_many(
                        [StreamWrite(s, v, [revoked(i, by=s)]) for s, v in versions.items()]
                    )
                else:
                    s = rnd.choice(sorted(versions))
                    k = rnd.randint(1, 3)
                    rows = store.append(s, versions[s], [revoked(i, by=s)] * k)
                for r in rows:
                    versions[r.stream_id] = r.stream_version
                with lock:
                    written.update((r.position, r.stream_id, r.stream_version) for r in rows)

        return run

    follower_errors: list[BaseException] = []

    def guarded() -> None:
        try:
            follow(store, writers_done, seen)()
        except BaseException as exc:  # noqa: BLE001 - reported below
            follower_errors.append(exc)

    follower = threading.Thread(target=guarded, daemon=True)
    follower.start()
    try:
        errors = run_threads([writer(w) for w in range(writers)])
    finally:
        writers_done.set()
        follower.join(JOIN_TIMEOUT)
    assert not follower.is_alive()
    assert errors == [], f"writers failed: {errors[:3]}"
    assert follower_errors == []
    head = store.head()
    assert sorted(p for p, _, _ in written) == list(range(1, head + 1))
    check_follower(seen, written)
    assert store.verify().ok


# -- the same check against an appender without the lock -----------------------------------


def test_unserialized_sequence_appender_loses_events(pg_url: str) -> None:
    """What the serialization prevents, replayed deterministically on PostgreSQL: two
    appenders that take positions from a sequence without the lock. A takes position 1,
    B takes 2 and commits first; the follower reads 2 and moves its checkpoint past 1;
    then A commits. The follower check used above reports position 1 as never seen."""
    store = EventStore.from_url(pg_url)
    upgrade(store.engine)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE SEQUENCE events_position_seq")

        insert = sa.text(
            "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
            " data, metadata, hash) VALUES (nextval('events_position_seq'), :s, 1,"
            " 'AccessTokenRevoked', 1, :d, '{}', :h) RETURNING position"
        )
        data = '{"by":"x","reason":"revoked","token":"t"}'
        seen: list[tuple[int, str, int]] = []
        checkpoint = 0

        def poll() -> None:
            nonlocal checkpoint
            for r in store.read_all(after_position=checkpoint):
                seen.append((r.position, r.stream_id, r.stream_version))
                checkpoint = r.position

        with store.engine.connect() as a, store.engine.connect() as b:
            a.begin()
            pos_a = a.execute(insert, {"s": "token-a", "d": data, "h": "a" * 64}).scalar_one()
            b.begin()
            pos_b = b.execute(insert, {"s": "token-b", "d": data, "h": "b" * 64}).scalar_one()
            b.commit()
            poll()  # sees B's row only: A's is not committed yet
            a.commit()  # the earlier position commits later
            poll()
        written = {(pos_a, "token-a", 1), (pos_b, "token-b", 1)}
        assert (pos_a, pos_b) == (1, 2)
        with pytest.raises(AssertionError, match="never saw 1 events"):
            check_follower(seen, written)
        assert seen == [(2, "token-b", 1)]
        assert store.head() == 2  # the row is there; only the follower missed it
    finally:
        store.engine.dispose()


def test_locked_appender_makes_the_late_writer_wait(store: EventStore) -> None:
    """The same interleaving against the real store: while one appender's transaction
    is open, another append cannot take a position, so a follower polling in between
    cannot get ahead of the uncommitted row."""
    store.append("token-0", 0, [revoked(0, by="setup")])
    started = threading.Event()
    finished = threading.Event()

    def late_writer() -> None:
        started.set()
        store.append("token-b", 0, [revoked(2, by="b")])
        finished.set()

    with store.engine.connect() as holder:
        # Hold the append serialization exactly as an appender in flight does.
        holder = holder.execution_options(sqlite_begin="IMMEDIATE")
        holder.begin()
        if not store.is_sqlite:
            holder.exec_driver_sql(PG_APPEND_LOCK_SQL)
        t = threading.Thread(target=late_writer, daemon=True)
        t.start()
        assert started.wait(30)
        # The late writer is blocked; nothing new is visible to a follower.
        assert not finished.wait(0.5)
        assert [r.position for r in store.read_all()] == [1]
        holder.rollback()
    t.join(JOIN_TIMEOUT)
    assert finished.is_set()
    assert [(r.position, r.stream_id) for r in store.read_all()] == [(1, "token-0"), (2, "token-b")]


def test_stores_in_different_schemas_do_not_wait_for_each_other(pg_url: str) -> None:
    """The PostgreSQL lock is keyed by the events table's OID: an append in one schema
    proceeds while another schema's append lock is held."""
    from tests.conftest import PG_URL, pg_schema_url

    other_schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {other_schema}")
    first, second = EventStore.from_url(pg_url), EventStore.from_url(pg_schema_url(other_schema))
    try:
        upgrade(first.engine)
        upgrade(second.engine)
        done = threading.Event()
        with first.engine.connect() as holder:
            holder.begin()
            holder.exec_driver_sql(PG_APPEND_LOCK_SQL)

            def append_elsewhere() -> None:
                second.append("token-x", 0, [revoked(1, by="other schema")])
                done.set()

            t = threading.Thread(target=append_elsewhere, daemon=True)
            t.start()
            t.join(JOIN_TIMEOUT)
            assert done.is_set(), "an append in another schema waited for this schema's lock"
            holder.rollback()
        assert second.head() == 1 and first.head() == 0
    finally:
        first.engine.dispose()
        second.engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {other_schema} CASCADE")
        admin.dispose()
