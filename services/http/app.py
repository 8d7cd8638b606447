"""The Falcon WSGI application: ``create_app(deps)`` wires routes to injected
dependencies; ``get_app()`` is the composition root gunicorn calls
("oauthledger.services.http.app:get_app()")."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import falcon

from oauthledger.events.settings import load_settings
from oauthledger.services.deps import Deps, build_deps
from oauthledger.services.http import applinks, dance, health, login, openapi, rest
from oauthledger.services.http import metrics as metrics_http
from oauthledger.services.http.api import connections as api_connections
from oauthledger.services.http.api import consumer_info, service_providers, tokens
from oauthledger.services.http.api import consumers as api_consumers
from oauthledger.services.http.api import debug as api_debug
from oauthledger.services.http.context import RequestContext
from oauthledger.services.http.errors import install_error_handlers
from oauthledger.services.http.pages import connections as connection_pages
from oauthledger.services.http.pages import consumer_info as consumer_info_pages
from oauthledger.services.http.pages import consumers as consumer_pages
from oauthledger.services.http.pages import debug as debug_pages
from oauthledger.services.http.pages import service_providers as service_provider_pages
from oauthledger.services.http.pages import tokens as token_pages
from oauthledger.services.http.protect import OAuthProtection
from oauthledger.services.http.rendering import make_templates

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


def create_app(deps: Deps, *, metrics: bool = True) -> falcon.App:
    """The WSGI app over ``deps``; opens no connection itself. ``metrics=False`` leaves
    out the request metrics and ``/metrics`` (bench/metrics_bench.py compares the two)."""
    if deps.templates is None:
        deps.templates = make_templates()
    # The metrics middleware goes first: its clock starts before the others run and its
    # process_response runs last, after the error handlers have recorded the outcome
    # (docs/operations.md, "Metrics").
    middleware: list[object] = [metrics_http.RequestMetrics()] if metrics else []
    app = falcon.App(middleware=[*middleware, RequestContext(deps), OAuthProtection(deps)])
    app.req_options.strip_url_path_trailing_slash = True
    install_error_handlers(app, deps)
    # One module per noun; each mounts its own routes.
    for module in (login, health, dance, rest, applinks, openapi, api_consumers,
                   consumer_info, service_providers, api_connections, api_debug, tokens,
                   consumer_pages, consumer_info_pages, service_provider_pages,
                   connection_pages, debug_pages, token_pages):
        module.add_routes(app, deps)
    if metrics:
        metrics_http.add_routes(app, deps)
    app.add_static_route("/static", str(STATIC))
    return app


class _Waker:
    """Indirection so the embedded runner can be attached after the deps exist."""

    def __init__(self) -> None:
        self.target = lambda: None

    def __call__(self) -> None:
        self.target()


_lock = threading.Lock()
_app: falcon.App | None = None


def get_app() -> falcon.App:
    """Composition root: settings from the environment, real connections, and on the
    embedded default the in-process projector and sweeps (docs/design.md, "Two ways
    to run")."""
    global _app
    with _lock:
        if _app is not None:
            return _app
        settings = load_settings()
        if settings.embedded_broker:
            from oauthledger.services.embedded import EmbeddedWorkers

            waker = _Waker()
            deps = build_deps(settings, wake=waker)
            runner = EmbeddedWorkers(deps.store, deps.read_model, settings)
            waker.target = runner.wake
            runner.start()
            deps.embedded_workers = runner
        else:
            deps = build_deps(settings)
        _app = create_app(deps)
        return _app
