"""The storage conformance suite: every store port, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentToken,
    EnrollmentType,
    Event,
    IssuedCert,
    Outcome,
    QueuedCommand,
    Step,
    Tenant,
    User,
)
from pomona.ports import ConflictError, Database
from pomona.storage.migrate import current
from pomona.storage.sql import SqlDatabase
from pomona.testing import MemoryDatabase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Every test runs on each backend."""
    if request.param == "memory":
        yield MemoryDatabase()
        return
    url = (
        f"sqlite:///{tmp_path / 'pomona.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    d = SqlDatabase(url)
    d.create_all()
    yield d
    d.dispose()


@pytest.fixture
def sql_db(db_url: str) -> Iterator[SqlDatabase]:
    d = SqlDatabase(db_url)
    d.create_all()
    yield d
    d.dispose()


def tenant(name: str = "acme") -> Tenant:
    return Tenant(
        id=str(uuid.uuid4()),
        name=name,
        domain=f"{name}.example",
        created_at=NOW,
        ca_cert_pem=b"cert",
        ca_key_pem=b"key",
    )


def seed(db: Database) -> tuple[Tenant, User, Device, Enrollment]:
    t = tenant()
    u = User(
        id=str(uuid.uuid4()),
        tenant_id=t.id,
        upn="ana@acme.example",
        email="ana@acme.example",
        display_name="Ana",
        created_at=NOW,
    )
    d = Device(
        id=str(uuid.uuid4()), tenant_id=t.id, udid="UDID-1", serial="SER1", created_at=NOW, last_seen_at=NOW
    )
    e = Enrollment(
        id=str(uuid.uuid4()),
        tenant_id=t.id,
        device_id=d.id,
        udid=d.udid,
        user_id=u.id,
        status=EnrollmentStatus.ACTIVE,
        type=EnrollmentType.BYOD,
        cert_fingerprint="fp1",
        topic="com.apple.mgmt.x",
        started_at=NOW,
    )
    with db.unit_of_work() as uow:
        uow.tenants.add(t)
        uow.users.add(u)
        uow.devices.upsert(d)
        uow.enrollments.add(e)
    return t, u, d, e


def command(t: Tenant, e: Enrollment, n: int) -> QueuedCommand:
    return QueuedCommand(
        id=0,
        tenant_id=t.id,
        command_uuid=f"cmd-{n}",
        enrollment_id=e.id,
        device_id=e.device_id,
        request_type="DeviceInformation",
        body=b"<plist/>",
        status=CommandStatus.QUEUED,
        created_at=NOW + timedelta(seconds=n),
    )


class TestMigrations:
    def test_head_applied(self, sql_db: Database) -> None:
        """Migrations run to head and running them again changes nothing."""
        from alembic.script import ScriptDirectory

        from pomona.storage.migrate import alembic_config

        head = ScriptDirectory.from_config(alembic_config(sql_db.engine)).get_current_head()
        assert current(sql_db.engine) == head
        sql_db.create_all()
        assert current(sql_db.engine) == head


class TestTenantsAndUsers:
    def test_tenant_round_trip(self, db: Database) -> None:
        """A tenant reads back by id and by name with its push certificate facts."""
        t = tenant()
        with db.unit_of_work() as uow:
            uow.tenants.add(t)
            uow.tenants.set_push_cert(t.id, b"c", b"k", "com.apple.mgmt.x", NOW + timedelta(days=300))
        with db.unit_of_work(readonly=True) as uow:
            got = uow.tenants.by_name("acme")
            assert got is not None and got.id == t.id
            assert got.push_topic == "com.apple.mgmt.x"
            assert got.push_not_after == NOW + timedelta(days=300)
            assert uow.tenants.get("nope") is None

    def test_tenant_name_unique(self, db: Database) -> None:
        """Two tenants cannot share a name."""
        with db.unit_of_work() as uow:
            uow.tenants.add(tenant())
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.tenants.add(tenant())

    def test_user_upn_unique_per_tenant(self, db: Database) -> None:
        """The same UPN may exist once per tenant, in several tenants."""
        t1, t2 = tenant("a1"), tenant("a2")
        with db.unit_of_work() as uow:
            uow.tenants.add(t1)
            uow.tenants.add(t2)
            for t in (t1, t2):
                uow.users.add(
                    User(
                        id=str(uuid.uuid4()),
                        tenant_id=t.id,
                        upn="x@e.com",
                        email="x@e.com",
                        display_name="X",
                        created_at=NOW,
                    )
                )
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.users.add(
                User(
                    id=str(uuid.uuid4()),
                    tenant_id=t1.id,
                    upn="x@e.com",
                    email="x@e.com",
                    display_name="X",
                    created_at=NOW,
                )
            )
        with db.unit_of_work(readonly=True) as uow:
            assert uow.users.by_upn(t1.id, "X@E.com") is not None
            assert len(uow.users.list(t2.id)) == 1


class TestTransactions:
    def test_rollback_leaves_nothing(self, db: Database) -> None:
        """An exception inside a unit of work rolls back every store it touched."""
        t = tenant()
        with pytest.raises(RuntimeError), db.unit_of_work() as uow:
            uow.tenants.add(t)
            uow.events.append(Event(tenant_id=t.id, at=NOW, step=Step.ADMIN, outcome=Outcome.OK))
            raise RuntimeError("crash mid-request")
        with db.unit_of_work(readonly=True) as uow:
            assert uow.tenants.get(t.id) is None
            assert uow.events.query(t.id) == []

    def test_settings(self, db: Database) -> None:
        """Settings are stored and overwritten by key."""
        assert db.settings_get("k") is None
        db.settings_put("k", b"1")
        db.settings_put("k", b"2")
        assert db.settings_get("k") == b"2"


class TestTokensAndCerts:
    def test_token_consume(self, db: Database) -> None:
        """Consuming a token counts its uses."""
        t, u, _, _ = seed(db)
        tok = EnrollmentToken(
            id=str(uuid.uuid4()),
            tenant_id=t.id,
            user_id=u.id,
            expires_at=NOW + timedelta(hours=1),
            uses_allowed=2,
            uses_count=0,
            created_at=NOW,
        )
        with db.unit_of_work() as uow:
            uow.enrollment_tokens.add(tok, "h" * 64)
            uow.enrollment_tokens.consume(tok.id)
        with db.unit_of_work() as uow:
            got = uow.enrollment_tokens.by_hash_for_update("h" * 64)
            assert got is not None and got.uses_count == 1 and got.remaining() == 1
            assert got.expires_at == NOW + timedelta(hours=1)

    def test_cert_bind(self, db: Database) -> None:
        """An issued certificate is bound to the enrollment it authenticated."""
        t, u, _, e = seed(db)
        with db.unit_of_work() as uow:
            uow.certs.add(
                IssuedCert(
                    fingerprint="f" * 64,
                    tenant_id=t.id,
                    serial="1",
                    token_id=None,
                    user_id=u.id,
                    not_after=NOW + timedelta(days=365),
                    issued_at=NOW,
                )
            )
            uow.certs.bind("f" * 64, e.id)
        with db.unit_of_work(readonly=True) as uow:
            c = uow.certs.get("f" * 64)
            assert c is not None and c.enrollment_id == e.id and c.user_id == u.id


class TestDevicesAndEnrollments:
    def test_upsert_keeps_unreported_facts(self, db: Database) -> None:
        """A second upsert updates only the facts it carries."""
        t, _, d, _ = seed(db)
        with db.unit_of_work() as uow:
            uow.devices.update_inventory(t.id, d.id, {"model_name": "iPhone", "os_version": "17.4"})
            got = uow.devices.upsert(
                Device(id="ignored", tenant_id=t.id, udid=d.udid, serial=None, os_version="17.5")
            )
        assert (
            got.id == d.id
            and got.model_name == "iPhone"
            and got.os_version == "17.5"
            and got.serial == "SER1"
        )

    def test_active_by_fingerprint(self, db: Database) -> None:
        """Only an active enrollment answers for its identity; ending it removes it."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            found = uow.enrollments.active_by_fingerprint("fp1")
            assert found is not None and found[0].id == e.id and found[1] == NOW
            uow.enrollments.end(e.id, EnrollmentStatus.REMOVED, NOW)
        with db.unit_of_work() as uow:
            assert uow.enrollments.active_by_fingerprint("fp1") is None
            assert uow.enrollments.active_for_udid(t.id, e.udid) is None
            hist = uow.enrollments.for_device(t.id, e.device_id)
            assert [h.status for h in hist] == [EnrollmentStatus.REMOVED]

    def test_token_update(self, db: Database) -> None:
        """Push token, magic and unlock token are stored."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            uow.enrollments.update_token(e.id, b"\x01" * 32, "magic", b"unlock", True, NOW)
        with db.unit_of_work() as uow:
            got = uow.enrollments.get(t.id, e.id)
            assert got is not None and got.push_token == b"\x01" * 32 and got.push_magic == "magic"
            assert got.unlock_token == b"unlock" and got.awaiting_configuration


class TestCommandQueue:
    def test_fifo_and_not_now(self, db: Database) -> None:
        """Commands come out in order; NotNow ones are skipped until the next Idle."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            c1 = uow.commands.enqueue(command(t, e, 1))
            uow.commands.enqueue(command(t, e, 2))
        with db.unit_of_work() as uow:
            nxt = uow.commands.next_for(e.id, skip_not_now=False)
            assert nxt is not None and nxt.command_uuid == "cmd-1" and nxt.id == c1.id
            uow.commands.mark_sent(nxt.id, NOW)
            uow.commands.record_result(e.id, "cmd-1", CommandStatus.NOT_NOW, b"r", [], NOW)
            nxt = uow.commands.next_for(e.id, skip_not_now=True)
            assert nxt is not None and nxt.command_uuid == "cmd-2"
            uow.commands.record_result(e.id, "cmd-2", CommandStatus.ACKNOWLEDGED, b"r", [], NOW)
            assert uow.commands.next_for(e.id, skip_not_now=True) is None
            again = uow.commands.next_for(e.id, skip_not_now=False)
            assert again is not None and again.command_uuid == "cmd-1"

    def test_error_chain_and_cancel(self, db: Database) -> None:
        """An error chain is kept whole; cancelling stops pending commands only."""
        t, _, _, e = seed(db)
        chain: list[dict[str, object]] = [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain"}]
        with db.unit_of_work() as uow:
            uow.commands.enqueue(command(t, e, 1))
            uow.commands.enqueue(command(t, e, 2))
            uow.commands.record_result(e.id, "cmd-1", CommandStatus.ERROR, b"r", chain, NOW)
            assert uow.commands.cancel_pending(e.id) == 1
        with db.unit_of_work() as uow:
            c1 = uow.commands.get_by_uuid(t.id, "cmd-1")
            c2 = uow.commands.get_by_uuid(t.id, "cmd-2")
            assert c1 is not None and c1.status is CommandStatus.ERROR and c1.error_chain == chain
            assert c2 is not None and c2.status is CommandStatus.CANCELLED
            assert uow.commands.next_for(e.id, skip_not_now=False) is None

    def test_results_scoped_to_enrollment(self, db: Database) -> None:
        """A result naming another enrollment's command changes nothing."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            uow.commands.enqueue(command(t, e, 1))
            assert (
                uow.commands.record_result("other", "cmd-1", CommandStatus.ACKNOWLEDGED, b"r", [], NOW)
                is None
            )


class TestEvents:
    def test_query_filters(self, db: Database) -> None:
        """Events are found by user, device, code and time, newest first."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            for i, (reason, serial) in enumerate(
                [(None, "S1"), ("ENROLLMENT_TOKEN_INVALID", "S1"), ("SIGNATURE_INVALID", "S2")]
            ):
                uow.events.append(
                    Event(
                        tenant_id=t.id,
                        at=NOW + timedelta(minutes=i),
                        step=Step.SCEP,
                        outcome=Outcome.OK if reason is None else Outcome.FAILED,
                        reason=reason,
                        upn="ana@acme.example",
                        serial=serial,
                        detail={"i": i},
                    )
                )
        with db.unit_of_work(readonly=True) as uow:
            assert [e.detail["i"] for e in uow.events.query(t.id)] == [2, 1, 0]
            assert [e.detail["i"] for e in uow.events.query(t.id, serial="S1")] == [1, 0]
            assert [e.detail["i"] for e in uow.events.query(t.id, reason="SIGNATURE_INVALID")] == [2]
            assert [e.detail["i"] for e in uow.events.query(t.id, since=NOW + timedelta(minutes=1))] == [2, 1]
            assert [
                e.detail["i"]
                for e in uow.events.query(t.id, upn="ANA@acme.example", until=NOW + timedelta(minutes=1))
            ] == [0]
            assert uow.events.query("other-tenant") == []
