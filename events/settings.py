"""Settings: the one place that reads the environment.

Every composition root (the Falcon app factory, the Celery app, the CLI) calls
:func:`load_settings` once and passes the result down. A bad value is reported as one
:class:`SettingsError` naming the variable, so start-up fails with one clear line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "OAUTHLEDGER_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SettingsError(ValueError):
    """A configuration value is missing or malformed; ``variable`` names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Construct with :func:`load_settings`."""

    data_dir: Path
    database_url: str
    redis_url: str | None  # None: the embedded, in-process Redis-compatible store
    broker_url: str | None  # None: Celery tasks run in-process
    secret_key_file: Path
    base_url: str | None
    access_token_ttl: float = 7 * 86400
    request_token_ttl: float = 600
    renewal_ttl: float = 37 * 86400
    timestamp_window: float = 300
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    sso_user_header: str | None = None
    realm: str = "oauthledger"
    redis_prefix: str = "ol"
    allow_plaintext_over_http: bool = False
    fetch_allow_private: bool = False
    """OAUTHLEDGER_FETCH_ALLOW_PRIVATE: let "add by URL" fetch consumer info from loopback,
    RFC 1918, RFC 4193 (ULA) and CGNAT addresses (two installations on one private network,
    tests). Link-local, multicast, unspecified and reserved addresses stay refused
    (docs/admin.md, "Add by URL")."""
    login_max_failures: int = 5
    sweep_interval: float = 60.0
    catchup_interval: float = 5.0
    log_format: str = "plain"
    """OAUTHLEDGER_LOG_FORMAT: ``plain`` (one readable line, for a terminal) or ``json``
    (one JSON object per line, for a log collector); docs/operations.md, "Logs"."""
    metrics_token: str | None = None
    """OAUTHLEDGER_METRICS_TOKEN: when set, ``GET /metrics`` needs ``Authorization: Bearer
    <token>``; docs/operations.md, "Metrics"."""
    failure_history: int = 200
    """OAUTHLEDGER_FAILURE_HISTORY: refused signed requests kept per consumer (newest)."""
    failure_retention: float = 7 * 86400
    """OAUTHLEDGER_FAILURE_RETENTION: how long a refused request stays in the history."""

    @property
    def embedded_redis(self) -> bool:
        """True when Redis is the in-process store (no server configured)."""
        return self.redis_url is None

    @property
    def embedded_broker(self) -> bool:
        """True when Celery tasks run in-process (no broker configured)."""
        return self.broker_url is None

    @property
    def is_sqlite(self) -> bool:
        """True when the event store is a SQLite file."""
        return self.database_url.startswith("sqlite")


def parse_duration(variable: str, raw: str) -> float:
    """Parse ``300``, ``300s``, ``10m``, ``7d`` or ``1w`` into seconds (must be > 0)."""
    match = _DURATION.match(raw)
    if not match:
        raise SettingsError(
            variable, f"{raw!r} is not a duration (examples: 300, 300s, 10m, 12h, 7d)"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise SettingsError(variable, f"{raw!r} must be greater than zero")
    return seconds


def _url(variable: str, raw: str, schemes: tuple[str, ...]) -> str:
    # The whole scheme, driver included: a driver we do not ship (postgresql+psycopg2,
    # +asyncpg) would otherwise pass here and fail later with an ImportError traceback.
    if urlsplit(raw).scheme not in schemes:
        raise SettingsError(
            variable, f"{raw!r} must be a URL starting with one of: {', '.join(schemes)}"
        )
    return raw


def _bool(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(variable, f"{raw!r} is not a boolean (use true or false)")


def _choice(variable: str, raw: str, allowed: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in allowed:
        raise SettingsError(variable, f"{raw!r} must be one of: {', '.join(allowed)}")
    return value


def _count(variable: str, raw: str) -> int:
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 100000:
        raise SettingsError(variable, f"{raw!r} must be a whole number from 1 to 100000")
    return int(raw)


def _networks(
    variable: str, raw: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(variable, f"{part!r} is not an IP address or network") from None
    return tuple(nets)


def _prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", raw):
        raise SettingsError(PREFIX + "REDIS_PREFIX", f"{raw!r} must be 1-40 of A-Z a-z 0-9 _ . -")
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``OAUTHLEDGER_*`` variables from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(PREFIX + name)
        return value if value not in (None, "") else None

    data_dir = Path(get("DATA_DIR") or "./.oauthledger").expanduser()
    database_url = get("DATABASE_URL")
    if database_url is None:
        database_url = f"sqlite:///{(data_dir / 'events.sqlite3').resolve()}"
    else:
        database_url = _url(PREFIX + "DATABASE_URL", database_url,
                            ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"))
        if database_url.startswith("postgresql://"):
            # SQLAlchemy would pick psycopg2; we ship psycopg 3.
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

    redis_url = get("REDIS_URL")
    if redis_url is not None:
        _url(PREFIX + "REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    broker_url = get("BROKER_URL")
    if broker_url is not None:
        _url(PREFIX + "BROKER_URL", broker_url, ("redis", "rediss", "amqp", "pyamqp"))
        if redis_url is None:
            raise SettingsError(
                PREFIX + "BROKER_URL",
                "a broker needs a shared Redis too: set OAUTHLEDGER_REDIS_URL "
                "(workers in other processes cannot see the embedded store)",
            )

    base_url = get("BASE_URL")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(
                PREFIX + "BASE_URL",
                f"{base_url!r} must be an absolute http(s) URL such as https://jira.example.com",
            )
        base_url = base_url.rstrip("/")

    def duration(name: str, default: float) -> float:
        raw = get(name)
        return default if raw is None else parse_duration(PREFIX + name, raw)

    access_ttl = duration("ACCESS_TOKEN_TTL", 7 * 86400)
    max_failures_raw = get("LOGIN_MAX_FAILURES") or "5"
    if not max_failures_raw.isdigit() or int(max_failures_raw) < 1:
        raise SettingsError(PREFIX + "LOGIN_MAX_FAILURES", f"{max_failures_raw!r} must be >= 1")

    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        broker_url=broker_url,
        secret_key_file=Path(get("SECRET_KEY_FILE") or data_dir / "secret-keys.json"),
        base_url=base_url,
        access_token_ttl=access_ttl,
        request_token_ttl=duration("REQUEST_TOKEN_TTL", 600),
        renewal_ttl=duration("RENEWAL_TTL", access_ttl + 30 * 86400),
        timestamp_window=duration("TIMESTAMP_WINDOW", 300),
        trusted_proxies=_networks(PREFIX + "TRUSTED_PROXIES", get("TRUSTED_PROXIES") or ""),
        sso_user_header=get("SSO_USER_HEADER"),
        realm=get("REALM") or "oauthledger",
        redis_prefix=_prefix(get("REDIS_PREFIX") or "ol"),
        allow_plaintext_over_http=_bool(
            PREFIX + "ALLOW_PLAINTEXT_OVER_HTTP", get("ALLOW_PLAINTEXT_OVER_HTTP") or "false"
        ),
        fetch_allow_private=_bool(
            PREFIX + "FETCH_ALLOW_PRIVATE", get("FETCH_ALLOW_PRIVATE") or "false"
        ),
        login_max_failures=int(max_failures_raw),
        sweep_interval=duration("SWEEP_INTERVAL", 60),
        catchup_interval=duration("CATCHUP_INTERVAL", 5),
        log_format=_choice(PREFIX + "LOG_FORMAT", get("LOG_FORMAT") or "plain",
                           ("plain", "json")),
        metrics_token=get("METRICS_TOKEN"),
        failure_history=_count(PREFIX + "FAILURE_HISTORY", get("FAILURE_HISTORY") or "200"),
        failure_retention=duration("FAILURE_RETENTION", 7 * 86400),
    )
