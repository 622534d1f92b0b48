"""SCEP codec and responder: the real micromdm capture, round trips, refusals and tampering."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, ExtensionOID, NameOID

from pomona.domain.errors import EnrollmentTokenError, PomonaError, describe
from pomona.domain.reasons import ReasonCode
from pomona.pki.ca import CertificateAuthority, generate_key
from pomona.pki.scep import ScepResponder, handle_scep_http
from pomona.protocol import cms, scep
from pomona.protocol.scep import (
    CsrInfo,
    CsrSignatureError,
    FailInfo,
    MessageType,
    PkiMessage,
    PkiStatus,
    ScepMalformedError,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CAPTURE = SHARED / "vectors" / "micromdm+scep" / "testdata"
GOOD = "good-challenge"
CAPTURE_TIME = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # the capture's CA expired in May 2026


def http(responder: ScepResponder, method: str, query: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
    """One SCEP HTTP exchange as (status, body, content type)."""
    answer = handle_scep_http(responder, method, query, body)
    return answer.status, answer.body, answer.content_type


def _need_shared() -> None:
    if not CAPTURE.is_dir():
        msg = f"shared test vectors not found at {CAPTURE} (expected as the project root's sibling 'shared/')"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def load_legacy_pem_key(pem: bytes, password: bytes = b"") -> rsa.RSAPrivateKey:
    """OpenSSL's legacy 'Proc-Type: 4,ENCRYPTED' PEM (DES-EDE3-CBC, EVP_BytesToKey/MD5).

    `cryptography` treats an empty password as no password, so the capture's CA key (encrypted with an
    empty passphrase) is opened by hand.
    """
    lines = pem.decode().strip().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    body = base64.b64decode("".join(line for line in lines[1:-1] if ": " not in line and line.strip()))
    cipher_name, iv_hex = headers["DEK-Info"].split(",")
    assert cipher_name == "DES-EDE3-CBC"
    iv = bytes.fromhex(iv_hex)
    derived, block = b"", b""
    while len(derived) < 24:
        block = hashlib.md5(block + password + iv[:8]).digest()
        derived += block
    dec = Cipher(TripleDES(derived[:24]), modes.CBC(iv)).decryptor()
    raw = dec.update(body) + dec.finalize()
    key = serialization.load_der_private_key(raw[: -raw[-1]], None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def self_signed(key: cms.PrivateKey, cn: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )


class ChallengeIssuer:
    """on_request for tests: issues when the challenge is GOOD, remembers what it saw."""

    def __init__(self, ca: CertificateAuthority, now: dt.datetime | None = None) -> None:
        self.ca = ca
        self.now = now
        self.seen: list[tuple[CsrInfo, PkiMessage]] = []

    def __call__(self, csr: CsrInfo, msg: PkiMessage) -> x509.Certificate:
        self.seen.append((csr, msg))
        if csr.challenge_password != GOOD:
            raise EnrollmentTokenError("wrong challenge")
        return self.ca.issue(csr.public_key, csr.subject, now=self.now)


def make_on_request(ca: CertificateAuthority, now: dt.datetime | None = None) -> ChallengeIssuer:
    return ChallengeIssuer(ca, now)


def reason_of(refusal: Exception | None) -> ReasonCode | None:
    """The reason code a refusal the responder hands back maps to (None: issued)."""
    return None if refusal is None else describe(refusal).reason


@pytest.fixture(scope="module")
def capture_ca() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    _need_shared()
    cert = x509.load_pem_x509_certificate((CAPTURE / "testca" / "ca.pem").read_bytes())
    return cert, load_legacy_pem_key((CAPTURE / "testca" / "ca.key").read_bytes())


@pytest.fixture(scope="module", params=["rsa", "p256"])
def responder(request: pytest.FixtureRequest) -> ScepResponder:
    ca = CertificateAuthority.generate(f"SCEP {request.param} CA", key_type=request.param)
    return ScepResponder(ca, make_on_request(ca), refusals=(PomonaError,))


@pytest.fixture(scope="module")
def rsa_responder() -> ScepResponder:
    ca = CertificateAuthority.generate("SCEP rsa CA")
    return ScepResponder(ca, make_on_request(ca), refusals=(PomonaError,))


@pytest.fixture(scope="module")
def device() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, self_signed(key, "device")


def _request(
    responder: ScepResponder,
    device: tuple[rsa.RSAPrivateKey, x509.Certificate],
    challenge: str | None = GOOD,
    **kwargs: object,
) -> tuple[bytes, bytes]:
    key, cert = device
    csr = scep.build_csr(key, _name("iPhone"), challenge)
    nonce = os.urandom(16)
    req = scep.build_pkcs_req(
        csr,
        cert,
        key,
        responder.responder_certificate,
        sender_nonce=nonce,
        **kwargs,  # type: ignore[arg-type]
    )
    return req, nonce


class TestRealCapture:
    """micromdm/scep testdata/PKCSReq.der: a real PKCSReq (SHA-1 signature, 3DES envelope)."""

    def test_decodes(self) -> None:
        """The capture decodes as a signature-checked PKCSReq with SHA-1 and a 3DES envelope."""
        _need_shared()
        msg = scep.decode_pki_message((CAPTURE / "PKCSReq.der").read_bytes())
        assert msg.message_type is MessageType.PKCS_REQ
        assert msg.digest_algorithm == "sha1"
        assert msg.transaction_id == "A13090761A30F66664F85D37433D2065E1112BA1"
        assert len(msg.sender_nonce) == 8
        assert msg.envelope_algorithm == "tripledes_3key"
        assert msg.signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "MDM SCEP SIGNER"

    def test_decrypts_to_known_csr(self, capture_ca: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
        """The envelope decrypts with the capture's CA to exactly derived/PKCSReq.decrypted-csr.der."""
        msg = scep.decode_pki_message((CAPTURE / "PKCSReq.der").read_bytes())
        expected = (SHARED / "vectors" / "derived" / "PKCSReq.decrypted-csr.der").read_bytes()
        assert msg.decrypt(*capture_ca) == expected

    def test_version_2_csr_decodes(self) -> None:
        """The version-2 CSR (which cryptography refuses) decodes: subject, key, no challenge, key usage."""
        _need_shared()
        der = (SHARED / "vectors" / "derived" / "PKCSReq.decrypted-csr.der").read_bytes()
        with pytest.raises((ValueError, x509.InvalidVersion)):
            x509.load_der_x509_csr(der).subject  # noqa: B018 - documents why we parse by hand
        info = scep.decode_csr(der)
        assert info.version == 2
        assert info.subject_rfc4514 == "CN=com.apple.security.scep.063D7953-1338-4BF0-8F99-913382996224"
        assert isinstance(info.public_key, rsa.RSAPublicKey) and info.public_key.key_size == 1024
        assert info.challenge_password is None
        assert info.signature_hash == "sha1"
        ku = info.extension(ExtensionOID.KEY_USAGE)
        assert ku is not None and ku.critical and ku.value == b"\x03\x02\x07\x80"

    def test_responder_refuses_missing_challenge(
        self, capture_ca: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """Served by a responder with the capture's CA, the challenge-less request gets FAILURE, SHA-1."""
        ca = CertificateAuthority(*capture_ca)
        responder = ScepResponder(ca, make_on_request(ca), refusals=(PomonaError,))
        req = (CAPTURE / "PKCSReq.der").read_bytes()
        rep, reason = responder.pki_operation(req)
        assert reason_of(reason) is ReasonCode.ENROLLMENT_TOKEN_INVALID
        msg = scep.decode_pki_message(rep, [ca.certificate])
        assert (msg.pki_status, msg.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)
        assert msg.digest_algorithm == "sha1"
        assert msg.recipient_nonce == scep.decode_pki_message(req).sender_nonce

    def test_responder_success_mirrors_request(
        self, capture_ca: tuple[x509.Certificate, rsa.RSAPrivateKey]
    ) -> None:
        """A SUCCESS answer to the capture uses SHA-1 and a 3DES envelope addressed to the requester."""
        ca = CertificateAuthority(*capture_ca)
        responder = ScepResponder(
            ca, lambda csr, msg: ca.issue(csr.public_key, csr.subject, now=CAPTURE_TIME)
        )
        req = scep.decode_pki_message((CAPTURE / "PKCSReq.der").read_bytes())
        rep, reason = responder.pki_operation(req.raw)
        assert reason is None
        msg = scep.decode_pki_message(rep)
        assert msg.pki_status is PkiStatus.SUCCESS
        assert msg.transaction_id == req.transaction_id
        assert msg.digest_algorithm == "sha1"
        assert msg.envelope_algorithm == "tripledes_3key"


class TestRoundTrip:
    @pytest.mark.parametrize("encryption", ["tripledes_3key", "aes128_cbc", "aes256_cbc"])
    @pytest.mark.parametrize("digest", ["sha1", "sha256"])
    def test_issues_certificate(
        self,
        responder: ScepResponder,
        device: tuple[rsa.RSAPrivateKey, x509.Certificate],
        encryption: cms.ContentEncryption,
        digest: cms.DigestName,
    ) -> None:
        """A PKCSReq with the right challenge yields a CA-issued cert, echoing digest and cipher family."""
        key, cert = device
        req, nonce = _request(responder, device, encryption=encryption, digest=digest)
        rep, reason = responder.pki_operation(req)
        assert reason is None
        raw = scep.decode_pki_message(rep)
        assert raw.digest_algorithm == digest
        assert raw.envelope_algorithm == encryption
        result = scep.decode_cert_rep(
            rep, cert, key, ca_certs=[responder.responder_certificate], expected_nonce=nonce
        )
        assert result.status is PkiStatus.SUCCESS and result.fail_info is None
        assert result.certificate is not None
        assert result.certificate.public_key() == key.public_key()
        assert responder.ca.is_issuer_of(result.certificate)
        assert result.transaction_id == scep.transaction_id_for(key.public_key())

    def test_wrong_challenge_refused(
        self, responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A wrong challenge gets CertRep FAILURE badRequest and the reason ENROLLMENT_TOKEN_INVALID."""
        key, cert = device
        req, nonce = _request(responder, device, challenge="wrong")
        rep, reason = responder.pki_operation(req)
        assert reason_of(reason) is ReasonCode.ENROLLMENT_TOKEN_INVALID
        result = scep.decode_cert_rep(rep, cert, key, expected_nonce=nonce)
        assert (result.status, result.fail_info, result.certificate) == (
            PkiStatus.FAILURE,
            FailInfo.BAD_REQUEST,
            None,
        )

    def test_on_request_sees_csr_and_message(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """on_request receives the decoded CSR (challenge, subject) and the PKCSReq message."""
        req, _ = _request(rsa_responder, device)
        rsa_responder.pki_operation(req)
        csr, msg = rsa_responder.on_request.seen[-1]  # type: ignore[attr-defined,unused-ignore]
        assert csr.challenge_password == GOOD
        assert csr.subject == _name("iPhone")
        assert msg.message_type is MessageType.PKCS_REQ

    def test_p256_ca_uses_rsa_ra(self) -> None:
        """With a P-256 CA, GetCACert returns RA+CA and the RA (RSA, issued by the CA) handles envelopes."""
        ca = CertificateAuthority.generate("EC CA", key_type="p256")
        responder = ScepResponder(ca, make_on_request(ca), refusals=(PomonaError,))
        body, ctype = responder.get_ca_cert()
        assert ctype == "application/x-x509-ca-ra-cert"
        certs = cms.load_certs_only(body)
        assert set(certs) == {responder.responder_certificate, ca.certificate}
        ra = responder.responder_certificate
        assert isinstance(ra.public_key(), rsa.RSAPublicKey)
        assert ca.is_issuer_of(ra)

    def test_ec_device_key_refused_with_bad_alg(self, rsa_responder: ScepResponder) -> None:
        """A requester signing with a P-256 key cannot receive an RSA envelope: FAILURE badAlg, no issuance."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self_signed(key, "ec-device")
        csr = scep.build_csr(key, _name("ec"), GOOD)
        issued_before = len(rsa_responder.on_request.seen)  # type: ignore[attr-defined,unused-ignore]
        req = scep.build_pkcs_req(csr, cert, key, rsa_responder.responder_certificate)
        rep, reason = rsa_responder.pki_operation(req)
        assert reason_of(reason) is ReasonCode.MALFORMED_REQUEST
        assert scep.decode_pki_message(rep).fail_info is FailInfo.BAD_ALG
        assert len(rsa_responder.on_request.seen) == issued_before  # type: ignore[attr-defined,unused-ignore]


class TestRefusals:
    def test_other_message_types_get_bad_request(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A GetCert (or any non-PKCSReq) message is answered with FAILURE badRequest."""
        key, cert = device
        attrs = {
            scep.OID_MESSAGE_TYPE: core.PrintableString("21"),
            scep.OID_TRANSACTION_ID: core.PrintableString("T1"),
            scep.OID_SENDER_NONCE: core.OctetString(b"n" * 16),
        }
        env = cms.encrypt_enveloped(b"whatever", rsa_responder.responder_certificate)
        rep, reason = rsa_responder.pki_operation(cms.sign(env, cert, key, extra_attributes=attrs))
        assert reason_of(reason) is ReasonCode.MALFORMED_REQUEST
        msg = scep.decode_pki_message(rep)
        assert (msg.pki_status, msg.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)

    def test_bad_csr_signature(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A CSR whose self-signature is broken gets FAILURE badMessageCheck, reason SIGNATURE_INVALID."""
        key, cert = device
        csr = scep.build_csr(key, _name("iPhone"), GOOD)
        bad = csr[:-5] + bytes([csr[-5] ^ 0xFF]) + csr[-4:]
        req = scep.build_pkcs_req(bad, cert, key, rsa_responder.responder_certificate, transaction_id="T")
        rep, reason = rsa_responder.pki_operation(req)
        assert reason_of(reason) is ReasonCode.SIGNATURE_INVALID
        assert scep.decode_pki_message(rep).fail_info is FailInfo.BAD_MESSAGE_CHECK

    def test_envelope_for_someone_else(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A request enveloped to another CA gets FAILURE badMessageCheck."""
        key, cert = device
        other = CertificateAuthority.generate("other CA")
        csr = scep.build_csr(key, _name("iPhone"), GOOD)
        req = scep.build_pkcs_req(csr, cert, key, other.certificate)
        rep, reason = rsa_responder.pki_operation(req)
        assert reason_of(reason) is ReasonCode.MALFORMED_REQUEST
        assert scep.decode_pki_message(rep).fail_info is FailInfo.BAD_MESSAGE_CHECK

    def test_only_declared_refusals_refuse(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """An on_request exception that is not one of the responder's refusals propagates (a fault, not a no)."""

        def broken(csr: CsrInfo, msg: PkiMessage) -> x509.Certificate:
            raise RuntimeError("the CA is unreachable")

        responder = ScepResponder(rsa_responder.ca, broken, refusals=(PomonaError,))
        req, _ = _request(responder, device)
        with pytest.raises(RuntimeError):
            responder.pki_operation(req)

    def test_forged_signature_raises(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A PKCSReq whose outer signature is forged raises ScepMalformedError (no one to answer)."""
        key, cert = device
        req, _ = _request(rsa_responder, device)
        forged = req[:-10] + bytes([req[-10] ^ 0x55]) + req[-9:]
        with pytest.raises(ScepMalformedError):
            rsa_responder.pki_operation(forged)

    @pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x80\x00\x00", b"\x30\x03\x02\x01\x01"])
    def test_garbage_raises(self, rsa_responder: ScepResponder, body: bytes) -> None:
        """Bodies that are not pkiMessages raise ScepMalformedError."""
        with pytest.raises(ScepMalformedError):
            rsa_responder.pki_operation(body)

    def test_missing_sender_nonce(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A request without senderNonce is malformed."""
        key, cert = device
        attrs = {
            scep.OID_MESSAGE_TYPE: core.PrintableString("19"),
            scep.OID_TRANSACTION_ID: core.PrintableString("T"),
        }
        with pytest.raises(ScepMalformedError):
            scep.decode_pki_message(cms.sign(b"x", cert, key, extra_attributes=attrs))


class TestClientChecks:
    def test_nonce_mismatch(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """decode_cert_rep rejects a CertRep whose recipientNonce is not our senderNonce."""
        key, cert = device
        req, _ = _request(rsa_responder, device)
        rep, _ = rsa_responder.pki_operation(req)
        with pytest.raises(ScepMalformedError):
            scep.decode_cert_rep(rep, cert, key, expected_nonce=b"x" * 16)

    def test_untrusted_signer(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """decode_cert_rep rejects a CertRep not signed by the expected CA/RA."""
        key, cert = device
        req, _ = _request(rsa_responder, device)
        rep, _ = rsa_responder.pki_operation(req)
        other = CertificateAuthority.generate("other")
        with pytest.raises(ScepMalformedError):
            scep.decode_cert_rep(rep, cert, key, ca_certs=[other.certificate])

    def test_transaction_id_mismatch(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """decode_cert_rep rejects a CertRep for another transaction."""
        key, cert = device
        req, _ = _request(rsa_responder, device)
        rep, _ = rsa_responder.pki_operation(req)
        with pytest.raises(ScepMalformedError):
            scep.decode_cert_rep(rep, cert, key, expected_transaction_id="nope")

    def test_encode_needs_exactly_one_outcome(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """encode_cert_rep refuses to build a CertRep with neither (or both) issued cert and failInfo."""
        req, _ = _request(rsa_responder, device)
        msg = scep.decode_pki_message(req)
        with pytest.raises(ValueError):
            scep.encode_cert_rep(msg, rsa_responder.responder_certificate, rsa_responder.ca.key)


class TestDecodeCsr:
    def test_utf8_challenge(self) -> None:
        """A UTF8String challengePassword (cryptography's default) is read."""
        key = generate_key("rsa")
        assert scep.decode_csr(scep.build_csr(key, _name("a"), "pässword")).challenge_password == "pässword"

    def test_printable_challenge(self) -> None:
        """A PrintableString challengePassword (iOS, micromdm) is read."""
        key = generate_key("rsa")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name("b"))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"secret", _tag=_ASN1Type.PrintableString)
            .sign(key, hashes.SHA256())
        )
        assert scep.decode_csr(csr.public_bytes(serialization.Encoding.DER)).challenge_password == "secret"

    def test_extensions_and_ec(self) -> None:
        """Requested extensions of an ECDSA-signed CSR are listed undecoded, keyed by OID."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name("c"))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("d.example")]), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        info = scep.decode_csr(csr)
        assert isinstance(info.public_key, ec.EllipticCurvePublicKey)
        san = info.extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        assert san is not None and b"d.example" in san.value
        assert info.public_key_der == key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def test_version_2_resigned(self) -> None:
        """A self-made version-2 CSR with a valid signature decodes with version 2."""
        key = generate_key("rsa")
        assert isinstance(key, rsa.RSAPrivateKey)
        req = asn1_csr.CertificationRequest.load(scep.build_csr(key, _name("v2"), GOOD))
        info = req["certification_request_info"]
        info["version"] = 2
        tbs = info.dump(force=True)
        req = asn1_csr.CertificationRequest(
            {
                "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()),
            }
        )
        decoded = scep.decode_csr(req.dump())
        assert (decoded.version, decoded.challenge_password) == (2, GOOD)

    def test_bad_signature(self) -> None:
        """A CSR with a broken signature raises CsrSignatureError."""
        key = generate_key("rsa")
        csr = scep.build_csr(key, _name("d"), GOOD)
        with pytest.raises(CsrSignatureError):
            scep.decode_csr(csr[:-1] + bytes([csr[-1] ^ 1]))

    @pytest.mark.parametrize("junk", [b"", b"\x30\x00", b"hello"])
    def test_junk(self, junk: bytes) -> None:
        """Non-CSR bytes raise ScepMalformedError."""
        with pytest.raises(ScepMalformedError):
            scep.decode_csr(junk)


class TestHttp:
    def test_get_ca_caps(self, rsa_responder: ScepResponder) -> None:
        """GetCACaps lists POSTPKIOperation, AES, DES3, SHA-256, SHA-1 and SCEPStandard, not Renewal."""
        status, body, ctype = http(rsa_responder, "GET", {"operation": "GetCACaps"}, b"")
        caps = set(body.decode().split())
        assert status == 200 and ctype == "text/plain"
        assert {"POSTPKIOperation", "AES", "DES3", "SHA-256", "SHA-1", "SCEPStandard"} <= caps
        assert "Renewal" not in caps

    def test_get_ca_cert(self, rsa_responder: ScepResponder) -> None:
        """GetCACert returns the CA certificate DER as application/x-x509-ca-cert."""
        status, body, ctype = http(rsa_responder, "GET", {"operation": "GetCACert"}, b"")
        assert (status, ctype) == (200, "application/x-x509-ca-cert")
        assert x509.load_der_x509_certificate(body) == rsa_responder.ca.certificate

    def test_post(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """PKIOperation by POST answers with a CertRep as application/x-pki-message."""
        req, _ = _request(rsa_responder, device)
        status, body, ctype = http(rsa_responder, "POST", {"operation": "PKIOperation"}, req)
        assert (status, ctype) == (200, "application/x-pki-message")
        assert scep.decode_pki_message(body).pki_status is PkiStatus.SUCCESS

    @pytest.mark.parametrize("form", ["plain", "percent", "plus-as-space"])
    def test_get(
        self, rsa_responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate], form: str
    ) -> None:
        """PKIOperation by GET accepts the base64 message raw, still percent-encoded, or with '+' as space."""
        req, _ = _request(rsa_responder, device)
        b64 = base64.b64encode(req).decode()
        message = {"plain": b64, "percent": quote(b64, safe=""), "plus-as-space": b64.replace("+", " ")}[form]
        status, body, _ = http(rsa_responder, "GET", {"operation": "PKIOperation", "message": message}, b"")
        assert status == 200
        assert scep.decode_pki_message(body).pki_status is PkiStatus.SUCCESS

    @pytest.mark.parametrize(
        ("method", "query", "body", "status"),
        [
            ("POST", {"operation": "PKIOperation"}, b"junk", 400),
            ("GET", {"operation": "PKIOperation", "message": "!!!"}, b"", 400),
            ("GET", {"operation": "Nope"}, b"", 400),
            ("GET", {}, b"", 400),
            ("PUT", {"operation": "GetCACaps"}, b"", 405),
        ],
    )
    def test_errors(
        self, rsa_responder: ScepResponder, method: str, query: dict[str, str], body: bytes, status: int
    ) -> None:
        """Malformed bodies and unknown operations give 400, other methods 405."""
        assert http(rsa_responder, method, query, body)[0] == status
