"""Log lines of every process, in one of two formats (OAUTHLEDGER_LOG_FORMAT,
docs/operations.md, "Logs"): ``plain``, one readable line for a terminal (the default),
or ``json``, one JSON object per line for a log collector, always with the same fields
(:data:`FIELDS`; ``null`` where a field does not apply).

The pieces, shared by every composition root:

- the request being served is a :class:`RequestLog` in a context variable
  (:func:`begin_request` / :func:`end_request`, called by the HTTP app's
  ``RequestContext`` middleware), so every log record of that request carries its request
  id, route, consumer and user without any logging call passing them;
- :class:`JsonFormatter` and :class:`PlainFormatter` format a record with those fields;
- :func:`redact` takes the value of every secret-bearing parameter out of a text. Both
  formatters run every text they write through it — the message, a traceback, every JSON
  field — so a secret a log call or an exception message carries never reaches a line
  (docs/security.md: secrets never appear in a log line);
- :func:`configure_logging` (the front ends, through gunicorn's logger class),
  :func:`install_celery_logging` (``oauthledger worker`` and ``beat``) and
  :func:`configure_cli_logging` (the command line) install them.

Nothing here opens a connection or reads the environment; the format comes from
``Settings.log_format``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import unquote

# -- redaction --------------------------------------------------------------------------

# Parameters whose value is a secret or a one-time credential, besides every parameter
# whose name contains "secret". ``oauth_token`` is an identifier (it appears in admin
# pages and the audit log), not a secret. ``oauthledger_session`` is the session cookie
# (services.sessions.COOKIE): whoever holds its value is signed in.
SECRET_PARAMETERS = (
    "oauth_signature", "oauth_verifier", "oauth_token_secret", "oauth_consumer_secret",
    "oauth_session_handle", "password", "csrf_token", "secret", "shared_secret",
    "sharedSecret", "client_secret", "oauthledger_session",
)
_SECRET_NAMES = frozenset(p.lower() for p in SECRET_PARAMETERS)
REDACTED = "[redacted]"


def is_secret_parameter(name: str) -> bool:
    """Whether a parameter named ``name`` (as sent: percent-encoded or not, any case)
    carries a secret. The name is decoded first, as the application decodes it, so
    ``oauth%5Fsignature`` is ``oauth_signature``."""
    plain = unquote(name).lower() if "%" in name else name.lower()
    return plain in _SECRET_NAMES or "secret" in plain


def redact(text: str | None) -> str | None:
    """``text`` with the value of every secret-bearing parameter replaced by
    ``[redacted]``: in a query or form (``a=1&oauth_signature=...``), an OAuth header
    (``oauth_signature="..."``), a cookie list, a mapping written out as JSON or Python
    (``{"sharedSecret": "..."}``), and a parameter inside another one's value (a callback
    URL with its own query)."""
    if not text or ("=" not in text and "%3" not in text
                    and not (":" in text and ('"' in text or "'" in text))):
        return text
    out: list[str] = []
    done = 0  # text[:done] is in ``out``
    for match in _NAME.finditer(text):
        name = match.group("name") or match.group("key")
        if match.start() < done or not is_secret_parameter(name):
            continue  # inside a value already redacted, or not a secret
        quote = match.group("quote") or match.group("kquote")
        if quote:  # a quoted value ends at its closing quote, whatever it holds
            stop = text.find(quote, match.end())
            stop = len(text) if stop < 0 else stop
        else:
            ends = _VALUE_END if match.group("name") else _MAPPING_VALUE_END
            end = ends.search(text, match.end())
            stop = end.start() if end else len(text)
        out += (text[done:match.end()], REDACTED)
        done = stop
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# A parameter name and what joins it to its value, where a parameter can start: the
# start of the text or after ? & ; , { a quote or white space (a query, a form, a
# header's list, a cookie list, a mapping, a quoted URL). The join is "=" or its
# percent-encoding, then maybe a quote; or, for a mapping, a quoted name, ":" and maybe a
# quote. The value is not consumed, so a parameter inside another one's value is found.
_NAME = re.compile(
    r"(?:^|(?<=[?&;\s,{\"']))"
    r"(?:(?P<name>[^=&;\s,?\"'{]+?)(?:=|%3[dD])(?P<quote>[\"']?)"
    r"|[\"'](?P<key>[^\"'\s]+?)[\"']\s*:\s*(?P<kquote>[\"']?))"
)
# Where an unquoted value ends: a parameter's, and a mapping's (a number, true, None).
_VALUE_END = re.compile(r"[&;\s\",]")
_MAPPING_VALUE_END = re.compile(r"[,}\s]")


# -- the request being served -----------------------------------------------------------

# The fields every JSON line has, in this order (docs/operations.md, "Logs").
FIELDS = ("timestamp", "level", "logger", "request_id", "consumer_key", "user", "route",
          "status", "oauth_problem", "duration_ms", "message")
# Fields a line has only when they apply.
OPTIONAL_FIELDS = ("method", "address", "task_id", "task_name", "exc_info", "stack_info")
# The WSGI environ entry where the HTTP app leaves the RequestLog of a request, for the
# access log (gunicorn calls its logger with the same environ after the app returned).
ENVIRON_KEY = "oauthledger.log"
# The record attribute carrying a request's fields explicitly (the access log's records:
# they are logged after the request left the app, so the context variable is empty).
RECORD_FIELDS = "oauthledger_fields"


@dataclass
class RequestLog:
    """What the log knows about one HTTP request: its id, method, route template, client
    address, and the request's context object (Falcon's ``req.context``), read when a
    line is written: an accepted signed request's ``oauth`` (AuthContext) names the
    consumer and user, a refused one's ``refusal`` (services/http/outcome.py) the
    problem and, for a registered consumer only, its key."""

    request_id: str
    method: str | None = None
    route: str | None = None
    address: str | None = None
    context: Any = None
    oauth_problem: str | None = None

    def fields(self) -> dict[str, Any]:
        """The request's fields as a line shows them."""
        consumer_key, user, problem = subject_of(self.context)
        return {"request_id": self.request_id, "consumer_key": consumer_key, "user": user,
                "route": self.route, "oauth_problem": problem or self.oauth_problem,
                "method": self.method, "address": self.address}


def subject_of(context: Any) -> tuple[str | None, str | None, str | None]:
    """(consumer key, user, oauth_problem) of a request context: the consumer and user an
    accepted signed request acts for (``context.oauth``), or the problem of a refused one
    and the consumer key its Refusal names (only a registered consumer's: any other key
    is text the client chose)."""
    if context is None:
        return None, None, None
    oauth = getattr(context, "oauth", None)
    refusal = getattr(context, "refusal", None)
    problem = getattr(refusal, "problem", None)
    if oauth is not None:
        consumer = getattr(oauth, "consumer", None)
        return getattr(consumer, "key", None), getattr(oauth, "user", None), problem
    if refusal is not None:
        return getattr(refusal, "consumer_key", None), None, problem
    return None, None, None


_CURRENT: contextvars.ContextVar[RequestLog | None] = contextvars.ContextVar(
    "oauthledger_request_log", default=None)


def begin_request(entry: RequestLog) -> None:
    """Make ``entry`` the request of the log records this thread (or task) writes next."""
    _CURRENT.set(entry)


def end_request() -> None:
    """No request any more: gunicorn's threads serve one request after another, and a
    line written between two requests must not name the previous one."""
    _CURRENT.set(None)


def current_request() -> RequestLog | None:
    """The request being served in this thread, if any."""
    return _CURRENT.get()


# -- formatters -------------------------------------------------------------------------


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-01-31T12:00:00.123Z``."""
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _request_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    explicit = getattr(record, RECORD_FIELDS, None)
    if explicit is not None:
        return explicit
    entry = _CURRENT.get()
    return entry.fields() if entry is not None else {}


def _clean(value: Any) -> Any:
    """A field's value as JSON holds it, strings redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: :data:`FIELDS` always, in that order,
    then those of :data:`OPTIONAL_FIELDS` that apply. Every string goes through
    :func:`redact`. ASCII only, so no character a reader takes for a line end (U+2028,
    NEL) ever appears raw."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        request = _request_fields(record)
        doc: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "request_id": request.get("request_id"),
            "consumer_key": request.get("consumer_key"),
            "user": request.get("user"),
            "route": request.get("route"),
            "status": request.get("status"),
            "oauth_problem": request.get("oauth_problem"),
            "duration_ms": request.get("duration_ms"),
            "message": record.getMessage(),
        }
        for name in ("method", "address"):
            if request.get(name) is not None:
                doc[name] = request[name]
        for name in ("task_id", "task_name"):
            value = getattr(record, name, None)
            if value is not None and value != "???":
                doc[name] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps({k: _clean(v) for k, v in doc.items()}, ensure_ascii=True,
                          separators=(",", ":"), default=str)


class PlainFormatter(logging.Formatter):
    """A readable line: time, process, level, logger, ``[request id]`` while a request
    is served, the message; the whole line (traceback included) through :func:`redact`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] [%(levelname)s] %(name)s%(request)s: "
                         "%(message)s", "[%Y-%m-%d %H:%M:%S %z]")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one readable line (more for a traceback), redacted."""
        rid = _request_fields(record).get("request_id")
        record.request = f" [{rid}]" if rid else ""
        return redact(super().format(record)) or ""


class RedactingFormatter(logging.Formatter):
    """Another formatter's line (gunicorn's, Celery's) with secret values taken out."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """What the inner formatter writes, redacted."""
        return redact(self.inner.format(record)) or ""


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``plain`` or ``json``; Settings.log_format)."""
    return JsonFormatter() if log_format == "json" else PlainFormatter()


def redacting(formatter: logging.Formatter | None, log_format: str) -> logging.Formatter:
    """What a handler someone else made (gunicorn's, Celery's) should format with: ours in
    JSON, theirs redacted in plain. Never wraps twice."""
    if isinstance(formatter, JsonFormatter | PlainFormatter | RedactingFormatter):
        return formatter
    if log_format == "json":
        return JsonFormatter()
    return RedactingFormatter(formatter)


# -- configuration of a process ---------------------------------------------------------

_OURS = "_oauthledger_handler"
# Libraries that log at INFO what no operator needs: Alembic announces each of its
# plugins whenever it is imported (every process that opens the store).
_NOISE = ("alembic.runtime.plugins",)


class _LastResort(logging.Handler):
    """Hands a record no other handler took to ``target`` (our handler), so it is
    formatted and redacted like every other line."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(logging.WARNING)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        """Pass the record on; the target applies its own filters and lock."""
        self.target.handle(record)


# -- errors nobody caught ----------------------------------------------------------------

# Python reports an exception nobody caught (in the main thread, in another thread, in a
# destructor or callback: "Exception ignored in ...") by printing a traceback to standard
# error itself, past logging: outside the log format and unredacted, though a traceback's
# locals and messages may hold a request's parameters. These hooks make each one record.
_UNCAUGHT = logging.getLogger("oauthledger.uncaught")


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """``sys.excepthook``: the exception that ends the program, as one CRITICAL record.
    Ctrl-C keeps Python's short report."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    _UNCAUGHT.critical("uncaught exception, exiting", exc_info=(kind, value, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread that died of an exception, as one ERROR record
    (a thread ended by ``SystemExit`` is not an error, as in Python's own hook)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _UNCAUGHT.error("uncaught exception in thread %s", name,
                    exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_unraisable(args: Any) -> None:
    """``sys.unraisablehook``: an exception Python had to ignore (in ``__del__``, a weak
    reference callback, a generator's close), as one WARNING record."""
    where = args.err_msg or "Exception ignored in"
    with contextlib.suppress(Exception):
        where = f"{where}: {args.object!r}" if args.object is not None else where
    _UNCAUGHT.warning("%s", where,
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def install_exception_hooks() -> None:
    """Route Python's own reports of uncaught exceptions through logging (above)."""
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable


def route_hub_errors(hub: Any) -> None:
    """Make a gevent hub report a greenlet that died of an exception as one ERROR record
    rather than a traceback printed to standard error (gevent's ``Hub.print_exception``,
    which the hub calls for every such greenlet; assigning it on the instance is the
    override gevent documents for its error handling)."""
    log = logging.getLogger("gevent.hub")

    def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
        what = "a callback" if context is None else context
        with contextlib.suppress(Exception):
            if context is not None and not isinstance(context, str):
                what = hub.format_context(context)
        log.error("%s failed with %s", what, getattr(kind, "__name__", "exception"),
                  exc_info=(kind, value, tb))

    hub.print_exception = print_exception


def configure_logging(log_format: str, *, level: int | str = logging.INFO,
                      stream: TextIO | None = None,
                      handler: logging.Handler | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (standard error) or ``handler``, in
    ``log_format``, from ``level`` up. Replaces the handler an earlier call installed and
    leaves any other alone, so calling it again (a configuration reload) does not double
    lines. Python warnings become log records too, so they are formatted the same way."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):
            root.removeHandler(old)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level)
    # A record of a logger that neither propagates nor has a handler of its own goes to
    # logging.lastResort, which writes the bare message, unredacted and in no format:
    # billiard's "multiprocessing" logger under our Celery setup is one ("Process
    # 'ForkPoolWorker-1' pid:... exited with 'signal 15 (SIGTERM)'" when a service
    # manager signals the whole process group). Such records take our handler instead,
    # from lastResort's own threshold (WARNING) up.
    logging.lastResort = _LastResort(handler)
    install_exception_hooks()
    for name in _NOISE:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


def configure_cli_logging(log_format: str,
                          reported_elsewhere: Iterable[str] = ("oauthledger.services.ledger",)
                          ) -> logging.Handler:
    """The command line's log records (warnings and worse) on standard error, in
    ``log_format``. The loggers in ``reported_elsewhere`` stay silent: the command prints
    their news in its own one line (services.cli.main.warn_deferred)."""
    for name in reported_elsewhere:
        quiet = logging.getLogger(name)
        quiet.propagate = False
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
    return configure_logging(log_format, level=logging.WARNING)


class _CeleryTask(logging.Filter):
    """Adds the running task's name and id to a worker's records (as Celery's own task
    formatter does), so a JSON line says which task wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from celery._state import get_current_task

        task = get_current_task()
        if task is not None and task.request is not None and task.request.id:
            record.task_id = task.request.id
            record.task_name = task.name
        return True


def _celery_setup_logging(loglevel: int | None = None, logfile: str | None = None,
                          **_: Any) -> None:
    """Celery's ``setup_logging`` signal (JSON): our handler instead of Celery's. A
    receiver of this signal makes Celery skip its own setup; its prefork children
    inherit the handler."""
    handler = logging.FileHandler(logfile) if logfile else None
    installed = configure_logging("json", level=loglevel or logging.INFO, handler=handler)
    installed.addFilter(_CeleryTask())
    _celery_redirect_stdouts()


def _celery_redirect_stdouts() -> None:
    """What Celery does after a setup of its own, and skips after ours (its worker checks
    whether a receiver handled the setup): standard output and error become a logger,
    ``celery.redirected``, at ``worker_redirect_stdouts_level``, unless the app's
    ``worker_redirect_stdouts`` is off. A ``print`` in a task, or a pool process's own
    crash report (billiard writes it to standard error), is then a JSON line too. Our
    handler was made before this and keeps the real standard error."""
    from celery import current_app

    conf = current_app.conf
    if conf.worker_redirect_stdouts:
        current_app.log.redirect_stdouts_to_logger(
            logging.getLogger("celery.redirected"),
            loglevel=conf.worker_redirect_stdouts_level)


def _celery_after_setup(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery's ``after_setup_logger`` / ``after_setup_task_logger`` (plain): keep
    Celery's lines, redacted."""
    for handler in getattr(logger, "handlers", ()):
        handler.setFormatter(redacting(handler.formatter, "plain"))


def _celery_say_json(msg: str, f: TextIO = sys.__stderr__) -> None:
    """Celery's ``safe_say`` in JSON: the worker's shutdown notices ("worker: Warm
    shutdown") as a JSON line. Celery writes them from its signal handlers with one
    ``os.write``, taking no lock; this does the same with a line formatted here."""
    record = logging.LogRecord("celery.apps.worker", logging.INFO, __file__, 0,
                               msg.strip(), None, None)
    # As Celery's: a lost notice must never abort a shutdown.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(f.fileno(), (JsonFormatter().format(record) + "\n").encode())


def install_celery_logging(log_format: str) -> None:
    """Hook the chosen format into the Celery worker or beat about to start in this
    process (before Celery sets up logging). JSON replaces Celery's logging setup (and
    its few raw notices); plain keeps Celery's format and colours and only redacts."""
    import celery.apps.worker
    from celery import signals

    if log_format == "json":
        # Records (and warnings) from before Celery's setup, such as its start-up checks,
        # are JSON too; the setup_logging receiver then applies the level asked for.
        configure_logging("json")
        signals.setup_logging.connect(_celery_setup_logging, weak=False)
        celery.apps.worker.safe_say = _celery_say_json  # type: ignore[assignment]
    else:
        signals.after_setup_logger.connect(_celery_after_setup, weak=False)
        signals.after_setup_task_logger.connect(_celery_after_setup, weak=False)
