"""CMS SignedData / EnvelopedData: round trips, foreign encodings, and tampering."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from pomona.pki.ca import CertificateAuthority, generate_key
from pomona.protocol import cms
from pomona.protocol.cms import CmsError

CONTENT = (
    b"<?xml version='1.0'?><plist><dict><key>MessageType</key><string>Authenticate</string></dict></plist>"
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def rsa_ca() -> CertificateAuthority:
    return CertificateAuthority.generate("CMS test CA")


@pytest.fixture(scope="module", params=["rsa", "p256"])
def identity(
    request: pytest.FixtureRequest, rsa_ca: CertificateAuthority
) -> tuple[x509.Certificate, cms.PrivateKey]:
    key = generate_key(request.param)
    return rsa_ca.issue(key.public_key(), _name(f"device-{request.param}")), key


@pytest.fixture(scope="module")
def rsa_identity(rsa_ca: CertificateAuthority) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return rsa_ca.issue(key.public_key(), _name("rsa-device")), key


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


class TestSignAttached:
    def test_round_trip(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """sign_attached output verifies and yields the content and the signer, for RSA and EC keys."""
        cert, key = identity
        content, signer = cms.verify_attached(cms.sign_attached(CONTENT, cert, key))
        assert content == CONTENT
        assert signer == cert

    def test_chain_is_carried(
        self, rsa_ca: CertificateAuthority, identity: tuple[x509.Certificate, cms.PrivateKey]
    ) -> None:
        """Certificates passed as chain are embedded next to the signer certificate."""
        cert, key = identity
        msg = cms.verify(cms.sign_attached(CONTENT, cert, key, chain=[rsa_ca.certificate]))
        assert rsa_ca.certificate in msg.certificates
        assert msg.digest_algorithm == "sha256"

    def test_signed_attributes_present(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """The signature carries contentType, messageDigest and signingTime attributes."""
        cert, key = identity
        msg = cms.verify(cms.sign_attached(CONTENT, cert, key))
        assert {cms.OID_CONTENT_TYPE, cms.OID_MESSAGE_DIGEST, cms.OID_SIGNING_TIME} <= set(
            msg.signed_attributes
        )

    def test_openssl_reads_it(self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
        """cryptography's own PKCS#7 loader accepts the structure and finds the signer certificate."""
        cert, key = rsa_identity
        der = cms.sign_attached(CONTENT, cert, key)
        assert pkcs7.load_der_pkcs7_certificates(der) == [cert]

    def test_verifies_cryptography_signature(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """A SignedData made by cryptography's PKCS7SignatureBuilder verifies (independent encoder)."""
        cert, key = identity
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(CONTENT)
            .add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
        content, signer = cms.verify_attached(der)
        assert (content, signer) == (CONTENT, cert)

    def test_tampered_content_rejected(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """Changing one byte of the encapsulated content fails with CmsError."""
        cert, key = identity
        der = cms.sign_attached(CONTENT, cert, key)
        with pytest.raises(CmsError):
            cms.verify_attached(der.replace(b"Authenticate", b"Authenticatf"))


class TestDetached:
    @pytest.mark.parametrize("digest", ["sha1", "sha256"])
    def test_round_trip(
        self, identity: tuple[x509.Certificate, cms.PrivateKey], digest: cms.DigestName
    ) -> None:
        """A detached signature verifies over the same body and returns the signer (SHA-1 and SHA-256)."""
        cert, key = identity
        sig = cms.sign(CONTENT, cert, key, digest=digest, detached=True)
        assert cms.verify_detached(sig, CONTENT) == cert

    def test_sign_detached_has_no_content(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """sign_detached leaves eContent out and embeds the signer certificate."""
        cert, key = rsa_identity
        sig = cms.sign_detached(CONTENT, cert, key)
        assert CONTENT not in sig
        assert cert.public_bytes(serialization.Encoding.DER) in sig

    def test_other_body_rejected(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """A detached signature over one body does not verify another."""
        cert, key = identity
        sig = cms.sign_detached(CONTENT, cert, key)
        with pytest.raises(CmsError):
            cms.verify_detached(sig, CONTENT + b" ")

    def test_forged_signature_rejected(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """Flipping a bit of the signature value fails with CmsError."""
        cert, key = identity
        sig = cms.sign_detached(CONTENT, cert, key)
        info = asn1_cms.ContentInfo.load(sig)
        value = info["content"]["signer_infos"][0]["signature"].native
        with pytest.raises(CmsError):
            cms.verify_detached(sig.replace(value, _flip(value, 10)), CONTENT)

    def test_swapped_certificate_rejected(
        self, rsa_ca: CertificateAuthority, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """A signature made by another key with the victim's certificate attached fails."""
        victim, _ = rsa_identity
        attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(CmsError):
            cms.verify_detached(cms.sign_detached(CONTENT, victim, attacker), CONTENT)

    @pytest.mark.parametrize("index", [0, 1, 5, 20, 60, 200, -3])
    def test_garbled_rejected(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey], index: int
    ) -> None:
        """Garbled bytes anywhere in the structure give CmsError, never another exception."""
        cert, key = rsa_identity
        sig = cms.sign_detached(CONTENT, cert, key)
        with pytest.raises(CmsError):
            cms.verify_detached(_flip(sig, index % len(sig)), CONTENT)

    @pytest.mark.parametrize(
        "junk", [b"", b"\x30", b"\x30\x03\x02\x01\x01", b"not der at all", b"\x30\x84\xff\xff\xff\xff"]
    )
    def test_junk_rejected(self, junk: bytes) -> None:
        """Inputs that are not SignedData give CmsError."""
        with pytest.raises(CmsError):
            cms.verify_detached(junk, CONTENT)

    def test_without_signed_attributes(self, identity: tuple[x509.Certificate, cms.PrivateKey]) -> None:
        """A signature straight over the content (no signed attributes) verifies, as old clients send."""
        cert, key = identity
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(CONTENT)
            .add_signer(cert, key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [
                    pkcs7.PKCS7Options.DetachedSignature,
                    pkcs7.PKCS7Options.NoAttributes,
                    pkcs7.PKCS7Options.Binary,
                ],
            )
        )
        assert cms.verify_detached(der, CONTENT) == cert
        with pytest.raises(CmsError):
            cms.verify_detached(der, CONTENT[:-1])

    def test_ber_indefinite_length_uses_slow_path(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """A BER (indefinite-length) outer wrapper still verifies via the asn1crypto path."""
        cert, key = rsa_identity
        sig = cms.sign_detached(CONTENT, cert, key)
        oid = asn1_cms.ContentInfo.load(sig)["content_type"].dump()
        assert (
            sig[:2] == b"\x30\x82"
            and sig[4 : 4 + len(oid)] == oid
            and sig[4 + len(oid) : 6 + len(oid)] == b"\xa0\x82"
        )
        inner = sig[8 + len(oid) :]
        ber = b"\x30\x80" + oid + b"\xa0\x80" + inner + b"\x00\x00" + b"\x00\x00"
        assert cms.verify_detached(ber, CONTENT) == cert

    def test_signer_missing_rejected(self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
        """A signature whose signer certificate is absent fails unless the caller supplies it."""
        cert, key = rsa_identity
        der = cms.sign(CONTENT, cert, key, detached=True, include_signer_cert=False)
        with pytest.raises(CmsError):
            cms.verify_detached(der, CONTENT)
        assert cms.verify(der, CONTENT, extra_certs=[cert]).signer == cert


class TestEnveloped:
    @pytest.mark.parametrize("algorithm", ["tripledes_3key", "aes128_cbc", "aes192_cbc", "aes256_cbc"])
    @pytest.mark.parametrize("size", [0, 1, 16, 1000])
    def test_round_trip(
        self,
        rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey],
        algorithm: cms.ContentEncryption,
        size: int,
    ) -> None:
        """encrypt_enveloped then decrypt_enveloped returns the plaintext for every algorithm and size."""
        cert, key = rsa_identity
        plain = bytes(range(256)) * 4
        env = cms.encrypt_enveloped(plain[:size], cert, algorithm)
        assert cms.enveloped_content_algorithm(env) == algorithm
        assert cms.decrypt_enveloped(env, cert, key) == plain[:size]

    def test_cryptography_can_decrypt(self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
        """An independent implementation (cryptography's pkcs7_decrypt_der) opens our AES envelope."""
        cert, key = rsa_identity
        env = cms.encrypt_enveloped(b"hello", cert, "aes128_cbc")
        assert pkcs7.pkcs7_decrypt_der(env, cert, key, []) == b"hello"

    def test_decrypts_cryptography_envelope(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """An envelope built by cryptography's PKCS7EnvelopeBuilder decrypts."""
        cert, key = rsa_identity
        env = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(b"payload")
            .add_recipient(cert)
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
        assert cms.decrypt_enveloped(env, cert, key) == b"payload"

    def test_wrong_recipient_rejected(
        self, rsa_ca: CertificateAuthority, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """An envelope for one certificate cannot be opened as another recipient."""
        cert, _ = rsa_identity
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = rsa_ca.issue(other_key.public_key(), _name("other"))
        env = cms.encrypt_enveloped(b"secret", cert)
        with pytest.raises(CmsError):
            cms.decrypt_enveloped(env, other, other_key)

    def test_ec_recipient_refused(self, rsa_ca: CertificateAuthority) -> None:
        """Key transport needs RSA: an EC recipient certificate is refused with CmsError."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = rsa_ca.issue(key.public_key(), _name("ec"))
        with pytest.raises(CmsError):
            cms.encrypt_enveloped(b"x", cert)

    def test_garbled_ciphertext_rejected(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """Corrupting the last ciphertext block breaks the padding check with CmsError (or wrong bytes)."""
        cert, key = rsa_identity
        env = cms.encrypt_enveloped(b"A" * 15, cert, "aes128_cbc")
        bad = _flip(env, len(env) - 1)
        try:
            out = cms.decrypt_enveloped(bad, cert, key)
        except CmsError:
            return
        assert out != b"A" * 15

    def test_not_enveloped_rejected(self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
        """Passing a SignedData to decrypt_enveloped gives CmsError."""
        cert, key = rsa_identity
        with pytest.raises(CmsError):
            cms.decrypt_enveloped(cms.sign_attached(b"x", cert, key), cert, key)


class TestCertsOnly:
    def test_round_trip(
        self, rsa_ca: CertificateAuthority, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """certs_only keeps the certificates (in DER SET OF order)."""
        cert, _ = rsa_identity
        loaded = cms.load_certs_only(cms.certs_only([cert, rsa_ca.certificate]))
        assert sorted(loaded, key=lambda c: c.serial_number) == sorted(
            [cert, rsa_ca.certificate], key=lambda c: c.serial_number
        )

    def test_garbage_rejected(self) -> None:
        """A non-PKCS#7 body raises CmsError."""
        with pytest.raises(CmsError):
            cms.load_certs_only(b"\x30\x00")


class TestSigningTime:
    def test_far_future_uses_generalized_time(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """A signing time past 2049 is encoded as GeneralizedTime and still verifies."""
        cert, key = rsa_identity
        when = dt.datetime(2051, 1, 1, tzinfo=dt.UTC)
        der = cms.sign(CONTENT, cert, key, signing_time=when)
        assert cms.verify_attached(der)[0] == CONTENT


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _foreign_envelope(cert: x509.Certificate, plain: bytes, algorithm: str, chunked: bool) -> bytes:
    """An EnvelopedData built by hand, as Go's pkcs7 (micromdm) does: optionally with the ciphertext
    as a constructed [0] of OCTET STRING chunks, and with single DES."""
    from asn1crypto import algos, core
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key_len = {"des": 8, "aes128_cbc": 16}[algorithm]
    cek, iv = os.urandom(key_len), os.urandom(8 if algorithm == "des" else 16)
    block = len(iv)
    cipher = TripleDES(cek * 3) if algorithm == "des" else algorithms.AES(cek)
    pad = block - len(plain) % block
    enc = Cipher(cipher, modes.CBC(iv)).encryptor()
    ciphertext = enc.update(plain + bytes([pad]) * pad) + enc.finalize()
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    template = asn1_cms.ContentInfo.load(cms.encrypt_enveloped(b"x", cert, "aes128_cbc"))["content"]
    ktri = template["recipient_infos"][0].chosen
    ktri["encrypted_key"] = public_key.encrypt(cek, asym_padding.PKCS1v15())
    alg = algos.EncryptionAlgorithm({"algorithm": algorithm, "parameters": core.OctetString(iv)}).dump()
    if chunked:
        half = len(ciphertext) // 2
        body = _tlv(0xA0, _tlv(0x04, ciphertext[:half]) + _tlv(0x04, ciphertext[half:]))
    else:
        body = _tlv(0x80, ciphertext)
    eci = _tlv(0x30, _tlv(0x06, core.ObjectIdentifier("1.2.840.113549.1.7.1").contents) + alg + body)
    recipients = _tlv(0x31, template["recipient_infos"][0].dump(force=True))
    enveloped = _tlv(0x30, b"\x02\x01\x00" + recipients + eci)
    oid = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
    return _tlv(0x30, oid + _tlv(0xA0, enveloped))


class TestForeignEnvelopes:
    @pytest.mark.parametrize("algorithm", ["des", "aes128_cbc"])
    @pytest.mark.parametrize("chunked", [False, True])
    def test_decrypts(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey], algorithm: str, chunked: bool
    ) -> None:
        """Single-DES and chunked (constructed) ciphertexts, as micromdm's Go client sends, decrypt."""
        cert, key = rsa_identity
        env = _foreign_envelope(cert, b"a CSR" * 50, algorithm, chunked)
        assert cms.decrypt_enveloped(env, cert, key) == b"a CSR" * 50


def _asn1crypto_signed_data(
    content: bytes | None,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey,
    digest: str,
    when: dt.datetime,
    detached: bool,
    chain: list[x509.Certificate],
    extra: dict[str, core.Asn1Value],
) -> bytes:
    """The SignedData asn1crypto's object model builds (how cms.sign built it before writing DER itself)."""
    from asn1crypto import x509 as asn1_x509

    body = content if content is not None else b""
    time_value = (
        asn1_cms.Time({"utc_time": when})
        if 1950 <= when.year < 2050
        else asn1_cms.Time({"generalized_time": when})
    )
    h = hashes.Hash(getattr(hashes, digest.upper())())
    h.update(body)
    attributes: list[tuple[str, core.Asn1Value]] = [
        ("1.2.840.113549.1.9.3", asn1_cms.ContentType("1.2.840.113549.1.7.1")),
        ("1.2.840.113549.1.9.5", time_value),
        ("1.2.840.113549.1.9.4", core.OctetString(h.finalize())),
        *extra.items(),
    ]
    signed_attrs = asn1_cms.CMSAttributes(
        [asn1_cms.CMSAttribute({"type": oid, "values": [value]}) for oid, value in attributes]
    )
    signature = key.sign(signed_attrs.dump(), asym_padding.PKCS1v15(), getattr(hashes, digest.upper())())
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    signer_info = asn1_cms.SignerInfo(
        {
            "version": "v1",
            "sid": asn1_cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": asn1_cms.IssuerAndSerialNumber(
                        {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm(
                {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
            ),
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None and not detached:
        encap["content"] = content
    signed_data = asn1_cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
            "encap_content_info": encap,
            "signer_infos": [signer_info],
            "certificates": [
                asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in [cert, *chain]
            ],
        }
    )
    der: bytes = asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return der


class TestDerAsAsn1cryptoWritesIt:
    @pytest.mark.parametrize("content", [b"", CONTENT, os.urandom(70_000), None])
    @pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
    @pytest.mark.parametrize(
        "when",
        [
            dt.datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=dt.UTC),
            dt.datetime(2051, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2051, 1, 1, 0, 0, 0, 120000, tzinfo=dt.UTC),
        ],
    )
    def test_signed_data_byte_for_byte(
        self,
        rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey],
        rsa_ca: CertificateAuthority,
        content: bytes | None,
        digest: cms.DigestName,
        when: dt.datetime,
    ) -> None:
        """The SignedData cms.sign writes is, byte for byte, the one asn1crypto's object model builds."""
        cert, key = rsa_identity
        extra: dict[str, core.Asn1Value] = {
            "2.16.840.1.113733.1.9.2": core.PrintableString("3"),
            "2.16.840.1.113733.1.9.7": core.PrintableString("ABCDEF0123"),
            "2.16.840.1.113733.1.9.5": core.OctetString(b"n" * 16),
        }
        for detached, chain, attrs in ((False, [], {}), (True, [], {}), (False, [rsa_ca.certificate], extra)):
            ours = cms.sign(
                content,
                cert,
                key,
                digest=digest,
                detached=detached,
                chain=chain,
                extra_attributes=attrs,
                signing_time=when,
            )
            assert ours == _asn1crypto_signed_data(content, cert, key, digest, when, detached, chain, attrs)

    @pytest.mark.parametrize("algorithm", ["aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"])
    def test_enveloped_data_is_der(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey], algorithm: cms.ContentEncryption
    ) -> None:
        """The EnvelopedData encrypt_enveloped writes is strict DER (asn1crypto writes it back the same),
        addressed to the recipient's issuer and serial, and opens."""
        from asn1crypto import x509 as asn1_x509

        cert, key = rsa_identity
        der = cms.encrypt_enveloped(CONTENT * 3, cert, algorithm)
        info = asn1_cms.ContentInfo.load(der)
        assert info.dump(force=True) == der
        ktri = info["content"]["recipient_infos"][0].chosen
        ias = ktri["rid"].chosen
        asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        assert ias["issuer"].dump() == asn1_cert.issuer.dump()
        assert ias["serial_number"].native == cert.serial_number
        assert ktri["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"
        assert cms.enveloped_content_algorithm(der) == algorithm
        assert cms.decrypt_enveloped(der, cert, key) == CONTENT * 3

    def test_verify_fast_path_answers_as_the_general_one(
        self, rsa_identity: tuple[x509.Certificate, rsa.RSAPrivateKey], rsa_ca: CertificateAuthority
    ) -> None:
        """verify's DER walk gives the same message as asn1crypto's general path: content, signer, digest,
        every signed attribute's values, the carried certificates and the extra ones."""
        cert, key = rsa_identity
        extra: dict[str, core.Asn1Value] = {
            "2.16.840.1.113733.1.9.2": core.PrintableString("19"),
            "2.16.840.1.113733.1.9.7": core.PrintableString("ABCDEF0123"),
            "2.16.840.1.113733.1.9.5": core.OctetString(b"n" * 16),
        }
        for content, carried, extras in ((CONTENT, True, []), (b"", False, [cert, rsa_ca.certificate])):
            der = cms.sign(
                content, cert, key, digest="sha1", extra_attributes=extra, include_signer_cert=carried
            )
            fast = cms.verify(der, extra_certs=extras)
            assert fast == cms._verify(der, None, extras)
            assert fast.signed_attributes["2.16.840.1.113733.1.9.2"] == (core.PrintableString("19").dump(),)
