"""The consumer registry as an application service: register, list, update, remove.

Shared by both tiers: ``deps`` is the embedded Deps (SQLite + in-process Redis) in
tests/unit/conftest.py, and the real-server Deps in
tests/integration/test_app_services_servers.py, which runs these same functions."""

from __future__ import annotations

import pytest

from oauthledger.events import keys as k
from oauthledger.events.state import consumer_stream
from oauthledger.services import consumers as svc
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.users import register_user
from tests.support import META, grant, hmac_consumer, public_pem


def test_consumer_register_generated_secret_sealed_published_and_hidden(
        deps: Deps, wakes: list[int]) -> None:
    state, secret = svc.register_consumer(
        deps.ledger, deps.sealer, "jira:1234",
        svc.ConsumerInput(name="Jira", generate_secret=True), META)
    assert secret and len(secret) >= 32
    assert state.signature_methods == ("HMAC-SHA1", "HMAC-SHA256", "HMAC-SHA512")
    assert deps.sealer.open(state.secret_sealed) == secret
    # Read your writes: the state is in Redis before the call returns, and the
    # projector was woken.
    assert deps.read_model.get(k.CONSUMER, "jira:1234") == state
    assert wakes == [1]
    # The event carries the actor and request id; the secret is sealed in it.
    rec = deps.store.read_stream(consumer_stream("jira:1234"))[0]
    assert rec.meta["actor"] == "admin" and rec.meta["request_id"] == "r-1"
    assert secret not in rec.data
    assert "sharedSecret" not in svc.consumer_public_view(state)
    assert svc.consumer_public_view(state)["hasSharedSecret"] is True


def test_consumer_given_secret_is_sealed_never_stored_plain(deps: Deps) -> None:
    state, generated = svc.register_consumer(
        deps.ledger, deps.sealer, "a", svc.ConsumerInput(name="A", secret="given-secret"), META)
    assert generated is None
    assert deps.sealer.open(state.secret_sealed) == "given-secret"
    assert "given-secret" not in deps.store.read_stream(consumer_stream("a"))[0].data


def test_consumer_rsa_defaults_to_rsa_methods(deps: Deps) -> None:
    state, secret = svc.register_consumer(
        deps.ledger, deps.sealer, "app", svc.ConsumerInput(name="App", public_key=public_pem()),
        META)
    assert secret is None
    assert state.secret_sealed is None
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
def test_consumer_invalid_input_names_the_field_and_writes_nothing(
        deps: Deps, key: str, data: svc.ConsumerInput, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        svc.register_consumer(deps.ledger, deps.sealer, key, data, META)
    assert field in err.value.fields
    assert deps.store.head() == 0


def test_consumer_duplicate_key_conflicts(deps: Deps) -> None:
    hmac_consumer(deps, "a")
    with pytest.raises(Conflict):
        hmac_consumer(deps, "a")
    assert len(deps.store.read_stream(consumer_stream("a"))) == 1


def test_consumer_list_sorted_by_key_without_removed(deps: Deps) -> None:
    assert svc.list_consumers(deps.ledger) == []
    for key in ("b", "c", "a"):
        hmac_consumer(deps, key)
    svc.remove_consumer(deps.ledger, "c", META)
    assert [c.key for c in svc.list_consumers(deps.ledger)] == ["a", "b"]
    assert svc.load_consumer(deps.ledger, "a").name == "App a"
    with pytest.raises(NotFound):
        svc.load_consumer(deps.ledger, "c")


def test_consumer_update_changes_fields_never_the_key(deps: Deps) -> None:
    hmac_consumer(deps, "a", name="A")
    state, _ = svc.update_consumer(
        deps.ledger, deps.sealer, "a", svc.ConsumerInput(description="new", allow_oauth10=True),
        META)
    assert (state.key, state.name, state.description, state.allow_oauth10) == (
        "a", "A", "new", True)
    assert deps.read_model.get(k.CONSUMER, "a") == state
    # Nothing to change: no event.
    again, _ = svc.update_consumer(deps.ledger, deps.sealer, "a",
                                   svc.ConsumerInput(description="new"), META)
    assert again == state
    assert len(deps.store.read_stream(consumer_stream("a"))) == 2
    with pytest.raises(NotFound):
        svc.update_consumer(deps.ledger, deps.sealer, "nope", svc.ConsumerInput(name="x"), META)


def test_consumer_update_rotates_secret_sealed_and_refuses_bad_fields(deps: Deps) -> None:
    hmac_consumer(deps, "a")
    state, generated = svc.update_consumer(
        deps.ledger, deps.sealer, "a", svc.ConsumerInput(generate_secret=True), META)
    assert generated and deps.sealer.open(state.secret_sealed) == generated
    last = deps.store.read_stream(consumer_stream("a"))[-1]
    assert generated not in last.data
    history = svc.consumer_history(deps.ledger, "a")
    assert [h["summary"] for h in history] == ["changed secret_sealed", "registered as 'App a'"]
    with pytest.raises(ValidationError) as err:
        svc.update_consumer(deps.ledger, deps.sealer, "a",
                            svc.ConsumerInput(name="", secret="short"), META)
    assert set(err.value.fields) == {"name", "secret"}
    assert len(deps.store.read_stream(consumer_stream("a"))) == 2


def test_consumer_remove_revokes_every_token_at_once(deps: Deps) -> None:
    register_user(deps.ledger, "bob", None, meta=META)
    consumer = hmac_consumer(deps, "a")
    granted = [grant(deps, consumer) for _ in range(3)]
    assert svc.outstanding_tokens(deps.ledger, ["a"]) == {"a": 3}
    assert svc.remove_consumer(deps.ledger, "a", META) == 3
    for g in granted:
        assert deps.read_model.get(k.TOKEN, g.token).status == "revoked"
    assert svc.outstanding_tokens(deps.ledger, ["a"]) == {"a": 0}
    assert svc.list_consumers(deps.ledger) == []
    assert deps.read_model.get(k.CONSUMER, "a").removed
    with pytest.raises(NotFound):
        svc.remove_consumer(deps.ledger, "a", META)
