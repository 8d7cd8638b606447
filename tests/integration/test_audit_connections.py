"""The audit of the consumer side, on both store backends, from a scripted log (the
store's clock scripted): ``oauthledger audit user NAME`` lists the user's connections to
service providers — each step with its time and who did it — and ``oauthledger audit
provider NAME`` tells a provider's history with every user's connection events. Sealed
values never appear in either answer."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result

from oauthledger.events import catalog as ev
from oauthledger.events.audit import (
    ConnectionHistory,
    iso,
    provider_history,
    user_connections,
)
from oauthledger.events.migrate import upgrade
from oauthledger.events.state import connection_stream, provider_stream, user_stream
from oauthledger.events.store import EventStore, StreamWrite
from oauthledger.services.cli import audit as cli_audit
from oauthledger.services.cli.main import cli

for _group in cli_audit.COMMANDS:
    cli.add_command(_group)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
SEALED = "s1.kdeadbeef.SEALED-VALUE"  # what a sealed field holds; never printed


def _added(name: str, base: str) -> ev.ServiceProviderAdded:
    return ev.ServiceProviderAdded(
        name=name, description="", consumer_key="oauthledger:000000001", secret_sealed=None,
        request_token_url=f"{base}/plugins/servlet/oauth/request-token",
        authorize_url=f"{base}/plugins/servlet/oauth/authorize",
        access_token_url=f"{base}/plugins/servlet/oauth/access-token", base_url=base)


def _obtained(provider: str, user: str, expires: float) -> ev.ProviderTokenObtained:
    return ev.ProviderTokenObtained(
        provider=provider, user=user, token_sealed=SEALED, secret_sealed=SEALED,
        session_handle_sealed=SEALED, expires_at=expires, authorization_expires_at=T0 + 9000,
        request_token="RT")


def _requested(provider: str, user: str, token: str) -> ev.ProviderTokenRequested:
    return ev.ProviderTokenRequested(provider=provider, user=user, request_token=token,
                                     secret_sealed=SEALED, session_hash="h" * 64,
                                     expires_at=T0 + 10_000)


def _script(url: str) -> None:
    store = EventStore.from_url(url)
    upgrade(store.engine)
    versions: dict[str, int] = {}

    def at(offset: float, stream: str, events: list[ev.Event], actor: str, req: str) -> None:
        store.clock = lambda: T0 + offset
        store.append(stream, versions.get(stream, 0), events,
                     {"actor": actor, "request_id": req})
        versions[stream] = versions.get(stream, 0) + len(events)

    for name in ("alice", "ali", "bob"):
        at(0, user_stream(name), [ev.UserRegistered(name=name, display_name=name,
                                                    password_hash=None)], "admin", "r0")
    at(1, provider_stream("B"), [_added("B", "http://b.example")], "cli:root", "r1")
    at(2, provider_stream("C"), [_added("C", "http://c.example")], "root", "r2")
    alice_b = connection_stream("alice", "B")
    at(10, alice_b, [_requested("B", "alice", "RT1")], "alice", "r10")
    at(20, alice_b, [_obtained("B", "alice", T0 + 1000)], "alice", "r20")
    at(1100, alice_b, [ev.ProviderTokenRenewed(
        provider="B", user="alice", token_sealed=SEALED, secret_sealed=SEALED,
        session_handle_sealed=SEALED, expires_at=T0 + 2000,
        authorization_expires_at=T0 + 9000)], "resource-server:wiki", "r1100")
    at(1200, alice_b, [ev.ProviderTokenRejected(provider="B", user="alice",
                                                problem="token_revoked")], "alice", "r1200")
    at(1300, alice_b, [_requested("B", "alice", "RT2")], "alice", "r1300")
    at(1310, alice_b, [ev.ProviderTokenRequestEnded(provider="B", user="alice",
                                                    request_token="RT2", reason="denied")],
       "alice", "r1310")
    at(1400, alice_b, [_requested("B", "alice", "RT3")], "alice", "r1400")
    at(1410, alice_b, [_obtained("B", "alice", T0 + 3000)], "alice", "r1410")
    at(1500, alice_b, [ev.ProviderTokenDropped(provider="B", user="alice", by="user",
                                               reason="disconnected")], "alice", "r1500")
    # A user whose name is a prefix of alice's, connected to C only; bob to B.
    at(30, connection_stream("ali", "C"), [_requested("C", "ali", "RT4")], "ali", "r30")
    at(40, connection_stream("alice", "C"), [_requested("C", "alice", "RT5")], "alice", "r40")
    bob_b = connection_stream("bob", "B")
    at(50, bob_b, [_requested("B", "bob", "RT6")], "bob", "r50")
    at(60, bob_b, [_obtained("B", "bob", T0 + 5000)], "bob", "r60")
    at(1600, provider_stream("B"), [ev.ServiceProviderUpdated(
        name="B", changes={"description": "the other one", "secret_sealed": SEALED})],
       "root", "r1600")
    # Removal drops every connection in the same commit (services/providers.py).
    store.clock = lambda: T0 + 1700
    store.append_many([
        StreamWrite(provider_stream("B"), versions[provider_stream("B")],
                    [ev.ServiceProviderRemoved(name="B")]),
        StreamWrite(bob_b, versions[bob_b], [ev.ProviderTokenDropped(
            provider="B", user="bob", by="admin", reason="provider-removed")]),
    ], {"actor": "root", "request_id": "r1700"})
    store.engine.dispose()


def _run(url: str, *args: str) -> Result:
    env = {**os.environ, "OAUTHLEDGER_DATABASE_URL": url}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def user_connections_of(url: str, user: str) -> list[ConnectionHistory]:
    store = EventStore.from_url(url)
    try:
        return user_connections(store, user)
    finally:
        store.engine.dispose()


@pytest.fixture
def audited(store_url: str) -> str:
    _script(store_url)
    return store_url


def test_user_connections_step_by_step(audited: str) -> None:
    out = json.loads(_run(audited, "audit", "user", "alice", "--format", "json").output)
    assert out["grants"] == []
    by_provider = {c["provider"]: c for c in out["connections"]}
    assert sorted(by_provider) == ["B", "C"]
    assert by_provider["C"]["status"] == "never connected"
    b = by_provider["B"]
    assert (b["user"], b["status"]) == ("alice", "dropped")
    steps = [(e["time"], e["action"], e["actor"], e["details"]) for e in b["history"]]
    assert steps == [
        (iso(T0 + 10), "connect started", "alice", {"expires_at": iso(T0 + 10_000)}),
        (iso(T0 + 20), "connected", "alice",
         {"expires_at": iso(T0 + 1000), "authorization_expires_at": iso(T0 + 9000)}),
        (iso(T0 + 1100), "renewed", "resource-server:wiki",
         {"expires_at": iso(T0 + 2000), "authorization_expires_at": iso(T0 + 9000)}),
        (iso(T0 + 1200), "rejected", "alice", {"problem": "token_revoked"}),
        (iso(T0 + 1300), "connect started", "alice", {"expires_at": iso(T0 + 10_000)}),
        (iso(T0 + 1310), "connect ended", "alice", {"reason": "denied"}),
        (iso(T0 + 1400), "connect started", "alice", {"expires_at": iso(T0 + 10_000)}),
        (iso(T0 + 1410), "connected", "alice",
         {"expires_at": iso(T0 + 3000), "authorization_expires_at": iso(T0 + 9000)}),
        (iso(T0 + 1500), "dropped", "alice", {"by": "user", "reason": "disconnected"}),
    ]
    assert [e["request_id"] for e in b["history"]][:2] == ["r10", "r20"]
    assert all(e["user"] == "alice" and e["provider"] == "B" for e in b["history"])
    # Exact user names: "ali" is not "alice", and the other way round.
    ali = user_connections_of(audited, "ali")
    assert [(c.provider, c.status, len(c.history)) for c in ali] == [("C", "never connected", 1)]
    bob = {c.provider: c for c in user_connections_of(audited, "bob")}
    assert bob["B"].status == "dropped"
    assert bob["B"].history[-1].details == {"by": "admin", "reason": "provider-removed"}
    assert bob["B"].history[-1].actor == "root"

    text = _run(audited, "audit", "user", "alice").output
    assert "alice made no grants" in text
    assert "connections to service providers (2):" in text
    assert "  B: dropped" in text and "  C: never connected" in text
    assert (f"    {iso(T0 + 1200)}  #") in text
    assert "rejected  actor=alice  request=r1200  problem=token_revoked" in text
    assert "dropped  actor=alice  request=r1500  by=user reason=disconnected" in text
    assert "renewed  actor=resource-server:wiki" in text
    for answer in (text, json.dumps(out)):
        assert "SEALED" not in answer and "h" * 64 not in answer


def test_provider_history_with_every_users_connections(audited: str) -> None:
    out = json.loads(_run(audited, "audit", "provider", "B", "--format", "json").output)
    assert out["provider"] == "B"
    # In log order (positions), which is append order here, not the scripted clock's.
    got = [(e["position"], e["user"], e["action"], e["actor"]) for e in out["history"]]
    positions = [p for p, *_ in got]
    assert positions == sorted(positions)
    assert [(u, a, who) for _, u, a, who in got] == [
        (None, "added", "cli:root"),
        ("alice", "connect started", "alice"),
        ("alice", "connected", "alice"),
        ("alice", "renewed", "resource-server:wiki"),
        ("alice", "rejected", "alice"),
        ("alice", "connect started", "alice"),
        ("alice", "connect ended", "alice"),
        ("alice", "connect started", "alice"),
        ("alice", "connected", "alice"),
        ("alice", "dropped", "alice"),
        ("bob", "connect started", "bob"),
        ("bob", "connected", "bob"),
        (None, "edited", "root"),
        (None, "removed", "root"),
        ("bob", "dropped", "root"),
    ]
    history = out["history"]
    assert history[0]["details"] == {
        "consumer_key": "oauthledger:000000001", "base_url": "http://b.example",
        "request_token_url": "http://b.example/plugins/servlet/oauth/request-token",
        "authorize_url": "http://b.example/plugins/servlet/oauth/authorize",
        "access_token_url": "http://b.example/plugins/servlet/oauth/access-token",
        "signing": "RSA-SHA1"}
    assert history[12]["details"] == {"description": "the other one",
                                      "shared_secret": "replaced"}
    assert history[-1]["details"] == {"by": "admin", "reason": "provider-removed"}
    assert history[-1]["time"] == history[-2]["time"] == iso(T0 + 1700)
    # C's connections are not B's.
    assert all(e["provider"] == "B" for e in history)
    c = [e["user"] for e in json.loads(
        _run(audited, "audit", "provider", "C", "--format", "json").output)["history"]]
    assert c == [None, "ali", "alice"]

    text = _run(audited, "audit", "provider", "B").output
    lines = text.splitlines()
    assert len(lines) == len(history)
    assert lines[0].startswith(f"{iso(T0 + 1)}  #") and "  added  actor=cli:root" in lines[0]
    assert "user=bob  dropped  actor=root  request=r1700  by=admin reason=provider-removed" \
        in lines[-1]
    assert "edited  actor=root  request=r1600  description=the other one " \
           "shared_secret=replaced" in text
    for answer in (text, json.dumps(out)):
        assert "SEALED" not in answer and "h" * 64 not in answer


def test_unknown_provider_is_one_line(audited: str) -> None:
    result = _run(audited, "audit", "provider", "nope")
    assert result.exit_code == 1
    assert result.output.strip() == "oauthledger: no service provider 'nope' in the event log"
    store = EventStore.from_url(audited)
    try:
        with pytest.raises(ValueError, match="no service provider"):
            provider_history(store, "nope")
    finally:
        store.engine.dispose()
