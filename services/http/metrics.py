"""``GET /metrics`` (the Prometheus text format) and the middleware that times every
request and counts signed requests by outcome (docs/operations.md, "Metrics").

The middleware only observes: what became of a signed request is read from what the
deciding code left on the request (``req.context.oauth``, the AuthContext of an accepted
resource call, set by services/http/protect.py; ``req.context.refusal``, the Refusal of
an oauth_problem answer, and ``req.context.dependency_error`` of a 503, both set by
services/http/errors.py; services/http/outcome.py). Nothing is checked twice.

Label values are bounded here: five route groups, the closed set of ``oauth_problem``
codes (services/oauth/problems.py), and consumer keys only of registered consumers (the
AuthContext's consumer, or the Refusal's key, which is set only when it names one), the
first :data:`CONSUMER_LABEL_CAP` of them per process and ``other`` after that. A token,
a nonce or any other text a client chose never becomes a label.

The accepted path stays cheap: per request a timestamp, look-ups of label children bound
beforehand, and one tuple appended to a queue (no label dicts built, no lock, no file
touched). A daemon thread per process hands the queue to prometheus-client every
:data:`FLUSH_INTERVAL` seconds, in a batch, and so does a scrape before it reads (for
its own process) and gunicorn's ``worker_exit``. Doing the prometheus-client work on
the request itself cost several times what it costs in a batch — cold caches after a
request's Redis round trip, memory-mapped files in multiprocess mode — about 3 % of an
accepted request, against 0.5 % now (1.5 % with the batch's work counted in);
bench/metrics_bench.py measures it (docs/BENCHMARKS.md, "Metrics on the hot path").
Another process's counts reach a scrape within that interval.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

import falcon

from oauthledger.events import projection
from oauthledger.events.metrics import (
    CONTENT_TYPE,
    OTHER,
    SIGNED_KINDS,
    ProjectionCollector,
    metrics,
    render,
)
from oauthledger.services.deps import Deps
from oauthledger.services.http import dance, rest
from oauthledger.services.http.errors import problem_json
from oauthledger.services.http.outcome import refusal_of
from oauthledger.services.oauth.problems import STATUS as PROBLEMS

log = logging.getLogger(__name__)

PATH = "/metrics"
CONSUMER_LABEL_CAP = 100
API_PREFIX = "/rest/oauthledger/1/"
PAGE_PREFIX = "/plugins/servlet/oauth/"
# Public descriptions of this installation, not pages a person uses.
_OTHER_TEMPLATES = frozenset({"/plugins/servlet/oauth/consumer-info"})
_PAGE_TEMPLATES = frozenset({"/", "/login", "/logout"})
# How long a scrape waits for the projection's checkpoint and the log's head.
PROJECTION_READ_TIMEOUT = 1.0
# Seconds between two hand-overs of the request queue to prometheus-client.
FLUSH_INTERVAL = 1.0
# Requests a queue holds at most (far beyond what a process serves in an interval): a
# bound on memory should the flusher ever stall; past it the oldest are dropped.
QUEUE_CAP = 100_000


def route_group(template: str | None, resource: Any) -> str:
    """The route group of a matched route (``template`` is Falcon's ``uri_template``;
    None when no route matched): dance, resource, admin_api, pages or other."""
    if template is None or resource is None:
        return "other"
    if isinstance(resource, dance.RequestTokenResource | dance.AccessTokenResource
                  | dance.AuthorizeResource):
        return "dance"
    if getattr(resource, "oauth_protected", False) or isinstance(
            resource, rest.VerifyResource) or template.startswith("/rest/api/"):
        return "resource"
    if template.startswith(API_PREFIX):
        return "admin_api"
    if template in _OTHER_TEMPLATES:
        return "other"
    if template in _PAGE_TEMPLATES or template.startswith(PAGE_PREFIX):
        return "pages"
    return "other"


class _Route:
    """The label children of one route, bound on its first request."""

    __slots__ = ("codes", "latency", "signed_dance")

    def __init__(self, group: str, resource: Any) -> None:
        m = metrics()
        self.latency = m.http_duration.labels(group)
        # Index: the status's first digit (1xx..5xx); 0 for anything outside 100-599.
        self.codes = tuple(m.http_responses.labels(group, f"{d}xx" if d else OTHER)
                           for d in range(6))
        # The dance's token endpoints are signed requests; the authorize page is not.
        self.signed_dance = isinstance(resource, dance.RequestTokenResource
                                       | dance.AccessTokenResource)


class _ConsumerLabels:
    """Children of the per-consumer counter for at most ``cap`` consumer keys, then one
    "other": a label per key is bounded whatever a deployment registers."""

    def __init__(self, cap: int = CONSUMER_LABEL_CAP) -> None:
        self.cap = cap
        self.counter = metrics().signed_by_consumer
        self._known: dict[str, dict[tuple[str, str], Any]] = {}
        self._other: dict[tuple[str, str], Any] = {}
        # The accepted resource call's child per key: one dict look-up on the hot path.
        self._accepted: dict[str, Any] = {}
        self._lock = threading.Lock()

    def accepted(self, consumer_key: str) -> Any:
        """The child of an accepted resource call of ``consumer_key``."""
        found = self._accepted.get(consumer_key)
        if found is None:
            found = self.child(consumer_key, "resource", "accepted")
            if len(self._accepted) <= self.cap:
                self._accepted[consumer_key] = found
        return found

    def child(self, consumer_key: str, kind: str, outcome: str) -> Any:
        """The counter child of ``consumer_key`` (a registered consumer's key)."""
        children = self._known.get(consumer_key)
        if children is None:
            children = self._admit(consumer_key)
        found = children.get((kind, outcome))
        if found is None:
            with self._lock:
                label = consumer_key if children is not self._other else OTHER
                found = children[(kind, outcome)] = self.counter.labels(label, kind, outcome)
        return found

    def _admit(self, consumer_key: str) -> dict[tuple[str, str], Any]:
        with self._lock:
            children = self._known.get(consumer_key)
            if children is not None:
                return children
            if len(self._known) >= self.cap:
                return self._other
            children = self._known[consumer_key] = {}
            return children

    @property
    def labelled(self) -> int:
        """How many consumer keys have a label of their own."""
        return len(self._known)


class RequestMetrics:
    """Falcon middleware: latency per route group, responses per status class, signed
    requests by outcome and problem, dependency errors of 503 answers. Put first in the
    middleware list, so its clock starts before the others run.

    A request's observations are queued (one tuple) and handed to prometheus-client by
    :meth:`flush`, off the request (module docstring)."""

    def __init__(self, cap: int = CONSUMER_LABEL_CAP) -> None:
        m = self.metrics = metrics()
        self._routes: dict[str | None, _Route] = {}
        self._accepted = {k: m.signed_requests.labels(k, "accepted", "") for k in SIGNED_KINDS}
        self._accepted_resource = self._accepted["resource"]
        self._refused = {(k, p): m.signed_requests.labels(k, "refused", p)
                         for k in SIGNED_KINDS for p in (*PROBLEMS, OTHER)}
        self.consumers = _ConsumerLabels(cap)
        self._lock = threading.Lock()
        self._fault_logged = False
        # (route, status class, outcome child, consumer child, seconds or None); deque
        # append and popleft are atomic, so request threads and the flusher need no lock.
        self._queue: deque[tuple[_Route, int, Any, Any, float | None]] = deque(
            maxlen=QUEUE_CAP)
        self._flush_lock = threading.Lock()
        _flusher.add(self)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Start the request's clock."""
        req.context.metrics_started = time.perf_counter()

    def _route(self, template: str | None, resource: Any) -> _Route:
        with self._lock:
            route = self._routes.get(template)
            if route is None:
                route = _Route(route_group(template, resource), resource)
                # Templates are the app's own routes (bounded); unmatched paths share None.
                self._routes[template] = route
            return route

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        """Queue the latency and the outcome. Never fails the response: a metrics fault
        is logged (once) and the answer goes out as it is."""
        try:
            self._observe(req, resp, resource)
        except Exception:  # noqa: BLE001 - observing must not turn an answer into a 500
            if not self._fault_logged:
                self._fault_logged = True
                log.exception("request metrics failed; the response is sent unchanged")

    def _observe(self, req: falcon.Request, resp: falcon.Response, resource: Any) -> None:
        ctx = req.context
        started = getattr(ctx, "metrics_started", None)
        elapsed = None if started is None else time.perf_counter() - started
        template = req.uri_template
        route = self._routes.get(template) or self._route(template, resource)
        status = resp.status_code
        code = status // 100 if 100 <= status < 600 else 0
        # The accepted resource call: look-ups and one append, nothing else.
        oauth = getattr(ctx, "oauth", None)
        if oauth is not None:
            self._queue.append((route, code, self._accepted_resource,
                                self.consumers.accepted(oauth.consumer.key), elapsed))
            return
        outcome = consumer = None
        refusal = refusal_of(req)
        if refusal is not None:
            kind = "dance" if route.signed_dance else "resource"
            problem = refusal.problem if refusal.problem in PROBLEMS else OTHER
            outcome = self._refused[(kind, problem)]
            if refusal.consumer_key is not None:
                consumer = self.consumers.child(refusal.consumer_key, kind, "refused")
        elif route.signed_dance and status < 400:
            outcome = self._accepted["dance"]
        self._queue.append((route, code, outcome, consumer, elapsed))
        dependency = getattr(ctx, "dependency_error", None)
        if dependency is not None:
            self.metrics.dependency_error(str(dependency), "http")

    def flush(self) -> int:
        """Hand the queued observations to prometheus-client (the counters summed per
        child first: one increment per series); returns how many requests."""
        popleft = self._queue.popleft
        counts: dict[Any, int] = {}
        done = 0
        with self._flush_lock:
            while True:
                try:
                    route, code, outcome, consumer, elapsed = popleft()
                except IndexError:
                    break
                done += 1
                if not done % _FLUSH_SLICE:
                    # Under the gevent worker this runs on the event loop: a second's worth
                    # of observations in one go held every request for milliseconds (the
                    # p99 of a loaded front end). sleep(0) lets the loop serve in between;
                    # with threads it just offers the interpreter lock.
                    time.sleep(0)
                if elapsed is not None:
                    route.latency.observe(elapsed)
                for child in (route.codes[code], outcome, consumer):
                    if child is not None:
                        counts[child] = counts.get(child, 0) + 1
            for child, n in counts.items():
                child.inc(n)
        return done


# Observations handed to prometheus-client between two yields of RequestMetrics.flush.
_FLUSH_SLICE = 200


class _Flusher:
    """The process's daemon thread that flushes every RequestMetrics each interval,
    started with the first one (gunicorn builds the app in each worker, after the
    fork). Keeps the time its flushes took, for bench/metrics_bench.py."""

    def __init__(self) -> None:
        self._instances: weakref.WeakSet[RequestMetrics] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._fault_logged = False
        self.seconds = 0.0
        self.requests = 0

    def add(self, instance: RequestMetrics) -> None:
        with self._lock:
            self._instances.add(instance)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, daemon=True,
                                 name="oauthledger-metrics-flush").start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.flush_all()

    def flush_all(self) -> None:
        """Flush every RequestMetrics of this process now."""
        started = time.perf_counter()
        done = 0
        with self._lock:
            instances = list(self._instances)
        for instance in instances:
            try:
                done += instance.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the next round retries
                if not self._fault_logged:
                    self._fault_logged = True
                    log.exception("request metrics could not be flushed")
        if done:
            self.seconds += time.perf_counter() - started
            self.requests += done


_flusher = _Flusher()


def flush_pending() -> None:
    """Hand every queued request observation of this process to prometheus-client now
    (before a scrape reads, and when a gunicorn worker exits)."""
    _flusher.flush_all()


def flush_cost() -> tuple[float, int]:
    """(seconds spent flushing, requests flushed) in this process so far."""
    return _flusher.seconds, _flusher.requests


def bearer_matches(req: falcon.Request, token: str) -> bool:
    """True when ``Authorization: Bearer <token>`` carries ``token`` (RFC 6750 §2.1; the
    scheme is case-insensitive, RFC 9110 §11.1), compared in constant time."""
    scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"),
                               token.encode("utf-8"))


class MetricsResource:
    """``GET /metrics``: every process of the host's trees (or this process), and the
    projection's checkpoint and lag read now. With OAUTHLEDGER_METRICS_TOKEN set, only
    for ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, deps: Deps) -> None:
        self.token = deps.settings.metrics_token
        self.projection = ProjectionCollector(
            lambda: projection.status(deps.store, deps.read_model),
            timeout=PROJECTION_READ_TIMEOUT)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.token is not None and not bearer_matches(req, self.token):
            resp.set_header("WWW-Authenticate", 'Bearer realm="oauthledger metrics"')
            problem_json(resp, 401, "Metrics token required",
                         "send Authorization: Bearer with the token configured in "
                         "OAUTHLEDGER_METRICS_TOKEN")
            return
        # This process's queued requests count in this scrape; other processes' within
        # FLUSH_INTERVAL.
        flush_pending()
        resp.content_type = CONTENT_TYPE
        resp.data = render([self.projection])


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount ``/metrics``."""
    app.add_route(PATH, MetricsResource(deps))
