"""Real services over the in-memory database and a frozen clock: no SQL, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pomona.domain.errors import PomonaError
from pomona.domain.reasons import ReasonCode
from pomona.pki.adapters import LocalPki
from pomona.services.admin import AdminService
from pomona.services.policy import PolicyService
from pomona.testing import FrozenClock, MemoryDatabase

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def world() -> tuple[MemoryDatabase, FrozenClock, AdminService, PolicyService]:
    db, clock = MemoryDatabase(), FrozenClock(START)
    return db, clock, AdminService(db, clock, LocalPki()), PolicyService(db, clock)


class TestFrozenClock:
    def test_moves_only_when_told(self) -> None:
        """now() stands still; advance() moves forward; set() jumps; naive times and going back are refused."""
        clock = FrozenClock(START)
        assert clock.now() == clock.now() == START
        assert clock.advance(minutes=5) == START + timedelta(minutes=5) == clock.now()
        assert clock.advance(timedelta(days=1), hours=1) == START + timedelta(days=1, hours=1, minutes=5)
        clock.set(START)
        assert clock.now() == START
        with pytest.raises(ValueError):
            clock.advance(seconds=-1)
        with pytest.raises(ValueError):
            clock.set(datetime(2026, 1, 1))


class TestServicesWithoutSql:
    def test_licences_and_policy(
        self, world: tuple[MemoryDatabase, FrozenClock, AdminService, PolicyService]
    ) -> None:
        """An admin sets up a tenant; seats run out with LICENSES_EXHAUSTED, and the refused change
        leaves nothing behind; events carry the clock's time."""
        db, clock, admin, policy = world
        t = admin.create_tenant("acme", "acme.example", key_type="p256")
        assert t.created_at == START
        admin.create_user("acme", "ana@acme.example")
        admin.create_user("acme", "bo@acme.example")
        assert policy.set_seats("acme", 1) == {"seats": 1, "assigned": 0, "free": 1}
        clock.advance(minutes=1)
        policy.licence("acme", "ana@acme.example", assign=True)
        with pytest.raises(PomonaError) as refused:
            policy.licence("acme", "bo@acme.example", assign=True)
        assert refused.value.reason is ReasonCode.LICENSES_EXHAUSTED
        with db.unit_of_work(readonly=True) as uow:
            assert uow.users.licensed_count(t.id) == 1
            actions = [(e.at, e.detail.get("action")) for e in uow.events.query(t.id)]
        assert actions[0] == (START + timedelta(minutes=1), "licence.assign")
        assert [a for _, a in actions].count("licence.assign") == 1

    def test_policy_decision(
        self, world: tuple[MemoryDatabase, FrozenClock, AdminService, PolicyService]
    ) -> None:
        """The dry run reads the tenant's defaults and the user's licence from memory: without a push
        certificate the decision refuses with the reason the policy engine gives."""
        _, _, admin, policy = world
        admin.create_tenant("acme", "acme.example", key_type="p256")
        admin.set_authority("acme", "pomona")
        admin.create_user("acme", "ana@acme.example")
        policy.set_seats("acme", 5)
        policy.licence("acme", "ana@acme.example", assign=True)
        restrictions, _ = policy.list_restrictions("acme")
        assert {r.kind.value for r in restrictions} == {"platform", "limit"}
        decision = policy.explain("acme", "ana@acme.example", platform="ios", os_version="17.4")
        assert not decision.allowed and decision.reason is ReasonCode.APNS_CERT_MISSING
