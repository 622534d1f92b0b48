"""What every checker reads: the user, the devices, their enrollments and events, and facts derived from
them once per diagnosis (the policy decision, the certificate's findings, the DNS look-ups, the device's
Apple Business Manager record: :class:`AdeFacts`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pomona.domain.checks import CnameLookup, DiscoveryRecord, Finding
from pomona.domain.models import Device, Enrollment, EnrollmentStatus, Event, Outcome, Step, Tenant, User
from pomona.domain.policy import (
    Decision,
    Platform,
    Stage,
    decide,
    platform_of_product,
    platform_of_user_agent,
)
from pomona.domain.reasons import ReasonCode
from pomona.ports import (
    AbmAssignment,
    AbmDeviceRecord,
    AbmHistoryEntry,
    AbmProfileRecord,
    AbmTokenInfo,
    AbmView,
    EnrollmentStore,
    HasEvents,
    PushReachabilityStore,
    Resolver,
    UserStore,
    WellKnownFetcher,
)
from pomona.services.checks import DeviceCheck, DiscoverySettings, TenantCheck, lookup_cnames
from pomona.services.diagnose.funnel import Attempt
from pomona.services.policy import DecisionStores, PolicyService

WINDOW = timedelta(days=7)  # how far back the event log is read around the reported time
ADE_HISTORY = (
    200  # a device's newest ABM timeline entries read (oldest first, as AbmStore.history gives them)
)
ADE_EVENTS = 200  # a serial's newest events read, of any age, for its ADE steps
DEP_EVENTS = 20  # the tenant's newest ABM events of one reason code read (token, cursor, profile)
#: Apple's profile_status values that mean the device has a profile (services/abm.py's HELD).
PROFILE_HELD = frozenset({"assigned", "pushed"})


class CheckerStores(DecisionStores, HasEvents, Protocol):
    """What checkers read through ``ctx.uow`` (the diagnosis's read-only unit of work): the policy's facts
    for :meth:`Context.decision`, licensed users, a user's enrollments, a device's last pushes, the event
    log and Apple Business Manager's records (:meth:`Context.ade`)."""

    @property
    def users(self) -> UserStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...
    @property
    def abm_view(self) -> AbmView: ...


@dataclass
class AdeFacts:
    """What Apple Business Manager says of the device (by serial) and of the tenant's ABM set-up: its
    record as the last sync left it, its timeline, the tenant's tokens and ADE profiles, the profile Pomona
    wants on it, and its ADE steps at Pomona's enrollment endpoint (Step.ADE events, any age)."""

    serial: str | None
    record: AbmDeviceRecord | None
    history: list[AbmHistoryEntry]  # the newest ADE_HISTORY entries, oldest first
    tokens: list[AbmTokenInfo]
    profiles: list[AbmProfileRecord]
    assignment: AbmAssignment | None
    ade_events: list[Event]  # newest first
    enrolled: bool  # a device with this serial has an active Pomona enrollment

    @property
    def token(self) -> AbmTokenInfo | None:
        """The token whose server lists the device."""
        if self.record is None:
            return None
        return next((t for t in self.tokens if t.id == self.record.token_id), None)

    @property
    def listed(self) -> bool:
        """ABM lists the device under one of the tenant's servers now (not deleted)."""
        return self.record is not None and not self.record.deleted

    @property
    def state(self) -> tuple[str, str]:
        """(profile_uuid, profile_status) ABM has for the device now: its record as the last sync left it,
        or an assignment ABM accepted since (a timeline entry newer than the record)."""
        if not self.listed or self.record is None:
            return "", ""
        d, last = self.record.device, self.history[-1] if self.history else None
        if last is not None and last.op_type == "assign" and last.at >= self.record.updated_at:
            return last.profile_uuid, last.profile_status or "assigned"
        return d.profile_uuid, d.profile_status

    @property
    def shown(self) -> AbmProfileRecord | None:
        """The tenant's profile whose Apple UUID ABM shows on the device, if any."""
        uuid = self.state[0]
        return next((p for p in self.profiles if uuid and uuid in p.definitions.values()), None)

    @property
    def held(self) -> bool:
        """ABM shows a profile assigned (or pushed) on the device."""
        uuid, status = self.state
        return bool(uuid) and status in PROFILE_HELD

    @property
    def profile(self) -> AbmProfileRecord | None:
        """The profile the device has (ABM shows it), else the one Pomona wants on it (its assignment, else
        its token's default)."""
        if (shown := self.shown) is not None:
            return shown
        if self.assignment is not None:
            found = next((p for p in self.profiles if p.id == self.assignment.profile_id), None)
            if found is not None:
                return found
        token_id = self.record.token_id if self.record is not None else None
        defaults = [p for p in self.profiles if p.is_default]
        return next((p for p in defaults if p.token_id == token_id and token_id), None) or next(
            (p for p in defaults if p.token_id is None), None
        )

    def machine_info(self) -> Event | None:
        """The device's latest MachineInfo that Pomona's ADE endpoint verified."""
        return next(
            (
                e
                for e in self.ade_events
                if e.outcome is Outcome.OK and e.detail.get("stage") == "machineinfo"
            ),
            None,
        )


@dataclass
class Context:
    tenant: Tenant
    now: datetime
    at: datetime
    upn: str | None
    user: User | None
    devices: list[Device]
    enrollments: list[Enrollment]
    events: list[Event]
    uow: CheckerStores
    policy: PolicyService
    resolver: Resolver | None
    fetcher: WellKnownFetcher | None
    settings: DiscoverySettings
    push_cert: TenantCheck
    unresponsive: DeviceCheck
    attempt: Attempt | None = None  # the attempt the report is about (funnel.attempt_at)
    serial: str | None = None  # the serial the report names (a device Pomona may never have seen)
    _ade: AdeFacts | None = None
    _dep: dict[str, list[Event]] = field(default_factory=dict)
    _decision: Decision | None = None
    _decided: bool = False
    _cert: list[Finding] | None = None
    _cnames: dict[DiscoveryRecord, CnameLookup] = field(default_factory=dict)

    # -- derived facts -------------------------------------------------------------------------
    @property
    def device(self) -> Device | None:
        return self.devices[0] if self.devices else None

    def device_facts(self) -> tuple[Platform | None, str | None, str | None, str | None]:
        """Platform, OS version, serial and UDID: from the device record, else from the events."""
        d = self.device
        platform = platform_of_product(d.product_name) if d else None
        os_version = d.os_version if d else None
        serial = d.serial if d else None
        udid = d.udid if d else None
        # The device in question is the one the server refused, if any: read failed events first, and take
        # a serial or UDID only from those (an enrolled device of the same user is not the one failing).
        ordered = [e for e in self.events if e.outcome is Outcome.FAILED] + [
            e for e in self.events if e.outcome is not Outcome.FAILED
        ]
        for e in ordered:
            if platform is None and isinstance(e.detail.get("product"), str):
                platform = platform_of_product(str(e.detail["product"]))
            if os_version is None and isinstance(e.detail.get("os_version"), str):
                os_version = str(e.detail["os_version"])
            if (platform is None or os_version is None) and isinstance(e.detail.get("user_agent"), str):
                p2, v2 = platform_of_user_agent(str(e.detail["user_agent"]))
                platform, os_version = platform or p2, os_version or v2
            if e.outcome is Outcome.FAILED:
                serial = serial or e.serial
                udid = udid or e.udid
        return platform, os_version, serial, udid

    def decision(self) -> Decision | None:
        """The policy engine's verdict for this user and device now (Authenticate stage)."""
        if not self._decided:
            self._decided = True
            if self.user is not None or self.upn is not None:
                platform, os_version, serial, udid = self.device_facts()
                inp = self.policy.policy_input(
                    self.uow,
                    self.tenant,
                    stage=Stage.AUTHENTICATE,
                    user=self.user,
                    platform=platform,
                    os_version=os_version,
                    serial=serial,
                    udid=udid,
                )
                self._decision = decide(inp)
        return self._decision

    def cert_finding(self, code: ReasonCode) -> Finding | None:
        """The certificate lifecycle's finding with this code, if it holds now."""
        if self._cert is None:
            self._cert = list(self.push_cert(self.tenant.id, self.now))
        return next((f for f in self._cert if f.code is code), None)

    def cname(self, record: DiscoveryRecord) -> CnameLookup:
        """The look-up of one discovery CNAME (the resolver is asked once per diagnosis)."""
        if record not in self._cnames:
            assert self.resolver is not None
            (self._cnames[record],) = lookup_cnames(
                self.resolver, self.tenant.domain, self.settings, (record,)
            )
        return self._cnames[record]

    def ade_serial(self) -> str | None:
        """The serial the ADE checks are about: the one named, else the device's, else one the user's ADE
        steps carry."""
        serial = self.serial or self.device_facts()[2]
        if serial is None:
            serial = next((e.serial for e in self.events if e.step is Step.ADE and e.serial), None)
        return serial.strip().upper() if serial else None

    def ade(self) -> AdeFacts:
        """The device's ABM facts (:class:`AdeFacts`), read once per diagnosis, each query bounded."""
        if self._ade is None:
            abm, tid = self.uow.abm_view, self.tenant.id
            serial = self.ade_serial()
            record = None
            history: list[AbmHistoryEntry] = []
            assignment = None
            ade_events: list[Event] = []
            if serial is not None:
                record = next(iter(abm.devices(tid, serial=serial, limit=1)), None)
                history = abm.history(tid, serial, limit=ADE_HISTORY, newest=True)
                assignment = abm.assignment(tid, serial)
                found = self.uow.events.query(tid, serial=serial, limit=ADE_EVENTS)
                ade_events = [e for e in found if e.step is Step.ADE]
            serials = {serial} if serial else set()
            enrolled = any(
                e.status is EnrollmentStatus.ACTIVE
                for d in self.devices
                if d.serial and d.serial.upper() in serials
                for e in self.enrollments
                if e.device_id == d.id
            )
            self._ade = AdeFacts(
                serial,
                record,
                history,
                abm.tokens(tid),
                abm.profiles(tid),
                assignment,
                ade_events,
                enrolled,
            )
        return self._ade

    def dep_events(self, code: str) -> list[Event]:
        """The tenant's newest ABM events (Step.DEP) with this reason code in the window, newest first:
        token uploads, syncs and profile definitions name no device."""
        if code not in self._dep:
            found = self.uow.events.query(
                self.tenant.id,
                reason=code,
                since=self.at - WINDOW,
                until=self.at + timedelta(hours=1),
                limit=DEP_EVENTS,
            )
            self._dep[code] = [e for e in found if e.step is Step.DEP]
        return self._dep[code]

    def refusals(self, code: str) -> list[Event]:
        """This attempt's refusals with `code`, newest first (every refusal in the window when the log
        shows no attempt). An earlier attempt's refusal is history, not evidence about this one."""
        pool = self.events if self.attempt is None else list(reversed(self.attempt.refusals))
        return [e for e in pool if e.reason == code and e.outcome is Outcome.FAILED]

    def base_facts(self) -> dict[str, object]:
        platform, os_version, serial, udid = self.device_facts()
        serial = serial or self.serial
        return {
            "tenant": self.tenant.name,
            "upn": self.upn or "",
            "serial": serial or "",
            "udid": udid or "",
            "platform": "" if platform is None else platform.value,
            "os_version": os_version or "",
            "domain": self.tenant.domain,
            "topic": self.tenant.push_topic or "",
        }
