"""SCEP wire codec (RFC 8894): pkiMessages, PKCS#10 requests and CertRep, for server and client.

https://www.rfc-editor.org/rfc/rfc8894

A pkiMessage is a CMS SignedData whose signed attributes carry the SCEP fields (messageType,
transactionID, senderNonce, ...) and whose content is a pkcsPKIEnvelope (an EnvelopedData) holding
the PKCS#10 request or, in a CertRep, a certs-only SignedData with the issued certificate.

Server side: `decode_pki_message` (verifies the outer signature), `decode_csr` (parses with asn1crypto,
so it accepts the version-2 CSRs that iOS and micromdm clients send and `cryptography` refuses),
`encode_cert_rep`. Client side (the virtual iPhone): `build_csr`, `build_pkcs_req`, `decode_cert_rep`.

Errors: `ScepMalformedError` (a `ProtocolError`, defined in `protocol.errors`) for anything that is not a well-formed, correctly signed
message; `CsrSignatureError` (a subclass) when only the CSR's self-signature is wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import TypeVar

from asn1crypto import core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import AttributeOID

from pomona.protocol import cms
from pomona.protocol.cms import ContentEncryption, DigestName, PrivateKey, PublicKey
from pomona.protocol.errors import CmsError, CsrSignatureError, ScepMalformedError

__all__ = [
    "CertRepResult",
    "CsrInfo",
    "CsrSignatureError",
    "FailInfo",
    "MessageType",
    "PkiMessage",
    "PkiStatus",
    "RequestedExtension",
    "ScepMalformedError",
    "build_csr",
    "build_pkcs_req",
    "decode_cert_rep",
    "decode_csr",
    "decode_pki_message",
    "encode_cert_rep",
    "reply_encryption_for",
    "transaction_id_for",
]

OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"


class MessageType(IntEnum):
    """SCEP messageType (RFC 8894 3.2.1.2); sent as a PrintableString of the number."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(IntEnum):
    """SCEP pkiStatus (RFC 8894 3.2.1.3)."""

    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(IntEnum):
    """SCEP failInfo (RFC 8894 3.2.1.4)."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


# --------------------------------------------------------------------------------------------------
# pkiMessage


@dataclass(frozen=True, slots=True)
class PkiMessage:
    """A decoded, signature-checked pkiMessage (request or CertRep)."""

    raw: bytes = field(repr=False)
    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate
    digest_algorithm: str
    envelope: bytes = field(repr=False)
    """The pkcsPKIEnvelope (EnvelopedData DER); empty when the message carries none."""
    recipient_nonce: bytes | None = None
    pki_status: PkiStatus | None = None
    fail_info: FailInfo | None = None
    certificates: tuple[x509.Certificate, ...] = ()

    @property
    def envelope_algorithm(self) -> str | None:
        """The content-encryption algorithm of the envelope (`tripledes_3key`, `aes128_cbc`, ...)."""
        if not self.envelope:
            return None
        return cms.enveloped_content_algorithm(self.envelope)

    def decrypt(self, recipient_cert: x509.Certificate, recipient_key: rsa.RSAPrivateKey) -> bytes:
        """The decrypted envelope content (CSR DER for requests, certs-only DER for CertRep)."""
        if not self.envelope:
            raise ScepMalformedError("message has no pkcsPKIEnvelope")
        try:
            return cms.decrypt_enveloped(self.envelope, recipient_cert, recipient_key)
        except CmsError as exc:
            raise ScepMalformedError(f"cannot decrypt pkcsPKIEnvelope: {exc}") from exc


def _single(attrs: Mapping[str, tuple[bytes, ...]], oid: str, name: str) -> core.Asn1Value | None:
    values = attrs.get(oid)
    if values is None:
        return None
    if len(values) != 1:
        raise ScepMalformedError(f"{name} must have exactly one value")
    return core.load(values[0])


def _printable(attrs: Mapping[str, tuple[bytes, ...]], oid: str, name: str) -> str | None:
    value = _single(attrs, oid, name)
    if value is None:
        return None
    if not isinstance(value, core.PrintableString | core.UTF8String | core.IA5String):
        raise ScepMalformedError(f"{name} is not a string")
    text: str = value.native
    return text


def _octets(attrs: Mapping[str, tuple[bytes, ...]], oid: str, name: str) -> bytes | None:
    value = _single(attrs, oid, name)
    if value is None:
        return None
    if not isinstance(value, core.OctetString):
        raise ScepMalformedError(f"{name} is not an OCTET STRING")
    data: bytes = value.native
    return data


_E = TypeVar("_E", bound=IntEnum)


def _enum_value(enum: type[_E], text: str | None, name: str) -> _E | None:
    if text is None:
        return None
    try:
        return enum(int(text))
    except ValueError as exc:
        raise ScepMalformedError(f"unknown {name} {text!r}") from exc


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def decode_pki_message(der: bytes, extra_certs: Sequence[x509.Certificate] = ()) -> PkiMessage:
    """Verify the outer signature of a pkiMessage and return its SCEP fields.

    `extra_certs` are candidate signers for messages that do not carry their signer (a CertRep
    signed by a CA the client already knows).
    """
    try:
        signed = cms.verify(der, extra_certs=extra_certs)
    except CmsError as exc:
        raise ScepMalformedError(f"pkiMessage: {exc}") from exc
    attrs = signed.signed_attributes
    try:
        message_type = _enum_value(
            MessageType, _printable(attrs, OID_MESSAGE_TYPE, "messageType"), "messageType"
        )
        transaction_id = _printable(attrs, OID_TRANSACTION_ID, "transactionID")
        sender_nonce = _octets(attrs, OID_SENDER_NONCE, "senderNonce")
        recipient_nonce = _octets(attrs, OID_RECIPIENT_NONCE, "recipientNonce")
        status = _enum_value(PkiStatus, _printable(attrs, OID_PKI_STATUS, "pkiStatus"), "pkiStatus")
        fail_info = _enum_value(FailInfo, _printable(attrs, OID_FAIL_INFO, "failInfo"), "failInfo")
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ScepMalformedError):
            raise
        raise ScepMalformedError(f"bad SCEP attribute: {exc}") from exc
    if message_type is None or transaction_id is None:
        raise ScepMalformedError("pkiMessage lacks messageType or transactionID")
    if not _is_latin1(transaction_id):
        # The CertRep sends the transactionID back as a PrintableString (RFC 8894 3.2.1.1).
        raise ScepMalformedError("transactionID is not a printable string")
    if message_type is MessageType.CERT_REP:
        if status is None or recipient_nonce is None:
            raise ScepMalformedError("CertRep lacks pkiStatus or recipientNonce")
        if status is PkiStatus.FAILURE and fail_info is None:
            raise ScepMalformedError("CertRep FAILURE lacks failInfo")
    if message_type is not MessageType.CERT_REP and not sender_nonce:
        raise ScepMalformedError("request lacks senderNonce")
    return PkiMessage(
        raw=der,
        message_type=message_type,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce or b"",
        signer=signed.signer,
        digest_algorithm=signed.digest_algorithm,
        envelope=signed.content,
        recipient_nonce=recipient_nonce,
        pki_status=status,
        fail_info=fail_info,
        certificates=signed.certificates,
    )


# --------------------------------------------------------------------------------------------------
# PKCS#10


@dataclass(frozen=True, slots=True)
class RequestedExtension:
    """One extension from the CSR's extensionRequest attribute, undecoded."""

    oid: str
    critical: bool
    value: bytes


@dataclass(frozen=True, slots=True)
class CsrInfo:
    """A PKCS#10 request whose self-signature has been checked."""

    raw: bytes = field(repr=False)
    version: int
    subject: x509.Name
    public_key: PublicKey
    challenge_password: str | None
    requested_extensions: tuple[RequestedExtension, ...]
    signature_hash: str

    @property
    def subject_rfc4514(self) -> str:
        """The subject as an RFC 4514 string."""
        return self.subject.rfc4514_string()

    @property
    def public_key_der(self) -> bytes:
        """The SubjectPublicKeyInfo DER."""
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def extension(self, oid: x509.ObjectIdentifier) -> RequestedExtension | None:
        """The requested extension with this OID, if any."""
        for ext in self.requested_extensions:
            if ext.oid == oid.dotted_string:
                return ext
        return None


_CSR_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _name_from_der(name_der: bytes) -> x509.Name:
    """An x509.Name from DER. A short one is kept (a Name is immutable): every device of a profile asks
    for the same subject; a long one (anyone may send one) is not."""
    if len(name_der) <= 1024:
        return _short_name_from_der(name_der)
    return _wrapped_name(name_der)


@lru_cache(maxsize=256)
def _short_name_from_der(name_der: bytes) -> x509.Name:
    return _wrapped_name(name_der)


def _wrapped_name(name_der: bytes) -> x509.Name:
    """An x509.Name from DER, by wrapping it into a minimal version-1 CSR `cryptography` will load."""
    wrapper = asn1_csr.CertificationRequest(
        {
            "certification_request_info": {
                "version": "v1",
                "subject": asn1_csr.Name.load(name_der),
                "subject_pk_info": _DUMMY_SPKI,
                "attributes": [],
            },
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature": b"\x00",
        }
    )
    return x509.load_der_x509_csr(wrapper.dump()).subject


# A fixed P-256 point (the generator) used only to wrap a Name for `_name_from_der`.
_DUMMY_SPKI = asn1_csr.PublicKeyInfo.load(
    bytes.fromhex(
        "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
        "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
    )
)


def decode_csr(der: bytes) -> CsrInfo:
    """Parse a PKCS#10 request (any version number) and verify its self-signature by hand."""
    try:
        req = asn1_csr.CertificationRequest.load(der, strict=True)
        info = req["certification_request_info"]
        raw_version = info["version"].native
        version = 0 if raw_version == "v1" else int(raw_version)
        subject_der: bytes = info["subject"].dump()
        spki_der: bytes = info["subject_pk_info"].dump()
        challenge: str | None = None
        extensions: list[RequestedExtension] = []
        attributes = info["attributes"]
        for attr in attributes if not isinstance(attributes, core.Void) else []:
            kind: str = attr["type"].native
            if kind == "challenge_password":
                values = attr["values"]
                if len(values) != 1:
                    raise ScepMalformedError("challengePassword must have one value")
                challenge = values[0].native
            elif kind == "extension_request":
                for ext_set in attr["values"]:
                    for ext in ext_set:
                        extensions.append(
                            RequestedExtension(
                                ext["extn_id"].dotted,
                                bool(ext["critical"].native),
                                ext["extn_value"].contents,
                            )
                        )
        sig_alg = req["signature_algorithm"]
        sig_kind: str = sig_alg.signature_algo
        hash_name: str = sig_alg.hash_algo
        signature: bytes = req["signature"].native
        tbs: bytes = info.dump()
    except ScepMalformedError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise ScepMalformedError(f"malformed PKCS#10 request: {exc}") from exc

    try:
        public_key = serialization.load_der_public_key(spki_der)
        subject = _name_from_der(subject_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ScepMalformedError(f"malformed PKCS#10 request: {exc}") from exc
    if hash_name not in _CSR_HASHES:
        raise CsrSignatureError(f"unsupported CSR hash {hash_name}")
    algo = _CSR_HASHES[hash_name]()
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and sig_kind == "rsassa_pkcs1v15":
            public_key.verify(signature, tbs, padding.PKCS1v15(), algo)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and sig_kind == "ecdsa":
            public_key.verify(signature, tbs, ec.ECDSA(algo))
        else:
            raise CsrSignatureError(f"unsupported CSR key/signature: {type(public_key).__name__}/{sig_kind}")
    except InvalidSignature as exc:
        raise CsrSignatureError("CSR self-signature does not verify") from exc
    return CsrInfo(
        raw=der,
        version=version,
        subject=subject,
        public_key=public_key,
        challenge_password=challenge,
        requested_extensions=tuple(extensions),
        signature_hash=hash_name,
    )


def build_csr(key: PrivateKey, subject: x509.Name, challenge: str | None) -> bytes:
    """A PKCS#10 request (SHA-256) with a challengePassword attribute, as a SCEP client sends."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------------------
# CertRep (server) and PKCSReq (client)


def reply_encryption_for(algorithm: str | None) -> ContentEncryption:
    """The content encryption to answer with: same family as the request (DES requests get 3DES)."""
    if algorithm in ("aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"):
        return algorithm  # type: ignore[return-value]
    if algorithm == "des":
        return "tripledes_3key"
    return "aes128_cbc"


def _digest_name(name: str) -> DigestName:
    if name == "sha1":
        return "sha1"
    if name == "sha384":
        return "sha384"
    if name == "sha512":
        return "sha512"
    return "sha256"


def encode_cert_rep(
    request: PkiMessage,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    *,
    issued: x509.Certificate | None = None,
    fail_info: FailInfo | None = None,
    chain: Sequence[x509.Certificate] = (),
    encryption: ContentEncryption | None = None,
    sender_nonce: bytes | None = None,
) -> bytes:
    """CertRep for `request`: SUCCESS with `issued`, or FAILURE with `fail_info` (exactly one of them).

    SUCCESS carries a certs-only SignedData (issued cert, then `chain`) enveloped to the requester's
    signer certificate with the request's encryption family; both use the request's digest algorithm.
    """
    if (issued is None) == (fail_info is None):
        raise ValueError("give exactly one of issued or fail_info")
    attrs: dict[str, core.Asn1Value] = {
        OID_MESSAGE_TYPE: core.PrintableString(str(int(MessageType.CERT_REP))),
        OID_TRANSACTION_ID: core.PrintableString(request.transaction_id),
        OID_RECIPIENT_NONCE: core.OctetString(request.sender_nonce),
        OID_SENDER_NONCE: core.OctetString(sender_nonce or os.urandom(16)),
    }
    # FAILURE carries an empty eContent rather than none: OpenSSL-based clients (certmonger) refuse
    # to verify a SignedData without content, and micromdm/Go pkcs7 sends the same.
    content = b""
    if issued is not None:
        attrs[OID_PKI_STATUS] = core.PrintableString(str(int(PkiStatus.SUCCESS)))
        algorithm = encryption or reply_encryption_for(request.envelope_algorithm)
        degenerate = cms.certs_only([issued, *chain])
        content = cms.encrypt_enveloped(degenerate, request.signer, algorithm)
    else:
        assert fail_info is not None
        attrs[OID_PKI_STATUS] = core.PrintableString(str(int(PkiStatus.FAILURE)))
        attrs[OID_FAIL_INFO] = core.PrintableString(str(int(fail_info)))
    return cms.sign(
        content,
        signer_cert,
        signer_key,
        digest=_digest_name(request.digest_algorithm),
        extra_attributes=attrs,
    )


def transaction_id_for(public_key: PublicKey) -> str:
    """A transactionID derived from the public key (hex SHA-256 of its SubjectPublicKeyInfo)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest().upper()


def build_pkcs_req(
    csr_der: bytes,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    ca_cert: x509.Certificate,
    transaction_id: str | None = None,
    encryption: ContentEncryption = "aes128_cbc",
    digest: DigestName = "sha256",
    sender_nonce: bytes | None = None,
) -> bytes:
    """A PKCSReq pkiMessage: `csr_der` enveloped to `ca_cert`, signed by the (self-signed) signer."""
    if transaction_id is None:
        transaction_id = transaction_id_for(decode_csr(csr_der).public_key)
    envelope = cms.encrypt_enveloped(csr_der, ca_cert, encryption)
    attrs: dict[str, core.Asn1Value] = {
        OID_MESSAGE_TYPE: core.PrintableString(str(int(MessageType.PKCS_REQ))),
        OID_TRANSACTION_ID: core.PrintableString(transaction_id),
        OID_SENDER_NONCE: core.OctetString(sender_nonce or os.urandom(16)),
    }
    return cms.sign(envelope, signer_cert, signer_key, digest=digest, extra_attributes=attrs)


@dataclass(frozen=True, slots=True)
class CertRepResult:
    """What a client learns from a CertRep."""

    status: PkiStatus
    fail_info: FailInfo | None
    certificate: x509.Certificate | None
    transaction_id: str
    recipient_nonce: bytes | None
    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def decode_cert_rep(
    der: bytes,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    *,
    ca_certs: Sequence[x509.Certificate] = (),
    expected_nonce: bytes | None = None,
    expected_transaction_id: str | None = None,
) -> CertRepResult:
    """Verify and open a CertRep sent to the client that signed its request with `signer_cert`.

    With `ca_certs`, the CertRep must be signed by one of them; `expected_*` check the echoes.
    """
    msg = decode_pki_message(der, extra_certs=ca_certs)
    if msg.message_type is not MessageType.CERT_REP or msg.pki_status is None:
        raise ScepMalformedError(f"expected CertRep, got {msg.message_type.name}")
    if ca_certs and all(msg.signer != c for c in ca_certs):
        raise ScepMalformedError("CertRep is not signed by the CA/RA")
    if expected_nonce is not None and msg.recipient_nonce != expected_nonce:
        raise ScepMalformedError("recipientNonce does not echo our senderNonce")
    if expected_transaction_id is not None and msg.transaction_id != expected_transaction_id:
        raise ScepMalformedError("transactionID does not match the request")
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    if msg.pki_status is PkiStatus.SUCCESS:
        try:
            certs = cms.load_certs_only(msg.decrypt(signer_cert, signer_key))
        except CmsError as exc:
            raise ScepMalformedError(str(exc)) from exc
        if not certs:
            raise ScepMalformedError("CertRep SUCCESS holds no certificate")
        mine = signer_key.public_key().public_numbers()
        certificate = next(
            (
                c
                for c in certs
                if isinstance(k := c.public_key(), rsa.RSAPublicKey) and k.public_numbers() == mine
            ),
            certs[0],
        )
        chain = tuple(c for c in certs if c is not certificate)
    return CertRepResult(
        status=msg.pki_status,
        fail_info=msg.fail_info,
        certificate=certificate,
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.recipient_nonce,
        signer=msg.signer,
        chain=chain,
    )
