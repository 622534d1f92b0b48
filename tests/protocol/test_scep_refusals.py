"""SCEP requests that used to escape as 500s: a transactionID the CertRep cannot carry, and a CSR whose
public-key algorithm is unknown. Both are MALFORMED_REQUEST refusals of the error tree."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.domain.errors import PomonaError, describe
from pomona.domain.reasons import ReasonCode
from pomona.pki.ca import CertificateAuthority
from pomona.pki.scep import ScepResponder, handle_scep_http
from pomona.protocol import cms, scep
from pomona.protocol.scep import ScepMalformedError


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def device() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("device"))
        .issuer_name(_name("device"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def responder() -> ScepResponder:
    ca = CertificateAuthority.generate("SCEP refusals CA")

    def issue(csr: scep.CsrInfo, msg: scep.PkiMessage) -> x509.Certificate:
        return ca.issue(csr.public_key, csr.subject, days=1)  # type: ignore[arg-type]

    return ScepResponder(ca, issue, refusals=(PomonaError,))


def _unknown_key_csr(key: rsa.RSAPrivateKey) -> bytes:
    """A CSR whose SubjectPublicKeyInfo names an algorithm nobody knows (1.2.3.4)."""
    req = asn1_csr.CertificationRequest.load(scep.build_csr(key, _name("iPhone"), "c"))
    info = req["certification_request_info"]
    info["subject_pk_info"]["algorithm"]["algorithm"] = "1.2.3.4"
    info["subject_pk_info"]["algorithm"]["parameters"] = core.Null()
    return bytes(req.dump(force=True))


class TestScepRefusals:
    def test_non_latin1_transaction_id_is_malformed(
        self, responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A transactionID outside Latin-1 (it cannot go back in the CertRep) is a 400 refusal, not a 500."""
        key, cert = device
        attrs = {
            scep.OID_MESSAGE_TYPE: core.PrintableString("19"),
            scep.OID_TRANSACTION_ID: core.UTF8String("交易-1"),
            scep.OID_SENDER_NONCE: core.OctetString(os.urandom(16)),
        }
        csr = scep.build_csr(key, _name("iPhone"), "c")
        env = cms.encrypt_enveloped(csr, responder.responder_certificate)
        body = cms.sign(env, cert, key, extra_attributes=attrs)
        with pytest.raises(ScepMalformedError):
            scep.decode_pki_message(body)
        answer = handle_scep_http(responder, "POST", {"operation": "PKIOperation"}, body)
        assert answer.status == 400
        assert answer.refused is not None
        assert describe(answer.refused).reason is ReasonCode.MALFORMED_REQUEST

    def test_unknown_public_key_algorithm_is_malformed(
        self, responder: ScepResponder, device: tuple[rsa.RSAPrivateKey, x509.Certificate]
    ) -> None:
        """A CSR whose key algorithm is unknown is refused MALFORMED_REQUEST; nothing escapes as a 500."""
        key, cert = device
        csr = _unknown_key_csr(key)
        with pytest.raises(ScepMalformedError):
            scep.decode_csr(csr)
        req = scep.build_pkcs_req(csr, cert, key, responder.responder_certificate, transaction_id="T1")
        answer = handle_scep_http(responder, "POST", {"operation": "PKIOperation"}, req)
        assert answer.status in (200, 400)
        assert answer.refused is not None
        assert describe(answer.refused).reason is ReasonCode.MALFORMED_REQUEST
