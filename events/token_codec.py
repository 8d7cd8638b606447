"""How a token's state is encoded into, and decoded from, its Redis value.

Token keys are the bulk of Redis memory (one per active access token, docs/read-model.md,
"Memory"), so a token value is binary-packed and holds only the fields its Redis readers
use — the hot path's kind, status, consumer, secret, expiry and user. Fields only the
dance or the pages need (``issued_at`` among them) are left out (docs/design.md, "What
Redis holds": the dance and the pages load streams from the store) and decode to fixed
values (:func:`redis_view`).

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

from oauthledger.events.sealing import DERIVED_PREFIX, SEALED_PREFIX
from oauthledger.events.state import TokenState

TOKEN_FIELDS_NOT_IN_REDIS = (
    "callback", "verifier_sealed", "session_handle_hash", "authorization_expires_at",
    "request_token", "renewed_from", "successor", "verifier_failures", "issued_at",
)
# The value a field not stored decodes to: the state class's default, and for
# ``issued_at`` (a required field: no default) 0.0. No reader of a decoded token uses it
# (the pages and the dance read the store); its 8 bytes were a tenth of a token's value.
ISSUED_AT_NOT_STORED = 0.0
NOT_IN_REDIS_VALUES: dict[str, Any] = {
    f.name: (ISSUED_AT_NOT_STORED if f.name == "issued_at" else f.default)
    for f in dataclasses.fields(TokenState) if f.name in TOKEN_FIELDS_NOT_IN_REDIS}
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
_NO_ISSUED = 0x40  # flags: no issued_at after expires_at (every value written now)
_DERIVED_SECRET = 0x80  # flags: the secret is derived from the token (4 key-id bytes)
_HEAD = struct.Struct("<Bd")  # flags, expires_at (an exact double: checked to the second)
# Values written by earlier versions (no _NO_ISSUED flag) have issued_at after expires_at;
# they decode too (issued_at skipped): the values in Redis stay readable after an upgrade.
# Not the other way round (docs/read-model.md, "Token encoding").
_OLD_HEAD_SIZE = struct.calcsize("<Bdd")


def redis_view(state: Any) -> Any:
    """The state as the read model holds it: tokens with the fields of
    :data:`TOKEN_FIELDS_NOT_IN_REDIS` at :data:`NOT_IN_REDIS_VALUES` (their defaults;
    ``issued_at`` 0.0); other entities unchanged. Decoding an encoded state gives
    ``redis_view(state)``."""
    if isinstance(state, TokenState):
        return dataclasses.replace(state, **NOT_IN_REDIS_VALUES)
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


def _key_id(sealed: str, prefix: str) -> bytes | None:
    """The 4 bytes of the key id of ``<prefix>.k<8 lowercase hex>.<rest>``, else None
    (only a key id that re-encodes to the same text, so decoding gives it back). Both
    prefixes are two characters, so the key id's hex is characters 4 to 11."""
    if not (sealed.startswith(prefix + ".k") and sealed[12:13] == "."):
        return None
    try:
        kid = bytes.fromhex(sealed[4:12])
    except ValueError:
        return None
    return kid if kid.hex() == sealed[4:12] else None


def _pack_secret(sealed: str, token: str) -> tuple[int, bytes]:
    # A derived secret (events.sealing: ``d1.k<8 hex>.<token>``) of this very token is
    # its key id alone: the rest is the key's name in Redis.
    if sealed[13:] == token and (kid := _key_id(sealed, DERIVED_PREFIX)) is not None:
        return _DERIVED_SECRET, kid
    if (kid := _key_id(sealed, SEALED_PREFIX)) is not None:
        body = sealed[13:].encode("ascii", "replace")
        try:
            raw = binascii.a2b_base64(body.translate(_TO_STD) + _PAD[len(body) & 3])
        except (ValueError, KeyError):  # binascii.Error is a ValueError
            pass
        else:
            # Only if it re-encodes to exactly the same text (canonical base64url).
            if binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=") \
                    == body:
                return _PACKED_SECRET, kid + raw
    return 0, sealed.encode("utf-8")


def encode_token(token: str, kind: str, status: str, consumer_key: str,
                 secret_sealed: str, expires_at: float, user: str | None) -> bytes:
    """The packed payload of token ``token`` (without the ``<version>|`` prefix): flags
    byte, expires_at as a little-endian double, the consumer key and the user
    (length-prefixed), then the secret to the end (a derived one's key id, a sealed
    one's key id and bytes, or any other text as it is)."""
    flags, secret = _pack_secret(secret_sealed, token)
    flags |= _TOKEN_CODE[(kind, status)] | _NO_ISSUED
    if user is None:
        return _HEAD.pack(flags, expires_at) + _short(consumer_key) + secret
    return (_HEAD.pack(flags | _HAS_USER, expires_at) + _short(consumer_key)
            + _short(user) + secret)


def encode_token_state(state: TokenState) -> bytes:
    """:func:`encode_token` of a token state."""
    return encode_token(state.token, state.kind, state.status, state.consumer_key,
                        state.secret_sealed, state.expires_at, state.user)


def decode_token(ident: str, version: int, buf: bytes) -> TokenState:
    """The token state ``ident`` at stream version ``version`` from its packed payload
    ``buf`` (:func:`encode_token`, or an earlier version's with issued_at); the fields
    not stored are at :data:`NOT_IN_REDIS_VALUES`."""
    flags, expires_at = _HEAD.unpack_from(buf)
    kind, status = _TOKEN_CODES[flags & 0x0F]
    consumer, at = _read_short(buf, _HEAD.size if flags & _NO_ISSUED else _OLD_HEAD_SIZE)
    user = None
    if flags & _HAS_USER:
        user, at = _read_short(buf, at)
    if flags & _DERIVED_SECRET:
        secret = f"{DERIVED_PREFIX}.k{buf[at:at + 4].hex()}.{ident}"
    elif flags & _PACKED_SECRET:
        secret = f"{SEALED_PREFIX}.k{buf[at:at + 4].hex()}.{_b64e(buf[at + 4:])}"
    else:
        secret = buf[at:].decode("utf-8")
    return TokenState(
        token=ident, kind=kind, status=status, consumer_key=consumer, secret_sealed=secret,
        expires_at=expires_at, issued_at=ISSUED_AT_NOT_STORED, user=user, version=version,
    )
