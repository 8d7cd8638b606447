"""Helpers only tests use: building consumers, users and granted tokens through the
application services, and reading state back the way a test wants to look at it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oauthledger.events.state import ConsumerState, TokenState, UserState, token_stream, user_stream
from oauthledger.services import consumers, dance
from oauthledger.services.deps import Deps
from oauthledger.services.ledger import Ledger

META = {"actor": "admin", "request_id": "r-1"}
CONSUMER_SECRET = "consumer-secret"
PASSWORD = "bob-password"


def load_user(ledger: Ledger, name: str) -> UserState | None:
    """The user's state folded from the store, or None."""
    state, _ = ledger.load(user_stream(name))
    return state


def public_pem() -> str:
    """A fresh RSA public key in PEM, as an Atlassian application sends it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def hmac_consumer(deps: Deps, key: str = "app", **fields: Any) -> ConsumerState:
    """Register an HMAC consumer with :data:`CONSUMER_SECRET` through the service."""
    fields.setdefault("name", f"App {key}")
    fields.setdefault("secret", CONSUMER_SECRET)
    state, _ = consumers.register_consumer(
        deps.ledger, deps.sealer, key, consumers.ConsumerInput(**fields), META)
    return state


def approved_request_token(deps: Deps, consumer: ConsumerState, user: str,
                           callback: str | None = "oob") -> tuple[TokenState, str | None]:
    """Issue a request token and approve it as ``user``: (its state, the verifier)."""
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       callback, META)
    token, _ = deps.ledger.load(token_stream(issued.token))
    verifier = dance.decide(deps.ledger, deps.sealer, token, user, True, META)
    token, _ = deps.ledger.load(token_stream(issued.token))
    return token, verifier


def grant(deps: Deps, consumer: ConsumerState, user: str = "bob") -> dance.IssuedAccessToken:
    """Run the whole dance through the services and return the access token issued."""
    token, verifier = approved_request_token(deps, consumer, user)
    return dance.exchange(deps.ledger, deps.sealer, deps.settings, token, verifier, META)


def true_in_a_forked_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a child made by ``os.fork`` (as gunicorn makes its workers) and
    return what it answered; an exception in the child counts as False. The child never
    returns into pytest."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        answer = b"0"
        try:
            answer = b"1" if check() else b"0"
        finally:
            os.write(write, answer)
            os._exit(0)
    os.close(write)
    try:
        os.waitpid(pid, 0)
        return os.read(read, 1) == b"1"
    finally:
        os.close(read)
