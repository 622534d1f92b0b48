"""One ADE profile's devices for the console (ports.AbmListing.profile_devices): the same suite on memory,
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pomona.domain.models import Device, Event, Outcome, Step, Tenant
from pomona.ports import AbmAssignment, AbmProfileRecord, AbmTokenInfo, Database
from pomona.protocol.dep import AbmDevice, ServerToken

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CREDS = ServerToken("CK_1", "CS_secret", "AT_1", "AS_secret", NOW + timedelta(days=300))


def seeded(db: Database) -> tuple[str, str, str]:
    """A tenant with two tokens' devices, profile "p" (U1 under token a) and "q", and another tenant
    whose device has U1 too: (tenant id, token a's id, the other tenant's id)."""
    tid, other = str(uuid.uuid4()), str(uuid.uuid4())
    a = AbmTokenInfo(str(uuid.uuid4()), tid, "a", "CK_1", CREDS.access_token_expiry, NOW)
    o = AbmTokenInfo(str(uuid.uuid4()), other, "a", "CK_1", CREDS.access_token_expiry, NOW)
    with db.unit_of_work() as uow:
        for t in (tid, other):
            uow.tenants.add(Tenant(t, f"t-{t[:8]}", "acme.example", NOW, b"ca"), b"ca-key")
        uow.abm.add_token(a, CREDS)
        uow.abm.add_token(o, CREDS)
        uow.abm.upsert_devices(
            tid,
            a.id,
            [
                AbmDevice("S1", model="iPad mini", profile_uuid="U1", profile_status="pushed"),
                AbmDevice("S2", model="iPhone 15", profile_uuid="U1", profile_status="removed"),
                AbmDevice("S3", model="iPhone 15", profile_uuid="U2", profile_status="assigned"),
                AbmDevice("S4", model="iPad", profile_uuid="", profile_status="empty"),
                AbmDevice("S5", model="iPad", profile_uuid="U1", profile_status="assigned"),  # shown only
                AbmDevice("S6", model="iPad", profile_uuid="U1", profile_status="assigned"),  # deleted
            ],
            NOW,
        )
        uow.abm.upsert_devices(tid, a.id, [AbmDevice("S6", op_type="deleted", op_date=NOW)], NOW)
        uow.abm.upsert_devices(
            other, o.id, [AbmDevice("X1", profile_uuid="U1", profile_status="assigned")], NOW
        )
        for pid, t in (("p", tid), ("q", tid), ("o", other)):
            uow.abm.save_profile(AbmProfileRecord(pid, t, pid, {}, NOW, NOW))
        uow.abm.set_definition("p", a.id, "U1", NOW)
        uow.abm.set_definition("o", o.id, "U1", NOW)
        uow.abm.save_assignments(
            tid,
            [
                AbmAssignment(tid, "S1", "p", explicit=True),
                AbmAssignment(tid, "S2", "p", False, 2, None, NOW, "FAILED", rule_id="r1"),
                AbmAssignment(tid, "S4", "p", explicit=False),
                AbmAssignment(tid, "S3", "q"),
                AbmAssignment(tid, "S9", "p"),  # not listed by ABM yet
            ],
        )
        uow.abm.save_assignments(other, [AbmAssignment(other, "X1", "o")])
        uow.devices.upsert(Device("d-old", tid, "UDID-0", "S1", created_at=NOW - timedelta(days=9)))
        uow.devices.upsert(Device("d-new", tid, "UDID-1", "S1", created_at=NOW))
        uow.devices.upsert(Device("d-x", other, "UDID-X", "S4", created_at=NOW))
        for at, outcome, reason, step, serial, t in (
            (NOW - timedelta(hours=2), Outcome.FAILED, "DEP_PROFILE_NOT_ASSIGNED", Step.DEP, "S1", tid),
            (NOW - timedelta(hours=1), Outcome.OK, None, Step.ADE, "S1", tid),
            (NOW, Outcome.FAILED, "ADE_X", Step.PUSH, "S1", tid),  # not an ADE step
            (NOW, Outcome.FAILED, "OTHER_TENANT", Step.ADE, "S4", other),
        ):
            uow.events.append(Event(t, at, step, outcome, reason=reason, serial=serial))
    return tid, a.id, other


class TestProfileDevices:
    def test_rows_how_held_device_and_last_event(self, db: Database) -> None:
        """Assigned and shown devices, by serial: how each is wanted, ABM's status and whether it holds
        the profile, the newest device of the serial, and its last dep/ade event, this tenant's only."""
        tid, token_a, _ = seeded(db)
        with db.unit_of_work(readonly=True) as uow:
            got = uow.abm_listing.profile_devices(tid, "p", {token_a: "U1"})
        assert [(d.serial, d.how, d.profile_status, d.held) for d in got] == [
            ("S1", "explicit", "pushed", True),
            ("S2", "rule", "removed", False),
            ("S4", "default", "empty", False),
            ("S5", "abm", "assigned", True),
            ("S9", "explicit", "", False),
        ]
        s1, s2, s4 = got[0], got[1], got[2]
        assert (s1.model, s1.device_id, s1.event_step, s1.event_outcome, s1.event_reason) == (
            "iPad mini",
            "d-new",
            "ade",
            "ok",
            None,
        )
        assert (s2.attempts, s2.last_error, s2.device_id, s2.event_outcome) == (2, "FAILED", None, None)
        assert s4.device_id is None and s4.event_outcome is None

    def test_keyset_pages_and_isolation(self, db: Database) -> None:
        """``after`` and ``limit`` page by serial; a profile without a definition lists its assignments
        only; another tenant sees none of these."""
        tid, token_a, other = seeded(db)
        with db.unit_of_work(readonly=True) as uow:
            first = uow.abm_listing.profile_devices(tid, "p", {token_a: "U1"}, limit=2)
            rest = uow.abm_listing.profile_devices(tid, "p", {token_a: "U1"}, after=first[-1].serial, limit=2)
            last = uow.abm_listing.profile_devices(tid, "p", {token_a: "U1"}, after="S5", limit=2)
            q = uow.abm_listing.profile_devices(tid, "q", {})
            theirs = uow.abm_listing.profile_devices(other, "p", {token_a: "U1"})
        assert [d.serial for d in first] == ["S1", "S2"] and [d.serial for d in rest] == ["S4", "S5"]
        assert [d.serial for d in last] == ["S9"]
        assert [(d.serial, d.how, d.held) for d in q] == [("S3", "explicit", False)]
        assert theirs == []
