"""Tenant health: every tenant-level check that needs no device, kept with first and last seen.

`pomona health` and `GET /api/v1/health/findings` run it on demand; the server runs it on a schedule,
and findings that are new go to the tenant's webhook (the APNs issue's notifier).

The rules are `pomona.domain.checks`'; the checks other services own come in through the constructor:
the certificate lifecycle's (`ApnsLifecycle.check`), push reachability's
(`services.checks.unresponsive_check`) and the ABM server tokens' (`AbmService.check`). The ADE profiles
that ask MFA users for credentials the legacy way are checked here (DEP_MFA_WITH_LEGACY_AUTH).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from pomona import knowledge
from pomona.domain.checks import (
    AWAITING_STUCK_AFTER,
    Finding,
    RecordedFinding,
    ade_mfa_findings,
    authority_findings,
    dns_findings,
    licence_findings,
    stuck_findings,
)
from pomona.domain.models import Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.ports import AbmView, HasEvents, HealthStore, Resolver, TenantStore, UserStore
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.checks import DiscoverySettings, TenantCheck, lookup_cnames

# The tenant's webhook (Notifier.notify): tenant id and the new findings as JSON.
Notify = Callable[[str, list[dict[str, object]]], object]


class HealthStores(HasEvents, Protocol):
    """The health service's stores: the tenant, its licensed users, the findings kept, and the ADE
    profiles (their authentication)."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def health(self) -> HealthStore: ...
    @property
    def abm_view(self) -> AbmView: ...


@dataclass
class HealthService(ServiceBase[HealthStores]):
    resolver: Resolver | None  # None: no DNS checks
    settings: DiscoverySettings
    push_cert: TenantCheck  # the certificate lifecycle's findings
    unresponsive: TenantCheck  # devices silent after pushes APNs accepted
    notify: Notify | None  # None: new findings are kept, not sent
    abm: TenantCheck | None = None  # ABM server tokens: expiry and failing syncs (AbmService.check)

    def check(self, uow: HealthStores, t: Tenant, now: datetime) -> list[Finding]:
        out = authority_findings(t.mdm_authority)
        out += self.push_cert(t.id, now)
        out += licence_findings(
            t.licence_seats, uow.users.licensed_count(t.id), lambda: uow.health.unlicensed_users(t.id)
        )
        stuck = uow.health.stuck_awaiting(t.id, now - AWAITING_STUCK_AFTER)
        for f in stuck_findings((udid, serial, since) for _eid, udid, serial, since in stuck):
            fix = knowledge.fix_commands(f.code.value, tenant=t.name, **f.facts)  # abm release --serial
            out.append(replace(f, facts={**f.facts, "fix": fix[0]}) if fix else f)
        if self.resolver is not None and self.settings.discoverable:  # an IP address is no CNAME target
            out += dns_findings(lookup_cnames(self.resolver, t.domain, self.settings))
        out += self.unresponsive(t.id, now)
        if self.abm is not None:
            out += self.abm(t.id, now)
        legacy = [
            (p.name, "legacy") for p in uow.abm_view.profiles(t.id) if p.settings.get("auth") == "legacy"
        ]
        if legacy:
            out += ade_mfa_findings(legacy, uow.health.mfa_users(t.id))
        return out

    def flag_stuck(self) -> int:
        """Every tenant: one failed AWAITING_CONFIGURATION_STUCK event for each enrollment held at Setup
        Assistant past the threshold that has none since it was held (the singleton job
        ``ade-release-watch``; services/release.py). Returns how many events were recorded."""
        now = self.clock.now()
        todo: list[tuple[str, str, str, str | None, datetime]] = []
        with self.db.unit_of_work(readonly=True) as uow:
            for t in uow.tenants.list():
                for eid, udid, serial, since in uow.health.stuck_awaiting(t.id, now - AWAITING_STUCK_AFTER):
                    code = ReasonCode.AWAITING_CONFIGURATION_STUCK.value
                    if not uow.events.query(t.id, udid=udid, reason=code, since=since, limit=1):
                        todo.append((t.id, eid, udid, serial, since))
        for tenant_id, eid, udid, serial, since in todo:
            self.record_failure(
                tenant_id,
                Step.COMMAND,
                ReasonCode.AWAITING_CONFIGURATION_STUCK,
                serial=serial,
                udid=udid,
                enrollment_id=eid,
                detail={"since": since.isoformat(), "held_minutes": int((now - since).total_seconds() // 60)},
            )
        return len(todo)

    def deployment_findings(self) -> list[tuple[str, list[Finding], list[Finding] | None]]:
        """Per tenant (by name): its push certificate's findings and its DNS discovery findings (None
        when the DNS is not checked: no resolver, or a public name that cannot be a CNAME target). The
        same checks as :meth:`check`, for `pomona doctor`; nothing is recorded or sent."""
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            tenants = uow.tenants.list()
        out: list[tuple[str, list[Finding], list[Finding] | None]] = []
        for t in tenants:
            dns = None
            if self.resolver is not None and self.settings.discoverable:
                dns = dns_findings(lookup_cnames(self.resolver, t.domain, self.settings))
            out.append((t.name, list(self.push_cert(t.id, now)), dns))
        return out

    def run(self, tenant_ref: str) -> dict[str, Any]:
        """Check now, keep the findings (first/last seen), send new ones to the webhook."""
        now = self.clock.now()
        # The checks read (100,000 devices: 0.1-0.3 s, DNS lookups when discoverable) in a read
        # transaction; only the findings are written, in a short one. Checking inside the write
        # transaction held SQLite's write lock all that time: check-ins that write waited on the event
        # loop for its lock wait, then ran again in worker threads (issue 14, bench/memory.py's soak).
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
            found = self.check(uow, t, now)
        with self.db.unit_of_work() as uow:
            new = uow.health.record(t.id, found, now)
            findings = uow.health.open_findings(t.id)
        if new and self.notify is not None:
            self.notify(t.id, [f.to_json() for f in new])
            with self.db.unit_of_work() as uow:
                uow.health.mark_notified(t.id, [f.key for f in new], now)
        findings.sort(key=lambda r: (r.finding.severity.rank, r.finding.code.value, r.finding.subject))
        return {
            "tenant": t.name,
            "checked_at": now.isoformat(),
            "new": len(new),
            "findings": [r.to_json() for r in findings],
        }

    def open_findings(self, tenant_id: str) -> list[RecordedFinding]:
        """The tenant's open findings as last recorded (no check runs), critical first: the console's."""
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.health.open_findings(tenant_id)
        found.sort(key=lambda r: (r.finding.severity.rank, r.finding.code.value, r.finding.subject))
        return found

    def run_all(self) -> int:
        with self.db.unit_of_work(readonly=True) as uow:
            tenants = uow.tenants.list()
        for t in tenants:
            self.run(t.id)
        return len(tenants)
