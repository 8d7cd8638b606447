"""The access log never carries a secret-bearing parameter: gunicorn's plain lines are
redacted, and in JSON (OAUTHLEDGER_LOG_FORMAT=json) each request is one JSON object of
the request's fields, never its raw path, query or headers (docs/operations.md, "Logs").
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config

from oauthledger.services import logs
from oauthledger.services.http.access_log import ACCESS_BUFFER_CHARS, RedactingLogger, redact
from oauthledger.services.http.outcome import Refusal


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """RedactingLogger sets up the root logger (the app's records); leave it as found."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


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


def test_credential_headers_are_redacted_whole() -> None:
    logger = RedactingLogger(Config())
    environ = {
        "REQUEST_METHOD": "POST", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/rest/x",
        "RAW_URI": "/rest/x", "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_COOKIE": "oauthledger_session=c00kie", "HTTP_X_CSRF_TOKEN": "csrfcsrf",
    }
    req = SimpleNamespace(headers=[("COOKIE", "oauthledger_session=c00kie"),
                                   ("X-CSRF-TOKEN", "csrfcsrf"),
                                   ("PROXY-AUTHORIZATION", "Basic cHJveHk6cHc=")])
    resp = SimpleNamespace(status="200 OK", sent=0, headers=[
        ("Set-Cookie", "oauthledger_session=n3wc00kie; HttpOnly")])
    atoms = logger.atoms(resp, req, environ, datetime.timedelta(seconds=1))
    text = " ".join(str(v) for v in atoms.values())
    for secret in ("c00kie", "csrfcsrf", "cHJveHk6cHc", "n3wc00kie"):
        assert secret not in text
    assert atoms["{cookie}i"] == atoms["{x-csrf-token}i"] == "[redacted]"


def _json_logger(monkeypatch: pytest.MonkeyPatch) -> RedactingLogger:
    """The logger as the packaged gunicorn configuration sets it up (access log on
    standard output), in JSON."""
    monkeypatch.setenv("OAUTHLEDGER_LOG_FORMAT", "json")
    cfg = Config()
    cfg.set("accesslog", "-")
    return RedactingLogger(cfg)


def test_json_access_line_has_the_request_fields_and_no_raw_request(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    logger = _json_logger(monkeypatch)
    consumer = SimpleNamespace(key="jira:1")
    entry = logs.RequestLog("rid-42", method="GET", route="/rest/oauthledger/1/tokens/{token}",
                            address="10.0.0.9", context=SimpleNamespace(
                                oauth=SimpleNamespace(consumer=consumer, user="alice")))
    environ = {
        "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/rest/oauthledger/1/tokens/T0KEN1D",
        "RAW_URI": "/rest/oauthledger/1/tokens/T0KEN1D?oauth_signature=s3cr3t",
        "QUERY_STRING": "oauth_signature=s3cr3t", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": 'OAuth oauth_signature="zzz"', logs.ENVIRON_KEY: entry,
    }
    req = SimpleNamespace(headers=[("AUTHORIZATION", 'OAuth oauth_signature="zzz"')])
    resp = SimpleNamespace(status="200 OK", status_code=200, sent=10, headers=[])
    logger.access(resp, req, environ, datetime.timedelta(milliseconds=3, microseconds=250))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    doc = json.loads(out[0])
    assert list(doc)[:len(logs.FIELDS)] == list(logs.FIELDS)
    assert doc["logger"] == "gunicorn.access" and doc["level"] == "INFO"
    assert (doc["request_id"], doc["consumer_key"], doc["user"]) == ("rid-42", "jira:1", "alice")
    assert doc["route"] == "/rest/oauthledger/1/tokens/{token}"
    assert doc["status"] == 200 and doc["duration_ms"] == 3.25 and doc["oauth_problem"] is None
    assert doc["message"] == "GET /rest/oauthledger/1/tokens/{token} 200"
    for raw in ("T0KEN1D", "s3cr3t", "zzz"):
        assert raw not in out[0]


def test_json_access_line_of_a_refused_request(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    logger = _json_logger(monkeypatch)
    entry = logs.RequestLog("rid-7", method="POST", route="/plugins/servlet/oauth/access-token",
                            context=SimpleNamespace(refusal=Refusal("token_used", "jira:1")))
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": "/plugins/servlet/oauth/access-token",
               "REMOTE_ADDR": "127.0.0.1", logs.ENVIRON_KEY: entry}
    resp = SimpleNamespace(status="401 Unauthorized", headers=[])
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(seconds=0))
    doc = json.loads(capsys.readouterr().out)
    assert (doc["status"], doc["oauth_problem"], doc["consumer_key"], doc["user"]) == (
        401, "token_used", "jira:1", None)


def test_json_access_line_of_a_request_the_app_never_saw(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    logger = _json_logger(monkeypatch)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/x?password=hunter2",
               "REMOTE_ADDR": "127.0.0.1"}
    resp = SimpleNamespace(status="400 Bad Request", headers=[("X-Request-Id", "abc")])
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(seconds=0))
    line = capsys.readouterr().out
    doc = json.loads(line)
    assert doc["request_id"] == "abc" and doc["route"] is None and doc["status"] == 400
    assert "hunter2" not in line and "/x" not in line


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_gunicorn_error_log_and_app_records_are_redacted(
        fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OAUTHLEDGER_LOG_FORMAT", fmt)
    logger = RedactingLogger(Config())
    # gunicorn's own "Error handling request /cb?oauth_verifier=..." names the raw URI.
    logger.error("Error handling request %s", "/cb?oauth_verifier=v3r1f13r")
    logging.getLogger("oauthledger.services.test").warning(
        "refused: oauth_token_secret=t0ks3cr3t")
    err = capsys.readouterr().err
    assert "v3r1f13r" not in err and "t0ks3cr3t" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all("[redacted]" in line for line in lines)
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        assert [d["logger"] for d in docs] == ["gunicorn.error", "oauthledger.services.test"]
    else:
        assert "[INFO]" not in lines[0] and "[ERROR]" in lines[0]
        assert "oauthledger.services.test: refused" in lines[1]


# Every atom the cheap path computes itself, in one format (gunicorn's default format
# names h l u t r s b f a).
_ALL_CHEAP = " ".join(f"%({name})s" for name in "hlutrsmUqHbBfaTDMLp")


_STAMP = re.compile(r"\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]")


@pytest.mark.parametrize("fmt", [Config().access_log_format, _ALL_CHEAP])
def test_cheap_access_line_is_gunicorns_line_redacted(
        fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The plain access line is built from the atoms the format names only; it is the
    line gunicorn's own atoms give, with the same redaction."""
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", fmt)
    logger = RedactingLogger(cfg)
    # pytest's log capture hangs its own handlers on the logger; production has
    # gunicorn's stream handler alone (with them, every line goes through logging).
    for handler in list(logger.access_log.handlers):
        if type(handler) is not logging.StreamHandler:
            logger.access_log.removeHandler(handler)
    logger._direct = logger._plain_stream_handlers()
    assert logger._atom_names is not None  # the cheap path is taken
    assert logger._direct  # written to gunicorn's stream handler without a LogRecord
    environ = {
        "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/x",
        "RAW_URI": "/x?oauth_signature=s3cr3t%26t0k&a=1", "QUERY_STRING":
        "oauth_signature=s3cr3t%26t0k&a=1", "REMOTE_ADDR": "10.1.2.3",
        "HTTP_REFERER": "https://c.example/cb?oauth_verifier=v3r", "HTTP_USER_AGENT": "ua/1",
        "HTTP_AUTHORIZATION": "Basic " + __import__("base64").b64encode(b"bob:pw").decode(),
    }
    req = SimpleNamespace(headers=[("USER-AGENT", "ua/1")])
    resp = SimpleNamespace(status="401 Unauthorized", sent=123, headers=[])
    took = datetime.timedelta(seconds=1, microseconds=2345)
    logger.access(resp, req, environ, took)
    logger.flush_access()
    cheap = capsys.readouterr().out.strip()
    expected = redact(fmt % logger.atoms_wrapper_class(logger.atoms(resp, req, environ, took)))
    # Whole lines, but the two lines were made a moment apart and may straddle a second:
    # their timestamps (%(t)s) must be in the same format and at most a second apart.
    stamps = [_STAMP.search(line) for line in (cheap, expected)]
    assert all(stamps)
    when = [datetime.datetime.strptime(m.group(0), "[%d/%b/%Y:%H:%M:%S %z]")
            for m in stamps if m]
    assert datetime.timedelta(0) <= when[1] - when[0] <= datetime.timedelta(seconds=1)
    assert _STAMP.sub("[T]", cheap) == _STAMP.sub("[T]", expected)
    for secret in ("s3cr3t", "t0k", "v3r", "pw"):
        assert secret not in cheap


def test_a_format_naming_headers_takes_gunicorns_full_atoms(
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", '%(h)s "%({x-trace}i)s" "%({authorization}i)s"')
    logger = RedactingLogger(cfg)
    assert logger._atom_names is None
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/",
               "RAW_URI": "/", "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3"}
    req = SimpleNamespace(headers=[("X-TRACE", "t-1"), ("AUTHORIZATION", 'OAuth x="zzz"')])
    resp = SimpleNamespace(status="200 OK", sent=1, headers=[])
    logger.access(resp, req, environ, datetime.timedelta(microseconds=5))
    line = capsys.readouterr().out.strip()
    assert line == '10.1.2.3 "t-1" "[redacted]"'


def test_an_access_log_with_a_filter_goes_through_logging(
        capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's filter (or any handler that is not gunicorn's own) sees every line:
    the direct write is only taken where it is exactly what logging would do."""
    cfg = Config()
    cfg.set("accesslog", "-")
    logger = RedactingLogger(cfg)
    seen: list[str] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(record.getMessage())
            return True

    keep = Keep()
    logger.access_log.addFilter(keep)  # gunicorn's access logger is process-wide
    try:
        logger.setup(cfg)
        assert logger._direct == []
        environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/q",
                   "RAW_URI": "/q?oauth_verifier=v3r", "QUERY_STRING": "oauth_verifier=v3r",
                   "REMOTE_ADDR": "10.1.2.3"}
        resp = SimpleNamespace(status="200 OK", sent=2, headers=[])
        logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    finally:
        logger.access_log.removeFilter(keep)
    line = capsys.readouterr().out.strip()
    assert len(seen) == 1 and "v3r" not in line and "GET /q?oauth_verifier=[redacted]" in line


class _CountingRaw(io.RawIOBase):
    """A raw stream that records every write it gets (each one a system call for a
    real file descriptor)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.writes.append(bytes(b))
        return len(b)


def test_access_lines_are_batched_even_on_a_write_through_stream() -> None:
    """PYTHONUNBUFFERED (usual in containers) makes standard output write through on
    every call: the worker's own buffer still batches the lines."""
    raw = _CountingRaw()
    stream = io.TextIOWrapper(io.BufferedWriter(raw), write_through=True)  # as -u does
    cfg = Config()
    cfg.set("accesslog", "-")
    logger = RedactingLogger(cfg)
    for handler in list(logger.access_log.handlers):
        logger.access_log.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.access_log.addHandler(handler)
    handler.setFormatter(logs.redacting(handler.formatter, "plain"))
    logger._direct = logger._plain_stream_handlers()
    assert logger._direct == [handler]
    logger._flusher = threading.current_thread()  # no flusher thread in this test
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/healthz",
               "RAW_URI": "/healthz", "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3"}
    resp = SimpleNamespace(status="200 OK", sent=3, headers=[])
    for _ in range(5):
        logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    assert raw.writes == []
    logger.flush_access()
    assert len(raw.writes) == 1 and raw.writes[0].decode().count("\n") == 5
    # Once ACCESS_BUFFER_CHARS have gathered they leave without waiting for the tick.
    line_chars = len(raw.writes[0]) // 5
    for _ in range(ACCESS_BUFFER_CHARS // line_chars + 1):
        logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    assert len(raw.writes) == 2
    assert len(raw.writes[1]) >= ACCESS_BUFFER_CHARS


def test_plain_access_lines_are_written_in_batches(tmp_path: Path) -> None:
    """The plain line waits in the file's buffer (no write system call per request)
    and leaves on the flusher's tick or the worker's exit (gunicorn_conf.worker_exit)."""
    path = tmp_path / "access.log"
    cfg = Config()
    cfg.set("accesslog", str(path))
    logger = RedactingLogger(cfg)
    for handler in list(logger.access_log.handlers):  # pytest's capture handlers
        if not isinstance(handler, logging.FileHandler):
            logger.access_log.removeHandler(handler)
    logger._direct = logger._plain_stream_handlers()
    assert logger._direct
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/healthz",
               "RAW_URI": "/healthz", "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3"}
    resp = SimpleNamespace(status="200 OK", sent=3, headers=[])
    for _ in range(3):
        logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    assert path.read_text() == ""  # buffered
    logger.flush_access()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all('"GET /healthz HTTP/1.1" 200 3' in line for line in lines)
    # The flusher writes the next ones without being asked.
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    deadline = time.monotonic() + 5
    while len(path.read_text().splitlines()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(path.read_text().splitlines()) == 4
