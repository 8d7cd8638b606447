"""Signature base strings and every signature method, against RFC 5849's own vectors and
keys generated here with ``cryptography``."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from oauthlib.oauth1.rfc5849 import signature as oauthlib_signature

from oauthledger.services.oauth.request import SignedRequest, parse_request
from oauthledger.services.oauth.signatures import (
    METHODS,
    base_string,
    load_public_key,
    normalize_parameters,
    sign,
    verify,
)

# --- RFC 5849 vectors (docs/oauth.md, "Test vectors") -----------------------------------

SECTION_3_4_1_1_BASE = (
    "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D"
    "%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce"
    "%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26"
    "oauth_token%3Dkkk9d7dh3k39sjv7"
)


def test_section_3_4_1_1_base_string() -> None:
    header = (
        'OAuth realm="Example", oauth_consumer_key="9djdj82h48djs9d2", '
        'oauth_token="kkk9d7dh3k39sjv7", oauth_signature_method="HMAC-SHA1", '
        'oauth_timestamp="137131201", oauth_nonce="7d8f3e4a", '
        'oauth_signature="djosJKDKJSD8743243%2Fjdk33klY%3D"'
    )
    req = parse_request(
        "POST",
        "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
        {"Authorization": header},
        b"c2&a3=2+q",
        "application/x-www-form-urlencoded",
    )
    assert base_string(req) == SECTION_3_4_1_1_BASE


def _initiate_request() -> SignedRequest:
    header = (
        'OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", '
        'oauth_signature_method="HMAC-SHA1", oauth_timestamp="137131200", '
        'oauth_nonce="wIjqoS", oauth_callback="http%3A%2F%2Fprinter.example.com%2Fready", '
        'oauth_signature="74KNZJeDHnMBp0EMJ9ZHt%2FXKycU%3D"'
    )
    return parse_request(
        "POST", "https://photos.example.net/initiate", {"Authorization": header}, b"", None
    )


def _token_request() -> SignedRequest:
    header = (
        'OAuth realm="Photos",oauth_consumer_key="dpf43f3p2l4k3l03",'
        'oauth_token="hh5s93j4hdidpola",oauth_signature_method="HMAC-SHA1",'
        'oauth_timestamp="137131201",oauth_nonce="walatlh",'
        'oauth_verifier="hfdp7dh39dks9884",'
        'oauth_signature="gKgrFCywp7rO0OXSjdot%2FIHF7IU%3D"'
    )
    return parse_request(
        "POST", "https://photos.example.net/token", {"Authorization": header}, b"", None
    )


def _photos_request() -> SignedRequest:
    header = (
        'OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", '
        'oauth_token="nnch734d00sl2jdk", oauth_signature_method="HMAC-SHA1", '
        'oauth_timestamp="137131202", oauth_nonce="chapoH", '
        'oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D"'
    )
    return parse_request(
        "GET",
        "http://photos.example.net/photos?file=vacation.jpg&size=original",
        {"Authorization": header},
        b"",
        None,
    )


@pytest.mark.parametrize(
    ("build", "token_secret", "expected"),
    [
        (_initiate_request, None, "74KNZJeDHnMBp0EMJ9ZHt/XKycU="),
        (_token_request, "hdhd0244k9j7ao03", "gKgrFCywp7rO0OXSjdot/IHF7IU="),
        (_photos_request, "pfkkdhi9sl3r4s00", "MdpQcU8iPSUjWoN/UDMsK2sui9I="),
    ],
)
def test_section_1_2_signatures(build, token_secret, expected) -> None:
    req = build()
    assert req.signature == expected
    base = base_string(req)
    assert sign("HMAC-SHA1", base, consumer_secret="kd94hf93k423kf44",
                token_secret=token_secret or "") == expected
    assert verify(req, consumer_secret="kd94hf93k423kf44", token_secret=token_secret,
                  public_key=None)
    assert not verify(req, consumer_secret="kd94hf93k423kf45", token_secret=token_secret,
                      public_key=None)


def test_normalize_matches_oauthlib() -> None:
    params = (
        ("b5", "=%3D"), ("a3", "a"), ("c@", ""), ("a2", "r b"), ("c2", ""), ("a3", "2 q"),
        ("oauth_nonce", "x.y~z"), ("ünï", "€ /&="), ("a", "b"), ("a=", "c"),
    )
    assert normalize_parameters(params) == oauthlib_signature.normalize_parameters(
        list(params)
    )


def test_base_string_matches_oauthlib() -> None:
    req = _photos_request()
    expected = oauthlib_signature.signature_base_string(
        req.method, req.base_uri, oauthlib_signature.normalize_parameters(list(req.params))
    )
    assert base_string(req) == expected


# --- every method round trip -------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _spki_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _pkcs1_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()


def _cert_pem(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consumer.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _signed(method: str, signature: str, *, token: str | None = "tok1",
            url: str = "https://api.example.com/rest/thing?x=1") -> SignedRequest:
    oauth = {
        "oauth_consumer_key": "ck", "oauth_signature_method": method,
        "oauth_timestamp": "1700000000", "oauth_nonce": "n0nce",
    }
    if token:
        oauth["oauth_token"] = token
    params = tuple(oauth.items()) + (("x", "1"),)
    return SignedRequest(
        method="GET", base_uri=url.split("?")[0], params=params,
        oauth={**oauth, "oauth_signature": signature}, signature=signature,
    )


def _sign_request(method: str, **kw) -> SignedRequest:
    unsigned = _signed(method, "")
    sig = sign(method, base_string(unsigned), **kw)
    return _signed(method, sig)


@pytest.mark.parametrize("method", ["HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512", "PLAINTEXT"])
def test_shared_secret_round_trip(method: str) -> None:
    req = _sign_request(method, consumer_secret="c s&€", token_secret="t~s")
    assert verify(req, consumer_secret="c s&€", token_secret="t~s", public_key=None)
    assert not verify(req, consumer_secret="c s&€", token_secret="t~x", public_key=None)
    assert not verify(req, consumer_secret="other", token_secret="t~s", public_key=None)
    # Another method name over the same signature fails.
    other = next(m for m in METHODS if m != method and not m.startswith("RSA"))
    swapped = _signed(other, req.signature)
    assert not verify(swapped, consumer_secret="c s&€", token_secret="t~s", public_key=None)


@pytest.mark.parametrize("method", ["HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512"])
def test_hmac_tampered_parameter_fails(method: str) -> None:
    req = _sign_request(method, consumer_secret="cs", token_secret="ts")
    tampered = SignedRequest(
        method=req.method, base_uri=req.base_uri,
        params=tuple(p if p[0] != "x" else ("x", "2") for p in req.params),
        oauth=req.oauth, signature=req.signature,
    )
    assert verify(req, consumer_secret="cs", token_secret="ts", public_key=None)
    assert not verify(tampered, consumer_secret="cs", token_secret="ts", public_key=None)


def test_plaintext_signature_is_the_escaped_key() -> None:
    assert sign("PLAINTEXT", "ignored", consumer_secret="kd94hf93k423kf44") == (
        "kd94hf93k423kf44&"
    )
    assert sign("PLAINTEXT", "", consumer_secret="a b", token_secret="c&d") == "a%20b&c%26d"


@pytest.mark.parametrize("method", ["RSA-SHA1", "RSA-SHA256", "RSA-SHA512"])
@pytest.mark.parametrize("fmt", ["spki", "pkcs1", "cert"])
def test_rsa_round_trip(rsa_key, method: str, fmt: str) -> None:
    public_text = {"spki": _spki_pem, "pkcs1": _pkcs1_pem, "cert": _cert_pem}[fmt](rsa_key)
    public = load_public_key(public_text)
    req = _sign_request(method, private_key_pem=_private_pem(rsa_key))
    assert verify(req, consumer_secret=None, token_secret=None, public_key=public)
    tampered = _signed(method, req.signature, url="https://api.example.com/rest/other")
    assert not verify(tampered, consumer_secret=None, token_secret=None, public_key=public)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert not verify(req, consumer_secret=None, token_secret=None,
                      public_key=other_key.public_key())
    garbage = _signed(method, "not base64 at all!")
    assert not verify(garbage, consumer_secret=None, token_secret=None, public_key=public)


def test_rsa_matches_authlib_client(rsa_key) -> None:
    """An RSA-SHA1 signature made by another library (authlib) verifies."""
    from authlib.oauth1 import SIGNATURE_RSA_SHA1, ClientAuth

    auth = ClientAuth("jira:123", token="tok", signature_method=SIGNATURE_RSA_SHA1,
                      rsa_key=_private_pem(rsa_key), realm="x")
    uri, headers, _ = auth.prepare("GET", "https://api.example.com/rest/thing?x=1", {}, b"")
    req = parse_request("GET", uri, headers, b"", None)
    public = load_public_key(_cert_pem(rsa_key))
    assert verify(req, consumer_secret=None, token_secret=None, public_key=public)
    assert req.consumer_key == "jira:123"


def test_hmac_matches_oauthlib_client() -> None:
    from oauthlib.oauth1 import Client

    client = Client("ck", client_secret="cs", resource_owner_key="tok",
                    resource_owner_secret="ts", signature_method="HMAC-SHA256")
    uri, headers, body = client.sign(
        "https://api.example.com/rest/thing?x=1&y=a%20b", http_method="POST",
        body="z=%E2%82%AC&w=1", headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    req = parse_request("POST", uri, headers, body.encode(), headers["Content-Type"])
    assert verify(req, consumer_secret="cs", token_secret="ts", public_key=None)
    assert not verify(req, consumer_secret="cs", token_secret="tx", public_key=None)


def test_public_key_cached_by_text(rsa_key) -> None:
    text = _spki_pem(rsa_key)
    assert load_public_key(text) is load_public_key(text)


def test_bare_base64_public_key(rsa_key) -> None:
    """Atlassian's consumer-info XML carries the key as bare base64 DER."""
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    key = load_public_key(base64.b64encode(der).decode())
    assert key.public_numbers() == rsa_key.public_key().public_numbers()


def test_load_public_key_errors(rsa_key) -> None:
    with pytest.raises(ValueError, match="private key"):
        load_public_key(_private_pem(rsa_key))
    with pytest.raises(ValueError, match="cannot read the RSA public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----")
    with pytest.raises(ValueError, match="cannot read"):
        load_public_key("hello world")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ValueError, match="not RSA"):
        load_public_key(ec_pem)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown signature method"):
        sign("HMAC-MD5", "base", consumer_secret="x")
    assert not verify(_signed("HMAC-MD5", "abc"), consumer_secret="x", token_secret=None,
                      public_key=None)
    with pytest.raises(ValueError, match="private key"):
        sign("RSA-SHA1", "base")


def test_repeated_parameter_signed_twice_also_verifies() -> None:
    """Some libraries sign an oauth_* parameter sent in header and body twice."""
    header = (
        'OAuth oauth_consumer_key="ck", oauth_signature_method="HMAC-SHA1", '
        'oauth_timestamp="1700000000", oauth_nonce="abc", oauth_callback="oob", '
        'oauth_signature="{sig}"'
    )
    url = "https://api.example.com/plugins/servlet/oauth/request-token?oauth_callback=oob"
    both = (
        ("oauth_callback", "oob"), ("oauth_callback", "oob"), ("oauth_consumer_key", "ck"),
        ("oauth_nonce", "abc"), ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "1700000000"),
    )
    base_twice = "POST&" + "https%3A%2F%2Fapi.example.com%2Fplugins%2Fservlet%2Foauth%2F" \
        "request-token&" + normalize_parameters(both).replace("%", "%25").replace(
            "=", "%3D").replace("&", "%26")
    sig = sign("HMAC-SHA1", base_twice, consumer_secret="cs")
    from urllib.parse import quote

    req = parse_request("POST", url, {"Authorization": header.format(sig=quote(sig, safe=""))},
                        b"", None)
    assert req.repeated == (("oauth_callback", "oob"),)
    assert verify(req, consumer_secret="cs", token_secret=None, public_key=None)
    assert not verify(req, consumer_secret="cx", token_secret=None, public_key=None)


# cryptography refuses to generate keys this small; made with `openssl genrsa 512`.
RSA_512_PUBLIC = """-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKpyhxzCiJm8/Ws4DQjTscNjLDHoqtPp
WYZh3FVw0nKiPckHMLn232JGapjKiOtGGiUjxLcVJV5X2dWzgYpnCS0CAwEAAQ==
-----END PUBLIC KEY-----"""


def _rsa_public_pem(bits: int) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_rsa_keys_under_1024_bits_are_refused_and_under_2048_flagged() -> None:
    import pytest

    from oauthledger.services.oauth.signatures import load_public_key, rsa_key_warning

    with pytest.raises(ValueError, match="512 bits; at least 1024"):
        load_public_key(RSA_512_PUBLIC)
    assert load_public_key(_rsa_public_pem(1024)).key_size == 1024
    assert "1024-bit RSA key" in (rsa_key_warning(_rsa_public_pem(1024)) or "")
    assert rsa_key_warning(_rsa_public_pem(2048)) is None
