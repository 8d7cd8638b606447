"""Parsing a signed request into its OAuth parameters (RFC 5849 §3.4.1.3, §3.5).

:func:`parse_request` is framework independent: the Falcon app passes the method, the URL
the client signed (see :mod:`oauthledger.services.oauth.urls`), the headers, the body and the
Content-Type. It accepts what real clients send (docs/oauth.md, "Where parameters may
come from") and refuses malformed input with an :class:`OAuthProblem`,
never another exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from oauthlib.oauth1.rfc5849.signature import base_string_uri

from oauthledger.services.oauth.problems import OAuthProblem

PLAINTEXT = "PLAINTEXT"
ACCEPTABLE_VERSIONS = "1.0-1.0"
_VERSIONS = frozenset({"1.0", "1.0a", "1.0A"})

# RFC 5849 §3.1: these are required in every signed request ...
_ALWAYS_REQUIRED = ("oauth_consumer_key", "oauth_signature_method", "oauth_signature")
# ... and these too, except that PLAINTEXT may omit them.
_REQUIRED_UNLESS_PLAINTEXT = ("oauth_timestamp", "oauth_nonce")

# Nonces are 1..64 unreserved characters (RFC 3986 §2.3), whatever shape (docs/oauth.md,
# "Where parameters may come from").
_NONCE = re.compile(r"[A-Za-z0-9\-._~]{1,64}")
# Digits only; fewer than 10 digits occur in the RFC's own vectors. Up to 16 digits, so
# a timestamp in milliseconds (13) reaches the window check, whose advice explains it.
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
# A percent sign not followed by two hex digits.
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 5849 §3.5.1 / RFC 2617 auth-param: name = "quoted value" (or a bare token, which
# some clients send for realm or version), separated by commas with optional spaces.
# Unrolled quoted-string loops ([^"\\]*(?:\\.[^"\\]*)*): alternation per character was
# several times slower.
_AUTH_PARAM = re.compile(
    r'[ \t]*([^\s=,"]+)[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))[ \t]*'
)
# The same without groups, for validating the whole list in one pass.
_ONE = r'[ \t]*[^\s=,"]+[ \t]*=[ \t]*(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^\s,"]*)[ \t]*'
_AUTH_PARAMS = re.compile(f"(?:{_ONE}(?:,{_ONE})*)?")
_WS = re.compile(r"\s").search
_QUOTED_PAIR = re.compile(r"\\(.)")
# What a body must look like to be taken as a form when no Content-Type says so:
# printable ASCII without spaces, quotes, braces or angle brackets (JSON, XML and plain
# text fail this).
_FORMISH = re.compile(r"[A-Za-z0-9\-._~%+!*'(),;:@/?=&]*\Z")
_FORM_TYPE = "application/x-www-form-urlencoded"
# Characters no OAuth parameter and no identifier holds: control characters (Unicode
# category Cc: U+0000-U+001F, U+007F-U+009F) and unpaired surrogates (no UTF-8 form,
# RFC 3629 §3). Consumer keys, tokens, nonces, signatures and verifiers are printable;
# NUL would also reach PostgreSQL, whose text cannot hold it (docs/event-store.md,
# "Identifiers the database cannot hold").
_UNUSABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNUSABLE_SEARCH = _UNUSABLE.search
# Parameters checked by that rule: the protocol's own and its extensions
# (xoauth_requestor_id names a user). Other parameters belong to the resource.
_CHECKED_PREFIXES = ("oauth_", "xoauth_")


def _rejected(name: str, advice: str) -> OAuthProblem:
    return OAuthProblem("parameter_rejected", advice, oauth_parameters_rejected=name)


def unusable_character(text: str) -> str | None:
    """The first character of ``text`` that no identifier holds (a control character or
    an unpaired surrogate), written ``U+XXXX``; None when there is none."""
    found = _UNUSABLE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def _check_characters(name: str, value: str, where: str) -> None:
    """Refuse an OAuth parameter whose name or value holds a character no parameter
    holds (see ``_UNUSABLE``), naming the parameter (percent-encoded when its name is
    the culprit, as RFC 5849 §3.6 writes any parameter)."""
    bad = unusable_character(name) or unusable_character(value)
    if bad is not None:
        shown = name if unusable_character(name) is None else \
            quote(name.encode("utf-8", "surrogatepass"), safe="")
        raise _rejected(shown, f"{shown} in the {where} holds {bad}, a control character "
                               "or unpaired surrogate; OAuth parameters are printable text")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed signed request.

    ``params`` is every parameter that enters the signature base string (query, form
    body and Authorization-header ``oauth_*`` parameters, without ``realm`` and
    ``oauth_signature``); an ``oauth_*`` parameter sent in two places with the same
    value appears once. ``repeated`` holds those dropped second copies: some client
    libraries sign both copies, so verification tries once with them added.
    """

    method: str
    base_uri: str
    params: tuple[tuple[str, str], ...]
    oauth: dict[str, str]
    signature: str
    repeated: tuple[tuple[str, str], ...] = ()

    @property
    def consumer_key(self) -> str:
        """``oauth_consumer_key``."""
        return self.oauth["oauth_consumer_key"]

    @property
    def token(self) -> str | None:
        """``oauth_token`` (None for two-legged and request-token calls). An empty
        value counts as absent: some libraries send ``oauth_token=""`` for 2LO."""
        return self.oauth.get("oauth_token") or None

    @property
    def signature_method(self) -> str:
        """``oauth_signature_method`` as sent."""
        return self.oauth["oauth_signature_method"]

    @property
    def timestamp(self) -> str | None:
        """``oauth_timestamp`` (may be absent for PLAINTEXT)."""
        return self.oauth.get("oauth_timestamp")

    @property
    def nonce(self) -> str | None:
        """``oauth_nonce`` (may be absent for PLAINTEXT)."""
        return self.oauth.get("oauth_nonce")

    @property
    def callback(self) -> str | None:
        """``oauth_callback``."""
        return self.oauth.get("oauth_callback")

    @property
    def verifier(self) -> str | None:
        """``oauth_verifier``."""
        return self.oauth.get("oauth_verifier")

    @property
    def version(self) -> str | None:
        """``oauth_version``."""
        return self.oauth.get("oauth_version")

    @property
    def other_params(self) -> dict[str, str]:
        """Parameters that are not ``oauth_*`` (e.g. ``xoauth_requestor_id``); the last
        value wins when a name repeats."""
        return {k: v for k, v in self.params if not k.startswith("oauth_")}


@lru_cache(maxsize=4096)
def _base_uri(url_without_query: str) -> str:
    # oauthlib's base_string_uri costs ~20 µs (urlparse, ipaddress); a front end serves
    # a bounded set of paths, so cache it.
    return base_string_uri(url_without_query)


def _pct_decode(text: str, where: str, plus_is_space: bool) -> str:
    """Strict percent-decoding (RFC 5849 §3.6 / HTML form rules): bad escapes and bytes
    that are not UTF-8 are refused rather than guessed."""
    if "%" not in text and not (plus_is_space and "+" in text):
        return text
    if plus_is_space:
        text = text.replace("+", " ")
    if _BAD_PERCENT.search(text):
        raise OAuthProblem(
            "parameter_rejected",
            f"the {where} holds a '%' that is not followed by two hex digits; "
            "percent-encode parameters as RFC 5849 §3.6 says",
        )
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise OAuthProblem(
            "parameter_rejected",
            f"the {where} holds percent-encoded bytes that are not UTF-8 (RFC 5849 §3.6)",
        ) from None


def parse_form(text: str, where: str) -> list[tuple[str, str]]:
    """Decode ``application/x-www-form-urlencoded`` text (also query strings): ``+`` is a
    space, a name without ``=`` has the empty value, empty segments are skipped."""
    out: list[tuple[str, str]] = []
    if not text:
        return out
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.append((_pct_decode(name, where, True), _pct_decode(value, where, True)))
    return out


def parse_authorization(header: str) -> list[tuple[str, str]] | None:
    """The parameters of an ``Authorization: OAuth ...`` header, ``realm`` excluded
    (RFC 5849 §3.4.1.3.1: it is never signed). None when the scheme is not OAuth.
    Commas with or without following spaces are both accepted."""
    stripped = header.lstrip()
    if stripped[:5].lower() != "oauth" or (len(stripped) > 5 and not stripped[5].isspace()):
        return None
    rest = stripped[5:].strip()
    pairs = _split_simple(rest)
    if pairs is None:
        # Realms with commas, escaped quotes, odd spacing: the full grammar.
        if not _AUTH_PARAMS.fullmatch(rest):
            raise OAuthProblem(
                "parameter_rejected",
                "the Authorization header is malformed; expected "
                'OAuth name="percent-encoded value", name="value", ...',
            )
        pairs = []
        for name, quoted, bare in _AUTH_PARAM.findall(rest):
            raw = quoted or bare
            if "\\" in raw:
                raw = _QUOTED_PAIR.sub(r"\1", raw)
            pairs.append((name, raw))
    # Decoded only where there is something to decode: per request on the hot path.
    where = "Authorization header"
    return [
        (
            _pct_decode(name, where, False) if "%" in name else name,
            _pct_decode(raw, where, False) if "%" in raw else raw,
        )
        for name, raw in pairs
        if name.lower() != "realm"
    ]


def _split_simple(rest: str) -> list[tuple[str, str]] | None:
    """Fast path for the usual header: values are percent-encoded (RFC 5849 §3.5.1), so
    they hold no comma, quote or backslash and a split on "," is exact. None sends
    anything unusual to the regex grammar."""
    if not rest:
        return []
    out: list[tuple[str, str]] = []
    for part in rest.split(","):
        name, sep, val = part.partition("=")
        name = name.strip()
        val = val.strip()
        if not sep or not name or '"' in name or _WS(name):
            return None
        if val[:1] == '"':
            if len(val) < 2 or val[-1] != '"':
                return None
            val = val[1:-1]
        elif _WS(val):
            return None
        if '"' in val or "\\" in val:
            return None
        out.append((name, val))
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name) or headers.get(name.lower()) or headers.get(name.upper())
    if value is not None:
        return value
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def body_params(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    """The parameters of a form body (RFC 5849 §3.4.1.3.1: only an
    application/x-www-form-urlencoded body has them, or a body sent without a
    Content-Type that reads as a form); [] for any other body."""
    if not body:
        return []
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != _FORM_TYPE:
            return []  # RFC 5849 §3.4.1.3.1: only form bodies carry parameters
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise OAuthProblem(
                "parameter_rejected",
                "the form body holds raw non-ASCII bytes; percent-encode them as UTF-8",
            ) from None
        return parse_form(text.strip(), "form body")
    # Some clients POST a form with no Content-Type at all (docs/oauth.md, "Where
    # parameters may come from"). Take the body as a form only when it looks like one;
    # anything else is not ours to parse.
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return []
    if "=" not in text or not _FORMISH.match(text):
        return []
    try:
        return parse_form(text, "form body")
    except OAuthProblem:
        return []


def parse_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    content_type: str | None,
) -> SignedRequest:
    """Collect and check the OAuth parameters of a request.

    ``url`` is the URL the client signed, query string included. Raises
    :class:`OAuthProblem` (``parameter_absent``, ``parameter_rejected``,
    ``version_rejected``) for anything malformed; nothing else escapes.
    """
    try:
        # RFC 3986 §3.5: the fragment ends the URL, and a "?" inside it starts no query.
        without_query, _, query = url.partition("#")[0].partition("?")
        base_uri = _base_uri(without_query)  # RFC 5849 §3.4.1.2
    except ValueError as exc:
        raise OAuthProblem(
            "parameter_rejected", f"the request URL {url!r} cannot be used: {exc}"
        ) from None

    sources: list[tuple[str, list[tuple[str, str]]]] = []
    auth = _header(headers, "Authorization")
    # A server hands over latin-1 text, but the verify API's JSON can carry unpaired
    # surrogates, which no signature base string can encode (RFC 3629 §3).
    for where, text in (("request URL", url), ("Authorization header", auth or "")):
        if not text.isascii() and _SURROGATE.search(text):
            raise OAuthProblem("parameter_rejected", f"the {where} holds an unpaired "
                               "surrogate, which is not text; send UTF-8")
    if auth:
        header_params = parse_authorization(auth)
        if header_params:
            sources.append(("Authorization header", header_params))
    if query:
        sources.append(("query string", parse_form(query, "query string")))
    form = body_params(body, content_type)
    if form:
        sources.append(("form body", form))

    params: list[tuple[str, str]] = []
    repeated: list[tuple[str, str]] = []
    oauth: dict[str, str] = {}
    oauth_where: dict[str, str] = {}
    signature: str | None = None
    for where, pairs in sources:
        seen_here: set[str] = set()
        for name, value in pairs:
            if name.startswith(_CHECKED_PREFIXES) and (_UNUSABLE_SEARCH(name)
                                                       or _UNUSABLE_SEARCH(value)):
                _check_characters(name, value, where)  # raises, naming the parameter
            if not name.startswith("oauth_"):
                params.append((name, value))  # RFC 5849 §3.4.1.3.1: all of them, repeats too
                continue
            if name in seen_here:
                raise _rejected(name, f"{name} appears twice in the {where}")
            seen_here.add(name)
            if name in oauth:
                if oauth[name] != value:
                    raise _rejected(
                        name,
                        f"{name} has different values in the {oauth_where[name]} and "
                        f"the {where}; send it once",
                    )
                # The same value in two places counts once (docs/oauth.md, "Where
                # parameters may come from").
                if name != "oauth_signature":
                    repeated.append((name, value))
                continue
            oauth[name] = value
            oauth_where[name] = where
            if name == "oauth_signature":
                signature = value
            else:
                params.append((name, value))

    method_name = oauth.get("oauth_signature_method")
    required = _ALWAYS_REQUIRED
    if method_name != PLAINTEXT:
        required = _ALWAYS_REQUIRED + _REQUIRED_UNLESS_PLAINTEXT
    absent = [n for n in required if not oauth.get(n)]
    if absent:
        raise OAuthProblem(
            "parameter_absent",
            "the request lacks " + ", ".join(absent)
            + " (send them in the Authorization header, the query string or a form body)",
            oauth_parameters_absent="&".join(absent),
        )

    version = oauth.get("oauth_version")
    if version is not None and version not in _VERSIONS:
        raise OAuthProblem(
            "version_rejected",
            f"oauth_version {version!r} is not supported; send 1.0 or leave it out",
            oauth_acceptable_versions=ACCEPTABLE_VERSIONS,
        )
    nonce = oauth.get("oauth_nonce")
    if nonce is not None and not _NONCE.fullmatch(nonce):
        raise _rejected(
            "oauth_nonce",
            "oauth_nonce must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~",
        )
    timestamp = oauth.get("oauth_timestamp")
    if timestamp is not None and not _TIMESTAMP.fullmatch(timestamp):
        raise _rejected(
            "oauth_timestamp",
            f"oauth_timestamp {timestamp!r} must be whole seconds since 1970-01-01 UTC "
            "(digits only)",
        )

    return SignedRequest(
        method=method.upper(),
        base_uri=base_uri,
        params=tuple(params),
        oauth=oauth,
        signature=signature or "",
        repeated=tuple(repeated),
    )
