"""`oauthledger keys rotate` while real gunicorn front ends run: no restart needed.

Front end A seals the next token secret with the new key; front end B, which has not
sealed anything since the rotation, opens it (docs/cli.md, "keys"). Tokens sealed under
the old key keep working on both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oauthledger.events.sealing import Sealer
from tests.e2e import servers as s
from tests.e2e.test_dance_python import dance, myself_on


@pytest.fixture(scope="module")
def rotation_stack() -> Iterator[s.Stack]:
    # Its own deployment: rotating the shared stack's key file would change what other
    # modules' tests see.
    stack = s.make_stack(servers=2, worker=False)
    yield stack
    stack.close()


def issued_key_ids(stack: s.Stack) -> dict[str, str]:
    """Access token -> the key id its secret is sealed under, from the event log."""
    return {rec.event.token: Sealer.key_id(rec.event.secret_sealed)
            for rec in stack.deps().store.read_all(0) if rec.type == "AccessTokenIssued"}


def test_running_front_ends_follow_a_key_rotation(rotation_stack: s.Stack,
                                                  rsa: s.RsaPair) -> None:
    stack = rotation_stack
    consumer = s.add_consumer(stack, rsa, methods=("HMAC-SHA1",))
    user = s.add_user(stack)
    _, before = dance(stack, "requests-oauthlib", consumer, "HMAC-SHA1", user)
    old_kid = issued_key_ids(stack)[before["oauth_token"]]

    new_kid = stack.cli("keys", "rotate").stdout.strip()
    assert new_kid and new_kid != old_kid

    # Front end A (the dance's) seals the new token's secret with the new key ...
    _, after = dance(stack, "requests-oauthlib", consumer, "HMAC-SHA1", user)
    assert issued_key_ids(stack)[after["oauth_token"]] == new_kid
    # ... and both front ends accept both tokens: B opens a secret under a key it had
    # not loaded, and the old key still opens the older secret.
    for server in stack.servers:
        for access in (before, after):
            reply = myself_on(server, "requests-oauthlib", consumer, "HMAC-SHA1", access)
            assert reply.status_code == 200, (server.url, reply.text)
            assert reply.json()["name"] == user
