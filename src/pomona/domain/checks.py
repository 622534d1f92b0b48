"""The rules of the tenant checks, pure: facts in, typed findings out.

One `Finding` is one problem that holds now: a reason code, a severity, the thing it is about (the
`subject`, which with the code identifies the finding across runs) and the facts the knowledge base fills
its text with. Health keeps findings with first and last seen and sends new ones to the tenant's webhook;
diagnose turns them into verdicts; the certificate lifecycle shows them. They all get them from here, so a
threshold or a severity is decided once.

Gathering the facts (a store, the DNS) is `services/checks.py`'s job; nothing here does I/O.

Expiry: one table for every certificate and token that expires (the APNs push certificate now, ABM
server tokens later). `EXPIRY_STEPS` lists the days before expiry at which the expiring finding is raised;
the finding at a step has its own subject (``expiry:<days>d``), so crossing a step makes a new finding and
the webhook hears about it once per step: 30 and 14 days ahead as a warning, 7 days and 1 day ahead as
critical. At or after the expiry instant the expired code replaces it (critical).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from pomona.domain.reasons import ReasonCode

TENANT = "tenant"  # the subject of a finding about the tenant as a whole
AWAITING_STUCK_AFTER = timedelta(hours=1)  # at Setup Assistant longer than this: AWAITING_CONFIGURATION_STUCK


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Sort key: critical first."""
        return _RANK[self]


_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    """A problem that holds now. `(code, subject)` identifies it from one check run to the next."""

    code: ReasonCode
    severity: Severity
    subject: str = TENANT
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts", MappingProxyType(dict(self.facts)))

    @property
    def key(self) -> tuple[str, str]:
        return (self.code.value, self.subject)

    def to_json(self) -> dict[str, object]:
        """The shape the API, the CLI and the webhook print: code, severity, subject, facts."""
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "subject": self.subject,
            "facts": dict(self.facts),
        }


@dataclass(frozen=True)
class RecordedFinding:
    """A finding as health keeps it: when it was first and last seen (it is open until it goes away)."""

    finding: Finding
    first_seen: datetime
    last_seen: datetime

    def to_json(self) -> dict[str, object]:
        return {
            **self.finding.to_json(),
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


# --- tenant set-up ----------------------------------------------------------------------------------
def authority_findings(mdm_authority: str | None) -> list[Finding]:
    """MDM_AUTHORITY_NOT_SET while the tenant has not chosen its MDM authority."""
    return [] if mdm_authority else [Finding(ReasonCode.MDM_AUTHORITY_NOT_SET, Severity.CRITICAL)]


def licence_findings(seats: int, licensed: int, unlicensed_users: Callable[[], int]) -> list[Finding]:
    """LICENSES_EXHAUSTED when every seat is taken and enabled users are still waiting for one
    (`unlicensed_users` counts them; it is asked only when no seat is free)."""
    if seats - licensed > 0:
        return []
    waiting = unlicensed_users()
    if not waiting:
        return []
    return [
        Finding(
            ReasonCode.LICENSES_EXHAUSTED,
            Severity.WARNING,
            facts={"seats": seats, "unlicensed_users": waiting},
        )
    ]


# --- expiry -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpiryStep:
    days: int
    severity: Severity


EXPIRY_STEPS: tuple[ExpiryStep, ...] = (
    ExpiryStep(30, Severity.WARNING),
    ExpiryStep(14, Severity.WARNING),
    ExpiryStep(7, Severity.CRITICAL),
    ExpiryStep(1, Severity.CRITICAL),
)


def expiry_step(left: timedelta) -> ExpiryStep | None:
    """The nearest step at or beyond the time left (None: not yet within the first step, or expired)."""
    if left <= timedelta(0):
        return None
    within = [s for s in EXPIRY_STEPS if left <= timedelta(days=s.days)]
    return min(within, key=lambda s: s.days) if within else None


def check_expiry(
    not_after: datetime,
    now: datetime,
    *,
    expiring: ReasonCode,
    expired: ReasonCode,
    facts: Mapping[str, object],
    subject: str = TENANT,
) -> Finding | None:
    """The expired finding once `not_after` is reached, the expiring one at each of `EXPIRY_STEPS`.

    The facts gain ``not_after`` (ISO), ``expires`` (the date) and, while expiring, ``days_left`` (whole
    days) and ``threshold_days`` (the step)."""
    left = not_after - now
    base = {**facts, "not_after": not_after.isoformat(), "expires": f"{not_after:%Y-%m-%d}"}
    if left <= timedelta(0):
        return Finding(expired, Severity.CRITICAL, subject, base)
    step = expiry_step(left)
    if step is None:
        return None
    return Finding(
        expiring,
        step.severity,
        f"expiry:{step.days}d" if subject == TENANT else f"{subject}:expiry:{step.days}d",
        {**base, "days_left": left.days, "threshold_days": step.days},
    )


# --- the APNs push certificate ----------------------------------------------------------------------
@dataclass(frozen=True)
class PushCertState:
    """What the server knows of a tenant's push certificate."""

    present: bool  # a certificate (and its expiry) is stored
    topic: str | None = None
    not_after: datetime | None = None
    apple_id: str | None = None
    refused_at: datetime | None = None  # APNs refused the certificate (pushes are held)
    refused_reason: str | None = None
    reenroll_required: int = 0  # enrollments cut off by a confirmed replacement (another topic)


def push_cert_findings(state: PushCertState, now: datetime) -> list[Finding]:
    """APNS_CERT_MISSING; else APNS_CERT_EXPIRING at each expiry step and APNS_CERT_EXPIRED after,
    APNS_CERT_INVALID while APNs refuses it, APNS_TOPIC_CHANGED while enrollments must re-enroll."""
    if not state.present or state.not_after is None:
        return [Finding(ReasonCode.APNS_CERT_MISSING, Severity.CRITICAL)]
    out: list[Finding] = []
    expiry = check_expiry(
        state.not_after,
        now,
        expiring=ReasonCode.APNS_CERT_EXPIRING,
        expired=ReasonCode.APNS_CERT_EXPIRED,
        facts={"topic": state.topic, "apple_id": state.apple_id},
    )
    if expiry is not None:
        out.append(expiry)
    if state.refused_at is not None:
        out.append(
            Finding(
                ReasonCode.APNS_CERT_INVALID,
                Severity.CRITICAL,
                facts={
                    "topic": state.topic,
                    "since": state.refused_at.isoformat(),
                    "apns": state.refused_reason,
                },
            )
        )
    if state.reenroll_required:
        out.append(
            Finding(
                ReasonCode.APNS_TOPIC_CHANGED,
                Severity.CRITICAL,
                facts={"topic": state.topic, "enrollments_to_re_enroll": state.reenroll_required},
            )
        )
    return out


# --- DNS discovery ------------------------------------------------------------------------------------
class DiscoveryRecord(StrEnum):
    """The CNAMEs devices look up to find the server from the user's domain."""

    ENROLLMENT = "enterpriseenrollment"
    REGISTRATION = "enterpriseregistration"


@dataclass(frozen=True)
class CnameLookup:
    """One look-up: what the name points to (None: no CNAME), or why the name server did not answer."""

    record: DiscoveryRecord
    name: str  # e.g. enterpriseenrollment.acme.example
    expected: str  # the host it must point to
    found: str | None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.error is None


def dns_findings(lookups: Iterable[CnameLookup]) -> list[Finding]:
    """DNS_*_CNAME_MISSING for a name without a CNAME, DNS_ENROLLMENT_CNAME_WRONG for one pointing
    elsewhere. A name server that did not answer proves nothing either way: no finding."""
    out: list[Finding] = []
    for lk in lookups:
        if not lk.answered:
            continue
        subject = f"dns:{lk.name}"
        if lk.found is None:
            code = (
                ReasonCode.DNS_ENROLLMENT_CNAME_MISSING
                if lk.record is DiscoveryRecord.ENROLLMENT
                else ReasonCode.DNS_REGISTRATION_CNAME_MISSING
            )
            out.append(
                Finding(code, Severity.WARNING, subject, {"name": lk.name, "expected_target": lk.expected})
            )
        elif lk.record is DiscoveryRecord.ENROLLMENT and lk.found != lk.expected.lower():
            out.append(
                Finding(
                    ReasonCode.DNS_ENROLLMENT_CNAME_WRONG,
                    Severity.WARNING,
                    subject,
                    {"name": lk.name, "found": lk.found, "expected_target": lk.expected},
                )
            )
    return out


# --- devices ----------------------------------------------------------------------------------------
def unresponsive_findings(rows: Iterable[Mapping[str, object]]) -> list[Finding]:
    """DEVICE_UNRESPONSIVE per device the push service found silent (its rows: udid, last push, last
    seen...): a warning about ``device:<udid>``, the row as facts."""
    return [
        Finding(
            ReasonCode.DEVICE_UNRESPONSIVE,
            Severity.WARNING,
            f"device:{row.get('udid')}",
            {k: v for k, v in row.items() if k != "code"},
        )
        for row in rows
    ]


def device_subjects(udid: str, serial: str | None) -> frozenset[str]:
    """The subjects of the findings about one device: by UDID (held at Setup Assistant, unresponsive) and
    by serial at ABM (assigned to another MDM server, assignment failing): its page shows them."""
    return frozenset({f"device:{udid}", *([f"abm:device:{serial}"] if serial else [])})


def stuck_findings(stuck: Iterable[tuple[str, str | None, datetime]]) -> list[Finding]:
    """AWAITING_CONFIGURATION_STUCK per (udid, serial, since) held at Setup Assistant too long: the
    facts name the device, so the fix (``pomona abm release --serial``) can be shown."""
    return [
        Finding(
            ReasonCode.AWAITING_CONFIGURATION_STUCK,
            Severity.WARNING,
            f"device:{udid}",
            {"udid": udid, "serial": serial, "since": since.isoformat()},
        )
        for udid, serial, since in stuck
    ]


# --- Apple Business Manager server tokens ------------------------------------------------------------
@dataclass(frozen=True)
class AbmTokenState:
    """What health needs of one ABM server token."""

    name: str
    expiry: datetime
    last_error: str | None = None  # the reason code of the last failed sync
    last_error_at: datetime | None = None
    last_sync_at: datetime | None = None


#: Sync failures that heal themselves (the sync fell back to a full fetch): not a standing finding.
_HEALED = frozenset({ReasonCode.DEP_CURSOR_EXPIRED.value})


def abm_token_findings(tokens: Iterable[AbmTokenState], now: datetime) -> list[Finding]:
    """Per token: DEP_TOKEN_EXPIRED at each expiry step (the first 30 days ahead, a warning) and once
    expired; and the reason code of its last sync while that sync failed (terms, revoked token ...)."""
    out: list[Finding] = []
    for t in tokens:
        subject = f"abm:{t.name}"
        expiry = check_expiry(
            t.expiry,
            now,
            expiring=ReasonCode.DEP_TOKEN_EXPIRED,
            expired=ReasonCode.DEP_TOKEN_EXPIRED,
            facts={"token": t.name},
            subject=subject,
        )
        if expiry is not None:
            out.append(expiry)
        if t.last_error and t.last_error not in _HEALED and t.last_error in ReasonCode.__members__:
            if expiry is not None and t.last_error == ReasonCode.DEP_TOKEN_EXPIRED.value:
                continue
            out.append(
                Finding(
                    ReasonCode(t.last_error),
                    Severity.CRITICAL,
                    f"{subject}:sync",
                    {
                        "token": t.name,
                        "since": None if t.last_error_at is None else t.last_error_at.isoformat(),
                        "last_sync": None if t.last_sync_at is None else t.last_sync_at.isoformat(),
                    },
                )
            )
    return out


# --- the deployment (pomona doctor) -------------------------------------------------------------------
CLOCK_SKEW_LIMIT = timedelta(minutes=5)  # past it, certificate validity and signed times go wrong
#: Why a device refuses the server's TLS certificate (net/probe.py reads it from OpenSSL's verify code).
TlsProblem = Literal["self_signed", "untrusted", "expired", "name_mismatch"]
PUBLIC_URL = "public_url"  # the subject of the public URL's findings


@dataclass(frozen=True)
class UrlProbe:
    """What a device would see at the public URL: whether it answered, the TLS certificate's verdict
    and expiry (https), the status of ``/healthz`` and the server's ``Date`` header."""

    url: str
    reached: bool
    error: str | None = None  # why it was not reached (connection refused, timeout, DNS)
    tls_problem: TlsProblem | None = None
    tls_detail: str | None = None  # OpenSSL's words for the problem
    cert_not_after: datetime | None = None
    status: int | None = None  # of GET /healthz
    server_date: datetime | None = None


def public_url_findings(probe: UrlProbe, now: datetime, *, plain_http_remote: bool) -> list[Finding]:
    """PUBLIC_URL_NOT_HTTPS for http:// off loopback; PUBLIC_URL_UNREACHABLE when it does not answer
    (or /healthz is not 200); TLS_CERT_INVALID when a device would refuse its certificate (self-signed,
    an issuer not trusted, expired, another name); TLS_CERT_EXPIRING at the expiry steps (30 days first)."""
    facts: dict[str, object] = {"url": probe.url}
    out: list[Finding] = []
    if plain_http_remote:
        out.append(Finding(ReasonCode.PUBLIC_URL_NOT_HTTPS, Severity.CRITICAL, PUBLIC_URL, facts))
    if not probe.reached:
        return [*out, Finding(ReasonCode.PUBLIC_URL_UNREACHABLE, Severity.CRITICAL, PUBLIC_URL,
                              {**facts, "error": probe.error})]  # fmt: skip
    if probe.tls_problem is not None:
        out.append(
            Finding(
                ReasonCode.TLS_CERT_INVALID,
                Severity.CRITICAL,
                PUBLIC_URL,
                {**facts, "problem": probe.tls_problem, "detail": probe.tls_detail},
            )
        )
    elif probe.cert_not_after is not None:
        expiring = check_expiry(
            probe.cert_not_after,
            now,
            expiring=ReasonCode.TLS_CERT_EXPIRING,
            expired=ReasonCode.TLS_CERT_INVALID,
            facts=facts,
            subject=PUBLIC_URL,
        )
        if expiring is not None:
            out.append(expiring)
    if probe.status != 200:
        out.append(
            Finding(ReasonCode.PUBLIC_URL_UNREACHABLE, Severity.CRITICAL, PUBLIC_URL,
                    {**facts, "error": f"GET /healthz answered HTTP {probe.status}"})
        )  # fmt: skip
    return out


def clock_findings(server_date: datetime, now: datetime) -> list[Finding]:
    """CLOCK_SKEW when this machine's clock and the server's ``Date`` differ by more than 5 minutes."""
    skew = abs((now - server_date).total_seconds())
    if skew <= CLOCK_SKEW_LIMIT.total_seconds():
        return []
    return [
        Finding(
            ReasonCode.CLOCK_SKEW,
            Severity.CRITICAL,
            "clock",
            {"skew_seconds": int(skew), "server_date": server_date.isoformat(), "local": now.isoformat()},
        )
    ]


def migration_findings(current: str | None, head: str) -> list[Finding]:
    """MIGRATIONS_PENDING while the database's schema revision is not the code's head."""
    if current == head:
        return []
    return [
        Finding(
            ReasonCode.MIGRATIONS_PENDING, Severity.CRITICAL, "database", {"current": current, "head": head}
        )
    ]


def key_file_findings(path: str, mode: int) -> list[Finding]:
    """SERVER_KEY_EXPOSED when the server key file (or the data folder holding it) can be read or
    entered by the group or others (`mode` is its permission bits)."""
    if not mode & 0o077:
        return []
    return [
        Finding(
            ReasonCode.SERVER_KEY_EXPOSED,
            Severity.CRITICAL,
            f"file:{path}",
            {"path": path, "mode": f"{mode:o}"},
        )
    ]
