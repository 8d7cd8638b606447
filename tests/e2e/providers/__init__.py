"""OAuth 1.0a service providers that oauthledger did not write, for the consumer-side
end-to-end tests (tests/e2e/test_consumer_side.py): one on Authlib's Flask integration
(:mod:`.authlib_provider`), one directly on oauthlib's endpoints (:mod:`.oauthlib_provider`).

Both behave the same and run as their own process::

    python -m tests.e2e.providers.authlib_provider --port N --client-key K \\
        [--client-secret S] [--rsa-public-key-file F] [--user NAME]

- ``POST /oauth/initiate`` — temporary credentials (RFC 5849 §2.1);
- ``GET /oauth/authorize?oauth_token=T`` — the approval form (§2.2); the form POSTs back
  to ``/oauth/authorize`` with ``approve`` or ``deny`` (and a ``user`` field, the person
  approving: ``--user`` by default); a test may also GET
  ``/oauth/authorize?oauth_token=T&decision=approve`` (or ``deny``) to decide at once;
- ``POST /oauth/token`` — token credentials (§2.3);
- ``GET /api/me`` — a protected resource (§3): JSON ``{"name": <the approving user>,
  "consumer": <the consumer key>}``;
- ``GET /`` — answers 200 once the server is up.

One consumer is registered: ``--client-key`` with ``--client-secret`` (HMAC-SHA1) and/or
the RSA public key in ``--rsa-public-key-file`` (RSA-SHA1). Everything (tokens, nonces)
is in memory and lost when the process ends.

This module holds what the two share: the command line, the approval form, and a small
in-memory cache with expiry (the nonce and temporary-credential store).
"""

from __future__ import annotations

import argparse
import html
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_USER = "provider-alice"
# RFC 5849 §3.3: a nonce only has to be unique among requests with the same timestamp,
# and a server may refuse old timestamps; one hour of memory outlives both providers'
# timestamp windows (Authlib: 300 s, oauthlib: 600 s).
NONCE_TTL = 3600.0
# Temporary credentials live ten minutes, as oauthledger's own do (docs/oauth.md).
TEMPORARY_TTL = 600.0


@dataclass(frozen=True)
class ProviderConfig:
    """The one consumer a provider process knows, and the person who approves."""

    port: int
    client_key: str
    client_secret: str | None
    rsa_public_key: str | None
    user: str

    @property
    def base_url(self) -> str:
        """Where the provider listens: http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"


def parse_args(prog: str, argv: Sequence[str] | None = None) -> ProviderConfig:
    """Read the command line shared by both providers; exits with one line on bad input."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-key", required=True)
    parser.add_argument("--client-secret", default=None,
                        help="shared secret: the consumer may sign with HMAC-SHA1")
    parser.add_argument("--rsa-public-key-file", default=None,
                        help="PEM public key: the consumer may sign with RSA-SHA1")
    parser.add_argument("--user", default=DEFAULT_USER,
                        help="who approves when the form or query names nobody")
    args = parser.parse_args(argv)
    rsa_key = None
    if args.rsa_public_key_file:
        try:
            with open(args.rsa_public_key_file, encoding="ascii") as f:
                rsa_key = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"cannot read --rsa-public-key-file: {exc}")
    if not args.client_secret and not rsa_key:
        parser.error("give --client-secret, --rsa-public-key-file, or both")
    return ProviderConfig(port=args.port, client_key=args.client_key,
                          client_secret=args.client_secret or None, rsa_public_key=rsa_key,
                          user=args.user)


def authorize_page(library: str, token: str, user: str) -> str:
    """The approval form for temporary credentials ``token`` (RFC 5849 §2.2): who
    approves, and an approve and a deny button."""
    t, u = html.escape(token, quote=True), html.escape(user, quote=True)
    return f"""<!doctype html>
<html><head><title>Authorize access ({html.escape(library)} provider)</title></head>
<body>
<h1>An application asks for access to your account</h1>
<form method="post" action="/oauth/authorize">
  <input type="hidden" name="oauth_token" value="{t}">
  <label>Signed in as <input type="text" name="user" value="{u}"></label>
  <button type="submit" name="approve" value="1">Approve</button>
  <button type="submit" name="deny" value="1">Deny</button>
</form>
</body></html>
"""


def decision_of(values: dict[str, str]) -> str | None:
    """``approve``, ``deny`` or None (no decision yet: show the form), from the form's
    buttons or the ``decision`` query flag."""
    flag = values.get("decision", "")
    if flag in ("approve", "deny"):
        return flag
    if "approve" in values:
        return "approve"
    if "deny" in values:
        return "deny"
    return None


class MemoryCache:
    """A thread-safe dict with per-entry expiry: ``get``/``set``/``delete``/``has``, the
    interface Authlib's Flask cache hooks call (timeouts in seconds)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The value, or None when absent or expired."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._data[key]
                return None
            return entry[1]

    def set(self, key: str, value: Any, timeout: float = TEMPORARY_TTL) -> None:
        """Store ``value`` for ``timeout`` seconds."""
        with self._lock:
            self._data[key] = (time.monotonic() + timeout, value)

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._data.pop(key, None)

    def has(self, key: str) -> bool:
        """True while ``key`` holds an unexpired value."""
        return self.get(key) is not None

    def add(self, key: str, value: Any, timeout: float) -> bool:
        """Store ``value`` unless ``key`` is present; True when it was stored (the
        atomic check-and-record a nonce check needs)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] > time.monotonic():
                return False
            self._data[key] = (time.monotonic() + timeout, value)
            return True
