"""Access-token listings and revocation as users and admins see them.

Shared by both tiers: ``deps`` is the embedded Deps (SQLite + in-process Redis) in
tests/unit/conftest.py, and the real-server Deps in
tests/integration/test_app_services_servers.py, which runs these same functions."""

from __future__ import annotations

import dataclasses
import time

import pytest

from oauthledger.events import keys as k
from oauthledger.events.state import token_stream
from oauthledger.services import consumers, dance, tokens
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.users import register_user
from tests.support import META, grant, hmac_consumer


@pytest.fixture
def issued(deps: Deps) -> dict[str, str]:
    """Access tokens by label: bob and alice on consumer ``a``, bob on ``b``; one of bob's
    renewed, one revoked."""
    for user in ("alice", "bob"):
        register_user(deps.ledger, user, None, meta=META)
    a = hmac_consumer(deps, "a", description="Consumer A")
    b = hmac_consumer(deps, "b")
    out = {"bob-a": grant(deps, a, "bob").token, "alice-a": grant(deps, a, "alice").token,
           "bob-b": grant(deps, b, "bob").token}
    renewed = grant(deps, a, "bob")
    old, _ = deps.ledger.load(token_stream(renewed.token))
    out["renewed"] = renewed.token
    out["renewal"] = dance.renew(deps.ledger, deps.sealer, deps.settings, a, old,
                                 renewed.session_handle, META).token
    out["revoked"] = grant(deps, b, "alice").token
    dance.revoke(deps.ledger, out["revoked"], "admin", META)
    return out


def listed(deps: Deps, **filters: str) -> set[str]:
    """The tokens :func:`tokens.list_access_tokens` returns for ``filters``."""
    return {row.token.token for row in tokens.list_access_tokens(deps.ledger, **filters)}


def test_tokens_list_filters_by_user_consumer_and_status(
        deps: Deps, issued: dict[str, str]) -> None:
    t = issued
    assert listed(deps) == set(t.values())
    assert listed(deps, user="bob") == {t["bob-a"], t["bob-b"], t["renewed"], t["renewal"]}
    assert listed(deps, consumer="b") == {t["bob-b"], t["revoked"]}
    assert listed(deps, user="bob", consumer="b") == {t["bob-b"]}
    assert listed(deps, status="active") == {t["bob-a"], t["alice-a"], t["bob-b"], t["renewal"]}
    assert listed(deps, status="revoked") == {t["revoked"]}
    assert listed(deps, status="renewed") == {t["renewed"]}
    assert listed(deps, user="alice", status="revoked") == {t["revoked"]}
    # A user name that is a substring of another's matches only that user exactly.
    register_user(deps.ledger, "bo", None, meta=META)
    assert listed(deps, user="bo") == set()
    assert listed(deps, user="nobody") == set()
    rows = tokens.list_access_tokens(deps.ledger)
    assert [r.token.issued_at for r in rows] == sorted(
        (r.token.issued_at for r in rows), reverse=True)
    assert len(tokens.list_access_tokens(deps.ledger, limit=2)) == 2


def test_tokens_active_past_expiry_lists_as_expired(
        deps: Deps, issued: dict[str, str]) -> None:
    # The sweep has not run: the stored status is still "active", the second counts.
    future = time.time() + deps.settings.access_token_ttl + 1
    ledger = dataclasses.replace(deps.ledger, clock=lambda: future)
    rows = tokens.list_access_tokens(ledger, status="expired")
    assert {r.token.token for r in rows} == {
        issued["bob-a"], issued["alice-a"], issued["bob-b"], issued["renewal"]}
    assert {r.token.status for r in rows} == {"active"}
    assert tokens.list_access_tokens(ledger, status="active") == []


def test_tokens_row_view_names_the_consumer_and_hides_secrets(
        deps: Deps, issued: dict[str, str]) -> None:
    row = tokens.token_row(deps.ledger, issued["bob-a"])
    view = row.view()
    assert (view["consumerName"], view["consumerDescription"], view["user"], view["status"]) == (
        "App a", "Consumer A", "bob", "active")
    assert not {"secret", "secret_sealed", "sessionHandle"} & set(view)
    assert row.token.secret_sealed not in str(view)
    consumers.remove_consumer(deps.ledger, "b", META)
    assert tokens.token_row(deps.ledger, issued["bob-b"]).consumer_name == "App b (removed)"
    with pytest.raises(NotFound):
        tokens.token_row(deps.ledger, issued["bob-a"], owner="alice")
    with pytest.raises(NotFound):
        tokens.token_row(deps.ledger, "no-such-token")


def test_tokens_revoke_only_own_token_as_user(deps: Deps, issued: dict[str, str]) -> None:
    # Someone else's token is "not found", never confirmed, and stays active.
    with pytest.raises(NotFound):
        tokens.revoke_token(deps.ledger, issued["bob-a"], by="alice", meta=META, owner="alice")
    assert deps.read_model.get(k.TOKEN, issued["bob-a"]).status == "active"
    state = tokens.revoke_token(deps.ledger, issued["bob-a"], by="bob", meta=META, owner="bob")
    assert state.status == "revoked"
    assert deps.read_model.get(k.TOKEN, issued["bob-a"]).status == "revoked"
    last = deps.store.read_stream(token_stream(issued["bob-a"]))[-1]
    assert last.event.reason == "revoked by the user"
    tokens.revoke_token(deps.ledger, issued["alice-a"], by="root", meta=META)
    last = deps.store.read_stream(token_stream(issued["alice-a"]))[-1]
    assert (last.event.by, last.event.reason) == ("root", "revoked by admin root")
    assert listed(deps, status="active") == {issued["bob-b"], issued["renewal"]}
