"""Requests to other applications, safely: fetching another application's consumer info
(adding a consumer by URL) and, with the same vetting, the signed requests this
installation sends to service providers as their consumer (:func:`send`).

An administrator names the other application's base URL and the server fetches
``<base path>/plugins/servlet/oauth/consumer-info`` from it. That makes the server an HTTP
client that an administrator — or whoever holds an administrator's session — can aim, so
every fetch is vetted (docs/admin.md, "Add by URL"):

- the URL: http or https, no user name or password, no query, no fragment, a plain base
  path; the path fetched is always the consumer-info path under that base path;
- the host: a DNS name or an IP literal in its canonical spelling (``0x7f000001``,
  ``2130706433``, ``0177.0.0.1`` and ``127.1`` are refused, as a browser would read them as
  IPv4); the name is resolved once, every address it resolves to must be allowed
  (:func:`address_allowed`), and the connection goes to a vetted address — never to a
  second resolution, which an attacker's DNS could answer differently (DNS rebinding);
- never this server itself: one sync worker fetching from itself waits for itself;
- redirects are followed, each hop vetted like the first, at most :data:`MAX_REDIRECTS`;
- one deadline for the whole fetch and a size cap;
- what the administrator sees is generic ("the address is not allowed", "no valid
  consumer info there"): never the HTTP status, whether a port is open, or what document
  came back. The detail goes to the server log at INFO.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from oauthledger.events.settings import Settings
from oauthledger.services.errors import ValidationError
from oauthledger.services.installation import (
    CONSUMER_INFO_PATH,
    RemoteConsumerInfo,
    parse_consumer_info,
)

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host name, port) -> the addresses it resolves to, as strings ("192.0.2.7", "2001:db8::7").
Resolver = Callable[[str, int], Sequence[str]]

FIELD = "base_url"
# A person waits for the fetch, and an administrator must not be able to make the server
# download something big or hang on it: one deadline for all hops, and a size cap.
FETCH_TIMEOUT = 5.0
FETCH_MAX_BYTES = 64 * 1024
# Redirects are followed (an application moved to https, or behind a context path), each
# hop re-vetted exactly like the first; a few hops are plenty.
MAX_REDIRECTS = 3
MAX_URL = 2000

NOT_ALLOWED = "the address is not allowed"
NO_INFO = "no valid consumer info there"
IS_SELF = "that is this server itself (its own consumer info is on the Consumer Info tab)"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A base path is a context path such as /jira: plain segments only, so the admin cannot
# steer the request elsewhere with dot segments, escapes (%2e, %3f, %00) or ';' parameters.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# WHATWG URL, "ends in a number": a host whose last label is a number is read as IPv4 by
# browsers and by inet_aton (getaddrinfo): 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

# Reachable only with OAUTHLEDGER_FETCH_ALLOW_PRIVATE: loopback, RFC 1918, CGNAT
# (RFC 6598, 100.64.0.0/10), IPv6 loopback and unique local addresses (RFC 4193).
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "::1/128", "fc00::/7"))
# RFC 6052 NAT64: the IPv4 address rides in the last 32 bits and is what gets reached.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (getaddrinfo, TCP), each once, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    """How a fetch is vetted. Build it with :func:`policy` from the settings and the
    request; the defaults are the strictest (public addresses only)."""

    allow_private: bool = False
    # (host, port) pairs that name this server: the base URL, the Host the admin used.
    own_origins: frozenset[tuple[str, int]] = frozenset()
    # (address, port) this server listens on; an unspecified address means every
    # address of this host.
    own_sockets: frozenset[tuple[IPAddress, int]] = frozenset()
    resolver: Resolver = system_resolver
    # None: the system's trust store (ssl.create_default_context()).
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    timeout: float = FETCH_TIMEOUT
    max_bytes: int = FETCH_MAX_BYTES
    max_redirects: int = MAX_REDIRECTS


@dataclass(frozen=True)
class Target:
    """One URL to fetch, parsed and checked for shape (not yet for its addresses)."""

    scheme: str
    host: str  # ASCII, lower case, IPv6 without brackets, no trailing dot
    ip: IPAddress | None  # the host when it is an IP literal
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The Host header (and, for https, the name checked in the certificate)."""
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL fetched: always a consumer-info URL."""
        return f"{self.scheme}://{self.host_header}{self.path}"


class _Refused(Exception):
    """A fetch was given up: ``reason`` is for the administrator, ``detail`` for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- addresses -----------------------------------------------------------------------------


def address_allowed(ip: IPAddress, allow_private: bool = False) -> bool:
    """Whether a fetch may connect to ``ip``. Public (globally routable) unicast
    addresses only; with ``allow_private`` also loopback, RFC 1918, CGNAT and IPv6 ULA.
    Unspecified, multicast, link-local (169.254.169.254, the cloud metadata service,
    among them), site-local and reserved addresses are always refused. An IPv6 address
    that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by that IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 64:ff9b::7f00:1 reach 127.0.0.1: judge what is reached.
        if ip.ipv4_mapped is not None:
            return address_allowed(ip.ipv4_mapped, allow_private)
        if ip in _NAT64:
            return address_allowed(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), allow_private)
        if ip.sixtofour is not None and not address_allowed(ip.sixtofour, allow_private):
            return False
        if ip.is_site_local:
            return False
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return False
    if any(ip in net for net in _PRIVATE_NETWORKS):
        return allow_private
    return ip.is_global and not ip.is_reserved


def _canonical(ip: IPAddress) -> IPAddress:
    """The address a socket reaches: IPv4-mapped IPv6 addresses as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_local_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is one of this host's addresses: only those can be bound to."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((str(ip), 0))
        except OSError:
            return False
    return True


# -- URLs ----------------------------------------------------------------------------------


def _host(raw: str) -> tuple[str, IPAddress | None]:
    """(the host in ASCII, its IP when it is a literal). Raises _Refused for odd IPv4
    spellings and ValidationError for what is no host name at all."""
    host = raw[:-1] if raw.endswith(".") else raw
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return str(ip), ip
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValidationError({FIELD: "the host is not a valid host name"}) from None
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise _Refused(NOT_ALLOWED, f"{raw!r} is an IPv4 address in an unusual spelling")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValidationError({FIELD: "the host is not a valid host name"})
    return host, None


def _target(url: str, *, redirect: bool) -> Target:
    """Parse and check the shape of ``url``. For the administrator's URL (``redirect``
    false) a trailing consumer-info path is optional and added; a redirect's target must
    already be a consumer-info URL. Raises ValidationError naming what is wrong."""
    if not url:
        raise ValidationError({FIELD: "is required"})
    if len(url) > MAX_URL:
        raise ValidationError({FIELD: f"must be at most {MAX_URL} characters"})
    if _UNSAFE_CHARS.search(url):
        raise ValidationError({FIELD: "must not contain spaces, control characters or "
                                      "backslashes"})
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError({FIELD: "is not a valid URL (check the host and port)"}) from None
    if parts.scheme not in _DEFAULT_PORTS or not url.lower().startswith(parts.scheme + "://") \
            or not parts.hostname:
        raise ValidationError({FIELD: "must be an absolute http:// or https:// URL"})
    # The admin names an application, not a request: with a query, a fragment or
    # credentials they could pick another path or resource on the target.
    if "@" in parts.netloc:
        raise ValidationError({FIELD: "must not contain a user name or password"})
    if "?" in url:
        raise ValidationError({FIELD: "must not contain a query (?...): give the "
                                      "application's base URL"})
    if "#" in url:
        raise ValidationError({FIELD: "must not contain a fragment (#...): give the "
                                      "application's base URL"})
    if port == 0:
        raise ValidationError({FIELD: "is not a valid URL (check the host and port)"})
    path = parts.path
    if path.endswith(CONSUMER_INFO_PATH):
        path = path[: -len(CONSUMER_INFO_PATH)]
    elif redirect:
        raise ValidationError({FIELD: f"the redirect leads away from {CONSUMER_INFO_PATH}"})
    base_path = path.rstrip("/")
    if base_path and not all(_PATH_SEGMENT.fullmatch(s) for s in base_path.split("/")[1:]):
        raise ValidationError({FIELD: "the path may only be a context path such as /jira "
                                      "(letters, digits, - _ . ~ +; no dot segments)"})
    host, ip = _host(parts.hostname)
    return Target(scheme=parts.scheme, host=host, ip=ip,
                  port=port or _DEFAULT_PORTS[parts.scheme],
                  path=base_path + CONSUMER_INFO_PATH)


# -- vetting -------------------------------------------------------------------------------


def _is_this_server(target: Target, addresses: Sequence[IPAddress],
                    policy: FetchPolicy) -> bool:
    for ip in addresses:
        for own, port in policy.own_sockets:
            if port == target.port and (ip == own or (own.is_unspecified
                                                      and _is_local_address(ip))):
                return True
    return False


def _vet(target: Target, policy: FetchPolicy) -> list[IPAddress]:
    """Resolve the target's host once and return its addresses, all of them allowed;
    the caller connects to these and never resolves the name again (DNS rebinding)."""
    if (target.host, target.port) in policy.own_origins:
        raise _Refused(IS_SELF, f"{target.host}:{target.port} names this server")
    if target.ip is not None:
        addresses: list[IPAddress] = [target.ip]
    else:
        try:
            addresses = [ipaddress.ip_address(a)
                         for a in policy.resolver(target.host, target.port)]
        except (OSError, UnicodeError, ValueError) as exc:
            raise _Refused(NO_INFO, f"cannot resolve {target.host}: {exc}") from None
        if not addresses:
            raise _Refused(NO_INFO, f"{target.host} resolves to no address")
    refused = [str(a) for a in addresses if not address_allowed(a, policy.allow_private)]
    if refused:
        # Every address must be allowed: with one bad one among good ones, an attacker's
        # name could still lead the connection there.
        raise _Refused(NOT_ALLOWED, f"{target.host} resolves to refused {refused}")
    addresses = list(dict.fromkeys(_canonical(a) for a in addresses))
    if _is_this_server(target, addresses, policy):
        raise _Refused(IS_SELF, f"{target.host}:{target.port} is this server")
    return addresses


# -- HTTP ----------------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to one vetted address; it never resolves a name. The TCP
    connection goes to ``address``; the Host header, and for https the SNI and the
    certificate's host name check, use the host name the administrator gave."""

    def __init__(self, target: Target, address: IPAddress, tls: ssl.SSLContext | None,
                 timeout: float) -> None:
        super().__init__(str(address), target.port, timeout=timeout)
        self._address = address
        self._server_name = target.host
        self._tls = tls
        self._live: socket.socket | None = None  # what abort() shuts down
        self.aborted = False

    def connect(self) -> None:
        """Connect to the vetted address (and wrap it in TLS for https)."""
        family = socket.AF_INET6 if self._address.version == 6 else socket.AF_INET
        sock = self._live = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((str(self._address), self.port))
            if self._tls is not None:
                sock = self._live = self._tls.wrap_socket(
                    sock, server_hostname=self._server_name, do_handshake_on_connect=False)
                sock.do_handshake()
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def abort(self) -> None:
        """From another thread: shut the socket down, so a blocked read returns now."""
        self.aborted = True
        if self._live is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: the TLS layer's would change its state
                # under the reading thread.
                socket.socket.shutdown(self._live, socket.SHUT_RDWR)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Refused(NO_INFO, "timed out")
    return left


def _connect(target: Target, addresses: Sequence[IPAddress], policy: FetchPolicy,
             deadline: float, watched: list[_PinnedConnection]) -> _PinnedConnection:
    """A connection to the first vetted address that accepts one."""
    tls = None
    if target.scheme == "https":
        tls = policy.ssl_context or ssl.create_default_context()
    errors: list[str] = []
    for address in addresses:
        conn = _PinnedConnection(target, address, tls, _remaining(deadline))
        watched[:] = [conn]
        try:
            conn.connect()
            return conn
        except OSError as exc:
            errors.append(f"{address}: {exc!r}")
            conn.close()
    raise _Refused(NO_INFO, f"could not connect to {target.host_header}: {errors}")


def _exchange(conn: _PinnedConnection, target: Target,
              policy: FetchPolicy) -> tuple[int, str | None, bytes]:
    """Send the GET and read the answer: (status, Location of a redirect, body of a
    200, at most ``policy.max_bytes``)."""
    conn.request("GET", target.path, headers={
        "Host": target.host_header, "Accept": "application/xml, text/xml",
        "User-Agent": "oauthledger", "Connection": "close"})
    resp = conn.getresponse()
    if resp.status in _REDIRECT_STATUSES:
        return resp.status, resp.getheader("Location"), b""
    if resp.status != 200:
        return resp.status, None, b""
    declared = resp.getheader("Content-Length") or ""
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise _Refused(NO_INFO, f"declares {declared} bytes, more than {policy.max_bytes}")
    body = _read_capped(resp, policy.max_bytes)
    if body is None:
        raise _Refused(NO_INFO, f"sent more than {policy.max_bytes} bytes")
    return resp.status, None, body


def _read_capped(resp: http.client.HTTPResponse, max_bytes: int) -> bytes | None:
    """The response body, or None once it passes ``max_bytes`` (reading stops there)."""
    body = bytearray()
    while len(body) <= max_bytes:
        chunk = resp.read1(min(65536, max_bytes + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body) if len(body) <= max_bytes else None


def _get(target: Target, addresses: Sequence[IPAddress], policy: FetchPolicy,
         deadline: float) -> tuple[int, str | None, bytes]:
    """GET the target from a vetted address before the deadline."""
    watched: list[_PinnedConnection] = []

    def expire() -> None:
        for conn in watched:
            conn.abort()

    # One deadline for the whole exchange, enforced from outside: socket timeouts bound
    # each read only, and a server dripping a byte at a time would hold a worker.
    watchdog = threading.Timer(_remaining(deadline), expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn = _connect(target, addresses, policy, deadline, watched)
        try:
            answer = _exchange(conn, target, policy)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if conn.aborted:
                raise _Refused(NO_INFO, f"{target.url}: timed out") from None
            raise _Refused(NO_INFO, f"{target.url}: {exc!r}") from None
        finally:
            conn.close()
        if conn.aborted:  # cut short: what was read is not the whole answer
            raise _Refused(NO_INFO, f"{target.url}: timed out")
        return answer
    finally:
        watchdog.cancel()


def _fetch(first: Target, policy: FetchPolicy) -> bytes:
    """Fetch the consumer info, following at most ``policy.max_redirects`` redirects,
    vetting every hop like the first."""
    deadline = time.monotonic() + policy.timeout
    target = first
    for hop in range(policy.max_redirects + 1):
        addresses = _vet(target, policy)
        status, location, body = _get(target, addresses, policy, deadline)
        if status == 200:
            return body
        if status not in _REDIRECT_STATUSES or not location:
            raise _Refused(NO_INFO, f"{target.url} answered HTTP {status}")
        if hop == policy.max_redirects:
            raise _Refused(NO_INFO, f"more than {policy.max_redirects} redirects")
        try:
            hop_target = _target(urljoin(target.url, location), redirect=True)
        except ValidationError as exc:
            raise _Refused(NO_INFO, f"redirect to {location!r} refused: {exc}") from None
        if target.scheme == "https" and hop_target.scheme != "https":
            raise _Refused(NO_INFO, f"redirect from https to {location!r} refused")
        target = hop_target
    raise AssertionError("unreachable")  # the loop returns or raises


def _refusal(base_url: str, reason: str, detail: str) -> ValidationError:
    """The generic error the administrator sees; the detail goes to the log only."""
    log.info("add by URL: consumer info from %r not taken: %s", base_url, detail)
    return ValidationError({FIELD: f"could not fetch consumer info from "
                                   f"{urlsplit(base_url).netloc}: {reason}"})


def _first_target(base_url: str) -> Target:
    try:
        return _target(base_url, redirect=False)
    except _Refused as exc:
        raise _refusal(base_url, exc.reason, exc.detail) from None


def vet(base_url: str, policy: FetchPolicy) -> tuple[str, list[IPAddress]]:
    """Everything :func:`fetch_consumer_info` checks before it connects: (the
    consumer-info URL that would be fetched, the vetted addresses it would connect to).
    Raises the same ValidationError the fetch would."""
    base_url = (base_url or "").strip()
    target = _first_target(base_url)
    try:
        addresses = _vet(target, policy)
    except _Refused as exc:
        raise _refusal(base_url, exc.reason, exc.detail) from None
    return target.url, addresses


def fetch_consumer_info(base_url: str, policy: FetchPolicy) -> RemoteConsumerInfo:
    """GET the consumer info of the application at ``base_url`` under ``policy``.

    A URL refused for its shape is a ValidationError on ``base_url`` that says what to
    change. Every other failure is a ValidationError with a generic message — "could not
    fetch consumer info from HOST: the address is not allowed" or "...: no valid consumer
    info there" — and the detail (the status, the connection error, what the document
    was) is logged at INFO."""
    base_url = (base_url or "").strip()
    target = _first_target(base_url)
    try:
        body = _fetch(target, policy)
        return parse_consumer_info(body, target.url)
    except _Refused as exc:
        raise _refusal(base_url, exc.reason, exc.detail) from None
    except ValidationError as exc:
        # What the document was (its root element, say) stays in the log.
        raise _refusal(base_url, NO_INFO, str(exc)) from None


# -- the policy of a request ---------------------------------------------------------------


def _origins(value: str, scheme: str | None) -> set[tuple[str, int]]:
    """(host, port) pairs a Host-like value names; without a port and a known scheme,
    both default ports (these only ever add refusals)."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        port = parts.port
    except ValueError:
        return set()
    if not parts.hostname:
        return set()
    try:
        host, _ = _host(parts.hostname)
    except (_Refused, ValidationError):
        host = parts.hostname
    if port is not None:
        return {(host, port)}
    ports = [_DEFAULT_PORTS[scheme]] if scheme in _DEFAULT_PORTS else list(_DEFAULT_PORTS.values())
    return {(host, p) for p in ports}


def policy(settings: Settings, environ: Mapping[str, Any] | None = None,
           **overrides: Any) -> FetchPolicy:
    """The fetch policy for one request: OAUTHLEDGER_FETCH_ALLOW_PRIVATE, and this
    server's own names and listening address so that a fetch never aims at the server
    itself — OAUTHLEDGER_BASE_URL, and from the request's WSGI ``environ`` the Host and
    X-Forwarded-Host it came with and the socket it came in on (SERVER_NAME and
    SERVER_PORT; gunicorn fills them from the bound socket). ``overrides`` replace
    fields (resolver, ssl_context, timeout, ...)."""
    origins: set[tuple[str, int]] = set()
    sockets: set[tuple[IPAddress, int]] = set()
    if settings.base_url:
        base = urlsplit(settings.base_url)
        origins |= _origins(base.netloc, base.scheme)
    if environ:
        scheme = str(environ.get("wsgi.url_scheme") or "http")
        origins |= _origins(str(environ.get("HTTP_HOST") or ""), scheme)
        # Believed without a trusted proxy: a forged value only refuses more.
        for value in str(environ.get("HTTP_X_FORWARDED_HOST") or "").split(","):
            origins |= _origins(value, None)
        name, port = str(environ.get("SERVER_NAME") or ""), str(environ.get("SERVER_PORT") or "")
        if port.isdigit():
            bracketed = f"[{name}]" if ":" in name and not name.startswith("[") else name
            origins |= _origins(f"{bracketed}:{port}", scheme)
    for host, port_number in origins:
        # An origin that is an IP literal is also a socket: ::ffff:127.0.0.1 reaches it too.
        with contextlib.suppress(ValueError):
            sockets.add((_canonical(ipaddress.ip_address(host)), port_number))
    return FetchPolicy(allow_private=settings.fetch_allow_private,
                       own_origins=frozenset(origins), own_sockets=frozenset(sockets),
                       **overrides)


# -- requests to a service provider ----------------------------------------------------------

# A call through a service provider (services/connections.py) relays the provider's
# answer: capped like the consumer info, only larger.
SEND_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """What a service provider answered: status, headers (lower-case names; a repeated
    header's values joined with ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes


UNREACHABLE = "the service provider could not be reached"


class Unreachable(Exception):
    """A request to a service provider got no usable answer: ``reason`` is for the user
    (generic, like the consumer-info refusals), the detail goes to the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def request_target(url: str) -> Target:
    """Parse an absolute http(s) URL for :func:`send`: the path and query are kept as
    given; user names, passwords and odd IPv4 spellings are refused (Unreachable)."""
    if not url or len(url) > 8000 or _UNSAFE_CHARS.search(url):
        raise Unreachable(NOT_ALLOWED, f"unusable URL {url[:200]!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Unreachable(NOT_ALLOWED, f"unparsable URL {url[:200]!r}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc \
            or port == 0:
        raise Unreachable(NOT_ALLOWED, f"not an absolute http(s) URL: {url[:200]!r}")
    try:
        host, ip = _host(parts.hostname)
    except _Refused as exc:
        raise Unreachable(exc.reason, exc.detail) from None
    except ValidationError:
        raise Unreachable(NOT_ALLOWED, f"bad host in {url[:200]!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=host, ip=ip,
                  port=port or _DEFAULT_PORTS[parts.scheme], path=path)


def send(method: str, url: str, headers: Mapping[str, str], body: bytes,
         policy: FetchPolicy) -> Answer:
    """Send one request to a service provider under ``policy`` — the same vetting as the
    consumer-info fetch (allowed addresses only, resolved once and pinned, never this
    server, one deadline, a size cap on the answer) — and return its answer. Redirects
    are returned, not followed: a signed request is valid for its own URL only (RFC 5849
    §3.4.1). Raises :class:`Unreachable`."""
    target = request_target(url)
    deadline = time.monotonic() + policy.timeout
    try:
        addresses = _vet(target, policy)
    except _Refused as exc:
        log.info("service provider request to %s refused: %s", target.host_header, exc.detail)
        # The fetch's generic reasons speak of consumer info; here it is the provider.
        reason = exc.reason if exc.reason != NO_INFO else UNREACHABLE
        raise Unreachable(reason, exc.detail) from None
    watched: list[_PinnedConnection] = []

    def expire() -> None:
        for conn in watched:
            conn.abort()

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            conn = _connect(target, addresses, policy, deadline, watched)
        except _Refused as exc:
            log.info("service provider %s unreachable: %s", target.host_header, exc.detail)
            raise Unreachable(UNREACHABLE, exc.detail) from None
        try:
            out_headers = {"Host": target.host_header, "User-Agent": "oauthledger",
                           "Connection": "close", **dict(headers)}
            conn.request(method, target.path, body=body or None, headers=out_headers)
            resp = conn.getresponse()
            collected: dict[str, list[str]] = {}
            for name, value in resp.getheaders():
                collected.setdefault(name.lower(), []).append(value)
            data = _read_capped(resp, policy.max_bytes)
            if data is None:
                raise Unreachable(f"the service provider's answer is larger than "
                                  f"{policy.max_bytes} bytes")
            if conn.aborted:
                raise Unreachable("the service provider did not answer in time")
            return Answer(resp.status, {n: ", ".join(v) for n, v in collected.items()}, data)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if conn.aborted:
                raise Unreachable("the service provider did not answer in time") from None
            log.info("service provider %s: %r", target.host_header, exc)
            raise Unreachable(UNREACHABLE, repr(exc)) from None
        finally:
            conn.close()
    finally:
        watchdog.cancel()
