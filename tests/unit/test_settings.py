"""events/settings.py: every OAUTHLEDGER_* variable, its default, and one clear
SettingsError naming the variable for a bad value."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

import oauthledger.events.settings as settings_module
from oauthledger.events.settings import SettingsError, load_settings, parse_duration

DAY = 86400.0


def test_defaults_with_an_empty_environment() -> None:
    s = load_settings({})
    assert s.data_dir == Path("./.oauthledger")
    assert s.database_url == f"sqlite:///{(Path('./.oauthledger') / 'events.sqlite3').resolve()}"
    assert s.is_sqlite
    assert s.redis_url is None and s.embedded_redis
    assert s.broker_url is None and s.embedded_broker
    assert s.secret_key_file == Path(".oauthledger") / "secret-keys.json"
    assert s.base_url is None
    assert s.access_token_ttl == 7 * DAY
    assert s.request_token_ttl == 600
    assert s.renewal_ttl == 37 * DAY
    assert s.timestamp_window == 300
    assert s.trusted_proxies == ()
    assert s.sso_user_header is None
    assert s.realm == "oauthledger"
    assert s.redis_prefix == "ol"
    assert s.allow_plaintext_over_http is False
    assert s.login_max_failures == 5
    assert s.sweep_interval == 60
    assert s.catchup_interval == 5


def test_empty_values_mean_the_default() -> None:
    env = {f"OAUTHLEDGER_{name}": "" for name in ("REDIS_URL", "ACCESS_TOKEN_TTL", "REALM")}
    s = load_settings(env)
    assert s.redis_url is None and s.access_token_ttl == 7 * DAY and s.realm == "oauthledger"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLEDGER_REALM", "from-os-environ")
    assert load_settings().realm == "from-os-environ"


GOOD = [
    # (variable, value, attribute, expected)
    ("LOG_FORMAT", "JSON", "log_format", "json"),
    ("LOG_FORMAT", "plain", "log_format", "plain"),
    ("METRICS_TOKEN", "t0ken", "metrics_token", "t0ken"),
    ("FAILURE_HISTORY", "50", "failure_history", 50),
    ("FAILURE_RETENTION", "1d", "failure_retention", 86400),
    ("DATA_DIR", "/srv/ol", "data_dir", Path("/srv/ol")),
    ("DATABASE_URL", "postgresql://u:p@db/ol", "database_url", "postgresql+psycopg://u:p@db/ol"),
    ("DATABASE_URL", "postgresql+psycopg://db/ol", "database_url", "postgresql+psycopg://db/ol"),
    ("DATABASE_URL", "sqlite:////tmp/x.db", "database_url", "sqlite:////tmp/x.db"),
    ("REDIS_URL", "redis://cache:6379/2", "redis_url", "redis://cache:6379/2"),
    ("REDIS_URL", "rediss://cache:6380/0", "redis_url", "rediss://cache:6380/0"),
    ("REDIS_URL", "unix:///run/redis.sock", "redis_url", "unix:///run/redis.sock"),
    ("SECRET_KEY_FILE", "/etc/ol/keys.json", "secret_key_file", Path("/etc/ol/keys.json")),
    ("BASE_URL", "https://jira.example.com/", "base_url", "https://jira.example.com"),
    ("BASE_URL", "http://localhost:8080/ctx", "base_url", "http://localhost:8080/ctx"),
    ("ACCESS_TOKEN_TTL", "1d", "access_token_ttl", DAY),
    ("ACCESS_TOKEN_TTL", "3600", "access_token_ttl", 3600.0),
    ("REQUEST_TOKEN_TTL", "10m", "request_token_ttl", 600.0),
    ("RENEWAL_TTL", "2w", "renewal_ttl", 14 * DAY),
    ("TIMESTAMP_WINDOW", "90s", "timestamp_window", 90.0),
    ("TIMESTAMP_WINDOW", "1500ms", "timestamp_window", 1.5),
    ("TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16,::1", "trusted_proxies", (
        ipaddress.ip_network("10.0.0.1/32"), ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )),
    ("SSO_USER_HEADER", "X-Remote-User", "sso_user_header", "X-Remote-User"),
    ("REALM", "Jira", "realm", "Jira"),
    ("REDIS_PREFIX", "ol-prod.1", "redis_prefix", "ol-prod.1"),
    ("ALLOW_PLAINTEXT_OVER_HTTP", "true", "allow_plaintext_over_http", True),
    ("ALLOW_PLAINTEXT_OVER_HTTP", "YES", "allow_plaintext_over_http", True),
    ("ALLOW_PLAINTEXT_OVER_HTTP", "off", "allow_plaintext_over_http", False),
    ("FETCH_ALLOW_PRIVATE", "1", "fetch_allow_private", True),
    ("FETCH_ALLOW_PRIVATE", "false", "fetch_allow_private", False),
    ("LOGIN_MAX_FAILURES", "3", "login_max_failures", 3),
    ("SWEEP_INTERVAL", "2m", "sweep_interval", 120.0),
    ("CATCHUP_INTERVAL", "0.5", "catchup_interval", 0.5),
]


@pytest.mark.parametrize(("variable", "value", "attribute", "expected"), GOOD)
def test_each_variable_is_read(variable: str, value: str, attribute: str, expected) -> None:
    assert getattr(load_settings({f"OAUTHLEDGER_{variable}": value}), attribute) == expected


def test_broker_url_needs_a_shared_redis() -> None:
    s = load_settings(
        {"OAUTHLEDGER_BROKER_URL": "redis://b:6379/1", "OAUTHLEDGER_REDIS_URL": "redis://r/0"}
    )
    assert s.broker_url == "redis://b:6379/1" and not s.embedded_broker
    with pytest.raises(SettingsError) as info:
        load_settings({"OAUTHLEDGER_BROKER_URL": "redis://b:6379/1"})
    assert info.value.variable == "OAUTHLEDGER_BROKER_URL"
    assert "OAUTHLEDGER_REDIS_URL" in str(info.value)


def test_data_dir_moves_the_default_database_and_key_file(tmp_path: Path) -> None:
    s = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'events.sqlite3'}"
    assert s.secret_key_file == tmp_path / "secret-keys.json"


def test_renewal_ttl_defaults_to_access_ttl_plus_thirty_days() -> None:
    assert load_settings({"OAUTHLEDGER_ACCESS_TOKEN_TTL": "1d"}).renewal_ttl == 31 * DAY


BAD = [
    ("LOG_FORMAT", "xml"),
    ("FAILURE_HISTORY", "0"),
    ("FAILURE_HISTORY", "many"),
    ("FAILURE_RETENTION", "forever"),
    ("DATABASE_URL", "mysql://db/ol"),
    ("DATABASE_URL", "not a url"),
    ("DATABASE_URL", "postgresql+psycopg2://db/ol"),
    ("DATABASE_URL", "postgresql+asyncpg://db/ol"),
    ("REDIS_URL", "http://cache:6379"),
    ("BROKER_URL", "kafka://b"),
    ("BASE_URL", "jira.example.com"),
    ("BASE_URL", "ftp://jira.example.com"),
    ("ACCESS_TOKEN_TTL", "seven days"),
    ("ACCESS_TOKEN_TTL", "0"),
    ("ACCESS_TOKEN_TTL", "-5s"),
    ("REQUEST_TOKEN_TTL", "10y"),
    ("RENEWAL_TTL", "forever"),
    ("TIMESTAMP_WINDOW", "0s"),
    ("TRUSTED_PROXIES", "10.0.0.1,not-an-ip"),
    ("REDIS_PREFIX", "has space"),
    ("REDIS_PREFIX", "x" * 41),
    ("ALLOW_PLAINTEXT_OVER_HTTP", "maybe"),
    ("FETCH_ALLOW_PRIVATE", "maybe"),
    ("LOGIN_MAX_FAILURES", "0"),
    ("LOGIN_MAX_FAILURES", "many"),
    ("SWEEP_INTERVAL", "often"),
    ("CATCHUP_INTERVAL", "1x"),
]


@pytest.mark.parametrize(("variable", "value"), BAD)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    env = {f"OAUTHLEDGER_{variable}": value}
    if variable == "BROKER_URL":
        env["OAUTHLEDGER_REDIS_URL"] = "redis://r/0"
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.variable == f"OAUTHLEDGER_{variable}"
    message = str(info.value)
    assert message.startswith(f"OAUTHLEDGER_{variable}: ")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_every_variable_in_settings_is_covered_here() -> None:
    """A variable added to events/settings.py without a test here fails this test."""
    source = Path(settings_module.__file__).read_text()
    read = set(re.findall(r'(?:get|duration)\("([A-Z_]+)"', source))
    covered = {v for v, *_ in GOOD} | {"BROKER_URL"}
    assert read, "no variables found: the pattern no longer matches settings.py"
    assert read <= covered, f"untested: {sorted(read - covered)}"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("300", 300), ("300s", 300), ("10m", 600), ("12h", 43200), ("7d", 7 * DAY),
     ("1w", 7 * DAY), ("250ms", 0.25), (" 2 H ", 7200), ("1.5d", 1.5 * DAY)],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration("OAUTHLEDGER_X", raw) == seconds
