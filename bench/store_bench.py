"""Event store benchmark: appends and read_all on SQLite and PostgreSQL.

Prints, per backend:
- the durability floor: a bare one-row INSERT + COMMIT loop on the same database (one
  round trip and one WAL flush per commit, no lock, no hash) and, for PostgreSQL,
  ``synchronous_commit`` / ``fsync`` / ``wal_sync_method``;
- single-event appends per second (``EventStore.append``, one event, a new stream each);
- the same with several writer threads at once (``--writers``, default 8): appends
  serialize on the store's lock, so this is what a whole deployment can append;
- appends in batches of 100 events (one ``append`` call per batch);
- the bulk load of the read fixture (``append_many`` in big batches);
- ``read_all`` over the whole fixture (default 1,000,000 events): RecordedEvent rows only,
  and separately with ``.event`` decoding (JSON + upcast + dataclass) included.

Everything runs in a dedicated PostgreSQL schema and a temporary SQLite file, both
removed at the end. Run from the repository root:

    .venv/bin/python bench/store_bench.py                 # both backends, 1M events
    .venv/bin/python bench/store_bench.py --events 200000 --backend sqlite
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import sqlalchemy as sa

from oauthledger.events.catalog import AccessTokenIssued, AccessTokenRevoked, Event
from oauthledger.events.migrate import upgrade
from oauthledger.events.store import EventStore, StreamWrite

DEFAULT_PG = os.environ.get(
    "OAUTHLEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def issued(n: int) -> AccessTokenIssued:
    """A realistic access-token event (about 330 bytes of JSON)."""
    return AccessTokenIssued(
        token=f"at{n:012d}", consumer_key="jira", user=f"user{n % 997}",
        secret_sealed="s1.k0a1b2c3d." + "A" * 60, session_handle_hash="f" * 64,
        expires_at=1.8e9 + n, authorization_expires_at=1.9e9 + n, request_token=f"rt{n:012d}",
    )


def revoked(n: int) -> AccessTokenRevoked:
    """A small event (about 60 bytes of JSON)."""
    return AccessTokenRevoked(token=f"at{n:012d}", by="admin")


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}/s"


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    """Run ``fn``; return its count and wall-clock seconds. Also remembers the CPU
    seconds this process spent, printed by :func:`cpu_note` (the machine is shared:
    a low CPU share means other work was running)."""
    global _last_cpu
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    wall = time.perf_counter() - t0
    _last_cpu = (time.process_time() - c0, wall)
    return n, wall


_last_cpu = (0.0, 1.0)


def cpu_note() -> str:
    cpu, wall = _last_cpu
    return f"client CPU {cpu:.1f}s of {wall:.1f}s wall"


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A URL of ``base_url``'s database with its search_path on a fresh, empty schema,
    dropped afterwards (the benchmarks' own tables never meet anyone else's)."""
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@contextmanager
def migrated_store(url: str) -> Iterator[EventStore]:
    """The store at ``url``, migrated to the newest schema; its engine disposed
    afterwards."""
    store = EventStore.from_url(url)
    try:
        upgrade(store.engine)
        yield store
    finally:
        store.engine.dispose()


@contextmanager
def postgres_store(base_url: str) -> Iterator[EventStore]:
    """A migrated store in a fresh schema, dropped afterwards."""
    with postgres_schema(base_url) as url, migrated_store(url) as store:
        yield store


@contextmanager
def sqlite_store() -> Iterator[EventStore]:
    """A migrated store in a temporary SQLite file, deleted afterwards."""
    tmp = tempfile.mkdtemp(prefix="olbench-")
    try:
        with migrated_store(f"sqlite:///{tmp}/events.sqlite3") as store:
            yield store
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def floor_postgres(store: EventStore, n: int) -> None:
    """Bare INSERT + COMMIT, one row per transaction, on the same server and schema."""
    raw = store.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay"):
                cur.execute(f"SHOW {name}")
                print(f"  {name:34s} {cur.fetchone()[0]}")
            cur.execute("CREATE TABLE bench_floor (id bigint PRIMARY KEY, body text)")
            pg.commit()
            # Autocommit: each INSERT is its own transaction, one round trip and one WAL
            # flush (psycopg's default would add a BEGIN round trip per row).
            pg.autocommit = True
            t0 = time.perf_counter()
            for i in range(n):
                cur.execute("INSERT INTO bench_floor VALUES (%s, %s)", (i, "x" * 100))
            dt = time.perf_counter() - t0
            pg.autocommit = False
            cur.execute("SELECT 1")
            t1 = time.perf_counter()
            for _ in range(n):
                cur.execute("SELECT 1")
                cur.fetchone()
            rt = time.perf_counter() - t1
            cur.execute("DROP TABLE bench_floor")
            pg.commit()
    finally:
        raw.close()
    print(f"  {'floor: SELECT 1 round trips':34s} {rate(n, rt)}")
    print(f"  {'floor: bare INSERT+COMMIT':34s} {rate(n, dt)}   (1 round trip + WAL flush)")


def floor_sqlite(store: EventStore, n: int) -> None:
    """Bare INSERT + COMMIT with the store's pragmas (WAL, synchronous=FULL)."""
    path = store.engine.url.database + ".floor"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, body TEXT)")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_floor VALUES (?, ?)", (i, "x" * 100))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    print(f"  {'floor: bare INSERT+COMMIT':34s} {rate(n, dt)}   (WAL, synchronous=FULL)")


def bench_backend(store: EventStore, args: argparse.Namespace) -> None:
    meta = {"actor": "bench", "request_id": "r-1"}

    if store.is_sqlite:
        floor_sqlite(store, args.single)
    else:
        floor_postgres(store, args.single)

    def single() -> int:
        for i in range(args.single):
            store.append(f"token-s{i}", 0, [revoked(i)], meta)
        return args.single

    n, dt = timed(single)
    print(f"  {'append, 1 event per call':34s} {rate(n, dt)}   ({n:,} calls, new stream each, "
          f"{cpu_note()})")

    def same_stream() -> int:
        for i in range(args.single):
            store.append("token-hot", i, [revoked(i)], meta)
        return args.single

    n, dt = timed(same_stream)
    print(f"  {'append, 1 event, one stream':34s} {rate(n, dt)}   (expected version checked)")

    def concurrent() -> int:
        # Appends serialize on the store's lock through their commit (commit order =
        # position order), so several writers share one stream of commits: this shows
        # what the whole deployment can append, not one writer.
        per = args.single // args.writers

        def writer(w: int) -> None:
            for i in range(per):
                store.append(f"token-c{w}-{i}", 0, [revoked(i)], meta)

        with ThreadPoolExecutor(max_workers=args.writers) as pool:
            list(pool.map(writer, range(args.writers)))
        return per * args.writers

    n, dt = timed(concurrent)
    print(f"  {f'append, 1 event, {args.writers} writers':34s} {rate(n, dt)}   (threads, one "
          "store, new stream each)")

    def batches() -> int:
        for b in range(args.batches):
            store.append(f"token-b{b}", 0, [issued(b * 100 + k) for k in range(100)], meta)
        return args.batches

    n, dt = timed(batches)
    print(
        f"  {'append, batches of 100 events':34s} {rate(n, dt)} calls = "
        f"{n * 100 / dt:,.0f} events/s"
    )

    # The read fixture: fill up to args.events with append_many in big batches.
    target = args.events
    already = store.head()

    def load() -> int:
        written = 0
        n0 = already
        while n0 < target:
            size = min(args.load_batch, target - n0)
            writes = []
            per_stream = 10
            for s in range(0, size, per_stream):
                k = min(per_stream, size - s)
                base = n0 + s
                evs: list[Event] = [
                    issued(base + j) if (base + j) % 2 else revoked(base + j) for j in range(k)
                ]
                writes.append(StreamWrite(f"token-l{base}", 0, evs))
            store.append_many(writes, meta)
            n0 += size
            written += size
        return written

    n, dt = timed(load)
    print(f"  {'bulk load (append_many)':34s} {rate(n, dt)}   ({n:,} events, "
          f"{args.load_batch:,} per call, {cpu_note()})")
    head = store.head()

    def read_rows() -> int:
        count = 0
        for _ in store.read_all():
            count += 1
        return count

    n, dt = timed(read_rows)
    assert n == head, (n, head)
    print(f"  {'read_all, RecordedEvent only':34s} {rate(n, dt)}   ({n:,} events, "
          f"{cpu_note()})")

    def read_decoded() -> int:
        count = 0
        for row in store.read_all():
            row.event  # noqa: B018 - decoding is what is measured
            count += 1
        return count

    n, dt = timed(read_decoded)
    print(f"  {'read_all + .event decoding':34s} {rate(n, dt)}   ({n:,} events, "
          f"{cpu_note()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--events", type=int, default=1_000_000, help="read fixture size")
    parser.add_argument("--single", type=int, default=3000, help="single appends to time")
    parser.add_argument("--batches", type=int, default=200, help="100-event batches to time")
    parser.add_argument("--writers", type=int, default=8, help="threads for the concurrent line")
    parser.add_argument("--load-batch", type=int, default=20_000, help="events per bulk call")
    args = parser.parse_args()
    print(f"event store benchmark: {args.events:,} events for read_all; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    if args.backend in ("sqlite", "both"):
        print("\nSQLite (file in a temp dir, WAL, synchronous=FULL)")
        with sqlite_store() as store:
            bench_backend(store, args)
    if args.backend in ("postgresql", "both"):
        print(f"\nPostgreSQL ({EventStore.from_url(args.pg_url).url}, fresh schema)")
        with postgres_store(args.pg_url) as store:
            bench_backend(store, args)
    print(f"\ntotal {time.perf_counter() - started:.0f}s; load average now "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
