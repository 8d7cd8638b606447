"""Writes while Redis cannot be reached (a closed port: nothing listens on 127.0.0.1:1),
on SQLite and PostgreSQL. A change that reached the log is made: the `oauthledger`
process exits 0, prints what it owes (the generated secret) and one warning line on
stderr, never a traceback (docs/cli.md, "When Redis is down"); once the projection
catches up from the log, the real Redis serves the change to the hot path. The admin API
answers 201 for a consumer whose publish to Redis failed (docs/design.md, "Read your
writes")."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import falcon.testing
import pytest
import redis
from oauthlib.oauth1 import Client as OAuthClient

from oauthledger.events import keys as k
from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.settings import load_settings
from oauthledger.events.state import ConsumerState, UserState, consumer_stream, user_stream
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.ledger import Ledger
from oauthledger.services.users import check_password, register_user
from tests.conftest import REDIS_URL, migrated_store
from tests.support import META, grant, hmac_consumer

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
# Port 1 on loopback: nothing listens, every connection is refused at once.
REDIS_DOWN = "redis://127.0.0.1:1/0"
HOST = "http://falconframework.org"  # falcon.testing's default host
WARNING = "oauthledger: warning: the change is recorded in the event log"
ADMIN_PW = "admin-password"


@dataclass
class Site:
    """A front end on the real Redis and the environment of an `oauthledger` process
    that shares its store and key file but finds Redis (and the broker) down."""

    deps: Deps
    client: falcon.testing.TestClient
    cli_env: dict[str, str]


@pytest.fixture
def site(store_url: str, redis_client: redis.Redis, key_layout: KeyLayout,
         tmp_path: Path) -> Iterator[Site]:
    values = {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
              "OAUTHLEDGER_DATABASE_URL": store_url,
              "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix}
    settings = load_settings({**values, "OAUTHLEDGER_REDIS_URL": REDIS_URL})
    with migrated_store(store_url) as store:
        deps = Deps(settings=settings, store=store, redis=redis_client,
                    sealer=open_sealer(settings), wake=lambda: None, layout=key_layout)
        register_user(deps.ledger, "alice", "alice-password", meta=META)
        # A live projection with its checkpoint, as in production before the outage.
        project_pending(store, deps.read_model)
        cli_env = {name: value for name, value in os.environ.items()
                   if not name.startswith("OAUTHLEDGER_")}
        cli_env.update(values, OAUTHLEDGER_REDIS_URL=REDIS_DOWN,
                       OAUTHLEDGER_BROKER_URL=REDIS_DOWN)
        yield Site(deps, falcon.testing.TestClient(create_app(deps)), cli_env)


def oauthledger(site: Site, *args: str, stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    """The installed command as a real process (what an operator runs)."""
    return subprocess.run([str(OAUTHLEDGER), *args], env=site.cli_env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def succeeded_with_one_warning(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(WARNING), lines[0]
    assert "127.0.0.1:1" in lines[0] and "catches up from the log" in lines[0]


def myself(site: Site, consumer_key: str, secret: str) -> falcon.testing.Result:
    """A two-legged signed GET of the protected /rest/api/2/myself."""
    _, headers, _ = OAuthClient(consumer_key, client_secret=secret).sign(
        HOST + "/rest/api/2/myself", "GET")
    return site.client.simulate_get("/rest/api/2/myself", headers=headers)


def test_consumer_add_prints_the_secret_it_committed(site: Site) -> None:
    proc = oauthledger(site, "consumer", "add", "app", "--name", "App",
                       "--generate-secret", "--two-legged-user", "alice")
    succeeded_with_one_warning(proc)
    assert "consumer app registered" in proc.stdout
    secret = proc.stdout.split("shared secret (shown once): ", 1)[1].split()[0]

    state, _ = site.deps.ledger.load(consumer_stream("app"))
    assert isinstance(state, ConsumerState)
    assert site.deps.sealer.open(state.secret_sealed) == secret

    # Redis is back: the projection catches up from the log, and the hot path (which
    # reads the consumer from Redis) accepts what the printed secret signs.
    assert project_pending(site.deps.store, site.deps.read_model).applied >= 1
    ok = myself(site, "app", secret)
    assert ok.status_code == 200, ok.text
    assert ok.json["name"] == "alice"
    refused = myself(site, "app", secret + "x")
    assert refused.status_code == 401
    assert dict(parse_qsl(refused.text))["oauth_problem"] == "signature_invalid"


def test_user_add_and_disable_commit_and_warn(site: Site) -> None:
    added = oauthledger(site, "user", "add", "bob", "--password-stdin",
                        stdin="bob-password-1\n")
    succeeded_with_one_warning(added)
    assert added.stdout.strip() == "user bob added"
    bob, _ = site.deps.ledger.load(user_stream("bob"))
    assert isinstance(bob, UserState) and check_password(bob, "bob-password-1")

    # Alice granted a token while Redis was fine; disabling her revokes it in the
    # same commit, also while Redis is down.
    consumer = hmac_consumer(site.deps, "c1")
    token = grant(site.deps, consumer, "alice").token
    disabled = oauthledger(site, "user", "disable", "alice")
    succeeded_with_one_warning(disabled)
    assert "user alice disabled; 1 access token(s) revoked" in disabled.stdout
    alice, _ = site.deps.ledger.load(user_stream("alice"))
    assert isinstance(alice, UserState) and alice.disabled

    project_pending(site.deps.store, site.deps.read_model)
    assert site.deps.read_model.get(k.USER, "alice").disabled
    assert site.deps.read_model.get(k.TOKEN, token).status == "revoked"


def test_a_failed_write_still_fails_with_one_line(site: Site) -> None:
    """The warning is for committed writes only: a refused one changes nothing and says
    why, as before."""
    proc = oauthledger(site, "user", "disable", "nobody")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["oauthledger: no user 'nobody'"]


def test_admin_api_answers_201_when_the_publish_fails(site: Site,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    """Redis answers the sign-in check, then is gone when the commit publishes: the
    consumer is registered, the generated secret answered, the failure logged."""
    deps = site.deps
    register_user(deps.ledger, "root", ADMIN_PW, admin=True, meta=META)
    down = redis.Redis.from_url(REDIS_DOWN)
    deps.ledger = Ledger(deps.store, ReadModel(down, deps.layout), deps.wake)
    basic = base64.b64encode(f"root:{ADMIN_PW}".encode()).decode()
    with caplog.at_level(logging.WARNING, logger="oauthledger.services.ledger"):
        resp = site.client.simulate_post(
            "/rest/oauthledger/1/consumers", json={"key": "jira:1", "name": "Jira",
                                                   "generateSecret": True},
            headers={"Authorization": f"Basic {basic}"})
    down.close()
    assert resp.status_code == 201, resp.text
    state, _ = deps.ledger.load(consumer_stream("jira:1"))
    assert isinstance(state, ConsumerState)
    assert deps.sealer.open(state.secret_sealed) == resp.json["sharedSecret"]
    assert any("could not be updated now" in r.getMessage() for r in caplog.records)
