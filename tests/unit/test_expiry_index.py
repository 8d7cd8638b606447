"""The expiry index's Python twin checked against its reference definitions and against
the Lua, on the embedded in-process Redis (fakeredis with Lua, the embedded default's
store). tests/integration/test_expiry_index_redis.py runs the Lua checks on the real
server."""

from __future__ import annotations

import math

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthledger.events.expiry_index import (
    BUCKET_LOAD,
    EXPIRY_WINDOW_MS,
    bucket_layout,
    expiry_hours,
    expiry_ms,
    token_hash,
    token_hash_fast,
)
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from tests.expiry_index_checks import (
    check_incremental_index,
    check_lua_address,
    check_lua_hash,
    sample_tokens,
)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    """The embedded store: fakeredis with its Lua interpreter."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def test_fast_hash_equals_the_reference() -> None:
    """The rebuild groups entries by bucket with token_hash_fast: it must be token_hash,
    which the Lua computes too."""
    tokens = sample_tokens(5000)
    assert [token_hash_fast(t) for t in tokens] == [token_hash(t) for t in tokens]


@given(st.text(max_size=40))
def test_fast_hash_equals_the_reference_on_any_text(token: str) -> None:
    assert token_hash_fast(token) == token_hash(token)
    assert 0 <= token_hash(token) < 1 << 20


def test_hash_reads_only_the_last_16_bytes() -> None:
    assert token_hash("prefix-" + "k" * 16) == token_hash("other-" + "k" * 16)
    assert token_hash("") == 0
    assert token_hash("a") == ord("a")
    assert token_hash("ab") == ord("a") * 31 + ord("b")


def test_expiry_hours_is_the_reference_ms_and_hash() -> None:
    tokens = sample_tokens(3000)
    pairs = [(t, 1.8e9 + i * 7.3331) for i, t in enumerate(tokens)]
    want: dict[int, list[object]] = {}
    for token, at in pairs:
        ms = expiry_ms(at)
        want.setdefault(ms // EXPIRY_WINDOW_MS, []).extend((token, ms, token_hash(token)))
    assert expiry_hours(pairs) == want


def test_expiry_ms_rounds_up() -> None:
    assert expiry_ms(1.0) == 1000
    assert expiry_ms(1.0001) == 1001
    assert expiry_ms(1.7e9 + 0.0004) == 1_700_000_000_001


@pytest.mark.parametrize("count", [0, 1, 40, 41, 80, 81, 120, 121, 160, 161, 1000, 5001])
def test_bucket_layout_has_ceil_count_over_load_buckets(count: int) -> None:
    level, split = bucket_layout(count)
    assert 0 <= split < 1 << level
    assert (1 << level) + split == max(1, math.ceil(count / BUCKET_LOAD))


def test_lua_hash_equals_python(client: fakeredis.FakeRedis) -> None:
    check_lua_hash(client, sample_tokens(5000))


def test_lua_address_equals_python(client: fakeredis.FakeRedis) -> None:
    check_lua_address(client)


def test_incremental_lua_index_is_the_python_layout(client: fakeredis.FakeRedis) -> None:
    check_incremental_index(ReadModel(client, KeyLayout("ol-unit")))
