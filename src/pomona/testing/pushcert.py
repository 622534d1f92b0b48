"""A self-signed STAND-IN for an Apple MDM push certificate, for demos and tests.

It has the shape Apple's certificates have (subject UID = topic under com.apple.mgmt., clientAuth), but
Apple did not issue it: no real device will ever receive a push sent with it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def make_standin_push_cert(
    topic: str | None = None,
    *,
    not_before: dt.datetime | None = None,
    days: int = 365,
    key: rsa.RSAPrivateKey | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a stand-in push certificate for ``topic``."""
    topic = topic or f"com.apple.mgmt.External.{uuid.uuid4()}"
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Pomona stand-in, not for real devices"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
