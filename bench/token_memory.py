"""Redis memory per active access token: prints figures, never asserts.

Starts its own ``redis-server`` (a free loopback port, ``--save "" --appendonly no``,
killed at the end) for each write path, so nothing else in Redis pollutes the figure,
and writes N active access tokens (default 1,000,000) through a production write path:

- ``apply``: :meth:`ReadModel.apply` calls of 1,000 states each (the projector's batch),
  pipelined 10 calls per round trip, into the live namespace ``ol:p0`` — the path every
  projector, front end and sweep takes;
- ``rebuild``: the rebuild's bulk writer (``RowReplay.key_calls`` + ``index_calls``
  through ``_write_bulk``, as :func:`oauthledger.events.rebuild.rebuild` sends them) into
  a building namespace ``ol:p1``; the fold from the store is skipped (the tokens are put
  into the ``RowReplay`` directly).

The tokens are realistic: 22-character identifiers as the product makes them
(``services.dance.new_token``), their secrets derived by the real
:class:`~oauthledger.events.sealing.Sealer` with a freshly generated key ring
(``--legacy-tokens``: 32-character identifiers and sealed random secrets, as issued
before), 50
consumer keys shaped like Atlassian's (``jira:123456789``), 25,000 user names of
realistic length, expiries spread over 7 days (the default access-token lifetime).

Figures per token: the ``INFO used_memory`` delta over the whole write (the true cost:
keys, values, dict entries, expires-dict entries, hash-table slots, expiry index),
``MEMORY USAGE`` of sample token keys, the expiry index's share, and a breakdown by
jemalloc size class (docs/read-model.md, "Memory").

    .venv/bin/python bench/token_memory.py [--tokens N] [--path apply|rebuild|both]
        [--json] [--experiments] [--legacy-tokens]

``--json`` prints one JSON object as the last line: {"tokens", "used_memory_per_token"
(the first path measured), "paths": {path: figures}}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oauthledger.events.keys import KeyLayout  # noqa: E402
from oauthledger.events.readmodel import ReadModel  # noqa: E402
from oauthledger.events.sealing import KeyRing, Sealer  # noqa: E402
from oauthledger.events.state import TokenState  # noqa: E402

SPREAD = 7 * 86400  # expiries over the default access-token lifetime
APPLY_BATCH = 1000  # states per apply call (project_into's default batch)
APPLY_CALLS_PER_PIPELINE = 10
_FIRST = ["james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda",
          "david", "elizabeth", "william", "barbara", "richard", "susan", "joseph",
          "jessica", "thomas", "sarah", "chris", "karen", "daniel", "lisa", "matthew",
          "nancy", "anthony", "betty", "mark", "sandra", "paul", "ashley", "wei", "yuki",
          "ana", "lars", "priya", "omar", "ines", "jan", "eva", "li"]
_LAST = ["smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis",
         "rodriguez", "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson",
         "thomas", "taylor", "moore", "jackson", "martin", "lee", "perez", "thompson",
         "white", "harris", "clark", "lewis", "walker", "hall", "young", "nguyen", "kim",
         "schmidt", "müller", "rossi", "tanaka", "novak", "berg", "silva", "wang"]
_APPS = ["jira", "confluence", "bitbucket", "bamboo", "jira", "confluence", "fecru",
         "crowd", "jira", "jsm"]


# -- the Redis server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[redis.Redis]:
    """A private redis-server on a free loopback port, no persistence; killed after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="token-memory-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
         "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise SystemExit("redis-server exited at start") from None
                time.sleep(0.05)
        else:
            raise SystemExit("redis-server did not answer")
        yield client
    finally:
        client.close()
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- the tokens ----------------------------------------------------------------------------


def _names(rnd: random.Random) -> tuple[list[str], list[str]]:
    consumers = [f"{rnd.choice(_APPS)}:{rnd.randrange(10**9):09d}" for _ in range(50)]
    users = []
    for i in range(25_000):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        style = i % 4
        name = (f"{first}.{last}" if style == 0 else f"{first[0]}{last}" if style == 1
                else f"{first}{last[0]}{i % 100}" if style == 2 else f"{first}_{last}")
        users.append(name)
    return consumers, users


def make_tokens(n: int, seed: int = 1, legacy: bool = False) -> list[TokenState]:
    """``n`` active access tokens as the product makes them (see the module docstring);
    ``legacy``: as it made them before derived secrets (32-character identifiers, random
    secrets sealed into the event), the tokens a Redis still holds after an upgrade."""
    rnd = random.Random(seed)
    sealer = Sealer(KeyRing.generate())
    consumers, users = _names(rnd)
    now = time.time()
    out = []
    for i in range(n):
        if legacy:
            token = _b64url(rnd.randbytes(24))
            secret_ref = sealer.seal(_b64url(rnd.randbytes(24)))
        else:
            # services.dance.new_token: secrets.token_urlsafe(16), 22 characters; the
            # secret derived from it (Sealer.token_secret), the event holding d1.<kid>.<token>.
            token = _b64url(rnd.randbytes(16))
            secret_ref = sealer.token_secret(token)[1]
        issued = now - rnd.random() * 3600
        expires = now + 60 + SPREAD * (i + rnd.random()) / n
        out.append(TokenState(
            token=token, kind="access", consumer_key=consumers[i % len(consumers)],
            secret_sealed=secret_ref, status="active", expires_at=expires,
            issued_at=issued, user=users[rnd.randrange(len(users))], version=1))
    rnd.shuffle(out)  # writes in no particular expiry order, as a projector meets them
    return out


def _b64url(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# -- writing -------------------------------------------------------------------------------


def write_apply(client: redis.Redis, states: list[TokenState]) -> str:
    """Through ReadModel.apply's script, pipelined, into the live namespace."""
    rm = ReadModel(client, KeyLayout())
    ns = rm.keys.default_namespace
    pipe = client.pipeline(transaction=False)
    for calls, i in enumerate(range(0, len(states), APPLY_BATCH), start=1):
        rm.apply_pipelined(pipe, states[i:i + APPLY_BATCH], None, ns)
        if calls % APPLY_CALLS_PER_PIPELINE == 0:
            pipe.execute()
    pipe.execute()
    return ns


def write_rebuild(client: redis.Redis, states: list[TokenState]) -> str:
    """Through the rebuild's bulk writer, into a building namespace."""
    from oauthledger.events import rebuild as rb
    from oauthledger.events.rebuild_lock import RedisLock

    keys = KeyLayout()
    ns = keys.namespace(1)
    client.set(keys.building, ns)
    replay = rb.RowReplay()
    fields = rb._ROW_FIELDS  # the folded row: the fields the read model stores
    for s in states:
        replay.tokens[s.token] = [getattr(s, name) for name in fields]
    lock = RedisLock(client, keys.rebuild_lock, rb.REBUILD_LOCK_TTL_MS)
    assert lock.acquire()
    hours = replay.expiry_hours()
    calls = rb._chain(replay.key_calls(ns, rb._WRITE_CHUNK),
                      rb.index_calls(ns, hours, rb._WRITE_CHUNK))
    rb._write_bulk(client, keys, calls, lock)
    lock.release()
    return ns


# -- measuring -----------------------------------------------------------------------------


def size_class(n: int) -> int:
    """jemalloc's size class for an allocation of ``n`` bytes (x86_64, 16-byte quantum):
    8, 16, 32, 48, ... 128, then four classes per doubling."""
    if n <= 8:
        return 8
    if n <= 128:
        return (n + 15) // 16 * 16
    p = 1 << ((n - 1).bit_length() - 1)
    step = p // 4
    return (n + step - 1) // step * step


def sds_size(length: int) -> int:
    """Allocated bytes of an sds string of ``length`` bytes (header + string + NUL)."""
    header = 1 if length < 32 else 3 if length < 256 else 5
    return size_class(header + length + 1)


EMBSTR_LIMIT = 44  # Redis 7.0 OBJ_ENCODING_EMBSTR_SIZE_LIMIT: robj + sds in 64 bytes


def value_size(length: int) -> int:
    """Allocated bytes of a string value of ``length`` bytes: an embedded string (robj
    and sds type 8 in one allocation) up to 44 bytes, else a robj and an sds."""
    if length <= EMBSTR_LIMIT:
        return size_class(16 + 3 + length + 1)
    return 16 + sds_size(length)


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(path: str, states: list[TokenState]) -> dict[str, Any]:
    """Write ``states`` on a fresh server through ``path``; the figures per token."""
    n = len(states)
    with redis_server() as client:
        # Load the scripts (and Lua's own state) before the baseline.
        ReadModel(client, KeyLayout("warmup")).apply([], namespace="warmup:p0")
        before = _used(client)
        writer = redis.Redis(connection_pool=redis.ConnectionPool(
            host=client.connection_pool.connection_kwargs["host"],
            port=client.connection_pool.connection_kwargs["port"]))
        started = time.perf_counter()
        ns = (write_apply if path == "apply" else write_rebuild)(writer, states)
        seconds = time.perf_counter() - started
        writer.close()  # its query buffer must not count
        time.sleep(0.2)
        after = _used(client)
        stats = client.memory_stats()
        keyspace = client.info("keyspace").get("db0", {})
        sample = states[:: max(1, n // 2000)]
        names = [KeyLayout.entity(ns, "t", s.token) for s in sample]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
            pipe.strlen(name)
            pipe.ttl(name)
        raw = pipe.execute()
        usage = raw[0::3]
        value_len = raw[1::3]
        with_ttl = sum(1 for t in raw[2::3] if t >= 0) / len(sample)
        index_bytes = client.memory_usage(KeyLayout.expiry(ns), samples=0) or 0
        buckets = 0
        encodings: set[str] = set()
        for key in client.scan_iter(KeyLayout.expiry_bucket_prefix(ns) + "*", count=5000):
            buckets += 1
            index_bytes += client.memory_usage(key, samples=0)
            encodings.add(client.object("encoding", key).decode())
        keys_total = int(keyspace.get("keys", 0))
        expires_total = int(keyspace.get("expires", 0))
        db = stats.get("db.0", {})
        # MEMORY STATS: main = keys*(dictEntry 24 + robj 16) + slots*8; expires =
        # expires*24 + slots*8 (struct sizes, not allocation classes).
        main_slots = (int(db.get("overhead.hashtable.main", 0)) - keys_total * 40) / 8
        exp_slots = (int(db.get("overhead.hashtable.expires", 0)) - expires_total * 24) / 8
    key_len = statistics.mean(len(x) for x in names)
    parts = {
        "key name (sds)": statistics.mean(sds_size(len(x)) for x in names),
        "main dict entry": size_class(24),
        "value: robj + sds (one allocation if embedded)": statistics.mean(
            value_size(v) for v in value_len),
        "expires dict entry": with_ttl * size_class(24),
        "hash-table slots (main + expires)": (main_slots + exp_slots) * 8 / n,
        "expiry index share": index_bytes / n,
    }
    per_token = (after - before) / n
    parts["rest (allocator, tables' other keys)"] = per_token - sum(parts.values())
    return {
        "path": path,
        "tokens": n,
        "used_memory_per_token": round(per_token, 1),
        "memory_usage_token_key": round(statistics.mean(usage), 1),
        "expiry_index_per_token": round(index_bytes / n, 1),
        "expiry_buckets": buckets,
        "expiry_bucket_encodings": sorted(encodings),
        "key_length": round(key_len, 1),
        "value_length": round(statistics.mean(value_len), 1),
        "value_length_range": [min(value_len), max(value_len)],
        "values_embedded": round(
            sum(1 for v in value_len if v <= EMBSTR_LIMIT) / len(value_len), 3),
        "keys_with_ttl": round(with_ttl, 3),
        "keys_in_db": keys_total,
        "main_dict_slots": int(main_slots),
        "expires_dict_slots": int(exp_slots),
        "write_seconds": round(seconds, 1),
        "breakdown": {k: round(v, 1) for k, v in parts.items()},
    }


# -- layouts not in production (--experiments) ----------------------------------------------


def experiments(states: list[TokenState]) -> dict[str, float]:
    """``used_memory`` per token of layouts the product does not use, each on a fresh
    server (docs/read-model.md, "Memory", why 200 bytes is out of reach): the expiry
    index's members and scores in other encodings (buckets of 40 members, one hour),
    and token values in listpack hashes of ~50 tokens instead of one string key each."""
    import base64

    from oauthledger.events.readmodel import encode

    n = len(states)
    rnd = random.Random(2)
    raw = [base64.urlsafe_b64decode(s.token + "==") for s in states]
    variants = {
        "index: 32-char members, ms scores": ([s.token.encode() for s in states], 3_600_000),
        "index: raw 24-byte members + marker, ms scores": ([b"\xff" + r for r in raw],
                                                            3_600_000),
        "index: 32-char members, second scores": ([s.token.encode() for s in states], 3600),
        "index: raw members, second scores": ([b"\xff" + r for r in raw], 3600),
    }
    out: dict[str, float] = {}
    for name, (members, scale) in variants.items():
        with redis_server() as client:
            before = _used(client)
            pipe = client.pipeline(transaction=False)
            for b in range(0, n, 40):
                pipe.zadd(f"ol:p0:x:494000:{b // 40}",
                          {m: rnd.randrange(scale) for m in members[b:b + 40]})
                if b % 20000 == 0:
                    pipe.execute()
            pipe.execute()
            out[name] = round((_used(client) - before) / n, 1)
    with redis_server() as client:
        client.config_set("hash-max-listpack-value", 128)
        before = _used(client)
        buckets: dict[int, dict[str, bytes]] = {}
        for s in states:
            bucket = int.from_bytes(base64.urlsafe_b64decode(s.token + "==")[-4:], "little")
            buckets.setdefault(bucket % max(1, n // 50), {})[s.token] = (
                b"%d|%b" % (s.version, encode(s)))
        pipe = client.pipeline(transaction=False)
        for i, (bucket, mapping) in enumerate(buckets.items()):
            pipe.hset(f"ol:p0:tb:{bucket}", mapping=mapping)
            if i % 500 == 0:
                pipe.execute()
        pipe.execute()
        out["values in listpack hashes of ~50 (no index)"] = round(
            (_used(client) - before) / n, 1)
    return out


def report(fig: dict[str, Any]) -> None:
    """Print one path's figures as text."""
    n = fig["tokens"]
    print(f"{fig['path']}: {n:,} active access tokens written in {fig['write_seconds']} s"
          f" ({fig['keys_in_db']:,} keys in the db, {fig['expiry_buckets']:,} expiry "
          f"buckets, {'/'.join(fig['expiry_bucket_encodings'])})")
    print(f"  INFO used_memory delta: {fig['used_memory_per_token']:.1f} bytes per token")
    print(f"  MEMORY USAGE of a token key: {fig['memory_usage_token_key']:.1f} (key "
          f"{fig['key_length']:.0f} chars, value {fig['value_length']:.1f} bytes, range "
          f"{fig['value_length_range'][0]}-{fig['value_length_range'][1]}, "
          f"{fig['values_embedded']:.0%} embedded; "
          f"{fig['keys_with_ttl']:.0%} with a TTL)")
    print(f"  expiry index share: {fig['expiry_index_per_token']:.1f} bytes per token")
    print("  breakdown (jemalloc classes):")
    for name, value in fig["breakdown"].items():
        print(f"    {name:40s} {value:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--path", choices=("apply", "rebuild", "both"), default="both")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line")
    parser.add_argument("--experiments", action="store_true",
                        help="also measure layouts the product does not use")
    parser.add_argument("--legacy-tokens", action="store_true",
                        help="tokens as issued before derived secrets (32-character "
                             "identifiers, sealed secrets)")
    args = parser.parse_args()
    started = time.perf_counter()
    states = make_tokens(args.tokens, legacy=args.legacy_tokens)
    made = time.perf_counter() - started
    if not args.json:
        print(f"made {args.tokens:,} tokens in {made:.1f} s")
    paths = ["apply", "rebuild"] if args.path == "both" else [args.path]
    figures: dict[str, Any] = {}
    for path in paths:
        figures[path] = measure(path, states)
        if not args.json:
            report(figures[path])
    extra = experiments(states) if args.experiments else None
    if extra and not args.json:
        print("layouts not in production, used_memory delta per token:")
        for name, value in extra.items():
            print(f"  {name:50s} {value:7.1f}")
    if args.json:
        first = figures[paths[0]]
        out = {"tokens": args.tokens, "used_memory_per_token": first["used_memory_per_token"],
               "path": paths[0], "paths": figures, "redis_server": _server_version()}
        if extra:
            out["experiments"] = extra
        print(json.dumps(out))


def _server_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return "unknown"
    return out.split(" v=")[1].split()[0] if " v=" in out else out.strip()


if __name__ == "__main__":
    main()
