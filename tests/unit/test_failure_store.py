"""The failure history's store and entries (events/failures.py, services/failures.py) on
the embedded dependencies (SQLite and the in-process Redis-compatible store, Lua
included): bounded per consumer by count and by age, only registered consumers get a key,
an entry never holds a secret (verifiers, session handles, a PLAINTEXT signature) in any
of its fields, an entry stays within its size, and accepted requests are summed in
memory and written in one go (docs/admin.md, "Failure history")."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from oauthlib.oauth1 import SIGNATURE_PLAINTEXT, Client

from oauthledger.events.failures import (
    ACCEPTED,
    ENTRY_LIMIT,
    AcceptedCounter,
    FailureStore,
    encode_entry,
    hour_of,
)
from oauthledger.services.deps import Deps
from oauthledger.services.failures import (
    FailureHistory,
    RefusedRequest,
    build_entry,
    failure_history,
)
from oauthledger.services.oauth.debugger import MASK, Credentials, debug_history_entry
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import parse_request
from tests.support import CONSUMER_SECRET, hmac_consumer

URL = "https://jira.example.com"
FORM = "application/x-www-form-urlencoded"
VERIFIER = "verifier-secret-value-1234"
HANDLE = "session-handle-secret-5678"
TOKEN_SECRET = "token-secret-abcdef"


def store(deps: Deps, history: int = 200, retention: float = 3600) -> FailureStore:
    return FailureStore(deps.redis, deps.layout, history=history, retention=retention)


def keys_of(deps: Deps, what: str) -> list[str]:
    return sorted(k.decode() for k in deps.redis.scan_iter(f"{deps.layout.prefix}:{what}:*"))


def refused(method: str, url: str, headers: dict[str, str], body: bytes = b"",
            step: str = "resource", rid: str = "rid-1") -> RefusedRequest:
    lower = {k.lower(): v for k, v in headers.items()}
    sreq = parse_request(method, url, lower, body, lower.get("content-type"))
    return RefusedRequest(request_id=rid, route=url.split("?")[0].split("example.com")[1],
                          step=step, method=method, received_url=url, server_url=url,
                          headers=lower, body=body, remote_addr="10.0.0.1", signed=sreq)


# -- bounds -------------------------------------------------------------------------------


def test_history_keeps_the_newest_entries_of_registered_consumers(deps) -> None:
    hmac_consumer(deps, "app")
    s = store(deps, history=3)
    now = time.time()
    for i in range(7):
        assert s.record("app", {"time": now + i, "requestId": f"r{i}"},
                        "signature_invalid", now + i)
    entries = s.entries("app", now + 10)
    assert [e["requestId"] for e in entries] == ["r6", "r5", "r4"]  # newest first
    assert deps.redis.llen(deps.layout.failure_history("app")) == 3
    counts = s.hour_counts("app", [hour_of(now + 6)])[0]
    # Counts are not bounded by the list: every refusal of the hour.
    assert counts.refused_total == sum(1 for i in range(7) if hour_of(now + i) == counts.hour)


def test_unregistered_consumers_get_no_key_only_a_shared_count(deps) -> None:
    s = store(deps)
    now = time.time()
    for key in ("nobody", "evil:" + "x" * 150, ""):
        assert not s.record(key or None, {"time": now}, "consumer_key_unknown", now)
    assert keys_of(deps, "fh") == [] and keys_of(deps, "fc") == []
    assert keys_of(deps, "fu") == [deps.layout.failure_unknown(hour_of(now))]
    assert s.unknown_counts([hour_of(now)]) == [3]
    assert deps.redis.ttl(deps.layout.failure_unknown(hour_of(now))) <= 2 * 86400


def test_a_removed_consumer_is_still_registered(deps) -> None:
    from oauthledger.services.consumers import remove_consumer
    from tests.support import META

    hmac_consumer(deps, "gone")
    remove_consumer(deps.ledger, "gone", META)
    assert store(deps).record("gone", {"time": time.time()}, "consumer_key_rejected",
                              time.time())


def test_entries_older_than_the_retention_are_gone(deps) -> None:
    hmac_consumer(deps, "app")
    s = store(deps, retention=60)
    t0 = time.time()
    s.record("app", {"time": t0, "requestId": "old"}, "nonce_used", t0)
    s.record("app", {"time": t0 + 50, "requestId": "new"}, "nonce_used", t0 + 50)
    ttl = deps.redis.ttl(deps.layout.failure_history("app"))
    assert 0 < ttl <= 60  # the list itself expires a retention after its newest entry
    assert [e["requestId"] for e in s.entries("app", t0 + 55)] == ["new", "old"]
    assert [e["requestId"] for e in s.entries("app", t0 + 70)] == ["new"]
    assert s.entries("app", t0 + 120) == []
    assert s.find("new", ["app"], t0 + 70) == ("app", s.entries("app", t0 + 70)[0])
    assert s.find("old", ["app"], t0 + 70) is None


def test_an_entry_never_exceeds_its_size() -> None:
    big = {"time": 1.0, "requestId": "r", "oauthProblem": "signature_invalid",
           "baseString": "GET&x&" + "a%3Db%26" * 5000, "url": "https://h/" + "p" * 9000,
           "request": {"body": "x" * 4000}, "debuggable": True}
    text = encode_entry(big)
    assert len(text.encode()) <= ENTRY_LIMIT
    entry = json.loads(text)
    assert "request" not in entry and entry["debuggable"] is False
    assert entry["truncated"] is True and entry["oauthProblem"] == "signature_invalid"
    small = {"time": 1.0, "requestId": "r", "advice": "é" * 10}
    assert json.loads(encode_entry(small)) == small


# -- no secrets ---------------------------------------------------------------------------


def _entry_text(problem: str, seen: RefusedRequest) -> tuple[dict[str, Any], str]:
    entry = build_entry(OAuthProblem(problem, "advice"), seen, time.time())
    return entry, encode_entry(entry)


def test_entries_hold_no_verifier_session_handle_or_plaintext_signature() -> None:
    # The access-token step: the verifier in the header, and again in the query.
    client = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key="rt",
                    resource_owner_secret=TOKEN_SECRET, verifier=VERIFIER)
    url = f"{URL}/plugins/servlet/oauth/access-token?oauth_verifier={VERIFIER}"
    _, headers, _ = client.sign(url, "POST")
    entry, text = _entry_text("token_rejected", refused("POST", url, headers,
                                                        step="access-token"))
    assert VERIFIER not in text and TOKEN_SECRET not in text and CONSUMER_SECRET not in text
    assert "oauth_verifier%3D%2528hidden%2529" in entry["baseString"]
    assert entry["url"].endswith("oauth_verifier=(hidden)")
    assert entry["request"]["withheld"] == ["oauth_verifier"]
    assert entry["signature"] == json.loads(text)["signature"] != MASK  # HMAC: kept

    # Renewal: the session handle in a form body.
    client = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key="at",
                    resource_owner_secret=TOKEN_SECRET)
    body = f"oauth_session_handle={HANDLE}"
    url = f"{URL}/plugins/servlet/oauth/access-token"
    _, headers, _ = client.sign(url, "POST", body=body, headers={"Content-Type": FORM})
    entry, text = _entry_text("token_rejected",
                              refused("POST", url, headers, body.encode(), step="renewal"))
    assert HANDLE not in text
    assert entry["request"]["body"] == f"oauth_session_handle={MASK}".replace(
        "(", "%28").replace(")", "%29")

    # PLAINTEXT: the signature is the secrets, in the header and in the query.
    client = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key="at",
                    resource_owner_secret=TOKEN_SECRET, signature_method=SIGNATURE_PLAINTEXT,
                    signature_type="QUERY")
    signed_url, headers, _ = client.sign(f"{URL}/rest/api/2/myself")
    entry, text = _entry_text("signature_invalid", refused("GET", signed_url, headers))
    assert CONSUMER_SECRET not in text and TOKEN_SECRET not in text
    assert entry["signature"] is None and entry["signatureMethod"] == "PLAINTEXT"
    assert "oauth_signature" in entry["request"]["withheld"]


def test_advice_naming_a_secret_is_masked() -> None:
    client = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key="rt",
                    resource_owner_secret=TOKEN_SECRET, verifier=VERIFIER)
    url = f"{URL}/plugins/servlet/oauth/access-token"
    _, headers, _ = client.sign(url, "POST")
    entry = build_entry(OAuthProblem("token_rejected", f"wrong verifier {VERIFIER}"),
                        refused("POST", url, headers), time.time())
    assert entry["advice"] == f"wrong verifier {MASK}"


def test_the_debugger_reruns_on_an_entry(deps) -> None:
    """An entry keeps enough of a refused request for the debugger to name the mistake
    (here: signed without the token secret), at the time of the refusal."""
    consumer = hmac_consumer(deps, "app", signature_methods=["HMAC-SHA1"])
    client = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key="at")
    signed_url, headers, _ = client.sign(f"{URL}/rest/api/2/myself?expand=groups")
    seen = refused("GET", signed_url, headers)
    entry = json.loads(encode_entry(build_entry(OAuthProblem("signature_invalid"), seen,
                                                time.time())))

    def load(key: str, token: str | None) -> Credentials:
        from oauthledger.events.state import TokenState

        fake = TokenState(token="at", kind="access", consumer_key="app", secret_sealed="s",
                          status="active", user="bob", issued_at=time.time(),
                          expires_at=time.time() + 3600)
        return Credentials(consumer=consumer, consumer_secret=CONSUMER_SECRET, token=fake,
                           token_secret=TOKEN_SECRET)

    report = debug_history_entry("app", entry, load, deps.settings).to_dict()
    assert [f["code"] for f in report["diagnosis"]] == ["consumer_secret_only"]
    assert report["history"]["requestId"] == "rid-1"
    assert report["baseString"] == entry["baseString"]
    assert TOKEN_SECRET not in json.dumps(report)


# -- accepted counts ----------------------------------------------------------------------


def test_accepted_requests_are_summed_and_written_once(deps) -> None:
    s = store(deps)
    counter = AcceptedCounter(s, interval=3600)
    now = time.time()
    try:
        for _ in range(5):
            counter.note("app", now)
        counter.note("other", now)
        assert keys_of(deps, "fc") == []  # nothing written per request
        assert counter.flush() == 6
        assert counter.pending() == {}
        hour = hour_of(now)
        assert deps.redis.hget(deps.layout.failure_counts(hour, "app"), ACCEPTED) == b"5"
        assert s.hour_counts("app", [hour])[0].accepted == 5
        assert keys_of(deps, "fh") == []  # accepted requests are no history
    finally:
        counter.close()


def test_accepted_counts_wait_for_redis(deps) -> None:
    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    counter = AcceptedCounter(FailureStore(down, deps.layout, history=10, retention=60),
                              interval=3600)
    try:
        counter.note("app", time.time())
        assert counter.flush() == 0
        assert sum(counter.pending().values()) == 1  # kept for the next try
    finally:
        counter._stop.set()


def test_one_history_per_deps(deps) -> None:
    assert failure_history(deps) is failure_history(deps)
    assert isinstance(failure_history(deps), FailureHistory)


@pytest.mark.parametrize("rid", ["", "a b", "x" * 101, "é", None, 5])
def test_find_refuses_ids_the_server_never_uses(deps, rid) -> None:
    from oauthledger.services.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        failure_history(deps).find(rid, None, deps.store)
    assert "requestId" in exc.value.fields
