"""Inputs bench/fuzz.py found escaping their parser's documented error tree, kept as regression tests."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.protocol import cms
from pomona.protocol.errors import CmsError


@pytest.fixture(scope="module")
def signed() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cms.sign(b"content", cert, key)


class TestCms:
    @pytest.mark.parametrize("version", [3, 10, 66])
    def test_certificate_of_unknown_version(self, signed: bytes, version: int) -> None:
        """A signer certificate whose X.509 version is unknown is a CmsError (cryptography's InvalidVersion escaped)."""
        v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (v3): the certificate's version field
        assert v3 in signed
        bad = signed.replace(v3, v3[:-1] + bytes([version]), 1)
        with pytest.raises(CmsError):
            cms.verify(bad)
