"""events/sealing.py: AES-256-GCM seals with key ids, the key ring and its key file."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import stat
from pathlib import Path

import pytest

from oauthledger.events.errors import SealingError
from oauthledger.events.sealing import KeyRing, Sealer, _b64d, _b64e, load_key_ring, save_key_ring


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(KeyRing.generate())


@pytest.mark.parametrize("secret", ["s3cr3t", "", "ünïcødé ✓", "x" * 10_000])
def test_round_trip(sealer: Sealer, secret: str) -> None:
    sealed = sealer.seal(secret)
    assert sealed.startswith(f"s1.{sealer.ring.active}.")
    assert sealer.open(sealed) == secret
    if secret:
        assert secret not in sealed


def test_same_secret_seals_differently_each_time(sealer: Sealer) -> None:
    a, b = sealer.seal("same"), sealer.seal("same")
    assert a != b  # fresh 96-bit nonce per seal
    assert sealer.open(a) == sealer.open(b) == "same"


def test_every_bit_of_the_body_is_authenticated(sealer: Sealer) -> None:
    sealed = sealer.seal("secret")
    prefix, kid, body = sealed.split(".")
    raw = _b64d(body)
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises(SealingError, match="tampered"):
            sealer.open(f"{prefix}.{kid}.{_b64e(bytes(flipped))}")


def test_truncated_body_is_refused(sealer: Sealer) -> None:
    prefix, kid, body = sealer.seal("secret").split(".")
    for cut in (_b64e(_b64d(body)[:-1]), _b64e(_b64d(body)[:12]), ""):
        with pytest.raises(SealingError):
            sealer.open(f"{prefix}.{kid}.{cut}")


def test_unknown_key_id_is_named(sealer: Sealer) -> None:
    other = Sealer(KeyRing.generate())
    sealed = other.seal("secret")
    with pytest.raises(SealingError, match=other.ring.active):
        sealer.open(sealed)


def test_moving_a_seal_to_another_key_id_fails(sealer: Sealer) -> None:
    ring = sealer.ring
    old = ring.active
    ring.rotate()
    both = Sealer(ring)
    _, _, body = both.seal("secret").split(".")
    with pytest.raises(SealingError, match="tampered"):
        both.open(f"s1.{old}.{body}")


@pytest.mark.parametrize("bad", ["plaintext", "s1.only-two", "s2.kabc.AAAA", None, 42])
def test_values_that_are_not_seals(sealer: Sealer, bad) -> None:
    with pytest.raises(SealingError):
        sealer.open(bad)


def test_rotation_keeps_old_keys_to_open(sealer: Sealer) -> None:
    ring = sealer.ring
    old_kid = ring.active
    old = sealer.seal("before")
    new_kid = ring.rotate()
    assert new_kid != old_kid and ring.active == new_kid and set(ring.keys) == {old_kid, new_kid}
    rotated = Sealer(ring)
    new = rotated.seal("after")
    assert Sealer.key_id(old) == old_kid and Sealer.key_id(new) == new_kid
    assert rotated.open(old) == "before" and rotated.open(new) == "after"


def test_key_file_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    ring = load_key_ring(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(ring.keys[ring.active]) == 32
    assert not path.with_name("keys.json.tmp").exists()
    # Loading again returns the same ring; nothing regenerated.
    again = load_key_ring(path, create=True)
    assert again.active == ring.active and again.keys == ring.keys


def test_saved_ring_keeps_mode_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = load_key_ring(path)
    path.chmod(0o644)
    ring.rotate()
    save_key_ring(path, ring)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key_ring(path, create=False)
    assert loaded.active == ring.active and loaded.keys == ring.keys


def test_missing_key_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(SealingError, match="does not exist"):
        load_key_ring(tmp_path / "absent.json", create=False)


def test_unreadable_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.mkdir()  # a directory where the file should be: reading fails cleanly
    with pytest.raises(SealingError, match="cannot read key file"):
        load_key_ring(path)


KEY = _b64e(b"k" * 32)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        "{}",
        json.dumps({"active": "k1"}),
        json.dumps({"keys": {"k1": KEY}}),
        json.dumps({"active": "k2", "keys": {"k1": KEY}}),
        json.dumps({"active": "k1", "keys": {"k1": _b64e(b"short")}}),
        json.dumps({"active": "k1", "keys": {"k1": "!!not base64!!"}}),
        json.dumps({"active": "k1", "keys": ["k1"]}),
    ],
)
def test_malformed_key_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    with pytest.raises(SealingError, match="key file"):
        load_key_ring(path)


def test_well_formed_key_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": KEY}}))
    ring = load_key_ring(path)
    assert ring.active == "k1" and ring.keys["k1"] == b"k" * 32


# -- following the key file (rotation without a restart) ------------------------------


def test_a_sealer_over_the_file_seals_with_the_rotated_key(tmp_path: Path) -> None:
    """What `oauthledger keys rotate` does to the file (load, rotate, save atomically)
    reaches a running sealer at its next seal; old seals still open."""
    path = tmp_path / "keys.json"
    running = Sealer.from_file(path)
    old_kid = running.ring.active
    before = running.seal("before")

    ring = load_key_ring(path, create=False)  # another process rotates
    new_kid = ring.rotate()
    save_key_ring(path, ring)

    after = running.seal("after")
    assert Sealer.key_id(before) == old_kid and Sealer.key_id(after) == new_kid
    assert running.open(before) == "before" and running.open(after) == "after"


def _hkdf_sha256(key: bytes, info: bytes) -> bytes:
    """RFC 5869 written out (no salt: a string of zeros), for a check independent of
    the ``cryptography`` HKDF the sealer uses."""
    prk = hmac.new(b"\0" * 32, key, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_token_secrets_are_derived_from_the_token() -> None:
    ring = KeyRing(active="k00000001", keys={"k00000001": bytes(range(32))})
    sealer = Sealer(ring)
    secret, ref = sealer.token_secret("tok-1")
    assert ref == "d1.k00000001.tok-1"
    # HMAC-SHA256 of the token under HKDF(key, "oauthledger-token-secret-v1"), 24 bytes.
    dkey = _hkdf_sha256(bytes(range(32)), b"oauthledger-token-secret-v1")
    want = hmac.new(dkey, b"tok-1", hashlib.sha256).digest()[:24]
    assert secret == _b64e(want) and len(secret) == 32
    # Not the sealing key used as an HMAC key: the two uses are separated.
    assert secret != _b64e(hmac.new(bytes(range(32)), b"tok-1", hashlib.sha256).digest()[:24])
    assert sealer.open(ref) == secret
    assert Sealer(KeyRing.from_json(ring.to_json())).open(ref) == secret  # another process
    assert sealer.token_secret("tok-2")[0] != secret
    assert Sealer(KeyRing.generate()).token_secret("tok-1")[0] != secret


def test_derived_secrets_follow_rotation_and_name_missing_keys(sealer: Sealer) -> None:
    old_kid = sealer.ring.active
    old_secret, old_ref = sealer.token_secret("tok")
    sealer.ring.rotate()
    sealer._use(sealer.ring)
    new_secret, new_ref = sealer.token_secret("tok2")
    assert new_ref.split(".")[1] == sealer.ring.active != old_kid
    assert sealer.open(old_ref) == old_secret and sealer.open(new_ref) == new_secret
    with pytest.raises(SealingError, match="not in the key ring"):
        Sealer(KeyRing.generate()).open(old_ref)
    assert Sealer.key_id(old_ref) == old_kid


def test_a_sealer_derives_under_a_key_a_newer_process_added(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    running = Sealer.from_file(path)
    ring = load_key_ring(path, create=False)
    ring.rotate()
    save_key_ring(path, ring)
    secret, ref = Sealer.from_file(path, create=False).token_secret("tok")
    assert running.open(ref) == secret


def test_a_sealer_opens_what_a_newer_process_sealed(tmp_path: Path) -> None:
    """A front end that has not sealed since the rotation still opens a consumer secret
    sealed by a process that already uses the new key."""
    path = tmp_path / "keys.json"
    running = Sealer.from_file(path)
    ring = load_key_ring(path, create=False)
    ring.rotate()
    save_key_ring(path, ring)
    newer = Sealer.from_file(path, create=False)
    sealed = newer.seal("consumer secret")
    assert running.open(sealed) == "consumer secret"


def test_an_unreadable_key_file_keeps_the_ring_in_use(tmp_path: Path) -> None:
    """A broken or vanished file mid-flight does not stop sealing with the keys in use;
    a value under a key nobody has is still refused by name."""
    path = tmp_path / "keys.json"
    running = Sealer.from_file(path)
    kid = running.ring.active
    path.write_text("{not json")
    assert Sealer.key_id(running.seal("x")) == kid
    path.unlink()
    assert running.open(running.seal("y")) == "y"
    stranger = Sealer(KeyRing.generate()).seal("z")
    with pytest.raises(SealingError, match="not in the key ring"):
        running.open(stranger)


def test_a_sealer_without_a_file_never_reloads(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    sealer = Sealer(ring)
    assert sealer.ring is ring and Sealer.key_id(sealer.seal("x")) == ring.active


def _load_active_key(path: str, barrier: multiprocessing.synchronize.Barrier,
                     out: multiprocessing.queues.Queue[str]) -> None:
    barrier.wait()
    out.put(load_key_ring(Path(path)).active)


def test_processes_creating_the_key_file_at_once_share_one_ring(tmp_path: Path) -> None:
    """gunicorn's workers on a new installation all generate the key file at the same
    moment: one ring wins, every process loads that one, nothing is left behind."""
    path = tmp_path / "secret-keys.json"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    out = ctx.Queue()
    procs = [ctx.Process(target=_load_active_key, args=(str(path), barrier, out))
             for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    keys = {out.get(timeout=5) for _ in procs}
    assert keys == {load_key_ring(path).active}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret-keys.json"]
