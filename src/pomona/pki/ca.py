"""Pomona's certificate authority: issues device identity certificates (via SCEP) and the server's
profile-signing identity.

One `CertificateAuthority` per tenant, holding its CA certificate and key (RSA 2048 or P-256). A
`CaCertificate` is the certificate alone: it checks what the CA issued (device signatures) and never
holds the key.

`generate_signing_identity` makes the certificate that signs .mobileconfig profiles. By default it is
issued by the tenant CA (so a device that trusts the CA shows the profile as "Verified"); pass
`ca=None` for a self-signed one. Its extended key usage is emailProtection + codeSigning, which iOS
accepts for profile signing.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pomona.protocol.cms import PrivateKey, PublicKey

__all__ = ["CaCertificate", "CertificateAuthority", "KeyType", "generate_key", "generate_signing_identity"]

KeyType = Literal["rsa", "p256"]

_BACKDATE = dt.timedelta(minutes=5)


def generate_key(key_type: KeyType = "rsa") -> PrivateKey:
    """A fresh RSA 2048 or P-256 private key."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}")


def _serial() -> int:
    return secrets.randbits(127) | 1


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, ca: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class CaCertificate:
    """A CA certificate without its key: checks issuance."""

    def __init__(self, certificate: x509.Certificate) -> None:
        self.certificate = certificate
        self._subject_der = certificate.subject.public_bytes()

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        """True when `cert` names this CA as issuer and carries a valid signature by the CA key.

        Does not check validity dates or revocation. Costs one signature verification; cache by
        certificate fingerprint where it matters.
        """
        if cert.issuer.public_bytes() != self._subject_der:
            return False
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


class CertificateAuthority(CaCertificate):
    """A CA certificate and its private key; issues leaf certificates and checks issuance."""

    def __init__(self, certificate: x509.Certificate, key: PrivateKey) -> None:
        ca_pub = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_pub = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ca_pub != key_pub:
            raise ValueError("the CA key does not match the CA certificate")
        super().__init__(certificate)
        self.key = key
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        common_name: str,
        key_type: KeyType = "rsa",
        years: int = 10,
        *,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """A new self-signed CA (RSA 2048 or P-256), basicConstraints CA, keyCertSign+cRLSign, SKI/AKI."""
        key = generate_key(key_type)
        start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True, digital_signature=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, password: bytes | None = None) -> CertificateAuthority:
        """Load a CA from PEM certificate and (optionally encrypted) PEM private key."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=password)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"unsupported CA key type {type(key).__name__}")
        return cls(cert, key)

    def to_pem(self) -> tuple[bytes, bytes]:
        """(certificate PEM, unencrypted PKCS#8 key PEM); encrypt the key at rest yourself."""
        return (
            self.certificate.public_bytes(serialization.Encoding.PEM),
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    # -- issuing ---------------------------------------------------------------------------------

    def _builder(
        self,
        public_key: PublicKey,
        subject: x509.Name,
        days: int,
        serial: int | None,
        now: dt.datetime | None,
    ) -> x509.CertificateBuilder:
        start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
        end = min(start + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        if end <= start:
            raise ValueError("the CA certificate has expired")
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial if serial is not None else _serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), critical=False
            )
        )

    def issue(
        self,
        public_key: PublicKey,
        subject: x509.Name,
        days: int = 365,
        serial: int | None = None,
        *,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A client identity certificate: clientAuth, digitalSignature+keyEncipherment, SKI/AKI.

        The validity never extends past the CA's own.
        """
        if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"unsupported public key type {type(public_key).__name__}")
        builder = (
            self._builder(public_key, subject, days, serial, now)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(self.key, hashes.SHA256())

    def issue_signing(
        self, public_key: PublicKey, subject: x509.Name, days: int = 365, *, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A signing certificate (profile signing, SCEP RA): digitalSignature+keyEncipherment,
        emailProtection+codeSigning."""
        builder = (
            self._builder(public_key, subject, days, None, now)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING]
                ),
                critical=False,
            )
        )
        return builder.sign(self.key, hashes.SHA256())


def generate_signing_identity(
    common_name: str,
    ca: CertificateAuthority | None = None,
    key_type: KeyType = "rsa",
    days: int = 825,
    *,
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """The server's profile-signing identity: issued by `ca`, or self-signed when `ca` is None.

    Issued by the tenant CA is the default choice in Pomona: the enrollment profile installs that CA,
    so later profiles show as verified. Keys are RSA 2048 (the broadest iOS support) unless asked.
    """
    key = generate_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if ca is not None:
        return ca.issue_signing(key.public_key(), subject, days, now=now), key
    start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key
