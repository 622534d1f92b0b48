"""`DiagnoseService`: read the user's, their devices' and the named device's state and events once, cut
the events into attempts, run the candidate checkers (the message's causes, the attempt's refusals and
the tenant checks) and rank the assessments, evidence about the attempt first (ranking.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pomona import knowledge
from pomona.domain.errors import InvalidInputError
from pomona.domain.models import Device, Event, Tenant
from pomona.domain.reasons import ReasonCode as R
from pomona.i18n import msg
from pomona.ports import DeviceStore, HasEvents, Resolver, TenantStore, WellKnownFetcher
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.checks import DeviceCheck, DiscoverySettings, TenantCheck
from pomona.services.diagnose import ranking
from pomona.services.diagnose.checkers import CHECKERS
from pomona.services.diagnose.context import WINDOW, CheckerStores, Context
from pomona.services.diagnose.funnel import attempt_at, attempts
from pomona.services.diagnose.model import Assessment, Verdict, note
from pomona.services.policy import PolicyService


@dataclass
class Diagnosis:
    findings: list[Assessment]  # the answer first
    checked: list[str]
    matched_messages: list[str]
    tenant: str
    upn: str | None
    device: dict[str, object] | None
    funnel: list[dict[str, object]] = field(default_factory=list)
    also_wrong: list[Assessment] = field(default_factory=list)  # tenant faults not tied to this attempt
    attempt: dict[str, object] | None = None  # the attempt the report is about


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
        DeviceCheck  # devices silent after pushes APNs accepted (services.checks.unresponsive_check)
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
        named = ranking.candidates(message, matches, CHECKERS)
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
            user = uow.users.by_upn(t.id, upn) if upn else None
            devices = _find_devices(uow, t, serial, udid, imei)
            enrollments = [e for d in devices for e in uow.enrollments.for_device(t.id, d.id)]
            if user is not None and not devices:
                enrollments += uow.enrollments.active_for_user(user.id)
            events = _events(uow, t, upn, devices, serial, udid, at, [e.udid for e in enrollments if e.udid])
            found = attempts(events, now)
            attempt = attempt_at(found, at)
            episode = attempt.episode(at) if attempt is not None else []
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
                attempt,
                serial=serial.strip().upper() if serial else None,
            )
            refused = [e.reason for e in episode if e.reason]
            todo = [*named]
            todo += [c for c in (*refused, *ranking.TENANT_CHECKS) if c not in todo]
            assessments = [self._run(ctx, c) for c in todo if c in CHECKERS or c in refused]
        ranked = ranking.rank(
            assessments,
            attempt=attempt,
            episode=episode,
            message_codes=named if message else [],
            matches=matches,
            device_named=bool(devices or serial or udid),
        )
        base = ctx.base_facts()
        for f in (*ranked.findings, *ranked.also_wrong):
            f.facts = {**base, **{k: v for k, v in f.facts.items() if v is not None}}
        d = ctx.device
        return Diagnosis(
            ranked.findings,
            [f.code for f in (*ranked.findings, *ranked.also_wrong) if f.code != R.UNKNOWN],
            [m.id for m in matches],
            t.name,
            upn,
            None if d is None else {"id": d.id, "udid": d.udid, "serial": d.serial},
            [a.to_dict() for a in found[-10:]],
            ranked.also_wrong,
            None if attempt is None else attempt.to_dict(),
        )

    def _run(self, ctx: Context, code: str) -> Assessment:
        if code not in CHECKERS:  # a refusal no checker explains: its event is the evidence
            return Assessment(code, Verdict.UNKNOWN, [], {}, note("refused_with", code=code))
        try:
            return CHECKERS[code](ctx)
        except Exception as exc:  # a checker fault must not hide the other findings
            return Assessment(
                code,
                Verdict.UNKNOWN,
                [{"kind": "error", "error": f"{type(exc).__name__}: {exc}"}],
                {},
                note("checker_failed"),
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
        raise InvalidInputError(msg("error.diagnose.imei"))
    return out


def _events(
    uow: DiagnoseStores,
    t: Tenant,
    upn: str | None,
    devices: list[Device],
    serial: str | None,
    udid: str | None,
    at: datetime,
    user_udids: Sequence[str] = (),
) -> list[Event]:
    """The subject's events in the window around `at`, newest first: the user's, and those of the devices
    named or used by the user (a refused check-in names the device, not always the user)."""
    since, until = at - WINDOW, at + timedelta(hours=1)
    seen: dict[int | None, Event] = {}

    def read(*, upn: str | None = None, udid: str | None = None, serial: str | None = None) -> list[Event]:
        found = uow.events.query(t.id, since=since, until=until, limit=200, upn=upn, udid=udid, serial=serial)
        for e in found:
            seen[e.id] = e
        return found

    udids = [d.udid for d in devices]
    if upn:
        by_user = read(upn=upn.lower())
        if not devices:  # the user's devices: those their events and enrollments name
            udids += [u for u in dict.fromkeys([*(e.udid for e in by_user if e.udid), *user_udids])]
    for u in list(dict.fromkeys(udids))[:_MAX_DEVICES]:
        read(udid=u)
    for d in devices:
        if d.serial:
            read(serial=d.serial)
    if serial and not devices:
        read(serial=serial.strip().upper())
    if udid and not devices:
        read(udid=udid)
    return sorted(seen.values(), key=lambda e: (e.at, e.id or 0), reverse=True)


_MAX_DEVICES = 10  # a user's devices read for their events (the most recent first)
