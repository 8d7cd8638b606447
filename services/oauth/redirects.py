"""Where a redirect really goes: URLs judged the way a browser will read them.

Python's ``urllib.parse`` and a browser disagree on hostile input: a browser (the WHATWG
URL Standard) strips ASCII tab and newline anywhere, reads ``\\`` as ``/`` in http(s)
URLs, and percent-encodes what Python leaves raw. So ``/\\t/evil.example.com`` is a
local path to Python and ``//evil.example.com`` to a browser, and
``https://evil.example.com\\@good.example.com/cb`` has the host good.example.com for
Python and evil.example.com for a browser. Every check here therefore parses with a
WHATWG-conformant parser (``ada-url``, the parser Node.js uses), compares origins as the
browser will see them, refuses anything ambiguous, and hands back the browser's own
serialization, which is plain ASCII and so also safe to put in a ``Location`` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import ada_url

# A base that can never be a real origin (RFC 2606 reserves .invalid): relative targets
# are resolved against it and must stay on it.
_LOCAL_BASE = "https://oauthledger.invalid/"
_LOCAL_ORIGIN = "https://oauthledger.invalid"
MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class Origin:
    """scheme://host[:port] as a browser computes it (host lowercased and IDNA-encoded,
    default port dropped)."""

    scheme: str
    host: str
    port: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{':' + self.port if self.port else ''}"


def _parse(url: str, base: str | None = None) -> ada_url.URL | None:
    try:
        return ada_url.URL(url, base) if base else ada_url.URL(url)
    except (ValueError, TypeError):
        return None


def _is_plain(text: str) -> bool:
    """Printable ASCII without space or backslash: nothing a browser would strip, rewrite
    or encode, so the text means the same to every parser that reads it."""
    return all(0x21 <= ord(c) <= 0x7E for c in text) and "\\" not in text


def local_target(target: str | None) -> str:
    """The path to follow after sign-in: ``target`` if a browser resolves it to a path on
    this site, else ``/``. The result is the browser's serialization (path, query and
    fragment), ASCII only, safe for a ``Location`` header (no open redirect)."""
    if not target or len(target) > MAX_URL_LENGTH or not target.startswith("/"):
        return "/"
    parsed = _parse(target, _LOCAL_BASE)
    if parsed is None or parsed.origin != _LOCAL_ORIGIN:
        return "/"
    # The fragment is dropped: the server never needs it, and a browser leaves some
    # characters raw there. A path that serializes as "//..." would be read as a
    # network-path reference when sent back as a relative Location.
    out = f"{parsed.pathname}{parsed.search}"
    if not _is_plain(out) or not out.startswith("/") or out.startswith("//"):
        return "/"
    return out


@dataclass(frozen=True)
class CheckedUrl:
    """An absolute http(s) URL that reads the same to a browser and to us."""

    href: str
    origin: Origin


def absolute_http_url(url: str) -> CheckedUrl | None:
    """``url`` if it is an absolute http(s) URL with a host, no user info, and no
    character a browser would strip or reinterpret; ``None`` otherwise.

    RFC 5849 §2.1 asks for an absolute URI; on top of that, anything a browser reads
    differently from the text (tabs, newlines, backslashes, spaces, control or
    non-ASCII characters, ``user@`` before the host) is refused rather than guessed at.
    """
    if not url or len(url) > MAX_URL_LENGTH or not _is_plain(url):
        return None
    parsed = _parse(url)
    if parsed is None or parsed.protocol not in ("http:", "https:"):
        return None
    if not parsed.hostname or parsed.username or parsed.password:
        return None
    # A browser forgives "https:host" and "https:///host"; Python does not. Both must
    # see the same "scheme://authority", and "@" there means user info, even an empty one.
    ours = urlsplit(url)
    if (not url.lower().startswith(parsed.protocol + "//") or "@" in ours.netloc
            or (ours.hostname or "") != parsed.hostname):
        return None
    origin = Origin(parsed.protocol[:-1], parsed.hostname, parsed.port)
    return CheckedUrl(parsed.href, origin)
