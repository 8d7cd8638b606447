"""The access-token expiry index: its Lua (what the read model's scripts run in Redis)
and its Python twin (what the rebuild and the tests compute), side by side.

The index is what the expiry sweep reads. Instead of one global sorted set (skiplist
encoding, ~146 bytes per member) it is many small sorted sets in listpack encoding (~40
bytes per member), one per expiry hour and hash bucket (key names: KeyLayout.expiry and
KeyLayout.expiry_bucket in :mod:`oauthledger.events.keys`):

  <ns>:x:<hour>:<bucket>  member token, score = ms after the hour's start (rounded up)
  <ns>:expiry             field <hour> -> "<level> <split pointer> <count>"

Within an hour, tokens are spread by linear hashing (Litwin 1980): bucket = hash mod
2^level, or hash mod 2^(level+1) for buckets below the split pointer. When the hour holds
more than BUCKET_LOAD tokens per bucket on average, the bucket at the split pointer is
split in two (one bucket's worth of work, never the whole hour), so buckets stay around
BUCKET_LOAD..2*BUCKET_LOAD members, under zset-max-listpack-entries (default 128), and
keep the compact encoding. Members must stay under zset-max-listpack-value (64 bytes):
tokens are 22 characters (32 if issued by an earlier version). docs/read-model.md
("Expiry index") has the figures.

Each Lua definition has its Python twin here: ``thash`` is :func:`token_hash`,
``address`` is :func:`bucket_address`, the hour and score of ``index_add`` are
:func:`expiry_ms` split by :data:`EXPIRY_WINDOW_MS`, and the layout the splits reach
for a count is :func:`bucket_layout`. tests/unit/test_expiry_index.py and
tests/integration/test_expiry_index_redis.py check each pair against each other.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any

import redis

from oauthledger.events.keys import KeyLayout

EXPIRY_WINDOW_MS = 3_600_000  # one expiry hour
BUCKET_LOAD = 40  # tokens per bucket (on average) before the hour splits a bucket
_HASH_MOD = 1 << 20  # the hash is 20 bits

# The functions that maintain the index, prepended to every script that writes or reads
# it (the read model's apply and due scripts, the rebuild's bulk index load).
INDEX_LUA = """
local W = EXPIRY_WINDOW_MS
local LOAD = BUCKET_LOAD
-- The token's hash (its last 16 bytes at most: tokens are random; cheap in Lua):
-- events.expiry_index.token_hash computes the same in Python.
local function thash(s)
  local h = 0
  for i = math.max(1, #s - 15), #s do h = (h * 31 + string.byte(s, i)) % 1048576 end
  return h
end
local function fmt(n) return string.format('%d', n) end
-- KeyLayout.expiry_bucket: <ns>:x:<hour>:<bucket>
local function bucket(ns, w, a) return ns .. ':x:' .. fmt(w) .. ':' .. fmt(a) end
-- events.expiry_index.bucket_address
local function address(h, level, p)
  local a = h % (2 ^ level)
  if a < p then a = h % (2 ^ (level + 1)) end
  return a
end
local function window_state(idx, w)
  local v = redis.call('HGET', idx, fmt(w))
  if not v then return 0, 0, 0 end
  local l, p, c = string.match(v, '^(%d+) (%d+) (%d+)$')
  return tonumber(l), tonumber(p), tonumber(c)
end
local function save_state(idx, w, l, p, c)
  if c <= 0 then redis.call('HDEL', idx, fmt(w))
  else redis.call('HSET', idx, fmt(w), fmt(l) .. ' ' .. fmt(p) .. ' ' .. fmt(c)) end
end
-- Index access token `id` expiring at `ms` (integer milliseconds, rounded up).
local function index_add(ns, id, ms)
  local idx = ns .. ':expiry'
  local w = math.floor(ms / W)
  local l, p, c = window_state(idx, w)
  c = c + redis.call('ZADD', bucket(ns, w, address(thash(id), l, p)), fmt(ms - w * W), id)
  if c > LOAD * (2 ^ l + p) then
    local old = bucket(ns, w, p)
    local rows = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
    local moved, gone = {}, {}
    for j = 1, #rows, 2 do
      if thash(rows[j]) % (2 ^ (l + 1)) ~= p then
        moved[#moved + 1] = rows[j + 1]; moved[#moved + 1] = rows[j]
        gone[#gone + 1] = rows[j]
      end
    end
    if #gone > 0 then
      redis.call('ZADD', bucket(ns, w, p + 2 ^ l), unpack(moved))
      redis.call('ZREM', old, unpack(gone))
    end
    p = p + 1
    if p >= 2 ^ l then l = l + 1; p = 0 end
  end
  save_state(idx, w, l, p, c)
end
local function index_rem(ns, id, ms)
  local idx = ns .. ':expiry'
  local w = math.floor(ms / W)
  local l, p, c = window_state(idx, w)
  if c == 0 then return end
  if redis.call('ZREM', bucket(ns, w, address(thash(id), l, p)), id) == 1 then
    save_state(idx, w, l, p, c - 1)
  end
end
""".replace("EXPIRY_WINDOW_MS", str(EXPIRY_WINDOW_MS)).replace("BUCKET_LOAD", str(BUCKET_LOAD))

# The due query (ReadModel.due_tokens).
DUE_LUA = INDEX_LUA + """
-- ARGV: namespace, now (integer ms, rounded down), limit.
-- Access tokens whose indexed expiry is <= now, earliest hours first, as a flat list of
-- token, absolute ms.
local ns, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local idx = ns .. ':expiry'
local noww = math.floor(now / W)
local flat = redis.call('HGETALL', idx)
local hours = {}
for j = 1, #flat, 2 do
  local w = tonumber(flat[j])
  if w <= noww then hours[#hours + 1] = w end
end
table.sort(hours)
local out = {}
for _, w in ipairs(hours) do
  if #out >= 2 * limit then break end
  local l, p = window_state(idx, w)
  local hi = '+inf'
  if w == noww then hi = fmt(now - w * W) end
  for a = 0, 2 ^ l + p - 1 do
    if #out >= 2 * limit then break end
    local rows = redis.call('ZRANGEBYSCORE', bucket(ns, w, a), '-inf', hi, 'WITHSCORES',
                            'LIMIT', 0, fmt(limit - #out / 2))
    for r = 1, #rows, 2 do
      out[#out + 1] = rows[r]
      out[#out + 1] = fmt(w * W + tonumber(rows[r + 1]))
    end
  end
end
return out
"""


# -- the Python twin -------------------------------------------------------------------------


def expiry_ms(expires_at: float) -> int:
    """An expiry time in whole milliseconds, rounded up, as the index holds it: an
    indexed token is never reported due before its expiry time. Its hour is
    ``ms // EXPIRY_WINDOW_MS``, its score ``ms % EXPIRY_WINDOW_MS``."""
    return math.ceil(expires_at * 1000)


def token_hash(token: str) -> int:
    """The expiry-bucket hash of a token (``thash`` in the Lua): Horner's rule with
    factor 31 over the last 16 bytes of its UTF-8, mod 2^20. The reference definition."""
    h = 0
    for b in token.encode("utf-8")[-16:]:
        h = (h * 31 + b) % _HASH_MOD
    return h


# token_hash as one dot product, sum(byte * 31^k) mod 2^20, for the rebuild (a million
# tokens): about a fifth cheaper. tests/unit/test_expiry_index.py checks it equal.
_HASH_POWERS = [pow(31, 15 - i, _HASH_MOD) for i in range(16)]


def token_hash_fast(token: str) -> int:
    """:func:`token_hash`, computed faster for tokens of 16 bytes or more."""
    tail = token.encode("utf-8")[-16:]
    if len(tail) < 16:
        return token_hash(token)
    return sum(map(operator.mul, tail, _HASH_POWERS)) & (_HASH_MOD - 1)


def bucket_address(h: int, level: int, split: int) -> int:
    """The bucket of hash ``h`` in an hour at ``level`` with split pointer ``split``
    (``address`` in the Lua; linear hashing)."""
    a = h % (1 << level)
    if a < split:
        a = h % (1 << (level + 1))
    return a


def bucket_layout(count: int) -> tuple[int, int]:
    """(level, split pointer) for an expiry hour holding ``count`` tokens, at
    :data:`BUCKET_LOAD` tokens per bucket: what a bulk load writes directly, and what
    ``index_add`` reaches by splitting when the ``count`` tokens are added one by one."""
    buckets = max(1, math.ceil(count / BUCKET_LOAD))
    level = buckets.bit_length() - 1
    return level, buckets - (1 << level)


def expiry_hours(tokens: Iterable[tuple[str, float]]) -> dict[int, list[Any]]:
    """Active access tokens ``(token, expires_at)`` by expiry hour:
    {hour: [token, ms, hash, token, ms, hash, ...]} — ms as :func:`expiry_ms` (inlined),
    hash as :func:`token_hash_fast`: the rebuild's input for laying out whole hours."""
    hours: dict[int, list[Any]] = {}
    ceil = math.ceil
    thash = token_hash_fast
    for token, expires in tokens:
        ms = ceil(expires * 1000)
        hour = ms // EXPIRY_WINDOW_MS
        entries = hours.get(hour)
        if entries is None:
            entries = hours[hour] = []
        entries += (token, ms, thash(token))
    return hours


def expiry_entries(client: redis.Redis, ns: str) -> list[tuple[str, int]]:
    """Every (access token, expiry ms) in namespace ``ns``'s expiry buckets, sorted."""
    out = []
    prefix = KeyLayout.expiry_bucket_prefix(ns)
    for key in client.scan_iter(prefix + "*", count=2000):
        name = key.decode() if isinstance(key, bytes) else key
        base = int(name[len(prefix):].split(":", 1)[0]) * EXPIRY_WINDOW_MS
        for member, score in client.zrange(key, 0, -1, withscores=True):
            out.append((member.decode() if isinstance(member, bytes) else member,
                        base + int(score)))
    return sorted(out)
