"""The sealer: version-2 values name their key, a keyring opens older keys' values, version 1 still opens."""

from __future__ import annotations

import os

import pytest

from pomona.domain.errors import ServerKeyError
from pomona.domain.reasons import ReasonCode
from pomona.pki.apns_certs import SecretBox
from pomona.pki.sealing import KeyringSealer

A, B = os.urandom(32), os.urandom(32)


class TestKeyringSealer:
    def test_round_trip_names_the_key(self) -> None:
        """A sealed value opens in its context, starts with version 2 and the sealing key's id."""
        s = KeyringSealer([A])
        sealed = s.seal(b"-----BEGIN PRIVATE KEY-----", "ca-key:t1")
        assert sealed[:1] == b"\x02" and sealed[1:9].hex() == s.key_id and b"PRIVATE" not in sealed
        assert s.open(sealed, "ca-key:t1") == b"-----BEGIN PRIVATE KEY-----"
        assert s.is_sealed(sealed) and s.is_current(sealed) and not s.is_sealed(b"-----BEGIN")

    def test_another_context_or_a_changed_byte_does_not_open(self) -> None:
        """The context binds the value to its place; a changed byte is refused."""
        s = KeyringSealer([A])
        sealed = s.seal(b"secret", "ca-key:t1")
        with pytest.raises(ServerKeyError):
            s.open(sealed, "ca-key:t2")
        tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
        with pytest.raises(ServerKeyError):
            s.open(tampered, "ca-key:t1")

    def test_a_ring_opens_the_old_keys_values_and_seals_under_the_first(self) -> None:
        """After a rotation the ring [new, old] opens both; a server without the old key says which key."""
        old = KeyringSealer([A]).seal(b"secret", "setting:x")
        ring = KeyringSealer([B, A])
        assert ring.open(old, "setting:x") == b"secret" and not ring.is_current(old)
        assert ring.is_current(ring.seal(b"secret", "setting:x"))
        with pytest.raises(ServerKeyError) as raised:
            KeyringSealer([B]).open(old, "setting:x")
        assert raised.value.reason is ReasonCode.SERVER_KEY_MISMATCH
        assert KeyringSealer([A]).key_id in raised.value.detail

    def test_version_1_push_keys_still_open(self) -> None:
        """A push key sealed by the earlier box (raw server key, no key id) opens, and is not current."""
        v1 = SecretBox(A).encrypt(b"push key", b"push-key:t1")
        s = KeyringSealer([A])
        assert s.open(v1, "push-key:t1") == b"push key" and s.is_sealed(v1) and not s.is_current(v1)
        with pytest.raises(ServerKeyError):
            KeyringSealer([B]).open(v1, "push-key:t1")
