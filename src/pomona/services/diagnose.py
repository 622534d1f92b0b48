"""`pomona diagnose`: from a reported message and the live state, the cause that holds and its fix.

For each candidate cause (the reason codes the reported message maps to, or every checkable code when
no message is given) one checker looks at the live state and the event log and returns a verdict:

    proven     the live state (or the server's own refusal, still in force) shows this cause
    likely     the evidence points to it, but only the device can confirm it (device-only causes)
    ruled_out  the live state shows this cause does not hold (or no longer holds)
    unknown    the server cannot tell; the finding says what to ask the user

Findings the evidence points to (proven or likely) come first: the causes the reported message names
(in the founding document's order) before the ones Pomona adds behind the same message, proven before
likely; then what the server cannot tell; then what is ruled out. When nothing is proven or likely, the answer is UNKNOWN: it lists
what was checked and what to ask. A cause is never called proven on a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pomona.domain.errors import InvalidInputError, NotFoundError
from pomona.domain.models import Device, Enrollment, EnrollmentStatus, Event, Outcome, Step, Tenant, User
from pomona.domain.policy import (
    Decision,
    Platform,
    Stage,
    decide,
    platform_of_product,
    platform_of_user_agent,
)
from pomona.domain.reasons import ReasonCode as R
from pomona.ports import Resolver, UnitOfWork, WellKnownFetcher
from pomona.services.base import ServiceBase
from pomona.services.policy import PolicyService

WINDOW = timedelta(days=7)  # how far back the event log is read around the reported time
ABANDON_AFTER = timedelta(minutes=30)
EXPIRING_DAYS = 30
RECENT_CHECKIN = timedelta(days=7)
AWAITING_STUCK_AFTER = timedelta(hours=1)


class Verdict(StrEnum):
    PROVEN = "proven"
    LIKELY = "likely"
    UNKNOWN = "unknown"
    RULED_OUT = "ruled_out"


_RANK = {Verdict.PROVEN: 0, Verdict.LIKELY: 1, Verdict.UNKNOWN: 2, Verdict.RULED_OUT: 3}


@dataclass
class Finding:
    code: str
    verdict: Verdict
    evidence: list[dict[str, object]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    note: str = ""  # one English line on what the checker saw (the text comes from the knowledge base)


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
    uow: UnitOfWork
    policy: PolicyService
    resolver: Resolver | None
    fetcher: WellKnownFetcher | None
    settings: DiagnoseSettings
    unresponsive: Callable[[str, datetime], list[dict[str, object]]] | None = None
    cert_findings: Callable[[str, datetime], list[dict[str, Any]]] | None = None
    _decision: Decision | None = None
    _decided: bool = False

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

    def refusals(self, code: str) -> list[Event]:
        return [e for e in self.events if e.reason == code and e.outcome is Outcome.FAILED]

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


@dataclass(frozen=True)
class DiagnoseSettings:
    enrollment_target: str  # what EnterpriseEnrollment.<domain> must be a CNAME of
    registration_target: str  # what EnterpriseRegistration.<domain> must be a CNAME of
    well_known_url: str = "https://{domain}/.well-known/com.apple.remotemanagement"


def ev(e: Event) -> dict[str, object]:
    return {
        "kind": "event",
        "id": e.id,
        "at": e.at.isoformat(),
        "step": e.step.value,
        "outcome": e.outcome.value,
        "reason": e.reason,
        "upn": e.upn,
        "serial": e.serial,
        "udid": e.udid,
    }


Checker = Callable[[Context], Finding]
CHECKERS: dict[str, Checker] = {}


def checker(*codes: R) -> Callable[[Checker], Checker]:
    def reg(fn: Checker) -> Checker:
        for c in codes:
            CHECKERS[c.value] = fn
        return fn

    return reg


def _by_events(ctx: Context, code: str, *, device_only: bool = False) -> Finding:
    """A cause only the server's own refusals can show (protocol, token, push codes)."""
    hits = ctx.refusals(code)
    if hits:
        return Finding(
            code,
            Verdict.PROVEN,
            [ev(e) for e in hits[:5]],
            {"count": len(hits), "first": hits[-1].at.isoformat(), "last": hits[0].at.isoformat()},
            f"the server refused {len(hits)} time(s) with {code}",
        )
    return Finding(
        code,
        Verdict.UNKNOWN if device_only else Verdict.RULED_OUT,
        [],
        {},
        f"no {code} refusal for this user or device in the last {WINDOW.days} days",
    )


# --- tenant set-up --------------------------------------------------------------------------------
@checker(R.MDM_AUTHORITY_NOT_SET)
def _authority(ctx: Context) -> Finding:
    t = ctx.tenant
    ev_: list[dict[str, object]] = [{"kind": "tenant", "id": t.id, "mdm_authority": t.mdm_authority}]
    if not t.mdm_authority:
        return Finding(R.MDM_AUTHORITY_NOT_SET, Verdict.PROVEN, ev_, {}, "the tenant has no MDM authority")
    return Finding(R.MDM_AUTHORITY_NOT_SET, Verdict.RULED_OUT, ev_, {}, f"authority is {t.mdm_authority}")


def _push(code: R) -> Checker:
    def run(ctx: Context) -> Finding:
        t = ctx.tenant
        evidence: list[dict[str, object]] = [
            {
                "kind": "push_certificate",
                "topic": t.push_topic,
                "not_after": None if t.push_not_after is None else t.push_not_after.isoformat(),
            }
        ]
        facts: dict[str, object] = {
            "topic": t.push_topic or "",
            "expires": "" if t.push_not_after is None else f"{t.push_not_after:%Y-%m-%d}",
        }
        missing = t.push_cert_pem is None or t.push_not_after is None
        if code is R.APNS_CERT_MISSING:
            v = Verdict.PROVEN if missing else Verdict.RULED_OUT
            return Finding(
                code,
                v,
                evidence,
                facts,
                "no push certificate" if missing else "a push certificate is present",
            )
        if missing:
            return Finding(
                code, Verdict.RULED_OUT, evidence, facts, "no push certificate at all (see APNS_CERT_MISSING)"
            )
        assert t.push_not_after is not None
        left = t.push_not_after - ctx.now
        facts["days_left"] = max(0, left.days)
        if code is R.APNS_CERT_EXPIRED:
            v = Verdict.PROVEN if left <= timedelta(0) else Verdict.RULED_OUT
            return Finding(code, v, evidence, facts, f"expires {t.push_not_after:%Y-%m-%d}")
        if code is R.APNS_CERT_EXPIRING:
            v = Verdict.PROVEN if timedelta(0) < left <= timedelta(days=EXPIRING_DAYS) else Verdict.RULED_OUT
            return Finding(code, v, evidence, facts, f"{left.days} days left")
        hits = ctx.refusals(code.value)
        held = [
            f
            for f in (ctx.cert_findings(t.id, ctx.now) if ctx.cert_findings else [])
            if f["code"] == code.value
        ]
        if hits or held:
            return Finding(
                code,
                Verdict.PROVEN,
                evidence
                + [{"kind": "push_certificate_state", **(held[0].get("facts") or {})} for _ in held[:1]]
                + [ev(e) for e in hits[:5]],
                facts,
                "APNs rejected the certificate: the tenant's pushes are held until a renewed certificate is uploaded",
            )
        return Finding(
            code, Verdict.RULED_OUT, evidence, facts, "the topic is an MDM topic and APNs has not rejected it"
        )

    return run


for _c in (R.APNS_CERT_MISSING, R.APNS_CERT_EXPIRED, R.APNS_CERT_EXPIRING, R.APNS_CERT_INVALID):
    CHECKERS[_c.value] = _push(_c)


@checker(R.APNS_TOPIC_CHANGED)
def _topic_changed(ctx: Context) -> Finding:
    t = ctx.tenant
    orphaned = [
        e
        for e in ctx.enrollments
        if e.status is EnrollmentStatus.ACTIVE and t.push_topic and e.topic != t.push_topic
    ]
    if orphaned:
        return Finding(
            R.APNS_TOPIC_CHANGED,
            Verdict.PROVEN,
            [{"kind": "enrollment", "id": e.id, "topic": e.topic} for e in orphaned],
            {"old_topic": orphaned[0].topic, "topic": t.push_topic or ""},
            "the device enrolled under another push topic",
        )
    return Finding(
        R.APNS_TOPIC_CHANGED, Verdict.RULED_OUT, [], {}, "the device's topic is the tenant's topic"
    )


# --- directory ------------------------------------------------------------------------------------
def _directory(code: R) -> Checker:
    def run(ctx: Context) -> Finding:
        if ctx.upn is None:
            return Finding(code, Verdict.UNKNOWN, [], {}, "no user given: ask for the sign-in name")
        u = ctx.user
        seats = ctx.tenant.licence_seats
        # Counting licensed users reads the whole directory: only when it decides between the two codes.
        free = (
            max(0, seats - ctx.uow.users.licensed_count(ctx.tenant.id))
            if u is not None and not u.licensed
            else 0
        )
        facts: dict[str, object] = {"seats": seats, "free": free}
        evidence: list[dict[str, object]] = (
            []
            if u is None
            else [{"kind": "user", "id": u.id, "upn": u.upn, "enabled": u.enabled, "licensed": u.licensed}]
        )
        holds = {
            R.USER_NOT_FOUND: u is None,
            R.USER_DISABLED: u is not None and not u.enabled,
            R.USER_NOT_LICENSED: u is not None and u.enabled and not u.licensed and free > 0,
            R.LICENSES_EXHAUSTED: u is not None and not u.licensed and free == 0,
        }[code]
        evidence += [ev(e) for e in ctx.refusals(code.value)[:3]]
        return Finding(
            code,
            Verdict.PROVEN if holds else Verdict.RULED_OUT,
            evidence,
            facts,
            f"{code} {'holds' if holds else 'does not hold'} for {ctx.upn}",
        )

    return run


for _c in (R.USER_NOT_FOUND, R.USER_DISABLED, R.USER_NOT_LICENSED, R.LICENSES_EXHAUSTED):
    CHECKERS[_c.value] = _directory(_c)


# --- restrictions and re-enrollment (the policy engine's dry run) ---------------------------------
_NEEDS_PLATFORM = {R.PLATFORM_BLOCKED, R.OS_VERSION_TOO_LOW, R.OS_VERSION_TOO_HIGH, R.PERSONAL_DEVICE_BLOCKED}
_NEEDS_DEVICE = {R.DEVICE_BLOCKED, R.DEVICE_ENROLLED_TO_OTHER_USER}


def _policy(code: R) -> Checker:
    def run(ctx: Context) -> Finding:
        refusals = ctx.refusals(code.value)
        d = ctx.decision()
        platform, os_version, serial, udid = ctx.device_facts()
        facts: dict[str, object] = {}
        evidence: list[dict[str, object]] = [ev(e) for e in refusals[:5]]
        if d is not None:
            facts.update(d.facts)
            facts.update(
                count=d.device_count,
                limit=d.device_limit,
                restriction=(
                    d.limit_restriction.name
                    if code is R.DEVICE_LIMIT_REACHED and d.limit_restriction
                    else d.platform_restriction.name
                    if d.platform_restriction
                    else ""
                ),
                group=(d.platform_restriction.via_group if d.platform_restriction else None) or "",
            )
            evidence.append({"kind": "policy", "decision": d.to_dict()})
            if code is R.DEVICE_LIMIT_REACHED and ctx.user is not None:
                evidence += [
                    {"kind": "enrollment", "id": e.id, "udid": e.udid, "since": e.started_at.isoformat()}
                    for e in ctx.uow.enrollments.active_for_user(ctx.user.id)
                ]
        if d is not None and d.reason == code:
            return Finding(code, Verdict.PROVEN, evidence, facts, d.message)
        missing_facts = (code in _NEEDS_PLATFORM and platform is None) or (
            code in _NEEDS_DEVICE and not (serial or udid)
        )
        if refusals and (d is None or missing_facts):
            return Finding(
                code,
                Verdict.PROVEN,
                evidence,
                {**refusals[0].detail, **facts},
                f"the server refused with {code} at {refusals[0].at:%Y-%m-%d %H:%M} UTC",
            )
        if d is None or missing_facts:
            return Finding(
                code,
                Verdict.UNKNOWN,
                evidence,
                facts,
                "need the device's model and iOS version (or its serial number) to tell",
            )
        if refusals:
            return Finding(
                code,
                Verdict.RULED_OUT,
                evidence,
                facts,
                f"it was the cause at {refusals[0].at:%Y-%m-%d %H:%M} UTC but no longer holds",
            )
        return Finding(code, Verdict.RULED_OUT, evidence, facts, f"the policy does not refuse with {code}")

    return run


for _c in (
    R.PLATFORM_BLOCKED,
    R.PERSONAL_DEVICE_BLOCKED,
    R.OS_VERSION_TOO_LOW,
    R.OS_VERSION_TOO_HIGH,
    R.DEVICE_LIMIT_REACHED,
    R.DEVICE_BLOCKED,
    R.DEVICE_ENROLLED_TO_OTHER_USER,
):
    CHECKERS[_c.value] = _policy(_c)


@checker(R.MDM_PROFILE_ALREADY_INSTALLED)
def _already_installed(ctx: Context) -> Finding:
    active = [e for e in ctx.enrollments if e.status is EnrollmentStatus.ACTIVE]
    repeats = [e for e in ctx.events if e.step is Step.PROFILE and e.detail.get("repeat_download")]
    seen = [d for d in ctx.devices if d.last_seen_at and ctx.now - d.last_seen_at <= RECENT_CHECKIN]
    evidence = [ev(e) for e in repeats[:5]] + [
        {"kind": "enrollment", "id": e.id, "udid": e.udid} for e in active
    ]
    if active and seen:
        return Finding(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.LIKELY,
            evidence,
            {"last_seen": f"{seen[0].last_seen_at:%Y-%m-%d %H:%M}"},
            "the device is actively enrolled and checked in recently: its management profile is installed",
        )
    if repeats:
        return Finding(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.LIKELY,
            evidence,
            {"downloads": len(repeats)},
            "the profile was downloaded again while an enrollment was active, and no Authenticate followed",
        )
    if ctx.user is not None or ctx.devices:
        return Finding(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.RULED_OUT,
            evidence,
            {},
            "no active Pomona enrollment and no repeated download; another server's profile would be "
            "ENROLLED_WITH_OTHER_MDM",
        )
    return Finding(R.MDM_PROFILE_ALREADY_INSTALLED, Verdict.UNKNOWN, evidence, {}, "no user or device given")


@checker(R.ENROLLED_WITH_OTHER_MDM)
def _other_mdm(ctx: Context) -> Finding:
    return Finding(
        R.ENROLLED_WITH_OTHER_MDM,
        Verdict.UNKNOWN,
        [],
        {},
        "only the device shows another server's management profile",
    )


@checker(R.ENROLLMENT_ABANDONED)
def _abandoned(ctx: Context) -> Finding:
    served = [e for e in ctx.events if e.step is Step.PROFILE and e.outcome is Outcome.OK]
    if not served:
        return Finding(R.ENROLLMENT_ABANDONED, Verdict.RULED_OUT, [], {}, "no profile was served")
    last = served[0]
    later = [e for e in ctx.events if e.at >= last.at and e.step in (Step.SCEP, Step.AUTHENTICATE)]
    if not later and ctx.now - last.at >= ABANDON_AFTER:
        return Finding(
            R.ENROLLMENT_ABANDONED,
            Verdict.PROVEN,
            [ev(last)],
            {"served_at": f"{last.at:%Y-%m-%d %H:%M}"},
            "the profile was served and nothing followed",
        )
    return Finding(
        R.ENROLLMENT_ABANDONED,
        Verdict.RULED_OUT,
        [ev(last)] + [ev(e) for e in later[:3]],
        {},
        "the enrollment went on after the profile",
    )


@checker(R.PROFILE_INSTALL_FAILED)
def _install_failed(ctx: Context) -> Finding:
    served = [e for e in ctx.events if e.step is Step.PROFILE and e.outcome is Outcome.OK]
    server_refusals = [e for e in ctx.events if e.outcome is Outcome.FAILED and e.reason]
    if served:
        later = [
            e
            for e in ctx.events
            if e.at >= served[0].at and e.step in (Step.SCEP, Step.AUTHENTICATE) and e.outcome is Outcome.OK
        ]
        if later:
            return Finding(
                R.PROFILE_INSTALL_FAILED,
                Verdict.RULED_OUT,
                [ev(served[0]), ev(later[0])],
                {},
                "the device installed the profile: SCEP and Authenticate followed",
            )
        if not server_refusals:
            return Finding(
                R.PROFILE_INSTALL_FAILED,
                Verdict.LIKELY,
                [ev(served[0])],
                {},
                "the profile was served, the device never came back, and the server refused nothing",
            )
    return Finding(R.PROFILE_INSTALL_FAILED, Verdict.UNKNOWN, [], {}, "only the device can show this fault")


@checker(R.AWAITING_CONFIGURATION_STUCK)
def _stuck(ctx: Context) -> Finding:
    stuck = [
        e
        for e in ctx.enrollments
        if e.status is EnrollmentStatus.ACTIVE
        and e.awaiting_configuration
        and e.token_updated_at
        and ctx.now - e.token_updated_at > AWAITING_STUCK_AFTER
    ]
    if stuck:
        return Finding(
            R.AWAITING_CONFIGURATION_STUCK,
            Verdict.PROVEN,
            [
                {
                    "kind": "enrollment",
                    "id": e.id,
                    "since": e.token_updated_at.isoformat() if e.token_updated_at else None,
                }
                for e in stuck
            ],
            {},
            "held at Setup Assistant",
        )
    return Finding(
        R.AWAITING_CONFIGURATION_STUCK, Verdict.RULED_OUT, [], {}, "no device waits for DeviceConfigured"
    )


# --- DNS discovery --------------------------------------------------------------------------------
def _dns(code: R) -> Checker:
    def run(ctx: Context) -> Finding:
        if ctx.resolver is None:
            return Finding(code, Verdict.UNKNOWN, [], {}, "no DNS resolver configured")
        domain = ctx.tenant.domain
        reg = code is R.DNS_REGISTRATION_CNAME_MISSING
        name = f"{'enterpriseregistration' if reg else 'enterpriseenrollment'}.{domain}"
        expected = ctx.settings.registration_target if reg else ctx.settings.enrollment_target
        try:
            target = ctx.resolver.cname(name)
        except LookupError as exc:
            return Finding(
                code,
                Verdict.UNKNOWN,
                [{"kind": "dns", "name": name, "error": str(exc)}],
                {"name": name},
                "the name server did not answer",
            )
        evidence: list[dict[str, object]] = [
            {"kind": "dns", "name": name, "cname": target, "expected": expected}
        ]
        facts: dict[str, object] = {"name": name, "expected_target": expected, "found": target or ""}
        if code is R.DNS_ENROLLMENT_CNAME_WRONG:
            v = Verdict.PROVEN if target is not None and target != expected.lower() else Verdict.RULED_OUT
        else:
            v = Verdict.PROVEN if target is None else Verdict.RULED_OUT
        return Finding(code, v, evidence, facts, f"{name} CNAME {target or 'missing'} (expected {expected})")

    return run


for _c in (R.DNS_ENROLLMENT_CNAME_MISSING, R.DNS_ENROLLMENT_CNAME_WRONG, R.DNS_REGISTRATION_CNAME_MISSING):
    CHECKERS[_c.value] = _dns(_c)


@checker(R.WELL_KNOWN_DISCOVERY_FAILED)
def _well_known(ctx: Context) -> Finding:
    url = ctx.settings.well_known_url.format(domain=ctx.tenant.domain)
    if ctx.fetcher is None:
        return Finding(
            R.WELL_KNOWN_DISCOVERY_FAILED, Verdict.UNKNOWN, [], {"url": url}, "no HTTP client configured"
        )
    try:
        status, body = ctx.fetcher.fetch(url)
    except OSError as exc:
        return Finding(
            R.WELL_KNOWN_DISCOVERY_FAILED,
            Verdict.PROVEN,
            [{"kind": "http", "url": url, "error": str(exc)}],
            {"url": url},
            "unreachable",
        )
    import json

    ok = False
    if status == 200:
        try:
            doc = json.loads(body)
            ok = isinstance(doc, dict) and isinstance(doc.get("Servers"), list) and bool(doc["Servers"])
        except ValueError:
            ok = False
    v = Verdict.RULED_OUT if ok else Verdict.PROVEN
    return Finding(
        R.WELL_KNOWN_DISCOVERY_FAILED,
        v,
        [{"kind": "http", "url": url, "status": status}],
        {"url": url},
        f"HTTP {status}",
    )


# --- codes only the event log shows ---------------------------------------------------------------
for _c in (
    R.ENROLLMENT_TOKEN_INVALID,
    R.ENROLLMENT_TOKEN_EXPIRED,
    R.MALFORMED_REQUEST,
    R.SIGNATURE_INVALID,
    R.CERT_NOT_TRUSTED,
    R.CERT_DEVICE_MISMATCH,
    R.TOPIC_MISMATCH,
    R.UNKNOWN_ENROLLMENT,
    R.PUSH_TOKEN_UNREGISTERED,
    R.PUSH_REJECTED,
    R.PUSH_UNREACHABLE,
):
    CHECKERS[_c.value] = (lambda code: lambda ctx: _by_events(ctx, code))(_c.value)


@checker(R.DEVICE_UNRESPONSIVE)
def _unresponsive(ctx: Context) -> Finding:
    """Pushes APNs accepted and the device silent since (the push service keeps the reachability)."""
    if ctx.unresponsive is not None and ctx.devices:
        udids = {d.udid for d in ctx.devices}
        silent = [f for f in ctx.unresponsive(ctx.tenant.id, ctx.now) if f.get("udid") in udids]
        if silent:
            return Finding(
                R.DEVICE_UNRESPONSIVE,
                Verdict.PROVEN,
                [{"kind": "reachability", **silent[0]}],
                {"last_push": silent[0].get("last_push_at"), "last_seen": silent[0].get("last_seen_at")},
                "APNs accepted the pushes and the device has not come since",
            )
        return Finding(R.DEVICE_UNRESPONSIVE, Verdict.RULED_OUT, [], {}, "the device answers its pushes")
    return _by_events(ctx, R.DEVICE_UNRESPONSIVE.value)


for _c in (R.DEP_NETWORK_ERROR,):
    CHECKERS[_c.value] = (lambda code: lambda ctx: _by_events(ctx, code, device_only=True))(_c.value)
# The ABM (DEP_*) checkers slot in here with the Automated Device Enrollment issue; until then the
# server cannot tell, and says so.


_FUNNEL = (Step.PORTAL, Step.PROFILE, Step.SCEP, Step.AUTHENTICATE, Step.TOKENUPDATE, Step.COMMAND)


def funnel(events: list[Event], now: datetime) -> list[dict[str, object]]:
    """Enrollment attempts from the event log, oldest first: the steps each reached and where it stopped.

    An attempt starts at a portal or profile event (after the previous attempt got past the profile) and
    runs portal, profile, scep, authenticate, tokenupdate, first command."""
    attempts: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for e in sorted(events, key=lambda x: (x.at, x.id or 0)):
        if e.step not in _FUNNEL:
            continue
        starts = e.step in (Step.PORTAL, Step.PROFILE) and (
            cur is None
            or cur["failed"]
            or any(s not in ("portal", "profile") for s in cur["reached"])
            or (e.step is Step.PROFILE and "profile" in cur["reached"])
        )
        if starts:
            cur = {"started_at": e.at, "reached": [], "failed": None, "last_at": e.at}
            attempts.append(cur)
        if cur is None or (e.step is Step.COMMAND and "command" in cur["reached"]):
            continue
        cur["last_at"] = e.at
        if e.outcome is Outcome.FAILED:
            cur["failed"] = {"step": e.step.value, "reason": e.reason, "event": e.id}
        elif e.step.value not in cur["reached"]:
            cur["reached"].append(e.step.value)
    out = []
    for a in attempts:
        done = "tokenupdate" in a["reached"]
        stalled = not done and not a["failed"] and now - a["last_at"] >= ABANDON_AFTER
        out.append(
            {
                "started_at": a["started_at"].isoformat(),
                "reached": a["reached"],
                "failed": a["failed"],
                "state": "enrolled"
                if done
                else "failed"
                if a["failed"]
                else "stalled"
                if stalled
                else "in_progress",
            }
        )
    return out[-10:]


@dataclass
class Diagnosis:
    findings: list[Finding]
    checked: list[str]
    matched_messages: list[str]
    tenant: str
    upn: str | None
    device: dict[str, object] | None
    funnel: list[dict[str, object]] = field(default_factory=list)


@dataclass
class DiagnoseService(ServiceBase):
    policy: PolicyService
    resolver: Resolver | None
    fetcher: WellKnownFetcher | None
    settings: DiagnoseSettings
    unresponsive: Callable[[str, datetime], list[dict[str, object]]] | None = None
    cert_findings: Callable[[str, datetime], list[dict[str, Any]]] | None = None

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
        from pomona import knowledge

        now = self.clock.now()
        at = at or now
        matches = knowledge.match_message(message) if message else []
        if message and not matches:
            candidates: list[str] = []
        elif matches:
            candidates = []
            for m in matches:  # the document's causes first, in its order, then what Pomona adds
                candidates += [c for c in m.codes if c not in candidates]
            for m in matches:
                candidates += [c for c in m.also if c not in candidates]
        else:
            # Everything checkable, except what only a specific report calls for: the expiry warning is
            # health's business, and the well-known document matters for account-driven enrollment only.
            candidates = [
                c for c in CHECKERS if c not in ("APNS_CERT_EXPIRING", "WELL_KNOWN_DISCOVERY_FAILED")
            ]
        with self.db.unit_of_work(readonly=True) as uow:
            t = uow.tenants.by_name(tenant_ref) or uow.tenants.get(tenant_ref)
            if t is None:
                raise NotFoundError(f"no tenant {tenant_ref!r}")
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
                self.unresponsive,
                self.cert_findings,
            )
            findings = [self._run(ctx, c) for c in candidates if c in CHECKERS]
        order = {c: i for i, c in enumerate(candidates)}
        primary = {c for m in matches for c in m.codes} or set(candidates)

        def rank(f: Finding) -> tuple[int, int, int, int]:
            # A cause the message names (the document's list) outranks what Pomona adds behind the same
            # message (e.g. ENROLLMENT_ABANDONED, a symptom), as long as the evidence points to it.
            found = f.verdict in (Verdict.PROVEN, Verdict.LIKELY)
            return (
                0 if found else _RANK[f.verdict],
                0 if f.code in primary else 1,
                _RANK[f.verdict],
                order.get(f.code, 999),
            )

        findings.sort(key=rank)
        base = ctx.base_facts()
        for f in findings:
            f.facts = {**base, **{k: v for k, v in f.facts.items() if v is not None}}
        if not any(f.verdict in (Verdict.PROVEN, Verdict.LIKELY) for f in findings):
            findings.insert(
                0,
                Finding(
                    R.UNKNOWN, Verdict.UNKNOWN, [], base, "no cause could be proven from the server's side"
                ),
            )
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

    def _run(self, ctx: Context, code: str) -> Finding:
        try:
            return CHECKERS[code](ctx)
        except Exception as exc:  # a checker fault must not hide the other findings
            return Finding(
                code,
                Verdict.UNKNOWN,
                [{"kind": "error", "error": f"{type(exc).__name__}: {exc}"}],
                {},
                "the checker failed",
            )


def _find_devices(
    uow: UnitOfWork, t: Tenant, serial: str | None, udid: str | None, imei: str | None
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
    uow: UnitOfWork,
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


def to_json(d: Diagnosis, lang: str) -> dict[str, object]:
    """The stable, documented JSON shape (docs/diagnose.md): findings ranked, the first is the answer."""
    from pomona import knowledge

    out = []
    for f in d.findings:
        text = knowledge.text_for(f.code, lang, **f.facts)
        out.append(
            {
                "code": f.code,
                "verdict": f.verdict.value,
                "title": text.title,
                "cause": text.cause,
                "device_only": knowledge.device_only(f.code),
                "observed": f.note,
                "evidence": f.evidence,
                "resolution": list(text.resolution),
            }
        )
    top = out[0]
    first_steps = list(knowledge.text_for(d.findings[0].code, lang, **d.findings[0].facts).resolution)
    unknown = top["code"] == R.UNKNOWN
    return {
        "tenant": d.tenant,
        "upn": d.upn,
        "device": d.device,
        "lang": lang,
        "matched_messages": d.matched_messages,
        "answer": {
            "code": top["code"],
            "verdict": top["verdict"],
            "title": top["title"],
            "first_step": first_steps[0] if first_steps else "",
        },
        "findings": out,
        "funnel": d.funnel,
        "checked": d.checked,
        "ask": _questions(lang) if unknown else [],
    }


def _questions(lang: str) -> list[str]:
    from pomona.i18n import t

    return [t(f"diagnose.ask.{i}", lang) for i in range(1, 6)]
