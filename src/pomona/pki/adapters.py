"""The Pki and ProfileSigner ports, implemented on pki.ca and protocol.cms."""

from __future__ import annotations

import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pomona.pki.ca import CaCertificate, CertificateAuthority, generate_signing_identity
from pomona.protocol import cms
from pomona.protocol.cms import PrivateKey


class LocalPki:
    """Tenant CAs held in the database (PEM), loaded once per process: the signing CAs (with their key)
    apart from the certificates that only verify, so a verifier never holds a key."""

    def __init__(self) -> None:
        self._loaded: dict[bytes, CertificateAuthority] = {}
        self._certificates: dict[bytes, CaCertificate] = {}
        self._lock = threading.Lock()

    def new_ca(self, common_name: str, key_type: str) -> CertificateAuthority:
        if key_type not in ("rsa", "p256"):
            raise ValueError("key type must be rsa or p256")
        return CertificateAuthority.generate(common_name, "rsa" if key_type == "rsa" else "p256")

    def load_ca(self, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        with self._lock:
            ca = self._loaded.get(cert_pem)
            if ca is None:
                ca = self._loaded[cert_pem] = CertificateAuthority.from_pem(cert_pem, key_pem)
            return ca

    def load_ca_certificate(self, cert_pem: bytes) -> CaCertificate:
        with self._lock:
            found = self._certificates.get(cert_pem)
            if found is None:
                cert = x509.load_pem_x509_certificate(cert_pem)
                found = self._certificates[cert_pem] = CaCertificate(cert)
            return found


class CmsProfileSigner:
    """Signs profiles with the server's signing identity (CMS SignedData, content attached).

    The same content signed again within ``REUSE_SECONDS`` gets the signature made the first time: an
    enrollment link's profile is the same bytes for every device that opens it (its SCEP challenge is
    the link's secret), so a fleet enrolling through one link pays for one signature, not one each. The
    key is the whole content, so any change (another challenge, tenant name, push topic) signs anew;
    only the signingTime attribute is older, by at most ``REUSE_SECONDS``."""

    REUSE_SECONDS = 300.0
    REUSE_ENTRIES = 128

    def __init__(
        self, cert: x509.Certificate, key: PrivateKey, chain: tuple[x509.Certificate, ...] = ()
    ) -> None:
        self.certificate = cert
        self.key = key
        self.chain = chain
        self._signed: dict[bytes, tuple[float, bytes]] = {}

    def sign(self, content: bytes) -> bytes:
        now = time.monotonic()
        found = self._signed.get(content)
        if found is not None and now - found[0] < self.REUSE_SECONDS:
            return found[1]
        signed = cms.sign_attached(content, self.certificate, self.key, self.chain)
        if len(self._signed) >= self.REUSE_ENTRIES:
            self._signed = {k: v for k, v in self._signed.items() if now - v[0] < self.REUSE_SECONDS}
            if len(self._signed) >= self.REUSE_ENTRIES:
                self._signed.clear()
        self._signed[content] = (now, signed)
        return signed

    @classmethod
    def from_pem(cls, pem: bytes) -> CmsProfileSigner:
        """Load 'certificate(s) then key' PEM: the first certificate is the signer, the rest its chain."""
        certs = x509.load_pem_x509_certificates(pem)
        key = serialization.load_pem_private_key(
            pem[pem.index(b"-----BEGIN", pem.rindex(b"-----END CERTIFICATE-----")) :], None
        )
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError("the signing key must be RSA or EC")
        return cls(certs[0], key, tuple(certs[1:]))

    @classmethod
    def generate(cls, common_name: str) -> tuple[CmsProfileSigner, bytes]:
        cert, key = generate_signing_identity(common_name)
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(cert, key), pem
