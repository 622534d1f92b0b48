"""The SCEP responder (RFC 8894 server side) over a `CertificateAuthority`.

`ScepResponder` turns PKIOperation bodies into CertRep messages; `on_request` (wired by the app to the
enrollment service) checks the challenge and issues, or raises one of the exception types the responder
was given as ``refusals`` (Pomona's reason-coded errors: this module does not know them). Every refusal
is answered as CertRep FAILURE and handed back to the caller as a typed exception: what `on_request`
raised, or the `ScepMalformedError` / `CsrSignatureError` the responder found itself. Mapping those to
reason codes is the caller's (``domain.errors.describe``). `handle_scep_http` maps the three SCEP HTTP
operations onto a responder without knowing about any web framework.

Only PKCSReq is served. RenewalReq, CertPoll, GetCert and GetCRL are answered with FAILURE badRequest,
which is why "Renewal" is not advertised in GetCACaps.

When the CA key is not RSA (a P-256 CA) clients cannot envelope to it, so the responder uses an RSA
RA certificate issued by the CA (pass `ra=`, or one is generated in memory) and GetCACert returns the
RA and CA certificates as `application/x-x509-ca-ra-cert`. The server makes the RA once per tenant
(`LocalScep.new_ra`) and keeps it in the database (services/scep.py), so every process answers with it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.pki.ca import CertificateAuthority
from pomona.ports import CaKeyPair, IssueIdentity, ScepAnswer
from pomona.ports import CertificateAuthority as PortCA
from pomona.protocol import cms
from pomona.protocol.errors import ProtocolError
from pomona.protocol.scep import (
    CsrInfo,
    CsrSignatureError,
    FailInfo,
    MessageType,
    PkiMessage,
    ScepMalformedError,
    decode_csr,
    decode_pki_message,
    encode_cert_rep,
)

__all__ = ["ScepResponder", "handle_scep_http"]

log = logging.getLogger(__name__)

CA_CAPS = (b"POSTPKIOperation", b"SCEPStandard", b"AES", b"DES3", b"SHA-256", b"SHA-1")

OnRequest = Callable[[CsrInfo, PkiMessage], x509.Certificate]


def new_ra(ca: CertificateAuthority) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A new RSA RA certificate (10 years) and key, issued by ``ca``."""
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = f"{ca_cn[0].value!s} SCEP RA" if ca_cn else "Pomona SCEP RA"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return ca.issue_signing(ra_key.public_key(), subject, days=3650), ra_key


class ScepResponder:
    """Serves GetCACaps, GetCACert and PKIOperation (PKCSReq) for one CA.

    ``on_request`` issues the certificate; an exception it raises of one of the ``refusals`` types refuses
    issuance (CertRep FAILURE badRequest), any other exception propagates.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        on_request: OnRequest,
        *,
        refusals: tuple[type[Exception], ...] = (),
        ra: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    ) -> None:
        self.ca = ca
        self.on_request = on_request
        self.refusals = refusals
        if ra is None and not isinstance(ca.key, rsa.RSAPrivateKey):
            ra = new_ra(ca)
        self._ra = ra
        if ra is not None:
            self._cert, self._key = ra
        else:
            assert isinstance(ca.key, rsa.RSAPrivateKey)
            self._cert, self._key = ca.certificate, ca.key

    @property
    def responder_certificate(self) -> x509.Certificate:
        """The certificate requests are enveloped to and CertReps are signed with (CA or RA)."""
        return self._cert

    def get_ca_caps(self) -> bytes:
        """The GetCACaps body: one capability a line."""
        return b"\n".join(CA_CAPS) + b"\n"

    def get_ca_cert(self) -> tuple[bytes, str]:
        """The GetCACert body and content type (the CA alone, or RA + CA as certs-only PKCS#7)."""
        if self._ra is None:
            return self.ca.certificate.public_bytes(serialization.Encoding.DER), "application/x-x509-ca-cert"
        return cms.certs_only([self._ra[0], self.ca.certificate]), "application/x-x509-ca-ra-cert"

    def _fail(self, msg: PkiMessage, info: FailInfo, why: Exception) -> tuple[bytes, Exception | None]:
        log.info("SCEP refusal (%s) transaction %s: %r", info.name, msg.transaction_id, why)
        return encode_cert_rep(msg, self._cert, self._key, fail_info=info), why

    def pki_operation(self, body: bytes) -> tuple[bytes, Exception | None]:
        """Answer one PKIOperation: (CertRep DER, why issuance was refused or None).

        The refusal is what ``on_request`` raised (one of ``refusals``), or the `ScepMalformedError` /
        `CsrSignatureError` the responder found. Raises `ScepMalformedError` when the body is not a
        correctly signed pkiMessage (nobody to answer to); every later problem becomes a CertRep FAILURE.
        """
        msg = decode_pki_message(body)
        if msg.message_type is not MessageType.PKCS_REQ:
            why = ScepMalformedError(f"only PKCSReq is served, not {msg.message_type.name}")
            return self._fail(msg, FailInfo.BAD_REQUEST, why)
        if not isinstance(msg.signer.public_key(), rsa.RSAPublicKey):
            # The CertRep is enveloped to the requester's signer certificate: key transport needs RSA.
            return self._fail(msg, FailInfo.BAD_ALG, ScepMalformedError("the signer key is not RSA"))
        try:
            csr_der = msg.decrypt(self._cert, self._key)
        except ScepMalformedError as exc:
            return self._fail(msg, FailInfo.BAD_MESSAGE_CHECK, exc)
        try:
            csr = decode_csr(csr_der)
        except CsrSignatureError as exc:
            return self._fail(msg, FailInfo.BAD_MESSAGE_CHECK, exc)
        except ScepMalformedError as exc:
            return self._fail(msg, FailInfo.BAD_REQUEST, exc)
        try:
            issued = self.on_request(csr, msg)
        except self.refusals as exc:
            return self._fail(msg, FailInfo.BAD_REQUEST, exc)
        rep = encode_cert_rep(msg, self._cert, self._key, issued=issued)
        return rep, None


def _b64_message(raw: str) -> bytes:
    text = unquote(raw) if "%" in raw else raw
    text = text.replace(" ", "+").replace("\n", "").replace("\r", "")
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ScepMalformedError("message parameter is not base64") from exc


def handle_scep_http(
    responder: ScepResponder, method: str, query: Mapping[str, str], body: bytes
) -> ScepAnswer:
    """Serve one SCEP HTTP request. No framework needed.

    `query` holds the decoded query parameters (`operation`, `message`). The answer names the responder's
    own refusal (a protocol error), for the caller to record; refusals of ``on_request`` are its own.
    """
    operation = query.get("operation", "")
    method = method.upper()
    if method not in ("GET", "POST"):
        return ScepAnswer(405, b"method not allowed\n", "text/plain")
    if operation == "GetCACaps":
        return ScepAnswer(200, responder.get_ca_caps(), "text/plain")
    if operation == "GetCACert":
        data, ctype = responder.get_ca_cert()
        return ScepAnswer(200, data, ctype)
    if operation == "PKIOperation":
        try:
            message = body if method == "POST" else _b64_message(query.get("message", ""))
            rep, refusal = responder.pki_operation(message)
        except ScepMalformedError as exc:
            log.info("SCEP malformed PKIOperation: %s", exc)
            return ScepAnswer(400, b"malformed SCEP message\n", "text/plain", exc)
        own = refusal if isinstance(refusal, ProtocolError) else None
        return ScepAnswer(200, rep, "application/x-pki-message", own)
    return ScepAnswer(400, b"unknown SCEP operation\n", "text/plain")


class LocalScep:
    """The :class:`pomona.ports.ScepResponders` port: a SCEP responder over a tenant's CA."""

    def responder(
        self,
        ca: PortCA,
        issue: IssueIdentity,
        refusals: tuple[type[Exception], ...],
        ra: CaKeyPair | None = None,
    ) -> TenantScep:
        """The endpoint over ``ca``; with ``ra`` (PEM), that RA answers for a CA whose key is not RSA."""
        assert isinstance(ca, CertificateAuthority)

        def on_request(csr: CsrInfo, _msg: PkiMessage) -> x509.Certificate:
            return issue(csr.challenge_password, csr.public_key, csr.subject)

        pair = None
        if ra is not None:
            key = serialization.load_pem_private_key(ra.key_pem, password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            pair = (x509.load_pem_x509_certificate(ra.cert_pem), key)
        return TenantScep(ScepResponder(ca, on_request, refusals=refusals, ra=pair))

    def new_ra(self, ca: PortCA) -> CaKeyPair | None:
        """A new RA (PEM) for a CA whose key is not RSA; None for an RSA CA (it answers itself)."""
        assert isinstance(ca, CertificateAuthority)
        if isinstance(ca.key, rsa.RSAPrivateKey):
            return None
        cert, key = new_ra(ca)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return CaKeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


class TenantScep:
    """One tenant's SCEP endpoint (GetCACaps, GetCACert, PKIOperation)."""

    def __init__(self, responder: ScepResponder) -> None:
        self._responder = responder

    def handle(self, method: str, query: Mapping[str, str], body: bytes) -> ScepAnswer:
        return handle_scep_http(self._responder, method, query, body)
