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

from oauthledger.events import catalog as ev
from oauthledger.events import keys as k
from oauthledger.events.expiry import sweep_expired
from oauthledger.events.state import (
    ConsumerState,
    TokenState,
    consumer_stream,
    token_stream,
    user_stream,
)
from oauthledger.services import dance
from oauthledger.services.consumers import remove_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.ledger import Change, Ledger
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.users import disable_user, register_user
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


def test_dance_request_token_is_pending_with_derived_secret(deps: Deps) -> None:
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
    # The event names where the secret comes from, not the secret: derived from the
    # token under the active key (events.sealing).
    assert token.secret_sealed == f"d1.{deps.sealer.ring.active}.{issued.token}"
    assert deps.sealer.open(deps.read_model.get(k.TOKEN, issued.token).secret_sealed) \
        == issued.secret


def test_tokens_are_128_bit_identifiers_with_192_bit_secrets(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps, callback_url="https://app.example.com/")
    seen: set[str] = set()
    for _ in range(20):
        issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings,
                                           consumer, "oob", META)
        for value, length in ((issued.token, 22), (issued.secret, 32)):
            assert len(value) == length
            assert value.replace("-", "").replace("_", "").isalnum()
            assert value not in seen
            seen.add(value)


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
    assert problem(dance.exchange, *args, None, META) == "parameter_absent"
    assert deps.store.head() == head  # an absent verifier is not an attempt
    assert problem(dance.exchange, *args, verifier + "x", META) == "token_rejected"
    # A wrong verifier is recorded (the audit sees every attempt) and counted.
    assert [r.type for r in deps.store.read_stream(token_stream(request.token))][-1] == (
        "VerifierRejected")
    state = load(deps, request.token)
    assert (state.status, state.verifier_failures) == ("approved", 1)
    dance.exchange(deps.ledger, deps.sealer, deps.settings, state, verifier, META)


def test_dance_wrong_verifiers_burn_the_request_token(deps: Deps, bob: str) -> None:
    """After MAX_VERIFIER_ATTEMPTS wrong verifiers the request token is withdrawn: even
    the right verifier no longer gets an access token."""
    request, verifier = approved_request_token(deps, hmac_consumer(deps), bob)
    for attempt in range(1, dance.MAX_VERIFIER_ATTEMPTS + 1):
        with pytest.raises(OAuthProblem) as info:
            # A stale state (loaded before the earlier attempts) still counts on top.
            dance.exchange(deps.ledger, deps.sealer, deps.settings,
                           request if attempt == 2 else load(deps, request.token),
                           f"wrong-{attempt}", META)
        assert info.value.problem == "token_rejected"
    assert "withdrawn" in info.value.advice
    burned = load(deps, request.token)
    assert (burned.status, burned.verifier_failures) == (
        "burned", dance.MAX_VERIFIER_ATTEMPTS)
    assert problem(dance.exchange, deps.ledger, deps.sealer, deps.settings, burned, verifier,
                   META) == "token_rejected"
    assert problem(dance.decide, deps.ledger, deps.sealer, burned, bob, True,
                   META) == "token_used"
    assert deps.read_model.get(k.TOKEN, request.token).status == "burned"


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
    consumer = hmac_consumer(deps)
    first = grant(deps, consumer, bob)
    old = load(deps, first.token)
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings, consumer, old,
                   "wrong-handle", META) == "token_rejected"
    renewed = dance.renew(deps.ledger, deps.sealer, deps.settings, consumer, old,
                          first.session_handle, META)
    assert renewed.token != first.token
    new = load(deps, renewed.token)
    assert (new.status, new.user, new.renewed_from) == ("active", bob, first.token)
    # Renewal keeps the authorization's lifetime: it does not extend it.
    assert new.authorization_expires_at == old.authorization_expires_at
    assert load(deps, first.token).status == "renewed"
    assert deps.read_model.get(k.TOKEN, first.token).status == "renewed"
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings, consumer,
                   load(deps, first.token), first.session_handle, META) == "token_used"
    # Past the authorization's lifetime the user must approve again.
    assert problem(dance.renew, later(deps, deps.settings.renewal_ttl + 1), deps.sealer,
                   deps.settings, consumer, new, renewed.session_handle, META) == (
        "token_expired")


def test_dance_revoke(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    issued = grant(deps, consumer, bob)
    state = dance.revoke(deps.ledger, issued.token, "admin", META)
    assert state.status == "revoked"
    assert deps.read_model.get(k.TOKEN, issued.token).status == "revoked"
    head = deps.store.head()
    assert dance.revoke(deps.ledger, issued.token, "admin", META).status == "revoked"
    assert deps.store.head() == head  # revoking a revoked token writes nothing
    assert problem(dance.renew, deps.ledger, deps.sealer, deps.settings, consumer,
                   load(deps, issued.token), issued.session_handle, META) == "token_revoked"
    with pytest.raises(NotFound):
        dance.revoke(deps.ledger, "no-such-token", "admin", META)
    pending = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings,
                                        hmac_consumer(deps, "b"), "oob", META)
    with pytest.raises(NotFound):
        dance.revoke(deps.ledger, pending.token, "admin", META)


def expired_grant(deps: Deps, consumer: ConsumerState, user: str
                  ) -> tuple[dance.IssuedAccessToken, Ledger]:
    """A grant whose access token the sweep has marked expired, and a ledger whose clock
    is past the token's expiry but inside the authorization lifetime (renewable)."""
    issued = grant(deps, consumer, user)
    ahead = deps.settings.access_token_ttl + 1
    assert ahead < deps.settings.renewal_ttl
    result = sweep_expired(deps.store, deps.read_model, now=time.time() + ahead)
    assert result.expired_access >= 1
    assert load(deps, issued.token).status == "expired"
    return issued, later(deps, ahead)


def test_grant_revoking_an_expired_token_ends_its_renewal(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    issued, ledger = expired_grant(deps, consumer, bob)
    state = load(deps, issued.token)
    assert state.renewable_at(ledger.clock()) and state.revocable_at(ledger.clock())
    assert dance.revoke(ledger, issued.token, "bob", META).status == "revoked"
    assert problem(dance.renew, ledger, deps.sealer, deps.settings, consumer,
                   load(deps, issued.token), issued.session_handle, META) == "token_revoked"
    # A grant past its authorization lifetime is over: revoking it records nothing.
    other = grant(deps, consumer, bob)
    head = deps.store.head()
    over = later(deps, deps.settings.renewal_ttl + 1)
    assert dance.revoke(over, other.token, "bob", META).status == "active"
    assert deps.store.head() == head


def test_grant_disabling_the_user_ends_renewal(deps: Deps, bob: str) -> None:
    consumer = hmac_consumer(deps)
    issued, ledger = expired_grant(deps, consumer, bob)
    live = grant(deps, consumer, bob)
    assert disable_user(ledger, bob, META) == 2  # the expired grant counts: it renews
    for token in (issued, live):
        assert problem(dance.renew, ledger, deps.sealer, deps.settings, consumer,
                       load(deps, token.token), token.session_handle, META) == "token_revoked"


def test_grant_renewal_checks_the_user_is_active(deps: Deps, bob: str) -> None:
    """Renewal itself refuses a disabled user's grant, even one a log written before
    disabling revoked renewable grants left unrevoked."""
    consumer = hmac_consumer(deps)
    issued, ledger = expired_grant(deps, consumer, bob)
    user, version = deps.ledger.load(user_stream(bob))
    deps.ledger.commit([Change(user_stream(bob), version, user, [ev.UserDisabled(name=bob)])],
                       META)
    assert load(deps, issued.token).status == "expired"
    assert problem(dance.renew, ledger, deps.sealer, deps.settings, consumer,
                   load(deps, issued.token), issued.session_handle, META) == "token_revoked"


def test_grant_consumer_removal_and_reregistration(deps: Deps, bob: str) -> None:
    """Removing a consumer revokes its expired-but-renewable grants too, and the same key
    registered again is a new consumer: no grant of the old registration renews."""
    consumer = hmac_consumer(deps)
    issued, ledger = expired_grant(deps, consumer, bob)
    assert remove_consumer(ledger, consumer.key, META) == 1
    assert load(deps, issued.token).status == "revoked"
    again = hmac_consumer(deps)  # same key, same secret
    assert again.registered_at > consumer.registered_at
    assert problem(dance.renew, ledger, deps.sealer, deps.settings, again,
                   load(deps, issued.token), issued.session_handle, META) == "token_revoked"
    # Even a grant an older log left unrevoked (removal appended alone) cannot renew.
    old_grant, ledger = expired_grant(deps, again, bob)
    state, version = deps.ledger.load(consumer_stream(again.key))
    deps.ledger.commit([Change(consumer_stream(again.key), version, state,
                               [ev.ConsumerRemoved(key=again.key)])], META)
    third = hmac_consumer(deps)
    assert load(deps, old_grant.token).status == "expired"
    assert problem(dance.renew, ledger, deps.sealer, deps.settings, third,
                   load(deps, old_grant.token), old_grant.session_handle, META) == (
        "token_revoked")
    # A grant of the current registration renews.
    fresh = grant(deps, third, bob)
    dance.renew(deps.ledger, deps.sealer, deps.settings, third, load(deps, fresh.token),
                fresh.session_handle, META)
