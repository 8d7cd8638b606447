"""Micro-benchmark of the protected-resource hot path against real Redis.

Prints µs per call of ``Authenticator.authenticate_resource`` (Redis lookup, checks,
signature, nonce) for HMAC-SHA1 and RSA-SHA1, plus the parts: parsing the request,
the lookup round trip (without the nonce), signature verification. Requests are signed
beforehand, each with its own nonce, so signing is not measured.

    .venv/bin/python bench/hot_path_bench.py [--requests 3000]

Redis: OAUTHLEDGER_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); keys go under a
unique prefix and are deleted afterwards. The store is a throw-away SQLite file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oauthledger.events import catalog as ev
from oauthledger.events.keys import KeyLayout
from oauthledger.events.migrate import upgrade
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.state import consumer_stream, fold_stream, token_stream
from oauthledger.events.store import EventStore
from oauthledger.services.oauth.authenticator import Authenticator
from oauthledger.services.oauth.request import SignedRequest, parse_request
from oauthledger.services.oauth.signatures import base_string, load_public_key, sign, verify

URL = "https://jira.example.com/rest/api/2/issue/ABC-1?expand=names"


def _header(oauth: dict[str, str]) -> str:
    return "OAuth " + ", ".join(f'{k}="{quote(v, safe="~")}"' for k, v in oauth.items())


def make_requests(n: int, consumer_key: str, token: str, method: str, *, secret: str = "",
                  token_secret: str = "", private_pem: str | None = None
                  ) -> list[tuple[str, dict[str, str]]]:
    """n (url, headers) pairs, each signed with a fresh nonce."""
    out = []
    ts = str(int(time.time()))
    for i in range(n):
        oauth = {
            "oauth_consumer_key": consumer_key, "oauth_token": token,
            "oauth_signature_method": method, "oauth_timestamp": ts,
            "oauth_nonce": f"n{i}x{uuid.uuid4().hex[:8]}", "oauth_version": "1.0",
        }
        unsigned = parse_request("GET", URL, {"Authorization": _header(
            {**oauth, "oauth_signature": "x"})}, b"", None)
        oauth["oauth_signature"] = sign(method, base_string(unsigned), consumer_secret=secret,
                                         token_secret=token_secret, private_key_pem=private_pem)
        out.append((URL, {"Authorization": _header(oauth)}))
    return out


def timed(fn, items) -> float:
    """Median of 5 rounds, µs per item."""
    rounds = []
    chunk = max(1, len(items) // 5)
    for r in range(5):
        part = items[r * chunk:(r + 1) * chunk]
        t0 = time.perf_counter()
        for item in part:
            fn(item)
        rounds.append((time.perf_counter() - t0) / len(part) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    n = args.requests

    client = redis.Redis.from_url(
        os.environ.get("OAUTHLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    layout = KeyLayout("olbench-" + uuid.uuid4().hex[:8])
    read_model = ReadModel(client, layout)
    # What a front end's start does: the nonce memory starts before anything is signed
    # (docs/oauth.md, "Replays across restarts").
    read_model.start_nonce_epoch(int(time.time()))
    tmp = Path(tempfile.mkdtemp())
    store = EventStore.from_url(f"sqlite:///{tmp / 'events.sqlite3'}")
    upgrade(store.engine)
    sealer = Sealer(KeyRing.generate())
    settings = Settings(data_dir=tmp, database_url="unused", redis_url="redis://x",
                        broker_url=None, secret_key_file=tmp / "k.json", base_url=None)
    auth = Authenticator(read_model=read_model, store=store, sealer=sealer, settings=settings)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def setup(ck: str, methods: tuple[str, ...]) -> str:
        store.append(consumer_stream(ck), 0, [ev.ConsumerRegistered(
            key=ck, name=ck, public_key=public_pem, secret_sealed=sealer.seal("csecret"),
            signature_methods=methods)])
        tok = "at-" + uuid.uuid4().hex
        store.append(token_stream(tok), 0, [ev.AccessTokenIssued(
            token=tok, consumer_key=ck, user="alice", secret_sealed=sealer.seal("tsecret"),
            session_handle_hash=hashlib.sha256(b"h").hexdigest(),
            expires_at=time.time() + 86400, authorization_expires_at=time.time() + 86400)])
        recs = store.read_streams([consumer_stream(ck), token_stream(tok)])
        read_model.apply([fold_stream(r) for r in recs.values()], checkpoint=store.head())
        return tok

    try:
        kw = client.connection_pool.connection_kwargs
        ping_us = timed(lambda _: client.ping(), range(n))
        print(f"hot path, {n} requests each, Redis {kw.get('host')}:{kw.get('port')} "
              f"(PING round trip {ping_us:.1f} µs)")
        for method in ("HMAC-SHA1", "RSA-SHA1"):
            ck = f"bench-{method.lower()}"
            tok = setup(ck, (method,))
            raw = make_requests(n, ck, tok, method, secret="csecret", token_secret="tsecret",
                                private_pem=private_pem)
            reqs: list[SignedRequest] = [parse_request("GET", u, h, b"", None) for u, h in raw]
            auth.authenticate_resource(reqs[0], https=True)  # warm caches
            parse_us = timed(lambda item: parse_request("GET", item[0], item[1], b"", None),
                             raw)
            lookup_us = timed(lambda r: read_model.lookup(r.consumer_key, r.token), reqs)
            verify_us = timed(lambda r: verify(r, consumer_secret="csecret",
                                               token_secret="tsecret",
                                               public_key=load_public_key(public_pem)), reqs)
            found = read_model.lookup(ck, tok)
            checks_us = timed(lambda r, c=found.consumer, t=found.token: auth.check_signed(
                r, c, t, https=True, token_kind="access"), reqs)
            full_us = timed(lambda r: auth.authenticate_resource(r, https=True), reqs[1:])
            print(f"  {method:10s} authenticate_resource {full_us:7.1f} µs/call  "
                  f"(parse {parse_us:.1f}, lookup round trip {lookup_us:.1f}, "
                  f"verify {verify_us:.1f}, check_signed without Redis {checks_us:.1f}; "
                  "the rest: the nonce riding in the lookup's pipeline and glue)")
    finally:
        for k in client.scan_iter(layout.pattern(), count=1000):
            client.delete(k)
        store.engine.dispose()


if __name__ == "__main__":
    main()
