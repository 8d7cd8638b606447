"""The Redis read model: how entity state is encoded, written and read.

All writes of entity state go through one Lua script that applies a state only if its
stream version is newer than the stored one, so any number of writers (front ends after
their own appends, projector workers, a rebuild), in any order, converge
(DESIGN.md, "The read model"). The same script advances the checkpoint.

The embedded default passes a ``fakeredis`` client here: one code path through the
redis-py API.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from events import keys as k
from events.keys import KeyLayout
from events.state import (
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


# Token keys are the bulk of Redis memory (one per active access token; budget: issue 4),
# so a token is stored as a positional JSON array of the fields its Redis readers use —
# the hot path (kind, status, consumer, secret, expiry, user) and the users' token list
# (issued_at). Fields only the dance needs are left out (DESIGN.md rule 3: the dance
# loads streams from the store) and decode to their defaults (None):
TOKEN_FIELDS_NOT_IN_REDIS = (
    "callback", "verifier_sealed", "session_handle_hash", "authorization_expires_at",
    "request_token", "renewed_from", "successor",
)
_TOKEN_KIND = {"request": "r", "access": "a"}
_TOKEN_STATUS = {
    "pending": "p", "approved": "o", "denied": "d", "exchanged": "x", "expired": "e",
    "active": "a", "revoked": "v", "renewed": "n",
}
_TOKEN_KIND_R = {v: k for k, v in _TOKEN_KIND.items()}
# One encoder for all writes (json.dumps with options builds a new one per call);
# ensure_ascii=False: user names and keys in UTF-8 are shorter than \u escapes.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_TOKEN_STATUS_R = {v: k for k, v in _TOKEN_STATUS.items()}


def redis_view(state: Any) -> Any:
    """The state as the read model holds it: tokens without the dance-only fields of
    :data:`TOKEN_FIELDS_NOT_IN_REDIS`; other entities unchanged. ``decode(encode(s))``
    equals ``redis_view(s)``."""
    if isinstance(state, TokenState):
        return dataclasses.replace(state, **dict.fromkeys(TOKEN_FIELDS_NOT_IN_REDIS))
    return state


def _encode_token(state: TokenState) -> str:
    row: list[Any] = [
        _TOKEN_KIND[state.kind] + _TOKEN_STATUS[state.status], state.consumer_key,
        state.secret_sealed, state.expires_at, state.issued_at,
    ]
    if state.user is not None:
        row.append(state.user)
    return _compact_json(row)


def _decode_token(ident: str, version: int, data: list[Any]) -> TokenState:
    code = data[0]
    return TokenState(
        token=ident, kind=_TOKEN_KIND_R[code[0]], status=_TOKEN_STATUS_R[code[1:]],
        consumer_key=data[1], secret_sealed=data[2], expires_at=data[3], issued_at=data[4],
        user=data[5] if len(data) > 5 else None, version=version,
    )


def encode(state: Any) -> str:
    """Compact JSON of a state: the identifier (it is in the key), the version (it is in
    the value's prefix) and fields at their default are left out; tokens are a
    positional array (see :data:`TOKEN_FIELDS_NOT_IN_REDIS`)."""
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
    return json.dumps(out, separators=(",", ":"))


def decode_value(kind: str, ident: str, raw: str | bytes | None) -> Any:
    """Parse a stored ``"<version>|<json>"`` value back into a state (None if absent)."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    version, _, payload = raw.partition("|")
    data = json.loads(payload)
    if kind == k.TOKEN:
        return _decode_token(ident, int(version), data)
    cls, id_field = _KINDS[kind]
    for name, value in list(data.items()):
        if isinstance(value, list):
            data[name] = tuple(value)
    if kind != k.INSTALLATION:
        data[id_field] = ident
    return cls(**data, version=int(version))


_APPLY = """
-- KEYS: active pointer, building pointer.
-- ARGV: namespace, checkpoint ('' = leave), count, default namespace, then per entity
-- 7 fields: kind, id, version, payload, expire_at ('' = none), expiry score ('' = not
-- indexed), user.
local ns = ARGV[1]
-- Write only into the live namespace or the one being built: a writer that read the
-- namespace just before a rebuild switched and retired it must not resurrect it.
local live = redis.call('GET', KEYS[1]) or ARGV[4]
if ns ~= live and ns ~= redis.call('GET', KEYS[2]) then return -1 end
local applied = 0
local i = 5
for _ = 1, tonumber(ARGV[3]) do
  local kind, id, ver = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local payload, expat, score, user = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local key = ns .. ':' .. kind .. ':' .. id
  local cur = redis.call('GET', key)
  local curv = -1
  if cur then curv = tonumber(string.match(cur, '^(%d+)|')) or -1 end
  if ver > curv then
    redis.call('SET', key, ver .. '|' .. payload)
    if expat ~= '' then redis.call('EXPIREAT', key, expat) end
    if kind == 't' then
      local zkey = ns .. ':expiry'
      if user == '' then zkey = ns .. ':rexpiry' end
      if score ~= '' then
        redis.call('ZADD', zkey, score, id)
        if user ~= '' then redis.call('SADD', ns .. ':ut:' .. user, id) end
      else
        redis.call('ZREM', zkey, id)
        if user ~= '' then redis.call('SREM', ns .. ':ut:' .. user, id) end
      end
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

_LOOKUP = """
-- KEYS: active pointer, building pointer. ARGV: default namespace, consumer key, token.
-- One round trip for the hot path: which namespace is live, whether its projection is
-- complete (DESIGN.md rule 3), and the consumer and token states.
local ns = redis.call('GET', KEYS[1]) or ARGV[1]
local complete = redis.call('EXISTS', ns .. ':checkpoint')
local c = redis.call('GET', ns .. ':c:' .. ARGV[2])
local t = false
if ARGV[3] ~= '' then t = redis.call('GET', ns .. ':t:' .. ARGV[3]) end
return {ns, complete, c, t}
"""


@dataclass(frozen=True)
class Lookup:
    """What the hot path learns in one round trip."""

    namespace: str
    complete: bool  # False: no checkpoint (flushed, rebuilding) -> fall back to the store
    consumer: ConsumerState | None
    token: TokenState | None


def _index_args(state: Any) -> tuple[str, str, str]:
    """(expire_at, expiry score, user) for the apply script."""
    if isinstance(state, TokenState):
        if state.kind == "access":
            indexed = state.status == "active"
            return (
                str(int(state.expires_at) + EXPIRED_TOKEN_GRACE),
                repr(state.expires_at) if indexed else "",
                state.user or "",
            )
        pending = state.status in ("pending", "approved")
        # A request token's key lives until it expires (plus the same grace).
        return (
            str(int(state.expires_at) + EXPIRED_TOKEN_GRACE),
            repr(state.expires_at) if pending else "",
            "",
        )
    return "", "", ""


class ReadModel:
    """Entity state in Redis under a :class:`KeyLayout`."""

    def __init__(self, client: redis.Redis, layout: KeyLayout | None = None) -> None:
        self.redis = client
        self.keys = layout or KeyLayout()
        self._apply = client.register_script(_APPLY)
        self._lookup = client.register_script(_LOOKUP)

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
                   ) -> list[str]:
        """The apply script's arguments (for callers that pipeline many calls)."""
        args: list[str] = [
            namespace, "" if checkpoint is None else str(checkpoint), str(len(states)),
            self.keys.default_namespace,
        ]
        for state in states:
            kind, ident = entity_of(state)
            expat, score, user = _index_args(state)
            args += [kind, ident, str(state.version), encode(state), expat, score, user]
        return args

    def apply_pipelined(self, pipe: Any, states: Sequence[Any], checkpoint: int | None,
                        namespace: str) -> None:
        """Queue an :meth:`apply` on a pipeline (bulk writers: rebuilds)."""
        self._apply(keys=[self.keys.active, self.keys.building],
                    args=self.apply_args(states, checkpoint, namespace), client=pipe)

    def publish_states(self, states: Sequence[Any]) -> None:
        """Front-end write after a commit: every target namespace, no checkpoint move."""
        for ns in self.write_targets():
            self.apply(states, namespace=ns)

    # -- reading ---------------------------------------------------------------------

    def lookup(self, consumer_key: str, token: str | None) -> Lookup:
        """Consumer and token for a signed request, in one round trip."""
        ns, complete, c, t = self._lookup(
            keys=[self.keys.active, self.keys.building],
            args=[self.keys.default_namespace, consumer_key, token or ""],
        )
        ns = ns.decode() if isinstance(ns, bytes) else ns
        return Lookup(
            namespace=ns,
            complete=bool(complete),
            consumer=decode_value(k.CONSUMER, consumer_key, c or None),
            token=decode_value(k.TOKEN, token, t or None) if token else None,
        )

    def get(self, kind: str, ident: str, namespace: str | None = None) -> Any:
        """One entity's state from the live namespace (None when absent)."""
        ns = namespace or self.namespace()
        return decode_value(kind, ident, self.redis.get(KeyLayout.entity(ns, kind, ident)))

    def checkpoint(self, namespace: str | None = None) -> int | None:
        """Last projected position, or None when the projection has none (flushed)."""
        ns = namespace or self.namespace()
        raw = self.redis.get(KeyLayout.checkpoint(ns))
        return None if raw is None else int(raw)

    def user_tokens(self, user: str, namespace: str | None = None) -> list[TokenState]:
        """The user's active access tokens."""
        ns = namespace or self.namespace()
        ids = sorted(
            x.decode() if isinstance(x, bytes) else x
            for x in self.redis.smembers(KeyLayout.user_tokens(ns, user))
        )
        if not ids:
            return []
        raws = self.redis.mget([KeyLayout.entity(ns, k.TOKEN, i) for i in ids])
        return [decode_value(k.TOKEN, i, r) for i, r in zip(ids, raws, strict=True) if r]

    def due_tokens(self, now: float, limit: int = 1000, namespace: str | None = None
                   ) -> tuple[list[str], list[str]]:
        """(access tokens, request tokens) whose expiry time has passed."""
        ns = namespace or self.namespace()
        access = self.redis.zrangebyscore(KeyLayout.expiry(ns), "-inf", now, 0, limit)
        request = self.redis.zrangebyscore(KeyLayout.request_expiry(ns), "-inf", now, 0, limit)
        dec = [x.decode() if isinstance(x, bytes) else x for x in access]
        rdec = [x.decode() if isinstance(x, bytes) else x for x in request]
        return dec, rdec

    # -- nonces ----------------------------------------------------------------------

    def consume_nonce(
        self, consumer_key: str, token: str, timestamp: str, nonce: str, window: float
    ) -> bool:
        """Record a nonce; False when it was already used (RFC 5849 §3.3). Call only
        after the signature verified, so unsigned traffic cannot burn nonces."""
        key = self.keys.nonce(consumer_key, token, timestamp, nonce)
        # Remember it for both sides of the window: a timestamp up to `window` in the
        # future stays acceptable for 2 * window.
        return bool(self.redis.set(key, "1", nx=True, ex=max(1, int(window * 2) + 1)))


def iter_states(states: Iterable[Any]) -> list[Any]:
    """Drop entity kinds the read model does not hold (None)."""
    return [s for s in states if s is not None and type(s) in _CLASS_KIND]
