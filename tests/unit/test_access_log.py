"""The access log never carries a secret-bearing parameter."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

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
