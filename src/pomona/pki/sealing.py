"""Secrets at rest: AES-256-GCM under keys derived (HKDF-SHA256) from the server key (ports.Sealer).

Sealed form (version 2)::

    b"\\x02" + key id (8 bytes) + nonce (12 bytes) + ciphertext + tag (16 bytes)

The key id names the server key that sealed the value (HKDF of the server key with another ``info``),
so a keyring of several server keys can open values sealed under any of them while sealing under the
first: that is how a key rotates (``pomona server rotate-key``, docs/security.md). Version 1 is the
earlier push-key box (``pki.apns_certs.SecretBox``: the raw server key, no key id); it is still opened,
with every key of the ring, and re-sealed as version 2 at start-up.

``context`` is the associated data: it binds a value to its place (``ca-key:<tenant id>``,
``setting:<key>``), so a sealed value copied to another row does not open there. The contexts in use:

==========================  ===============================================================
``ca-key:<tenant id>``      a tenant device CA's private key (tenants.ca_key_pem)
``push-key:<tenant id>``    the push certificate's private key (tenants.push_key_pem)
``pending-push-key:<id>``   the key of a pending push CSR (tenants.push_pending_key)
``webhook:<tenant id>``     a webhook's signing secret (webhooks.secret)
``setting:<key>``           every server-wide setting (session secret, profile signing identity, OIDC)
``abm-key:<tenant id>``     the tenant's Apple Business Manager key (abm_keypairs.key_pem)
``abm-token:<token id>``    an ABM server token's OAuth credentials (abm_tokens.secret)
==========================  ===============================================================
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pomona.domain.errors import ServerKeyError

V1: Final = b"\x01"
V2: Final = b"\x02"
KEY_ID_LEN: Final = 8
_NONCE: Final = 12
_TAG: Final = 16
SERVER_KEY_FILE: Final = "server.key"
RETIRED_KEY_FILE: Final = "server.key.old"


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


class _Key:
    def __init__(self, server_key: bytes) -> None:
        if len(server_key) != 32:
            raise ServerKeyError(f"the server key must be 32 bytes, not {len(server_key)}")
        self.id = _hkdf(server_key, b"pomona key id v2")[:KEY_ID_LEN]
        self.v2 = AESGCM(_hkdf(server_key, b"pomona seal v2"))
        self.v1 = AESGCM(server_key)


class KeyringSealer:
    """Seals under the first server key of the ring; opens values sealed under any of them (ports.Sealer)."""

    def __init__(self, server_keys: Sequence[bytes]) -> None:
        if not server_keys:
            raise ServerKeyError("no server key")
        self._keys = [_Key(k) for k in server_keys]

    @property
    def key_id(self) -> str:
        """The sealing key's id (hex), as printed by ``pomona server rotate-key``."""
        return self._keys[0].id.hex()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        key = self._keys[0]
        nonce = secrets.token_bytes(_NONCE)
        return V2 + key.id + nonce + key.v2.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        aad = context.encode()
        if sealed[:1] == V2 and len(sealed) >= 1 + KEY_ID_LEN + _NONCE + _TAG:
            kid, nonce, body = sealed[1:9], sealed[9:21], sealed[21:]
            key = next((k for k in self._keys if k.id == kid), None)
            if key is None:
                raise ServerKeyError(
                    f"{context} was sealed under server key {kid.hex()}, which this server does not have",
                    key_id=kid.hex(),
                )
            try:
                return key.v2.decrypt(nonce, body, aad)
            except InvalidTag:
                raise ServerKeyError(f"{context} does not open: tampered with or moved") from None
        if sealed[:1] == V1 and len(sealed) >= 1 + _NONCE + _TAG:
            for key in self._keys:
                try:
                    return key.v1.decrypt(sealed[1:13], sealed[13:], aad)
                except InvalidTag:
                    continue
            raise ServerKeyError(f"{context} does not open with any server key (version 1)")
        raise ServerKeyError(f"{context} is not a sealed value")

    def is_sealed(self, value: bytes) -> bool:
        """Whether ``value`` is sealed (any version): plaintext PEM, JSON or tokens never start so."""
        return value[:1] in (V1, V2)

    def is_current(self, value: bytes) -> bool:
        """Whether ``value`` is sealed under the sealing key, in the current version."""
        return value[:1] == V2 and value[1:9] == self._keys[0].id


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != 32:
        raise ServerKeyError(f"{path} must hold 32 bytes, not {len(key)}", path=str(path))
    return key


def server_keys(data_dir: Path, key: bytes | None) -> list[bytes]:
    """The keyring: ``key`` (POMONA_SECRET_KEY) when given, else ``<data_dir>/server.key`` (created
    0600 on first use); then ``server.key.old``, the key a rotation replaced, while it exists."""
    data_dir = Path(data_dir)
    retired = data_dir / RETIRED_KEY_FILE
    old = [_read_key(retired)] if retired.exists() else []
    if key is not None:
        if len(key) != 32:
            raise ServerKeyError(f"the server key must be 32 bytes, not {len(key)}")
        return [key, *old]
    path = data_dir / SERVER_KEY_FILE
    try:
        _write_new(path, secrets.token_bytes(32))
    except FileExistsError:
        pass
    os.chmod(path, 0o600)
    return [_read_key(path), *old]


def rotate_key_files(data_dir: Path) -> None:
    """Step 1 of a rotation: ``server.key`` becomes ``server.key.old`` and a new ``server.key`` is written.

    A rotation interrupted after this step (``server.key.old`` exists) is finished by running it again:
    the key files are left as they are and the values are re-sealed under ``server.key``."""
    data_dir = Path(data_dir)
    path, retired = data_dir / SERVER_KEY_FILE, data_dir / RETIRED_KEY_FILE
    if retired.exists():
        return  # an earlier rotation stopped before re-sealing: finish that one
    new = data_dir / (SERVER_KEY_FILE + ".new")
    new.unlink(missing_ok=True)
    _write_new(new, secrets.token_bytes(32))
    os.link(path, retired)  # the old key stays readable until every value is re-sealed
    os.replace(new, path)


def retire_old_key(data_dir: Path) -> None:
    """Step 3 of a rotation, once every value is sealed under the new key: forget the old one."""
    (Path(data_dir) / RETIRED_KEY_FILE).unlink(missing_ok=True)


__all__ = ["KeyringSealer", "retire_old_key", "rotate_key_files", "server_keys"]
