"""The health checks: liveness (``/healthz``) and readiness (``/readyz``)."""

from __future__ import annotations

import time

import falcon
import redis

from oauthledger.events.errors import StoreUnavailable
from oauthledger.services.deps import Deps


class HealthResource:
    """Liveness: answers without touching the store or Redis."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class ReadyResource:
    """Readiness: checks the store and Redis and says which is down."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, str] = {}
        started = time.monotonic()
        try:
            self.deps.store.ping()
            checks["store"] = "ok"
        except StoreUnavailable as exc:
            checks["store"] = f"down: {exc}"
        try:
            self.deps.redis.ping()
            checkpoint = self.deps.read_model.checkpoint()
            checks["redis"] = "ok"
            checks["projection"] = "rebuilding" if checkpoint is None else f"at {checkpoint}"
        except redis.RedisError as exc:
            checks["redis"] = f"down: {exc}"
        ok = checks.get("store") == "ok" and checks.get("redis") == "ok"
        resp.status = falcon.HTTP_200 if ok else falcon.HTTP_503
        resp.media = {"status": "ready" if ok else "unavailable", "checks": checks,
                      "elapsedMs": round((time.monotonic() - started) * 1000, 1)}


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the liveness and readiness checks."""
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(deps))
