"""The MDM push certificate lifecycle: request it, vendor-sign the request, load it, inspect it, keep its
key encrypted at rest.

How an admin gets a push certificate (Apple Push Certificates Portal, https://identity.apple.com/pushcert):

1. :func:`make_push_csr` makes the tenant's key and a CSR;
2. the MDM vendor signs the CSR with its MDM vendor certificate (:func:`make_vendor_signed_request`),
   giving the base64 plist the portal accepts: keys ``PushCertRequestCSR`` (base64 CSR DER),
   ``PushCertCertificateChain`` (PEM: vendor certificate, then its issuers up to Apple's root) and
   ``PushCertSignature`` (base64 SHA-256 RSA PKCS#1 v1.5 signature over the CSR DER), the same format
   micromdm's ``mdmctl mdmcert`` and fleet's vendor signing produce;
3. the portal returns the certificate (PEM); with the key, it is uploaded to Pomona, or the admin uploads
   a .p12 (:func:`load_p12`). :func:`inspect_push_cert` says what upload validation needs to know.

Errors are :class:`PushCertError` with a stable ``kind`` (``not_pem``, ``not_p12``, ``bad_password``,
``no_certificate``, ``no_key``, ``unsupported_key``, ``bad_request``) for the caller to map to a reason
code; :class:`SecretBoxError` when a sealed secret cannot be opened.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import plistlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pomona.i18n import msg
from pomona.protocol.apns import is_mdm_topic, push_topic_of

__all__ = [
    "PushCertError",
    "PushCertFacts",
    "SecretBox",
    "SecretBoxError",
    "VendorSignedRequest",
    "decode_vendor_signed_request",
    "inspect_push_cert",
    "load_or_create_server_key",
    "load_p12",
    "load_pem_cert",
    "load_pem_key",
    "make_p12",
    "make_push_csr",
    "make_vendor_signed_request",
]

SERVER_KEY_FILE: Final = "server.key"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class PushCertError(ValueError):
    """A push certificate, key, .p12 or signing request could not be used; ``kind`` says why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class SecretBoxError(ValueError):
    """A sealed secret could not be opened: wrong server key, wrong context (aad), or tampered with."""


# --------------------------------------------------------------------------------------------------
# Requesting a certificate


def make_push_csr(
    common_name: str = "Pomona MDM push",
    *,
    email: str | None = None,
    organization: str | None = None,
    country: str | None = None,
    key_size: int = 2048,
) -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM) for a new push certificate; keep the key: the certificate needs it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def make_vendor_signed_request(
    csr_der: bytes,
    vendor_cert_chain_pem: bytes,
    vendor_key: bytes | rsa.RSAPrivateKey,
    *,
    password: bytes | None = None,
) -> str:
    """The base64 plist Apple's Push Certificates Portal accepts for ``csr_der`` (a CSR, DER or PEM).

    ``vendor_cert_chain_pem`` is the MDM vendor certificate followed by its issuers (Apple WWDR
    intermediate, Apple root); ``vendor_key`` its RSA private key (PEM, or a key object).
    """
    if csr_der.lstrip().startswith(b"-----BEGIN"):
        csr_der = _csr(csr_der).public_bytes(serialization.Encoding.DER)
    else:
        _csr(csr_der)
    chain = _pem_certs(vendor_cert_chain_pem)
    key = load_pem_key(vendor_key, password) if isinstance(vendor_key, bytes) else vendor_key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PushCertError("unsupported_key", msg("error.pushcert.vendor_rsa"))
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise PushCertError("no_key", msg("error.pushcert.vendor_mismatch"))
    signature = key.sign(csr_der, padding.PKCS1v15(), hashes.SHA256())
    body = {
        "PushCertRequestCSR": base64.b64encode(csr_der).decode("ascii"),
        "PushCertCertificateChain": b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in chain
        ).decode("ascii"),
        "PushCertSignature": base64.b64encode(signature).decode("ascii"),
    }
    return base64.b64encode(plistlib.dumps(body, fmt=plistlib.FMT_XML)).decode("ascii")


@dataclass(frozen=True)
class VendorSignedRequest:
    """A decoded push certificate request: the CSR, the vendor chain, and whether the signature verifies."""

    csr: x509.CertificateSigningRequest
    chain: list[x509.Certificate]
    signature: bytes
    signature_valid: bool


def decode_vendor_signed_request(data: str | bytes) -> VendorSignedRequest:
    """Read back what :func:`make_vendor_signed_request` made (to check it before the admin uploads it)."""
    try:
        plist = plistlib.loads(base64.b64decode(data, validate=True))
        csr_der = base64.b64decode(plist["PushCertRequestCSR"])
        chain = _pem_certs(plist["PushCertCertificateChain"].encode("ascii"))
        signature = base64.b64decode(plist["PushCertSignature"])
    except (ValueError, KeyError, TypeError, AttributeError, plistlib.InvalidFileException):
        # the parsers' own text names their internals (ParseError { kind: ShortData }): not for a person
        raise PushCertError("bad_request", msg("error.pushcert.not_request")) from None
    vendor_key = chain[0].public_key()
    valid = False
    if isinstance(vendor_key, rsa.RSAPublicKey):
        try:
            vendor_key.verify(signature, csr_der, padding.PKCS1v15(), hashes.SHA256())
            valid = True
        except InvalidSignature:
            valid = False
    return VendorSignedRequest(_csr(csr_der), chain, signature, valid)


# --------------------------------------------------------------------------------------------------
# Loading


def load_pem_cert(data: bytes) -> x509.Certificate:
    """The first certificate of a PEM (or DER) blob."""
    return _pem_certs(data)[0]


def load_pem_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """An RSA or EC private key from PEM (PKCS#1, PKCS#8, SEC1; encrypted when ``password`` is given)."""
    if b"PRIVATE KEY-----" not in data:
        raise PushCertError("no_key", msg("error.pushcert.no_pem_key"))
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:  # password missing, or given for an unencrypted key
        raise PushCertError(
            "bad_password",
            msg("error.pushcert.key_encrypted")
            if password is None
            else msg("error.pushcert.key_not_encrypted"),
        ) from None
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "decrypt" in text:
            raise PushCertError("bad_password", msg("error.pushcert.key_password")) from None
        raise PushCertError("not_pem", msg("error.pushcert.key_unreadable")) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PushCertError("unsupported_key", msg("error.pushcert.key_type", type=type(key).__name__))
    return key


def load_p12(data: bytes, password: bytes | None) -> tuple[x509.Certificate, PrivateKey]:
    """The certificate and key of a PKCS#12 (.p12) file, as exported from Keychain Access."""
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "mac" in text:
            raise PushCertError("bad_password", msg("error.pushcert.p12_password")) from None
        raise PushCertError("not_p12", msg("error.pushcert.p12_unreadable")) from None
    if cert is None:
        raise PushCertError("no_certificate", msg("error.pushcert.p12_no_cert"))
    if key is None:
        raise PushCertError("no_key", msg("error.pushcert.p12_no_key"))
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PushCertError("unsupported_key", msg("error.pushcert.key_type", type=type(key).__name__))
    return cert, key


def make_p12(cert: x509.Certificate, key: PrivateKey, password: bytes | None) -> bytes:
    """A .p12 of a certificate and its key (for exports and tests)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"push", key, cert, None, encryption)


# --------------------------------------------------------------------------------------------------
# Inspecting


@dataclass(frozen=True)
class PushCertFacts:
    """What upload validation needs to know about a push certificate (and its key, when given).

    ``client_auth_allowed`` is True when the certificate has no extended key usage or one that lists
    clientAuth; ``key_matches`` is None when no key was given. ``problems`` lists what makes the
    certificate unusable for MDM pushes, as stable words: ``no_topic``, ``not_mdm_topic``, ``expired``,
    ``not_yet_valid``, ``no_client_auth``, ``key_mismatch``.
    """

    topic: str | None
    is_mdm_topic: bool
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    client_auth_allowed: bool
    key_matches: bool | None
    is_apple_issued: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect_push_cert(
    cert: x509.Certificate, key: PrivateKey | None = None, *, now: dt.datetime | None = None
) -> PushCertFacts:
    """The facts of a push certificate; ``now`` (default: the current time) decides validity."""
    now = now or dt.datetime.now(dt.UTC)
    topic = push_topic_of(cert)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = (
            ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
        )
    except x509.ExtensionNotFound:
        client_auth = True
    key_matches = None if key is None else _spki(cert.public_key()) == _spki(key.public_key())
    orgs = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    problems = []
    if topic is None:
        problems.append("no_topic")
    elif not is_mdm_topic(topic):
        problems.append("not_mdm_topic")
    if cert.not_valid_after_utc <= now:
        problems.append("expired")
    if cert.not_valid_before_utc > now:
        problems.append("not_yet_valid")
    if not client_auth:
        problems.append("no_client_auth")
    if key_matches is False:
        problems.append("key_mismatch")
    return PushCertFacts(
        topic=topic,
        is_mdm_topic=is_mdm_topic(topic),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        client_auth_allowed=client_auth,
        key_matches=key_matches,
        is_apple_issued=any(a.value == "Apple Inc." for a in orgs),
        problems=problems,
    )


# --------------------------------------------------------------------------------------------------
# Keys at rest


class SecretBox:
    """AES-256-GCM sealing of secrets (push certificate keys) under the server key.

    Sealed form: ``b"\\x01" + 12-byte nonce + ciphertext+tag``. ``aad`` binds a secret to its context
    (e.g. ``b"push-key:<tenant id>"``): opening it with another context fails.
    """

    VERSION: Final = b"\x01"

    def __init__(self, server_key: bytes) -> None:
        if len(server_key) != 32:
            raise ValueError("the server key must be 32 bytes (AES-256)")
        self._aead = AESGCM(server_key)

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = secrets.token_bytes(12)
        return self.VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, sealed: bytes, aad: bytes = b"") -> bytes:
        if len(sealed) < 1 + 12 + 16 or sealed[:1] != self.VERSION:
            raise SecretBoxError("not a sealed secret (or an unknown version)")
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], aad)
        except InvalidTag:
            raise SecretBoxError("wrong server key, wrong context, or tampered with") from None


def load_or_create_server_key(data_dir: Path, key: bytes | None) -> bytes:
    """The 32-byte server key: ``key`` when given (the secret_key setting), else ``<data_dir>/server.key``
    (raw bytes, mode 0600), created on first use. Losing it loses every sealed push key."""
    if key is not None:
        if len(key) != 32:
            raise ValueError(f"the server key must be 32 bytes, not {len(key)}")
        return key
    path = Path(data_dir) / SERVER_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path} must hold 32 bytes, not {len(key)}") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


# --------------------------------------------------------------------------------------------------


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion):
        raise PushCertError("not_pem", msg("error.pushcert.cert_unreadable")) from None


def _csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise PushCertError("bad_request", msg("error.pushcert.csr_unreadable")) from None
