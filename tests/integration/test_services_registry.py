"""Consumers and users as application services, on both stores and real Redis."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oauthledger.events import keys as k
from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.events.state import consumer_stream
from oauthledger.services import consumers as svc
from oauthledger.services import dance
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.ledger import Ledger
from oauthledger.services.users import check_password, disable_user, load_user, register_user

META = {"actor": "admin", "request_id": "r-1"}


@pytest.fixture
def wakes() -> list[int]:
    return []


@pytest.fixture
def ledger(store, read_model, wakes) -> Ledger:
    return Ledger(store, read_model, lambda: wakes.append(1))


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(KeyRing.generate())


def public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_register_with_generated_secret_publishes_state_and_hides_secret(
        ledger, sealer, read_model, wakes):
    state, secret = svc.register_consumer(
        ledger, sealer, "jira:1234", svc.ConsumerInput(name="Jira", generate_secret=True), META)
    assert secret and len(secret) >= 32
    assert state.signature_methods == ("HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512")
    assert sealer.open(state.secret_sealed) == secret
    # Read your writes: the state is in Redis before the call returns, and the
    # projector was woken.
    assert read_model.get(k.CONSUMER, "jira:1234") == state
    assert wakes == [1]
    # The event carries the actor and request id; the secret is sealed in it.
    rec = ledger.store.read_stream(consumer_stream("jira:1234"))[0]
    assert rec.meta["actor"] == "admin" and rec.meta["request_id"] == "r-1"
    assert secret not in rec.data
    assert "sharedSecret" not in svc.consumer_public_view(state)


def test_rsa_consumer_defaults_to_rsa_methods(ledger, sealer):
    state, secret = svc.register_consumer(
        ledger, sealer, "app", svc.ConsumerInput(name="App", public_key=public_pem()), META)
    assert secret is None
    assert state.signature_methods == ("RSA-SHA1", "RSA-SHA256", "RSA-SHA512")


@pytest.mark.parametrize(
    ("key", "data", "field"),
    [
        ("", svc.ConsumerInput(name="x", secret="long-enough"), "key"),
        ("has space", svc.ConsumerInput(name="x", secret="long-enough"), "key"),
        ("k", svc.ConsumerInput(name="", secret="long-enough"), "name"),
        ("k", svc.ConsumerInput(name="x" * 300, secret="long-enough"), "name"),
        ("k", svc.ConsumerInput(name="x", public_key="-----BEGIN PUBLIC KEY-----\nnope\n"),
         "public_key"),
        ("k", svc.ConsumerInput(name="x", secret="long-enough", callback_url="ftp://x/"),
         "callback_url"),
        ("k", svc.ConsumerInput(name="x", secret="long-enough", signature_methods=["MD5"]),
         "signature_methods"),
        ("k", svc.ConsumerInput(name="x", secret="long-enough", signature_methods=["RSA-SHA1"]),
         "public_key"),
        ("k", svc.ConsumerInput(name="x"), "public_key"),
        ("k", svc.ConsumerInput(name="x", secret="short"), "secret"),
        ("k", svc.ConsumerInput(name="x", secret="long-enough", two_legged_user="ghost"),
         "two_legged_user"),
    ],
)
def test_invalid_input_names_the_field_and_writes_nothing(ledger, sealer, key, data, field):
    with pytest.raises(ValidationError) as err:
        svc.register_consumer(ledger, sealer, key, data, META)
    assert field in err.value.fields
    assert ledger.store.head() == 0


def test_duplicate_key_conflicts(ledger, sealer):
    data = svc.ConsumerInput(name="A", secret="long-enough")
    svc.register_consumer(ledger, sealer, "a", data, META)
    with pytest.raises(Conflict):
        svc.register_consumer(ledger, sealer, "a", data, META)


def test_update_changes_fields_never_the_key(ledger, sealer, read_model):
    svc.register_consumer(ledger, sealer, "a", svc.ConsumerInput(name="A", secret="long-enough"),
                          META)
    state, _ = svc.update_consumer(
        ledger, sealer, "a", svc.ConsumerInput(description="new", allow_oauth10=True), META)
    assert (state.key, state.name, state.description, state.allow_oauth10) == (
        "a", "A", "new", True)
    assert read_model.get(k.CONSUMER, "a") == state
    with pytest.raises(NotFound):
        svc.update_consumer(ledger, sealer, "nope", svc.ConsumerInput(name="x"), META)


def _grant(ledger, sealer, settings, consumer, user="bob"):
    issued = dance.issue_request_token(ledger, sealer, settings, consumer, "oob", META)
    token, _ = ledger.load(f"token-{issued.token}")
    verifier = dance.decide(ledger, sealer, token, user, True, META)
    token, _ = ledger.load(f"token-{issued.token}")
    return dance.exchange(ledger, sealer, settings, token, verifier, META)


def test_remove_consumer_revokes_every_token_at_once(ledger, sealer, read_model):
    from oauthledger.events.settings import load_settings

    settings = load_settings({})
    register_user(ledger, "bob", "bob-password", meta=META)
    consumer, _ = svc.register_consumer(
        ledger, sealer, "a", svc.ConsumerInput(name="A", secret="long-enough"), META)
    granted = [_grant(ledger, sealer, settings, consumer) for _ in range(3)]
    assert svc.outstanding_tokens(ledger, ["a"]) == {"a": 3}
    assert svc.remove_consumer(ledger, "a", META) == 3
    for g in granted:
        assert read_model.get(k.TOKEN, g.token).status == "revoked"
    assert svc.list_consumers(ledger) == []
    with pytest.raises(NotFound):
        svc.remove_consumer(ledger, "a", META)


def test_users_passwords_and_disable_revokes(ledger, sealer, read_model):
    from oauthledger.events.settings import load_settings

    settings = load_settings({})
    register_user(ledger, "bob", "bob-password", meta=META)
    with pytest.raises(Conflict):
        register_user(ledger, "bob", "bob-password", meta=META)
    with pytest.raises(ValidationError):
        register_user(ledger, "bad name", "bob-password", meta=META)
    with pytest.raises(ValidationError):
        register_user(ledger, "carol", "short", meta=META)
    bob = load_user(ledger, "bob")
    assert check_password(bob, "bob-password")
    assert not check_password(bob, "wrong-password")
    assert not check_password(None, "bob-password")
    consumer, _ = svc.register_consumer(
        ledger, sealer, "a", svc.ConsumerInput(name="A", secret="long-enough"), META)
    g = _grant(ledger, sealer, settings, consumer)
    assert disable_user(ledger, "bob", META) == 1
    assert read_model.get(k.TOKEN, g.token).status == "revoked"
    assert not check_password(load_user(ledger, "bob"), "bob-password")
