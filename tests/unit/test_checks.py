"""The tenant checks' rules (domain/checks.py) and their DNS look-up, without a database: facts in, findings out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta

import pytest

from pomona.domain.checks import (
    EXPIRY_STEPS,
    TENANT,
    CnameLookup,
    DiscoveryRecord,
    Finding,
    PushCertState,
    Severity,
    authority_findings,
    check_expiry,
    dns_findings,
    licence_findings,
    push_cert_findings,
    stuck_findings,
    unresponsive_findings,
)
from pomona.domain.reasons import ReasonCode as R
from pomona.ports import Resolver
from pomona.services.checks import DiscoverySettings, lookup_cnames, unresponsive_check

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)  # the fixed clock of every test here
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
TOPIC = "com.apple.mgmt.External.1f2e"


def cert(left: timedelta, **kw: object) -> PushCertState:
    return PushCertState(True, TOPIC, NOW + left, "admin@acme.example", **kw)  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code.value for f in findings]


class TestExpiryTable:
    @pytest.mark.parametrize(
        ("left", "code", "severity", "subject"),
        [
            (31 * DAY, None, None, None),
            (30 * DAY + SECOND, None, None, None),
            (30 * DAY, R.APNS_CERT_EXPIRING, Severity.WARNING, "expiry:30d"),
            (14 * DAY + SECOND, R.APNS_CERT_EXPIRING, Severity.WARNING, "expiry:30d"),
            (14 * DAY, R.APNS_CERT_EXPIRING, Severity.WARNING, "expiry:14d"),
            (7 * DAY + SECOND, R.APNS_CERT_EXPIRING, Severity.WARNING, "expiry:14d"),
            (7 * DAY, R.APNS_CERT_EXPIRING, Severity.CRITICAL, "expiry:7d"),
            (DAY + SECOND, R.APNS_CERT_EXPIRING, Severity.CRITICAL, "expiry:7d"),
            (DAY, R.APNS_CERT_EXPIRING, Severity.CRITICAL, "expiry:1d"),
            (SECOND, R.APNS_CERT_EXPIRING, Severity.CRITICAL, "expiry:1d"),
            (timedelta(0), R.APNS_CERT_EXPIRED, Severity.CRITICAL, TENANT),
            (-40 * DAY, R.APNS_CERT_EXPIRED, Severity.CRITICAL, TENANT),
        ],
    )
    def test_push_certificate_at_the_boundaries(
        self, left: timedelta, code: R | None, severity: Severity | None, subject: str | None
    ) -> None:
        """Each step starts at exactly its number of days left; expiry is at the instant itself."""
        found = push_cert_findings(cert(left), NOW)
        if code is None:
            assert found == []
            return
        (f,) = found
        assert (f.code, f.severity, f.subject) == (code, severity, subject)

    def test_steps_are_the_notification_days(self) -> None:
        """The table is 30/14/7/1 days, warning before a week, critical from a week on."""
        assert [(s.days, s.severity) for s in EXPIRY_STEPS] == [
            (30, Severity.WARNING),
            (14, Severity.WARNING),
            (7, Severity.CRITICAL),
            (1, Severity.CRITICAL),
        ]

    def test_each_step_is_its_own_finding(self) -> None:
        """Crossing a step changes the subject, so health sees a new finding (and the webhook hears it)."""
        subjects = {push_cert_findings(cert(d * DAY), NOW)[0].subject for d in (20, 10, 3, 0.5)}
        assert subjects == {"expiry:30d", "expiry:14d", "expiry:7d", "expiry:1d"}

    def test_expiring_facts(self) -> None:
        """The facts name the topic, the date, the whole days left and the step."""
        (f,) = push_cert_findings(cert(10 * DAY + timedelta(hours=5)), NOW)
        assert dict(f.facts) == {
            "topic": TOPIC,
            "apple_id": "admin@acme.example",
            "not_after": (NOW + 10 * DAY + timedelta(hours=5)).isoformat(),
            "expires": "2025-03-11",
            "days_left": 10,
            "threshold_days": 14,
        }

    def test_other_expiring_things_reuse_the_table(self) -> None:
        """A token with its own codes and subject gets the same steps, the subject prefixed."""
        f = check_expiry(
            NOW + 5 * DAY,
            NOW,
            expiring=R.DEP_TOKEN_EXPIRED,
            expired=R.DEP_TOKEN_EXPIRED,
            facts={},
            subject="abm:server-1",
        )
        assert f is not None and (f.severity, f.subject) == (Severity.CRITICAL, "abm:server-1:expiry:7d")


class TestPushCertificate:
    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            (PushCertState(False), ["APNS_CERT_MISSING"]),
            (PushCertState(True, TOPIC, None), ["APNS_CERT_MISSING"]),
            (PushCertState(False, refused_at=NOW, reenroll_required=3), ["APNS_CERT_MISSING"]),
            (cert(300 * DAY), []),
            (cert(300 * DAY, refused_at=NOW - DAY, refused_reason="BadCertificate"), ["APNS_CERT_INVALID"]),
            (cert(300 * DAY, reenroll_required=2), ["APNS_TOPIC_CHANGED"]),
            (
                cert(-DAY, refused_at=NOW, reenroll_required=1),
                ["APNS_CERT_EXPIRED", "APNS_CERT_INVALID", "APNS_TOPIC_CHANGED"],
            ),
        ],
    )
    def test_codes(self, state: PushCertState, expected: list[str]) -> None:
        """A missing certificate is only that; otherwise expiry, APNs' refusal and re-enrollment add up."""
        assert codes(push_cert_findings(state, NOW)) == expected

    def test_refusal_and_topic_facts(self) -> None:
        """APNS_CERT_INVALID says since when and why; APNS_TOPIC_CHANGED how many must re-enroll."""
        invalid, topic = push_cert_findings(
            cert(300 * DAY, refused_at=NOW - DAY, refused_reason="BadCertificate", reenroll_required=4), NOW
        )
        assert (invalid.severity, dict(invalid.facts)) == (
            Severity.CRITICAL,
            {"topic": TOPIC, "since": (NOW - DAY).isoformat(), "apns": "BadCertificate"},
        )
        assert (topic.severity, topic.facts["enrollments_to_re_enroll"]) == (Severity.CRITICAL, 4)


class TestFinding:
    def test_frozen(self) -> None:
        """A finding cannot be changed once made, its facts included."""
        f = Finding(R.APNS_CERT_MISSING, Severity.CRITICAL, facts={"a": 1})
        with pytest.raises(FrozenInstanceError):
            f.severity = Severity.INFO  # type: ignore[misc]
        with pytest.raises(TypeError):
            f.facts["a"] = 2  # type: ignore[index]

    def test_json(self) -> None:
        """The printed shape is code, severity, subject and facts, all plain JSON values."""
        f = Finding(R.DEVICE_UNRESPONSIVE, Severity.WARNING, "device:U1", {"udid": "U1"})
        assert f.to_json() == {
            "code": "DEVICE_UNRESPONSIVE",
            "severity": "warning",
            "subject": "device:U1",
            "facts": {"udid": "U1"},
        }
        assert type(f.to_json()["facts"]) is dict

    def test_severity_order(self) -> None:
        """Critical sorts before warning before info."""
        assert sorted(Severity, key=lambda s: s.rank) == [Severity.CRITICAL, Severity.WARNING, Severity.INFO]


class FakeResolver:
    """The ports.Resolver contract over a fixed zone: a name maps to a target, None, or a failure."""

    def __init__(self, zone: Mapping[str, str | None | Exception]) -> None:
        self.zone = zone
        self.asked: list[str] = []

    def cname(self, name: str) -> str | None:
        self.asked.append(name)
        answer = self.zone.get(name)
        if isinstance(answer, Exception):
            raise answer
        return answer


SETTINGS = DiscoverySettings("MDM.pomona.example", "mdm.pomona.example")
ENR = "enterpriseenrollment.acme.example"
REG = "enterpriseregistration.acme.example"


class TestDns:
    @pytest.mark.parametrize(
        ("zone", "expected"),
        [
            ({ENR: "mdm.pomona.example", REG: "mdm.pomona.example"}, []),
            ({REG: "mdm.pomona.example"}, ["DNS_ENROLLMENT_CNAME_MISSING"]),
            ({ENR: "mdm.pomona.example"}, ["DNS_REGISTRATION_CNAME_MISSING"]),
            ({}, ["DNS_ENROLLMENT_CNAME_MISSING", "DNS_REGISTRATION_CNAME_MISSING"]),
            ({ENR: "old.mdm.example", REG: "mdm.pomona.example"}, ["DNS_ENROLLMENT_CNAME_WRONG"]),
            ({ENR: "mdm.pomona.example", REG: "elsewhere.example"}, []),
            ({ENR: LookupError("timeout"), REG: "mdm.pomona.example"}, []),
            ({ENR: LookupError("timeout"), REG: LookupError("refused")}, []),
            ({ENR: LookupError("timeout")}, ["DNS_REGISTRATION_CNAME_MISSING"]),
        ],
    )
    def test_outcomes(self, zone: Mapping[str, str | None | Exception], expected: list[str]) -> None:
        """Missing and wrong CNAMEs are findings; a name server that does not answer proves nothing."""
        resolver: Resolver = FakeResolver(zone)
        assert codes(dns_findings(lookup_cnames(resolver, "acme.example", SETTINGS))) == expected

    def test_lookups_keep_the_answer_and_the_error(self) -> None:
        """Each look-up records the name, the expected host, what was found, or why there was no answer."""
        enr, reg = lookup_cnames(
            FakeResolver({ENR: LookupError("timeout"), REG: "x.example"}), "acme.example", SETTINGS
        )
        assert (enr.record, enr.name, enr.answered, enr.error) == (
            DiscoveryRecord.ENROLLMENT,
            ENR,
            False,
            "timeout",
        )
        assert (reg.name, reg.expected, reg.found, reg.answered) == (
            REG,
            "mdm.pomona.example",
            "x.example",
            True,
        )

    def test_only_the_records_asked_for(self) -> None:
        """Diagnose asks for one record at a time: the other name is not looked up."""
        resolver = FakeResolver({})
        (lk,) = lookup_cnames(resolver, "acme.example", SETTINGS, (DiscoveryRecord.REGISTRATION,))
        assert (lk.record, resolver.asked) == (DiscoveryRecord.REGISTRATION, [REG])

    def test_finding_subject_and_facts(self) -> None:
        """A DNS finding is about the name, and its facts say what was expected and found."""
        (f,) = dns_findings([CnameLookup(DiscoveryRecord.ENROLLMENT, ENR, "mdm.example", "old.example")])
        assert (f.subject, f.severity, dict(f.facts)) == (
            f"dns:{ENR}",
            Severity.WARNING,
            {"name": ENR, "found": "old.example", "expected_target": "mdm.example"},
        )


ROW = {
    "code": "DEVICE_UNRESPONSIVE",
    "enrollment_id": "e1",
    "udid": "UDID-1",
    "serial": "C02X",
    "first_unanswered_push_at": (NOW - 5 * timedelta(hours=1)).isoformat(),
    "last_push_at": (NOW - timedelta(hours=1)).isoformat(),
    "last_push_status": "delivered",
    "last_seen_at": None,
    "silent_for_s": 18000,
}


class TestDevices:
    @pytest.mark.parametrize(
        ("rows", "subjects"),
        [
            ([], []),
            ([ROW], ["device:UDID-1"]),
            ([ROW, {**ROW, "udid": "UDID-2", "enrollment_id": "e2"}], ["device:UDID-1", "device:UDID-2"]),
        ],
    )
    def test_unresponsive(self, rows: list[dict[str, object]], subjects: list[str]) -> None:
        """One DEVICE_UNRESPONSIVE warning per silent device, about that device."""
        found = unresponsive_findings(rows)
        assert [f.subject for f in found] == subjects
        assert {(f.code, f.severity) for f in found} <= {(R.DEVICE_UNRESPONSIVE, Severity.WARNING)}

    def test_unresponsive_facts_are_the_row(self) -> None:
        """The push service's row becomes the facts, without its code."""
        (f,) = unresponsive_findings([ROW])
        assert dict(f.facts) == {k: v for k, v in ROW.items() if k != "code"}

    def test_unresponsive_check_asks_the_source(self) -> None:
        """The check handed to health and diagnose asks the push service for this tenant and time."""
        asked: list[tuple[str, datetime, object]] = []

        def source(tenant: str, now: datetime, enrollment_ids: object = None, /) -> list[dict[str, object]]:
            asked.append((tenant, now, enrollment_ids))
            return [ROW]

        check = unresponsive_check(source)
        assert codes(list(check("t1", NOW))) == ["DEVICE_UNRESPONSIVE"]
        assert codes(list(check("t1", NOW, ["e1"]))) == ["DEVICE_UNRESPONSIVE"]  # one device's, for diagnose
        assert asked == [("t1", NOW, None), ("t1", NOW, ["e1"])]

    def test_stuck(self) -> None:
        """A device held at Setup Assistant is a warning about that device, naming its serial and since when."""
        (f,) = stuck_findings([("UDID-1", "SERIAL1", NOW - DAY)])
        assert (f.code, f.subject, f.facts["serial"], f.facts["since"]) == (
            R.AWAITING_CONFIGURATION_STUCK,
            "device:UDID-1",
            "SERIAL1",
            (NOW - DAY).isoformat(),
        )


class TestTenant:
    @pytest.mark.parametrize(("authority", "expected"), [(None, ["MDM_AUTHORITY_NOT_SET"]), ("pomona", [])])
    def test_authority(self, authority: str | None, expected: list[str]) -> None:
        """A tenant without an MDM authority is a critical finding."""
        found = authority_findings(authority)
        assert codes(found) == expected
        assert all(f.severity is Severity.CRITICAL for f in found)

    @pytest.mark.parametrize(
        ("seats", "licensed", "waiting", "expected", "asked"),
        [
            (10, 9, 5, [], False),
            (10, 10, 0, [], True),
            (10, 10, 3, ["LICENSES_EXHAUSTED"], True),
            (0, 0, 1, ["LICENSES_EXHAUSTED"], True),
        ],
    )
    def test_licences(
        self, seats: int, licensed: int, waiting: int, expected: list[str], asked: bool
    ) -> None:
        """Seats all taken and users waiting: LICENSES_EXHAUSTED; the waiting users are counted only then."""
        counted: list[int] = []

        def unlicensed() -> int:
            counted.append(waiting)
            return waiting

        found = licence_findings(seats, licensed, unlicensed)
        assert codes(found) == expected and bool(counted) is asked
        if found:
            assert dict(found[0].facts) == {"seats": seats, "unlicensed_users": waiting}
