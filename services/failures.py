"""Each consumer's failure history, as the application records and shows it: every signed
request refused for a registered consumer (resource calls, the dance's request-token and
access-token steps including renewal, and the verify API's refusals on behalf of
resource servers) with what an administrator needs to see why, and the hourly counts of
its refused and accepted requests.

The history is Redis-only operational data (:mod:`oauthledger.events.failures`): no
event, a Redis flush loses it. What an entry holds (docs/admin.md, "Failure history"):
when, the request id, route, method and step, the ``oauth_problem`` and the advice
given, the timestamp skew, the URL the server rebuilt and the base string it computed,
the signature method and — except for PLAINTEXT, whose signature is the secrets — the
client's signature, and what the signature debugger needs to run again on it
(:func:`oauthledger.services.oauth.debugger.history_request`). Values of
``oauth_verifier`` and ``oauth_session_handle`` are masked everywhere, as the debugger
masks them; no secret is ever stored.

The HTTP app records through ``services/http/errors.py`` (the handler that answers an
``oauth_problem``); the pages, the JSON API and the CLI read through
:meth:`FailureHistory.consumer_report` and :meth:`FailureHistory.find`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events.failures import (
    AcceptedCounter,
    FailureStore,
    HourCounts,
    counted_hours,
    hour_of,
)
from oauthledger.events.keys import KeyLayout
from oauthledger.events.queries import streams_of_type
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore
from oauthledger.services.errors import NotFound, ValidationError
from oauthledger.services.oauth.debugger import (
    HIDDEN_PARAMETERS,
    MASK,
    Report,
    debug_history_entry,
    history_base_string,
    history_request,
    mask_url,
    store_loader,
)
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import PLAINTEXT, SignedRequest

# The request ids the front end accepts from X-Request-Id (services/http/context.py) or
# generates (hex): anything else cannot be in the history.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
# Which step of the protocol a refusal answered (docs/oauth.md, "Endpoints").
STEPS = ("resource", "request-token", "access-token", "renewal", "verify")
_ADVICE_LIMIT = 2000
_URL_LIMIT = 2048
_ROUTE_LIMIT = 200
_STREAM_PREFIX = "consumer-"  # oauthledger.events.state.consumer_stream
HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class RefusedRequest:
    """A refused request as the front end saw it. ``headers`` has lower-case names;
    ``received_url`` is the URL as it reached the server (scheme, Host, path, query),
    ``server_url`` the one the server rebuilt and checked the signature against
    (docs/oauth.md, "The URL that is signed"); ``signed`` is the parsed request, None
    when its OAuth parameters could not be read (nothing names a consumer then)."""

    request_id: str
    route: str
    step: str | None
    method: str
    received_url: str
    server_url: str
    headers: Mapping[str, str]
    body: bytes
    remote_addr: str | None
    signed: SignedRequest | None


def _skew(timestamp: str | None, now: float) -> int | None:
    # Digits only (the parser refuses anything else), at most 16 of them.
    if timestamp is None or not timestamp.isdigit():
        return None
    return int(timestamp) - int(now)


def _secret_values(sreq: SignedRequest) -> list[str]:
    names = (*HIDDEN_PARAMETERS, "oauth_signature") if sreq.signature_method == PLAINTEXT \
        else HIDDEN_PARAMETERS
    values = [sreq.oauth.get(n) or "" for n in names]
    values += [v for n, v in sreq.params if n in names]
    # Short values would mask ordinary words of the advice; no secret is that short.
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def build_entry(problem: OAuthProblem, seen: RefusedRequest, now: float) -> dict[str, Any]:
    """The history entry of a refusal (module docstring): never a secret value."""
    sreq = seen.signed
    advice = (problem.advice or "")[:_ADVICE_LIMIT]
    entry: dict[str, Any] = {
        "time": round(now, 3), "requestId": seen.request_id,
        "route": seen.route[:_ROUTE_LIMIT], "step": seen.step, "method": seen.method[:32],
        "oauthProblem": problem.problem, "status": problem.status, "advice": advice,
        "params": dict(problem.params), "skewSeconds": None, "url": None,
        "baseString": None, "signatureMethod": None, "signature": None, "token": None,
        "debuggable": False,
    }
    if sreq is None:
        return entry
    plaintext = sreq.signature_method == PLAINTEXT
    names = (*HIDDEN_PARAMETERS, "oauth_signature") if plaintext else HIDDEN_PARAMETERS
    for value in _secret_values(sreq):
        # The server's own advice names no secret; a guard costs nothing here.
        advice = advice.replace(value, MASK)
    part = history_request(seen.method, seen.received_url, seen.headers, seen.body,
                           seen.remote_addr, sreq)
    entry.update({
        "advice": advice,
        "skewSeconds": _skew(sreq.timestamp, now),
        "url": mask_url(seen.server_url, names)[:_URL_LIMIT],
        "baseString": history_base_string(sreq),
        "signatureMethod": sreq.signature_method[:64],
        # RFC 5849 §3.4.4: a PLAINTEXT signature is the secrets; any other is not, and
        # the debugger needs it to check the request again.
        "signature": None if plaintext else sreq.signature[:1024],
        "token": (sreq.token or None) and sreq.token[:256],
        "debuggable": part is not None,
    })
    if part is not None:
        entry["request"] = part
    return entry


def public_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as the API, the page and the CLI show it (without the debugger's part)."""
    return {k: v for k, v in entry.items() if k != "request"}


def _problem_groups(entries: list[dict[str, Any]], counts: list[HourCounts], now: float
                    ) -> list[dict[str, Any]]:
    """Refusals per oauth_problem: in the last hour (the kept entries of the last 60
    minutes, or this hour's count when more were refused than the history keeps) and in
    the last day (the 24 hourly counts, or the kept entries of the last 24 hours if
    more), with the newest refusal's time and advice."""
    current = counts[-1] if counts else HourCounts(hour_of(now))
    groups: dict[str, dict[str, Any]] = {}
    for entry in entries:  # newest first
        problem = str(entry.get("oauthProblem"))
        group = groups.setdefault(problem, {
            "oauthProblem": problem, "lastHour": 0, "lastDay": 0, "latest": entry.get("time"),
            "advice": entry.get("advice"), "kept": 0})
        group["kept"] += 1
        t = entry.get("time")
        if isinstance(t, int | float):
            if t >= now - HOUR:
                group["lastHour"] += 1
            if t >= now - DAY:
                group["lastDay"] += 1
    day: dict[str, int] = {}
    for c in counts:
        for problem, n in c.refused.items():
            day[problem] = day.get(problem, 0) + n
    for problem, n in day.items():
        group = groups.setdefault(problem, {
            "oauthProblem": problem, "lastHour": 0, "lastDay": 0, "latest": None,
            "advice": None, "kept": 0})
        group["lastDay"] = max(group["lastDay"], n)
        group["lastHour"] = max(group["lastHour"], current.refused.get(problem, 0))
    return sorted(groups.values(), key=lambda g: (-g["lastDay"], -g["lastHour"],
                                                  -(g["latest"] or 0), g["oauthProblem"]))


class FailureHistory:
    """Records refusals and reads the history for one deps bundle (Redis client, key
    layout, settings); one per bundle, so the accepted counter it holds is shared
    (:func:`failure_history`)."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store = FailureStore(client, layout, history=settings.failure_history,
                                  retention=settings.failure_retention)
        self.accepted = AcceptedCounter(self.store)

    # -- writing ---------------------------------------------------------------------

    def record(self, problem: OAuthProblem, seen: RefusedRequest) -> str | None:
        """Record a refusal (one Redis round trip); the consumer key when it names a
        registered consumer and the entry was kept, else None (then only the hour's
        unattributed count grew). Raises redis.RedisError when Redis cannot be told."""
        now = self.clock()
        key = seen.signed.consumer_key if seen.signed is not None else None
        entry = build_entry(problem, seen, now)
        return key if self.store.record(key, entry, problem.problem, now) else None

    def note_accepted(self, consumer_key: str) -> None:
        """Count an accepted request of a registered consumer (no Redis round trip)."""
        self.accepted.note(consumer_key, self.clock())

    # -- reading ---------------------------------------------------------------------

    def consumer_report(self, consumer_key: str, limit: int | None = None) -> dict[str, Any]:
        """The consumer's history: ``failures`` newest first (at most ``limit``), the
        refusals ``byProblem`` with counts for the last hour and day, and ``hours``:
        accepted and refused per hour over the last 24 hours, oldest first."""
        now = self.clock()
        entries = self.store.entries(consumer_key, now)
        counts = self.store.hour_counts(consumer_key, counted_hours(now))
        shown = entries if limit is None else entries[:max(0, limit)]
        return {
            "consumerKey": consumer_key,
            "keeps": {"entries": self.store.history,
                      "retentionSeconds": self.store.retention},
            "total": len(entries),
            "failures": [public_entry(e) for e in shown],
            "byProblem": _problem_groups(entries, counts, now),
            "hours": [{"start": c.hour * HOUR, "accepted": c.accepted,
                       "refused": c.refused_total} for c in counts],
        }

    def unattributed_last_day(self) -> int:
        """Refusals of the last 24 hours that named no registered consumer."""
        return sum(self.store.unknown_counts(counted_hours(self.clock())))

    def find(self, request_id: object, consumer_key: str | None, store: EventStore
             ) -> tuple[str, dict[str, Any]]:
        """The refusal with ``request_id``: in ``consumer_key``'s history, or without one
        in every consumer's ever registered (removed ones too). Raises
        :class:`ValidationError` (``requestId``) for an id the server never uses and
        :class:`NotFound` when the history does not hold it (any more)."""
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise ValidationError({"requestId": "is not a request id (1-100 characters "
                                                "of A-Z a-z 0-9 . _ : -)"})
        keys: Iterable[str]
        if consumer_key:
            keys = [consumer_key]
        else:
            keys = sorted(sid[len(_STREAM_PREFIX):]
                          for sid in streams_of_type(store, "ConsumerRegistered"))
        found = self.store.find(request_id, keys, self.clock())
        if found is None:
            where = f"consumer {consumer_key!r}'s" if consumer_key else "any consumer's"
            raise NotFound(f"no refused request {request_id!r} in {where} failure history "
                           f"(it keeps the newest {self.store.history} per consumer for "
                           f"{self.store.retention} s, and is lost when Redis is flushed)")
        return found


_lock = threading.Lock()
_ATTRIBUTE = "_failure_history"


def failure_history(deps: Any) -> FailureHistory:
    """The failure history of a deps bundle (services.deps.Deps), made on first use and
    kept on the bundle, so that the resource middleware, the dance and the error
    handlers share one accepted counter."""
    found = deps.__dict__.get(_ATTRIBUTE)
    if found is None:
        with _lock:
            found = deps.__dict__.get(_ATTRIBUTE)
            if found is None:
                found = FailureHistory(deps.redis, deps.layout, deps.settings, deps.clock)
                deps.__dict__[_ATTRIBUTE] = found
    return found


def history_report(deps: Any, request_id: object, consumer_key: object = None) -> Report:
    """The signature debugger's report of a refused request of the failure history
    (services.oauth.debugger.debug_history_entry), for the API, the page and the CLI:
    ``deps`` is a services.deps.Deps. Raises NotFound when the history does not hold it,
    ValidationError naming ``requestId`` or ``consumerKey`` for a malformed one."""
    if consumer_key is not None and (not isinstance(consumer_key, str) or not consumer_key):
        raise ValidationError({"consumerKey": "must be a consumer key"})
    key, entry = failure_history(deps).find(request_id, consumer_key, deps.store)
    return debug_history_entry(key, entry, store_loader(deps.store, deps.sealer),
                               deps.settings)
