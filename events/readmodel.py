"""The Redis read model: how entity state is encoded, written and read.

All writes of entity state go through one Lua script that applies a state only if its
stream version is newer than the stored one, so any number of writers (front ends after
their own appends, projector workers, a rebuild), in any order, converge
(docs/read-model.md, "Consistency rules as implemented"). The same script advances the
checkpoint. How a token's value is packed is :mod:`oauthledger.events.token_codec`; the
access-token expiry index the script maintains (its Lua and Python twin) is
:mod:`oauthledger.events.expiry_index`.

The embedded default passes a ``fakeredis`` client here: one code path through the
redis-py API.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from oauthledger.events import keys as k
from oauthledger.events.expiry_index import DUE_LUA, INDEX_LUA, expiry_entries, expiry_ms
from oauthledger.events.keys import KeyLayout
from oauthledger.events.round_trip import RoundTrip
from oauthledger.events.state import (
    INSTALLATION_STREAM,
    ConsumerState,
    InstallationState,
    ProviderState,
    ResourceServerState,
    TokenState,
    UserState,
)
from oauthledger.events.token_codec import decode_token, encode_token_state

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

# Decoded consumer and token states the hot path remembers per process (ReadModel._decoded).
_STATE_CACHE_LIMIT = 8192

# Token keys that left the active state (expired, revoked, renewed; request tokens
# always) outlive their expiry by a day so a late call hears "token_expired", not
# "token_rejected"; after that EXAT reclaims the memory (token_expire_at).
EXPIRED_TOKEN_GRACE = 86400


def entity_of(state: Any) -> tuple[str, str]:
    """(kind, identifier) of a state object."""
    kind = _CLASS_KIND[type(state)]
    ident = INSTALLATION_STREAM if kind == k.INSTALLATION else getattr(state, _KINDS[kind][1])
    return kind, ident


_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(state: Any) -> bytes:
    """A state's stored payload (without the ``<version>|`` prefix). Tokens are packed
    binary (:func:`oauthledger.events.token_codec.encode_token`); other entities are
    compact JSON without the identifier (it is in the key), the version (it is in the
    value's prefix) and fields at their default."""
    if isinstance(state, TokenState):
        return encode_token_state(state)
    kind, _ = entity_of(state)
    id_field = _KINDS[kind][1]
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        # The identifier is in the key — except the installation's, whose key is the
        # fixed stream name and whose consumer key is a field of its own.
        if f.name == "version" or (f.name == id_field and kind != k.INSTALLATION):
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
        return decode_token(ident, int(version), payload)
    data = json.loads(payload)
    cls, id_field = _KINDS[kind]
    for name, value in list(data.items()):
        if isinstance(value, list):
            data[name] = tuple(value)
    if kind != k.INSTALLATION:
        data[id_field] = ident
    elif id_field not in data:
        return None  # written before the key was kept: unknown here, the store has it
    return cls(**data, version=int(version))


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
    # With a nonce given: the second the nonce memory started (:meth:`ReadModel.
    # start_nonce_epoch`); None when no nonce was given.
    nonce_epoch: int | None = None


@dataclass(frozen=True)
class NonceRecord:
    """The verdict of :meth:`ReadModel.consume_nonce`."""

    fresh: bool  # True: recorded now; False: already recorded (a replay)
    epoch: int  # the second the nonce memory started remembering


def token_expire_at(kind: str, status: str, expires_at: float) -> str:
    """The EXAT of a token's key for the apply script and the rebuild's bulk writer, ''
    for none (docs/read-model.md, "Token keys and their expiry"). An active access token
    gets none: the expiry index lists it, the sweep turns it into an expired one when
    due, and that state is written with EXAT expiry + grace; readers check expires_at to
    the second meanwhile. A per-key EXAT would cost an expires-dict entry and its table
    slot (about 40 bytes) on every live token. Every other state — an access token that
    left the active state, any request token — lives until its expiry plus
    :data:`EXPIRED_TOKEN_GRACE`."""
    if kind == "access" and status == "active":
        return ""
    return str(int(expires_at) + EXPIRED_TOKEN_GRACE)


def token_index_args(kind: str, status: str, expires_at: float) -> tuple[str, str]:
    """(expire_at, index op) of a token for the apply script (see ``_APPLY``)."""
    expat = token_expire_at(kind, status, expires_at)
    if kind == "access":
        sign = "a+" if status == "active" else "a-"
        return expat, f"{sign}{expiry_ms(expires_at)}"
    if status in ("pending", "approved"):
        return expat, "r+" + repr(expires_at)
    return expat, "r-"


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
        self._due = client.register_script(DUE_LUA)
        # The hot path's one round trip (events/round_trip.py).
        self._round_trip = RoundTrip(client)
        self._states: dict[tuple[str, str, bytes], Any] = {}

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
        being built, so an acknowledged change survives the switch (docs/design.md,
        "Read your writes")."""
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
               nonce: tuple[str, str, float] | None = None, *,
               now: float | None = None) -> Lookup:
        """Consumer and token for a signed request, in one round trip.

        One MGET (atomic, and cheaper for Redis than a script) reads the live-
        namespace pointer together with the checkpoint and the entities of the namespace
        this process last saw live. If a rebuild switched namespaces since, the pointer
        differs and the read is repeated against the new one; should it keep moving, the
        answer says "incomplete" and the caller falls back to the store (docs/design.md,
        "Store fallback").

        ``nonce`` = (timestamp, nonce, window) also records the request's nonce in the
        same round trip (``SET NX EX``, pipelined before the MGET), and the MGET reads
        the nonce memory's epoch with the entities (docs/oauth.md, "Replays across
        restarts"); when the memory has none (it was just emptied), the epoch starts at
        ``now`` (default: the system clock), which costs one more round trip, once. The
        caller must take the nonce back with :meth:`release_nonce` when the request is
        then refused, so that only verified requests keep their nonce (the authenticator
        explains why)."""
        ns = self._live_ns
        fresh: bool | None = None
        raw_epoch: bytes | None = None
        result: Lookup | None = None
        for _ in range(3):
            names = [self.keys.active, KeyLayout.checkpoint(ns),
                     KeyLayout.entity(ns, k.CONSUMER, consumer_key)]
            if token:
                names.append(KeyLayout.entity(ns, k.TOKEN, token))
            if nonce is not None and fresh is None:
                # The nonce before the epoch: should the memory be emptied between the
                # two, the MGET finds no epoch and a new one starts now, rather than the
                # old epoch vouching for nonces that are already gone.
                recorded, raws = self._round_trip.run((
                    ("SET", self.keys.nonce(consumer_key, token or "", nonce[0], nonce[1]),
                     "1", "EX", _nonce_ttl(nonce[2]), "NX"),
                    ("MGET", *names, self.keys.nonce_epoch),
                ))
                fresh, raw_epoch = bool(recorded), raws[-1]
            else:
                raws = self._round_trip.run((("MGET", *names),))[0]
            live = raws[0].decode() if isinstance(raws[0], bytes) else raws[0]
            live = live or self.keys.default_namespace
            if live == ns:
                result = Lookup(
                    namespace=ns,
                    complete=raws[1] is not None,
                    consumer=self._decoded(k.CONSUMER, consumer_key, raws[2]),
                    token=self._decoded(k.TOKEN, token, raws[3]) if token else None,
                    nonce_fresh=fresh,
                    nonce_epoch=None if raw_epoch is None else int(raw_epoch),
                )
                break
            ns = self._live_ns = live
        if result is None:
            result = Lookup(namespace=ns, complete=False, consumer=None, token=None,
                            nonce_fresh=fresh)
        if fresh is None or result.nonce_epoch is not None:
            return result
        epoch = int(raw_epoch) if raw_epoch is not None else self._restart_epoch(now)
        return dataclasses.replace(result, nonce_epoch=epoch)

    def _decoded(self, kind: str, ident: str, raw: bytes | None) -> Any:
        """:func:`decode_value`, remembered per stored value: the value carries the
        stream version, so an entry is exact for as long as that value is what Redis
        holds, and a changed entity is a new value (a new cache key). The same consumer
        and token are looked up by every call they sign; decoding the consumer's JSON and
        the token's packed value again each time was a tenth of the hot path's own work.
        Bounded; the states are frozen dataclasses, safe to share."""
        if raw is None:
            return None
        key = (kind, ident, raw)
        hit = self._states.get(key)
        if hit is None:
            hit = decode_value(kind, ident, raw)
            if len(self._states) >= _STATE_CACHE_LIMIT:
                self._states.clear()  # simple and rare: refilled by the next lookups
            self._states[key] = hit
        return hit

    def lookup_user(self, name: str, namespace: str) -> tuple[bool, UserState | None]:
        """A user's state for the hot path, in one round trip: one atomic MGET of the
        live-namespace pointer, ``namespace``'s checkpoint and the user key, where
        ``namespace`` is the one :meth:`lookup` answered from. Returns (complete, user);
        complete is False when that namespace is no longer live or has no checkpoint, and
        the caller must read the store instead (docs/design.md, "Store fallback")."""
        live, checkpoint, raw = self.redis.mget([
            self.keys.active, KeyLayout.checkpoint(namespace),
            KeyLayout.entity(namespace, k.USER, name),
        ])
        live_ns = (live.decode() if isinstance(live, bytes) else live) or (
            self.keys.default_namespace
        )
        if live_ns != namespace or checkpoint is None:
            return False, None
        user = decode_value(k.USER, name, raw)
        return True, user if isinstance(user, UserState) else None

    def get(
        self, kind: str, ident: str, namespace: str | None = None,
    ) -> (ConsumerState | TokenState | UserState | InstallationState | ProviderState
          | ResourceServerState | None):
        """One entity's state from the live namespace (None when absent); its class is
        the one of ``kind`` (:data:`oauthledger.events.state.State`)."""
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
        self, consumer_key: str, token: str, timestamp: str, nonce: str, window: float, *,
        now: float | None = None,
    ) -> NonceRecord:
        """Record a nonce (RFC 5849 §3.3) and read the nonce memory's epoch, in one
        round trip (the epoch starts at ``now`` when missing, as in :meth:`lookup`). Call
        only after the signature verified, so unsigned traffic cannot burn nonces."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.nonce(consumer_key, token, timestamp, nonce), "1", nx=True,
                 ex=_nonce_ttl(window))
        pipe.get(self.keys.nonce_epoch)  # after the nonce: see lookup()
        recorded, raw_epoch = pipe.execute()
        epoch = int(raw_epoch) if raw_epoch is not None else self._restart_epoch(now)
        return NonceRecord(fresh=bool(recorded), epoch=epoch)

    def start_nonce_epoch(self, epoch: int) -> int:
        """Record ``epoch`` (seconds since 1970) as the second the nonce memory started,
        unless one is recorded already (SET NX); returns the epoch in force. Called when
        a memory starts (docs/oauth.md, "Replays across restarts"): by the embedded
        default's start, by each front end's start, and by :meth:`lookup` and
        :meth:`consume_nonce` when they find none."""
        pipe = self.redis.pipeline(transaction=True)  # MULTI: the GET sees the SET NX
        pipe.set(self.keys.nonce_epoch, str(epoch), nx=True)
        pipe.get(self.keys.nonce_epoch)
        _, raw = pipe.execute()
        return int(raw)

    def _restart_epoch(self, now: float | None) -> int:
        # The memory was emptied (or never started): it remembers from this second on.
        return self.start_nonce_epoch(int(time.time() if now is None else now))

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
