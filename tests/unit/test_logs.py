"""services/logs.py (docs/operations.md, "Logs"): the JSON and plain formatters and their
fields, the request-id context variable the RequestContext middleware sets, the request
id accepted only from a trusted proxy, and redaction of every secret-bearing text a line
can carry (message, traceback, every JSON field)."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import falcon
import falcon.testing
import pytest
from oauthlib.oauth1 import Client

from oauthledger.services import logs
from oauthledger.services.cli.workers import CELERY_APP, celery_argv
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.access_log import access_fields
from oauthledger.services.http.app import create_app
from oauthledger.services.http.context import RequestContext
from oauthledger.services.http.outcome import Refusal
from oauthledger.services.users import register_user
from tests.conftest import embedded_deps_in

META = {"actor": "test"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# One value per kind of secret, each in the shape a log line could meet it.
SECRETS = {
    "oauth_signature": "SIGvalue0001", "oauth_verifier": "VERvalue0002",
    "oauth_token_secret": "TSECvalue0003", "oauth_consumer_secret": "CSECvalue0004",
    "oauth_session_handle": "HANDLEvalue0005", "password": "PASSvalue0006",
    "csrf_token": "CSRFvalue0007", "sharedSecret": "SHAREDvalue0008",
    "oauthledger_session": "COOKIEvalue0009", "client_secret": "CLIENTvalue0010",
}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the root logger (handlers, level, warning capture) as the test found it."""
    root = logging.getLogger()
    handlers, level, last = list(root.handlers), root.level, logging.lastResort
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.lastResort = last
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
        logging.captureWarnings(False)
        logs.end_request()


def record(msg: str, *args: Any, level: int = logging.INFO, name: str = "oauthledger.test",
           exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    """A log record as a logger makes it."""
    rec = logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def as_json(line: str) -> dict[str, Any]:
    """A JSON line, checked to be one line of one object with every field, in order."""
    assert "\n" not in line and line.isascii()
    doc = json.loads(line)
    assert isinstance(doc, dict)
    assert list(doc)[:len(logs.FIELDS)] == list(logs.FIELDS)
    return doc


# -- the formatters ---------------------------------------------------------------------


def test_json_line_outside_a_request_has_every_field_null_where_it_does_not_apply() -> None:
    line = logs.JsonFormatter().format(record("projected %d events", 12, level=logging.WARNING,
                                              name="oauthledger.events.projection"))
    doc = as_json(line)
    assert TIMESTAMP.match(doc["timestamp"])
    assert doc["level"] == "WARNING" and doc["logger"] == "oauthledger.events.projection"
    assert doc["message"] == "projected 12 events"
    for name in ("request_id", "consumer_key", "user", "route", "status", "oauth_problem",
                 "duration_ms"):
        assert doc[name] is None, name
    assert set(doc) == set(logs.FIELDS)


def test_json_line_inside_a_request_names_it() -> None:
    consumer = SimpleNamespace(key="jira:1")
    context = SimpleNamespace(oauth=SimpleNamespace(consumer=consumer, user="alice"))
    logs.begin_request(logs.RequestLog("rid-1", method="GET", route="/rest/api/2/myself",
                                       address="10.0.0.7", context=context))
    try:
        doc = as_json(logs.JsonFormatter().format(record("hello")))
    finally:
        logs.end_request()
    assert doc["request_id"] == "rid-1" and doc["route"] == "/rest/api/2/myself"
    assert doc["consumer_key"] == "jira:1" and doc["user"] == "alice"
    assert doc["method"] == "GET" and doc["address"] == "10.0.0.7"
    assert doc["oauth_problem"] is None and doc["status"] is None
    # After the request, lines name no request any more.
    assert as_json(logs.JsonFormatter().format(record("later")))["request_id"] is None


def test_explicit_fields_win_over_the_context_variable() -> None:
    logs.begin_request(logs.RequestLog("other"))
    try:
        rec = record("GET / 200", **{logs.RECORD_FIELDS: {"request_id": "mine", "status": 200,
                                                          "duration_ms": 1.5}})
        doc = as_json(logs.JsonFormatter().format(rec))
    finally:
        logs.end_request()
    assert (doc["request_id"], doc["status"], doc["duration_ms"]) == ("mine", 200, 1.5)


def test_a_refusal_names_the_problem_and_only_a_registered_consumer() -> None:
    registered = SimpleNamespace(refusal=Refusal("signature_invalid", "jira:1", "advice"))
    unknown = SimpleNamespace(refusal=Refusal("consumer_key_unknown", None))
    assert logs.subject_of(registered) == ("jira:1", None, "signature_invalid")
    assert logs.subject_of(unknown) == (None, None, "consumer_key_unknown")
    assert logs.subject_of(SimpleNamespace()) == (None, None, None)
    assert logs.subject_of(None) == (None, None, None)


def test_a_json_line_is_one_line_whatever_the_message_holds() -> None:
    line = logs.JsonFormatter().format(record("a\nb\u2028c\x85d\re"))
    assert len(line.splitlines()) == 1
    assert as_json(line)["message"] == "a\nb\u2028c\x85d\re"


def test_plain_line_is_readable_text_with_the_request_id() -> None:
    fmt = logs.make_formatter("plain")
    logs.begin_request(logs.RequestLog("rid-9"))
    try:
        line = fmt.format(record("stored %s", "x", name="oauthledger.services.ledger"))
    finally:
        logs.end_request()
    assert isinstance(fmt, logs.PlainFormatter)
    assert "[INFO] oauthledger.services.ledger [rid-9]: stored x" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "[rid-" not in fmt.format(record("no request"))


# -- redaction --------------------------------------------------------------------------


def _secret_texts() -> list[str]:
    """Each secret in every shape a log text may hold it."""
    out = []
    for name, value in SECRETS.items():
        out += [f"GET /cb?x=1&{name}={value}", f'OAuth {name}="{value}", oauth_token="T"',
                f"{{'{name}': '{value}'}}", json.dumps({name: value}),
                f"Cookie: a=1; {name}={value}", f"next=/cb?{name}%3D{value}"]
    return out


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_no_secret_survives_in_the_message_or_a_traceback(fmt: str) -> None:
    formatter = logs.make_formatter(fmt)
    for text in _secret_texts():
        try:
            raise ValueError(text)
        except ValueError:
            exc_info = sys.exc_info()
        line = formatter.format(record("seen %s", text, exc_info=exc_info))
        for value in SECRETS.values():
            assert value not in line, (text, line)
        assert logs.REDACTED in line
        if fmt == "json":
            doc = as_json(line)
            assert "ValueError" in doc["exc_info"]


def test_every_json_field_is_redacted() -> None:
    fields = {name: f"x?oauth_signature={SECRETS['oauth_signature']}" for name in
              ("request_id", "consumer_key", "user", "route", "oauth_problem", "method",
               "address")}
    rec = record("m", task_id="password=" + SECRETS["password"],
                 task_name="t&csrf_token=" + SECRETS["csrf_token"],
                 **{logs.RECORD_FIELDS: fields})
    line = logs.JsonFormatter().format(rec)
    doc = as_json(line)
    for value in SECRETS.values():
        assert value not in line
    assert all(logs.REDACTED in doc[name] for name in fields)
    assert logs.REDACTED in doc["task_id"] and logs.REDACTED in doc["task_name"]


def test_redaction_leaves_identifiers_alone() -> None:
    text = "GET /rest/api/2/myself?oauth_token=T&oauth_consumer_key=jira:1 'secretary'"
    assert logs.redact(text) == text
    assert logs.redact('{"name": "x", "key": "jira"}') == '{"name": "x", "key": "jira"}'


def test_a_quoted_secret_is_redacted_to_its_closing_quote() -> None:
    out = logs.redact('oauth_signature="a b,c" next') or ""
    assert out == f'oauth_signature="{logs.REDACTED}" next'
    out = logs.redact("{'password': 'p, q}'}") or ""
    assert "p, q" not in out and out.startswith("{'password': '")


def test_other_formatters_are_wrapped_once() -> None:
    inner = logging.Formatter("%(levelname)s %(message)s")
    wrapped = logs.redacting(inner, "plain")
    line = wrapped.format(record("oauth_verifier=V1V1V1V1"))
    assert line == f"INFO oauth_verifier={logs.REDACTED}"
    assert logs.redacting(wrapped, "plain") is wrapped
    assert isinstance(logs.redacting(inner, "json"), logs.JsonFormatter)


# -- configuring a process ----------------------------------------------------------------


def test_configure_logging_replaces_its_own_handler_and_keeps_others(root_logging: None
                                                                      ) -> None:
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    logs.configure_logging("plain", stream=first)
    logs.configure_logging("json", stream=second)
    logging.getLogger("oauthledger.test").info("password=%s", SECRETS["password"])
    assert first.getvalue() == ""
    doc = as_json(second.getvalue().strip())
    assert doc["message"] == f"password={logs.REDACTED}"
    assert other in logging.getLogger().handlers
    assert sum(getattr(h, "_oauthledger_handler", False)
               for h in logging.getLogger().handlers) == 1


def test_warnings_become_lines_of_the_format(root_logging: None) -> None:
    import warnings

    out = io.StringIO()
    logs.configure_logging("json", stream=out)
    warnings.warn("deprecated thing", UserWarning, stacklevel=1)
    doc = as_json(out.getvalue().strip())
    assert doc["logger"] == "py.warnings" and "deprecated thing" in doc["message"]


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_a_logger_with_no_handler_that_does_not_propagate_writes_our_line(
        root_logging: None, fmt: str) -> None:
    # billiard's "multiprocessing" logger is the one seen in a Celery worker's log: it
    # does not propagate, and under our setup_logging receiver nobody gives it a handler.
    from billiard import util as billiard_util

    out = io.StringIO()
    logs.configure_logging(fmt, stream=out)
    orphan = logging.getLogger("oauthledger.test.orphan")
    orphan.propagate = False
    pool_logger = billiard_util.get_logger()
    # pytest's log capture attaches itself to every non-propagating logger it knows of.
    captured = list(pool_logger.handlers)
    pool_logger.handlers.clear()
    try:
        orphan.info("below the fallback threshold")
        orphan.error("token secret=%s", SECRETS["oauth_token_secret"])
        pool_logger.error("Process %r pid:%r exited with %r",
                          "ForkPoolWorker-1", 4242, "signal 15 (SIGTERM)")
    finally:
        orphan.propagate = True
        pool_logger.handlers[:] = captured
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert SECRETS["oauth_token_secret"] not in out.getvalue()
    if fmt == "json":
        first, second = as_json(lines[0]), as_json(lines[1])
        assert (first["logger"], first["level"]) == ("oauthledger.test.orphan", "ERROR")
        assert first["message"] == f"token secret={logs.REDACTED}"
        assert second["logger"] == "multiprocessing"
        assert second["message"] == ("Process 'ForkPoolWorker-1' pid:4242 exited with "
                                     "'signal 15 (SIGTERM)'")
    else:
        assert "[ERROR] oauthledger.test.orphan: token secret=" in lines[0]
        assert "[ERROR] multiprocessing: Process 'ForkPoolWorker-1'" in lines[1]


def _raise_with_secret() -> None:
    raise RuntimeError(f"failed on oauth_token_secret={SECRETS['oauth_token_secret']}")


def _one_json_error(out: io.StringIO) -> dict[str, Any]:
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    doc = as_json(lines[0])
    assert SECRETS["oauth_token_secret"] not in lines[0]
    assert "RuntimeError: failed on oauth_token_secret=" in doc["exc_info"]
    return doc


def test_an_exception_nobody_caught_is_a_log_line(root_logging: None) -> None:
    out = io.StringIO()
    logs.configure_logging("json", stream=out)
    try:
        _raise_with_secret()
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    doc = _one_json_error(out)
    assert (doc["logger"], doc["level"]) == ("oauthledger.uncaught", "CRITICAL")


def test_a_thread_that_dies_of_an_exception_is_a_log_line(root_logging: None) -> None:
    out = io.StringIO()
    logs.configure_logging("json", stream=out)
    thread = threading.Thread(target=_raise_with_secret, name="doomed")
    thread.start()
    thread.join()
    doc = _one_json_error(out)
    assert (doc["level"], doc["message"]) == ("ERROR", "uncaught exception in thread doomed")


def test_an_exception_python_ignores_is_a_log_line(root_logging: None) -> None:
    class Raises:
        def __del__(self) -> None:
            _raise_with_secret()

    out = io.StringIO()
    logs.configure_logging("json", stream=out)
    doomed = Raises()
    del doomed  # CPython runs __del__ here and reports its exception as unraisable
    doc = _one_json_error(out)
    assert doc["level"] == "WARNING" and doc["message"].startswith("Exception ignored in")


def test_a_greenlet_that_dies_of_an_exception_is_a_log_line(root_logging: None) -> None:
    import gevent

    out = io.StringIO()
    logs.configure_logging("json", stream=out)
    hub = gevent.get_hub()
    logs.route_hub_errors(hub)
    try:
        gevent.spawn(_raise_with_secret).join()
    finally:
        del hub.print_exception
    doc = _one_json_error(out)
    assert (doc["logger"], doc["level"]) == ("gevent.hub", "ERROR")
    assert doc["message"].endswith("failed with RuntimeError")


def test_cli_logging_keeps_the_ledger_quiet(root_logging: None) -> None:
    ledger = logging.getLogger("oauthledger.services.ledger")
    propagate, handlers = ledger.propagate, list(ledger.handlers)
    try:
        logs.configure_cli_logging("json")
        root = logging.getLogger()
        ours = [h for h in root.handlers if getattr(h, "_oauthledger_handler", False)]
        assert root.level == logging.WARNING and isinstance(ours[0].formatter,
                                                              logs.JsonFormatter)
        assert ledger.propagate is False
    finally:
        ledger.propagate = propagate
        ledger.handlers[:] = handlers


def test_celery_gets_json_through_its_setup_logging_signal(root_logging: None) -> None:
    import celery.apps.worker
    from celery import signals

    say = celery.apps.worker.safe_say
    stdout, stderr = sys.stdout, sys.stderr
    try:
        logs.install_celery_logging("json")
        signals.setup_logging.send(sender=None, loglevel=logging.DEBUG, logfile=None,
                                   format="", colorize=False)
        root = logging.getLogger()
        ours = [h for h in root.handlers if getattr(h, "_oauthledger_handler", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG
        # Standard output and error are a logger now, as Celery's own setup makes them:
        # a print() in a task, or a pool process's crash report, is a JSON line.
        out = io.StringIO()
        ours[0].setStream(out)
        print("printed by a task")
        sys.stderr.write("Process ForkPoolWorker-2:\nTraceback (most recent call last):\n")
        sys.stderr.flush()
        docs = [as_json(line) for line in out.getvalue().splitlines()]
        assert [(d["logger"], d["level"]) for d in docs] == [("celery.redirected",
                                                              "WARNING")] * len(docs)
        text = " ".join(d["message"] for d in docs)
        assert "printed by a task" in text and "Process ForkPoolWorker-2:" in text
        # The shutdown notice Celery writes raw from a signal handler is a JSON line too.
        read, write = os.pipe()
        celery.apps.worker.safe_say("worker: Warm shutdown (MainProcess)",
                                    os.fdopen(write, "w", closefd=False))
        os.close(write)
        doc = as_json(os.read(read, 65536).decode().strip())
        os.close(read)
        assert doc["message"] == "worker: Warm shutdown (MainProcess)"
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        signals.setup_logging.disconnect(logs._celery_setup_logging)
        celery.apps.worker.safe_say = say


def test_celery_plain_keeps_its_format_redacted() -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("[%(levelname)s/%(processName)s] %(message)s"))
    logger = logging.getLogger("oauthledger.test.celery-plain")
    logs._celery_after_setup(logger=SimpleNamespace(handlers=[handler]))
    logger.addHandler(handler)
    try:
        logger.warning("task saw oauth_token_secret=%s", SECRETS["oauth_token_secret"])
    finally:
        logger.removeHandler(handler)
    assert handler.stream.getvalue().startswith("[WARNING/MainProcess] task saw")
    assert SECRETS["oauth_token_secret"] not in handler.stream.getvalue()


def test_worker_and_beat_run_quiet_only_in_json() -> None:
    assert celery_argv("json", ["worker", "-l", "INFO"]) == [
        "-A", CELERY_APP, "--quiet", "worker", "-l", "INFO"]
    assert celery_argv("plain", ["beat"]) == ["-A", CELERY_APP, "beat"]


# -- the request id through the Falcon app ----------------------------------------------


class _Logs:
    """A JSON handler on the root logger, collecting lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        logs.configure_logging("json", stream=self.stream)

    def lines(self) -> list[dict[str, Any]]:
        return [as_json(line) for line in self.stream.getvalue().splitlines()]


class _Logging:
    """A resource that logs, as an application service does, while serving a request."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        logging.getLogger("oauthledger.test.resource").info("looked at a token")
        if token == "refuse":  # answered with a problem, no Refusal recorded
            resp.status = falcon.HTTP_401
            resp.set_header("WWW-Authenticate",
                            'OAuth realm="x", oauth_problem="token_rejected"')
        resp.media = {"ok": token != "refuse"}


def _app(deps: Deps) -> tuple[falcon.App, list[dict[str, Any]]]:
    envs: list[dict[str, Any]] = []

    class Capture:
        def process_response(self, req: falcon.Request, resp: falcon.Response,
                             resource: Any, req_succeeded: bool) -> None:
            envs.append(req.env)

    app = falcon.App(middleware=[Capture(), RequestContext(deps)])
    app.add_route("/things/{token}", _Logging())
    return app, envs


def _access(env: dict[str, Any], result: falcon.testing.Result) -> dict[str, Any]:
    resp = SimpleNamespace(status=result.status, headers=list(result.headers.items()))
    return access_fields(resp, env, datetime.timedelta(milliseconds=12))


@pytest.fixture
def deps_behind_proxy(tmp_path: Any) -> Iterator[Deps]:
    """Embedded deps trusting the proxy at 10.0.0.0/8."""
    with embedded_deps_in(tmp_path, TRUSTED_PROXIES="10.0.0.0/8") as deps:
        yield deps


def test_the_app_log_and_the_access_line_agree_on_the_request_id(
        deps_behind_proxy: Deps, root_logging: None) -> None:
    collected = _Logs()
    app, envs = _app(deps_behind_proxy)
    client = falcon.testing.TestClient(app)
    result = client.simulate_get("/things/tok-123", remote_addr="127.0.0.1")
    rid = result.headers["X-Request-Id"]
    app_lines = [d for d in collected.lines() if d["logger"] == "oauthledger.test.resource"]
    assert [d["request_id"] for d in app_lines] == [rid]
    assert app_lines[0]["route"] == "/things/{token}"
    access = _access(envs[0], result)
    assert access["request_id"] == rid and access["route"] == "/things/{token}"
    assert access["status"] == 200 and access["duration_ms"] == 12.0
    assert "tok-123" not in json.dumps(access)
    assert logs.current_request() is None  # the thread serves no request any more


def test_a_problem_answered_without_a_refusal_is_still_named(deps_behind_proxy: Deps) -> None:
    app, envs = _app(deps_behind_proxy)
    result = falcon.testing.TestClient(app).simulate_get("/things/refuse")
    line = _access(envs[0], result)
    assert (line["status"], line["oauth_problem"], line["consumer_key"]) == (
        401, "token_rejected", None)


def test_request_id_is_taken_only_from_a_trusted_proxy(deps_behind_proxy: Deps) -> None:
    app, _ = _app(deps_behind_proxy)
    client = falcon.testing.TestClient(app)
    proxied = client.simulate_get("/things/t", remote_addr="10.1.2.3",
                                  headers={"X-Request-Id": "proxy-abc.1"})
    assert proxied.headers["X-Request-Id"] == "proxy-abc.1"
    direct = client.simulate_get("/things/t", remote_addr="127.0.0.1",
                                 headers={"X-Request-Id": "client-chosen"})
    assert direct.headers["X-Request-Id"] != "client-chosen"
    assert re.match(r"^[0-9a-f]{16}$", direct.headers["X-Request-Id"])
    malformed = client.simulate_get("/things/t", remote_addr="10.1.2.3",
                                    headers={"X-Request-Id": "bad id\u00e9"})
    assert re.match(r"^[0-9a-f]{16}$", malformed.headers["X-Request-Id"])


def test_signed_requests_name_consumer_user_and_problem(embedded_deps: Deps,
                                                        root_logging: None) -> None:
    """Through the whole app: an accepted two-legged call names its consumer and user; an
    unsigned one the problem; the route is the template."""
    deps = embedded_deps
    register_user(deps.ledger, "alice", "alice-password-1", meta=META)
    _, secret = register_consumer(deps.ledger, deps.sealer, "jira:1", ConsumerInput(
        name="Jira", generate_secret=True, two_legged_user="alice"), META)
    assert secret is not None
    envs: list[dict[str, Any]] = []

    class Capture:
        def process_response(self, req: Any, resp: Any, resource: Any, ok: bool) -> None:
            envs.append(req.env)

    app = create_app(deps)
    app.add_middleware(Capture())
    client = falcon.testing.TestClient(app)
    url = "http://falconframework.org/rest/api/2/myself"
    _, headers, _ = Client("jira:1", client_secret=secret).sign(url)
    accepted = client.simulate_get("/rest/api/2/myself", headers=headers)
    assert accepted.status_code == 200, accepted.text
    line = _access(envs[-1], accepted)
    assert (line["consumer_key"], line["user"], line["oauth_problem"]) == ("jira:1", "alice",
                                                                           None)
    assert line["route"] == "/rest/api/2/myself" and line["status"] == 200

    unsigned = client.simulate_get("/rest/api/2/myself")
    line = _access(envs[-1], unsigned)
    assert unsigned.status_code in (400, 401)
    assert line["oauth_problem"] == "parameter_absent" and line["user"] is None
    assert line["request_id"] == unsigned.headers["X-Request-Id"]
