"""Checks ``oauthledger serve`` runs before it hands over to gunicorn, so that what a
new user gets wrong first is one line naming the fix rather than a worker's traceback
(docs/design.md, "Errors that say why"):

- :func:`parse_bind`: ``--bind`` is ``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``;
- :func:`check_port_free`: nothing listens there yet (a socket is bound and closed
  again; gunicorn binds it for real a moment later);
- :func:`check_dependencies`: the event store and Redis answer (whichever is down is
  named, with its URL's password masked).

Each raises :class:`PreflightError`, a :class:`CliError`: one ``oauthledger: ...`` line
and exit status 1.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from oauthledger.events.settings import Settings
from oauthledger.services.cli.main import CliError, describe_error

EXAMPLE = "--bind 127.0.0.1:8080 (or [::1]:8080, 0.0.0.0:8080, unix:/run/oauthledger.sock)"
# RFC 1123 §2.1 host names: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# Bounds (seconds) so that a silent server costs seconds, not minutes.
CONNECT_TIMEOUT = 3


class PreflightError(CliError):
    """A check before serving failed: one line, exit status 1."""


@dataclass(frozen=True)
class Bind:
    """Where ``serve`` listens: a TCP ``host`` and ``port``, or a Unix socket ``path``."""

    text: str
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        """True for a Unix domain socket."""
        return self.path is not None

    def url(self) -> str:
        """How the address reads in a message."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _bad(text: str, why: str) -> PreflightError:
    return PreflightError(f"--bind {text!r}: {why}; for example {EXAMPLE}")


def parse_bind(text: str) -> Bind:
    """The address of ``--bind`` (gunicorn's forms that ``serve`` documents), or a
    :class:`PreflightError` naming ``--bind`` with an example."""
    raw = text.strip()
    if not raw:
        raise _bad(text, "give an address")
    if raw.startswith("unix:"):
        path = raw[len("unix:"):]
        if not path or "\x00" in path:
            raise _bad(text, "give the socket's path after unix:")
        return Bind(text, path=path)
    if raw.startswith("["):
        # RFC 3986 §3.2.2: an IPv6 literal in brackets, then the port.
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _bad(text, "write an IPv6 address as [ADDRESS]:PORT")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv6 address") from None
        return Bind(text, host=host, port=_port(text, rest[1:]))
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise _bad(text, "give HOST:PORT")
    if ":" in host:
        raise _bad(text, "put an IPv6 address in brackets: [ADDRESS]:PORT")
    if not host:
        raise _bad(text, "give the host before the port (0.0.0.0 for every interface)")
    if not _HOSTNAME.match(host):
        raise _bad(text, f"{host!r} is not a host name or IPv4 address")
    return Bind(text, host=host, port=_port(text, port_text))


def _port(text: str, raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise _bad(text, f"the port must be a number from 1 to 65535, not {raw!r}")
    return int(raw)


def check_port_free(bind: Bind) -> None:
    """Raise :class:`PreflightError` when ``bind`` cannot be listened on: the port is
    in use, the address is not on this host, the port needs privileges, or the
    socket's path is taken or unusable. Binds a socket and closes it at once."""
    if bind.path is not None:
        _check_unix_path(bind)
        return
    assert bind.host is not None and bind.port is not None
    try:
        infos = socket.getaddrinfo(bind.host, bind.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _bad(bind.text, f"cannot resolve {bind.host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As gunicorn binds (SO_REUSEADDR): a port left in TIME_WAIT by a server that
        # just stopped is free, a port another program listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise PreflightError(_bind_problem(bind, exc)) from None
    finally:
        sock.close()


def _bind_problem(bind: Bind, exc: OSError) -> str:
    where = f"port {bind.port} on {bind.host}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is in use (another server, or an oauthledger serve already "
                f"running, listens there) — fix: stop it, or choose another port: "
                f"--bind {bind.host}:{_next_port(bind.port)}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where} needs privileges this account does not have (ports below 1024) "
                f"— fix: choose a port from 1024 up, e.g. --bind {bind.host}:8080, and put "
                "a proxy in front")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{bind.host} is not an address of this host — fix: give one of its "
                "addresses, 127.0.0.1 for this host only or 0.0.0.0 for every interface")
    return f"cannot listen on {where}: {exc.strerror or exc}"


def _next_port(port: int | None) -> int:
    return 8081 if port is None or port >= 65535 else port + 1


def _check_unix_path(bind: Bind) -> None:
    assert bind.path is not None
    path = Path(bind.path)
    parent = path.parent
    if not parent.is_dir():
        raise PreflightError(f"--bind {bind.text!r}: the directory {parent} does not exist "
                             "— fix: create it, or give a path in an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"--bind {bind.text!r}: this account cannot create a socket "
                             f"in {parent} — fix: give a directory it can write to")
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise PreflightError(f"--bind {bind.text!r}: {path} exists and is not a socket — "
                             "fix: give another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CONNECT_TIMEOUT)
    try:
        probe.connect(str(path))
    except OSError:
        return  # a socket left behind by a server that stopped: gunicorn replaces it
    finally:
        probe.close()
    raise PreflightError(f"{path} is in use (a server listens on that socket) — fix: stop "
                         "it, or give another path: --bind unix:PATH")


def check_store(settings: Settings) -> None:
    """Raise :class:`PreflightError` unless the event store answers with its events
    table (PostgreSQL: reachable and migrated). The embedded SQLite database is not
    checked: ``serve`` creates and upgrades it."""
    if settings.is_sqlite:
        return
    from oauthledger.events.store import EventStore
    from oauthledger.services.cli.doctor import bounded_database_url

    store = EventStore.from_url(bounded_database_url(settings.database_url))
    try:
        store.head()  # connects, and needs the events table
    except Exception as exc:  # noqa: BLE001 - an unexpected error keeps its traceback
        raise _dependency_error(exc, settings, store.url) from None
    finally:
        store.engine.dispose()


def check_redis(settings: Settings) -> None:
    """Raise :class:`PreflightError` unless the configured Redis answers PING (the
    embedded store needs no check)."""
    if settings.redis_url is None:
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT,
                                  socket_timeout=CONNECT_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise _dependency_error(exc, settings) from None
    finally:
        client.close()


def check_dependencies(settings: Settings) -> None:
    """The event store, then Redis: the first one down is one line naming it."""
    check_store(settings)
    check_redis(settings)


def _dependency_error(exc: Exception, settings: Settings,
                      bounded_url: str | None = None) -> Exception:
    from oauthledger.events.store import safe_url
    from oauthledger.services.cli.main import CliContext

    line = describe_error(exc, CliContext(_settings=settings))
    if line is None:
        return exc
    if bounded_url:
        # The timeouts are the check's own; the line names the configured URL.
        line = line.replace(bounded_url, safe_url(settings.database_url))
    return PreflightError(line)
