"""The SCEP endpoint: one responder per tenant CA, wired to the enrollment service.

Every refusal leaves an event. Refusals of the enrollment service (a wrong, used or expired challenge:
reason-coded errors, raised through the responder as its ``refusals``) are recorded by that service;
refusals the responder makes on its own (an envelope it cannot open, a CSR whose signature does not
verify, a body that is not a pkiMessage) are protocol errors, mapped to their reason here by
``domain.errors.from_protocol`` and recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from cryptography import x509

from pomona.app import Pomona
from pomona.domain.errors import PomonaError, from_protocol
from pomona.domain.models import Step
from pomona.pki.ca import CertificateAuthority
from pomona.pki.scep import ScepResponder, handle_scep_http
from pomona.protocol.errors import ProtocolError
from pomona.protocol.scep import CsrInfo, PkiMessage, ScepMalformedError


class TenantScepResponder(ScepResponder):
    def __init__(self, p: Pomona, tenant_id: str, ca: CertificateAuthority) -> None:
        super().__init__(ca, self._issue, refusals=(PomonaError,))
        self.pomona = p
        self.tenant_id = tenant_id

    def _issue(self, csr: CsrInfo, msg: PkiMessage) -> x509.Certificate:
        return self.pomona.enrollment.scep_issue(
            self.tenant_id, csr.challenge_password, csr.public_key, csr.subject
        )

    def pki_operation(self, body: bytes) -> tuple[bytes, Exception | None]:
        try:
            rep, refusal = super().pki_operation(body)
        except ScepMalformedError as exc:
            self._record(exc)
            raise
        if isinstance(refusal, ProtocolError):  # the responder's own; the enrollment service records its own
            self._record(refusal)
        return rep, refusal

    def _record(self, exc: ProtocolError) -> None:
        err = from_protocol(exc)
        self.pomona.enrollment.record_failure(
            self.tenant_id, Step.SCEP, err.reason, detail={"error": err.detail}
        )


def _responder(p: Pomona, cache: MutableMapping[str, object], tenant_id: str) -> ScepResponder | None:
    r = cache.get(tenant_id)
    if isinstance(r, ScepResponder):
        return r
    with p.db.unit_of_work(readonly=True) as uow:
        tenant = uow.tenants.get(tenant_id)
    if tenant is None:
        return None
    responder = TenantScepResponder(p, tenant_id, p.pki.load_ca(tenant.ca_cert_pem, tenant.ca_key_pem))
    cache[tenant_id] = responder
    return responder


def scep_request(
    p: Pomona,
    cache: MutableMapping[str, object],
    tenant_id: str,
    method: str,
    query: Mapping[str, str],
    body: bytes,
) -> tuple[int, bytes, str | None]:
    responder = _responder(p, cache, tenant_id)
    if responder is None:
        return 404, b"unknown SCEP endpoint\n", "text/plain"
    return handle_scep_http(responder, method, query, body)
