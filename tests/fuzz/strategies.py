"""Hypothesis strategies for hostile HTTP input: text with every kind of trouble in it,
header values as a server hands them over, OAuth parameters and Authorization headers
with odd quoting and encoding, query strings, form and JSON bodies, paths.

What a real server can deliver bounds what is generated: header values are latin-1 text
without CR, LF or NUL (WSGI, PEP 3333; gunicorn refuses the rest), paths and queries are
percent-encoded bytes, bodies are bytes. Inside those bounds anything goes: NUL and other
control characters percent-encoded, unpaired surrogates in JSON (``"\\ud800"``), bytes
that are not UTF-8, values far past every length limit, repeated and conflicting
parameters.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# Values that have broken parsers before: encodings, separators, quoting, lengths.
TRICKY = [
    "", " ", "\x00", "\x01", "\t", "\x7f", "\x85", "\u2028", "\ufeff", "\ud800", "\udfff",
    "%", "%0", "%00", "%zz", "%C3%28", "%ED%A0%80", "%25", "+", "&", "=", ",", ";", '"',
    "'", "\\", '\\"', "/", "//", "../..", "?", "#", "\u202e", "é", "😀", "null", "true",
    "0", "-1", "1e400", "99999999999999999999", "oob", "OAuth", "realm",
    "http://client.test/cb", "https://127.0.0.1:1/x", "http://user@client.test/",
    "javascript:alert(1)", "<script>", "{{7*7}}", "${x}", "a" * 300,
]
OAUTH_NAMES = [
    "oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature",
    "oauth_timestamp", "oauth_nonce", "oauth_version", "oauth_callback", "oauth_verifier",
    "oauth_session_handle", "xoauth_requestor_id", "realm", "OAUTH_TOKEN", "oauth_",
    "oauth_x",
]
METHODS = ["HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512", "RSA-SHA1", "PLAINTEXT", "hmac-sha1",
           "MD5", ""]
# Form and query field names the app reads somewhere (pages, login, filters).
FIELDS = [
    "csrf_token", "username", "password", "next", "key", "name", "token", "approve",
    "deny", "user", "consumer", "status", "include", "done", "baseUrl", "base_url",
    "description", "callback_url", "public_key", "shared_secret", "secret",
    "signature_methods", "three_legged", "two_legged_user", "allow_impersonation",
    "allow_oauth10", "allow_plaintext_over_http", "generate_secret", "signing",
    "consumer_key", "request_token_url", "authorize_url", "access_token_url",
]
# JSON API field names (consumers, providers, consumer info, verify).
JSON_FIELDS = [
    "key", "name", "description", "callbackUrl", "publicKey", "sharedSecret",
    "generateSecret", "signatureMethods", "threeLegged", "twoLeggedUser",
    "allowImpersonation", "allowOAuth10", "allowPlaintextOverHttp", "consumerKey",
    "useRsaKey", "requestTokenUrl", "authorizeUrl", "accessTokenUrl", "method", "url",
    "headers", "body",
]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "APPLICATION/X-WWW-FORM-URLENCODED;charset=latin-1", "application/json",
    "application/json; charset=utf-16", "application/merge-patch+json", "text/plain",
    "text/xml", "multipart/form-data; boundary=x", "application/octet-stream", ";", "",
    "application/x-www-form-urlencoded; charset=\x7f", "*/*",
]
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
                "PROPFIND"]


# -- text ----------------------------------------------------------------------------------

def long_text() -> st.SearchStrategy[str]:
    """One character repeated far past every limit (64 KiB bodies, 255-character ids)."""
    return st.builds(lambda ch, n: ch * n, st.sampled_from("a%\x00é\ud800=&,\"\\"),
                     st.sampled_from([256, 2001, 5000, 70_000]))


def hostile_text(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any Unicode text a client might send, surrogates included, plus known trouble."""
    return st.one_of(
        st.sampled_from(TRICKY),
        st.text(max_size=max_size),
        # Every code point, surrogates too (st.text leaves them out): JSON can carry them.
        st.text(st.characters(exclude_categories=()), min_size=1, max_size=max_size),
        st.text(st.characters(codec="latin-1"), max_size=max_size),
        st.builds(lambda a, b: a + b, st.sampled_from(TRICKY), st.text(max_size=8)),
    )


# Text no store, key ring or signature can take as it is: NUL, other controls, unpaired
# surrogates (JSON spells them "\ud800"), alone or inside ordinary text.
UNSTORABLE = ["\x00", "a\x00b", "\ud800", "x\udc00", "\udfff\ud800", "é\ud83d", "\x1f",
              "\x7f\x9f"]


def bad_value() -> st.SearchStrategy[Any]:
    """What a field that should hold a sensible string might get instead."""
    return st.one_of(st.sampled_from(UNSTORABLE), hostile_text(), long_text(),
                     json_values(4))


def identifier(seeded: list[str]) -> st.SearchStrategy[str]:
    """A seeded identifier (so the request gets deep) or hostile text in its place."""
    choices = [hostile_text()]
    if seeded:
        choices.insert(0, st.sampled_from(seeded))
        choices.append(st.builds(lambda s, t: s + t, st.sampled_from(seeded),
                                 st.sampled_from(["\x00", "\n", " ", "%00", "é", "\ud800"])))
    return st.one_of(choices)


def as_header_value(text: str) -> str:
    """``text`` as a server would hand it over: UTF-8 bytes read as latin-1 (PEP 3333),
    without CR, LF and NUL, which no server passes on in a header."""
    raw = text.encode("utf-8", "surrogatepass").decode("latin-1")
    return raw.replace("\r", " ").replace("\n", " ").replace("\x00", " ")


def header_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(hostile_text(max_size), long_text()).map(as_header_value)


def percent(text: str) -> str:
    """Percent-encode ``text`` as UTF-8 (surrogates as their 3 bytes), keeping nothing."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# -- OAuth parameters and the Authorization header ------------------------------------------

def oauth_value(name: str, seeded: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """A value for the OAuth parameter ``name``: well-formed (seeded where it names
    something) or hostile."""
    good: dict[str, st.SearchStrategy[str]] = {
        "oauth_consumer_key": st.sampled_from(seeded["consumer"]),
        "oauth_token": st.sampled_from(seeded["request_token"] + seeded["access_token"]),
        "oauth_signature_method": st.sampled_from(METHODS),
        "oauth_timestamp": st.sampled_from([str(int(time.time())), "0", "1" * 20, "12.5"]),
        "oauth_nonce": st.text("abcXYZ019-._~", min_size=1, max_size=70),
        "oauth_version": st.sampled_from(["1.0", "1.0a", "2.0", ""]),
        "oauth_callback": st.sampled_from(["oob", "http://client.test/cb",
                                           "http://evil.test/", "ftp://x/"]),
        "xoauth_requestor_id": st.sampled_from(seeded["user"]),
    }
    if name in good:
        return st.one_of(good[name], hostile_text())
    return hostile_text()


@st.composite
def oauth_params(draw: st.DrawFn, seeded: dict[str, list[str]]) -> list[tuple[str, str]]:
    """OAuth parameters: usually the required ones, then extras, duplicates (same value or
    another) and odd names."""
    names = ["oauth_consumer_key", "oauth_signature_method", "oauth_signature",
             "oauth_timestamp", "oauth_nonce"]
    names = [n for n in names if draw(st.integers(0, 9)) > 0]
    names += draw(st.lists(st.one_of(st.sampled_from(OAUTH_NAMES), hostile_text(12)),
                           max_size=4))
    pairs = [(n, draw(oauth_value(n, seeded))) for n in names]
    if pairs and draw(st.booleans()):
        name, value = draw(st.sampled_from(pairs))
        pairs.append((name, draw(st.one_of(st.just(value), hostile_text()))))
    return pairs


@st.composite
def authorization_header(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> str:
    """An ``Authorization: OAuth ...`` header over ``pairs`` with a random scheme
    spelling, separators, quoting and encoding."""
    scheme = draw(st.sampled_from(["OAuth ", "OAuth", "oauth ", "OAUTH  ", " OAuth\t",
                                   "OAuth realm=\"x\", ", "OAuth realm=\"a,b\\\"c\", ",
                                   "Bearer ", "Basic ", "OAuthx "]))
    parts = []
    for name, value in pairs:
        encode = draw(st.sampled_from(["percent", "raw", "percent"]))
        v = percent(value) if encode == "percent" else value
        n = percent(name) if draw(st.integers(0, 5)) == 0 else name
        quote_style = draw(st.sampled_from(['"{}"', '"{}"', "{}", "'{}'", '"{}', '"{}\\"',
                                            ' = "{}"']))
        eq = "" if quote_style.startswith(" =") else "="
        parts.append(n + eq + quote_style.format(v))
    sep = draw(st.sampled_from([", ", ",", " ,", ";", ",\t", ", , "]))
    return as_header_value(scheme + sep.join(parts))


# -- bodies and queries -----------------------------------------------------------------------

@st.composite
def form_pairs(draw: st.DrawFn, names: list[str], seeded: list[str]
               ) -> list[tuple[str, str]]:
    """Form or query pairs: known field names with seeded or hostile values, plus
    hostile names."""
    return draw(st.lists(st.tuples(
        st.one_of(st.sampled_from(names), hostile_text(12)),
        identifier(seeded)), max_size=6))


@st.composite
def encoded_pairs(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> str:
    """``pairs`` as ``application/x-www-form-urlencoded`` text, sometimes with raw or
    broken escapes mixed in."""
    out = []
    for name, value in pairs:
        style = draw(st.sampled_from(["percent", "percent", "plus", "raw"]))
        if style == "raw":
            out.append(f"{name}={value}")
        elif style == "plus":
            out.append(f"{percent(name)}={percent(value).replace('%20', '+')}")
        else:
            out.append(f"{percent(name)}={percent(value)}")
    text = draw(st.sampled_from(["&"] * 4 + ["&&", ";"])).join(out)
    if draw(st.integers(0, 7)) == 0:
        text += draw(st.sampled_from(["&", "=", "&=", "%", "%G0", "&a", "%00=%00"]))
    return text


def query_text(text: str) -> str:
    """A query string as it reaches QUERY_STRING: ASCII, non-ASCII percent-encoded."""
    return "".join(ch if ch.isascii() and ch not in "\x00#" else percent(ch) for ch in text)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value, surrogates and huge numbers included."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                        hostile_text(), st.sampled_from([10**40, -0.0]))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text(8), inner, max_size=3)),
        max_leaves=max_leaves)


@st.composite
def json_body(draw: st.DrawFn, seeded: list[str]) -> bytes:
    """A JSON API body: an object of known fields with values of any type, any JSON
    value, or bytes that are not JSON."""
    kind = draw(st.sampled_from(["object", "object", "object", "value", "bytes"]))
    if kind == "bytes":
        return draw(st.one_of(st.binary(max_size=40),
                              st.sampled_from([b"{", b'{"a":1,}', b"\xff\xfe{}", b"[]" * 3,
                                               b'{"key": "\\ud800"}', b"1" * 5000])))
    if kind == "value":
        return json.dumps(draw(json_values())).encode()
    obj = draw(st.dictionaries(
        st.one_of(st.sampled_from(JSON_FIELDS), hostile_text(8)),
        st.one_of(identifier(seeded), json_values(4),
                  st.lists(st.sampled_from(METHODS), max_size=3)),
        max_size=6))
    return json.dumps(obj).encode("utf-8", "surrogatepass")


def path_of(template: str, draw: st.DrawFn, seeded: dict[str, list[str]]) -> str:
    """A concrete path for a URI template, each field a seeded identifier of its kind or
    hostile text, percent-encoded as a client sends it."""
    kinds = {"key": "consumer", "token": "access_token", "name": "provider"}
    out = template
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        field = out[start + 1:end].split(":")[0]
        value = draw(identifier(seeded.get(kinds.get(field, ""), [])))
        out = out[:start] + percent(value) + out[end + 1:]
    if draw(st.integers(0, 9)) == 0:
        out += draw(st.sampled_from(["/", "//", "/..", "/%00", "/x", "%3F", "%2F"]))
    return out
