"""The dependencies the HTTP app and the CLI work with, built by a composition root and
passed in (``create_app(deps)``); nothing here opens a connection by itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.store import EventStore
from oauthledger.services.ledger import Ledger
from oauthledger.services.oauth.authenticator import Authenticator
from oauthledger.services.sessions import SessionStore

if TYPE_CHECKING:
    # Annotations only: the CLI builds Deps too and needs neither Jinja2 nor the
    # embedded runner; the composition roots that do fill these fields in.
    import jinja2

    from oauthledger.services.embedded import EmbeddedWorkers


@dataclass
class Deps:
    """Everything a request handler may use."""

    settings: Settings
    store: EventStore
    redis: redis.Redis
    sealer: Sealer
    wake: Callable[[], None]
    layout: KeyLayout = field(default_factory=KeyLayout)
    clock: Callable[[], float] = time.time
    # The HTML templates, set by ``create_app`` (the CLI has none).
    templates: jinja2.Environment | None = None
    # The in-process projector and sweeps of the embedded default, set by ``get_app``.
    embedded_workers: EmbeddedWorkers | None = None

    def __post_init__(self) -> None:
        self.read_model = ReadModel(self.redis, self.layout)
        self.ledger = Ledger(self.store, self.read_model, self.wake, self.clock)
        self.sessions = SessionStore(self.redis, self.layout, self.clock)
        self.authenticator = Authenticator(
            read_model=self.read_model, store=self.store, sealer=self.sealer,
            settings=self.settings, clock=self.clock,
        )


def build_deps(settings: Settings, wake: Callable[[], None] | None = None) -> Deps:
    """Open the configured store, Redis and key ring. ``wake`` defaults to sending the
    projection task by name to the broker (production) — the embedded default passes
    its in-process runner instead."""
    from oauthledger.events.connections import open_redis, open_sealer, open_store

    store = open_store(settings)
    client = open_redis(settings)
    if wake is None:
        wake = celery_publisher(settings)
    return Deps(settings=settings, store=store, redis=client, sealer=open_sealer(settings),
                wake=wake, layout=KeyLayout(settings.redis_prefix))


def celery_publisher(settings: Settings) -> Callable[[], None]:
    """A ``wake`` that sends the projection task by name (docs/design.md, "The direction of
    imports": services never import workers/; they only know the task's name)."""
    from celery import Celery

    app = Celery("oauthledger-frontend", broker=settings.broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=False,
                    broker_transport_options={"max_retries": 1})

    def wake() -> None:
        app.send_task("oauthledger.project", ignore_result=True)

    return wake
