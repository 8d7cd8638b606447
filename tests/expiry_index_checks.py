"""Checks that the expiry index's Lua and its Python twin
(:mod:`oauthledger.events.expiry_index`) agree, run on any redis-py client: the embedded
fakeredis with Lua (tests/unit/test_expiry_index.py) and the real Redis server
(tests/integration/test_expiry_index_redis.py)."""

from __future__ import annotations

import random

import redis

from oauthledger.events.expiry_index import (
    EXPIRY_WINDOW_MS,
    INDEX_LUA,
    bucket_address,
    bucket_layout,
    expiry_ms,
    token_hash,
)
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import TokenState

# Tokens the hash must agree on: random ones of the real shape, and the awkward ones
# (empty, shorter than the 16 hashed bytes, multi-byte UTF-8 straddling the cut).
EDGE_TOKENS = ["", "a", "x" * 15, "y" * 16, "z" * 17, "ü" * 20, "é" + "z" * 15,
               "\u20ac" * 9, "\U0001f600" * 5, "tok-\x00\x01\x7f\xff", "0" * 64]


def sample_tokens(n: int, seed: int = 5849) -> list[str]:
    """``n`` tokens like the real ones (32 characters of base64url), then the edge cases."""
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return ["".join(rng.choice(alphabet) for _ in range(32)) for _ in range(n)] + EDGE_TOKENS


_LUA_HASHES = INDEX_LUA + """
local out = {}
for i = 1, #ARGV do out[i] = thash(ARGV[i]) end
return out
"""
_LUA_ADDRESSES = INDEX_LUA + """
local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = address(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
end
return out
"""


def check_lua_hash(client: redis.Redis, tokens: list[str]) -> None:
    """``thash`` in the Lua equals :func:`token_hash` on every token."""
    for at in range(0, len(tokens), 2000):
        part = tokens[at:at + 2000]
        lua = [int(h) for h in client.eval(_LUA_HASHES, 0, *part)]
        assert lua == [token_hash(t) for t in part], "Lua thash differs from token_hash"


def check_lua_address(client: redis.Redis, cases: int = 3000, seed: int = 1980) -> None:
    """``address`` in the Lua equals :func:`bucket_address` for random (hash, level,
    split pointer) with ``split < 2^level``, as the index keeps them."""
    rng = random.Random(seed)
    triples: list[tuple[int, int, int]] = []
    for _ in range(cases):
        level = rng.randrange(0, 12)
        triples.append((rng.randrange(1 << 20), level, rng.randrange(1 << level)))
    flat = [str(x) for triple in triples for x in triple]
    lua = [int(a) for a in client.eval(_LUA_ADDRESSES, 0, *flat)]
    assert lua == [bucket_address(*t) for t in triples]


def access_token(token: str, expires_at: float, status: str = "active",
                 version: int = 1) -> TokenState:
    """An access token state as the read model indexes it."""
    return TokenState(token=token, kind="access", consumer_key="c", secret_sealed="s",
                      status=status, expires_at=expires_at, issued_at=0.0, user="u",
                      version=version)


def check_index_layout(read_model: ReadModel, expected: dict[str, float]) -> None:
    """The index of ``read_model``'s live namespace, as the Lua left it, is what the
    Python twin computes for the access tokens ``expected`` (token -> expires_at): each
    hour's (level, split pointer) is :func:`bucket_layout` of its count (additions only
    split, in the order :func:`bucket_layout` assumes), each token sits in the bucket
    :func:`bucket_address` names with the score :func:`expiry_ms` gives."""
    client, ns = read_model.redis, read_model.namespace()
    ms = {token: expiry_ms(at) for token, at in expected.items()}
    hours: dict[int, list[str]] = {}
    for token, value in ms.items():
        hours.setdefault(value // EXPIRY_WINDOW_MS, []).append(token)
    state = {int(h): v.decode() for h, v in client.hgetall(KeyLayout.expiry(ns)).items()}
    assert sorted(state) == sorted(hours)
    for hour, tokens in hours.items():
        level, split, count = (int(x) for x in state[hour].split())
        assert count == len(tokens)
        assert (level, split) == bucket_layout(count)
        placed: dict[int, set[str]] = {}
        for token in tokens:
            placed.setdefault(bucket_address(token_hash(token), level, split), set()).add(token)
        for address in range(0, (1 << level) + split):
            key = KeyLayout.expiry_bucket(ns, hour, address)
            members = {m.decode(): int(s) for m, s in client.zrange(key, 0, -1,
                                                                   withscores=True)}
            assert set(members) == placed.get(address, set()), (hour, address)
            for token, score in members.items():
                assert score == ms[token] - hour * EXPIRY_WINDOW_MS
        # Nothing beyond the hour's last bucket.
        assert not client.exists(KeyLayout.expiry_bucket(ns, hour, (1 << level) + split))
    assert read_model.expiry_index() == sorted(ms.items())


def check_incremental_index(read_model: ReadModel, count: int = 1500) -> None:
    """Index ``count`` access tokens one apply at a time through the read model's apply
    script (``index_add`` in the Lua splitting buckets as it goes), spread over a few
    hours, then take a third of them out (``index_rem``); after each phase the index is
    what the Python twin computes."""
    base = 1_800_000_000.0
    tokens = sample_tokens(count, seed=count)[:count]
    # Most tokens in one hour (many splits), some in two others, odd fractions of a ms.
    expires = {t: base + (i % 3 == 0) * 3600 * (1 + i % 2) + (i * 1.2345) % 3500
               for i, t in enumerate(tokens)}
    for token, at in expires.items():
        assert read_model.apply([access_token(token, at)]) == 1
    check_index_layout(read_model, expires)
    gone = tokens[::3]
    # Revoked (a newer version): the apply script takes the token out of its bucket.
    read_model.apply([access_token(t, expires[t], "revoked", 2) for t in gone])
    for token in gone:
        del expires[token]
    # Removal never merges buckets: the layout stays that of the count before.
    client, ns = read_model.redis, read_model.namespace()
    state = {int(h): v.decode().split() for h, v in client.hgetall(KeyLayout.expiry(ns)).items()}
    remaining: dict[int, int] = {}
    for at in expires.values():
        hour = expiry_ms(at) // EXPIRY_WINDOW_MS
        remaining[hour] = remaining.get(hour, 0) + 1
    for hour, (level, split, n) in state.items():
        assert int(n) == remaining[hour]
        for token, at in expires.items():
            if expiry_ms(at) // EXPIRY_WINDOW_MS == hour:
                key = KeyLayout.expiry_bucket(
                    ns, hour, bucket_address(token_hash(token), int(level), int(split)))
                assert client.zscore(key, token) is not None
    assert read_model.expiry_index() == sorted((t, expiry_ms(a)) for t, a in expires.items())
