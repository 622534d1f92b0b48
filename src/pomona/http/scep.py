"""The SCEP endpoint: one responder per tenant CA, wired to the enrollment service.

Every refusal leaves an event. Token refusals (wrong, used or expired challenge) are recorded by the
enrollment service that checks the token; refusals the responder makes on its own (an envelope it cannot
open, a CSR whose signature does not verify, a body that is not a pkiMessage) are recorded here.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from cryptography import x509

from pomona.app import Pomona
from pomona.domain.errors import PomonaError
from pomona.domain.models import Step
from pomona.domain.reasons import ReasonCode
from pomona.pki.ca import CertificateAuthority
from pomona.pki.scep import ScepRefusal, ScepResponder, handle_scep_http
from pomona.protocol.scep import CsrInfo, FailInfo, PkiMessage, ScepMalformedError

_TOKEN_REASONS = {ReasonCode.ENROLLMENT_TOKEN_INVALID.value, ReasonCode.ENROLLMENT_TOKEN_EXPIRED.value}


class TenantScepResponder(ScepResponder):
    def __init__(self, p: Pomona, tenant_id: str, ca: CertificateAuthority) -> None:
        super().__init__(ca, self._issue)
        self.pomona = p
        self.tenant_id = tenant_id

    def _issue(self, csr: CsrInfo, msg: PkiMessage) -> x509.Certificate:
        try:
            return self.pomona.enrollment.scep_issue(
                self.tenant_id, csr.challenge_password, csr.public_key, csr.subject
            )
        except PomonaError as exc:
            raise ScepRefusal(FailInfo.BAD_REQUEST, str(exc.reason)) from exc

    def pki_operation(self, body: bytes) -> tuple[bytes, str | None]:
        try:
            rep, reason = super().pki_operation(body)
        except ScepMalformedError as exc:
            self._record(ReasonCode.MALFORMED_REQUEST, str(exc))
            raise
        if reason is not None and reason not in _TOKEN_REASONS:
            self._record(reason, "refused by the SCEP responder")
        return rep, reason

    def _record(self, reason: str, error: str) -> None:
        self.pomona.enrollment.record_failure(self.tenant_id, Step.SCEP, reason, detail={"error": error})


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
