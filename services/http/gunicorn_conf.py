"""gunicorn configuration for oauthledger (used by `oauthledger serve` and by deploy/).

Names the app only as a string; settings come from oauthledger.events.settings like everywhere else.
"""

import gc
import multiprocessing
import time
from typing import Any

from oauthledger.events.settings import load_settings

_settings = load_settings()

wsgi_app = "oauthledger.services.http.app:get_app()"
bind = ["127.0.0.1:8080"]
# The embedded default keeps its projection in process memory: one process only.
workers = 1 if _settings.embedded_broker else multiprocessing.cpu_count() * 2 + 1
# docs/operations.md, "Worker model": gevent. Each worker process serves every connection
# in a greenlet on one event loop: a request runs from start to finish without a thread
# hand-off, the time it waits on Redis or the store serves other connections, and a
# client that sends half a request and waits holds one greenlet (a few KB), not a thread
# of a small pool, so any number of stalled clients up to ``worker_connections`` cannot
# stall the worker or its heartbeat. Measured against the threaded worker (gthread, 16
# threads) this serves the same app 2.5x faster (docs/BENCHMARKS.md, "Front end").
# ``oauthledger serve`` patches the standard library before gunicorn starts
# (oauthledger.services.http.server); run gunicorn directly and its gevent worker
# patches each worker itself.
worker_class = "oauthledger.services.http.worker.GeventWorker"
worker_connections = 1000
# Each worker opens its own connections after the fork (nothing connects at import).
preload_app = False
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# Secret-bearing query parameters (a PLAINTEXT signature, a verifier) never reach the log.
logger_class = "oauthledger.services.http.access_log.RedactingLogger"
errorlog = "-"
loglevel = "info"
# gunicorn's control socket defaults to one path per user: several instances on one host
# (front ends, tests) would fight over it, and nothing here uses it.
control_socket_disable = True
# Forwarded headers are trusted per OAUTHLEDGER_TRUSTED_PROXIES by the app itself.
forwarded_allow_ips = ""


def post_worker_init(worker: Any) -> None:
    """Each worker, with its app loaded and before it accepts a connection: freeze what is
    loaded out of the garbage collector's way (below), and start the nonce memory's epoch
    if there is none yet (a new installation, a Redis that lost its
    data), so that requests signed from now on pass the epoch rule (docs/oauth.md,
    "Replays across restarts"). The embedded default's start has set it already (SET NX
    keeps that). Best effort: if Redis is down now, the first signed request starts it."""
    import redis

    from oauthledger.events.connections import open_redis
    from oauthledger.events.keys import KeyLayout
    from oauthledger.events.readmodel import ReadModel

    client = open_redis(_settings)
    try:
        epoch = ReadModel(client, KeyLayout(_settings.redis_prefix)).start_nonce_epoch(
            int(time.time()))
        worker.log.info("nonce memory remembers since %s", time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)))
    except redis.RedisError as exc:
        worker.log.warning("nonce memory epoch not checked (Redis: %s); the first signed "
                           "request will start it", exc)
    finally:
        client.close()
    # Everything loaded so far (the app, its libraries: some 100,000 objects) lives as
    # long as the worker. A full garbage collection walked all of it — 17 ms or more
    # with the event loop stopped, every few seconds under load, which was the p99 of a
    # busy front end. Frozen objects are left out of collections (docs/BENCHMARKS.md,
    # "Front end").
    gc.freeze()


def on_starting(server: Any) -> None:
    """The master, before it forks a worker: this server's metrics directory, which
    every worker inherits (PROMETHEUS_MULTIPROC_DIR), so one scrape of any worker counts
    all of them (docs/operations.md, "Metrics"). A fresh directory per server start,
    under PROMETHEUS_MULTIPROC_DIR when set, else ``<data dir>/metrics``."""
    from oauthledger.events.metrics import start_process_tree

    path = start_process_tree(_settings.data_dir, "web")
    if path is not None:
        server.log.info("metrics directory %s", path)


def worker_exit(server: Any, worker: Any) -> None:
    """The worker, exiting: the request observations it still holds go to its metrics
    files, so they stay counted (services/http/metrics.py queues them), and its buffered
    access lines to the log (services/http/access_log.py)."""
    from oauthledger.services.http.metrics import flush_pending

    flush_pending()
    flush_access = getattr(worker.log, "flush_access", None)
    if flush_access is not None:
        flush_access()


def child_exit(server: Any, worker: Any) -> None:
    """The master, after a worker exited: its live gauges leave the scrape; its
    counters stay until the server stops (prometheus-client, multiprocess mode)."""
    from oauthledger.events.metrics import process_dead

    process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The master, shutting down: remove this server's metrics directory."""
    from oauthledger.events.metrics import end_process_tree

    end_process_tree()
