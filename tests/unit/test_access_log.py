"""The access log never carries a secret-bearing parameter."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from oauthledger.services.http.access_log import RedactingLogger, redact


def test_redact_replaces_secret_values_and_keeps_the_rest() -> None:
    q = ("oauth_consumer_key=ck&oauth_token=tok&oauth_signature_method=PLAINTEXT"
         "&oauth_signature=cs%26ts&oauth_verifier=v3r1f&x=1&OAUTH_SESSION_HANDLE=h")
    out = redact(q) or ""
    for secret in ("cs%26ts", "v3r1f", "=h"):
        assert secret not in out
    assert "oauth_consumer_key=ck" in out and "oauth_token=tok" in out and "x=1" in out
    assert out.count("[redacted]") == 3
    assert redact(None) is None and redact("") == ""


def test_gunicorn_access_atoms_are_redacted() -> None:
    logger = RedactingLogger(Config())
    environ = {
        "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/rest/api/2/myself",
        "RAW_URI": "/rest/api/2/myself?oauth_signature=s3cr3t%26t0k&oauth_token=T",
        "QUERY_STRING": "oauth_signature=s3cr3t%26t0k&oauth_token=T",
        "HTTP_REFERER": "https://x.example/cb?oauth_verifier=abc123", "REMOTE_ADDR": "127.0.0.1",
    }
    req = SimpleNamespace(headers=[("AUTHORIZATION", 'OAuth oauth_signature="zzz"'),
                                   ("REFERER", "https://x.example/cb?oauth_verifier=abc123")])
    resp = SimpleNamespace(status="200 OK", sent=10, headers=[])
    atoms = logger.atoms(resp, req, environ, datetime.timedelta(seconds=0, microseconds=5))
    text = " ".join(str(v) for v in atoms.values())
    for secret in ("s3cr3t", "t0k", "abc123", "zzz"):
        assert secret not in text
    assert "oauth_token=T" in atoms["r"]


@pytest.mark.parametrize("query", [
    "oauth%5Fsignature=s3cr3t",  # "_" percent-encoded: the application decodes it
    "oauth%5fverifier=s3cr3t",
    "%6F%61uth_signature=s3cr3t",
    "OAuth_Signature=s3cr3t",  # any case
    "OAUTH_TOKEN_SECRET=s3cr3t",
    "Oauth%5FSession%5FHandle=s3cr3t",
    "x=1&oauth_signature%3Ds3cr3t",  # "=" percent-encoded
    "new_secret=s3cr3t", "mySecretKey=s3cr3t", "client%5Fsecret=s3cr3t",  # any *secret*
    "next=/cb?oauth_verifier=s3cr3t",  # a parameter inside another one's value
    'OAuth realm="x", oauth_signature="s3cr3t"',
    "oauth_signature=s3cr3t?more&oauth_verifier=s3cr3t",
])
def test_redact_sees_through_encoding_and_case(query: str) -> None:
    out = redact(query) or ""
    assert "s3cr3t" not in out and "[redacted]" in out


@pytest.mark.parametrize("text", [
    "GET /rest/api/2/myself HTTP/1.1", "oauth_token=T&x=1", "oauth%5Ftoken=T",
    "secretary", "/cb?note=secret", "a=b=c&oauth_signature_method=PLAINTEXT",
])
def test_redact_leaves_text_without_secret_parameters_alone(text: str) -> None:
    assert redact(text) == text


def test_only_atoms_that_can_carry_parameters_are_touched() -> None:
    logger = RedactingLogger(Config())
    environ = {
        "REQUEST_METHOD": "POST", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/plugins/servlet/oauth/authorize",
        "RAW_URI": "/plugins/servlet/oauth/authorize", "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "client/1.0; password=hunter2",
    }
    req = SimpleNamespace(headers=[("USER-AGENT", "client/1.0; password=hunter2")])
    resp = SimpleNamespace(status="302 Found", sent=0, headers=[
        ("Location", "https://client.example/cb?oauth_token=T&OAuth_Verifier=v3r1f")])
    atoms = logger.atoms(resp, req, environ, datetime.timedelta(seconds=1))
    # A callback's verifier in the Location header, the User-Agent as atom and header.
    assert atoms["{location}o"] == "https://client.example/cb?oauth_token=T&OAuth_Verifier=[redacted]"
    assert "hunter2" not in atoms["a"] and "hunter2" not in atoms["{user-agent}i"]
    assert "hunter2" not in atoms["{http_user_agent}e"]
    # gunicorn's own atoms are left as it made them.
    assert atoms["h"] == "127.0.0.1" and atoms["s"] == "302" and atoms["m"] == "POST"
    assert atoms["r"] == "POST /plugins/servlet/oauth/authorize HTTP/1.1"
