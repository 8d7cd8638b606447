"""Rebuilding the URL the client signed.

Behind a reverse proxy the client signs the external URL (``https://jira.example.com/jira/...``)
while the application sees ``http://127.0.0.1:8080/...``: a signature computed over the
wrong URL never verifies, the classic "dance completes, then every call is a 401"
(docs/oauth.md, "The URL that is signed"). The URL comes, in order of preference, from
the configured ``OAUTHLEDGER_BASE_URL``, from forwarding headers sent by a trusted proxy,
or from the request itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote, urlsplit

# RFC 3986 pchar plus "/" and "%" (already-encoded octets stay as they are): only raw
# spaces and non-ASCII characters of a decoded path get percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_DEFAULT_PORTS = {"http": "80", "https": "443"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower().replace("_", "-"): v for k, v in headers.items()}


def _first(value: str | None) -> str | None:
    """The first element of a comma-separated header: the value the proxy nearest the
    client (the one that saw the external URL) set."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def forwarded_pairs(value: str | None) -> dict[str, str]:
    """RFC 7239 ``Forwarded``: the pairs of its first element."""
    out: dict[str, str] = {}
    first = _first(value)
    if not first:
        return out
    for pair in first.split(";"):
        name, sep, val = pair.partition("=")
        if sep:
            out[name.strip().lower()] = val.strip().strip('"')
    return out


def is_trusted(remote_addr: str | None, trusted_proxies: Sequence[Network]) -> bool:
    """True when ``remote_addr`` lies inside one of ``trusted_proxies``."""
    if not remote_addr or not trusted_proxies:
        return False
    try:
        addr = ipaddress.ip_address(remote_addr.strip().strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in trusted_proxies)


def _join(scheme: str, netloc: str, prefix: str, path: str, query: str) -> str:
    url = _url_without_query(scheme, netloc, prefix, path)
    return f"{url}?{query}" if query else url


@lru_cache(maxsize=4096)
def _url_without_query(scheme: str, netloc: str, prefix: str, path: str) -> str:
    # Per request on the hot path; a front end serves a bounded set of hosts and paths,
    # so urllib's quote runs once per path (docs/BENCHMARKS.md, "Front end").
    path = quote(path or "/", safe=_PATH_SAFE)
    if not path.startswith("/"):
        path = "/" + path
    prefix = prefix.rstrip("/")
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        path = prefix + path
    return f"{scheme}://{netloc}{path}"


def _with_port(host: str, scheme: str, port: str | None) -> str:
    if not port or port == _DEFAULT_PORTS.get(scheme):
        return host
    # Already carries a port (host:port, or [v6]:port)?
    if host.rsplit("]", 1)[-1].count(":") == 1 or (not host.startswith("[") and ":" in host):
        return host
    return f"{host}:{port}"


def signed_url(
    *,
    base_url: str | None,
    scheme: str,
    host: str,
    path: str,
    query: str,
    remote_addr: str | None,
    headers: Mapping[str, str],
    trusted_proxies: Sequence[Network],
) -> str:
    """Rebuild the URL the client signed, query string included.

    - ``base_url`` (``OAUTHLEDGER_BASE_URL``, e.g. ``https://jira.example.com/jira``)
      wins: its scheme, host, port and path prefix replace the request's. A path that
      already starts with the prefix (proxy that does not strip it) is not prefixed twice.
    - Otherwise, when ``remote_addr`` is a trusted proxy, ``Forwarded`` (RFC 7239) or
      ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` / ``X-Forwarded-Port`` /
      ``X-Forwarded-Prefix`` override the request's scheme, host and port.
    - Otherwise the request's own ``scheme`` and ``host`` (the Host header).

    ``path`` is the request path (raw or decoded; raw spaces and non-ASCII characters
    are percent-encoded as UTF-8), ``query`` the raw query string.
    """
    if base_url:
        parts = urlsplit(base_url)
        return _join(parts.scheme.lower(), parts.netloc, parts.path, path, query)

    prefix = ""
    if is_trusted(remote_addr, trusted_proxies):
        h = _lower_headers(headers)
        fwd = forwarded_pairs(h.get("forwarded"))
        proto = fwd.get("proto") or _first(h.get("x-forwarded-proto"))
        fhost = fwd.get("host") or _first(h.get("x-forwarded-host"))
        port = _first(h.get("x-forwarded-port"))
        prefix = _first(h.get("x-forwarded-prefix")) or ""
        if proto and proto.lower() in _DEFAULT_PORTS:
            scheme = proto.lower()
        if fhost:
            host = fhost
        elif port:
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        host = _with_port(host, scheme, port)
    return _join(scheme.lower(), host, prefix, path, query)
