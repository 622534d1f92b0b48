"""The SCEP endpoint: one responder per tenant CA, wired to the enrollment service."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from pomona.app import Pomona
from pomona.domain.errors import PomonaError
from pomona.domain.reasons import ReasonCode
from pomona.pki.scep import ScepRefusal, ScepResponder, handle_scep_http
from pomona.protocol.scep import CsrInfo, FailInfo, PkiMessage


def _responder(p: Pomona, cache: MutableMapping[str, object], tenant_id: str) -> ScepResponder | None:
    r = cache.get(tenant_id)
    if isinstance(r, ScepResponder):
        return r
    with p.db.unit_of_work(readonly=True) as uow:
        tenant = uow.tenants.get(tenant_id)
    if tenant is None:
        return None
    ca = p.pki.load_ca(tenant.ca_cert_pem, tenant.ca_key_pem)

    def on_request(csr: CsrInfo, msg: PkiMessage) -> object:
        try:
            return p.enrollment.scep_issue(tenant_id, csr.challenge_password, csr.public_key, csr.subject)
        except PomonaError as exc:
            info = FailInfo.BAD_REQUEST
            if exc.reason in (ReasonCode.ENROLLMENT_TOKEN_INVALID, ReasonCode.ENROLLMENT_TOKEN_EXPIRED):
                info = FailInfo.BAD_REQUEST
            raise ScepRefusal(info, str(exc.reason)) from exc

    responder = ScepResponder(ca, on_request)  # type: ignore[arg-type]
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
