"""gunicorn's access and error logs with secrets taken out, in the format chosen by
OAUTHLEDGER_LOG_FORMAT (docs/operations.md, "Logs").

gunicorn logs the request line and the query string as the client sent them. OAuth 1.0a
lets a client put its protocol parameters in the query (RFC 5849 §3.5.3), so a
PLAINTEXT-signed call would write the consumer secret and token secret to the log
(the PLAINTEXT "signature" is the two secrets), and an access-token call its verifier.

- **plain** (the default): gunicorn's own lines, with the value of every secret-bearing
  parameter replaced by ``[redacted]`` in the request line, the path, the query string,
  the Referer, the User-Agent and any logged request or response header or environ entry,
  before the line is formatted; headers that are credentials as a whole (Authorization,
  Cookie, the CSRF header) are replaced whole.
- **json**: one JSON object per request (services.logs.JsonFormatter) instead of
  gunicorn's format: the request id, consumer key, user, route template, status,
  oauth_problem and duration, read from what the app left in the WSGI environ
  (services.logs.ENVIRON_KEY). No raw path, query or header is written at all.

Either way gunicorn's error log goes through the same redaction, and :meth:`setup`
configures the root logger, so the application's own records (services.logs) come out in
the same format on standard error: this logger class is the logging half of the gunicorn
composition root.

It runs for every request, so the common case stays cheap (docs/BENCHMARKS.md, "Front
end": gunicorn's own ``access`` was over a third of the CPU time of a ``/healthz``
request): the atoms the configured ``access_log_format`` names are read from the
format once, and only those are computed per request — not gunicorn's dictionary of
every header and environ entry — and of them only the ones that can carry parameters are
redacted, searched only when they hold an ``=`` (or its percent-encoding).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any

from gunicorn.glogging import Logger

from oauthledger.events.settings import load_settings
from oauthledger.services.logs import (
    ENVIRON_KEY,
    RECORD_FIELDS,
    REDACTED,
    SECRET_PARAMETERS,
    RedactingFormatter,
    RequestLog,
    configure_logging,
    is_secret_parameter,
    redact,
    redacting,
)

__all__ = ["REDACTED", "SECRET_PARAMETERS", "RedactingLogger", "is_secret_parameter",
           "redact"]

# gunicorn's atoms that can carry parameters: the request line ("r"), the path ("U",
# decoded, so an encoded "?" shows), the query ("q"), the Referer ("f"), the User-Agent
# ("a"), the Basic user name ("u"), and every request header ("{x}i"), response header
# ("{x}o": a Location carries a callback's verifier) and environ entry ("{x}e") a custom
# access_log_format may name. The others (address, time, status, sizes, durations, pid)
# are gunicorn's own.
_TEXT_ATOMS = frozenset("rUqfau")
# Headers that are a credential as a whole, as request header, environ entry or response
# header atoms: Basic and OAuth Authorization, the session cookie (Cookie, Set-Cookie) and
# the anti-CSRF token header (services.http.access.CSRF_HEADER).
_REDACTED_WHOLE = frozenset((
    "{authorization}i", "{http_authorization}e", "{proxy-authorization}i",
    "{http_proxy_authorization}e", "{cookie}i", "{http_cookie}e", "{set-cookie}o",
    "{x-csrf-token}i", "{http_x_csrf_token}e",
))


# How long a plain access line may wait in the worker's buffer (RedactingLogger.access);
# lines also leave once ACCESS_BUFFER_CHARS have gathered, and all of them by a worker's
# clean exit.
ACCESS_FLUSH_SECONDS = 0.25
ACCESS_BUFFER_CHARS = 8192

# The atoms this module computes itself (gunicorn's meaning, glogging.Logger.atoms); a
# format naming any other (a header, an environ entry) takes gunicorn's full path.
_CHEAP_ATOMS = frozenset("hlutrsmUqHbBfaTDMLp")
_FORMAT_ATOM = re.compile(r"%\(([^)]*)\)")


def format_atoms(access_log_format: str) -> frozenset[str] | None:
    """The atoms an access_log_format names, or None when it names one that only
    gunicorn's full atom dictionary has (or is not a plain ``%(name)s`` format)."""
    names = frozenset(_FORMAT_ATOM.findall(access_log_format))
    return names if names <= _CHEAP_ATOMS else None


class RedactingLogger(Logger):
    """gunicorn's Logger whose lines never contain a secret parameter, in the format
    OAUTHLEDGER_LOG_FORMAT chooses; it also sets up the root logger for the app."""

    log_format = "plain"
    _atom_names: frozenset[str] | None = None
    _pending: list[str] = []  # noqa: RUF012 - replaced per setup
    _pending_chars = 0
    _pending_lock = threading.Lock()
    _flusher: threading.Thread | None = None
    _flusher_pid = 0
    _direct: list[logging.StreamHandler[Any]] = []  # noqa: RUF012 - replaced per setup
    _now: tuple[int, str] = (-1, "")

    def setup(self, cfg: Any) -> None:
        """gunicorn's handlers, then the chosen format on them and on the root logger
        (run at start and on every configuration reload)."""
        super().setup(cfg)
        # The same settings gunicorn_conf read; a bad value has stopped gunicorn already.
        self.log_format = load_settings().log_format
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(redacting(handler.formatter, self.log_format))
        # The application's records (logger "oauthledger...") on standard error, as
        # gunicorn's own error log, at gunicorn's level (--log-level).
        configure_logging(self.log_format, level=self.loglevel)
        self._atom_names = format_atoms(cfg.access_log_format)
        self._direct = self._plain_stream_handlers()
        self._pending, self._pending_chars = [], 0
        self._pending_lock = threading.Lock()

    def _start_flusher(self) -> None:
        # One per worker process, started by its first access line (after the fork; a
        # thread, or a greenlet under the gevent worker's patched threading).
        if self._flusher_pid == os.getpid():
            return
        self._flusher_pid = os.getpid()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="oauthledger-access-log")
        self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(ACCESS_FLUSH_SECONDS)
            self.flush_access()

    def flush_access(self) -> None:
        """Write the buffered access lines out now (the flusher's tick; a worker's exit:
        gunicorn_conf.worker_exit)."""
        with self._pending_lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending, self._pending_chars = [], 0
        for handler in self._direct:
            try:
                with handler.lock:  # type: ignore[union-attr]
                    handler.stream.write(text)
                handler.flush()
            except ValueError:
                pass  # the stream is closed: the process is ending
            except Exception:  # noqa: BLE001 - as logging: a log line never fails a request
                handler.handleError(logging.makeLogRecord({"msg": "access log flush"}))

    def _plain_stream_handlers(self) -> list[logging.StreamHandler[Any]]:
        """The access log's handlers, when writing the line to their streams ourselves
        is exactly what logging would do: gunicorn's own stream or file handlers with
        its ``%(message)s`` formatter (redacted), no filters, INFO enabled. Otherwise
        [] and every line goes through logging (a --log-config of the operator's)."""
        log = self.access_log
        handlers = log.handlers
        if (self.log_format == "json" or not handlers or log.filters
                or not log.isEnabledFor(logging.INFO)):
            return []
        for handler in handlers:
            formatter = handler.formatter
            if (not isinstance(handler, logging.StreamHandler) or handler.filters
                    or handler.level > logging.INFO or handler.terminator != "\n"
                    or not isinstance(formatter, RedactingFormatter)
                    or getattr(formatter.inner, "_fmt", None) != "%(message)s"):
                return []
        return list(handlers)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
               ) -> None:
        """One access line: gunicorn's format (redacted) in plain, one JSON object with
        the request's fields in json."""
        if self.log_format != "json":
            if self._atom_names is None:  # a format naming headers or environ entries
                super().access(resp, req, environ, request_time)
                return
            if not getattr(self, "access_log_enabled", self.cfg.accesslog):
                return
            try:
                atoms = self.cheap_atoms(resp, environ, request_time)
                if not self._direct:
                    self.access_log.info(self.cfg.access_log_format, atoms)
                    return
                # What logging would write (the handler's formatter: the message,
                # redacted), without a LogRecord per request, and without a write system
                # call per request: lines collect in this worker's buffer, which the
                # flusher writes out every ACCESS_FLUSH_SECONDS (docs/operations.md,
                # "Logs"; docs/BENCHMARKS.md, "Front end"). Our own buffer, not the
                # stream's: with PYTHONUNBUFFERED (common in containers) standard output
                # writes through on every call.
                line = (redact(self.cfg.access_log_format % atoms) or "") + "\n"
                with self._pending_lock:
                    self._pending.append(line)
                    self._pending_chars += len(line)
                    full = self._pending_chars >= ACCESS_BUFFER_CHARS
                if full:
                    self.flush_access()
                elif self._flusher is None:
                    self._start_flusher()
            except Exception:  # as gunicorn's own access(): a log line never fails a request
                self.error_log.exception("access log line failed")
            return
        # gunicorn >= 23 computes this once per configuration; older ones ask cfg.
        if not getattr(self, "access_log_enabled", self.cfg.accesslog):
            return
        fields = access_fields(resp, environ, request_time)
        route = fields.get("route") or "(no route)"
        try:
            self.access_log.info("%s %s %s", fields.get("method") or "-", route,
                                 fields.get("status"), extra={RECORD_FIELDS: fields})
        except Exception:  # as gunicorn's own access(): a log line never fails a request
            self.error_log.exception("access log line failed")

    def cheap_atoms(self, resp: Any, environ: dict[str, Any], request_time: Any
                    ) -> dict[str, Any]:
        """The atoms the access_log_format names, as gunicorn computes them, the text
        ones redacted; nothing else is built."""
        names = self._atom_names or frozenset()
        out: dict[str, Any] = {}
        for name in names:
            if name == "h":
                out[name] = environ.get("REMOTE_ADDR", "-")
            elif name == "l":
                out[name] = "-"
            elif name == "u":
                out[name] = redact(self._get_user(environ) or "-")
            elif name == "t":
                out[name] = self._timestamp()
            elif name == "r":
                out[name] = redact(f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} "
                                   f"{environ['SERVER_PROTOCOL']}")
            elif name == "s":
                status = resp.status
                out[name] = status.split(None, 1)[0] if isinstance(status, str) else status
            elif name == "m":
                out[name] = environ.get("REQUEST_METHOD")
            elif name == "U":
                out[name] = redact(environ.get("PATH_INFO"))
            elif name == "q":
                out[name] = redact(environ.get("QUERY_STRING"))
            elif name == "H":
                out[name] = environ.get("SERVER_PROTOCOL")
            elif name == "b":
                sent = getattr(resp, "sent", None)
                out[name] = str(sent) if sent is not None else "-"
            elif name == "B":
                out[name] = getattr(resp, "sent", None)
            elif name == "f":
                out[name] = redact(environ.get("HTTP_REFERER", "-"))
            elif name == "a":
                out[name] = redact(environ.get("HTTP_USER_AGENT", "-"))
            elif name == "T":
                out[name] = request_time.seconds
            elif name == "D":
                out[name] = request_time.seconds * 1000000 + request_time.microseconds
            elif name == "M":
                out[name] = request_time.seconds * 1000 + request_time.microseconds // 1000
            elif name == "L":
                out[name] = f"{request_time.seconds}.{request_time.microseconds:06d}"
            elif name == "p":
                out[name] = f"<{os.getpid()}>"
        return out

    def _timestamp(self) -> str:
        # gunicorn's now(): Apache Common Log Format, formatted once per second.
        second = int(time.time())
        if self._now[0] != second:
            self._now = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]",
                                               time.localtime(second)))
        return self._now[1]

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
              ) -> dict[str, Any]:
        """The atoms gunicorn formats, with secret parameter values redacted."""
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if not isinstance(value, str):
                continue
            if name in _REDACTED_WHOLE:
                atoms[name] = REDACTED
            elif name in _TEXT_ATOMS or name[:1] == "{":
                atoms[name] = redact(value)
        return atoms


def access_fields(resp: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
    """The JSON access line's fields of one request: what the app recorded
    (services.logs.RequestLog in the environ: request id, route template, consumer, user,
    oauth_problem) and what gunicorn knows (status, duration). A request the app never
    saw (gunicorn answered it itself) has the response's X-Request-Id, if any, and no
    route: the raw path is never written (it may carry a token or a secret)."""
    entry = environ.get(ENVIRON_KEY)
    if isinstance(entry, RequestLog):
        fields = entry.fields()
    else:
        fields = {"request_id": _header(resp, "x-request-id"),
                  "method": environ.get("REQUEST_METHOD"),
                  "address": environ.get("REMOTE_ADDR")}
    status = getattr(resp, "status_code", None) or getattr(resp, "status", None)
    if isinstance(status, str):
        status = status.split(None, 1)[0]
    try:
        fields["status"] = int(status) if status is not None else None
    except ValueError:
        fields["status"] = None
    seconds = request_time.total_seconds() if hasattr(request_time, "total_seconds") \
        else float(request_time or 0)
    fields["duration_ms"] = round(seconds * 1000, 3)
    return fields


def _header(resp: Any, name: str) -> str | None:
    for key, value in getattr(resp, "headers", None) or ():
        if key.lower() == name:
            return value
    return None
