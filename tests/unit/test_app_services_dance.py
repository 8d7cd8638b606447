"""The three-legged dance as application services (RFC 5849 §2, with Atlassian's session
extension for renewal): issue a request token, approve or deny, exchange with the
verifier, renew with the session handle, revoke.

Shared by both tiers: ``deps`` is the embedded Deps (SQLite + in-process Redis) in
tests/unit/conftest.py, and the real-server Deps in
tests/integration/test_app_services_servers.py, which runs these same functions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from oauthledger.events import keys as k
from oauthledger.events.state import TokenState, token_stream
from oauthledger.services import dance
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.ledger import Ledger
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.users import register_user
from tests.support import META, approved_request_token, grant, hmac_consumer


@pytest.fixture
def bob(deps: Deps) -> str:
    """A user to approve tokens (no password: signing in is not under test here)."""
    register_user(deps.ledger, "bob", None, meta=META)
    return "bob"


def load(deps: Deps, token: str) -> TokenState:
    state, _ = deps.ledger.load(token_stream(token))
    return state


def problem(fn: Callable[..., object], *args: object) -> str:
    """The OAuth problem ``fn(*args)`` raises."""
    with pytest.raises(OAuthProblem) as info:
        fn(*args)
    return info.value.problem


def later(deps: Deps, seconds: float) -> Ledger:
    """The same ledger with its clock ``seconds`` ahead (the services decide on it)."""
    now = time.time() + seconds
    return dataclasses.replace(deps.ledger, clock=lambda: now)


def test_dance_request_token_is_pending_with_sealed_secret(deps: Deps) -> None:
    consumer = hmac_consumer(deps, callback_url="https://app.example.com/")
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "https://app.example.com/cb", META)
    assert issued.callback_confirmed
    token = load(deps, issued.token)
    assert (token.kind, token.status, token.consumer_key) == ("request", "pending", "app")
    assert token.callback == "https://app.example.com/cb"
    assert deps.sealer.open(token.secret_sealed) == issued.secret
    assert token.expires_at == pytest.approx(time.time() + deps.settings.request_token_ttl, abs=5)
    assert issued.secret not in deps.store.read_stream(token_stream(issued.token))[0].data
    assert deps.read_model.get(k.TOKEN, issued.token).status == "pending"


def test_dance_request_token_refusals(deps: Deps) -> None:
    consumer = hmac_consumer(deps, callback_url="https://app.example.com/")
    issue = dance.issue_request_token
    args = (deps.ledger, deps.sealer, deps.settings, consumer)
    # OAuth 1.0a needs a callback unless the consumer is flagged for OAuth 1.0.
    assert problem(issue, *args, None, META) == "parameter_absent"
    assert problem(issue, *args, "ftp://app.example.com/cb", META) == "parameter_rejected"
    # Another origin than the registered callback's.
    assert problem(issue, *args, "https://evil.example.com/cb", META) == "parameter_rejected"
    two_legged_only = hmac_consumer(deps, "svc", three_legged=False)
    assert problem(issue, deps.ledger, deps.sealer, deps.settings, two_legged_only, "oob",
                   META) == "permission_denied"
    assert deps.store.head() == 2  # the two registrations only
    oauth10 = hmac_consumer(deps, "old", allow_oauth10=True)
    assert not issue(deps.ledger, deps.sealer, deps.settings, oauth10, None,
                     META).callback_confirmed


def test_dance_approve_then_exchange_with_verifier(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    request, verifier = approved_request_token(deps, consumer, bob)
    assert verifier and request.status == "approved" and request.user == bob
    assert deps.sealer.open(request.verifier_sealed) == verifier
    assert problem(dance.decide, deps.ledger, deps.sealer, request, bob, True,
                   META) == "token_used"
    issued = dance.exchange(deps.ledger, deps.sealer, deps.settings, request, verifier, META)
    access = load(deps, issued.token)
    assert (access.kind, access.status, access.user, access.consumer_key) == (
        "access", "active", bob, "app")
    assert deps.sealer.open(access.secret_sealed) == issued.secret
    assert access.session_handle_hash == dance.handle_hash(issued.session_handle)
    assert issued.expires_in == pytest.approx(deps.settings.access_token_ttl, abs=5)
    assert issued.authorization_expires_in == pytest.approx(deps.settings.renewal_ttl, abs=5)
    assert load(deps, request.token).status == "exchanged"
    assert deps.read_model.get(k.TOKEN, issued.token).status == "active"
    # A request token is good for one exchange.
    assert problem(dance.exchange, deps.ledger, deps.sealer, deps.settings,
                   load(deps, request.token), verifier, META) == "token_used"


def test_dance_exchange_refuses_wrong_or_missing_verifier(deps: Deps, bob: str) -> None:
    request, verifier = approved_request_token(deps, hmac_consumer(deps), bob)
    head = deps.store.head()
    args = (deps.ledger, deps.sealer, deps.settings, request)
    assert problem(dance.exchange, *args, verifier + "x", META) == "token_rejected"
    assert problem(dance.exchange, *args, None, META) == "parameter_absent"
    assert deps.store.head() == head
    assert load(deps, request.token).status == "approved"
    dance.exchange(*args, verifier, META)


def test_dance_deny_and_unapproved_tokens_are_not_exchanged(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    pending = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                        "oob", META)
    assert problem(dance.exchange, deps.ledger, deps.sealer, deps.settings,
                   load(deps, pending.token), "v", META) == "permission_unknown"
    assert dance.decide(deps.ledger, deps.sealer, load(deps, pending.token), bob, False,
                        META) is None
    denied = load(deps, pending.token)
    assert denied.status == "denied"
    assert problem(dance.exchange, deps.ledger, deps.sealer, deps.settings, denied, "v",
                   META) == "permission_denied"
    assert problem(dance.decide, deps.ledger, deps.sealer, denied, bob, True,
                   META) == "token_used"


def test_dance_request_token_expires(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "oob", META)
    ttl = deps.settings.request_token_ttl
    token = load(deps, issued.token)
    assert problem(dance.decide, later(deps, ttl + 1), deps.sealer, token, bob, True,
                   META) == "token_expired"
    request, verifier = approved_request_token(deps, consumer, bob)
    assert problem(dance.exchange, later(deps, ttl + 1), deps.sealer, deps.settings, request,
                   verifier, META) == "token_expired"


def test_dance_renew_with_session_handle(deps: Deps, bob: str) -> None:
    first = grant(deps, hmac_consumer(deps), bob)
    old = load(deps, first.token)
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings, old, "wrong-handle",
                   META) == "token_rejected"
    renewed = dance.renew(deps.ledger, deps.sealer, deps.settings, old, first.session_handle,
                          META)
    assert renewed.token != first.token
    new = load(deps, renewed.token)
    assert (new.status, new.user, new.renewed_from) == ("active", bob, first.token)
    # Renewal keeps the authorization's lifetime: it does not extend it.
    assert new.authorization_expires_at == old.authorization_expires_at
    assert load(deps, first.token).status == "renewed"
    assert deps.read_model.get(k.TOKEN, first.token).status == "renewed"
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings,
                   load(deps, first.token), first.session_handle, META) == "token_used"
    # Past the authorization's lifetime the user must approve again.
    assert problem(dance.renew, later(deps, deps.settings.renewal_ttl + 1), deps.sealer,
                   deps.settings, new, renewed.session_handle, META) == "token_expired"


def test_dance_revoke(deps: Deps, bob: str) -> None:
    issued = grant(deps, hmac_consumer(deps), bob)
    state = dance.revoke(deps.ledger, issued.token, "admin", META)
    assert state.status == "revoked"
    assert deps.read_model.get(k.TOKEN, issued.token).status == "revoked"
    head = deps.store.head()
    assert dance.revoke(deps.ledger, issued.token, "admin", META).status == "revoked"
    assert deps.store.head() == head  # revoking a revoked token writes nothing
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings,
                   load(deps, issued.token), issued.session_handle, META) == "token_revoked"
    with pytest.raises(NotFound):
        dance.revoke(deps.ledger, "no-such-token", "admin", META)
    pending = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings,
                                        hmac_consumer(deps, "b"), "oob", META)
    with pytest.raises(NotFound):
        dance.revoke(deps.ledger, pending.token, "admin", META)
