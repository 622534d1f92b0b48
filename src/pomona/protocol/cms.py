"""A small CMS (RFC 5652) toolkit: SignedData and EnvelopedData, just what MDM and SCEP need.

`cryptography` can build signed PKCS#7 but cannot verify CMS, write arbitrary signed attributes (SCEP
needs messageType, transactionID, nonces...) or decrypt 3DES envelopes, so this module does the ASN.1
with asn1crypto and the primitives with `cryptography`.

What it covers:

- SignedData, attached or detached, SHA-1/SHA-256 (SHA-384/512 accepted on verify), RSA PKCS#1 v1.5 and
  ECDSA, with or without signed attributes. Signing always adds contentType, messageDigest, signingTime.
- EnvelopedData with RSA key transport (PKCS#1 v1.5) and DES-CBC (decrypt only), DES-EDE3-CBC,
  AES-128/192/256-CBC content encryption.

Verification checks the signature, never the chain: callers decide which issuer they trust.
`verify_detached` sits on the device check-in hot path (the `Mdm-Signature` header): it parses each
signer certificate once (an LRU keyed by its DER bytes) and verifies over the original attribute bytes.

Every failure raises `CmsError` (a `ProtocolError`, so a `ValueError`; defined in `protocol.errors`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, TypeAlias

from asn1crypto import algos, cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

try:  # cryptography >= 43 moved 3DES to the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef,unused-ignore]

from pomona.protocol.errors import CmsError

__all__ = [
    "CmsError",
    "ContentEncryption",
    "certs_only",
    "enveloped_content_algorithm",
    "load_certs_only",
    "DigestName",
    "PrivateKey",
    "PublicKey",
    "SignedMessage",
    "decrypt_enveloped",
    "encrypt_enveloped",
    "sign",
    "sign_attached",
    "sign_detached",
    "verify",
    "verify_attached",
    "verify_detached",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
DigestName: TypeAlias = Literal["sha1", "sha256", "sha384", "sha512"]
ContentEncryption: TypeAlias = Literal["aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_RSA_SIG_ALGS = frozenset({"rsassa_pkcs1v15", "sha1_rsa", "sha256_rsa", "sha384_rsa", "sha512_rsa"})
_EC_SIG_ALGS = frozenset({"ecdsa", "sha1_ecdsa", "sha256_ecdsa", "sha384_ecdsa", "sha512_ecdsa"})
_KEY_SIZES: dict[str, int] = {
    "aes128_cbc": 16,
    "aes192_cbc": 24,
    "aes256_cbc": 32,
    "tripledes_3key": 24,
    "des": 8,
}

OID_DATA = "1.2.840.113549.1.7.1"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"


# --------------------------------------------------------------------------------------------------
# Certificate cache (hot path)


@dataclass(frozen=True, slots=True)
class _CertInfo:
    cert: x509.Certificate
    public_key: PublicKey
    issuer_der: bytes
    serial: int
    ski: bytes | None


@lru_cache(maxsize=512)
def _cert_info(der: bytes) -> _CertInfo:
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:  # InvalidVersion: found by fuzzing
        raise CmsError(f"bad certificate in CMS: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CmsError(f"unsupported signer key type {type(key).__name__}")
    try:
        ski: bytes | None = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CmsError(f"bad certificate extensions in CMS: {exc}") from exc
    return _CertInfo(cert, key, cert.issuer.public_bytes(), cert.serial_number, ski)


def _info_for(cert: x509.Certificate) -> _CertInfo:
    return _cert_info(cert.public_bytes(serialization.Encoding.DER))


# --------------------------------------------------------------------------------------------------
# Signing


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def _sign_bytes(key: PrivateKey, data: bytes, digest: str) -> tuple[bytes, str]:
    """Sign and return (signature, CMS signature algorithm name)."""
    algo = _HASHES[digest]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algo), "rsassa_pkcs1v15"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algo)), f"{digest}_ecdsa"
    raise CmsError(f"unsupported private key type {type(key).__name__}")


# DER written directly: asn1crypto's object model cost ~0.7 ms per SignedData (building, copying and
# re-dumping the certificates and names), three times the RSA signature itself, on the enrollment path
# (the profile, and SCEP's CertRep twice over with its envelope). The constant pieces (algorithm
# identifiers, the contentType attribute) are asn1crypto's own encodings, made once; the output is byte
# for byte what asn1crypto built (tests/protocol/test_cms.py compares the two).


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _der_integer(value: int) -> bytes:
    """A DER INTEGER: the shortest two's complement."""
    length = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return _der(0x02, value.to_bytes(length, "big", signed=True))


def _der_set_of(encodings: Sequence[bytes]) -> bytes:
    """A DER SET OF: its elements' encodings sorted (X.690 11.6)."""
    return _der(0x31, b"".join(sorted(encodings)))


_DIGEST_ALGORITHM_DER: dict[str, bytes] = {
    name: algos.DigestAlgorithm({"algorithm": name}).dump() for name in _HASHES
}
_RSA_SIGNATURE_ALGORITHM_DER: bytes = algos.SignedDigestAlgorithm(
    {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
).dump()
_EC_SIGNATURE_ALGORITHM_DER: dict[str, bytes] = {
    name: algos.SignedDigestAlgorithm({"algorithm": f"{name}_ecdsa"}).dump() for name in _HASHES
}
_RSA_KEY_TRANSPORT_DER: bytes = cms.KeyEncryptionAlgorithm(
    {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()}
).dump()
_CONTENT_TYPE_DATA_ATTRIBUTE_DER: bytes = cms.CMSAttribute(
    {"type": OID_CONTENT_TYPE, "values": [cms.ContentType(OID_DATA)]}
).dump()
_OID_DATA_DER: bytes = core.ObjectIdentifier(OID_DATA).dump()
_OID_SIGNED_DATA_DER: bytes = cms.ContentType("signed_data").dump()
_OID_ENVELOPED_DATA_DER: bytes = cms.ContentType("enveloped_data").dump()
_OID_SIGNING_TIME_DER: bytes = core.ObjectIdentifier(OID_SIGNING_TIME).dump()
_OID_MESSAGE_DIGEST_DER: bytes = core.ObjectIdentifier(OID_MESSAGE_DIGEST).dump()
_VERSION_0_DER = b"\x02\x01\x00"
_VERSION_1_DER = b"\x02\x01\x01"


@lru_cache(maxsize=256)
def _cert_parts(der: bytes) -> tuple[bytes, bytes]:
    """(IssuerAndSerialNumber, the certificate's DER) of a certificate: the issuer Name as the
    certificate encodes it, the serial as asn1crypto writes an INTEGER."""
    tag, p, e = _tlv(der, 0, len(der))  # Certificate
    tag, p, e = _tlv(der, p, e)  # TBSCertificate
    tag, s, q = _tlv(der, p, e)
    if tag == 0xA0:  # [0] version
        tag, s, q = _tlv(der, q, e)
    if tag != 0x02:
        raise _NotFast
    serial = int.from_bytes(der[s:q], "big", signed=True)
    tag, s, q = _tlv(der, q, e)  # signature AlgorithmIdentifier
    tag, s, issuer_end = _tlv(der, q, e)  # issuer Name
    if tag != 0x30:
        raise _NotFast
    return _der(0x30, der[q:issuer_end] + _der_integer(serial)), der


def _issuer_and_serial(cert: x509.Certificate) -> tuple[bytes, bytes]:
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        return _cert_parts(der)
    except (_NotFast, IndexError) as exc:
        raise CmsError(f"bad certificate: {exc!r}") from exc


def _signing_time(when: dt.datetime) -> bytes:
    """signingTime's value as asn1crypto writes it: UTCTime to 2049, then GeneralizedTime."""
    if when.tzinfo is None:
        raise ValueError("signing time must be timezone aware")
    utc = when.astimezone(dt.UTC)
    if 1950 <= when.year < 2050:
        return _der(0x17, utc.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    fraction = "." + str(utc.microsecond).zfill(6).rstrip("0") if utc.microsecond else ""
    return _der(0x18, (utc.strftime("%Y%m%d%H%M%S") + fraction + "Z").encode("ascii"))


def sign(
    content: bytes | None,
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    digest: DigestName = "sha256",
    detached: bool = False,
    chain: Sequence[x509.Certificate] = (),
    extra_attributes: Mapping[str, core.Asn1Value] = {},  # noqa: B006 - read-only
    include_signer_cert: bool = True,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """Build a DER SignedData (one signer, signed attributes) over `content` (`None`: no content).

    `extra_attributes` maps attribute OIDs (dotted) to one ASN.1 value each; SCEP uses it.
    """
    if digest not in _HASHES:
        raise CmsError(f"unsupported digest {digest!r}")
    body = content if content is not None else b""
    when = signing_time or dt.datetime.now(dt.UTC)
    attrs = [
        _CONTENT_TYPE_DATA_ATTRIBUTE_DER,
        _der(0x30, _OID_SIGNING_TIME_DER + _der(0x31, _signing_time(when))),
        _der(0x30, _OID_MESSAGE_DIGEST_DER + _der(0x31, _der(0x04, _digest(digest, body)))),
    ]
    attrs.extend(
        _der(0x30, core.ObjectIdentifier(oid).dump() + _der(0x31, value.dump()))
        for oid, value in extra_attributes.items()
    )
    signed_attrs = b"".join(sorted(attrs))
    signature, sig_alg = _sign_bytes(key, _der(0x31, signed_attrs), digest)
    sig_algorithm = (
        _RSA_SIGNATURE_ALGORITHM_DER if sig_alg == "rsassa_pkcs1v15" else _EC_SIGNATURE_ALGORITHM_DER[digest]
    )
    sid, cert_der = _issuer_and_serial(cert)
    digest_algorithm = _DIGEST_ALGORITHM_DER[digest]
    signer_info = _der(
        0x30,
        _VERSION_1_DER
        + sid
        + digest_algorithm
        + _der(0xA0, signed_attrs)
        + sig_algorithm
        + _der(0x04, signature),
    )
    encap = _OID_DATA_DER
    if content is not None and not detached:
        encap += _der(0xA0, _der(0x04, content))
    certs = [cert_der] if include_signer_cert else []
    certs.extend(c.public_bytes(serialization.Encoding.DER) for c in chain)
    signed_data = (
        _VERSION_1_DER
        + _der(0x31, digest_algorithm)
        + _der(0x30, encap)
        + (_der(0xA0, b"".join(sorted(certs))) if certs else b"")
        + _der(0x31, signer_info)
    )
    return _der(0x30, _OID_SIGNED_DATA_DER + _der(0xA0, _der(0x30, signed_data)))


def sign_attached(
    content: bytes,
    cert: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """SignedData with encapsulated content, SHA-256 and signed attributes (signs .mobileconfig files)."""
    return sign(content, cert, key, chain=chain)


def sign_detached(content: bytes, cert: x509.Certificate, key: PrivateKey) -> bytes:
    """Detached SignedData carrying the signer certificate, as an iPhone builds `Mdm-Signature`."""
    return sign(content, cert, key, detached=True)


# --------------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A verified SignedData: its content, signer, digest and signed attributes.

    `signed_attributes` maps attribute OIDs (dotted) to the DER of each value; it is empty when the
    signer used no signed attributes. `certificates` are all certificates the message carried.
    """

    content: bytes
    signer: x509.Certificate
    digest_algorithm: str
    signed_attributes: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    certificates: tuple[x509.Certificate, ...] = ()


def _load_signed_data(der: bytes) -> cms.SignedData:
    try:
        info = cms.ContentInfo.load(der, strict=False)
        if info["content_type"].dotted != "1.2.840.113549.1.7.2":
            raise CmsError(f"not SignedData but {info['content_type'].native}")
        signed: cms.SignedData = info["content"]
        # touch the parts we need so that parse errors surface here
        signed["signer_infos"]
        return signed
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise CmsError(f"malformed SignedData: {exc}") from exc


def _carried_certs(signed: cms.SignedData) -> list[_CertInfo]:
    out: list[_CertInfo] = []
    certs = signed["certificates"]
    if isinstance(certs, core.Void):
        return out
    for choice in certs:
        if choice.name == "certificate":
            out.append(_cert_info(choice.chosen.dump()))
    return out


def _find_signer(sid: cms.SignerIdentifier, candidates: Sequence[_CertInfo]) -> _CertInfo:
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        serial: int = ias["serial_number"].native
        issuer_der: bytes = ias["issuer"].dump()
        for info in candidates:
            if info.serial == serial and info.issuer_der == issuer_der:
                return info
        # Fall back to a semantic comparison when the encodings differ (e.g. re-encoded names).
        for info in candidates:
            if info.serial == serial and asn1_x509.Name.load(info.issuer_der) == ias["issuer"]:
                return info
    else:
        ski: bytes = sid.chosen.native
        for info in candidates:
            if info.ski == ski:
                return info
    raise CmsError("signer certificate not found in the message")


def _verify_signature(pub: PublicKey, sig_alg: str, digest: str, signature: bytes, data: bytes) -> None:
    algo = _HASHES[digest]()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            if sig_alg not in _RSA_SIG_ALGS:
                raise CmsError(f"signature algorithm {sig_alg} does not match an RSA key")
            pub.verify(signature, data, padding.PKCS1v15(), algo)
        else:
            if sig_alg not in _EC_SIG_ALGS:
                raise CmsError(f"signature algorithm {sig_alg} does not match an EC key")
            pub.verify(signature, data, ec.ECDSA(algo))
    except InvalidSignature as exc:
        raise CmsError("signature does not verify") from exc


def _verify(
    der: bytes,
    detached_content: bytes | None,
    extra_certs: Sequence[x509.Certificate] = (),
    want_attributes: bool = True,
) -> SignedMessage:
    signed = _load_signed_data(der)
    try:
        infos = signed["signer_infos"]
        if len(infos) != 1:
            raise CmsError(f"expected one signer, got {len(infos)}")
        signer_info = infos[0]
        candidates = _carried_certs(signed)
        if extra_certs:
            candidates = candidates + [i for i in map(_info_for, extra_certs) if i not in candidates]
        signer = _find_signer(signer_info["sid"], candidates)

        if detached_content is not None:
            content = detached_content
        else:
            econtent = signed["encap_content_info"]["content"]
            content = b"" if isinstance(econtent, core.Void) else _octets(econtent)

        digest: str = signer_info["digest_algorithm"]["algorithm"].native
        if digest not in _HASHES:
            raise CmsError(f"unsupported digest algorithm {digest}")
        sig_alg: str = signer_info["signature_algorithm"]["algorithm"].native
        signature: bytes = signer_info["signature"].native
        signed_attrs = signer_info["signed_attrs"]

        attributes: dict[str, tuple[bytes, ...]] = {}
        if signed_attrs.contents is None or len(signed_attrs) == 0:
            to_verify = content
        else:
            md: bytes | None = None
            has_content_type = False
            for attr in signed_attrs:
                oid: str = attr["type"].dotted
                if oid == OID_MESSAGE_DIGEST:
                    md = attr["values"][0].native
                elif oid == OID_CONTENT_TYPE:
                    has_content_type = True
                if want_attributes:
                    attributes[oid] = tuple(v.dump() for v in attr["values"])
            if md is None or not has_content_type:
                raise CmsError("signed attributes lack messageDigest or contentType")
            if md != _digest(digest, content):
                raise CmsError("messageDigest does not match the content")
            raw = signed_attrs.dump()
            to_verify = b"\x31" + raw[1:]  # [0] IMPLICIT -> SET OF, per RFC 5652 5.4
        _verify_signature(signer.public_key, sig_alg, digest, signature, to_verify)
    except CmsError:
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
        raise CmsError(f"malformed SignedData: {exc}") from exc
    certificates = tuple(i.cert for i in candidates) if want_attributes else ()
    return SignedMessage(content, signer.cert, digest, attributes, certificates)


def _octets(value: core.Asn1Value) -> bytes:
    """The bytes of a (possibly BER-constructed) OCTET STRING, without re-encoding."""
    data: bytes = value.__bytes__()
    return data


def verify(
    der: bytes, detached_content: bytes | None = None, extra_certs: Sequence[x509.Certificate] = ()
) -> SignedMessage:
    """Verify a SignedData (attached, or detached when `detached_content` is given); not the chain.

    `extra_certs` are candidate signer certificates for messages that do not carry theirs.
    """
    attributes: dict[str, tuple[bytes, ...]] = {}
    carried: list[_CertInfo] = []
    try:
        content, signer, digest = _fast_verify(der, detached_content, attributes, carried, extra_certs)
    except CmsError:
        raise
    except (_NotFast, ValueError, IndexError, TypeError):
        return _verify(der, detached_content, extra_certs)
    if "" in attributes:
        return _verify(der, detached_content, extra_certs)  # an OID too long for the fast path's cache
    candidates = carried + [i for i in map(_info_for, extra_certs) if i not in carried]
    return SignedMessage(content, signer.cert, digest, attributes, tuple(i.cert for i in candidates))


def verify_attached(der: bytes) -> tuple[bytes, x509.Certificate]:
    """Return (content, signer certificate) after checking the signature (not the chain)."""
    try:
        content, info, _ = _fast_verify(der, None)
        return content, info.cert
    except CmsError:
        raise
    except (_NotFast, ValueError, IndexError, TypeError):
        pass
    msg = _verify(der, None, want_attributes=False)
    return msg.content, msg.signer


def verify_detached(signature_der: bytes, content: bytes) -> x509.Certificate:
    """Verify a detached signature over `content` and return the signer certificate (hot path)."""
    try:
        return _fast_verify(signature_der, content)[1].cert
    except CmsError:
        raise
    except (_NotFast, ValueError, IndexError, TypeError):
        pass
    return _verify(signature_der, content, want_attributes=False).signer


# --------------------------------------------------------------------------------------------------
# Fast path: a minimal DER walker for the common, strictly-DER SignedData. Anything unusual (BER
# indefinite lengths, SKI signer identifiers, re-encoded names, ...) raises _NotFast and the caller
# falls back to the asn1crypto path, which gives the definitive answer.


class _NotFast(Exception):
    pass


def _oid_contents(dotted: str) -> bytes:
    data: bytes = core.ObjectIdentifier(dotted).contents
    return data


_FAST_DIGESTS: dict[bytes, str] = {
    _oid_contents(oid): name for oid, name in algos.DigestAlgorithmId._map.items() if name in _HASHES
}
_FAST_SIG_ALGS: dict[bytes, str] = {
    _oid_contents(oid): name
    for oid, name in algos.SignedDigestAlgorithmId._map.items()
    if name in _RSA_SIG_ALGS or name in _EC_SIG_ALGS
}
_OID_SIGNED_DATA_C = _oid_contents("1.2.840.113549.1.7.2")
_OID_MESSAGE_DIGEST_C = _oid_contents(OID_MESSAGE_DIGEST)
_OID_CONTENT_TYPE_C = _oid_contents(OID_CONTENT_TYPE)


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`."""
    if pos + 2 > end:
        raise _NotFast
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise _NotFast
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    stop = pos + length
    if stop > end or tag & 0x1F == 0x1F:
        raise _NotFast
    return tag, pos, stop


@lru_cache(maxsize=64)
def _dotted(oid_der: bytes) -> str:
    dotted: str = core.ObjectIdentifier.load(oid_der).dotted
    return dotted


def _fast_verify(
    der: bytes,
    detached: bytes | None,
    attributes: dict[str, tuple[bytes, ...]] | None = None,
    carried: list[_CertInfo] | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
) -> tuple[bytes, _CertInfo, str]:
    """(content, signer, digest name) of a strictly-DER SignedData; ``attributes`` and ``carried``, when
    given, are filled with the signed attributes (OID -> each value's DER) and the certificates carried.
    ``extra_certs`` are further candidate signers, after the carried ones."""
    end = len(der)
    tag, p, e = _tlv(der, 0, end)  # ContentInfo
    if tag != 0x30 or e != end:
        raise _NotFast
    tag, s, q = _tlv(der, p, e)  # contentType
    if tag != 0x06 or der[s:q] != _OID_SIGNED_DATA_C:
        raise _NotFast
    tag, p, e = _tlv(der, q, e)  # [0] EXPLICIT
    if tag != 0xA0:
        raise _NotFast
    tag, p, e = _tlv(der, p, e)  # SignedData
    if tag != 0x30:
        raise _NotFast
    tag, s, p = _tlv(der, p, e)  # version
    tag, s, p = _tlv(der, p, e)  # digestAlgorithms
    tag, s, p = _tlv(der, p, e)  # encapContentInfo
    if tag != 0x30:
        raise _NotFast
    econtent: bytes | None = None
    tag, s2, q = _tlv(der, s, p)  # eContentType
    if q < p:
        tag, s3, q3 = _tlv(der, q, p)
        if tag != 0xA0:
            raise _NotFast
        tag, s4, q4 = _tlv(der, s3, q3)
        if tag != 0x04:
            raise _NotFast
        econtent = der[s4:q4]
    certs: list[bytes] = []
    tag, s, q = _tlv(der, p, e)
    if tag == 0xA0:  # certificates
        c = s
        while c < q:
            ctag, cs, ce = _tlv(der, c, q)
            if ctag == 0x30:
                certs.append(der[c:ce])
            c = ce
        p = q
        tag, s, q = _tlv(der, p, e)
    if tag == 0xA1:  # crls
        p = q
        tag, s, q = _tlv(der, p, e)
    if tag != 0x31 or q != e:  # signerInfos
        raise _NotFast
    tag, p, e = _tlv(der, s, q)  # the one SignerInfo
    if tag != 0x30 or e != q:
        raise _NotFast
    tag, s, p = _tlv(der, p, e)  # version
    tag, s, p = _tlv(der, p, e)  # sid
    if tag != 0x30:
        raise _NotFast  # subjectKeyIdentifier: slow path
    tag, _, ne = _tlv(der, s, p)  # issuer Name
    if tag != 0x30:
        raise _NotFast
    issuer_der = der[s:ne]
    tag, ss, se = _tlv(der, ne, p)  # serialNumber
    if tag != 0x02 or se != p:
        raise _NotFast
    serial = int.from_bytes(der[ss:se], "big", signed=True)
    tag, s, p2 = _tlv(der, p, e)  # digestAlgorithm
    tag, os_, oe = _tlv(der, s, p2)
    digest = _FAST_DIGESTS.get(der[os_:oe])
    if digest is None:
        raise _NotFast
    tag, s, q = _tlv(der, p2, e)
    signed_attrs: bytes | None = None
    message_digest: bytes | None = None
    has_content_type = False
    if tag == 0xA0:  # signedAttrs
        signed_attrs = b"\x31" + der[p2 + 1 : q]
        a = s
        while a < q:
            atag, as_, ae = _tlv(der, a, q)
            ttag, ts, te = _tlv(der, as_, ae)
            oid = der[ts:te]
            if attributes is not None:
                vtag, vs, ve = _tlv(der, te, ae)  # SET of values
                if vtag != 0x31 or ve != ae:
                    raise _NotFast
                values = []
                while vs < ve:
                    _, _, x = _tlv(der, vs, ve)
                    values.append(der[vs:x])
                    vs = x
                attributes[_dotted(der[ts - 2 : te]) if te - ts < 0x80 else ""] = tuple(values)
            if oid == _OID_MESSAGE_DIGEST_C:
                vtag, vs, ve = _tlv(der, te, ae)  # SET
                xtag, xs, xe = _tlv(der, vs, ve)
                if vtag != 0x31 or xtag != 0x04 or xe != ve or message_digest is not None:
                    raise _NotFast
                message_digest = der[xs:xe]
            elif oid == _OID_CONTENT_TYPE_C:
                has_content_type = True
            a = ae
        p2 = q
        tag, s, q = _tlv(der, p2, e)
    if tag != 0x30:  # signatureAlgorithm
        raise _NotFast
    tag, os_, oe = _tlv(der, s, q)
    sig_alg = _FAST_SIG_ALGS.get(der[os_:oe])
    if sig_alg is None:
        raise _NotFast
    tag, s, q = _tlv(der, q, e)
    if tag != 0x04:
        raise _NotFast
    signature = der[s:q]

    signer: _CertInfo | None = None
    infos = [_cert_info(raw) for raw in certs]
    if carried is not None:
        carried.extend(infos)
    for info in (*infos, *map(_info_for, extra_certs)):
        if info.serial == serial and info.issuer_der == issuer_der:
            signer = info
            break
    if signer is None:
        raise _NotFast
    content = detached if detached is not None else econtent
    if content is None:
        raise _NotFast
    if signed_attrs is None:
        to_verify = content
    else:
        if message_digest is None or not has_content_type:
            raise CmsError("signed attributes lack messageDigest or contentType")
        if message_digest != _digest(digest, content):
            raise CmsError("messageDigest does not match the content")
        to_verify = signed_attrs
    _verify_signature(signer.public_key, sig_alg, digest, signature, to_verify)
    return content, signer, digest


# --------------------------------------------------------------------------------------------------
# EnvelopedData


def _cipher_for(name: str, key: bytes) -> BlockCipherAlgorithm:
    if name in ("aes128_cbc", "aes192_cbc", "aes256_cbc"):
        return algorithms.AES(key)
    if name == "tripledes_3key":
        return TripleDES(key)
    if name == "des":  # single DES (micromdm's default) is 3DES with K1 = K2 = K3
        return TripleDES(key * 3)
    raise CmsError(f"unsupported content encryption {name}")


def _pkcs7_unpad(data: bytes, block: int) -> bytes:
    if not data or len(data) % block:
        raise CmsError("bad ciphertext length")
    n = data[-1]
    if n < 1 or n > block or data[-n:] != bytes([n]) * n:
        raise CmsError("bad padding in decrypted content")
    return data[:-n]


_Ber = tuple[int, int, int, bytes, bytes, bytes]


def _ber_children(data: bytes) -> list[_Ber]:
    """The (class, method, tag, header, contents, trailer) of each BER element in `data`."""
    out: list[_Ber] = []
    pos = 0
    while pos < len(data):
        size = parser.peek(data[pos:])
        out.append(parser.parse(data[pos : pos + size], strict=True))
        pos += size
    return out


def _ber_octets(data: bytes) -> bytes:
    """Concatenate the chunks of a constructed OCTET STRING's contents."""
    chunks: list[bytes] = []
    for _, method, tag, _, contents, _ in _ber_children(data):
        if tag != 4:
            raise CmsError("bad OCTET STRING chunk")
        chunks.append(contents if method == 0 else _ber_octets(contents))
    return b"".join(chunks)


def decrypt_enveloped(
    der: bytes, recipient_cert: x509.Certificate, recipient_key: rsa.RSAPrivateKey
) -> bytes:
    """Decrypt an EnvelopedData addressed to `recipient_cert` (RSA key transport)."""
    if not isinstance(recipient_key, rsa.RSAPrivateKey):
        raise CmsError("EnvelopedData needs an RSA recipient key")
    me = _info_for(recipient_cert)
    try:
        info = cms.ContentInfo.load(der, strict=False)
        if info["content_type"].native != "enveloped_data":
            raise CmsError(f"not EnvelopedData but {info['content_type'].native}")
        env = info["content"]
        encrypted_key: bytes | None = None
        ktris = [ri.chosen for ri in env["recipient_infos"] if ri.name == "ktri"]
        if not ktris:
            raise CmsError("no key-transport recipient")
        for ktri in ktris:
            rid = ktri["rid"]
            if rid.name == "issuer_and_serial_number":
                ias = rid.chosen
                if ias["serial_number"].native == me.serial and (
                    ias["issuer"].dump() == me.issuer_der
                    or ias["issuer"] == asn1_x509.Name.load(me.issuer_der)
                ):
                    encrypted_key = ktri["encrypted_key"].native
                    break
            elif rid.chosen.native == me.ski:
                encrypted_key = ktri["encrypted_key"].native
                break
        if encrypted_key is None:
            raise CmsError("the message is not addressed to this recipient")
        if ktris[0]["key_encryption_algorithm"]["algorithm"].native not in ("rsaes_pkcs1v15", "rsa"):
            raise CmsError("unsupported key transport algorithm")
        # Walk EncryptedContentInfo by hand: Go's pkcs7 (micromdm) sends encryptedContent as a
        # constructed [0] of OCTET STRING chunks, which asn1crypto's implicit OctetString refuses.
        parts = _ber_children(env["encrypted_content_info"].contents)
        if len(parts) != 3:
            raise CmsError("EnvelopedData has no encrypted content")
        alg = algos.EncryptionAlgorithm.load(parts[1][3] + parts[1][4])
        name: str = alg["algorithm"].native
        if name not in _KEY_SIZES:
            raise CmsError(f"unsupported content encryption {name}")
        iv: bytes = alg["parameters"].native
        cls, method, tag, _, contents, _ = parts[2]
        if (cls, tag) != (2, 0):
            raise CmsError("EnvelopedData has no encrypted content")
        ciphertext = contents if method == 0 else _ber_octets(contents)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise CmsError(f"malformed EnvelopedData: {exc}") from exc
    try:
        cek = recipient_key.decrypt(encrypted_key, padding.PKCS1v15())
    except ValueError as exc:
        raise CmsError("cannot decrypt the content-encryption key") from exc
    if len(cek) != _KEY_SIZES[name]:
        raise CmsError("content-encryption key has the wrong length")
    cipher = _cipher_for(name, cek)
    block = cipher.block_size // 8
    if not isinstance(iv, bytes) or len(iv) != block:
        raise CmsError("bad IV")
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    if len(ciphertext) % block:
        raise CmsError("bad ciphertext length")
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    return _pkcs7_unpad(plain, block)


def encrypt_enveloped(
    content: bytes, recipient_cert: x509.Certificate, algorithm: ContentEncryption = "aes256_cbc"
) -> bytes:
    """EnvelopedData for one RSA recipient (PKCS#1 v1.5 key transport), content in CBC mode."""
    if algorithm not in ("aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"):
        raise CmsError(f"unsupported content encryption {algorithm!r}")
    info = _info_for(recipient_cert)
    if not isinstance(info.public_key, rsa.RSAPublicKey):
        raise CmsError("EnvelopedData needs an RSA recipient certificate")
    cek = os.urandom(_KEY_SIZES[algorithm])
    cipher = _cipher_for(algorithm, cek)
    block = cipher.block_size // 8
    iv = os.urandom(block)
    pad = block - len(content) % block
    encryptor = Cipher(cipher, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(content + bytes([pad]) * pad) + encryptor.finalize()
    encrypted_key = info.public_key.encrypt(cek, padding.PKCS1v15())
    rid, _ = _issuer_and_serial(recipient_cert)
    ktri = _der(0x30, _VERSION_0_DER + rid + _RSA_KEY_TRANSPORT_DER + _der(0x04, encrypted_key))
    encrypted_content_info = _der(
        0x30,
        _OID_DATA_DER
        + _der(0x30, _ENCRYPTION_OID_DER[algorithm] + _der(0x04, iv))
        + _der(0x80, ciphertext),  # [0] IMPLICIT OCTET STRING
    )
    enveloped = _VERSION_0_DER + _der(0x31, ktri) + encrypted_content_info
    return _der(0x30, _OID_ENVELOPED_DATA_DER + _der(0xA0, _der(0x30, enveloped)))


_ENCRYPTION_OID_DER: dict[str, bytes] = {
    name: algos.EncryptionAlgorithmId(name).dump()
    for name in ("aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key")
}


def enveloped_content_algorithm(der: bytes) -> str:
    """The content-encryption algorithm name of an EnvelopedData (`aes128_cbc`, `tripledes_3key`, ...)."""
    try:
        info = cms.ContentInfo.load(der, strict=False)
        if info["content_type"].native != "enveloped_data":
            raise CmsError(f"not EnvelopedData but {info['content_type'].native}")
        name: str = info["content"]["encrypted_content_info"]["content_encryption_algorithm"][
            "algorithm"
        ].native
        return name
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise CmsError(f"malformed EnvelopedData: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Degenerate ("certs-only") SignedData


def certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """A degenerate SignedData holding only certificates (SCEP CertRep content, GetCACert with an RA).

    DER sorts the SET OF certificates, so their order is not kept: readers pick by content.
    """
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


def load_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a degenerate SignedData."""
    try:
        with warnings.catch_warnings():  # BER (unsorted) sets from other implementations are fine
            warnings.simplefilter("ignore", UserWarning)
            return pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise CmsError(f"malformed certs-only SignedData: {exc}") from exc
