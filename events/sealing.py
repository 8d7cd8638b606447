"""Sealing secrets before they enter an event (AES-256-GCM, ``cryptography``), and
deriving the secrets of OAuth tokens instead of storing them.

A sealed value is the text ``s1.<key id>.<base64url(nonce || ciphertext+tag)>``. The key id
names the key in the key ring, so keys rotate: new seals use the active key, old ones
still open with the key they name. Events store and hash the sealed text, so the hash
chain still verifies after a key is destroyed (docs/design.md, "Sealed secrets").

A token secret the service hands out is not stored at all: it is derived from the token
identifier with a key of the ring (HMAC-SHA256 under a key HKDF-separated from the
sealing key), and the event holds ``d1.<key id>.<token>`` in its place, which
:meth:`Sealer.open` turns back into the secret like a sealed value. The read model then
keeps four bytes per token where a sealed secret took 64 (docs/read-model.md, "Memory";
what it means for an attacker: docs/security.md, "Someone with file or database access").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oauthledger.events.errors import SealingError

SEALED_PREFIX = "s1"
# Associated data binds a ciphertext to this purpose: a sealed blob from another system
# using the same key cannot be passed off as one of ours.
_AAD = b"oauthledger-sealed-secret"
DERIVED_PREFIX = "d1"
# The text of either: <prefix>.<key id>.<base64url body, or the token identifier>.
_REFERENCE = re.compile(r"^(s1|d1)\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+={0,2}$")
# HKDF's info separates the derivation key from the sealing key it comes from: the same
# 256-bit key never serves as both an AES key and an HMAC key.
_DERIVE_INFO = b"oauthledger-token-secret-v1"
TOKEN_SECRET_BYTES = 24  # 192 bits, 32 URL-safe characters: as long as a random secret


def reference(value: object) -> tuple[str, str] | None:
    """``(prefix, key id)`` of a well-formed sealed value (:data:`SEALED_PREFIX`) or
    derived secret's reference (:data:`DERIVED_PREFIX`), without opening it; None for
    anything else."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    return (match.group(1), match.group(2)) if match else None


def _derivation_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_DERIVE_INFO).derive(key)


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class KeyRing:
    """The sealing keys by id, and which one new seals use."""

    active: str
    keys: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize for the key file."""
        return json.dumps(
            {"active": self.active, "keys": {k: _b64e(v) for k, v in self.keys.items()}},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse a key file; raises :class:`SealingError` if it is malformed."""
        try:
            raw = json.loads(text)
            keys = {str(k): _b64d(v) for k, v in raw["keys"].items()}
            ring = cls(active=str(raw["active"]), keys=keys)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SealingError(f"key file is malformed: {exc}") from None
        if ring.active not in ring.keys:
            raise SealingError(f"key file names active key {ring.active!r} but lacks it")
        if any(len(k) != 32 for k in ring.keys.values()):
            raise SealingError("key file holds a key that is not 256 bits")
        return ring

    @classmethod
    def generate(cls) -> KeyRing:
        """A new ring with one fresh 256-bit key."""
        kid = _new_key_id()
        return cls(active=kid, keys={kid: AESGCM.generate_key(bit_length=256)})

    def add_key(self) -> str:
        """Add a new key without making it active (a staged rotation); return its id."""
        kid = _new_key_id()
        while kid in self.keys:
            kid = _new_key_id()
        self.keys[kid] = AESGCM.generate_key(bit_length=256)
        return kid

    def activate(self, kid: str) -> None:
        """Make the key ``kid`` of this ring the one new seals use."""
        if kid not in self.keys:
            raise SealingError(f"key {kid!r} is not in the key file")
        self.active = kid

    def rotate(self) -> str:
        """Add a new key, make it active, and return its id. Old keys stay to open."""
        kid = self.add_key()
        self.activate(kid)
        return kid


def _new_key_id() -> str:
    return "k" + secrets.token_hex(4)


def _private_temp(path: Path, text: str) -> str:
    """``text`` in a new file (mode 0600, a name of its own) beside ``path``: processes
    writing at the same time never share a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    return tmp


def _write_private(path: Path, text: str) -> None:
    tmp = _private_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _create_private(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` only if nothing is there yet, whole or not at all;
    False when another process created it first. Several processes starting on a new
    installation at once (gunicorn's workers) must end up with one key ring: a ring
    written over another's would leave secrets sealed with a key nobody has."""
    tmp = _private_temp(path, text)
    try:
        os.link(tmp, path)  # atomic, and refuses an existing name
    except FileExistsError:
        return False
    except OSError:
        # A file system without hard links: exclusive create, then the content.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    finally:
        os.unlink(tmp)
    return True


def load_key_ring(path: Path, create: bool = True) -> KeyRing:
    """Load the key file, generating it (mode 0600) when absent and ``create`` is set.
    When several processes generate it at once, one ring wins and all of them load it."""
    if not path.exists():
        if not create:
            raise SealingError(f"key file {path} does not exist")
        ring = KeyRing.generate()
        if _create_private(path, ring.to_json()):
            return ring
    try:
        text = path.read_text()
    except OSError as exc:
        raise SealingError(f"cannot read key file {path}: {exc.strerror}") from None
    return KeyRing.from_json(text)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the key file is replaced (inode, size, mtime), or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def save_key_ring(path: Path, ring: KeyRing) -> None:
    """Write the key file atomically with mode 0600."""
    _write_private(path, ring.to_json())


class _Keys(NamedTuple):
    """What a key ring gives a :class:`Sealer`, swapped as one on reload."""

    ring: KeyRing
    ciphers: dict[str, AESGCM]  # key id -> AES-256-GCM for sealing and opening
    derive_keys: dict[str, bytes]  # key id -> HKDF-separated key for token secrets


class Sealer:
    """Seals and opens secrets with a :class:`KeyRing`.

    Built with :meth:`from_file`, it follows the key file: ``oauthledger keys rotate``
    replaces the file atomically, and a running server or worker seals with the new
    active key from its next seal on, and opens values another process sealed with a
    key it has not loaded yet (a rotated key: new events use it while old ones still open —
    without a restart of every process)."""

    def __init__(self, ring: KeyRing, path: Path | None = None) -> None:
        self._path = path
        self._stamp = _stamp(path) if path is not None else None
        self._use(ring)

    @classmethod
    def from_file(cls, path: Path, create: bool = True) -> Sealer:
        """A sealer over the key file at ``path`` (generated with mode 0600 when absent
        and ``create`` is set) that reloads it when it changes."""
        return cls(load_key_ring(path, create=create), path=path)

    def _use(self, ring: KeyRing) -> None:
        # One assignment swaps ring, ciphers and derivation keys together: a thread
        # sealing meanwhile sees either the old set or the new one, never a mix.
        self._current = _Keys(ring, {kid: AESGCM(key) for kid, key in ring.keys.items()},
                              {kid: _derivation_key(key) for kid, key in ring.keys.items()})

    @property
    def ring(self) -> KeyRing:
        """The key ring in use (after any reload)."""
        return self._current.ring

    def _refresh(self) -> None:
        """Reload the key file if it changed since it was read. A file that cannot be
        read or parsed right now keeps the ring in use: every key in it still opens what
        it sealed, so sealing with it is safe; the next call tries again."""
        if self._path is None:
            return
        stamp = _stamp(self._path)
        if stamp == self._stamp or stamp is None:
            return
        try:
            ring = load_key_ring(self._path, create=False)
        except SealingError:
            return
        self._stamp = stamp
        self._use(ring)

    def seal(self, plaintext: str) -> str:
        """Encrypt ``plaintext`` under the active key."""
        self._refresh()  # one stat(): sealing happens per grant, not per request
        ring, aead = self._current.ring, self._current.ciphers
        kid = ring.active
        nonce = os.urandom(12)
        ct = aead[kid].encrypt(nonce, plaintext.encode("utf-8"), _AAD)
        return f"{SEALED_PREFIX}.{kid}.{_b64e(nonce + ct)}"

    def open(self, sealed: str) -> str:
        """Decrypt a value made by :meth:`seal` with any key of the ring."""
        try:
            prefix, kid, body = sealed.split(".", 2)
        except (ValueError, AttributeError):
            raise SealingError("not a sealed value") from None
        if prefix == DERIVED_PREFIX:
            return self._derive(kid, body)
        if prefix != SEALED_PREFIX:
            raise SealingError(f"unknown sealing format {prefix!r}")
        aead: AESGCM = self._material(kid, "ciphers")
        try:
            raw = _b64d(body)
            return aead.decrypt(raw[:12], raw[12:], _AAD).decode("utf-8")
        except (InvalidTag, ValueError):
            raise SealingError(f"sealed value under key {kid!r} was tampered with") from None

    def token_secret(self, token: str) -> tuple[str, str]:
        """A new token's secret, derived from its identifier ``token`` under the active
        key, and what its event stores in place of the sealed secret
        (``d1.<key id>.<token>``; :meth:`open` gives the secret back)."""
        self._refresh()  # one stat(), as for seal(): per grant, not per request
        kid = self._current.ring.active
        return self._derive(kid, token), f"{DERIVED_PREFIX}.{kid}.{token}"

    def _material(self, kid: str, table: str) -> Any:
        """Key ``kid``'s entry in ``table`` ("ciphers" or "derive_keys" of
        :class:`_Keys`), reloading the key file once when the ring in use lacks it: the
        value was sealed or derived by a process that loaded a newer key file."""
        material = getattr(self._current, table).get(kid)
        if material is None:
            self._refresh()
            material = getattr(self._current, table).get(kid)
        if material is None:
            raise SealingError(f"sealing key {kid!r} is not in the key ring")
        return material

    def _derive(self, kid: str, token: str) -> str:
        key: bytes = self._material(kid, "derive_keys")
        # NIST SP 800-108: a keyed PRF (HMAC-SHA256) of the identifier, truncated. The
        # identifier is random and never reused, so every secret is distinct.
        mac = hmac.new(key, token.encode("utf-8"), hashlib.sha256).digest()
        return _b64e(mac[:TOKEN_SECRET_BYTES])

    @staticmethod
    def key_id(sealed: str) -> str:
        """The key id a sealed value names."""
        return sealed.split(".", 2)[1]
