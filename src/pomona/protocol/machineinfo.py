"""MachineInfo: what an ADE device sends to the enrollment profile's ``url``, signed by its Apple identity.

During Setup Assistant a device that Apple Business Manager assigned to us POSTs a CMS SignedData (DER,
``application/pkcs7-signature``) to the ``url`` of its enrollment profile. The content is a plist
(UDID, SERIAL, PRODUCT, VERSION, OS_VERSION, IMEI, LANGUAGE, MDM_CAN_REQUEST_SOFTWARE_UPDATE, ...) and
the signer is the device's identity certificate, issued by Apple's "Apple iPhone Device CA". The same
SignedData, base64-encoded, is the ``x-apple-aspen-deviceinfo`` header of the modern-authentication web
view (:func:`decode_deviceinfo_header`).

:func:`verify_machine_info` checks, in this order, and refuses with one typed error each (the tree is in
:mod:`pomona.protocol.errors`):

1. the body is a SignedData with encapsulated content, at most ``max_size`` bytes and
   :data:`MAX_CERTIFICATES` certificates (:class:`MachineInfoMalformedError`);
2. exactly one signer (:class:`MachineInfoUnsignedError`, :class:`MachineInfoMultipleSignersError`);
3. a SHA-1 or SHA-2 digest (:class:`MachineInfoDigestUnsupportedError`: MD5 and anything else);
4. the signer's certificate is in the message (:class:`MachineInfoSignerCertMissingError`);
5. the signed messageDigest matches the content (:class:`MachineInfoTamperedError`), and the signature
   verifies with the signer's key (:class:`MachineInfoBadSignatureError`), by :mod:`pomona.protocol.cms`;
6. the signer chains to one of ``trusted_keys``, through CA certificates the message carries, with
   **validity dates ignored** (:class:`MachineInfoSignerUntrustedError`, :class:`MachineInfoChainError`,
   :class:`MachineInfoIssuerNotCaError`);
7. the content is a MachineInfo plist (:class:`MachineInfoMalformedError`).

When the device is too old for the tenant's OS range and says ``MDM_CAN_REQUEST_SOFTWARE_UPDATE``,
the server answers 403 with Apple's ``com.apple.softwareupdate.required`` body
(:func:`encode_software_update_required`); the device updates, then posts its MachineInfo again.

Trust is a public KEY, not a certificate. Apple's iPhone Device CA certificate expired in April 2014 and
Apple still issues every device identity from its key, so its dates (and the leaves' dates) can never
be checked: micromdm (``pkg/crypto/apple.go``) verifies the leaf's signature against the CA's RSA key
the same way. :data:`APPLE_IPHONE_DEVICE_CA_KEY` is that key, pinned as its SubjectPublicKeyInfo;
tests pass a test CA's key instead (``pomona.testing.device_ca``).

The work is bounded for an unauthenticated request: a body of 64 KiB, at most six certificates, RSA
keys of at most 4096 bits, a chain of at most four links, at most twelve certificate signatures tried,
and a signature is tried only against a candidate whose subject is the certificate's issuer name (and
whose key identifier matches the certificate's authority key identifier, when both are present).
``bench/machineinfo.py`` measures an ordinary message and a crafted worst case.

References:
https://developer.apple.com/documentation/devicemanagement/machineinfo
https://developer.apple.com/documentation/devicemanagement/device_assignment/authenticating_through_web_views
https://developer.apple.com/library/archive/documentation/NetworkingInternet/Conceptual/iPhoneOTAConfiguration/profile-service/profile-service.html
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final, Literal

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from pomona.protocol import cms, plist
from pomona.protocol.errors import (
    CmsError,
    MachineInfoBadSignatureError,
    MachineInfoChainError,
    MachineInfoDigestUnsupportedError,
    MachineInfoError,
    MachineInfoIssuerNotCaError,
    MachineInfoMalformedError,
    MachineInfoMultipleSignersError,
    MachineInfoSignatureError,
    MachineInfoSignerCertMissingError,
    MachineInfoSignerUntrustedError,
    MachineInfoTamperedError,
    MachineInfoTrustError,
    MachineInfoUnsignedError,
    PlistError,
)

__all__ = [
    "APPLE_IPHONE_DEVICE_CA_KEY",
    "APPLE_IPHONE_DEVICE_CA_SPKI_SHA256",
    "DEFAULT_MAX_SIZE",
    "MACHINE_INFO_CONTENT_TYPE",
    "MAX_CERTIFICATES",
    "MAX_CHAIN_LENGTH",
    "MAX_RSA_BITS",
    "MAX_SIGNATURE_CHECKS",
    "MachineInfo",
    "MachineInfoBadSignatureError",
    "MachineInfoChainError",
    "MachineInfoDigestUnsupportedError",
    "MachineInfoError",
    "MachineInfoIssuerNotCaError",
    "MachineInfoMalformedError",
    "MachineInfoMultipleSignersError",
    "MachineInfoSignatureError",
    "MachineInfoSignerCertMissingError",
    "MachineInfoSignerUntrustedError",
    "MachineInfoTamperedError",
    "MachineInfoTrustError",
    "MachineInfoUnsignedError",
    "SOFTWARE_UPDATE_REQUIRED",
    "SignedMachineInfo",
    "SoftwareUpdateRequired",
    "apple_device_ca_keys",
    "decode_deviceinfo_header",
    "decode_machine_info",
    "decode_software_update_required",
    "encode_machine_info",
    "encode_software_update_required",
    "load_public_key",
    "software_update_required_body",
    "spki_sha256",
    "verify_device_identity",
    "verify_machine_info",
]

MACHINE_INFO_CONTENT_TYPE: Final = "application/pkcs7-signature"
"""Content type of the device's POST to the enrollment profile's ``url``."""

DEFAULT_MAX_SIZE: Final = 65_536
"""Largest MachineInfo body read: a real one is about 3 KiB (a plist and two or three certificates)."""

MAX_CERTIFICATES: Final = 6
"""Most certificates a MachineInfo may carry (a device sends its identity and Apple's CA chain: 3)."""

MAX_CHAIN_LENGTH: Final = 4
"""Most certificates on the path from the signer to a trusted key (signer and carried CAs)."""

MAX_SIGNATURE_CHECKS: Final = 12
"""Most certificate signatures tried while building the path (a crafted message cannot buy more)."""

MAX_RSA_BITS: Final = 4096
"""Largest RSA key a carried certificate may have (Apple's device keys are 1024 bits, its CAs 2048)."""

APPLE_IPHONE_DEVICE_CA_KEY: Final = (
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDxlErJ6rpaGGCty6JNTU5UGWkX"
    "WQdmy5foZppHX0auZ3q1SnNUscsE9r02uAxVOIqEgzFSZfkz4Zd3nCtMJrAlP+ky"
    "qnsIdJTswUs4HWdOCFKUWotZo1zXk/Sg/lWFu0xGl15usndFL2dcvAsYv1m5bIb3"
    "KnV20hlx9CljuSULrwIDAQAB"
)
"""The public key (SubjectPublicKeyInfo, base64 DER) of "C=US, O=Apple Inc., OU=Apple iPhone,
CN=Apple iPhone Device CA" (RSA 1024), whose certificate was valid from 2007-04-16 to 2014-04-16 and
was issued by "Apple iPhone Certification Authority" under "Apple Root CA". Every ADE device identity
chains to it."""

APPLE_IPHONE_DEVICE_CA_SPKI_SHA256: Final = "13686ec675f9fd26a123adb17b5533f593cf451edd6105ae39b748277a3922e5"
"""SHA-256 of the DER SubjectPublicKeyInfo above (``openssl pkey -pubin -outform DER | sha256sum``)."""

_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
"""The digests accepted, for the CMS signature and for certificate signatures alike."""


def load_public_key(spki_der: bytes) -> cms.PublicKey:
    """An RSA or EC public key from its DER SubjectPublicKeyInfo."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MachineInfoError(f"not a public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MachineInfoError(f"unsupported CA key type {type(key).__name__}")
    return key


def spki_sha256(key: cms.PublicKey) -> str:
    """Hex SHA-256 of a key's DER SubjectPublicKeyInfo (the pin's fingerprint)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


@cache
def apple_device_ca_keys() -> tuple[cms.PublicKey, ...]:
    """The production trust: Apple's iPhone Device CA key, checked against its pinned fingerprint."""
    key = load_public_key(base64.b64decode(APPLE_IPHONE_DEVICE_CA_KEY))
    if spki_sha256(key) != APPLE_IPHONE_DEVICE_CA_SPKI_SHA256:  # pragma: no cover - a corrupted constant
        raise AssertionError("the pinned Apple iPhone Device CA key does not match its fingerprint")
    return (key,)


# --------------------------------------------------------------------------------------------------
# The decoded message


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineInfo:
    """The facts an ADE device gives about itself before it gets its enrollment profile.

    ``version`` is the build (``21E219``); ``os_version`` the marketing version (``17.4``, sent since
    iOS 17). ``mdm_can_request_software_update`` (iOS 17+) says the server may answer 403
    ``com.apple.softwareupdate.required`` to make the device update first. Keys this module does not
    know are kept by name in ``unknown_keys`` (Apple adds keys; a device is not refused for them).

    https://developer.apple.com/documentation/devicemanagement/machineinfo
    """

    udid: str
    serial: str
    product: str
    version: str
    raw: bytes = field(repr=False)
    os_version: str | None = None
    imei: str | None = None
    meid: str | None = None
    language: str | None = None
    mdm_can_request_software_update: bool = False
    supplemental_build_version: str | None = None
    supplemental_os_version_extra: str | None = None
    software_update_device_id: str | None = None
    pairing_token: bytes | None = field(default=None, repr=False)
    unknown_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SignedMachineInfo:
    """A verified MachineInfo: the facts, the signer, and the path that made it trusted.

    ``chain`` runs from the signer to the last certificate before the trusted key (the signer alone
    when a trusted key issued it directly, as Apple's device CA does).
    """

    info: MachineInfo
    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    digest_algorithm: str
    signed_attributes: bool


class _Reader:
    """Consuming, typed access to the MachineInfo dictionary: each key read is taken out, so what is
    left at the end is what this module does not know."""

    __slots__ = ("_left",)

    def __init__(self, d: Mapping[str, object]) -> None:
        self._left = dict(d)

    def _fail(self, key: str, expected: str, value: object) -> MachineInfoMalformedError:
        got = "nothing" if value is None else type(value).__name__
        return MachineInfoMalformedError(f"MachineInfo {key} must be {expected}, got {got}")

    def opt_str(self, key: str, *, max_len: int = 256) -> str | None:
        value = self._left.pop(key, None)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string", value)
        if len(value) > max_len:
            raise MachineInfoMalformedError(f"MachineInfo {key} is longer than {max_len} characters")
        return value

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if not value or not value.strip():
            raise self._fail(key, "a non-empty string", value)
        return value

    def opt_bool(self, key: str) -> bool | None:
        value = self._left.pop(key, None)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean", value)
        return value

    def opt_bytes(self, key: str) -> bytes | None:
        value = self._left.pop(key, None)
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise self._fail(key, "data", value)
        return value

    def leftover(self) -> tuple[str, ...]:
        return tuple(sorted(self._left))


def decode_machine_info(content: bytes) -> MachineInfo:
    """Decode the plist inside the SignedData (no signature check: see :func:`verify_machine_info`).

    Raises :class:`MachineInfoMalformedError` for a body that is not a plist dictionary, lacks UDID,
    SERIAL, PRODUCT or VERSION, or has a key of the wrong type.
    """
    raw = bytes(content)
    try:
        d = plist.loads(raw, max_size=DEFAULT_MAX_SIZE)
    except PlistError as exc:
        raise MachineInfoMalformedError(f"MachineInfo content is not a plist: {exc}") from exc
    r = _Reader(d)
    return MachineInfo(
        udid=r.req_str("UDID"),
        serial=r.req_str("SERIAL"),
        product=r.req_str("PRODUCT"),
        version=r.req_str("VERSION"),
        raw=raw,
        os_version=r.opt_str("OS_VERSION"),
        imei=r.opt_str("IMEI"),
        meid=r.opt_str("MEID"),
        language=r.opt_str("LANGUAGE"),
        mdm_can_request_software_update=bool(r.opt_bool("MDM_CAN_REQUEST_SOFTWARE_UPDATE")),
        supplemental_build_version=r.opt_str("SUPPLEMENTAL_BUILD_VERSION"),
        supplemental_os_version_extra=r.opt_str("SUPPLEMENTAL_OS_VERSION_EXTRA"),
        software_update_device_id=r.opt_str("SOFTWARE_UPDATE_DEVICE_ID"),
        pairing_token=r.opt_bytes("PAIRING_TOKEN"),
        unknown_keys=r.leftover(),
    )


def encode_machine_info(
    *,
    udid: str,
    serial: str,
    product: str,
    version: str,
    os_version: str | None = None,
    imei: str | None = None,
    meid: str | None = None,
    language: str | None = None,
    mdm_can_request_software_update: bool | None = None,
    software_update_device_id: str | None = None,
) -> bytes:
    """The MachineInfo plist as a device writes it (absent facts left out); the virtual device signs it."""
    d: dict[str, object] = {"UDID": udid, "SERIAL": serial, "PRODUCT": product, "VERSION": version}
    optional: dict[str, object | None] = {
        "OS_VERSION": os_version,
        "IMEI": imei,
        "MEID": meid,
        "LANGUAGE": language,
        "MDM_CAN_REQUEST_SOFTWARE_UPDATE": mdm_can_request_software_update,
        "SOFTWARE_UPDATE_DEVICE_ID": software_update_device_id,
    }
    d.update({k: v for k, v in optional.items() if v is not None})
    return plist.dumps(d)


def decode_deviceinfo_header(value: str) -> bytes:
    """The SignedData DER of an ``x-apple-aspen-deviceinfo`` header (base64 of the same CMS)."""
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MachineInfoMalformedError("x-apple-aspen-deviceinfo is not base64") from exc


# --------------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class _Parsed:
    signed: asn1_cms.SignedData
    signer_info: asn1_cms.SignerInfo
    certs: tuple[x509.Certificate, ...]
    asn1_certs: tuple[asn1_x509.Certificate, ...]
    digest: str


def _parse(der: bytes, max_size: int) -> _Parsed:
    """Steps 1 to 3: the structure, the signer count and the digest."""
    if len(der) > max_size:
        raise MachineInfoMalformedError(f"MachineInfo body of {len(der)} bytes exceeds {max_size}")
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        if info["content_type"].dotted != "1.2.840.113549.1.7.2":
            raise MachineInfoMalformedError("MachineInfo body is not a CMS SignedData")
        signed: asn1_cms.SignedData = info["content"]
        econtent = signed["encap_content_info"]["content"]
        if isinstance(econtent, core.Void):
            raise MachineInfoMalformedError("MachineInfo SignedData carries no content")
        certs_field = signed["certificates"]
        asn1_certs: list[asn1_x509.Certificate] = []
        if not isinstance(certs_field, core.Void):
            if len(certs_field) > MAX_CERTIFICATES:
                raise MachineInfoMalformedError(
                    f"MachineInfo carries more than {MAX_CERTIFICATES} certificates"
                )
            asn1_certs = [c.chosen for c in certs_field if c.name == "certificate"]
        signer_infos = signed["signer_infos"]
        count = len(signer_infos)
        if count == 0:
            raise MachineInfoUnsignedError("MachineInfo SignedData has no signer")
        if count > 1:
            raise MachineInfoMultipleSignersError(f"MachineInfo SignedData has {count} signers")
        signer_info: asn1_cms.SignerInfo = signer_infos[0]
        digest = signer_info["digest_algorithm"]["algorithm"].native
        if digest not in _HASHES:
            raise MachineInfoDigestUnsupportedError(f"MachineInfo digest {digest} is not SHA-1 or SHA-2")
        sig_alg = signer_info["signature_algorithm"]["algorithm"].native
        if "md5" in str(sig_alg) or "md2" in str(sig_alg):
            raise MachineInfoDigestUnsupportedError(f"MachineInfo signature algorithm {sig_alg}")
        certs = tuple(x509.load_der_x509_certificate(c.dump()) for c in asn1_certs)
        for cert in certs:
            key = _public_key(cert)
            if isinstance(key, rsa.RSAPublicKey) and key.key_size > MAX_RSA_BITS:
                raise MachineInfoMalformedError(f"MachineInfo carries an RSA key of {key.key_size} bits")
    except MachineInfoError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        OverflowError,
        AttributeError,
        UnsupportedAlgorithm,
    ) as exc:
        raise MachineInfoMalformedError(f"malformed MachineInfo SignedData: {exc}") from exc
    return _Parsed(signed, signer_info, certs, tuple(asn1_certs), str(digest))


def _find_signer(parsed: _Parsed) -> x509.Certificate:
    """Step 4: the carried certificate the SignerInfo names (issuer and serial, or key identifier)."""
    sid = parsed.signer_info["sid"]
    for asn1_cert, cert in zip(parsed.asn1_certs, parsed.certs, strict=True):
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if asn1_cert.serial_number == ias["serial_number"].native and asn1_cert.issuer == ias["issuer"]:
                return cert
        elif asn1_cert.key_identifier is not None and asn1_cert.key_identifier == sid.chosen.native:
            return cert
    raise MachineInfoSignerCertMissingError("the MachineInfo signer's certificate is not in the message")


def _check_message_digest(parsed: _Parsed) -> bool:
    """Step 5a: a messageDigest that does not match the content is tampering. True when the signer used
    signed attributes."""
    attrs = parsed.signer_info["signed_attrs"]
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        return False
    content: bytes = parsed.signed["encap_content_info"]["content"].__bytes__()
    want = hashes.Hash(_HASHES[parsed.digest]())
    want.update(content)
    for attr in attrs:
        if attr["type"].dotted == cms.OID_MESSAGE_DIGEST:
            if attr["values"][0].native != want.finalize():
                raise MachineInfoTamperedError("the MachineInfo content does not match its signed digest")
            return True
    raise MachineInfoBadSignatureError("the MachineInfo signed attributes lack a messageDigest")


def _issued_by(cert: x509.Certificate, key: cms.PublicKey) -> bool:
    """Whether ``key`` made ``cert``'s signature. Dates, names and extensions are not looked at."""
    try:
        algorithm = cert.signature_hash_algorithm
        if algorithm is None or algorithm.name not in _HASHES:
            return False
        params = cert.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        else:
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    """A CA certificate: basicConstraints cA true, and keyCertSign if it states its key usage."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            return False
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return True
        return usage.key_cert_sign
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return False


def _public_key(cert: x509.Certificate) -> cms.PublicKey | None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None


def verify_device_identity(
    signer: x509.Certificate, carried: Sequence[x509.Certificate], trusted_keys: Sequence[cms.PublicKey]
) -> tuple[x509.Certificate, ...]:
    """Step 6: the path from ``signer`` to one of ``trusted_keys``, through CA certificates in ``carried``.

    Only signatures and CA-ness count: validity dates are ignored (Apple's device CA expired in 2014).
    Returns the path from the signer up to the certificate the trusted key issued; raises
    :class:`MachineInfoSignerUntrustedError` when nothing trusted or carried issued the signer,
    :class:`MachineInfoChainError` when carried CAs lead elsewhere (or the path is too long, or costs
    more than :data:`MAX_SIGNATURE_CHECKS`), :class:`MachineInfoIssuerNotCaError` when a certificate
    that is not a CA issued one on the path.
    """
    path = [signer]
    current = signer
    budget = MAX_SIGNATURE_CHECKS

    def issued_by(cert: x509.Certificate, key: cms.PublicKey) -> bool:
        nonlocal budget
        if budget <= 0:
            raise MachineInfoChainError(
                f"the MachineInfo chain needs more than {MAX_SIGNATURE_CHECKS} checks"
            )
        budget -= 1
        return _issued_by(cert, key)

    while len(path) <= MAX_CHAIN_LENGTH:
        if any(issued_by(current, key) for key in trusted_keys):
            return tuple(path)
        issuer: x509.Certificate | None = None
        wanted = _authority_key_id(current)
        for candidate in carried:
            if candidate in path or candidate.subject != current.issuer:
                continue
            have = _subject_key_id(candidate)
            if wanted is not None and have is not None and wanted != have:
                continue
            key = _public_key(candidate)
            if key is not None and issued_by(current, key):
                issuer = candidate
                break
        if issuer is None:
            if len(path) == 1:
                raise MachineInfoSignerUntrustedError(
                    f"the MachineInfo signer ({current.issuer.rfc4514_string()}) was not issued by a trusted "
                    "device CA"
                )
            raise MachineInfoChainError(
                f"the MachineInfo signer chains up to {current.subject.rfc4514_string()}, not to a trusted "
                "device CA"
            )
        if not _is_ca(issuer):
            raise MachineInfoIssuerNotCaError(
                f"{current.subject.rfc4514_string()} was issued by {issuer.subject.rfc4514_string()}, "
                "which is not a CA"
            )
        path.append(issuer)
        current = issuer
    raise MachineInfoChainError(f"the MachineInfo signer's chain is longer than {MAX_CHAIN_LENGTH}")


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None
    return value.key_identifier


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None


def verify_machine_info(
    body: bytes, trusted_keys: Sequence[cms.PublicKey], *, max_size: int = DEFAULT_MAX_SIZE
) -> SignedMachineInfo:
    """Verify a device's signed MachineInfo against ``trusted_keys`` and decode it.

    ``trusted_keys`` are the device CA public keys to trust: :func:`apple_device_ca_keys` in production,
    a test CA's key for virtual devices. Validity dates are ignored throughout (see the module doc).
    Raises a :class:`MachineInfoError` subclass naming the first check that failed.
    """
    if not trusted_keys:
        raise ValueError("verify_machine_info needs at least one trusted device CA key")
    der = bytes(body)
    try:
        parsed = _parse(der, max_size)
        signer = _find_signer(parsed)
        with_attributes = _check_message_digest(parsed)
        try:
            verified = cms.verify(der)
        except CmsError as exc:
            raise MachineInfoBadSignatureError(f"the MachineInfo signature does not verify: {exc}") from exc
        chain = verify_device_identity(signer, parsed.certs, trusted_keys)
    except MachineInfoError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise MachineInfoMalformedError(f"malformed MachineInfo SignedData: {exc}") from exc
    return SignedMachineInfo(
        info=decode_machine_info(verified.content),
        signer=signer,
        chain=chain,
        digest_algorithm=parsed.digest,
        signed_attributes=with_attributes,
    )


# --------------------------------------------------------------------------------------------------
# The answer that makes a device update first


SOFTWARE_UPDATE_REQUIRED: Final = "com.apple.softwareupdate.required"
"""Apple's error code for "update the OS before enrolling" (a 403 body, iOS 17 and macOS 14 on)."""

_OS_VERSION = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){0,2}(?: \([a-z]\))?")
_BUILD_VERSION = re.compile(r"[0-9]{1,3}[A-Z][0-9]{1,5}[a-z]?")


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftwareUpdateRequired:
    """What the 403 ``com.apple.softwareupdate.required`` body asks of the device.

    ``os_version`` is the version to update to (``17.4``, or with a supplemental letter ``16.1 (a)``);
    ``build_version`` pins a build (``21E219``, seeding only); ``beta_description`` and ``beta_token``
    enroll the device in an ABM beta program first (iOS 17.5+). ``message`` may be shown to the user;
    ``description`` is for the device's log only.

    https://developer.apple.com/documentation/devicemanagement/errorcodesoftwareupdaterequired
    """

    os_version: str
    build_version: str | None = None
    message: str | None = None
    description: str | None = None
    beta_description: str | None = None
    beta_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _OS_VERSION.fullmatch(self.os_version):
            raise ValueError(f"not an OS version: {self.os_version!r}")
        if self.build_version is not None and not _BUILD_VERSION.fullmatch(self.build_version):
            raise ValueError(f"not a build version: {self.build_version!r}")
        if (self.beta_description is None) != (self.beta_token is None):
            raise ValueError("a beta program needs both its description and its token")


def software_update_required_body(answer: SoftwareUpdateRequired) -> dict[str, object]:
    """The 403 body (a JSON object; the same dictionary as a plist) that sends the device to update."""
    details: dict[str, object] = {"OSVersion": answer.os_version}
    if answer.build_version is not None:
        details["BuildVersion"] = answer.build_version
    if answer.beta_description is not None and answer.beta_token is not None:
        details["RequireBetaProgram"] = {"Description": answer.beta_description, "Token": answer.beta_token}
    body: dict[str, object] = {"code": SOFTWARE_UPDATE_REQUIRED, "details": details}
    if answer.description is not None:
        body["description"] = answer.description
    if answer.message is not None:
        body["message"] = answer.message
    return body


def encode_software_update_required(
    answer: SoftwareUpdateRequired, *, fmt: Literal["json", "plist"] = "json"
) -> tuple[bytes, str]:
    """(body, Content-Type) of the 403 answer; Apple takes JSON or an XML plist, named by the header."""
    body = software_update_required_body(answer)
    if fmt == "plist":
        return plist.dumps(body), "application/xml"
    return json.dumps(body, ensure_ascii=False).encode(), "application/json"


def decode_software_update_required(body: bytes) -> SoftwareUpdateRequired | None:
    """What a device reads from a 403 body: the required update, or None when the body is another
    answer (any other code, not JSON or plist, or a malformed one)."""
    data: object
    try:
        data = plist.loads(body) if body.lstrip().startswith((b"<", b"bplist")) else json.loads(body)
    except (PlistError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("code") != SOFTWARE_UPDATE_REQUIRED:
        return None
    details = data.get("details")
    if not isinstance(details, dict) or not isinstance(details.get("OSVersion"), str):
        return None
    beta = details.get("RequireBetaProgram")
    strings = {
        "build_version": details.get("BuildVersion"),
        "message": data.get("message"),
        "description": data.get("description"),
        "beta_description": beta.get("Description") if isinstance(beta, dict) else None,
        "beta_token": beta.get("Token") if isinstance(beta, dict) else None,
    }
    if any(v is not None and not isinstance(v, str) for v in strings.values()):
        return None
    try:
        return SoftwareUpdateRequired(os_version=details["OSVersion"], **strings)
    except ValueError:
        return None
