"""The SCEP use case: one endpoint per tenant CA, issuing through the enrollment service.

Every refusal leaves an event. Refusals of the enrollment service (a wrong, used or expired challenge,
reason-coded errors) are recorded by that service; refusals the responder makes on its own (an envelope
it cannot open, a CSR whose signature does not verify, a body that is not a pkiMessage) are wire-format
faults, mapped to their reason by ``domain.errors.from_protocol`` and recorded here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from pomona.domain.errors import PomonaError, from_protocol
from pomona.domain.models import Step
from pomona.ports import HasEvents, Pki, ScepAnswer, ScepEndpoint, ScepResponders, TenantStore
from pomona.services.base import ServiceBase
from pomona.services.enrollment import EnrollmentService

UNKNOWN_ENDPOINT = ScepAnswer(404, b"unknown SCEP endpoint\n", "text/plain")


class ScepStores(HasEvents, Protocol):
    """The SCEP service's stores: the tenant whose CA answers (issuing is the enrollment service's)."""

    @property
    def tenants(self) -> TenantStore: ...


@dataclass
class ScepService(ServiceBase[ScepStores]):
    pki: Pki
    responders: ScepResponders
    enrollment: EnrollmentService
    _endpoints: dict[str, ScepEndpoint] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, tenant_id: str, method: str, query: Mapping[str, str], body: bytes) -> ScepAnswer:
        """Answer one SCEP HTTP request for the tenant (404 for a tenant that does not exist)."""
        endpoint = self._endpoint(tenant_id)
        if endpoint is None:
            return UNKNOWN_ENDPOINT
        answer = endpoint.handle(method, query, body)
        if answer.refused is not None:
            err = from_protocol(answer.refused)
            self.record_failure(tenant_id, Step.SCEP, err.reason, detail={"error": err.detail})
        return answer

    def _endpoint(self, tenant_id: str) -> ScepEndpoint | None:
        with self._lock:
            found = self._endpoints.get(tenant_id)
        if found is not None:
            return found
        with self.db.unit_of_work(readonly=True) as uow:
            pair = uow.tenants.ca_keypair(tenant_id)
            ra = uow.tenants.scep_ra(tenant_id)
        if pair is None:
            return None
        ca = self.pki.load_ca(pair.cert_pem, pair.key_pem)
        if ra is None and (fresh := self.responders.new_ra(ca)) is not None:
            # A P-256 CA's RA, made once for every process: the first one kept is the one all use.
            with self.db.unit_of_work() as uow:
                uow.tenants.keep_scep_ra(tenant_id, fresh)
                ra = uow.tenants.scep_ra(tenant_id)
        issue = partial(self.enrollment.scep_issue, tenant_id)
        endpoint = self.responders.responder(ca, issue, (PomonaError,), ra)
        with self._lock:
            return self._endpoints.setdefault(tenant_id, endpoint)
