"""CertificateAuthority: generation, PEM round trip, issuance profile, issuer checks (with the key and
from the certificate alone)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pomona.pki.adapters import LocalPki
from pomona.pki.ca import CertificateAuthority, KeyType, generate_key, generate_signing_identity
from pomona.protocol import cms


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module", params=["rsa", "p256"])
def ca(request: pytest.FixtureRequest) -> CertificateAuthority:
    key_type: KeyType = request.param
    return CertificateAuthority.generate(f"Test {key_type} CA", key_type=key_type, years=5)


class TestGenerate:
    def test_ca_extensions(self, ca: CertificateAuthority) -> None:
        """A generated CA is self-signed with basicConstraints CA, keyCertSign+cRLSign, SKI and AKI."""
        cert = ca.certificate
        assert cert.issuer == cert.subject == _name(cert.subject.rfc4514_string()[3:])
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        assert ca.is_issuer_of(cert)

    def test_key_types(self) -> None:
        """key_type selects RSA 2048 or P-256."""
        rsa_ca = CertificateAuthority.generate("r", key_type="rsa")
        ec_ca = CertificateAuthority.generate("e", key_type="p256")
        assert isinstance(rsa_ca.key, rsa.RSAPrivateKey) and rsa_ca.key.key_size == 2048
        assert isinstance(ec_ca.key, ec.EllipticCurvePrivateKey) and ec_ca.key.curve.name == "secp256r1"

    def test_years(self) -> None:
        """The validity spans the requested number of years."""
        ca = CertificateAuthority.generate("y", years=3)
        span = ca.certificate.not_valid_after_utc - ca.certificate.not_valid_before_utc
        assert span == dt.timedelta(days=3 * 365)

    def test_unknown_key_type(self) -> None:
        """An unknown key type raises ValueError."""
        with pytest.raises(ValueError):
            generate_key("dsa")  # type: ignore[arg-type]

    def test_mismatched_key_rejected(self, ca: CertificateAuthority) -> None:
        """A CA certificate paired with a foreign key is refused."""
        with pytest.raises(ValueError):
            CertificateAuthority(ca.certificate, generate_key("rsa"))


class TestPem:
    def test_round_trip(self, ca: CertificateAuthority) -> None:
        """to_pem then from_pem gives the same certificate and a working key."""
        cert_pem, key_pem = ca.to_pem()
        again = CertificateAuthority.from_pem(cert_pem, key_pem)
        assert again.certificate == ca.certificate
        leaf = again.issue(generate_key("rsa").public_key(), _name("x"))
        assert ca.is_issuer_of(leaf)


class TestIssue:
    def test_profile(self, ca: CertificateAuthority) -> None:
        """Issued certs carry clientAuth, digitalSignature+keyEncipherment, AKI = CA SKI, not a CA."""
        key = generate_key("rsa")
        cert = ca.issue(key.public_key(), _name("iPhone"), days=30, serial=4242)
        assert cert.serial_number == 4242
        assert cert.subject == _name("iPhone")
        assert cert.issuer == ca.certificate.subject
        assert cert.public_key() == key.public_key()
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc) == dt.timedelta(days=30)

    def test_random_serials_differ(self, ca: CertificateAuthority) -> None:
        """Without an explicit serial, serials are random and positive."""
        key = generate_key("p256")
        a = ca.issue(key.public_key(), _name("a"))
        b = ca.issue(key.public_key(), _name("b"))
        assert a.serial_number != b.serial_number and a.serial_number > 0

    def test_validity_capped_by_ca(self) -> None:
        """A leaf never outlives its CA."""
        ca = CertificateAuthority.generate("short", years=1)
        cert = ca.issue(generate_key("rsa").public_key(), _name("long"), days=5000)
        assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc

    def test_expired_ca_refuses(self) -> None:
        """An expired CA refuses to issue."""
        ca = CertificateAuthority.generate("old", years=1, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        with pytest.raises(ValueError):
            ca.issue(generate_key("rsa").public_key(), _name("late"))


class TestIsIssuerOf:
    def test_other_ca(self, ca: CertificateAuthority) -> None:
        """A certificate from another CA is not ours."""
        other = CertificateAuthority.generate("Other")
        leaf = other.issue(generate_key("rsa").public_key(), _name("x"))
        assert not ca.is_issuer_of(leaf)

    def test_same_name_other_key(self, ca: CertificateAuthority) -> None:
        """A CA impersonating our name with another key does not pass the signature check."""
        cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        impostor = CertificateAuthority.generate(str(cn), key_type="rsa")
        leaf = impostor.issue(generate_key("rsa").public_key(), _name("x"))
        assert leaf.issuer == ca.certificate.subject
        assert not ca.is_issuer_of(leaf)


class TestCaCertificate:
    def test_verifies_without_the_key(self, ca: CertificateAuthority) -> None:
        """The CA certificate alone tells the CA's leaves from another CA's, and holds no key."""
        cert_pem, _ = ca.to_pem()
        verifier = LocalPki().load_ca_certificate(cert_pem)
        mine = ca.issue(generate_key("p256").public_key(), _name("mine"))
        theirs = CertificateAuthority.generate("Other").issue(generate_key("p256").public_key(), _name("x"))
        assert verifier.is_issuer_of(mine) and not verifier.is_issuer_of(theirs)
        assert not hasattr(verifier, "key") and not isinstance(verifier, CertificateAuthority)

    def test_loaded_once(self, ca: CertificateAuthority) -> None:
        """LocalPki loads a CA certificate once per process, apart from the signing CA."""
        pki, (cert_pem, key_pem) = LocalPki(), ca.to_pem()
        verifier = pki.load_ca_certificate(cert_pem)
        assert pki.load_ca_certificate(cert_pem) is verifier
        assert pki.load_ca(cert_pem, key_pem) is not verifier


class TestSigningIdentity:
    def test_issued_by_ca(self, ca: CertificateAuthority) -> None:
        """The profile-signing identity issued by the CA signs profiles that verify."""
        cert, key = generate_signing_identity("Pomona profile signing", ca)
        assert ca.is_issuer_of(cert)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
        assert (
            cms.verify_attached(cms.sign_attached(b"<plist/>", cert, key, chain=[ca.certificate]))[1] == cert
        )

    def test_self_signed(self) -> None:
        """Without a CA the signing identity is self-signed."""
        cert, key = generate_signing_identity("self", key_type="p256")
        assert cert.issuer == cert.subject
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert.verify_directly_issued_by(cert)


class TestProfileSigner:
    def test_same_content_reuses_its_signature(self) -> None:
        """A profile signed again (one enrollment link, many devices) gets the first signature back;
        other content (another challenge) is signed anew, and both verify."""
        from pomona.pki.adapters import CmsProfileSigner

        signer, _ = CmsProfileSigner.generate("Pomona profile signing")
        first = signer.sign(b"<plist>link one</plist>")
        assert signer.sign(b"<plist>link one</plist>") is first
        other = signer.sign(b"<plist>link two</plist>")
        assert other != first
        assert cms.verify_attached(other)[0] == b"<plist>link two</plist>"
        assert cms.verify_attached(first)[0] == b"<plist>link one</plist>"

    def test_reuse_is_bounded(self) -> None:
        """Past REUSE_ENTRIES different contents the signer forgets and signs again (memory stays bounded)."""
        from pomona.pki.adapters import CmsProfileSigner

        signer, _ = CmsProfileSigner.generate("Pomona profile signing")
        first = signer.sign(b"0")
        for i in range(1, CmsProfileSigner.REUSE_ENTRIES + 1):
            signer.sign(str(i).encode())
        assert len(signer._signed) <= CmsProfileSigner.REUSE_ENTRIES
        assert signer.sign(b"0") is not first
