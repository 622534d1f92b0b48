"""A stand-in for Apple's device CA, so that virtual devices can sign their MachineInfo as ADE devices do.

Real ADE devices sign MachineInfo with an identity issued by Apple's "Apple iPhone Device CA", whose
certificate expired in 2014 while its key still issues every device identity. :class:`TestDeviceCa`
copies that shape: a root, a device CA under it (expired by default, like Apple's), and current device
identities from it. A server trusts it by passing :attr:`TestDeviceCa.trusted_keys` to
:func:`pomona.protocol.machineinfo.verify_machine_info` instead of Apple's key; that is a test-mode
setting only.

:func:`sign_machine_info` builds the SignedData the way a device does (one signer, the identity and its
CA's certificate carried, SHA-256, signed attributes) and, for tests, every way a device does not (no
signer, two signers, MD5, no signer certificate, no signed attributes, another key).

    ca = TestDeviceCa.generate()
    body = device.machine_info(ca)            # pomona.testing.virtual_device.VirtualDevice
    verify_machine_info(body, ca.trusted_keys)

:meth:`TestDeviceCa.save` keeps one in a folder (``pomona simulate --ade --device-ca DIR`` uses it from
there): ``ca.pem`` is the device CA's certificate, the file a test server is told to trust
(``POMONA_ADE_TEST_DEVICE_CA=DIR/ca.pem``); ``ca.key``, ``root.pem`` and ``root.key`` stay beside it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pomona.protocol import cms

__all__ = ["CA_FILE", "Issuer", "KeyType", "TestDeviceCa", "sign_machine_info"]

#: The device CA's certificate in a saved :class:`TestDeviceCa` folder: what a test server trusts.
CA_FILE: Final = "ca.pem"
_FILES: Final = {"device_ca": (CA_FILE, "ca.key"), "root": ("root.pem", "root.key")}

KeyType = Literal["rsa", "ec"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _new_key(key_type: KeyType) -> cms.PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, ou: str = "Pomona Test iPhone") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pomona Test"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Issuer:
    """A key and its certificate, able to issue certificates (whether or not it is really a CA)."""

    key: cms.PrivateKey
    cert: x509.Certificate

    def issue(
        self,
        subject: x509.Name,
        public_key: cms.PublicKey,
        *,
        ca: bool,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        """A certificate for ``public_key``, signed by this issuer's key with SHA-256."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if ca:
            builder = builder.add_extension(_CA_USAGE, critical=True)
        else:
            builder = builder.add_extension(_LEAF_USAGE, critical=True).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=True,
            )
        return builder.sign(self.key, hashes.SHA256())

    def issue_ca(self, cn: str, *, key_type: KeyType = "rsa", expired: bool = False) -> Issuer:
        """A CA under this issuer (``expired``: its validity ended years ago, as Apple's device CA's)."""
        key = _new_key(key_type)
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=6000), now - dt.timedelta(days=4000))
            if expired
            else (
                now - dt.timedelta(days=1),
                now + dt.timedelta(days=3650),
            )
        )
        cert = self.issue(_name(cn), key.public_key(), ca=True, not_before=start, not_after=end)
        return Issuer(key, cert)

    def issue_leaf(
        self, cn: str, *, key: cms.PrivateKey | None = None, key_type: KeyType = "rsa"
    ) -> tuple[cms.PrivateKey, x509.Certificate]:
        """A current end-entity certificate (cA false), like a device identity: (key, certificate)."""
        key = key if key is not None else _new_key(key_type)
        now = dt.datetime.now(dt.UTC)
        cert = self.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
            key.public_key(),
            ca=False,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=1095),
        )
        return key, cert


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _root(cn: str, key_type: KeyType) -> Issuer:
    key = _new_key(key_type)
    now = dt.datetime.now(dt.UTC)
    name = _name(cn, "Pomona Test Certification Authority")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=7000))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


@dataclass(frozen=True)
class TestDeviceCa:
    """A test root and, under it, a test "iPhone Device CA" that issues device identities.

    Trust :attr:`trusted_keys` (the device CA's public key, as Apple's is pinned) in test mode only.
    """

    __test__ = False  # not a pytest test class

    root: Issuer
    device_ca: Issuer

    @classmethod
    def generate(cls, *, key_type: KeyType = "rsa", expired: bool = True) -> TestDeviceCa:
        """A new root and device CA; the device CA is ``expired`` like Apple's unless told otherwise."""
        root = _root("Pomona Test Root CA", key_type)
        return cls(root, root.issue_ca("Pomona Test iPhone Device CA", key_type=key_type, expired=expired))

    @property
    def trusted_keys(self) -> tuple[cms.PublicKey, ...]:
        """What a test-mode server trusts: the device CA's public key (never its certificate's dates)."""
        return (self.device_ca.cert.public_key(),)  # type: ignore[return-value]

    def save(self, folder: Path) -> Path:
        """Write the root and the device CA (certificates and keys, PEM; keys readable by the owner
        only) into ``folder``; returns the path of ``ca.pem``, the device CA certificate to trust."""
        folder.mkdir(parents=True, exist_ok=True)
        for attr, (cert_name, key_name) in _FILES.items():
            issuer: Issuer = getattr(self, attr)
            (folder / cert_name).write_bytes(issuer.cert.public_bytes(serialization.Encoding.PEM))
            key_pem = issuer.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(folder / key_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
        return folder / CA_FILE

    @classmethod
    def load(cls, folder: Path) -> TestDeviceCa:
        """The test CA :meth:`save` wrote into ``folder`` (``OSError`` or ``ValueError`` when it did not)."""
        loaded: dict[str, Issuer] = {}
        for attr, (cert_name, key_name) in _FILES.items():
            cert = x509.load_pem_x509_certificate((folder / cert_name).read_bytes())
            key = serialization.load_pem_private_key((folder / key_name).read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError(f"{folder / key_name} is neither an RSA nor an EC key")
            loaded[attr] = Issuer(key, cert)
        return cls(loaded["root"], loaded["device_ca"])

    @classmethod
    def load_or_create(cls, folder: Path) -> tuple[TestDeviceCa, bool]:
        """The test CA saved in ``folder``, or a new one saved there: (the CA, whether it is new)."""
        if (folder / CA_FILE).exists():
            return cls.load(folder), False
        ca = cls.generate()
        ca.save(folder)
        return ca, True

    def issue_device_identity(
        self, udid: str, *, key: cms.PrivateKey | None = None, key_type: KeyType = "rsa"
    ) -> tuple[cms.PrivateKey, x509.Certificate]:
        """A device identity for ``udid`` (its common name, as Apple's), valid now: (key, certificate)."""
        return self.device_ca.issue_leaf(udid, key=key, key_type=key_type)


def _signer_info(
    content: bytes,
    cert: x509.Certificate,
    key: cms.PrivateKey,
    digest: str,
    signed_attributes: bool,
) -> asn1_cms.SignerInfo:
    algo = _HASHES[digest]()
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    info: dict[str, object] = {
        "version": "v1",
        "sid": asn1_cms.SignerIdentifier(
            {
                "issuer_and_serial_number": asn1_cms.IssuerAndSerialNumber(
                    {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
                )
            }
        ),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
    }
    to_sign = content
    if signed_attributes:
        attrs = asn1_cms.CMSAttributes(
            [
                asn1_cms.CMSAttribute(
                    {"type": cms.OID_CONTENT_TYPE, "values": [asn1_cms.ContentType(cms.OID_DATA)]}
                ),
                asn1_cms.CMSAttribute(
                    {
                        "type": cms.OID_SIGNING_TIME,
                        "values": [asn1_cms.Time({"utc_time": dt.datetime.now(dt.UTC)})],
                    }
                ),
                asn1_cms.CMSAttribute(
                    {
                        "type": cms.OID_MESSAGE_DIGEST,
                        "values": [core.OctetString(hashlib.new(digest, content).digest())],
                    }
                ),
            ]
        )
        info["signed_attrs"] = attrs
        to_sign = attrs.dump()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), algo)
        info["signature_algorithm"] = algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
        )
    else:
        signature = key.sign(to_sign, ec.ECDSA(algo))
        info["signature_algorithm"] = algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"})
    info["signature"] = signature
    return asn1_cms.SignerInfo(info)


def sign_machine_info(
    content: bytes,
    signers: Sequence[tuple[x509.Certificate, cms.PrivateKey]],
    *,
    certificates: Sequence[x509.Certificate] | None = None,
    digest: Literal["md5", "sha1", "sha256", "sha384", "sha512"] = "sha256",
    signed_attributes: bool = True,
) -> bytes:
    """A DER SignedData over ``content`` (attached) with one SignerInfo per ``(cert, key)`` in ``signers``.

    ``certificates`` are the certificates carried (default: every signer's). A device passes one signer
    and carries its identity and its CA's certificate. ``signed_attributes=False`` signs the content
    itself, as older CMS signers do.
    """
    carried = list(certificates) if certificates is not None else [cert for cert, _ in signers]
    signed = asn1_cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})] if signers else [],
            "encap_content_info": {"content_type": "data", "content": content},
            "signer_infos": [_signer_info(content, c, k, digest, signed_attributes) for c, k in signers],
        }
    )
    if carried:
        signed["certificates"] = [
            asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in carried
        ]
    der: bytes = asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return der
