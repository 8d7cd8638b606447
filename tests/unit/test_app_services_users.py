"""User accounts as an application service: add, change password, disable.

Shared by both tiers: ``deps`` is the embedded Deps (SQLite + in-process Redis) in
tests/unit/conftest.py, and the real-server Deps in
tests/integration/test_app_services_servers.py, which runs these same functions."""

from __future__ import annotations

import pytest

from oauthledger.events import keys as k
from oauthledger.events.state import user_stream
from oauthledger.services import dance
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.users import (
    change_password,
    check_password,
    disable_user,
    register_user,
    user_access_tokens,
)
from tests.support import META, PASSWORD, grant, hmac_consumer, load_user


def test_user_add_hashes_the_password_and_refuses_bad_input(deps: Deps) -> None:
    state = register_user(deps.ledger, "bob", PASSWORD, display_name="Bob B.", meta=META)
    assert (state.name, state.display_name, state.admin, state.disabled) == (
        "bob", "Bob B.", False, False)
    assert PASSWORD not in deps.store.read_stream(user_stream("bob"))[0].data
    assert state.password_hash is not None and state.password_hash.startswith("$argon2id$")
    assert register_user(deps.ledger, "root", None, admin=True, meta=META).admin
    with pytest.raises(Conflict):
        register_user(deps.ledger, "bob", PASSWORD, meta=META)
    for name, password, field in [("bad name", PASSWORD, "name"), ("", PASSWORD, "name"),
                                  ("carol", "short", "password"),
                                  ("carol", "x" * 1025, "password")]:
        with pytest.raises(ValidationError) as err:
            register_user(deps.ledger, name, password, meta=META)
        assert field in err.value.fields
    assert load_user(deps.ledger, "carol") is None


def test_user_check_password(deps: Deps) -> None:
    register_user(deps.ledger, "bob", PASSWORD, meta=META)
    register_user(deps.ledger, "nopass", None, meta=META)
    bob = load_user(deps.ledger, "bob")
    assert check_password(bob, PASSWORD)
    assert not check_password(bob, "wrong-password")
    assert not check_password(None, PASSWORD)
    # A user without a password (signs in through SSO only) never matches.
    assert not check_password(load_user(deps.ledger, "nopass"), "")


def test_user_passwd_replaces_the_password(deps: Deps) -> None:
    register_user(deps.ledger, "bob", PASSWORD, meta=META)
    change_password(deps.ledger, "bob", "new-password", META)
    bob = load_user(deps.ledger, "bob")
    assert check_password(bob, "new-password")
    assert not check_password(bob, PASSWORD)
    with pytest.raises(ValidationError):
        change_password(deps.ledger, "bob", "short", META)
    with pytest.raises(NotFound):
        change_password(deps.ledger, "ghost", "new-password", META)


def test_user_disable_revokes_active_tokens_and_refuses_login(deps: Deps) -> None:
    register_user(deps.ledger, "bob", PASSWORD, meta=META)
    register_user(deps.ledger, "alice", None, meta=META)
    consumer = hmac_consumer(deps, "a")
    bobs = [grant(deps, consumer, "bob") for _ in range(3)]
    alices = grant(deps, consumer, "alice")
    # One of bob's tokens is already revoked: disabling does not count it again.
    dance.revoke(deps.ledger, bobs[0].token, "bob", META)
    assert {t.token for t in user_access_tokens(deps.ledger, "bob")} == {b.token for b in bobs}
    assert disable_user(deps.ledger, "bob", META) == 2
    for b in bobs:
        assert deps.read_model.get(k.TOKEN, b.token).status == "revoked"
    assert deps.read_model.get(k.TOKEN, alices.token).status == "active"
    bob = load_user(deps.ledger, "bob")
    assert bob.disabled
    assert not check_password(bob, PASSWORD)
    with pytest.raises(NotFound):
        disable_user(deps.ledger, "ghost", META)
