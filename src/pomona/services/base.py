"""What every service shares: its stores, the clock, and the failure-event helper.

A service is ``ServiceBase[XStores]``, where ``XStores`` is the Protocol in its module naming the stores
its transactions use (ports.py explains the convention); ``self.db`` opens units of work over those
stores only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pomona.domain.errors import NotFoundError
from pomona.domain.models import Event, Outcome, Step, Tenant, tenant_id_of
from pomona.domain.reasons import ReasonCode
from pomona.ports import Clock, HasEvents, Metrics, NoMetrics, Transactions
from pomona.services.context import current_caller, current_request_id
from pomona.services.throttle import RefusalThrottle, Suppressed, cap, cap_detail

#: One line per refusal (pomona/logs.py): the reason code and who was refused.
refusal_log = logging.getLogger("pomona.refusal")


class TenantLookup(Protocol):
    def get(self, tenant_id: str) -> Tenant | None: ...
    def by_name(self, name: str) -> Tenant | None: ...


def find_tenant(tenants: TenantLookup, ref: str) -> Tenant:
    """The tenant a reference names, or NOT_FOUND: the one place services resolve a tenant reference
    given by an admin, the API or the CLI. A reference of the form of an id is an id and nothing else;
    any other is a name (no name has the form of an id), so it names one tenant or none. Resolving the id
    an adapter already resolved (the admin API's scope check) finds that same tenant again."""
    tenant_id = tenant_id_of(ref)
    t = tenants.get(tenant_id) if tenant_id is not None else tenants.by_name(ref)
    if t is None:
        raise NotFoundError(f"no tenant {ref!r}", tenant=ref)
    return t


U = TypeVar("U", bound=HasEvents, covariant=True)
"""The service's stores. Covariant: services never reassign ``db``, so one over more stores serves where
fewer are needed."""


@dataclass
class ServiceBase(Generic[U]):
    db: Transactions[U]
    clock: Clock
    #: Refusals of callers that proved no identity, per tenant and address (services/throttle.py).
    refusal_throttle: RefusalThrottle = field(default_factory=RefusalThrottle, kw_only=True, repr=False)
    #: What /metrics counts (pomona/metrics.py); nothing unless the composition root gives it.
    metrics: Metrics = field(default_factory=NoMetrics, kw_only=True, repr=False)

    def record_failure(
        self,
        tenant_id: str,
        step: Step,
        reason: ReasonCode | str,
        *,
        user_id: str | None = None,
        upn: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        enrollment_id: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Record a refusal in its own transaction, so it survives the rollback of the refused work,
        and write its log line (and count it for /metrics, by reason code). A refusal of a device request that proved no identity is rate-limited
        per tenant and client address (services/throttle.py): past the limit it is counted, and one
        EVENTS_SUPPRESSED event per window says how many were left out. Strings from the request are
        cut to their size (throttle.MAX_DETAIL_CHARS in the detail)."""
        request_id = current_request_id()
        now = self.clock.now()
        caller = current_caller()
        suppressed = self.refusal_throttle.due(now)
        admitted = (
            caller is None
            or caller.identified
            or self.refusal_throttle.admit(tenant_id, caller.address, step.value, str(reason), now)
        )
        self.metrics.refusal(str(reason), step.value)
        if refusal_log.isEnabledFor(logging.INFO):
            fields = {
                "reason": str(reason),
                "step": step.value,
                "tenant": tenant_id,
                "request_id": request_id,
            }
            who = {"udid": cap(udid, 64), "serial": cap(serial, 64), "upn": cap(upn, 320)}
            fields.update({k: v for k, v in who.items() if v is not None})
            refusal_log.info("refusal", extra=fields)
        if suppressed:
            self._record_suppressed(suppressed)
        if not admitted:
            return
        with self.db.unit_of_work() as uow:
            uow.events.append(
                Event(
                    tenant_id=tenant_id,
                    at=now,
                    step=step,
                    outcome=Outcome.FAILED,
                    reason=str(reason),
                    user_id=user_id,
                    upn=cap(upn, 320),
                    serial=cap(serial, 64),
                    udid=cap(udid, 64),
                    enrollment_id=enrollment_id,
                    request_id=request_id,
                    detail=_capped(detail),
                )
            )

    def _record_suppressed(self, counts: list[Suppressed]) -> None:
        """One EVENTS_SUPPRESSED event per (tenant, source, reason) whose window has passed."""
        with self.db.unit_of_work() as uow:
            for c in counts:
                uow.events.append(
                    Event(
                        tenant_id=c.tenant_id,
                        at=c.until,
                        step=Step(c.step),
                        outcome=Outcome.FAILED,
                        reason=ReasonCode.EVENTS_SUPPRESSED.value,
                        request_id=None,
                        detail={
                            "source": c.source,
                            "suppressed_reason": c.reason,
                            "count": c.count,
                            "since": c.since.isoformat(),
                            "until": c.until.isoformat(),
                        },
                    )
                )

    def ok_event(
        self,
        tenant_id: str,
        step: Step,
        *,
        user_id: str | None = None,
        upn: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        enrollment_id: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> Event:
        return Event(
            tenant_id=tenant_id,
            at=self.clock.now(),
            step=step,
            outcome=Outcome.OK,
            user_id=user_id,
            upn=upn,
            serial=serial,
            udid=udid,
            enrollment_id=enrollment_id,
            request_id=current_request_id(),
            detail=detail or {},
        )


def _capped(detail: dict[str, object] | None) -> dict[str, object]:
    out = cap_detail(detail or {})
    assert isinstance(out, dict)
    return out
