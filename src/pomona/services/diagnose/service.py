"""`DiagnoseService`: read the user's and device's state and events once, run the candidate checkers over
them, rank the assessments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pomona import knowledge
from pomona.domain.errors import InvalidInputError
from pomona.domain.models import Device, Event, Tenant
from pomona.domain.reasons import ReasonCode as R
from pomona.ports import DeviceStore, HasEvents, Resolver, TenantStore, WellKnownFetcher
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.checks import DiscoverySettings, TenantCheck
from pomona.services.diagnose import ranking
from pomona.services.diagnose.checkers import CHECKERS
from pomona.services.diagnose.context import WINDOW, CheckerStores, Context
from pomona.services.diagnose.funnel import funnel
from pomona.services.diagnose.model import Assessment, Verdict
from pomona.services.policy import PolicyService


@dataclass
class Diagnosis:
    findings: list[Assessment]
    checked: list[str]
    matched_messages: list[str]
    tenant: str
    upn: str | None
    device: dict[str, object] | None
    funnel: list[dict[str, object]] = field(default_factory=list)


class DiagnoseStores(CheckerStores, HasEvents, Protocol):
    """The diagnosis's stores, read only: the tenant, the user's and device's records and events, and
    what the checkers read (``CheckerStores``)."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def devices(self) -> DeviceStore: ...


@dataclass
class DiagnoseService(ServiceBase[DiagnoseStores]):
    policy: PolicyService
    resolver: Resolver | None  # None: the DNS causes are unknown
    fetcher: WellKnownFetcher | None  # None: the well-known document's cause is unknown
    settings: DiscoverySettings
    push_cert: TenantCheck  # the certificate lifecycle's findings (ApnsLifecycle.check)
    unresponsive: (
        TenantCheck  # devices silent after pushes APNs accepted (services.checks.unresponsive_check)
    )

    def diagnose(
        self,
        tenant_ref: str,
        *,
        upn: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        imei: str | None = None,
        message: str | None = None,
        at: datetime | None = None,
    ) -> Diagnosis:
        now = self.clock.now()
        at = at or now
        matches = knowledge.match_message(message) if message else []
        candidates = ranking.candidates(message, matches, CHECKERS)
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
            user = uow.users.by_upn(t.id, upn) if upn else None
            devices = _find_devices(uow, t, serial, udid, imei)
            enrollments = [e for d in devices for e in uow.enrollments.for_device(t.id, d.id)]
            if user is not None and not devices:
                enrollments += uow.enrollments.active_for_user(user.id)
            events = _events(uow, t, upn, devices, serial, udid, at)
            ctx = Context(
                t,
                now,
                at,
                upn.lower() if upn else None,
                user,
                devices,
                enrollments,
                events,
                uow,
                self.policy,
                self.resolver,
                self.fetcher,
                self.settings,
                self.push_cert,
                self.unresponsive,
            )
            findings = [self._run(ctx, c) for c in candidates if c in CHECKERS]
        ranking.rank(findings, candidates, matches)
        base = ctx.base_facts()
        for f in findings:
            f.facts = {**base, **{k: v for k, v in f.facts.items() if v is not None}}
        ranking.answer_unknown(findings, base)
        d = ctx.device
        return Diagnosis(
            findings,
            [f.code for f in findings if f.code != R.UNKNOWN],
            [m.id for m in matches],
            t.name,
            upn,
            None if d is None else {"id": d.id, "udid": d.udid, "serial": d.serial},
            funnel(ctx.events, now),
        )

    def _run(self, ctx: Context, code: str) -> Assessment:
        try:
            return CHECKERS[code](ctx)
        except Exception as exc:  # a checker fault must not hide the other findings
            return Assessment(
                code,
                Verdict.UNKNOWN,
                [{"kind": "error", "error": f"{type(exc).__name__}: {exc}"}],
                {},
                "the checker failed",
            )


def _find_devices(
    uow: DiagnoseStores, t: Tenant, serial: str | None, udid: str | None, imei: str | None
) -> list[Device]:
    out: list[Device] = []
    if udid:
        d = uow.devices.by_udid(t.id, udid)
        if d:
            out.append(d)
    if serial:
        out += [d for d in uow.devices.by_serial(t.id, serial.strip().upper()) if d not in out]
    if imei and not out:
        raise InvalidInputError(
            "look-up by IMEI needs the device to have reported it; give the serial or UDID"
        )
    return out


def _events(
    uow: DiagnoseStores,
    t: Tenant,
    upn: str | None,
    devices: list[Device],
    serial: str | None,
    udid: str | None,
    at: datetime,
) -> list[Event]:
    since, until = at - WINDOW, at + timedelta(hours=1)
    seen: dict[int | None, Event] = {}
    queries: list[dict[str, object]] = []
    if upn:
        queries.append({"upn": upn.lower()})
    for d in devices:
        queries.append({"udid": d.udid})
        if d.serial:
            queries.append({"serial": d.serial})
    if serial and not devices:
        queries.append({"serial": serial.strip().upper()})
    if udid and not devices:
        queries.append({"udid": udid})
    for q in queries:
        for e in uow.events.query(t.id, since=since, until=until, limit=200, **q):  # type: ignore[arg-type]
            seen[e.id] = e
    return sorted(seen.values(), key=lambda e: (e.at, e.id or 0), reverse=True)
