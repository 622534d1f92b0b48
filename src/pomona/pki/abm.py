"""The Apple Business Manager key pair and server tokens (the crypto of issue 12's first part).

ABM encrypts the server token it hands out (a ``.p7m``: an S/MIME message, ``smime.p7m``, holding a CMS
EnvelopedData) to the certificate the admin uploaded. :func:`make_keypair` makes that certificate and its
RSA key; :func:`decrypt_token` opens the ``.p7m`` with ``cryptography``'s PKCS#7 decryption (AES), and
falls back to our own CMS module (``protocol.cms``, asn1crypto) for what ``cryptography`` does not
decrypt: 3DES, which older ABM tokens use. :func:`encrypt_token` does what ABM does (for the emulator).
"""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from pomona.protocol import cms
from pomona.protocol.errors import CmsError

__all__ = ["LocalAbmKeys", "decrypt_token", "encrypt_token", "make_keypair", "smime_of", "der_of_smime"]


def make_keypair(common_name: str, now: datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): a self-signed RSA 2048 certificate for ABM's "MDM server" page."""
    now = now or datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def smime_of(der: bytes) -> bytes:
    """An EnvelopedData as the S/MIME message ABM sends (``application/pkcs7-mime``, base64)."""
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return (
        b"MIME-Version: 1.0\r\n"
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64
    )


def der_of_smime(data: bytes) -> bytes:
    """The DER of an S/MIME ``.p7m`` (or of a bare PEM or DER EnvelopedData)."""
    stripped = data.strip()
    if stripped[:1] == b"\x30":
        return data
    if stripped.startswith(b"-----BEGIN"):
        lines = [ln for ln in stripped.splitlines() if not ln.startswith(b"-----")]
        return base64.b64decode(b"".join(lines))
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    payload = msg.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise CmsError("not an S/MIME message")
    return payload


def decrypt_token(data: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
    """The plaintext of a ``.p7m`` server token encrypted to ``cert_pem``; CmsError if it does not open."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CmsError("the ABM key is not an RSA key")
    try:
        der = der_of_smime(data)
    except (ValueError, TypeError) as exc:
        raise CmsError(f"not an S/MIME message: {exc}") from None
    try:
        return pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    except (ValueError, UnsupportedAlgorithm):
        pass  # 3DES (or a structure cryptography refuses): our CMS module below
    return cms.decrypt_enveloped(der, cert, key)


Cipher = Literal["aes256_cbc", "aes128_cbc", "tripledes_3key"]


def encrypt_token(plaintext: bytes, cert_pem: bytes, cipher: Cipher = "aes256_cbc") -> bytes:
    """A ``.p7m`` as ABM makes it: ``plaintext`` enveloped to ``cert_pem``, as S/MIME. AES through
    ``cryptography``; 3DES through our CMS module (``cryptography`` does not write it)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    if cipher == "tripledes_3key":
        return smime_of(cms.encrypt_enveloped(plaintext, cert, "tripledes_3key"))
    algorithm = algorithms_for(cipher)
    der = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(plaintext)
        .add_recipient(cert)
        .set_content_encryption_algorithm(algorithm)
        .encrypt(serialization.Encoding.DER, [])
    )
    return smime_of(der)


def algorithms_for(cipher: Cipher) -> Any:
    """cryptography's content-encryption algorithm class for ``cipher`` (AES only)."""
    from cryptography.hazmat.primitives.ciphers import algorithms

    return algorithms.AES256 if cipher == "aes256_cbc" else algorithms.AES128


class LocalAbmKeys:
    """ports.AbmKeys over this module."""

    def make_keypair(self, common_name: str) -> tuple[bytes, bytes]:
        return make_keypair(common_name)

    def decrypt_token(self, data: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
        return decrypt_token(data, cert_pem, key_pem)
