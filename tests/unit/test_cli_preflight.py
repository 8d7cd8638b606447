"""The checks `oauthledger serve` runs before gunicorn (services/cli/preflight.py): a bad
--bind, a port in use and a dependency that is down are each one line naming the fix.
No servers: ports are this host's own sockets, the unreachable store and Redis are a
refused port (127.0.0.1:1), the reachable store a SQLite file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from oauthledger.events.settings import load_settings
from oauthledger.services.cli.preflight import (
    Bind,
    PreflightError,
    check_dependencies,
    check_port_free,
    check_redis,
    check_store,
    parse_bind,
)

# Port 1 on loopback: nothing listens, every connection is refused at once.
DB_DOWN = "postgresql://ledger:hunter2@127.0.0.1:1/ledger"
REDIS_DOWN = "redis://:hunter2@127.0.0.1:1/0"


def message(exc: pytest.ExceptionInfo[PreflightError]) -> str:
    """The one line the command prints (without the ``oauthledger: `` prefix)."""
    text = exc.value.format_message()
    assert "\n" not in text
    return text


# --- --bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "bind"), [
    ("127.0.0.1:8080", Bind("127.0.0.1:8080", host="127.0.0.1", port=8080)),
    ("0.0.0.0:80", Bind("0.0.0.0:80", host="0.0.0.0", port=80)),
    ("localhost:8080", Bind("localhost:8080", host="localhost", port=8080)),
    ("ledger.example.com:443", Bind("ledger.example.com:443", host="ledger.example.com",
                                    port=443)),
    ("[::1]:8080", Bind("[::1]:8080", host="::1", port=8080)),
    ("[::]:8080", Bind("[::]:8080", host="::", port=8080)),
    ("unix:/run/oauthledger.sock", Bind("unix:/run/oauthledger.sock",
                                        path="/run/oauthledger.sock")),
])
def test_parse_bind_accepts_the_documented_forms(text: str, bind: Bind) -> None:
    assert parse_bind(text) == bind


@pytest.mark.parametrize(("text", "why"), [
    ("nonsense", "give HOST:PORT"),
    ("", "give an address"),
    ("127.0.0.1", "give HOST:PORT"),
    ("127.0.0.1:", "the port must be a number from 1 to 65535, not ''"),
    ("127.0.0.1:http", "not 'http'"),
    ("127.0.0.1:0", "not '0'"),
    ("127.0.0.1:65536", "not '65536'"),
    (":8080", "give the host before the port"),
    ("::1:8080", "put an IPv6 address in brackets"),
    ("[::1]8080", "write an IPv6 address as [ADDRESS]:PORT"),
    ("[nope]:8080", "'nope' is not an IPv6 address"),
    ("bad host:8080", "'bad host' is not a host name"),
    ("unix:", "give the socket's path after unix:"),
])
def test_parse_bind_refuses_with_one_line_naming_bind_and_an_example(text: str,
                                                                    why: str) -> None:
    with pytest.raises(PreflightError) as exc:
        parse_bind(text)
    line = message(exc)
    assert line.startswith(f"--bind {text!r}: ")
    assert why in line
    assert "for example --bind 127.0.0.1:8080" in line
    assert exc.value.exit_code == 1


# --- the port -------------------------------------------------------------------------------


def test_a_port_in_use_is_named_with_what_to_do() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PreflightError) as exc:
            check_port_free(parse_bind(f"127.0.0.1:{port}"))
        line = message(exc)
        assert f"port {port} on 127.0.0.1 is in use" in line
        assert f"--bind 127.0.0.1:{port + 1}" in line
    finally:
        listener.close()
    # Closed: the same port is free again, and the probe leaves it free.
    check_port_free(parse_bind(f"127.0.0.1:{port}"))
    check_port_free(parse_bind(f"127.0.0.1:{port}"))


def test_an_address_not_on_this_host_is_named() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this host.
    with pytest.raises(PreflightError) as exc:
        check_port_free(parse_bind("192.0.2.1:8080"))
    assert "192.0.2.1 is not an address of this host" in message(exc)


def test_an_unresolvable_host_is_named() -> None:
    # .invalid never resolves (RFC 2606 §2).
    with pytest.raises(PreflightError) as exc:
        check_port_free(parse_bind("ledger.invalid:8080"))
    assert "cannot resolve 'ledger.invalid'" in message(exc)


def test_unix_socket_paths(tmp_path: Path) -> None:
    check_port_free(parse_bind(f"unix:{tmp_path / 'free.sock'}"))
    with pytest.raises(PreflightError) as exc:
        check_port_free(parse_bind(f"unix:{tmp_path / 'missing' / 'x.sock'}"))
    assert f"the directory {tmp_path / 'missing'} does not exist" in message(exc)
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(PreflightError) as exc:
        check_port_free(parse_bind(f"unix:{regular}"))
    assert "exists and is not a socket" in message(exc)
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen()
        with pytest.raises(PreflightError) as exc:
            check_port_free(parse_bind(f"unix:{path}"))
        assert f"{path} is in use" in message(exc)
    finally:
        listener.close()
    # A socket file nobody listens on (a server that stopped) is gunicorn's to replace.
    check_port_free(parse_bind(f"unix:{path}"))


# --- the store and Redis --------------------------------------------------------------------


def test_an_unreachable_store_is_named_with_its_password_masked(tmp_path: Path) -> None:
    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              "OAUTHLEDGER_DATABASE_URL": DB_DOWN})
    with pytest.raises(PreflightError) as exc:
        check_dependencies(settings)
    line = message(exc)
    assert line.startswith("event store at postgresql+psycopg://ledger:***@127.0.0.1:1/ledger "
                           "is unavailable")
    assert "OAUTHLEDGER_DATABASE_URL" in line
    assert "hunter2" not in line and "connect_timeout" not in line


def test_an_unreachable_redis_is_named_with_its_password_masked(tmp_path: Path) -> None:
    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              "OAUTHLEDGER_REDIS_URL": REDIS_DOWN})
    with pytest.raises(PreflightError) as exc:
        check_redis(settings)
    line = message(exc)
    assert line.startswith("Redis at redis://:***@127.0.0.1:1/0 is unavailable")
    assert "OAUTHLEDGER_REDIS_URL" in line and "hunter2" not in line


def test_the_store_is_checked_before_redis(tmp_path: Path) -> None:
    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              "OAUTHLEDGER_DATABASE_URL": DB_DOWN,
                              "OAUTHLEDGER_REDIS_URL": REDIS_DOWN})
    with pytest.raises(PreflightError) as exc:
        check_dependencies(settings)
    assert message(exc).startswith("event store at")


def test_the_embedded_default_needs_no_server(tmp_path: Path) -> None:
    # SQLite is created by serve itself, the in-process Redis needs nothing: no check
    # may create a file either.
    check_dependencies(load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data")}))
    assert not (tmp_path / "data").exists()


def test_a_sqlite_file_named_by_url_is_not_probed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    check_store(load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                               "OAUTHLEDGER_DATABASE_URL": url}))
    assert not (tmp_path / "elsewhere.sqlite3").exists()


@pytest.mark.parametrize(("env", "mode"), [
    ({}, "embedded default mode"),
    ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "SQLite, Redis, in-process workers"),
    ({"DATABASE_URL": "postgresql://db/ol", "REDIS_URL": "redis://r/0",
      "BROKER_URL": "redis://r/1"}, "PostgreSQL, Redis, Celery workers"),
])
def test_serve_announces_the_mode_it_runs(env: dict[str, str], mode: str,
                                          tmp_path: Path) -> None:
    """"serving on" names what runs: never "embedded default" with a Redis URL set."""
    from oauthledger.services.cli.serve import run_mode

    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              **{f"OAUTHLEDGER_{k}": v for k, v in env.items()}})
    assert run_mode(settings) == mode
