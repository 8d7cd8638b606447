"""Projection benchmark: prints figures, never asserts.

1. Rebuild rate: replay N events (default 1,000,000) from SQLite and from PostgreSQL
   into a fresh Redis namespace (whole rebuild: read, fold, write, catch-up, switch),
   best of 2 with the default number of processes (``--workers`` to choose), then one
   run in a single process for comparison (``--no-single`` to skip it).
2. Projection lag commit -> visible through the real worker path: a Celery worker
   process (Redis broker) woken by a task per commit, at 200 events/s; p50/p99 of the
   time from the append returning to the checkpoint covering that event in Redis.
3. Redis bytes per active access token: MEMORY USAGE of the token key, plus the token's
   share of the expiry sorted set and of the user-token sets (their MEMORY USAGE divided
   by their members). Not counted: hash-table bucket arrays (Redis does not report them
   per key). bench/token_memory.py measures the whole cost (INFO used_memory over 1M
   tokens, on a Redis server of its own).

    .venv/bin/python bench/projection_bench.py [--events 1000000] [--skip-lag]
        [--workers N] [--no-single]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_bench import (  # noqa: E402
    migrated_store,
    postgres_schema,
    postgres_store,
    sqlite_store,
)
from oauthledger.events import catalog as ev  # noqa: E402
from oauthledger.events.keys import KeyLayout  # noqa: E402
from oauthledger.events.projection import project_pending  # noqa: E402
from oauthledger.events.readmodel import ReadModel  # noqa: E402
from oauthledger.events.rebuild import RebuildResult, delete_namespace, rebuild  # noqa: E402
from oauthledger.events.state import token_stream  # noqa: E402
from oauthledger.events.store import EventStore  # noqa: E402
from tests.integration.test_projection_support import make_history  # noqa: E402

PG = os.environ.get("OAUTHLEDGER_TEST_POSTGRES_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("OAUTHLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def fill(store: EventStore, events: int) -> int:
    """Append about ``events`` events (about 4.2 events per grant)."""
    t = time.perf_counter()
    h = make_history(store, int(events / 4.2), users=max(50, events // 40), consumers=50,
                     now=time.time(), chunk=2000)
    print(f"  appended {h.events:,} events in {time.perf_counter() - t:.1f} s")
    return h.events


def _processes(n: int) -> str:
    return f"{n} process{'es' if n > 1 else ''}"


def rebuild_once(store: EventStore, rm: ReadModel, workers: int | None) -> RebuildResult:
    """One timed rebuild, printed with where its time went."""
    phases: dict[str, float] = {}
    started = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        phases.setdefault(phase, time.perf_counter() - started)

    load = os.getloadavg()[0]
    result = rebuild(store, rm, progress=progress, workers=workers)
    # "write" starts when this process has folded its own range (the others may still
    # be folding theirs).
    split = (f"read+fold {phases.get('write', 0):.1f} s, write+catch-up+switch "
             f"{result.seconds - phases.get('write', 0):.1f} s")
    print(f"    run ({_processes(result.workers)}, load "
          f"{load:.2f}): {result.events:,} events in {result.seconds:.2f} s "
          f"({result.rate:,.0f} events/s; {split}; then deleting the replaced namespace "
          f"{result.cleanup_seconds:.1f} s)")
    return result


def bench_rebuild(name: str, store: EventStore, client: redis.Redis, events: int,
                  workers: int | None, single: bool) -> ReadModel:
    fill(store, events)
    rm = ReadModel(client, KeyLayout("olbench-" + uuid.uuid4().hex[:6]))
    best = None
    for _ in range(2):
        result = rebuild_once(store, rm, workers)
        best = result if best is None or result.seconds < best.seconds else best
    print(f"  {name}: rebuild of {best.events:,} events ({best.entities:,} entities) "
          f"in {best.seconds:.2f} s = {best.rate:,.0f} events/s (best of 2, "
          f"{_processes(best.workers)})")
    if single:
        one = rebuild_once(store, rm, 1)
        print(f"  {name}, one process for comparison: {one.seconds:.2f} s = "
              f"{one.rate:,.0f} events/s")
    return rm


def memory_per_token(rm: ReadModel) -> None:
    """MEMORY USAGE of the token keys plus each token's share of the expiry buckets and
    their index, over the active access tokens of a rebuilt namespace."""
    client = rm.redis
    ns = rm.namespace()
    entries = rm.expiry_index()
    if not entries:
        print("  no active tokens")
        return
    n_active = len(entries)
    sample = [t for t, _ in entries[:: max(1, n_active // 5000)]]
    key_bytes = statistics.mean(
        client.memory_usage(KeyLayout.entity(ns, "t", t), samples=0) for t in sample)
    index_bytes = client.memory_usage(KeyLayout.expiry(ns), samples=0)
    buckets = 0
    encodings: set[str] = set()
    for key in client.scan_iter(KeyLayout.expiry_bucket_prefix(ns) + "*", count=5000):
        buckets += 1
        index_bytes += client.memory_usage(key, samples=0)
        encodings.add(client.object("encoding", key).decode())
    share = index_bytes / n_active
    value = client.get(KeyLayout.entity(ns, "t", sample[0]))
    print(f"  active access tokens: {n_active:,} in {buckets:,} expiry buckets "
          f"({'/'.join(sorted(encodings))}); sample value {len(value)} bytes")
    print(f"  MEMORY USAGE per active access token: key {key_bytes:.0f} + expiry index "
          f"share {share:.1f} = {key_bytes + share:.0f} bytes")


def used_memory_per_token(client: redis.Redis, n: int, spread: float) -> None:
    """``n`` active access tokens written through the apply script under a prefix as
    long as the default ``ol`` (so key names have their production length), expiries
    spread over ``spread`` seconds. Reports MEMORY USAGE (token key + share of the expiry
    buckets and index) and the INFO used_memory delta, which counts everything Redis
    allocated for them: keys, values, expires-dict entries (ended tokens only), hash-table
    growth (the main dict's table doubles at powers of two, so that part depends on how
    many keys the database held before), expiry buckets and index."""
    import secrets

    from oauthledger.events.sealing import KeyRing, Sealer
    from oauthledger.events.state import TokenState

    sealer = Sealer(KeyRing.generate())
    prefix = "q" + secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz")
    rm = ReadModel(client, KeyLayout(prefix))
    ns = rm.keys.namespace(1)
    client.set(rm.keys.building, ns)
    now = time.time()
    states = [TokenState(
        token=secrets.token_urlsafe(24), kind="access", consumer_key=f"consumer-{i % 50}",
        secret_sealed=sealer.seal(secrets.token_urlsafe(24)), status="active",
        expires_at=now + 600 + spread * i / n, issued_at=now, user=f"user{i % 25000}",
        version=1) for i in range(n)]
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for i in range(0, n, 500):
        rm.apply_pipelined(pipe, states[i:i + 500], None, ns)
        if i % 20000 == 0:
            pipe.execute()
    pipe.execute()
    after = int(client.info("memory")["used_memory"])
    keys = client.dbsize()
    sample = states[:: max(1, n // 5000)]
    key_bytes = statistics.mean(
        client.memory_usage(KeyLayout.entity(ns, "t", s.token), samples=0) for s in sample)
    index_bytes = client.memory_usage(KeyLayout.expiry(ns), samples=0)
    buckets = 0
    for key in client.scan_iter(KeyLayout.expiry_bucket_prefix(ns) + "*", count=5000):
        buckets += 1
        index_bytes += client.memory_usage(key, samples=0)
    print(f"  {n:,} active access tokens, expiries over {spread / 86400:g} days, key "
          f"{KeyLayout.entity(ns, 't', sample[0].token)!r} ({buckets:,} buckets):")
    print(f"    MEMORY USAGE: key {key_bytes:.0f} + expiry index share {index_bytes / n:.1f}"
          f" = {key_bytes + index_bytes / n:.0f} bytes per token")
    print(f"    INFO used_memory delta: {(after - before) / n:.0f} bytes per token "
          f"({keys:,} keys in the db after)")
    delete_namespace(client, ns)
    client.delete(rm.keys.building)


def bench_lag(rate: float, seconds: float, client: redis.Redis) -> None:
    """Projection lag through a real Celery worker, on a store in a fresh PostgreSQL
    schema (dropped afterwards)."""
    with postgres_schema(PG) as url, migrated_store(url) as store:
        _lag(rate, seconds, client, url, store)


def _lag(rate: float, seconds: float, client: redis.Redis, url: str, store: EventStore
         ) -> None:
    prefix = "olbench-" + uuid.uuid4().hex[:6]
    rm = ReadModel(client, KeyLayout(prefix))
    project_pending(store, rm)
    broker_db = 7
    base = REDIS.rsplit("/", 1)[0]
    broker = f"{base}/{broker_db}"
    redis.Redis.from_url(broker).flushdb()
    data = tempfile.mkdtemp()
    env = {**os.environ, "OAUTHLEDGER_DATABASE_URL": url, "OAUTHLEDGER_REDIS_URL": REDIS,
           "OAUTHLEDGER_BROKER_URL": broker, "OAUTHLEDGER_REDIS_PREFIX": prefix,
           "OAUTHLEDGER_DATA_DIR": data}
    exe = Path(sys.executable).with_name("oauthledger")
    log = open(Path(data) / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([str(exe), "worker", "-c", "2", "-n", f"bench{prefix}@%h",
                               "-l", "WARNING"], env=env, stdout=log, stderr=log,
                              start_new_session=True)
    from celery import Celery

    app = Celery("bench", broker=broker)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        time.sleep(6)  # worker start-up
        lags: list[float] = []
        pending: list[tuple[int, float]] = []
        lock = threading.Lock()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set() or pending:
                cp = rm.checkpoint() or 0
                t = time.perf_counter()
                with lock:
                    while pending and pending[0][0] <= cp:
                        lags.append(t - pending.pop(0)[1])
                time.sleep(0.0005)
                if done.is_set() and time.perf_counter() - end > 10:
                    break

        watcher = threading.Thread(target=watch)
        watcher.start()
        interval = 1 / rate
        next_at = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            token = f"lag{i}"
            rows = store.append(token_stream(token), 0, [ev.RequestTokenIssued(
                token=token, consumer_key="c", secret_sealed="x", callback="oob",
                expires_at=time.time() + 600)])
            committed = time.perf_counter()
            with lock:
                pending.append((rows[-1].position, committed))
            app.send_task("oauthledger.project", ignore_result=True)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        end = time.perf_counter()
        done.set()
        watcher.join()
        lags.sort()
        q = statistics.quantiles(lags, n=100)
        print(f"  lag at {rate:.0f} events/s over {len(lags)} events (append returned -> "
              f"checkpoint covers the event; front ends publish each changed entity before "
              f"responding, so this is when the projection has caught up, not when a "
              f"change first becomes readable): p50 {q[49] * 1000:.1f} ms, "
              f"p99 {q[98] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms")
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        app.close()
        delete_namespace(client, rm.namespace())
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        redis.Redis.from_url(broker).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--lag-only", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the used_memory figures (no rebuild, no lag)")
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=None,
                        help="rebuild processes (default: the rebuild's own choice)")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the one-process rebuild run for comparison")
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS)
    if args.lag_only:
        print("Projection lag through a real Celery worker (PostgreSQL store):")
        bench_lag(200, args.lag_seconds, client)
        return
    if args.memory_only:
        for spread in (7 * 86400, 300):
            used_memory_per_token(client, 100_000, spread)
        return

    print("SQLite:")
    with sqlite_store() as store:
        rm = bench_rebuild("SQLite", store, client, args.events, args.workers,
                           not args.no_single)
        memory_per_token(rm)
        for spread in (7 * 86400, 300):
            used_memory_per_token(client, 100_000, spread)
        delete_namespace(client, rm.namespace())
        for key in client.scan_iter(rm.keys.pattern()):
            client.delete(key)

    print("PostgreSQL:")
    with postgres_store(PG) as store:
        rm = bench_rebuild("PostgreSQL", store, client, args.events, args.workers,
                           not args.no_single)
        delete_namespace(client, rm.namespace())
        for key in client.scan_iter(rm.keys.pattern()):
            client.delete(key)

    if not args.skip_lag:
        print("Projection lag through a real Celery worker (PostgreSQL store):")
        bench_lag(200, args.lag_seconds, client)


if __name__ == "__main__":
    main()
