"""The hot path with metrics on and off, in one run, rounds interleaved.

Calls the Falcon app in process (its WSGI callable, no HTTP server, no test client) with
an accepted signed GET of ``/rest/api/2/myself``: the authenticator's Redis round trip,
the signature, the response. "on" is ``create_app(deps)`` (the request metrics
middleware, counting into a process tree's metrics directory as a gunicorn worker does:
memory-mapped files); "off" is ``create_app(deps, metrics=False)``. Each round signs a
fresh batch per app (each request its own nonce; signing is not timed), then calls the
two apps request by request, alternating, each call timed alone (both meet the same
moments of a shared machine's load); a round's figure is each app's median µs per
request. Prints them per round, the median of the per-round ratios on/off with its
quartiles, and checks that every request was accepted and counted.

    .venv/bin/python bench/metrics_bench.py [--requests 500] [--rounds 40] [--memory]

It also times the metrics middleware alone on an accepted request, and the background
thread's hand-over of the queued requests to prometheus-client (its time per request is
added to "on" for the final ratio: it is work the process does, off the request).

``--memory`` counts in process memory instead (an app outside gunicorn). Redis:
OAUTHLEDGER_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); keys go under a unique
prefix and are deleted afterwards. The store is a throw-away SQLite file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import redis
from oauthlib.oauth1 import Client

from oauthledger.events import metrics as m
from oauthledger.events.keys import KeyLayout
from oauthledger.events.migrate import upgrade
from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.events.settings import load_settings
from oauthledger.events.state import token_stream
from oauthledger.events.store import EventStore
from oauthledger.services import dance
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http import rest
from oauthledger.services.http.app import create_app
from oauthledger.services.http.metrics import RequestMetrics, flush_cost, flush_pending
from oauthledger.services.oauth.request import parse_request
from oauthledger.services.users import register_user

HOST = "falconframework.org"  # falcon.testing.create_environ's default Host
PATH = "/rest/api/2/myself"
META = {"actor": "bench"}


def signed_environs(client: Client, n: int) -> list[dict[str, Any]]:
    """``n`` WSGI environs of the signed GET, each with its own nonce."""
    out = []
    for _ in range(n):
        _, headers, _ = client.sign(f"http://{HOST}{PATH}")
        out.append(falcon.testing.create_environ(PATH, headers=headers))
    return out


def run_pair(apps: dict[str, Callable[..., Iterable[bytes]]],
             batches: dict[str, list[dict[str, Any]]], first: str) -> tuple[dict[str, float], int]:
    """Call both apps request by request, alternating (``first`` leads), each call timed
    alone, so that both meet the same moments of the machine's load. Returns the median
    µs per request of each app (a call the scheduler interrupted is one outlier, not a
    shifted mean) and how many answers were not 200."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> None:
        statuses.append(status)

    second = "on" if first == "off" else "off"
    times: dict[str, list[float]] = {"off": [], "on": []}
    clock = time.perf_counter
    for pair in zip(batches[first], batches[second], strict=True):
        for name, environ in ((first, pair[0]), (second, pair[1])):
            app = apps[name]
            t0 = clock()
            for _chunk in app(environ, start_response):
                pass
            times[name].append(clock() - t0)
    bad = sum(1 for status in statuses if not status.startswith("200"))
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}, bad


def middleware_timer(deps: Deps, signer: Client) -> Callable[[int], float]:
    """A function timing ``n`` runs of the metrics middleware alone, on an accepted
    request as the app hands it over (its AuthContext from the real authenticator);
    returns µs per request."""
    _, headers, _ = signer.sign(f"http://{HOST}{PATH}")
    environ = falcon.testing.create_environ(PATH, headers=headers)
    req, resp = falcon.Request(environ), falcon.Response()
    req.uri_template = PATH
    sreq = parse_request("GET", f"http://{HOST}{PATH}", req.headers_lower, b"", None)
    req.context.oauth = deps.authenticator.authenticate_resource(sreq, https=False)
    resource = rest.MyselfResource(deps)
    middleware = RequestMetrics()

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            middleware.process_request(req, resp)
            middleware.process_response(req, resp, resource, True)
        return (time.perf_counter() - t0) / n * 1e6

    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds: the two apps meet the same moments of a shared machine's load.
    ap.add_argument("--requests", type=int, default=500, help="per app per round")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--memory", action="store_true",
                    help="count in process memory, not in a metrics directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="oauthledger-metrics-bench-"))
    if not args.memory:
        # What gunicorn's master does before it forks a worker (docs/operations.md,
        # "Metrics"): from here on this process counts in memory-mapped files.
        os.environ.pop(m.MULTIPROC_ENV, None)
        assert m.start_process_tree(tmp, "bench") is not None
    redis_url = os.environ.get("OAUTHLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout("olbench-" + uuid.uuid4().hex[:8])
    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp),
                              "OAUTHLEDGER_REDIS_URL": redis_url})
    store = EventStore.from_url(settings.database_url)
    upgrade(store.engine)
    deps = Deps(settings=settings, store=store, redis=client, sealer=Sealer(KeyRing.generate()),
                wake=lambda: None, layout=layout)
    try:
        deps.read_model.start_nonce_epoch(int(time.time()))
        time.sleep(1.1)  # requests signed from now on are newer than the nonce memory
        register_user(deps.ledger, "bob", "bob-password", meta=META)
        consumer, secret = register_consumer(
            deps.ledger, deps.sealer, "bench-app",
            ConsumerInput(name="Bench", generate_secret=True,
                          signature_methods=["HMAC-SHA1"]), META)
        assert secret is not None
        issued = dance.issue_request_token(deps.ledger, deps.sealer, settings, consumer,
                                           "oob", META)
        rt, _ = deps.ledger.load(token_stream(issued.token))
        verifier = dance.decide(deps.ledger, deps.sealer, rt, "bob", True, META)
        rt, _ = deps.ledger.load(token_stream(issued.token))
        access = dance.exchange(deps.ledger, deps.sealer, settings, rt, verifier, META)
        signer = Client("bench-app", client_secret=secret, resource_owner_key=access.token,
                        resource_owner_secret=access.secret)
        apps = {"off": create_app(deps, metrics=False), "on": create_app(deps)}
        # Warm caches (parsed secrets, routes, label children).
        run_pair(apps, {name: signed_environs(signer, 50) for name in apps}, first="off")

        def accepted() -> float:
            flush_pending()
            text = m.render().decode()
            return m.sample_value(text, "oauthledger_signed_requests_total",
                                  {"kind": "resource", "outcome": "accepted"}) or 0.0

        counted_before = accepted()
        flush_before = flush_cost()
        per_round: dict[str, list[float]] = {"off": [], "on": [], "work": []}
        middleware_alone = middleware_timer(deps, signer)
        failed = 0
        load = os.getloadavg()[0]
        mode = "memory-mapped files (a process tree)" if not args.memory else "process memory"
        print(f"metrics on/off, accepted signed GET {PATH} in process, HMAC-SHA1, real "
              f"Redis {redis_url}; {args.requests} requests per app per round, "
              f"{args.rounds} rounds; metrics in {mode}; load average {load:.2f}")
        for r in range(args.rounds):
            batches = {name: signed_environs(signer, args.requests) for name in apps}
            medians, bad = run_pair(apps, batches, first="off" if r % 2 == 0 else "on")
            for name, us in medians.items():
                per_round[name].append(us)
            failed += bad
            per_round["work"].append(middleware_alone(args.requests))
            print(f"  round {r + 1:2d}: off {per_round['off'][-1]:7.1f} µs  "
                  f"on {per_round['on'][-1]:7.1f} µs  "
                  f"ratio {per_round['on'][-1] / per_round['off'][-1]:.3f}  "
                  f"(middleware alone {per_round['work'][-1]:.2f} µs)")
        flush_seconds, flushed = (a - b for a, b in zip(flush_cost(), flush_before,
                                                         strict=True))
        counted = accepted() - counted_before
        ratios = [on / off for on, off in zip(per_round["on"], per_round["off"], strict=True)]
        off_median, on_median = (statistics.median(per_round[k]) for k in ("off", "on"))
        work = statistics.median(per_round["work"])
        quartiles = statistics.quantiles(ratios, n=4)
        print(f"median of the round medians: off {off_median:.1f} µs, on {on_median:.1f} "
              f"µs; on/off: median of round ratios {statistics.median(ratios):.3f} "
              f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}), ratio of medians "
              f"{on_median / off_median:.3f} (load average {os.getloadavg()[0]:.2f} at "
              "the end)")
        flush_us = flush_seconds / flushed * 1e6 if flushed else 0.0
        print(f"the middleware's own work per accepted request (process_request + "
              f"process_response, timed alone): median {work:.2f} µs = "
              f"{work / off_median * 100:.2f} % of the median request without metrics")
        print(f"the background flush to prometheus-client, off the request: {flush_us:.2f} "
              f"µs per request ({flushed} requests); counted in: on/off "
              f"{(on_median + flush_us) / off_median:.3f}")
        # The app with metrics and the middleware timed alone both count.
        expected = 2 * args.requests * args.rounds
        print(f"requests not answered 200: {failed}; accepted requests counted by the "
              f"scrape: {counted:.0f} of {expected} (the app with metrics, and the "
              "middleware's timed runs)")
    finally:
        for key in client.scan_iter(layout.pattern(), count=1000):
            client.delete(key)
        store.engine.dispose()
        m.end_process_tree()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
