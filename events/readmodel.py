"""The Redis read model: how entity state is encoded, written and read.

All writes of entity state go through one Lua script that applies a state only if its
stream version is newer than the stored one, so any number of writers (front ends after
their own appends, projector workers, a rebuild), in any order, converge
(DESIGN.md, "The read model"). The same script advances the checkpoint.

The embedded default passes a ``fakeredis`` client here: one code path through the
redis-py API.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events import keys as k
from oauthledger.events.keys import KeyLayout
from oauthledger.events.state import (
    INSTALLATION_STREAM,
    ConsumerState,
    InstallationState,
    ProviderState,
    ResourceServerState,
    TokenState,
    UserState,
)

# Entity kind -> (state class, name of the field that is the key's identifier)
_KINDS: dict[str, tuple[type, str]] = {
    k.CONSUMER: (ConsumerState, "key"),
    k.TOKEN: (TokenState, "token"),
    k.USER: (UserState, "name"),
    k.INSTALLATION: (InstallationState, "key"),
    k.PROVIDER: (ProviderState, "name"),
    k.RESOURCE_SERVER: (ResourceServerState, "server_id"),
}
_CLASS_KIND = {cls: kind for kind, (cls, _) in _KINDS.items()}

# Access-token keys outlive expiry by a day so a late call hears "token_expired", not
# "token_rejected"; after that EXPIREAT reclaims the memory.
EXPIRED_TOKEN_GRACE = 86400


def entity_of(state: Any) -> tuple[str, str]:
    """(kind, identifier) of a state object."""
    kind = _CLASS_KIND[type(state)]
    ident = INSTALLATION_STREAM if kind == k.INSTALLATION else getattr(state, _KINDS[kind][1])
    return kind, ident


# Token keys are the bulk of Redis memory (one per active access token; budget: issue 4,
# 256 bytes per active access token), so a token value is binary-packed and holds only
# the fields its Redis readers use — the hot path (kind, status, consumer, secret, expiry,
# user) and issued_at. Fields only the dance needs are left out (DESIGN.md rule 3: the
# dance loads streams from the store) and decode to their defaults (None):
TOKEN_FIELDS_NOT_IN_REDIS = (
    "callback", "verifier_sealed", "session_handle_hash", "authorization_expires_at",
    "request_token", "renewed_from", "successor",
)
# (kind, status) <-> the low 4 bits of a token value's flags byte.
_TOKEN_CODES = [
    ("request", "pending"), ("request", "approved"), ("request", "denied"),
    ("request", "exchanged"), ("request", "expired"),
    ("access", "active"), ("access", "revoked"), ("access", "expired"),
    ("access", "renewed"),
]
_TOKEN_CODE = {pair: i for i, pair in enumerate(_TOKEN_CODES)}
_HAS_USER = 0x10  # flags: a user name follows the consumer key
_PACKED_SECRET = 0x20  # flags: the sealed secret is stored as key id + raw sealed bytes
_HEAD = struct.Struct("<Bdd")  # flags, expires_at, issued_at (exact doubles)
# A sealed value is ``s1.k<8 hex>.<base64url(nonce || ciphertext+tag)>`` (events.sealing):
# kept sealed in Redis, but as 4 key-id bytes + the raw sealed bytes instead of base64
# text (a third smaller). Anything else (tests seal nothing) is stored as its text.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def redis_view(state: Any) -> Any:
    """The state as the read model holds it: tokens without the dance-only fields of
    :data:`TOKEN_FIELDS_NOT_IN_REDIS`; other entities unchanged. ``decode(encode(s))``
    equals ``redis_view(s)``."""
    if isinstance(state, TokenState):
        return dataclasses.replace(state, **dict.fromkeys(TOKEN_FIELDS_NOT_IN_REDIS))
    return state


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=65536)
def _short(text: str) -> bytes:
    """A length-prefixed UTF-8 string: one length byte below 128, else two. Cached:
    consumer keys and user names repeat across many tokens."""
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        return bytes((n,)) + raw
    if n >= 0x8000:
        raise ValueError("identifier longer than 32 KiB")
    return bytes((0x80 | (n >> 8), n & 0xFF)) + raw


def _read_short(buf: bytes, at: int) -> tuple[str, int]:
    n = buf[at]
    at += 1
    if n & 0x80:
        n = ((n & 0x7F) << 8) | buf[at]
        at += 1
    return buf[at:at + n].decode("utf-8"), at + n


_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
_PAD = {0: b"", 2: b"==", 3: b"="}


def _pack_secret(sealed: str) -> tuple[int, bytes]:
    if sealed.startswith("s1.k") and sealed[12:13] == ".":
        kid_text = sealed[4:12]
        body = sealed[13:].encode("ascii", "replace")
        try:
            kid = bytes.fromhex(kid_text)
            raw = binascii.a2b_base64(body.translate(_TO_STD) + _PAD[len(body) & 3])
        except (ValueError, KeyError):  # binascii.Error is a ValueError
            pass
        else:
            # Only if it re-encodes to exactly the same text (canonical base64url).
            if (kid.hex() == kid_text and binascii.b2a_base64(raw, newline=False)
                    .translate(_TO_URL).rstrip(b"=") == body):
                return _PACKED_SECRET, kid + raw
    return 0, sealed.encode("utf-8")


def encode_token(kind: str, status: str, consumer_key: str, secret_sealed: str,
                 expires_at: float, issued_at: float, user: str | None) -> bytes:
    """The packed token payload (without the ``<version>|`` prefix): flags byte,
    expires_at and issued_at as little-endian doubles, the consumer key and the user
    (length-prefixed), then the sealed secret to the end."""
    flags, secret = _pack_secret(secret_sealed)
    flags |= _TOKEN_CODE[(kind, status)]
    if user is None:
        return _HEAD.pack(flags, expires_at, issued_at) + _short(consumer_key) + secret
    return (_HEAD.pack(flags | _HAS_USER, expires_at, issued_at) + _short(consumer_key)
            + _short(user) + secret)


def _encode_token(state: TokenState) -> bytes:
    return encode_token(state.kind, state.status, state.consumer_key, state.secret_sealed,
                        state.expires_at, state.issued_at, state.user)


def _decode_token(ident: str, version: int, buf: bytes) -> TokenState:
    flags, expires_at, issued_at = _HEAD.unpack_from(buf)
    kind, status = _TOKEN_CODES[flags & 0x0F]
    consumer, at = _read_short(buf, _HEAD.size)
    user = None
    if flags & _HAS_USER:
        user, at = _read_short(buf, at)
    if flags & _PACKED_SECRET:
        secret = f"s1.k{buf[at:at + 4].hex()}.{_b64e(buf[at + 4:])}"
    else:
        secret = buf[at:].decode("utf-8")
    return TokenState(
        token=ident, kind=kind, status=status, consumer_key=consumer, secret_sealed=secret,
        expires_at=expires_at, issued_at=issued_at, user=user, version=version,
    )


def encode(state: Any) -> bytes:
    """A state's stored payload (without the ``<version>|`` prefix). Tokens are packed
    binary (:func:`encode_token`); other entities are compact JSON without the
    identifier (it is in the key), the version (it is in the value's prefix) and fields
    at their default."""
    if isinstance(state, TokenState):
        return _encode_token(state)
    kind, _ = entity_of(state)
    id_field = _KINDS[kind][1]
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        if f.name in (id_field, "version"):
            continue
        value = getattr(state, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return _compact_json(out).encode("utf-8")


def decode_value(kind: str, ident: str, raw: str | bytes | None) -> Any:
    """Parse a stored ``<version>|<payload>`` value back into a state (None if absent)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    version, _, payload = raw.partition(b"|")
    if kind == k.TOKEN:
        return _decode_token(ident, int(version), payload)
    data = json.loads(payload)
    cls, id_field = _KINDS[kind]
    for name, value in list(data.items()):
        if isinstance(value, list):
            data[name] = tuple(value)
    if kind != k.INSTALLATION:
        data[id_field] = ident
    return cls(**data, version=int(version))


# The access-token expiry index (what the sweep reads) is kept compact: instead of one
# global sorted set (skiplist encoding, ~146 bytes per member) it is many small sorted sets
# in listpack encoding (~40 bytes per member), one per expiry hour and hash bucket:
#   <ns>:x:<hour>:<bucket>  member token, score = ms after the hour's start (rounded up)
# and an index hash of the non-empty hours,
#   <ns>:expiry             field <hour> -> "<level> <split pointer> <count>".
# Within an hour, tokens are spread by linear hashing (Litwin 1980): bucket =
# hash mod 2^level, or hash mod 2^(level+1) for buckets below the split pointer. When the
# hour holds more than BUCKET_LOAD tokens per bucket on average, the bucket at the split
# pointer is split in two (one bucket's worth of work, never the whole hour), so buckets
# stay around BUCKET_LOAD..2*BUCKET_LOAD members, under zset-max-listpack-entries (default
# 128), and keep the compact encoding. Members must stay under zset-max-listpack-value
# (64 bytes): tokens are 32 characters.
EXPIRY_WINDOW_MS = 3_600_000
BUCKET_LOAD = 40
INDEX_LUA = """
local W = EXPIRY_WINDOW_MS
local LOAD = BUCKET_LOAD
-- The token's hash (its last 16 bytes at most: tokens are random; cheap in Lua):
-- events.readmodel.token_hash computes the same in Python.
local function thash(s)
  local h = 0
  for i = math.max(1, #s - 15), #s do h = (h * 31 + string.byte(s, i)) % 1048576 end
  return h
end
local function fmt(n) return string.format('%d', n) end
-- KeyLayout.expiry_bucket: <ns>:x:<hour>:<bucket>
local function bucket(ns, w, a) return ns .. ':x:' .. fmt(w) .. ':' .. fmt(a) end
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

_APPLY = INDEX_LUA + """
-- KEYS: active pointer, building pointer.
-- ARGV: namespace, checkpoint ('' = leave), count, default namespace, then per entity
-- 6 fields: kind, id, version, payload, expire_at ('' = none), index op:
-- '' none, 'a+<ms>'/'a-<ms>' add/remove an access token in the expiry buckets,
-- 'r+<score>'/'r-' add/remove a request token in <ns>:rexpiry.
local ns = ARGV[1]
-- Write only into the live namespace or the one being built: a writer that read the
-- namespace just before a rebuild switched and retired it must not resurrect it.
local live = redis.call('GET', KEYS[1]) or ARGV[4]
if ns ~= live and ns ~= redis.call('GET', KEYS[2]) then return -1 end
local applied = 0
local i = 5
for _ = 1, tonumber(ARGV[3]) do
  local kind, id, ver = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local payload, expat, op = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  local key = ns .. ':' .. kind .. ':' .. id
  local cur = redis.call('GET', key)
  local curv = -1
  if cur then curv = tonumber(string.match(cur, '^(%d+)|')) or -1 end
  if ver > curv then
    if expat ~= '' then
      redis.call('SET', key, ver .. '|' .. payload, 'EXAT', expat)
    else
      redis.call('SET', key, ver .. '|' .. payload)
    end
    if op ~= '' then
      local what = string.sub(op, 1, 2)
      if what == 'a+' then index_add(ns, id, tonumber(string.sub(op, 3)))
      elseif what == 'a-' then index_rem(ns, id, tonumber(string.sub(op, 3)))
      elseif what == 'r+' then redis.call('ZADD', ns .. ':rexpiry', string.sub(op, 3), id)
      else redis.call('ZREM', ns .. ':rexpiry', id) end
    end
    applied = applied + 1
  end
end
if ARGV[2] ~= '' then
  local ckey = ns .. ':checkpoint'
  local cp = tonumber(redis.call('GET', ckey) or '-1')
  if tonumber(ARGV[2]) > cp then redis.call('SET', ckey, ARGV[2]) end
end
return applied
"""

_DUE = INDEX_LUA + """
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


@dataclass(frozen=True)
class Lookup:
    """What the hot path learns in one round trip."""

    namespace: str
    complete: bool  # False: no checkpoint (flushed, rebuilding) -> fall back to the store
    consumer: ConsumerState | None
    token: TokenState | None
    # With a nonce given: True when this call recorded it, False when it was already
    # recorded (a replay), None when no nonce was given.
    nonce_fresh: bool | None = None


def expiry_ms(expires_at: float) -> int:
    """An expiry time in whole milliseconds, rounded up, as the access-token expiry index
    holds it: an indexed token is never reported due before its expiry time."""
    return math.ceil(expires_at * 1000)


def token_index_args(kind: str, status: str, expires_at: float) -> tuple[str, str]:
    """(expire_at, index op) of a token for the apply script (see ``_APPLY``)."""
    expat = str(int(expires_at) + EXPIRED_TOKEN_GRACE)
    if kind == "access":
        sign = "a+" if status == "active" else "a-"
        return expat, f"{sign}{expiry_ms(expires_at)}"
    # A request token's key lives until it expires (plus the same grace).
    if status in ("pending", "approved"):
        return expat, "r+" + repr(expires_at)
    return expat, "r-"


def token_hash(token: str) -> int:
    """The expiry-bucket hash of a token (the same as ``thash`` in the Lua)."""
    h = 0
    for b in token.encode("utf-8")[-16:]:
        h = (h * 31 + b) % 1048576
    return h


def bucket_layout(count: int) -> tuple[int, int]:
    """(level, split pointer) for an expiry hour holding ``count`` tokens, at
    :data:`BUCKET_LOAD` tokens per bucket: what a bulk load writes directly."""
    buckets = max(1, math.ceil(count / BUCKET_LOAD))
    level = buckets.bit_length() - 1
    return level, buckets - (1 << level)


def _index_args(state: Any) -> tuple[str, str]:
    """(expire_at, index op) for the apply script."""
    if isinstance(state, TokenState):
        return token_index_args(state.kind, state.status, state.expires_at)
    return "", ""


class ReadModel:
    """Entity state in Redis under a :class:`KeyLayout`."""

    def __init__(self, client: redis.Redis, layout: KeyLayout | None = None) -> None:
        self.redis = client
        self.keys = layout or KeyLayout()
        self._apply = client.register_script(_APPLY)
        # The namespace this process last saw live: a hint for lookup(), checked in
        # the same atomic MGET as the entities it reads.
        self._live_ns = self.keys.default_namespace
        self._due = client.register_script(_DUE)

    # -- namespaces ------------------------------------------------------------------

    def namespace(self) -> str:
        """The live namespace."""
        raw = self.redis.get(self.keys.active)
        return raw.decode() if isinstance(raw, bytes) else (raw or self.keys.default_namespace)

    def building_namespace(self) -> str | None:
        """The namespace a rebuild is filling, if any."""
        raw = self.redis.get(self.keys.building)
        return raw.decode() if isinstance(raw, bytes) else raw

    def write_targets(self) -> list[str]:
        """Namespaces a front end writes to: the live one and, during a rebuild, the one
        being built, so an acknowledged change survives the switch (rule 2)."""
        live, building = self.redis.mget(self.keys.active, self.keys.building)
        live_ns = (live.decode() if isinstance(live, bytes) else live) or (
            self.keys.default_namespace
        )
        out = [live_ns]
        if building:
            b = building.decode() if isinstance(building, bytes) else building
            if b != live_ns:
                out.append(b)
        return out

    # -- writing ---------------------------------------------------------------------

    def apply(
        self, states: Sequence[Any], checkpoint: int | None = None, namespace: str | None = None
    ) -> int:
        """Write ``states`` (each carrying its stream version) version-guarded, and raise
        the checkpoint to ``checkpoint`` if given. Returns how many states were newer,
        or -1 (nothing written) when ``namespace`` is neither live nor being built — a
        rebuild retired it meanwhile."""
        ns = namespace or self.namespace()
        return int(self._apply(keys=[self.keys.active, self.keys.building],
                               args=self.apply_args(states, checkpoint, ns)))

    def apply_args(self, states: Sequence[Any], checkpoint: int | None, namespace: str
                   ) -> list[str | bytes]:
        """The apply script's arguments (for callers that pipeline many calls)."""
        args: list[str | bytes] = [
            namespace, "" if checkpoint is None else str(checkpoint), str(len(states)),
            self.keys.default_namespace,
        ]
        for state in states:
            kind, ident = entity_of(state)
            expat, op = _index_args(state)
            args += [kind, ident, str(state.version), encode(state), expat, op]
        return args

    def apply_pipelined(self, pipe: Any, states: Sequence[Any], checkpoint: int | None,
                        namespace: str) -> None:
        """Queue an :meth:`apply` on a pipeline (bulk writers outside the rebuild, which
        sends its own bulk scripts: bench/projection_bench.py's memory measurement)."""
        self._apply(keys=[self.keys.active, self.keys.building],
                    args=self.apply_args(states, checkpoint, namespace), client=pipe)

    def publish_states(self, states: Sequence[Any]) -> None:
        """Front-end write after a commit: every target namespace, no checkpoint move."""
        for ns in self.write_targets():
            self.apply(states, namespace=ns)

    # -- reading ---------------------------------------------------------------------

    def lookup(self, consumer_key: str, token: str | None,
               nonce: tuple[str, str, float] | None = None) -> Lookup:
        """Consumer and token for a signed request, in one round trip.

        One MGET (atomic, and cheaper for Redis than a script) reads the live-
        namespace pointer together with the checkpoint and the entities of the namespace
        this process last saw live. If a rebuild switched namespaces since, the pointer
        differs and the read is repeated against the new one; should it keep moving, the
        answer says "incomplete" and the caller falls back to the store (rule 3).

        ``nonce`` = (timestamp, nonce, window) also records the request's nonce in the
        same round trip (``SET NX EX``, pipelined after the MGET). The caller must take
        it back with :meth:`release_nonce` when the request is then refused, so that only
        verified requests keep their nonce (the authenticator explains why)."""
        ns = self._live_ns
        fresh: bool | None = None
        for _ in range(3):
            names = [self.keys.active, KeyLayout.checkpoint(ns),
                     KeyLayout.entity(ns, k.CONSUMER, consumer_key)]
            if token:
                names.append(KeyLayout.entity(ns, k.TOKEN, token))
            if nonce is not None and fresh is None:
                pipe = self.redis.pipeline(transaction=False)
                pipe.mget(names)
                pipe.set(self.keys.nonce(consumer_key, token or "", nonce[0], nonce[1]), "1",
                         nx=True, ex=_nonce_ttl(nonce[2]))
                raws, recorded = pipe.execute()
                fresh = bool(recorded)
            else:
                raws = self.redis.mget(names)
            live = raws[0].decode() if isinstance(raws[0], bytes) else raws[0]
            live = live or self.keys.default_namespace
            if live == ns:
                return Lookup(
                    namespace=ns,
                    complete=raws[1] is not None,
                    consumer=decode_value(k.CONSUMER, consumer_key, raws[2]),
                    token=decode_value(k.TOKEN, token, raws[3]) if token else None,
                    nonce_fresh=fresh,
                )
            ns = self._live_ns = live
        return Lookup(namespace=ns, complete=False, consumer=None, token=None,
                      nonce_fresh=fresh)

    def get(self, kind: str, ident: str, namespace: str | None = None) -> Any:
        """One entity's state from the live namespace (None when absent)."""
        ns = namespace or self.namespace()
        return decode_value(kind, ident, self.redis.get(KeyLayout.entity(ns, kind, ident)))

    def checkpoint(self, namespace: str | None = None) -> int | None:
        """Last projected position, or None when the projection has none (flushed)."""
        ns = namespace or self.namespace()
        raw = self.redis.get(KeyLayout.checkpoint(ns))
        return None if raw is None else int(raw)

    def due_tokens(self, now: float, limit: int = 1000, namespace: str | None = None
                   ) -> tuple[list[str], list[str]]:
        """(access tokens, request tokens) whose expiry time has passed, earliest first,
        at most ``limit`` of each."""
        ns = namespace or self.namespace()
        flat = self._due(args=[ns, str(math.floor(now * 1000)), str(limit)])
        pairs = sorted(
            (int(flat[i + 1]), flat[i].decode() if isinstance(flat[i], bytes) else flat[i])
            for i in range(0, len(flat), 2)
        )
        access = [token for _, token in pairs[:limit]]
        request = self.redis.zrangebyscore(KeyLayout.request_expiry(ns), "-inf", now, 0, limit)
        return access, [x.decode() if isinstance(x, bytes) else x for x in request]

    def expiry_index(self, namespace: str | None = None) -> list[tuple[str, int]]:
        """Every (access token, expiry ms) in the expiry index, sorted (inspection and
        rebuild comparison: the bucket layout depends on write order, the content not)."""
        ns = namespace or self.namespace()
        return expiry_entries(self.redis, ns)

    # -- nonces ----------------------------------------------------------------------

    def consume_nonce(
        self, consumer_key: str, token: str, timestamp: str, nonce: str, window: float
    ) -> bool:
        """Record a nonce; False when it was already used (RFC 5849 §3.3). Call only
        after the signature verified, so unsigned traffic cannot burn nonces."""
        key = self.keys.nonce(consumer_key, token, timestamp, nonce)
        return bool(self.redis.set(key, "1", nx=True, ex=_nonce_ttl(window)))

    def release_nonce(self, consumer_key: str, token: str, timestamp: str, nonce: str) -> None:
        """Forget a nonce recorded for a request that was then refused."""
        self.redis.delete(self.keys.nonce(consumer_key, token, timestamp, nonce))


def _nonce_ttl(window: float) -> int:
    # Remember a nonce for both sides of the window: a timestamp up to `window` in the
    # future stays acceptable for 2 * window.
    return max(1, int(window * 2) + 1)


def iter_states(states: Iterable[Any]) -> list[Any]:
    """Drop entity kinds the read model does not hold (None)."""
    return [s for s in states if s is not None and type(s) in _CLASS_KIND]


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
