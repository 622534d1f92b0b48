"""Tenant health: every tenant-level check that needs no device, kept with first and last seen.

`pomona health` and `GET /api/v1/health/findings` run it on demand; the server runs it on a schedule,
and findings that are new go to the tenant's webhook (the APNs issue's notifier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pomona.domain.errors import NotFoundError
from pomona.domain.models import Tenant
from pomona.domain.reasons import ReasonCode as R
from pomona.ports import Resolver, UnitOfWork
from pomona.services.base import ServiceBase
from pomona.services.diagnose import DiagnoseSettings

EXPIRY_STEPS = (30, 14, 7, 1)  # days before expiry at which APNS_CERT_EXPIRING is raised (and re-raised)
STUCK_AFTER = timedelta(hours=1)
SEVERITY = {"critical": 0, "warning": 1, "info": 2}

# Extra checks other services contribute (push reachability, ABM): tenant -> findings.
ExtraCheck = Callable[[Tenant, datetime], list[dict[str, Any]]]


def finding(code: str, severity: str, subject: str = "tenant", **facts: object) -> dict[str, Any]:
    return {"code": code, "severity": severity, "subject": subject, "facts": facts}


@dataclass
class HealthService(ServiceBase):
    resolver: Resolver | None
    settings: DiagnoseSettings
    extra_checks: list[ExtraCheck] = field(default_factory=list)
    notify: Callable[[str, list[dict[str, Any]]], object] | None = None
    push_cert_findings: Callable[[str, datetime], list[dict[str, Any]]] | None = None

    def check(self, uow: UnitOfWork, t: Tenant, now: datetime) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not t.mdm_authority:
            out.append(finding(R.MDM_AUTHORITY_NOT_SET, "critical"))
        if t.push_cert_pem is None or t.push_not_after is None:
            out.append(finding(R.APNS_CERT_MISSING, "critical"))
        elif self.push_cert_findings is None:
            out += self._push_cert(uow, t, now)
        else:  # the certificate lifecycle's own findings (expiry steps, APNs refusals, topic changes)
            for f in self.push_cert_findings(t.id, now):
                facts = dict(f.get("facts") or {})
                step = facts.get("threshold_days")
                subject = f"expiry:{step}d" if f["code"] == R.APNS_CERT_EXPIRING and step else "tenant"
                out.append(
                    {
                        "code": f["code"],
                        "severity": "critical" if f["severity"] == "error" else f["severity"],
                        "subject": subject,
                        "facts": facts,
                    }
                )
        free = t.licence_seats - uow.users.licensed_count(t.id)
        if free <= 0:
            waiting = uow.health.unlicensed_users(t.id)
            if waiting:
                out.append(
                    finding(R.LICENSES_EXHAUSTED, "warning", seats=t.licence_seats, unlicensed_users=waiting)
                )
        stuck = uow.health.stuck_awaiting(t.id, now - STUCK_AFTER)
        for _eid, udid, since in stuck:
            out.append(
                finding(
                    R.AWAITING_CONFIGURATION_STUCK,
                    "warning",
                    subject=f"device:{udid}",
                    udid=udid,
                    since=since.isoformat(),
                )
            )
        out += self._dns(t)
        for extra in self.extra_checks:
            out += extra(t, now)
        return out

    def _push_cert(self, uow: UnitOfWork, t: Tenant, now: datetime) -> list[dict[str, Any]]:
        """Expiry and topic findings when no certificate lifecycle service is wired (tests, tools)."""
        assert t.push_not_after is not None
        out = []
        left = t.push_not_after - now
        if left <= timedelta(0):
            out.append(
                finding(
                    R.APNS_CERT_EXPIRED,
                    "critical",
                    expired=f"{t.push_not_after:%Y-%m-%d}",
                    topic=t.push_topic,
                )
            )
        elif left <= timedelta(days=EXPIRY_STEPS[0]):
            step = min(s for s in EXPIRY_STEPS if left <= timedelta(days=s))
            out.append(
                finding(
                    R.APNS_CERT_EXPIRING,
                    "critical" if step <= 7 else "warning",
                    subject=f"expiry:{step}d",
                    days_left=left.days,
                    threshold_days=step,
                    expires=f"{t.push_not_after:%Y-%m-%d}",
                    topic=t.push_topic,
                )
            )
        orphaned = uow.health.orphaned_by_topic(t.id, t.push_topic or "")
        if orphaned:
            out.append(finding(R.APNS_TOPIC_CHANGED, "critical", count=orphaned, topic=t.push_topic))
        return out

    def _dns(self, t: Tenant) -> list[dict[str, Any]]:
        if self.resolver is None:
            return []
        out = []
        for prefix, code_missing, expected in (
            ("enterpriseenrollment", R.DNS_ENROLLMENT_CNAME_MISSING, self.settings.enrollment_target),
            ("enterpriseregistration", R.DNS_REGISTRATION_CNAME_MISSING, self.settings.registration_target),
        ):
            name = f"{prefix}.{t.domain}"
            try:
                target = self.resolver.cname(name)
            except LookupError:
                continue  # the name server did not answer: no finding either way
            if target is None:
                out.append(
                    finding(
                        code_missing, "warning", subject=f"dns:{name}", name=name, expected_target=expected
                    )
                )
            elif prefix == "enterpriseenrollment" and target != expected.lower():
                out.append(
                    finding(
                        R.DNS_ENROLLMENT_CNAME_WRONG,
                        "warning",
                        subject=f"dns:{name}",
                        name=name,
                        found=target,
                        expected_target=expected,
                    )
                )
        return out

    def run(self, tenant_ref: str) -> dict[str, Any]:
        """Check now, keep the findings (first/last seen), send new ones to the webhook."""
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            t = uow.tenants.by_name(tenant_ref) or uow.tenants.get(tenant_ref)
            if t is None:
                raise NotFoundError(f"no tenant {tenant_ref!r}")
            found = self.check(uow, t, now)
            new = uow.health.record(t.id, found, now)
            findings = uow.health.open_findings(t.id)
        if new and self.notify is not None:
            self.notify(t.id, new)
            with self.db.unit_of_work() as uow:
                uow.health.mark_notified(t.id, [(f["code"], f["subject"]) for f in new], now)
        findings.sort(key=lambda f: (SEVERITY.get(f["severity"], 9), f["code"], f["subject"]))
        return {
            "tenant": t.name,
            "checked_at": now.isoformat(),
            "new": len(new),
            "findings": [
                {
                    "code": f["code"],
                    "severity": f["severity"],
                    "subject": f["subject"],
                    "facts": f["facts"],
                    "first_seen": _iso(f["first_seen"]),
                    "last_seen": _iso(f["last_seen"]),
                }
                for f in findings
            ],
        }

    def run_all(self) -> int:
        with self.db.unit_of_work(readonly=True) as uow:
            tenants = uow.tenants.list()
        for t in tenants:
            self.run(t.id)
        return len(tenants)


def _iso(v: object) -> object:
    return v.isoformat() if isinstance(v, datetime) else v
