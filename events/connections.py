"""Factories that open the real connections. Only composition roots call these
(services.http.app.get_app, workers.celery_app, the CLI); nothing connects at import time."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import redis
from sqlalchemy.engine import make_url

from oauthledger.events.migrate import ensure_schema
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore

_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}


class InstallationMissing(Exception):
    """Opening with ``create=False`` found no file where the settings point: ``what`` is
    ``"store"`` (the SQLite database) or ``"key file"``, ``path`` where it looked. A
    command line that points at the wrong directory must say so rather than start a new,
    empty installation with a new sealing key (docs/cli.md, "Which installation")."""

    def __init__(self, what: str, path: Path) -> None:
        super().__init__(f"{what} {path} does not exist")
        self.what = what
        self.path = path


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL, or None (PostgreSQL, in-memory, ``file:`` URIs)."""
    if not database_url.startswith("sqlite"):
        return None
    name = make_url(database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def make_private(data_dir: Path, database_url: str) -> None:
    """The data directory 0700 and the SQLite files 0600: they hold password hashes and
    sealed secrets, readable by this account only. The database file is created with
    its mode before SQLite opens it (SQLite gives its -wal and -shm files the database
    file's permissions)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    name = make_url(database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    db = Path(name)
    if not db.exists():
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        if path.exists():
            os.chmod(path, 0o600)


def open_store(settings: Settings, migrate_embedded: bool = True,
               create: bool = True) -> EventStore:
    """The event store for ``settings``. The embedded SQLite database is created and
    upgraded on first use; PostgreSQL is upgraded only by ``oauthledger db upgrade``.
    With ``create=False`` a SQLite file that does not exist raises
    :class:`InstallationMissing` and nothing is created (not even the data directory)."""
    if settings.is_sqlite:
        path = sqlite_file(settings.database_url)
        if not create and path is not None and not path.exists():
            raise InstallationMissing("store", path)
        make_private(settings.data_dir, settings.database_url)
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


def open_sealer(settings: Settings, create: bool = True) -> Sealer:
    """The sealer over the key file (generated with mode 0600 on first use); it follows
    the file, so a key rotation needs no restart. With ``create=False`` a missing key
    file raises :class:`InstallationMissing` instead of being generated."""
    path = Path(settings.secret_key_file)
    if not create and not path.exists():
        raise InstallationMissing("key file", path)
    return Sealer.from_file(path, create=create)
