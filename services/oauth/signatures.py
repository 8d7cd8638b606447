"""Signature base strings, verification and signing for every method oauthledger accepts.

The base string is built with oauthlib's RFC 5849 primitives (``normalize_parameters``,
``signature_base_string``). The signing itself calls ``hmac`` and ``cryptography``
directly: oauthlib's ``_verify_*`` functions rebuild the base string from an oauthlib
Request, its RSA path needs PyJWT and re-parses the PEM key on every call, and both cost
far more than the hot path's budget (docs/design.md, "One round trip"). Parsed RSA keys
are cached by their PEM text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import replace
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from oauthledger.services.oauth.problems import escape
from oauthledger.services.oauth.request import SignedRequest

METHODS = (
    "HMAC-SHA1",
    "HMAC-SHA256",
    "HMAC-SHA512",
    "RSA-SHA1",
    "RSA-SHA256",
    "RSA-SHA512",
    "PLAINTEXT",
)
# In the order of METHODS: a consumer's default methods are listed in this order.
HMAC_METHODS = tuple(m for m in METHODS if m.startswith("HMAC-"))
RSA_METHODS = tuple(m for m in METHODS if m.startswith("RSA-"))

_HMAC_DIGEST = {
    "HMAC-SHA1": hashlib.sha1,
    "HMAC-SHA256": hashlib.sha256,
    "HMAC-SHA512": hashlib.sha512,
}
_RSA_HASH = {"RSA-SHA1": hashes.SHA1, "RSA-SHA256": hashes.SHA256, "RSA-SHA512": hashes.SHA512}
_PKCS1V15 = padding.PKCS1v15()


def needs_secret(method: str) -> bool:
    """HMAC-* and PLAINTEXT use shared secrets (RFC 5849 §3.4.2, §3.4.4)."""
    return method in HMAC_METHODS or method == "PLAINTEXT"


# After normalization every character is unreserved, "%" (from an escape), "=" or "&",
# so §3.6-encoding it again only touches those three: three C-level replaces ("%" first,
# so the escapes it adds are not escaped again) instead of urllib's quote, and instead
# of str.translate with a mapping, which looks up every character in a dict.
def _escape_normalized(norm: str) -> str:
    return norm.replace("%", "%25").replace("=", "%3D").replace("&", "%26")


def normalize_parameters(params: tuple[tuple[str, str], ...]) -> str:
    """RFC 5849 §3.4.1.3.2: encode names and values, sort by name then value (byte
    order), join with "=" and "&". Same output as oauthlib's ``normalize_parameters``
    (the unit tests compare them), with the fast :func:`escape`."""
    pairs = sorted([(_escape_name(k), escape(v)) for k, v in params])
    return "&".join([f"{k}={v}" for k, v in pairs])


# Parameter names, methods and base URIs repeat from request to request (the oauth_*
# names in every one); values (nonces, signatures) do not and are not remembered.
_escape_name = lru_cache(maxsize=4096)(escape)


def base_string(req: SignedRequest, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """RFC 5849 §3.4.1.1 signature base string of ``req`` (plus ``extra`` parameters):
    METHOD & encoded base string URI & encoded normalized parameters."""
    params = req.params + extra if extra else req.params
    norm = normalize_parameters(params)
    return (
        f"{_escape_name(req.method)}&{_escape_name(req.base_uri)}&"
        f"{_escape_normalized(norm)}"
    )


def _der_from_bare_base64(text: str) -> bytes | None:
    # Atlassian's consumer-info XML carries the public key as bare base64 DER (no armour).
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


MIN_RSA_BITS = 1024
RECOMMENDED_RSA_BITS = 2048


@lru_cache(maxsize=1024)
def load_public_key(text: str) -> RSAPublicKey:
    """Parse an RSA public key: PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), PEM
    ``RSA PUBLIC KEY`` (PKCS#1), a (self-signed) X.509 ``CERTIFICATE``, or the same as
    bare base64 DER. Cached by text. Raises ValueError with a message saying what is
    wrong (private key given, not RSA, unreadable)."""
    stripped = text.strip()
    if "PRIVATE KEY-----" in stripped:
        raise ValueError(
            "this is a private key; register the public key instead "
            "(openssl rsa -in key.pem -pubout, or the certificate)"
        )
    key: object
    try:
        if "-----BEGIN CERTIFICATE-----" in stripped:
            key = x509.load_pem_x509_certificate(stripped.encode("ascii")).public_key()
        elif "-----BEGIN" in stripped:
            # load_pem_public_key reads both SPKI and PKCS#1 ("RSA PUBLIC KEY").
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        else:
            der = _der_from_bare_base64(stripped)
            if der is None:
                raise ValueError("not PEM and not base64")
            try:
                key = serialization.load_der_public_key(der)
            except ValueError:
                key = x509.load_der_x509_certificate(der).public_key()
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValueError(
            "cannot read the RSA public key: expected a PEM public key "
            "(-----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----) or an X.509 "
            f"certificate (-----BEGIN CERTIFICATE-----); {exc}"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError(
            f"the key is {type(key).__name__.lstrip('_')}, not RSA; "
            "RSA-SHA* signatures need an RSA key"
        )
    # NIST SP 800-131A: RSA keys under 1024 bits are broken (a 512-bit modulus is
    # factored in hours); refused wherever a key enters, and on use.
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required "
            f"({RECOMMENDED_RSA_BITS} or more recommended: openssl genrsa -out key.pem "
            f"{RECOMMENDED_RSA_BITS})"
        )
    return key


def rsa_key_warning(text: str) -> str | None:
    """A warning for an accepted key under the recommended size (NIST SP 800-131A
    disallows new 1024-bit RSA keys), or ``None``."""
    try:
        bits = load_public_key(text).key_size
    except ValueError:
        return None
    if bits < RECOMMENDED_RSA_BITS:
        return (f"{bits}-bit RSA key: accepted, but {RECOMMENDED_RSA_BITS} bits or more are "
                "recommended")
    return None


@lru_cache(maxsize=64)
def _load_private_key(pem: str) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"cannot read the RSA private key: {exc}") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("RSA-SHA* signatures need an RSA private key")
    return key


def _hmac_key(consumer_secret: str | None, token_secret: str | None) -> bytes:
    # RFC 5849 §3.4.2: key = escape(client secret) & escape(token secret), "&" always.
    return f"{escape(consumer_secret or '')}&{escape(token_secret or '')}".encode()


def _hmac(method: str, base: str, consumer_secret: str | None, token_secret: str | None
          ) -> hmac.HMAC:
    return hmac.new(_hmac_key(consumer_secret, token_secret), base.encode(), _HMAC_DIGEST[method])


def plaintext_signature(consumer_secret: str | None, token_secret: str | None) -> str:
    """RFC 5849 §3.4.4: the PLAINTEXT signature is the HMAC key, as text."""
    return f"{escape(consumer_secret or '')}&{escape(token_secret or '')}"


def sign(
    method: str,
    base: str,
    *,
    consumer_secret: str = "",
    token_secret: str = "",
    private_key_pem: str | None = None,
) -> str:
    """Sign ``base`` with ``method``; returns the ``oauth_signature`` value (base64 for
    HMAC/RSA, the key text for PLAINTEXT)."""
    if method in _HMAC_DIGEST:
        mac = _hmac(method, base, consumer_secret, token_secret)
        return base64.b64encode(mac.digest()).decode("ascii")
    if method in _RSA_HASH:
        if not private_key_pem:
            raise ValueError(f"{method} needs an RSA private key")
        key = _load_private_key(private_key_pem)
        raw = key.sign(base.encode("ascii"), _PKCS1V15, _RSA_HASH[method]())
        return base64.b64encode(raw).decode("ascii")
    if method == "PLAINTEXT":
        return plaintext_signature(consumer_secret, token_secret)
    raise ValueError(f"unknown signature method {method!r}; known: {', '.join(METHODS)}")


def _equal(a: str, b: str) -> bool:
    # Constant time (hmac.compare_digest); bytes, because attacker text may be non-ASCII.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _verify_once(
    method: str,
    base: str,
    signature: str,
    consumer_secret: str | None,
    token_secret: str | None,
    public_key: RSAPublicKey | None,
) -> bool:
    if method in _HMAC_DIGEST:
        mac = _hmac(method, base, consumer_secret, token_secret)
        # Compared as base64 text, not as decoded octets: decoding ignores the unused
        # low bits of the last character (RFC 4648 §3.5), which would let several
        # spellings of one signature verify. Constant time; non-ASCII text never equals.
        expected = base64.b64encode(mac.digest())
        try:
            sent = signature.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(expected, sent)
    if method in _RSA_HASH:
        if public_key is None:
            return False
        try:
            raw = base64.b64decode(signature, validate=True)
            public_key.verify(raw, base.encode("ascii"), _PKCS1V15, _RSA_HASH[method]())
        except (binascii.Error, ValueError, InvalidSignature, UnicodeEncodeError):
            return False
        return True
    return False


def verify(
    req: SignedRequest,
    *,
    consumer_secret: str | None,
    token_secret: str | None,
    public_key: RSAPublicKey | None,
) -> bool:
    """True when ``req.signature`` is valid for its method. Comparisons are constant
    time. When the request repeated an ``oauth_*`` parameter in two places (counted
    once), a signature over both copies is accepted too: libraries differ on this."""
    method = req.signature_method
    if method == "PLAINTEXT":
        return _equal(req.signature, plaintext_signature(consumer_secret, token_secret))
    if method not in _HMAC_DIGEST and method not in _RSA_HASH:
        return False
    if _verify_once(method, base_string(req), req.signature, consumer_secret, token_secret,
                    public_key):
        return True
    if req.repeated and _verify_once(method, base_string(req, req.repeated), req.signature,
                                     consumer_secret, token_secret, public_key):
        return True
    twice = _oauth_values_decoded_twice(req.params)
    if twice is not None:
        return _verify_once(method, base_string(replace(req, params=twice)), req.signature,
                            consumer_secret, token_secret, public_key)
    return False


def _oauth_values_decoded_twice(params: tuple[tuple[str, str], ...]
                                ) -> tuple[tuple[str, str], ...] | None:
    """The parameters with every ``oauth_*`` value percent-decoded once more, or None
    when that changes nothing. oauthlib's client (up to 3.2 at least), when it sends
    the protocol parameters in the query or a form body, signs their values decoded
    twice: a callback ``https://c.example/cb?next=%2Fhome`` is signed as ``...next=/home``
    but sent as ``...next=%2Fhome``. RFC 5849 §3.4.1.3.1 decodes once, so such a request
    is tried once more this way, only after the RFC's base string failed (docs/oauth.md,
    "Where parameters may come from")."""
    if not any("%" in v for k, v in params if k.startswith("oauth_")):
        return None
    out = []
    for name, value in params:
        if name.startswith("oauth_") and "%" in value:
            try:
                value = unquote_to_bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None
        out.append((name, value))
    return tuple(out)
