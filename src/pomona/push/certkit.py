"""The push certificate kit (ports.PushCertKit) over pki/apns_certs.py: CSRs, vendor signing, upload
checks (PEM or .p12) and sealing keys at rest with the server key."""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives import serialization

from pomona.pki.apns_certs import (
    PushCertError,
    inspect_push_cert,
    load_p12,
    load_pem_cert,
    load_pem_key,
    make_push_csr,
    make_vendor_signed_request,
)
from pomona.ports import PushCertCheck, Sealer


class LocalPushCertKit:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer  # the server key's (pki/sealing.py), shared with the database

    def make_csr(self, common_name: str, email: str | None) -> tuple[bytes, bytes]:
        return make_push_csr(common_name, email=email)

    def vendor_sign(self, csr_pem: bytes, vendor_chain_pem: bytes, vendor_key_pem: bytes) -> str:
        return make_vendor_signed_request(csr_pem, vendor_chain_pem, vendor_key_pem)

    def check(
        self, cert: bytes, key_pem: bytes | None, p12_password: bytes | None, now: datetime
    ) -> PushCertCheck:
        """Raises :class:`PushCertError` when nothing usable can be read; a missing key is the problem
        ``no_key``."""
        if cert.lstrip().startswith(b"-----BEGIN"):
            x = load_pem_cert(cert)
            key = None
            if key_pem is not None:
                key = load_pem_key(key_pem)
            elif b"PRIVATE KEY-----" in cert:
                key = load_pem_key(cert)
        else:
            try:
                x, key = load_p12(cert, p12_password)
            except PushCertError as exc:
                if exc.kind != "not_p12":
                    raise
                x, key = load_pem_cert(cert), None  # DER certificate
                if key_pem is not None:
                    key = load_pem_key(key_pem)
        facts = inspect_push_cert(x, key, now=now)
        return PushCertCheck(
            cert_pem=x.public_bytes(serialization.Encoding.PEM),
            key_pem=b""
            if key is None
            else key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            topic=facts.topic,
            subject=facts.subject,
            not_before=facts.not_before,
            not_after=facts.not_after,
            fingerprint_sha256=facts.fingerprint_sha256,
            problems=list(facts.problems) + ([] if key is not None else ["no_key"]),
        )

    def seal(self, plaintext: bytes, context: str) -> bytes:
        return self._sealer.seal(plaintext, context)

    def open(self, sealed: bytes, context: str) -> bytes:
        return self._sealer.open(sealed, context)
