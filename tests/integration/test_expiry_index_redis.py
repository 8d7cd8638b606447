"""The expiry index's Lua against its Python twin on the real Redis server (the unit
tier runs the same checks on the embedded fakeredis): the hash, the bucket address, and
the layout ``index_add`` reaches by splitting, on many tokens."""

from __future__ import annotations

import redis

from oauthledger.events.readmodel import ReadModel
from tests.expiry_index_checks import (
    check_incremental_index,
    check_lua_address,
    check_lua_hash,
    sample_tokens,
)


def test_lua_hash_equals_python(redis_client: redis.Redis) -> None:
    check_lua_hash(redis_client, sample_tokens(20000))


def test_lua_address_equals_python(redis_client: redis.Redis) -> None:
    check_lua_address(redis_client, cases=20000)


def test_incremental_lua_index_is_the_python_layout(read_model: ReadModel) -> None:
    check_incremental_index(read_model, count=3000)
