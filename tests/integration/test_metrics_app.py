"""``/metrics`` through the Falcon app (falcon.testing) on the embedded deps and on
PostgreSQL with the real Redis (docs/operations.md, "Metrics"): an accepted and a
refused signed request show up in the scrape with the right labels; the token
restriction; a Redis that is down counts as a dependency error and still leaves the
scrape answering, with the projection reported down.

The scrape is read as a scraper reads it (the text, parsed); this process's values are
shared by every test, so each test compares before and after, with consumer keys of its
own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
import redis
from oauthlib.oauth1 import Client as OAuthClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from oauthledger.events.keys import KeyLayout
from oauthledger.events.metrics import sample_value
from oauthledger.events.projection import project_pending
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import embedded_deps_in, migrated_store, pg_deps
from tests.support import CONSUMER_SECRET, META, grant, hmac_consumer

HOST = "http://falconframework.org"  # falcon.testing's default host
MYSELF = "/rest/api/2/myself"
SIGNED = "oauthledger_signed_requests_total"
BY_CONSUMER = "oauthledger_signed_requests_by_consumer_total"


@pytest.fixture(params=["embedded", "postgresql+redis"])
def deps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deps]:
    """The embedded deps (SQLite, in-process Redis), and PostgreSQL with the real Redis."""
    if request.param == "embedded":
        with embedded_deps_in(tmp_path) as deps:
            yield deps
        return
    pg_url = request.getfixturevalue("pg_url")
    client = request.getfixturevalue("redis_client")
    layout = request.getfixturevalue("key_layout")
    with pg_deps(pg_url, client, layout, tmp_path) as deps:
        yield deps


def scrape(client: falcon.testing.TestClient, **headers: str) -> str:
    """The text of ``GET /metrics``, which must answer 200."""
    resp = client.simulate_get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.text


def value(text: str, name: str, **labels: str) -> float:
    """One sample of a scrape (0 when the series is not there yet)."""
    return sample_value(text, name, labels) or 0.0


def test_accepted_and_refused_requests_in_the_scrape(deps: Deps) -> None:
    """One accepted call and one with a wrong signature, of a registered consumer: each
    counted once with its outcome, problem and consumer; the token and the nonce appear
    nowhere in the scrape."""
    register_user(deps.ledger, "bob", "bob-password", meta=META)
    key = "metrics-" + uuid.uuid4().hex[:8]
    consumer = hmac_consumer(deps, key)
    access = grant(deps, consumer)
    client = falcon.testing.TestClient(create_app(deps))
    before = scrape(client)

    good = OAuthClient(key, client_secret=CONSUMER_SECRET, resource_owner_key=access.token,
                       resource_owner_secret=access.secret)
    _, headers, _ = good.sign(HOST + MYSELF)
    assert client.simulate_get(MYSELF, headers=headers).status_code == 200
    forged = OAuthClient(key, client_secret="not-the-secret", resource_owner_key=access.token,
                         resource_owner_secret=access.secret)
    _, forged_headers, _ = forged.sign(HOST + MYSELF)
    refused = client.simulate_get(MYSELF, headers=forged_headers)
    assert refused.status_code == 401
    assert 'oauth_problem="signature_invalid"' in refused.headers["WWW-Authenticate"]

    after = scrape(client)
    for labels in ({"kind": "resource", "outcome": "accepted", "oauth_problem": ""},
                   {"kind": "resource", "outcome": "refused",
                    "oauth_problem": "signature_invalid"}):
        assert value(after, SIGNED, **labels) - value(before, SIGNED, **labels) == 1, labels
    for outcome in ("accepted", "refused"):
        assert value(after, BY_CONSUMER, consumer=key, kind="resource", outcome=outcome) == 1
    assert value(after, "oauthledger_http_responses_total", group="resource", code="4xx") \
        - value(before, "oauthledger_http_responses_total", group="resource", code="4xx") >= 1
    nonce = forged_headers["Authorization"].split('oauth_nonce="')[1].split('"')[0]
    assert access.token not in after and nonce not in after


def test_projection_families_in_the_scrape(deps: Deps) -> None:
    """After a projection run, the scrape reports the log head, the checkpoint at it and
    no lag, read from this deployment's store and Redis."""
    register_user(deps.ledger, "carol", "carol-password", meta=META)
    project_pending(deps.store, deps.read_model)
    text = scrape(falcon.testing.TestClient(create_app(deps)))
    head = deps.store.head()
    assert sample_value(text, "oauthledger_projection_up", {"reason": ""}) == 1
    assert sample_value(text, "oauthledger_log_head_position") == head
    assert sample_value(text, "oauthledger_projection_checkpoint_position") == head
    assert sample_value(text, "oauthledger_projection_lag_events") == 0
    assert sample_value(text, "oauthledger_projection_lag_seconds") == 0


def test_metrics_token_restriction(pg_url: str, redis_client: redis.Redis,
                                   key_layout: KeyLayout, tmp_path: Path) -> None:
    """OAUTHLEDGER_METRICS_TOKEN on the production deps: 401 and a Bearer challenge
    without the token or with another, the scrape with it."""
    with pg_deps(pg_url, redis_client, key_layout, tmp_path,
                 METRICS_TOKEN="tok-" + "x" * 20) as deps:
        client = falcon.testing.TestClient(create_app(deps))
        for headers in ({}, {"Authorization": "Bearer tok-"}, {"Authorization": "tok-" + "x" * 20}):
            resp = client.simulate_get("/metrics", headers=headers)
            assert resp.status_code == 401
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="oauthledger metrics"'
            assert "oauthledger_" not in resp.text
        text = scrape(client, Authorization="Bearer tok-" + "x" * 20)
        assert sample_value(text, "oauthledger_projection_up", {"reason": ""}) == 1


def test_redis_down_counts_and_the_scrape_still_answers(
        pg_url: str, tmp_path: Path) -> None:
    """Nothing listens on the Redis port: a signed call answers 503, counted as a Redis
    error met over HTTP; /metrics still answers 200, with the projection down for
    "redis"."""
    from oauthledger.events.sealing import KeyRing, Sealer
    from oauthledger.events.settings import load_settings

    settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                              "OAUTHLEDGER_DATABASE_URL": pg_url})
    # No retries: redis-py would otherwise retry the refused connection for seconds,
    # past the scrape's bound (that case: tests/unit/test_metrics.py).
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    with migrated_store(settings.database_url) as store:
        deps = Deps(settings=settings, store=store, redis=down,
                    sealer=Sealer(KeyRing.generate()), wake=lambda: None,
                    layout=KeyLayout("olmetrics-" + uuid.uuid4().hex[:8]))
        client = falcon.testing.TestClient(create_app(deps))
        before = scrape(client)
        signer = OAuthClient("anyone", client_secret="x", resource_owner_key="t",
                             resource_owner_secret="y")
        _, headers, _ = signer.sign(HOST + MYSELF)
        resp = client.simulate_get(MYSELF, headers=headers)
        assert resp.status_code == 503, resp.text
        assert resp.json["dependency"] == "redis"
        after = scrape(client)
        labels = {"dependency": "redis", "where": "http"}
        assert value(after, "oauthledger_dependency_errors_total", **labels) \
            - value(before, "oauthledger_dependency_errors_total", **labels) == 1
        assert sample_value(after, "oauthledger_projection_up", {"reason": "redis"}) == 0
        assert sample_value(after, "oauthledger_log_head_position") is None
