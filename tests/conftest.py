"""Shared fixtures. Tests that need PostgreSQL or Redis talk to the real servers named by
OAUTHLEDGER_TEST_POSTGRES_URL and OAUTHLEDGER_TEST_REDIS_URL (defaults: this machine's).
They fail, never skip, when a server is unreachable: a skipped test proves nothing.
``embedded_deps`` needs neither server: it is what the embedded default runs on."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from oauthledger.events.keys import KeyLayout
from oauthledger.events.migrate import upgrade
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.store import EventStore

PG_URL = os.environ.get(
    "OAUTHLEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OAUTHLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pg_schema_url(schema: str) -> str:
    """PG_URL with its search_path pointed at ``schema``."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema, dropped after the test."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A URL to a new SQLite file."""
    return f"sqlite:///{tmp_path / 'events.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """Parametrizes a test over both store backends."""
    return request.param


@pytest.fixture
def store_url(backend: str, request) -> str:
    """An empty database URL of the parametrized backend."""
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")


@contextmanager
def migrated_store(url: str) -> Iterator[EventStore]:
    """A store on ``url`` migrated to head; its engine is disposed afterwards."""
    s = EventStore.from_url(url)
    upgrade(s.engine)
    try:
        yield s
    finally:
        s.engine.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    """A migrated, empty store on the parametrized backend."""
    with migrated_store(store_url) as s:
        yield s


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[EventStore]:
    """A migrated, empty PostgreSQL store (fresh schema)."""
    with migrated_store(pg_url) as s:
        yield s


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client of the real Redis server."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def key_layout(redis_client: redis.Redis) -> Iterator[KeyLayout]:
    """A key prefix unique to the test; its keys are deleted afterwards."""
    layout = KeyLayout("oltest-" + uuid.uuid4().hex[:10])
    yield layout
    for key in redis_client.scan_iter(layout.pattern(), count=1000):
        redis_client.delete(key)


@pytest.fixture
def read_model(redis_client: redis.Redis, key_layout: KeyLayout) -> ReadModel:
    """A read model on the real Redis under a test-unique prefix."""
    return ReadModel(redis_client, key_layout)


@pytest.fixture
def reference(redis_client: redis.Redis) -> Iterator[ReadModel]:
    """A second read model under its own prefix, for fresh rebuilds to compare with."""
    layout = KeyLayout("oltest-ref-" + uuid.uuid4().hex[:8])
    yield ReadModel(redis_client, layout)
    for key in redis_client.scan_iter(layout.pattern(), count=1000):
        redis_client.delete(key)


def _no_wake() -> None:
    """A ``wake`` for deps whose test does not watch the projector being woken."""


# The deps below stand for a server that has been up for a while: its nonce memory
# started an hour ago, so requests signed up to a timestamp window in the past pass the
# epoch rule (docs/oauth.md, "Replays across restarts"; the rule's own tests start
# memories of their own: tests/unit/test_nonce_epoch_embedded.py).
NONCE_MEMORY_AGE = 3600


def _nonce_memory_running(deps: Any) -> Any:
    deps.read_model.start_nonce_epoch(int(time.time()) - NONCE_MEMORY_AGE)
    return deps


@contextmanager
def pg_deps(database_url: str, redis_client: redis.Redis, key_layout: KeyLayout,
            tmp_path: Path, *, wake: Callable[[], None] = _no_wake,
            **env: str) -> Iterator[Any]:
    """Service Deps on a migrated store at ``database_url`` (a PostgreSQL schema, or a
    SQLite file), the real Redis under the test's prefix and a fresh in-memory key ring;
    ``env`` adds OAUTHLEDGER_* settings (names without the prefix). ``wake`` is called
    after each commit (default: nothing). Closes the store afterwards."""
    from oauthledger.events.sealing import KeyRing, Sealer
    from oauthledger.events.settings import load_settings
    from oauthledger.services.deps import Deps

    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              "OAUTHLEDGER_DATABASE_URL": database_url,
                              **{f"OAUTHLEDGER_{k}": v for k, v in env.items()}})
    with migrated_store(settings.database_url) as store:
        yield _nonce_memory_running(Deps(
            settings=settings, store=store, redis=redis_client,
            sealer=Sealer(KeyRing.generate()), wake=wake, layout=key_layout))


@contextmanager
def embedded_deps_in(tmp_path: Path, *, wake: Callable[[], None] = _no_wake,
                     **env: str) -> Iterator[Any]:
    """Service Deps built the way the embedded default builds them (``build_deps`` with
    neither a database nor a Redis URL): a SQLite file and the key file under
    ``tmp_path``, and the in-process Redis-compatible store (fakeredis, Lua included).
    Opens no connection to any server. ``env`` adds OAUTHLEDGER_* settings (names
    without the prefix)."""
    from oauthledger.events.settings import load_settings
    from oauthledger.services.deps import build_deps

    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              **{f"OAUTHLEDGER_{k}": v for k, v in env.items()}})
    assert settings.is_sqlite and settings.embedded_redis, "embedded deps must touch no server"
    deps = _nonce_memory_running(build_deps(settings, wake=wake))
    try:
        yield deps
    finally:
        deps.redis.close()
        deps.store.engine.dispose()


@pytest.fixture
def wakes() -> list[int]:
    """One entry per wake-up of the projector sent by ``embedded_deps``/``server_deps``."""
    return []


@pytest.fixture
def embedded_deps(tmp_path: Path, wakes: list[int]) -> Iterator[Any]:
    """Deps on SQLite and the in-process Redis-compatible store: no server needed."""
    with embedded_deps_in(tmp_path, wake=lambda: wakes.append(1)) as deps:
        yield deps


@pytest.fixture(params=["sqlite", "postgresql"])
def server_deps(request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis,
                key_layout: KeyLayout, wakes: list[int]) -> Iterator[Any]:
    """Deps on the real Redis and a migrated store of each backend (a SQLite file, a
    fresh PostgreSQL schema); fails when a server is unreachable."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    with pg_deps(url, redis_client, key_layout, tmp_path, wake=lambda: wakes.append(1)) as deps:
        yield deps
