"""The consumer side's signing and answer reading (services/provider_client.py): every
signature :func:`sign` makes is checked by verifiers that did not make it — oauthlib's
RFC 5849 verification functions (first shown to accept the RFC's own example) and this
project's server-side verifier — and tampering is refused; token answers and refusals are
read as OAuth Problem Reporting writes them. One request token is fetched from a real
local HTTP server that verifies what it receives."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import Request
from oauthlib.oauth1.rfc5849 import signature as rfc
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header, unescape

from oauthledger.services import provider_client as pc
from oauthledger.services.oauth import signatures as ours
from oauthledger.services.oauth.request import parse_request
from oauthledger.services.remote_fetch import Answer, FetchPolicy

# RFC 5849 §1.2: the printer's credentials at photos.example.net.
CONSUMER_KEY = "dpf43f3p2l4k3l03"
CONSUMER_SECRET = "kd94hf93k423kf44"
TOKEN = "nnch734d00sl2jdk"
TOKEN_SECRET = "pfkkdhi9sl3r4s00"
PHOTOS = "http://photos.example.net/photos?file=vacation.jpg&size=original"
FORM = "application/x-www-form-urlencoded"


def key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return key_pair()


def oauthlib_request(method: str, url: str, headers: dict[str, str],
                     body: bytes = b"") -> Request:
    """The request as oauthlib's verifiers take it: every parameter source of RFC 5849
    §3.4.1.3.1 (query, Authorization header, a form body) and the signature sent."""
    form = body.decode() if headers.get("Content-Type") == FORM else None
    req = Request(url, method, form, headers)
    req.params = rfc.collect_parameters(uri_query=urlsplit(url).query, body=form,
                                        headers=headers)
    req.signature = oauth_params(headers)["oauth_signature"]
    return req


def oauth_params(headers: dict[str, str]) -> dict[str, str]:
    """The oauth_* parameters of the Authorization header, decoded (RFC 5849 §3.5.1)."""
    return {k: unescape(v) for k, v in parse_authorization_header(headers["Authorization"])}


def verified_by_us(method: str, url: str, headers: dict[str, str], body: bytes, *,
                   consumer_secret: str | None = None, token_secret: str | None = None,
                   public_pem: str | None = None) -> bool:
    """What this project's server side says of the signature (services/oauth)."""
    req = parse_request(method, url, {k.lower(): v for k, v in headers.items()}, body,
                        headers.get("Content-Type"))
    return ours.verify(req, consumer_secret=consumer_secret, token_secret=token_secret,
                       public_key=ours.load_public_key(public_pem) if public_pem else None)


# -- the verifier itself, on the RFC's own example -----------------------------------------


def test_oauthlib_verifier_accepts_the_rfc_5849_example() -> None:
    # RFC 5849 §1.2 (its §3.4.1.1 base string): a valid signature, and one bit off.
    header = ('OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", '
              'oauth_token="nnch734d00sl2jdk", oauth_signature_method="HMAC-SHA1", '
              'oauth_timestamp="1191242096", oauth_nonce="kllo9940pd9333jh", '
              'oauth_version="1.0", oauth_signature="tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D"')
    req = oauthlib_request("GET", PHOTOS, {"Authorization": header})
    assert rfc.verify_hmac_sha1(req, CONSUMER_SECRET, TOKEN_SECRET)
    assert not rfc.verify_hmac_sha1(req, CONSUMER_SECRET, TOKEN_SECRET + "x")
    assert verified_by_us("GET", PHOTOS, {"Authorization": header}, b"",
                          consumer_secret=CONSUMER_SECRET, token_secret=TOKEN_SECRET)


# -- sign() ------------------------------------------------------------------------------


def test_hmac_sha1_signature_verifies_and_tampering_does_not() -> None:
    signer = pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET)
    url, headers, body = pc.sign(signer, "GET", PHOTOS, {}, b"", token=TOKEN,
                                 token_secret=TOKEN_SECRET)
    assert url == PHOTOS and body == b""
    params = oauth_params(headers)
    assert params["oauth_consumer_key"] == CONSUMER_KEY
    assert params["oauth_token"] == TOKEN
    assert params["oauth_signature_method"] == "HMAC-SHA1"
    assert params["oauth_version"] == "1.0"
    assert params["oauth_nonce"] and params["oauth_timestamp"].isdigit()
    assert TOKEN_SECRET not in headers["Authorization"]
    assert CONSUMER_SECRET not in headers["Authorization"]
    req = oauthlib_request("GET", url, headers)
    assert rfc.verify_hmac_sha1(req, CONSUMER_SECRET, TOKEN_SECRET)
    assert verified_by_us("GET", url, headers, b"", consumer_secret=CONSUMER_SECRET,
                          token_secret=TOKEN_SECRET)
    # Another token secret, another method, another query: all refused.
    assert not rfc.verify_hmac_sha1(req, CONSUMER_SECRET, "other")
    assert not rfc.verify_hmac_sha1(oauthlib_request("POST", url, headers),
                                    CONSUMER_SECRET, TOKEN_SECRET)
    assert not rfc.verify_hmac_sha1(
        oauthlib_request("GET", url.replace("original", "small"), headers),
        CONSUMER_SECRET, TOKEN_SECRET)
    # Two signatures of the same request differ (a fresh nonce each time).
    _, again, _ = pc.sign(signer, "GET", PHOTOS, {}, b"", token=TOKEN,
                          token_secret=TOKEN_SECRET)
    assert oauth_params(again)["oauth_nonce"] != params["oauth_nonce"]


def test_rsa_sha1_signature_verifies_with_the_public_key_only(keys: tuple[str, str]) -> None:
    private, public = keys
    signer = pc.Signer("oauthledger:123456789", rsa_key=private)
    url, headers, _ = pc.sign(signer, "GET", "https://b.example/rest/api/2/myself", {}, b"",
                              token="tok", token_secret="ignored-by-rsa")
    assert oauth_params(headers)["oauth_signature_method"] == "RSA-SHA1"
    req = oauthlib_request("GET", url, headers)
    assert rfc.verify_rsa_sha1(req, public)
    assert verified_by_us("GET", url, headers, b"", public_pem=public)
    assert not rfc.verify_rsa_sha1(req, key_pair()[1])
    assert not rfc.verify_rsa_sha1(oauthlib_request("DELETE", url, headers), public)


def test_a_form_body_is_signed_parameter_by_parameter() -> None:
    # RFC 5849 §3.4.1.3.1: a form-encoded body's parameters are in the base string.
    signer = pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET)
    sent = b"title=Sunset&tag=a%20b"
    url, headers, body = pc.sign(signer, "POST", "http://photos.example.net/upload",
                                 {"Content-Type": FORM}, sent, token=TOKEN,
                                 token_secret=TOKEN_SECRET)
    assert body == sent and "oauth_body_hash" not in oauth_params(headers)
    assert rfc.verify_hmac_sha1(oauthlib_request("POST", url, headers, body),
                                CONSUMER_SECRET, TOKEN_SECRET)
    assert verified_by_us("POST", url, headers, body, consumer_secret=CONSUMER_SECRET,
                          token_secret=TOKEN_SECRET)
    assert not rfc.verify_hmac_sha1(oauthlib_request("POST", url, headers, b"title=Sunrise"),
                                    CONSUMER_SECRET, TOKEN_SECRET)


def test_another_body_is_covered_by_its_body_hash() -> None:
    # draft-eaton-oauth-bodyhash: oauth_body_hash is base64(SHA-1(body)), and it is a
    # signed parameter, so a changed body no longer matches the signed hash.
    signer = pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET)
    sent = b'{"fields": {"summary": "Bug"}}'
    url, headers, body = pc.sign(signer, "POST", "http://photos.example.net/rest/api/2/issue",
                                 {"Content-Type": "application/json"}, sent, token=TOKEN,
                                 token_secret=TOKEN_SECRET)
    assert body == sent
    params = oauth_params(headers)
    assert params["oauth_body_hash"] == base64.b64encode(hashlib.sha1(sent).digest()).decode()
    assert rfc.verify_hmac_sha1(oauthlib_request("POST", url, headers), CONSUMER_SECRET,
                                TOKEN_SECRET)
    assert verified_by_us("POST", url, headers, body, consumer_secret=CONSUMER_SECRET,
                          token_secret=TOKEN_SECRET)
    # The hash is a signed parameter: another body's hash breaks the signature.
    req = oauthlib_request("POST", url, headers)
    other = base64.b64encode(hashlib.sha1(b"{}").digest()).decode()
    req.params = [(k, other if k == "oauth_body_hash" else v) for k, v in req.params]
    assert not rfc.verify_hmac_sha1(req, CONSUMER_SECRET, TOKEN_SECRET)


def test_callback_verifier_and_session_handle_are_signed() -> None:
    signer = pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET)
    url = "http://photos.example.net/access-token"
    cb = "https://a.example/plugins/servlet/oauth/service-providers/Photos/callback"
    for oauth, expected in (
            ({"callback": cb}, {"oauth_callback": cb}),
            ({"token": TOKEN, "token_secret": TOKEN_SECRET, "verifier": "hfdp7dh39dks9884"},
             {"oauth_verifier": "hfdp7dh39dks9884", "oauth_token": TOKEN}),
            ({"token": TOKEN, "token_secret": TOKEN_SECRET,
              "extra_oauth": [("oauth_session_handle", "handle-1")]},
             {"oauth_session_handle": "handle-1"})):
        _, headers, _ = pc.sign(signer, "POST", url, {}, b"", **oauth)
        params = oauth_params(headers)
        assert expected.items() <= params.items()
        req = oauthlib_request("POST", url, headers)
        assert rfc.verify_hmac_sha1(req, CONSUMER_SECRET, oauth.get("token_secret"))
        # The extra parameter is in the base string: dropping it breaks the signature.
        req.params = [p for p in req.params if p[0] not in expected]
        assert not rfc.verify_hmac_sha1(req, CONSUMER_SECRET, oauth.get("token_secret"))


def test_requests_oauthlib_cannot_sign_are_value_errors() -> None:
    signer = pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET)
    with pytest.raises(ValueError, match="UTF-8"):
        pc.sign(signer, "POST", "http://photos.example.net/x", {}, b"\xff\xfe")
    with pytest.raises(ValueError):
        pc.sign(signer, "GET", "http://photos.example.net/x", {"Content-Type": FORM}, b"a=b")


# -- reading answers ---------------------------------------------------------------------


def answer(status: int, body: str = "", **headers: str) -> Answer:
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()},
                  body.encode())


def test_token_answers_are_read_with_their_lifetimes() -> None:
    got = pc._credentials(answer(200, "oauth_token=t1&oauth_token_secret=s1"
                                      "&oauth_callback_confirmed=true&oauth_expires_in=300"
                                      "&oauth_authorization_expires_in=3600"
                                      "&oauth_session_handle=h1"), now=1000.0)
    assert got == pc.Credentials(token="t1", secret="s1", callback_confirmed=True,
                                 session_handle="h1", expires_at=1300.0,
                                 authorization_expires_at=4600.0)
    plain = pc._credentials(answer(200, "oauth_token_secret=s%262&oauth_token=t2\n"), now=0.0)
    assert (plain.token, plain.secret, plain.expires_at, plain.session_handle,
            plain.callback_confirmed) == ("t2", "s&2", None, None, False)


@pytest.mark.parametrize("given, problem", [
    (answer(401, "oauth_problem=consumer_key_unknown&oauth_problem_advice=register+us"),
     ("consumer_key_unknown", "register us")),
    (answer(401, "", www_authenticate='OAuth realm="x", oauth_problem="signature_invalid"'),
     ("signature_invalid", "")),
    (answer(503, "<html>down</html>"), ("http_503", "")),
    (answer(200, "<html>not a token</html>"), ("bad_response", None)),
    (answer(200, "oauth_token=only"), ("bad_response", None)),
    (answer(200, "oauth_token=t\xe9&x"), ("bad_response", None)),
])
def test_refused_or_unreadable_token_answers(given: Answer,
                                             problem: tuple[str, str | None]) -> None:
    with pytest.raises(pc.ProviderRefused) as caught:
        pc._credentials(given, now=0.0)
    assert caught.value.problem == problem[0]
    assert caught.value.status == given.status
    if problem[1] is not None:
        assert caught.value.advice == problem[1]


@pytest.mark.parametrize("given, problem", [
    (answer(401, "oauth_problem=token_expired"), "token_expired"),
    (answer(401, "oauth_problem=token_revoked"), "token_revoked"),
    (answer(403, "", www_authenticate='OAuth oauth_problem="permission_unknown"'),
     "permission_unknown"),
    (answer(401, "oauth_problem=signature_invalid"), None),  # not about the token
    (answer(401, "Unauthorized"), None),
    (answer(404, "oauth_problem=token_rejected"), None),  # not a refusal status
    (answer(200, '{"name": "alice"}'), None),
    (answer(500, "oauth_problem=token_rejected"), None),
])
def test_refusal_names_only_problems_with_the_token(given: Answer, problem: str | None) -> None:
    refused = pc.refusal(given)
    assert (refused.problem if refused else None) == problem


# -- one exchange with a real server -------------------------------------------------------


class _Provider(BaseHTTPRequestHandler):
    """A request-token endpoint that verifies the HMAC-SHA1 signature (oauthlib) and
    answers temporary credentials, or oauth_problem=signature_invalid."""

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        url = f"http://{self.headers['Host']}{self.path}"
        headers = {"Authorization": self.headers.get("Authorization", "")}
        ok = rfc.verify_hmac_sha1(oauthlib_request("POST", url, headers), CONSUMER_SECRET)
        self.seen.append(oauth_params(headers))
        body = (b"oauth_token=hh5s93j4hdidpola&oauth_token_secret=hdhd0244k9j7ao03"
                b"&oauth_callback_confirmed=true" if ok
                else b"oauth_problem=signature_invalid")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", FORM)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    _Provider.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/initiate"
    finally:
        server.shutdown()
        server.server_close()


def test_request_token_from_a_real_server(provider_url: str) -> None:
    policy = FetchPolicy(allow_private=True)
    cb = "http://printer.example.com/ready"
    got = pc.request_token(pc.Signer(CONSUMER_KEY, secret=CONSUMER_SECRET), provider_url, cb,
                           policy)
    assert (got.token, got.secret, got.callback_confirmed) == (
        "hh5s93j4hdidpola", "hdhd0244k9j7ao03", True)
    assert _Provider.seen[-1]["oauth_callback"] == cb
    with pytest.raises(pc.ProviderRefused) as caught:
        pc.request_token(pc.Signer(CONSUMER_KEY, secret="wrong"), provider_url, cb, policy)
    assert (caught.value.status, caught.value.problem) == (401, "signature_invalid")
