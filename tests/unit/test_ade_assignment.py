"""The reconciliation of ADE profile assignments (AbmService over the in-memory database and the ABM
emulator in-process, with a frozen clock): the default goes only to devices without a profile, a failed
try backs off and doubles, and the reconciliation is idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from pomona.net.abm import HttpAbmConnector
from pomona.pki.abm import LocalAbmKeys
from pomona.pki.adapters import LocalPki
from pomona.services.abm import BACKOFF_MAX, AbmService
from pomona.services.admin import AdminService
from pomona.services.enrollment import Urls
from pomona.testing import FrozenClock, MemoryDatabase
from pomona.testing.abm_emulator import AbmEmulator

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def wired(devices: int = 4) -> tuple[AbmService, AbmEmulator, FrozenClock]:
    """A synced tenant with an uploaded token; a backoff of 60 s."""
    db, clock = MemoryDatabase(), FrozenClock(START)
    emu = AbmEmulator(devices=devices, clock=clock.now, serial_prefix="U")
    abm = AbmService(
        db,
        clock,
        LocalAbmKeys(),
        HttpAbmConnector("http://abm.test", transport=emu.transport()),
        urls=Urls("https://mdm.acme.example"),
        assign_backoff=60,
    )
    AdminService(db, clock, LocalPki()).create_tenant("acme", "acme.example", key_type="p256")
    cert, _ = abm.keypair("acme")
    abm.upload_token("acme", emu.issue_token(cert, expires_in=timedelta(days=100)))
    abm.sync("acme")
    return abm, emu, clock


class TestReconciliation:
    def test_default_leaves_devices_with_another_profile_alone(self) -> None:
        """The default profile goes to devices without one; a device ABM shows with another server's
        profile is not taken over."""
        abm, emu, _ = wired()
        other = emu.s.order[0]
        emu._modify(other, profile_uuid="SOMEONE-ELSES", profile_status="assigned")
        abm.sync("acme")
        report = abm.create_profile("acme", "staff", default=True)
        assert report.reconciled.assigned == 3 and other not in report.reconciled.answers
        assert emu.device(other).profile_uuid == "SOMEONE-ELSES"  # type: ignore[union-attr]

    def test_backoff_doubles_and_is_capped(self) -> None:
        """A failed try waits the backoff, then twice it, ...; never more than BACKOFF_MAX."""
        abm, emu, clock = wired()
        abm.create_profile("acme", "staff")
        serial = emu.s.order[1]
        emu.set_fault("assignment-fails", serial)
        abm.assign("acme", "staff", [serial])
        tries = [abm.reconcile("acme").answers.get(serial)]
        clock.advance(timedelta(seconds=61))
        tries.append(abm.reconcile("acme").answers.get(serial))
        clock.advance(timedelta(seconds=61))  # the second wait is 120 s
        tries.append(abm.reconcile("acme").answers.get(serial))
        clock.advance(timedelta(seconds=60))
        tries.append(abm.reconcile("acme").answers.get(serial))
        assert tries == [None, "FAILED", None, "FAILED"]
        with abm.db.unit_of_work(readonly=True) as uow:
            (a,) = uow.abm.assignments(emu_tenant(abm)).values()
        assert a.attempts == 3 and a.next_try_at == clock.now() + timedelta(seconds=240)
        assert min(timedelta(seconds=60) * 2**16, BACKOFF_MAX) == BACKOFF_MAX

    def test_reconcile_twice_assigns_once(self) -> None:
        """Once ABM shows every device with its profile, reconciling again assigns nothing."""
        abm, _, _ = wired()
        assert abm.create_profile("acme", "staff", default=True).reconciled.assigned == 4
        abm.sync("acme")
        assert abm.reconcile("acme").assigned == 0
        (r,) = abm.sync("acme")
        assert (r.assigned, r.assign_failed) == (0, 0)


class TestRules:
    def test_first_rule_by_priority_wins_and_beats_an_adopted_default(self) -> None:
        """Two matching rules: the lower priority's profile is assigned, also to devices that had adopted
        the default; a device no rule matches keeps the default."""
        abm, emu, _ = wired()
        for name in ("staff", "wide", "narrow"):
            abm.create_profile("acme", name, default=name == "staff")
        abm.sync("acme")
        abm.add_rule("acme", "wide", "model", "*")
        _, done = abm.add_rule("acme", "narrow", "device_family", "IPAD", priority=1)
        ipads = sorted(s for s, d in emu.s.devices.items() if d.device_family == "iPad")
        assert sorted(done.answers) == ipads
        names = {p.record.name: p.record.definitions for p in abm.profiles("acme")}
        assert {emu.s.devices[s].profile_uuid for s in ipads} == set(names["narrow"].values())
        phones = [s for s in emu.s.devices if s not in ipads]
        assert {emu.s.devices[s].profile_uuid for s in phones} == set(names["wide"].values())
        assert [r.rule.priority for r in abm.rules("acme")] == [1, 10]

    def test_removed_rule_without_a_default_leaves_devices_alone(self) -> None:
        """With no default profile, removing a rule assigns nothing: its devices keep what they have."""
        abm, emu, _ = wired()
        abm.create_profile("acme", "kiosk")
        view, done = abm.add_rule("acme", "kiosk", "device_family", "iPhone")
        assert done.assigned == 3
        abm.sync("acme")
        _, after = abm.remove_rule("acme", view.rule.id)
        assert (after.assigned, after.failed) == (0, 0)
        kiosk = abm.profiles("acme")[0].record.definitions
        assert sum(d.profile_uuid in kiosk.values() for d in emu.s.devices.values()) == 3

    def test_bad_field_and_value_are_refused(self) -> None:
        """INVALID_INPUT for a field no rule can match, and for an empty value; NOT_FOUND for no rule."""
        from pomona.domain.errors import InvalidInputError, NotFoundError

        abm, _, _ = wired()
        abm.create_profile("acme", "kiosk")
        with pytest.raises(InvalidInputError):
            abm.add_rule("acme", "kiosk", "color", "BLACK")
        with pytest.raises(InvalidInputError):
            abm.add_rule("acme", "kiosk", "model", "  ")
        with pytest.raises(NotFoundError):
            abm.remove_rule("acme", "nope")


def emu_tenant(abm: AbmService) -> str:
    return abm._tenant("acme").id


class TestSyncSurvivesAssignmentFailures:
    def test_unreachable_during_assignment_keeps_the_sync(self) -> None:
        """ABM unreachable for the assignment after a good sync (the network fails on PUT
        /profile/devices): the sync stands (no error on the token), the failure is an event, and the
        next sync assigns."""
        db, clock = MemoryDatabase(), FrozenClock(START)
        emu = AbmEmulator(devices=2, clock=clock.now, serial_prefix="U")
        inner = emu.transport()
        down = {"put": False}

        def answer(request: httpx.Request) -> httpx.Response:
            if down["put"] and request.method == "PUT":
                raise httpx.ConnectError("network down", request=request)
            return inner.handle_request(request)

        abm = AbmService(
            db,
            clock,
            LocalAbmKeys(),
            HttpAbmConnector("http://abm.test", transport=httpx.MockTransport(answer)),
            urls=Urls("https://mdm.acme.example"),
        )
        AdminService(db, clock, LocalPki()).create_tenant("acme", "acme.example", key_type="p256")
        cert, _ = abm.keypair("acme")
        abm.upload_token("acme", emu.issue_token(cert, expires_in=timedelta(days=100)))
        abm.create_profile("acme", "staff", default=True)
        down["put"] = True
        (r,) = abm.sync("acme")
        assert (r.added, r.assigned) == (2, 0)
        (st,) = abm.tokens("acme")
        assert st.info.last_error is None and st.info.cursor is not None
        with db.unit_of_work(readonly=True) as uow:
            failed = [
                e for e in uow.events.query(st.info.tenant_id) if e.detail.get("during") == "assignment"
            ]
        assert len(failed) == 1
        down["put"] = False
        clock.advance(timedelta(minutes=5))
        (r,) = abm.sync("acme")
        assert r.assigned == 2
