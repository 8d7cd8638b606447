"""Audit commands reproduce a scripted history exactly (store clock scripted)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from oauthledger.events import catalog as ev
from oauthledger.events.audit import iso
from oauthledger.events.migrate import upgrade
from oauthledger.events.state import consumer_stream, token_stream, user_stream
from oauthledger.events.store import EventStore
from oauthledger.services.cli import audit as cli_audit
from oauthledger.services.cli.main import cli

for _group in cli_audit.COMMANDS:
    cli.add_command(_group)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def _script(url: str) -> None:
    store = EventStore.from_url(url)
    upgrade(store.engine)

    def at(offset: float, stream: str, version: int, events, actor: str, req: str) -> None:
        store.clock = lambda: T0 + offset
        store.append(stream, version, events, {"actor": actor, "request_id": req})

    at(0, consumer_stream("jira"), 0, [ev.ConsumerRegistered(key="jira", name="Jira")],
       "admin", "r0")
    at(1, user_stream("alice"), 0, [ev.UserRegistered(name="alice", display_name="Alice",
                                                      password_hash=None)], "admin", "r1")
    # Grant 1: approved, exchanged, renewed once, then revoked by an admin.
    at(10, token_stream("RT1"), 0, [ev.RequestTokenIssued(
        token="RT1", consumer_key="jira", secret_sealed="s", callback="oob",
        expires_at=T0 + 610)], "consumer:jira", "r10")
    at(20, token_stream("RT1"), 1, [ev.TokenApproved(token="RT1", user="alice",
                                                     verifier_sealed="v")], "alice", "r20")
    at(30, token_stream("RT1"), 2, [ev.RequestTokenExchanged(token="RT1", access_token="AT1")],
       "consumer:jira", "r30")
    at(30, token_stream("AT1"), 0, [ev.AccessTokenIssued(
        token="AT1", consumer_key="jira", user="alice", secret_sealed="s",
        session_handle_hash="h", expires_at=T0 + 1000, authorization_expires_at=T0 + 5000,
        request_token="RT1")], "consumer:jira", "r30")
    at(500, token_stream("AT1"), 1, [ev.AccessTokenRenewed(token="AT1", new_token="AT2")],
       "consumer:jira", "r500")
    at(500, token_stream("AT2"), 0, [ev.AccessTokenIssued(
        token="AT2", consumer_key="jira", user="alice", secret_sealed="s",
        session_handle_hash="h", expires_at=T0 + 1500, authorization_expires_at=T0 + 5000,
        renewed_from="AT1")], "consumer:jira", "r500")
    at(900, token_stream("AT2"), 1, [ev.AccessTokenRevoked(token="AT2", by="admin")],
       "admin", "r900")
    # Grant 2: denied.
    at(40, token_stream("RT2"), 0, [ev.RequestTokenIssued(
        token="RT2", consumer_key="jira", secret_sealed="s", callback="oob",
        expires_at=T0 + 640)], "consumer:jira", "r40")
    at(45, token_stream("RT2"), 1, [ev.TokenDenied(token="RT2", user="alice")], "alice", "r45")
    # Grant 3: approved, exchanged, expired by the sweep.
    at(50, token_stream("RT3"), 0, [ev.RequestTokenIssued(
        token="RT3", consumer_key="jira", secret_sealed="s", callback="oob",
        expires_at=T0 + 650)], "consumer:jira", "r50")
    at(55, token_stream("RT3"), 1, [ev.TokenApproved(token="RT3", user="alice",
                                                     verifier_sealed="v")], "alice", "r55")
    at(60, token_stream("RT3"), 2, [ev.RequestTokenExchanged(token="RT3", access_token="AT3")],
       "consumer:jira", "r60")
    at(60, token_stream("AT3"), 0, [ev.AccessTokenIssued(
        token="AT3", consumer_key="jira", user="alice", secret_sealed="s",
        session_handle_hash="h", expires_at=T0 + 700, authorization_expires_at=T0 + 5000,
        request_token="RT3")], "consumer:jira", "r60")
    at(760, token_stream("AT3"), 1, [ev.AccessTokenExpired(token="AT3")],
       "system:expiry-sweep", "sweep")
    store.engine.dispose()


def _run(url: str, *args: str):
    env = {**os.environ, "OAUTHLEDGER_DATABASE_URL": url}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


@pytest.fixture
def audited(store_url: str) -> str:
    _script(store_url)
    return store_url


def test_audit_at(audited: str) -> None:
    def valid_at(offset: float) -> list[tuple[str, str]]:
        out = json.loads(_run(audited, "audit", "at", str(T0 + offset), "--format", "json")
                         .output)
        return [(t["token"], t["user"]) for t in out["tokens"] if t["valid"]]

    assert valid_at(25) == []
    assert valid_at(65) == [("AT1", "alice"), ("AT3", "alice")]
    assert valid_at(699) == [("AT3", "alice"), ("AT2", "alice")]
    # At +600: AT1 was renewed at +500 (ended), AT2 active, AT3 active until +700.
    assert valid_at(600) == [("AT3", "alice"), ("AT2", "alice")]
    # At +700 exactly AT3 stops working (expires_at is exclusive), before the sweep ran.
    assert valid_at(700) == [("AT2", "alice")]
    assert valid_at(1000) == []  # AT2 revoked at +900
    out = json.loads(_run(audited, "audit", "at", iso(T0 + 5), "--format", "json").output)
    assert out["consumers"] == [{"key": "jira", "name": "Jira", "removed": False}]
    assert out["position"] == 2
    text = _run(audited, "audit", "at", "2025-06-15T15:07:45Z").output
    assert "AT1  user=alice  consumer=jira" in text
    bad = _run(audited, "audit", "at", "yesterday")
    assert bad.exit_code != 0 and "not a time" in bad.output


def test_audit_token(audited: str) -> None:
    out = json.loads(_run(audited, "audit", "token", "AT2", "--format", "json").output)
    got = [(e["token"], e["type"], e["time"], e["actor"], e["request_id"]) for e in out]
    assert got == [
        ("RT1", "RequestTokenIssued", iso(T0 + 10), "consumer:jira", "r10"),
        ("RT1", "TokenApproved", iso(T0 + 20), "alice", "r20"),
        ("RT1", "RequestTokenExchanged", iso(T0 + 30), "consumer:jira", "r30"),
        ("AT1", "AccessTokenIssued", iso(T0 + 30), "consumer:jira", "r30"),
        ("AT1", "AccessTokenRenewed", iso(T0 + 500), "consumer:jira", "r500"),
        ("AT2", "AccessTokenIssued", iso(T0 + 500), "consumer:jira", "r500"),
        ("AT2", "AccessTokenRevoked", iso(T0 + 900), "admin", "r900"),
    ]
    assert out[1]["details"] == {"user": "alice"}
    assert out[6]["details"] == {"by": "admin", "reason": "revoked"}
    assert "secret" not in json.dumps(out)
    missing = _run(audited, "audit", "token", "nope")
    assert missing.exit_code == 1 and "no token 'nope'" in missing.output


def test_audit_user(audited: str) -> None:
    out = json.loads(_run(audited, "audit", "user", "alice", "--format", "json").output)
    assert out["user"] == "alice" and out["connections"] == []
    assert out["grants"] == [
        {"consumer_key": "jira", "request_token": "RT1", "decision": "approved",
         "decided_at": iso(T0 + 20), "access_tokens": ["AT1", "AT2"], "outcome": "revoked",
         "ended_at": iso(T0 + 900), "ended_by": "admin"},
        {"consumer_key": "jira", "request_token": "RT2", "decision": "denied",
         "decided_at": iso(T0 + 45), "access_tokens": [], "outcome": "denied",
         "ended_at": iso(T0 + 45), "ended_by": "alice"},
        {"consumer_key": "jira", "request_token": "RT3", "decision": "approved",
         "decided_at": iso(T0 + 55), "access_tokens": ["AT3"], "outcome": "expired",
         "ended_at": iso(T0 + 760), "ended_by": "system:expiry-sweep"},
    ]
    # A name the log has never seen is not a user without grants: one line, exit 1.
    unknown = _run(audited, "audit", "user", "bob")
    assert unknown.exit_code == 1 and "no user 'bob'" in unknown.output, unknown.output
