"""How a token's state is encoded into, and decoded from, its Redis value.

Token keys are the bulk of Redis memory (one per active access token; budget: 256 bytes
per active access token, docs/read-model.md, "Memory"), so a token value is
binary-packed and holds only the fields its Redis readers use — the hot path (kind,
status, consumer, secret, expiry, user) and issued_at. Fields only the dance needs are
left out (docs/design.md, "What Redis holds": the dance loads streams from the
store) and decode to their defaults (None).

The stored value is ``<stream version>|`` followed by :func:`encode_token`'s payload; the
prefix belongs to the read model's apply script (:mod:`oauthledger.events.readmodel`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import struct
from typing import Any

from oauthledger.events.state import TokenState

TOKEN_FIELDS_NOT_IN_REDIS = (
    "callback", "verifier_sealed", "session_handle_hash", "authorization_expires_at",
    "request_token", "renewed_from", "successor", "verifier_failures",
)
# What those fields decode to: the state class's defaults.
_NOT_IN_REDIS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TokenState)
                          if f.name in TOKEN_FIELDS_NOT_IN_REDIS}
# (kind, status) <-> the low 4 bits of a token value's flags byte.
_TOKEN_CODES = [
    ("request", "pending"), ("request", "approved"), ("request", "denied"),
    ("request", "exchanged"), ("request", "expired"),
    ("access", "active"), ("access", "revoked"), ("access", "expired"),
    ("access", "renewed"), ("request", "burned"),
]
_TOKEN_CODE = {pair: i for i, pair in enumerate(_TOKEN_CODES)}
_HAS_USER = 0x10  # flags: a user name follows the consumer key
_PACKED_SECRET = 0x20  # flags: the sealed secret is stored as key id + raw sealed bytes
_HEAD = struct.Struct("<Bdd")  # flags, expires_at, issued_at (exact doubles)


def redis_view(state: Any) -> Any:
    """The state as the read model holds it: tokens without the dance-only fields of
    :data:`TOKEN_FIELDS_NOT_IN_REDIS`; other entities unchanged. Decoding an encoded
    state gives ``redis_view(state)``."""
    if isinstance(state, TokenState):
        return dataclasses.replace(state, **_NOT_IN_REDIS_DEFAULTS)
    return state


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=65536)
def _short(text: str) -> bytes:
    """A length-prefixed UTF-8 string: one length byte below 128, else two. Cached:
    consumer keys and user names repeat across many tokens."""
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        return bytes((n,)) + raw
    if n >= 0x8000:
        raise ValueError("identifier longer than 32 KiB")
    return bytes((0x80 | (n >> 8), n & 0xFF)) + raw


def _read_short(buf: bytes, at: int) -> tuple[str, int]:
    n = buf[at]
    at += 1
    if n & 0x80:
        n = ((n & 0x7F) << 8) | buf[at]
        at += 1
    return buf[at:at + n].decode("utf-8"), at + n


# A sealed value is ``s1.k<8 hex>.<base64url(nonce || ciphertext+tag)>`` (events.sealing):
# kept sealed in Redis, but as 4 key-id bytes + the raw sealed bytes instead of base64
# text (a third smaller). Anything else (tests seal nothing) is stored as its text.
_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
_PAD = {0: b"", 2: b"==", 3: b"="}


def _pack_secret(sealed: str) -> tuple[int, bytes]:
    if sealed.startswith("s1.k") and sealed[12:13] == ".":
        kid_text = sealed[4:12]
        body = sealed[13:].encode("ascii", "replace")
        try:
            kid = bytes.fromhex(kid_text)
            raw = binascii.a2b_base64(body.translate(_TO_STD) + _PAD[len(body) & 3])
        except (ValueError, KeyError):  # binascii.Error is a ValueError
            pass
        else:
            # Only if it re-encodes to exactly the same text (canonical base64url).
            if (kid.hex() == kid_text and binascii.b2a_base64(raw, newline=False)
                    .translate(_TO_URL).rstrip(b"=") == body):
                return _PACKED_SECRET, kid + raw
    return 0, sealed.encode("utf-8")


def encode_token(kind: str, status: str, consumer_key: str, secret_sealed: str,
                 expires_at: float, issued_at: float, user: str | None) -> bytes:
    """The packed token payload (without the ``<version>|`` prefix): flags byte,
    expires_at and issued_at as little-endian doubles, the consumer key and the user
    (length-prefixed), then the sealed secret to the end."""
    flags, secret = _pack_secret(secret_sealed)
    flags |= _TOKEN_CODE[(kind, status)]
    if user is None:
        return _HEAD.pack(flags, expires_at, issued_at) + _short(consumer_key) + secret
    return (_HEAD.pack(flags | _HAS_USER, expires_at, issued_at) + _short(consumer_key)
            + _short(user) + secret)


def encode_token_state(state: TokenState) -> bytes:
    """:func:`encode_token` of a token state."""
    return encode_token(state.kind, state.status, state.consumer_key, state.secret_sealed,
                        state.expires_at, state.issued_at, state.user)


def decode_token(ident: str, version: int, buf: bytes) -> TokenState:
    """The token state ``ident`` at stream version ``version`` from its packed payload
    ``buf`` (:func:`encode_token`); the fields not stored are None."""
    flags, expires_at, issued_at = _HEAD.unpack_from(buf)
    kind, status = _TOKEN_CODES[flags & 0x0F]
    consumer, at = _read_short(buf, _HEAD.size)
    user = None
    if flags & _HAS_USER:
        user, at = _read_short(buf, at)
    if flags & _PACKED_SECRET:
        secret = f"s1.k{buf[at:at + 4].hex()}.{_b64e(buf[at + 4:])}"
    else:
        secret = buf[at:].decode("utf-8")
    return TokenState(
        token=ident, kind=kind, status=status, consumer_key=consumer, secret_sealed=secret,
        expires_at=expires_at, issued_at=issued_at, user=user, version=version,
    )
