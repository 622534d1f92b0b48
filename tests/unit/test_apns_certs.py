"""Push certificate tools: the vendor-signed request, .p12 and PEM loading, inspection, keys at rest."""

from __future__ import annotations

import base64
import datetime as dt
import os
import plistlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from helpers import missing
from pomona.pki.apns_certs import (
    PushCertError,
    SecretBox,
    SecretBoxError,
    decode_vendor_signed_request,
    inspect_push_cert,
    load_or_create_server_key,
    load_p12,
    load_pem_cert,
    load_pem_key,
    make_p12,
    make_push_csr,
    make_vendor_signed_request,
)
from pomona.testing.pushcert import make_standin_push_cert

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTORS = SHARED / "vectors"
APPLE_PUSH = VECTORS / "micromdm+nanomdm/test/e2e/testdata/push.pem"
MOCKS = VECTORS / "micromdm+micromdm/pkg/crypto/testdata"


def vector(path: Path) -> bytes:
    if not path.exists():
        missing(f"test vector {path}")
    return path.read_bytes()


def vendor_identity() -> tuple[bytes, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MDM Vendor: Pomona Test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


class TestVendorSignedRequest:
    def test_plist_has_apple_keys_and_a_verifying_signature(self) -> None:
        """The request is a base64 XML plist with the CSR, the chain and a SHA-256 RSA signature over the CSR."""
        key_pem, csr_pem = make_push_csr(email="admin@example.com", organization="Acme", country="US")
        csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
        chain_pem, vendor_key = vendor_identity()
        encoded = make_vendor_signed_request(csr_der, chain_pem, vendor_key)
        plist = plistlib.loads(base64.b64decode(encoded))
        assert set(plist) == {"PushCertRequestCSR", "PushCertCertificateChain", "PushCertSignature"}
        assert base64.b64decode(plist["PushCertRequestCSR"]) == csr_der
        assert plist["PushCertCertificateChain"].encode() == chain_pem
        vendor_key.public_key().verify(
            base64.b64decode(plist["PushCertSignature"]), csr_der, padding.PKCS1v15(), hashes.SHA256()
        )
        decoded = decode_vendor_signed_request(encoded)
        assert decoded.signature_valid
        assert (
            load_pem_key(key_pem).public_key().public_numbers() == decoded.csr.public_key().public_numbers()
        )  # type: ignore[union-attr]

    def test_vendor_key_must_match_the_chain(self) -> None:
        """A vendor key that is not the chain's first certificate's key is refused."""
        _, csr_pem = make_push_csr()
        chain_pem, _ = vendor_identity()
        _, other = vendor_identity()
        with pytest.raises(PushCertError) as err:
            make_vendor_signed_request(csr_pem, chain_pem, other)
        assert err.value.kind == "no_key"

    def test_tampered_request_does_not_verify(self) -> None:
        """Changing the CSR after signing makes the signature fail verification."""
        _, csr_pem = make_push_csr()
        chain_pem, vendor_key = vendor_identity()
        plist = plistlib.loads(base64.b64decode(make_vendor_signed_request(csr_pem, chain_pem, vendor_key)))
        _, other_csr = make_push_csr()
        plist["PushCertRequestCSR"] = base64.b64encode(
            x509.load_pem_x509_csr(other_csr).public_bytes(serialization.Encoding.DER)
        ).decode()
        assert not decode_vendor_signed_request(base64.b64encode(plistlib.dumps(plist))).signature_valid


class TestLoading:
    def test_p12_round_trip(self) -> None:
        """A certificate and key exported to .p12 load back unchanged."""
        cert_pem, key_pem = make_standin_push_cert()
        cert, key = load_pem_cert(cert_pem), load_pem_key(key_pem)
        loaded_cert, loaded_key = load_p12(make_p12(cert, key, b"secret"), b"secret")
        assert loaded_cert == cert
        assert inspect_push_cert(loaded_cert, loaded_key).key_matches is True

    def test_p12_wrong_password_is_a_clear_error(self) -> None:
        """A wrong .p12 password raises PushCertError(kind='bad_password')."""
        cert_pem, key_pem = make_standin_push_cert()
        data = make_p12(load_pem_cert(cert_pem), load_pem_key(key_pem), b"secret")
        with pytest.raises(PushCertError) as err:
            load_p12(data, b"wrong")
        assert err.value.kind == "bad_password"

    @pytest.mark.parametrize(("data", "kind"), [(b"garbage", "not_p12")])
    def test_p12_garbage_is_a_clear_error(self, data: bytes, kind: str) -> None:
        """Bytes that are not a .p12 raise PushCertError(kind='not_p12')."""
        with pytest.raises(PushCertError) as err:
            load_p12(data, None)
        assert err.value.kind == kind

    def test_pem_errors_name_the_problem(self) -> None:
        """No certificate in the PEM, or no key, raise PushCertError with their kind."""
        with pytest.raises(PushCertError) as err:
            load_pem_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        assert err.value.kind == "not_pem"
        with pytest.raises(PushCertError) as err:
            load_pem_key(b"not a key")
        assert err.value.kind == "no_key"


class TestInspect:
    def test_apple_issued_push_certificate(self) -> None:
        """Apple's real push certificate yields its topic, Apple as issuer and clientAuth."""
        facts = inspect_push_cert(
            load_pem_cert(vector(APPLE_PUSH)), now=dt.datetime(2021, 6, 1, tzinfo=dt.UTC)
        )
        assert facts.topic is not None and facts.topic.startswith("com.apple.mgmt.External.e0bd1eac-")
        assert facts.is_mdm_topic and facts.is_apple_issued and facts.client_auth_allowed
        assert facts.key_matches is None
        assert facts.ok
        assert "expired" in inspect_push_cert(load_pem_cert(vector(APPLE_PUSH))).problems

    @pytest.mark.parametrize(
        ("name", "topic", "problems"),
        [
            ("mock_push_cert.pem", "com.apple.mgmt.External.18a16429-886b-41f1-9c30-2bd04ae4fc37", []),
            ("mock_push_cert_no_uid.pem", None, ["no_topic"]),
            (
                "mock_push_cert_wrong_uid_prefix.pem",
                "wrong.prefix.18a16429-886b-41f1-9c30-2bd04ae4fc37",
                ["not_mdm_topic"],
            ),
        ],
    )
    def test_mock_certificates(self, name: str, topic: str | None, problems: list[str]) -> None:
        """micromdm's mock certificates: good UID, no UID, wrong prefix."""
        facts = inspect_push_cert(
            load_pem_cert(vector(MOCKS / name)), now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        )
        assert (facts.topic, facts.problems) == (topic, problems)

    def test_mismatched_key_is_reported(self) -> None:
        """A key that is not the certificate's is reported as key_mismatch."""
        cert_pem, _ = make_standin_push_cert()
        _, other_key = make_standin_push_cert()
        facts = inspect_push_cert(load_pem_cert(cert_pem), load_pem_key(other_key))
        assert facts.key_matches is False and facts.problems == ["key_mismatch"]


class TestSecretBox:
    def test_round_trip(self) -> None:
        """A sealed secret opens with the same key and context."""
        box = SecretBox(os.urandom(32))
        sealed = box.encrypt(b"private key pem", b"push-key:t1")
        assert b"private key pem" not in sealed
        assert box.decrypt(sealed, b"push-key:t1") == b"private key pem"

    @pytest.mark.parametrize("what", ["byte", "aad", "key"])
    def test_tampering_is_detected(self, what: str) -> None:
        """A flipped byte, another context or another server key fail to open."""
        key = os.urandom(32)
        sealed = bytearray(SecretBox(key).encrypt(b"secret", b"ctx"))
        box, aad = SecretBox(key), b"ctx"
        if what == "byte":
            sealed[-1] ^= 1
        elif what == "aad":
            aad = b"other"
        else:
            box = SecretBox(os.urandom(32))
        with pytest.raises(SecretBoxError):
            box.decrypt(bytes(sealed), aad)

    def test_server_key_file_is_created_private_and_reused(self, tmp_path: Path) -> None:
        """The server key is made once as a 0600 file and read back the same."""
        first = load_or_create_server_key(tmp_path, None)
        assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
        assert load_or_create_server_key(tmp_path, None) == first and len(first) == 32

    def test_server_key_given(self, tmp_path: Path) -> None:
        """A given key (the secret_key setting) wins over the file; a wrong length is refused."""
        key = os.urandom(32)
        assert load_or_create_server_key(tmp_path, key) == key
        assert not (tmp_path / "server.key").exists()
        with pytest.raises(ValueError):
            load_or_create_server_key(tmp_path, b"short")
