"""Factories that open the real connections. Only composition roots call these
(services.http.app.get_app, workers.celery_app, the CLI); nothing connects at import time."""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from oauthledger.events.migrate import ensure_schema
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore

_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}


def open_store(settings: Settings, migrate_embedded: bool = True) -> EventStore:
    """The event store for ``settings``. The embedded SQLite database is created and
    upgraded on first use; PostgreSQL is upgraded only by ``oauthledger db upgrade``."""
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore.from_url(settings.database_url)
    if settings.is_sqlite and migrate_embedded:
        ensure_schema(store.engine)
    return store


def open_redis(settings: Settings) -> redis.Redis:
    """A redis-py client: the configured server, or the in-process embedded store
    (fakeredis: the same redis-py API, Lua scripts included). All embedded clients of
    one process share one server, so the projection is process-wide."""
    if settings.redis_url is not None:
        return redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5,
            health_check_interval=30,
        )
    import fakeredis  # only the embedded default needs it

    with _embedded_lock:
        server = _embedded_servers.get(str(settings.data_dir))
        if server is None:
            server = fakeredis.FakeServer()
            _embedded_servers[str(settings.data_dir)] = server
    return fakeredis.FakeRedis(server=server)


def open_sealer(settings: Settings) -> Sealer:
    """The sealer over the key file (generated with mode 0600 on first use); it follows
    the file, so a key rotation needs no restart."""
    return Sealer.from_file(Path(settings.secret_key_file), create=True)
