"""What every checker reads: the user, the devices, their enrollments and events, and facts derived from
them once per diagnosis (the policy decision, the certificate's findings, the DNS look-ups)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pomona.domain.checks import CnameLookup, DiscoveryRecord, Finding
from pomona.domain.models import Device, Enrollment, Event, Outcome, Tenant, User
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
    EnrollmentStore,
    PushReachabilityStore,
    Resolver,
    UserStore,
    WellKnownFetcher,
)
from pomona.services.checks import DeviceCheck, DiscoverySettings, TenantCheck, lookup_cnames
from pomona.services.diagnose.funnel import Attempt
from pomona.services.policy import DecisionStores, PolicyService

WINDOW = timedelta(days=7)  # how far back the event log is read around the reported time


class CheckerStores(DecisionStores, Protocol):
    """What checkers read through ``ctx.uow`` (the diagnosis's read-only unit of work): the policy's facts
    for :meth:`Context.decision`, licensed users, a user's enrollments and a device's last pushes."""

    @property
    def users(self) -> UserStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...


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

    def refusals(self, code: str) -> list[Event]:
        """This attempt's refusals with `code`, newest first (every refusal in the window when the log
        shows no attempt). An earlier attempt's refusal is history, not evidence about this one."""
        pool = self.events if self.attempt is None else list(reversed(self.attempt.refusals))
        return [e for e in pool if e.reason == code and e.outcome is Outcome.FAILED]

    def base_facts(self) -> dict[str, object]:
        platform, os_version, serial, udid = self.device_facts()
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
