"""docs/design.md, "Read your writes" and "Store fallback", through real processes: a
revocation acknowledged by one gunicorn front end is refused on the very next request by
another, and flushing Redis while clients keep calling never lets a revoked token through
nor breaks a valid one, while the workers rebuild the projection by themselves."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis
import requests
from oauthlib.oauth1 import Client

from oauthledger.services import dance
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.users import register_user
from tests.e2e.servers import (
    OAUTHLEDGER,
    Stack,
    _db_url,
    lease_broker_db,
    make_stack,
    release_broker_db,
    spawn,
    unique,
    wait_until,
)

META = {"actor": "e2e"}
ADMIN_PASSWORD = "admin-password-1"


def grant(stack: Stack, consumer_key: str, secret: str, user: str) -> Client:
    """An access token through the application services, as a signing client."""
    deps = stack.deps()
    consumer, _ = deps.ledger.load(f"consumer-{consumer_key}")
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "oob", META)
    rt, _ = deps.ledger.load(f"token-{issued.token}")
    verifier = dance.decide(deps.ledger, deps.sealer, rt, user, True, META)
    rt, _ = deps.ledger.load(f"token-{issued.token}")
    access = dance.exchange(deps.ledger, deps.sealer, deps.settings, rt, verifier, META)
    return Client(consumer_key, client_secret=secret, resource_owner_key=access.token,
                  resource_owner_secret=access.secret)


def call(base: str, client: Client) -> requests.Response:
    url = base + "/rest/api/2/myself"
    _, headers, _ = client.sign(url)
    return requests.get(url, headers=headers, timeout=10)


def setup_accounts(stack: Stack) -> tuple[str, str, str]:
    deps = stack.deps()
    user = unique("user")
    register_user(deps.ledger, user, "user-password-1", meta=META)
    admin = unique("admin")
    register_user(deps.ledger, admin, ADMIN_PASSWORD, admin=True, meta=META)
    key = unique("consumer")
    _, secret = register_consumer(deps.ledger, deps.sealer, key,
                                  ConsumerInput(name="RYW", generate_secret=True), META)
    return user, admin, key + "\n" + secret


@pytest.fixture
def stack():
    s = make_stack(servers=2)
    yield s
    s.close()


def test_revocation_on_one_front_end_is_refused_by_the_other_at_once(stack):
    user, admin, cred = setup_accounts(stack)
    key, secret = cred.split("\n")
    first, second = stack.servers
    for _ in range(3):
        client = grant(stack, key, secret, user)
        # A fresh token works on the very next call, on either front end.
        assert call(second.url, client).status_code == 200
        token = client.resource_owner_key
        revoked = requests.delete(f"{first.url}/rest/oauthledger/1/tokens/{token}",
                                  auth=(admin, ADMIN_PASSWORD), timeout=30)
        assert revoked.status_code == 200, revoked.text
        refused = call(second.url, client)
        assert refused.status_code == 401
        assert 'oauth_problem="token_revoked"' in refused.headers["WWW-Authenticate"]


def test_flushing_redis_under_load_never_accepts_a_revoked_token():
    lease = lease_broker_db()  # a Redis database of its own, so FLUSHDB is the real thing
    stack = make_stack(servers=1, OAUTHLEDGER_REDIS_URL=_db_url(lease[0]),
                       OAUTHLEDGER_CATCHUP_INTERVAL="1s")
    beat = spawn("celery-beat", [OAUTHLEDGER, "beat"],
                 {**stack.env, "OAUTHLEDGER_DATA_DIR": str(stack.workdir / "beat")},
                 stack.workdir)
    try:
        user, admin, cred = setup_accounts(stack)
        key, secret = cred.split("\n")
        valid = [grant(stack, key, secret, user) for _ in range(3)]
        revoked = [grant(stack, key, secret, user) for _ in range(3)]
        deps = stack.deps()
        for c in revoked:
            dance.revoke(deps.ledger, c.resource_owner_key, "e2e", META)
        base = stack.url
        rdb = redis.Redis.from_url(_db_url(lease[0]))
        wait_until(lambda: rdb.exists(f"{stack.prefix}:active") or
                   rdb.exists(f"{stack.prefix}:p0:checkpoint"), "a first checkpoint",
                   timeout=60)

        outcomes: Counter[str] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def hammer(clients: list[Client], expect_ok: bool) -> None:
            while not stop.is_set():
                for c in clients:
                    r = call(base, c)
                    ok = r.status_code == 200
                    outcomes[f"{'valid' if expect_ok else 'revoked'}:{r.status_code}"] += 1
                    if ok != expect_ok:
                        failures.append(f"{r.status_code} {r.headers.get('WWW-Authenticate')}")

        threads = [threading.Thread(target=hammer, args=(valid, True)),
                   threading.Thread(target=hammer, args=(revoked, False))]
        for t in threads:
            t.start()
        time.sleep(2)
        rdb.flushdb()  # Redis loses everything: checkpoint, entities, nonces
        flushed_at = time.monotonic()
        # The projection notices the missing checkpoint and rebuilds by itself.
        wait_until(lambda: requests.get(base + "/readyz", timeout=5).json()["checks"]
                   .get("projection", "").startswith("at "), "the projection to rebuild",
                   timeout=90)
        rebuilt_after = time.monotonic() - flushed_at
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(30)
        assert not failures, failures[:5]
        assert outcomes["valid:200"] > 10 and outcomes["revoked:401"] > 10, outcomes
        print(f"rebuilt {rebuilt_after:.1f} s after FLUSHDB; calls: {dict(outcomes)}")
    finally:
        beat.stop()
        stack.close()
        release_broker_db(*lease)
