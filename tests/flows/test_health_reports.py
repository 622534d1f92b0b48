"""Tenant health (kept with first/last seen), failure reports from the roll-up, incident summaries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    pomona.health.resolver = None  # no DNS server in these tests (the diagnose scenarios run one)
    return setup_tenant(pomona, uses=50)


def codes(result: dict[str, object]) -> set[str]:
    return {f["code"] for f in result["findings"]}  # type: ignore[attr-defined]


class TestHealth:
    def test_findings_first_and_last_seen(self, pomona: Pomona, acme: TenantSetup) -> None:
        """A finding keeps its first-seen time across runs and is resolved when it goes away."""
        s2 = setup_tenant(pomona, "bare", push=False)
        first = pomona.health.run(s2.name)
        assert "APNS_CERT_MISSING" in codes(first) and first["new"] >= 1
        again = pomona.health.run(s2.name)
        f1 = next(f for f in first["findings"] if f["code"] == "APNS_CERT_MISSING")  # type: ignore[attr-defined]
        f2 = next(f for f in again["findings"] if f["code"] == "APNS_CERT_MISSING")  # type: ignore[attr-defined]
        assert f1["first_seen"] == f2["first_seen"] and again["new"] == 0
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert()
        pomona.apns.upload(s2.name, cert, key, canary=False)
        assert "APNS_CERT_MISSING" not in codes(pomona.health.run(s2.name))

    def test_expiring_and_authority_and_licences(self, pomona: Pomona, acme: TenantSetup) -> None:
        """Expiry within 30 days, an unset authority and exhausted seats are tenant findings."""
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert(acme.topic, days=10)
        pomona.apns.upload(acme.name, cert, key, canary=False)
        pomona.policy.set_seats(acme.name, 1)
        pomona.admin.create_user(acme.name, "bo@acme.example")
        found = pomona.health.run(acme.name)
        assert {"APNS_CERT_EXPIRING", "LICENSES_EXHAUSTED"} <= codes(found)
        exp = next(f for f in found["findings"] if f["code"] == "APNS_CERT_EXPIRING")  # type: ignore[attr-defined]
        assert exp["facts"]["threshold_days"] == 14 and exp["subject"] == "expiry:14d"
        s3 = setup_tenant(pomona, "noauth")
        with pomona.db.unit_of_work() as uow:
            t = uow.tenants.by_name(s3.name)
            assert t is not None
            uow.conn.execute(
                __import__("sqlalchemy").text("UPDATE tenants SET mdm_authority = NULL WHERE id = :i"),  # type: ignore[attr-defined]
                {"i": t.id},
            )
        assert "MDM_AUTHORITY_NOT_SET" in codes(pomona.health.run(s3.name))

    def test_one_expiry_check_for_health_status_and_diagnose(self, pomona: Pomona, acme: TenantSetup) -> None:
        """Health, the certificate status and diagnose judge an expiring certificate the same way."""
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert(acme.topic, days=5)
        pomona.apns.upload(acme.name, cert, key, canary=False)
        found = pomona.health.run(acme.name)["findings"]
        (health,) = [f for f in found if f["code"] == "APNS_CERT_EXPIRING"]  # type: ignore[attr-defined]
        (status,) = pomona.apns.findings(acme.name, pomona.clock.now())
        expected = ("APNS_CERT_EXPIRING", "critical", "expiry:7d")
        assert (health["code"], health["severity"], health["subject"]) == expected
        assert (status["code"], status["severity"], status["subject"]) == expected
        top = pomona.diagnose.diagnose(acme.name, message="APNS_CERT_EXPIRING").findings[0]
        assert (top.code, top.verdict.value) == ("APNS_CERT_EXPIRING", "proven")

    def test_new_findings_are_notified(self, pomona: Pomona, acme: TenantSetup) -> None:
        """New findings go to the notifier once; repeats do not."""
        sent: list[tuple[str, list[str]]] = []
        pomona.health.notify = lambda tid, fs: sent.append((tid, [f["code"] for f in fs]))
        s2 = setup_tenant(pomona, "bare2", push=False)
        pomona.health.run(s2.name)
        pomona.health.run(s2.name)
        assert len(sent) == 1 and "APNS_CERT_MISSING" in sent[0][1]

    def test_api(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """GET /api/v1/health/findings answers for the token's tenant."""
        r = client.get("/api/v1/health/findings", headers={"Authorization": f"Bearer {acme.admin_token}"})
        assert r.status_code == 200 and r.json()["tenant"] == acme.name


class TestReports:
    def test_failure_report_groups_and_csv(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """Refusals are counted by reason, platform and day; the CSV export matches."""
        pomona.policy.edit_restriction(acme.name, type_="limit", default=True, limit=1)
        VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        for product in ("iPhone15,2", "iPad13,18"):
            with pytest.raises(EnrollmentRefused):
                d = VirtualDevice(acme.enroll_url, client=client, product=product)  # type: ignore[arg-type]
                d.download()
                pomona.policy.edit_restriction(acme.name, type_="limit", default=True, limit=2)
                d.run_scep()
                pomona.policy.edit_restriction(acme.name, type_="limit", default=True, limit=1)
                d.complete_enrollment()
        now = datetime.now(UTC)
        r = pomona.reports.failures(acme.name, since=now - timedelta(days=1), until=now, group_by="reason")
        assert {g["key"]: g["count"] for g in r["groups"]}["DEVICE_LIMIT_REACHED"] == 2  # type: ignore[attr-defined]
        by_platform = pomona.reports.failures(
            acme.name, since=now - timedelta(days=1), until=now, group_by="platform"
        )
        assert {g["key"] for g in by_platform["groups"]} == {"ios", "ipados"}  # type: ignore[attr-defined]
        h = {"Authorization": f"Bearer {acme.admin_token}"}
        csv_ = client.get(
            "/api/v1/reports/enrollment-failures", headers=h, params={"group_by": "reason", "format": "csv"}
        )
        assert csv_.headers["content-type"].startswith("text/csv") and "DEVICE_LIMIT_REACHED,2" in csv_.text
        bad = client.get("/api/v1/reports/enrollment-failures", headers=h, params={"group_by": "color"})
        assert (bad.status_code, bad.json()["reason"]) == (422, "INVALID_INPUT")

    def test_incident_names_suspect_changes(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The incident summary counts affected users out of attempting ones and lists recent config changes."""
        VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, personal="block")
        with pytest.raises(EnrollmentRefused):
            VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        now = datetime.now(UTC)
        inc = pomona.reports.incident(
            acme.name, codes=["PERSONAL_DEVICE_BLOCKED"], since=now - timedelta(hours=1), until=now
        )
        assert inc["failures"] == 1 and inc["affected_users"] == 1 and inc["mdm_authority"] == "pomona"
        assert any(s["action"] == "restriction.edit" for s in inc["suspect_changes"])  # type: ignore[attr-defined]
        md = pomona.reports.incident_markdown(inc, "zh-CN")
        assert "restriction.edit" in md and "租户" in md


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's database-wide write lock
def test_health_checks_without_holding_the_write_lock(pomona: Pomona, acme: TenantSetup, db_url: str) -> None:
    """The checks run in a read transaction: while they run, another connection can begin a write at once
    (SQLite); the findings are still recorded."""
    import dataclasses
    import sqlite3

    got_lock: list[bool] = []

    def writer_check(tenant_id: str, now: datetime) -> list[object]:
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            got_lock.append(True)
        except sqlite3.OperationalError:
            got_lock.append(False)
        finally:
            conn.close()
        return []

    health = dataclasses.replace(pomona.health, push_cert=writer_check)
    result = health.run(acme.name)
    assert got_lock == [True]
    assert result["tenant"] == acme.name and isinstance(result["findings"], list)
