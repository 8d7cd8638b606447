"""Schema migrations (Alembic), run programmatically on the store's engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from oauthledger.events.errors import StoreUnavailable
from oauthledger.events.store import safe_url

_SCRIPTS = str(Path(__file__).with_name("migrations"))


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _SCRIPTS)
    return cfg


def head_revision() -> str:
    """The newest migration this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise StoreUnavailable(safe_url(str(engine.url)), str(exc.orig).splitlines()[0]) from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision``; returns (before, after)."""
    before = current_revision(engine)
    cfg = _config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise StoreUnavailable(safe_url(str(engine.url)), str(exc.orig).splitlines()[0]) from None
    return before, current_revision(engine) or ""


def ensure_schema(engine: Engine) -> None:
    """Upgrade a database that is behind this code. Used by the embedded default at
    start-up; production runs ``oauthledger db upgrade`` as an explicit step."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
