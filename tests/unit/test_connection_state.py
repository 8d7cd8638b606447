"""Folding a user's connection to a service provider (events/state.py, fold_connection),
and the pure rules of services/connections.py: which URLs a call may reach, which
headers a caller may set, and what status a user sees."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oauthledger.events import catalog as ev
from oauthledger.events.chain import canonical_json
from oauthledger.events.state import ConnectionState, ProviderState, fold_stream
from oauthledger.events.store import RecordedEvent
from oauthledger.services import connections as conn
from oauthledger.services.errors import ValidationError


def _records(*events: ev.Event, start: float = 1000.0) -> list[RecordedEvent]:
    """The events as stored rows of one stream, committed a second apart from ``start``."""
    out = []
    for i, e in enumerate(events):
        when = datetime.fromtimestamp(start + i, tz=UTC).isoformat()
        out.append(RecordedEvent(i + 1, "connection-alice/B", i + 1, e.type_name,
                                 e.SCHEMA_VERSION, canonical_json(e.to_data()),
                                 canonical_json({"actor": "alice", "time": when}), "0" * 64))
    return out


REQUESTED = ev.ProviderTokenRequested(provider="B", user="alice", request_token="rt1",
                                      secret_sealed="s.rt", session_hash="h1",
                                      expires_at=2000.0)
OBTAINED = ev.ProviderTokenObtained(provider="B", user="alice", token_sealed="s.tok",
                                    secret_sealed="s.sec", session_handle_sealed="s.hdl",
                                    expires_at=5000.0, authorization_expires_at=9000.0,
                                    request_token="rt1")


def test_requested_then_obtained_is_connected_without_pending() -> None:
    state = fold_stream(_records(REQUESTED, OBTAINED))
    assert isinstance(state, ConnectionState)
    assert (state.status, state.token_sealed, state.pending_token) == ("connected", "s.tok",
                                                                       None)
    assert state.connected_at == 1001.0 and state.version == 2


def test_a_new_request_keeps_the_working_token_until_it_ends() -> None:
    again = ev.ProviderTokenRequested(provider="B", user="alice", request_token="rt2",
                                      secret_sealed="s.rt2", session_hash="h2",
                                      expires_at=3000.0)
    ended = ev.ProviderTokenRequestEnded(provider="B", user="alice", request_token="rt2",
                                         reason="denied")
    pending = fold_stream(_records(REQUESTED, OBTAINED, again))
    assert isinstance(pending, ConnectionState)
    assert pending.status == "connected" and pending.pending_token == "rt2"
    after = fold_stream(_records(REQUESTED, OBTAINED, again, ended))
    assert isinstance(after, ConnectionState)
    assert (after.status, after.token_sealed, after.pending_token) == ("connected", "s.tok",
                                                                       None)


def test_renewed_replaces_the_token_and_rejected_forgets_it() -> None:
    renewed = ev.ProviderTokenRenewed(provider="B", user="alice", token_sealed="s.tok2",
                                      secret_sealed="s.sec2", session_handle_sealed="s.hdl",
                                      expires_at=6000.0, authorization_expires_at=9000.0)
    rejected = ev.ProviderTokenRejected(provider="B", user="alice", problem="token_revoked")
    state = fold_stream(_records(REQUESTED, OBTAINED, renewed))
    assert isinstance(state, ConnectionState)
    assert (state.token_sealed, state.renewed_at, state.expires_at) == ("s.tok2", 1002.0,
                                                                        6000.0)
    broken = fold_stream(_records(REQUESTED, OBTAINED, renewed, rejected))
    assert isinstance(broken, ConnectionState)
    assert (broken.status, broken.problem, broken.token_sealed) == ("needs_reconnect",
                                                                    "token_revoked", None)


def test_dropped_forgets_token_and_pending() -> None:
    dropped = ev.ProviderTokenDropped(provider="B", user="alice", by="alice", reason="user")
    state = fold_stream(_records(REQUESTED, OBTAINED, REQUESTED, dropped))
    assert isinstance(state, ConnectionState)
    assert (state.status, state.token_sealed, state.secret_sealed, state.pending_token) == (
        "dropped", None, None, None)


def test_an_event_after_nothing_but_a_request_is_refused() -> None:
    with pytest.raises(TypeError):
        fold_stream(_records(OBTAINED))


@pytest.mark.parametrize(("expires", "handle", "auth_expires", "now", "seen"), [
    (5000.0, "s.h", 9000.0, 4000.0, "connected"),
    (5000.0, "s.h", 9000.0, 6000.0, "connected"),  # expired, renewable on next use
    (5000.0, None, None, 6000.0, "needs_reconnect"),  # expired, no session handle
    (5000.0, "s.h", 5500.0, 6000.0, "needs_reconnect"),  # authorization ran out
    (None, None, None, 10.0**12, "connected"),  # the provider gave no expiry
])
def test_status_a_user_sees(expires: float | None, handle: str | None,
                            auth_expires: float | None, now: float, seen: str) -> None:
    state = ConnectionState(provider="B", user="alice", status="connected",
                            token_sealed="t", secret_sealed="s", session_handle_sealed=handle,
                            expires_at=expires, authorization_expires_at=auth_expires)
    assert conn.status_of(state, now) == seen
    assert conn.status_of(None, now) == "not_connected"


def _provider(base_url: str | None = "https://b.example/jira",
              token_url: str = "https://b.example/jira/plugins/servlet/oauth/access-token"
              ) -> ProviderState:
    return ProviderState(name="B", description="", consumer_key="k", secret_sealed=None,
                         request_token_url=token_url, authorize_url=token_url,
                         access_token_url=token_url, base_url=base_url)


def test_a_path_is_taken_under_the_base_url() -> None:
    assert conn.resolve_call_url(_provider(), "/rest/api/2/myself?x=1") == (
        "https://b.example/jira/rest/api/2/myself?x=1")


@pytest.mark.parametrize("url", [
    "https://evil.example/rest/api/2/myself",
    "http://b.example/jira/rest/api/2/myself",  # another scheme is another origin
    "https://b.example:8443/jira/x",
    "https://b.example/confluence/x",  # outside the base path
    "https://b.example/jiraX/x",
    "//evil.example/x",
    "https://user:pw@b.example/jira/x",
    "https://b.example.evil.example/jira/x",
    "file:///etc/passwd",
    "https://b.example/jira/x y",
    "",
])
def test_the_call_api_is_no_open_proxy(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        conn.resolve_call_url(_provider(), url)
    assert "url" in caught.value.fields


def test_a_provider_added_by_hand_allows_its_endpoint_origins() -> None:
    provider = _provider(base_url=None, token_url="https://api.b.example:8443/oauth/token")
    assert conn.resolve_call_url(provider, "/v1/me") == "https://api.b.example:8443/v1/me"
    assert conn.resolve_call_url(provider, "https://API.b.example:8443/v2") == (
        "https://API.b.example:8443/v2")
    with pytest.raises(ValidationError):
        conn.resolve_call_url(provider, "https://api.b.example/v1/me")  # port 443


def test_callers_cannot_set_the_signature_or_framing_headers() -> None:
    clean = conn._clean_headers({"Accept": "application/json", "Authorization": "OAuth x",
                                 "Host": "evil", "Content-Length": "9", "Cookie": "a=b"})
    assert clean == {"Accept": "application/json"}
    for bad in ({"X-A": "a\r\nInjected: 1"}, {"Bad Name": "x"}, {"X-A": 3}, {"": "x"}):
        with pytest.raises(ValidationError):
            conn._clean_headers(bad)


def test_callback_url_encodes_the_provider_name() -> None:
    assert conn.callback_url("https://a.example/", "B and/C") == (
        "https://a.example/plugins/servlet/oauth/service-providers/B%20and%2FC/callback")


def test_every_entity_kind_round_trips_through_its_redis_encoding() -> None:
    """encode/decode_value give back the state, the installation included (its key is
    a field of its own, not the Redis key), and the consumer side's new fields."""
    from oauthledger.events.readmodel import decode_value, encode, entity_of
    from oauthledger.events.state import InstallationState, ResourceServerState

    states = [
        InstallationState(key="oauthledger:123456789", name="A", description="",
                          public_key="PEM", private_key_sealed="s.pk", version=3),
        _provider(),
        ResourceServerState(server_id="rs", secret_sealed="s.x", description="",
                            act_for_users=True, version=1),
    ]
    for state in states:
        kind, ident = entity_of(state)
        raw = f"{state.version}|".encode() + encode(state)
        assert decode_value(kind, ident, raw) == state


def test_an_installation_stored_without_its_key_reads_as_absent() -> None:
    from oauthledger.events import keys as k
    from oauthledger.events.readmodel import decode_value

    assert decode_value(k.INSTALLATION, "installation",
                        b'3|{"name":"A","description":"","public_key":"P",'
                        b'"private_key_sealed":"s"}') is None
