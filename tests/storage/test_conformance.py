"""The storage conformance suite: every store port, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from helpers import active_enrollment
from pomona.domain.checks import Finding, Severity
from pomona.domain.errors import ConflictError
from pomona.domain.models import (
    ApiToken,
    BlockedDevice,
    CommandStatus,
    CorporateIdentifier,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentToken,
    EnrollmentType,
    Event,
    Group,
    IssuedCert,
    Outcome,
    QueuedCommand,
    Step,
    Tenant,
    User,
)
from pomona.domain.policy import RESTRICTION_TYPES, Restriction, RestrictionKind
from pomona.domain.reasons import ReasonCode
from pomona.ports import (
    Database,
    PushAttempt,
    PushCertState,
    PushCredentials,
    PushKind,
    PushReschedule,
    ReEnrollment,
    TokenRefusal,
    WebhookDelivery,
)
from pomona.storage.migrate import current
from pomona.storage.sql import SqlDatabase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CA_KEY = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def sql_db(empty_db_url: str) -> Iterator[SqlDatabase]:
    """A database migrated from empty by this test."""
    d = SqlDatabase(empty_db_url)
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
    e = active_enrollment(d, "fp1", NOW, user_id=u.id)
    with db.unit_of_work() as uow:
        uow.tenants.add(t, CA_KEY)
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
            uow.tenants.add(t, CA_KEY)
            uow.tenants.set_push_cert(t.id, b"c", b"k", "com.apple.mgmt.x", NOW + timedelta(days=300))
        with db.unit_of_work(readonly=True) as uow:
            got = uow.tenants.by_name("acme")
            assert got is not None and got.id == t.id
            assert got.push_topic == "com.apple.mgmt.x"
            assert got.push_not_after == NOW + timedelta(days=300)
            assert uow.tenants.get("nope") is None

    def test_ca_keypair(self, db: Database) -> None:
        """The tenant CA's key is read on its own, with its certificate; a tenant read has no key."""
        t = tenant()
        with db.unit_of_work() as uow:
            uow.tenants.add(t, CA_KEY)
        with db.unit_of_work(readonly=True) as uow:
            pair = uow.tenants.ca_keypair(t.id)
            assert pair is not None and (pair.cert_pem, pair.key_pem) == (b"cert", CA_KEY)
            assert "PRIVATE KEY" not in repr(pair)
            assert uow.tenants.ca_keypair("nope") is None
            read = [uow.tenants.get(t.id), uow.tenants.by_name(t.name), *uow.tenants.list()]
        assert read == [t] * 3
        for got in read:
            assert "PRIVATE KEY" not in repr(got) and "PRIVATE KEY" not in str(asdict(got))

    def test_tenant_name_unique(self, db: Database) -> None:
        """Two tenants cannot share a name."""
        with db.unit_of_work() as uow:
            uow.tenants.add(tenant(), CA_KEY)
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.tenants.add(tenant(), CA_KEY)

    def test_user_upn_unique_per_tenant(self, db: Database) -> None:
        """The same UPN may exist once per tenant, in several tenants."""
        t1, t2 = tenant("a1"), tenant("a2")
        with db.unit_of_work() as uow:
            uow.tenants.add(t1, CA_KEY)
            uow.tenants.add(t2, CA_KEY)
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
            uow.tenants.add(t, CA_KEY)
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


class TestSettings:
    def test_settings_add_keeps_the_first_value(self, db: Database) -> None:
        """settings_add stores a value only when the key has none, and answers the stored one."""
        assert db.settings_add("k", b"first") == b"first"
        assert db.settings_add("k", b"second") == b"first"
        assert db.settings_get("k") == b"first"
        db.settings_put("k", b"third")  # an admin's change still replaces it
        assert db.settings_add("k", b"fourth") == b"third"

    def test_processes_starting_at_once_share_one_secret(self, sql_db: SqlDatabase) -> None:
        """Eight connections adding a generated secret at once all get the same one (two hosts starting
        on a new database sign sessions and profiles alike)."""
        import threading

        got: list[bytes] = []
        start = threading.Barrier(8)

        def host(i: int) -> None:
            start.wait()
            got.append(sql_db.settings_add("session", f"secret-{i}".encode()))

        threads = [threading.Thread(target=host, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 8 and len(set(got)) == 1, got

    def test_a_setting_put_while_another_process_inserts_it_is_written(self, sql_db: SqlDatabase) -> None:
        """A setting put while another transaction inserts the same key waits and overwrites it, never
        ALREADY_EXISTS (hosts starting together on a new database each record the public URL)."""
        import threading
        import time

        from sqlalchemy import insert, text

        from pomona.storage import schema as s

        errors: list[BaseException] = []

        def put() -> None:
            try:
                sql_db.settings_put("public_url", b"mine")
            except BaseException as exc:  # noqa: BLE001 - the test's answer
                errors.append(exc)

        other = sql_db.engine.connect()
        tx = other.begin()
        other.execute(insert(s.settings).values(key="public_url", value=b"theirs"))
        thread = threading.Thread(target=put)
        thread.start()
        if sql_db.is_sqlite:
            time.sleep(0.3)  # waiting for the write lock
        else:  # until the put waits for the other insert (a lock not granted), so the race is real
            with sql_db.engine.connect() as watch:
                for _ in range(500):
                    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    if watch.execute(text(waiting)).scalar():
                        break
                    time.sleep(0.01)
                else:
                    pytest.fail("the put never waited for the other transaction")
        tx.commit()
        other.close()
        thread.join(30)
        assert not errors, errors
        assert sql_db.settings_get("public_url") == b"mine"


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

    def test_enrollment_token_list_and_revoke(self, db: Database) -> None:
        """A tenant's links are listed newest first; a revoked link reads revoked, in its tenant only."""
        t, u, _, _ = seed(db)
        toks = [
            EnrollmentToken(
                str(uuid.uuid4()), t.id, u.id, NOW + timedelta(hours=1), 1, 0, NOW + timedelta(seconds=i)
            )
            for i in range(2)
        ]
        with db.unit_of_work() as uow:
            for i, tok in enumerate(toks):
                uow.enrollment_tokens.add(tok, str(i) * 64)
            uow.enrollment_tokens.revoke(toks[0].id)
        with db.unit_of_work(readonly=True) as uow:
            assert [x.id for x in uow.enrollment_tokens.list(t.id)] == [toks[1].id, toks[0].id]
            got = uow.enrollment_tokens.get(t.id, toks[0].id)
            assert got is not None and got.revoked
            assert uow.enrollment_tokens.get(str(uuid.uuid4()), toks[0].id) is None
            assert uow.enrollment_tokens.list(str(uuid.uuid4())) == []

    def test_api_token_list_and_revoke(self, db: Database) -> None:
        """Admin tokens keep their expiry; revoking sets the time once; listing filters by tenant."""
        t, _, _, _ = seed(db)
        tenant_tok = ApiToken(str(uuid.uuid4()), t.id, "a", NOW, expires_at=NOW + timedelta(days=1))
        server_tok = ApiToken(str(uuid.uuid4()), None, "s", NOW + timedelta(seconds=1))
        with db.unit_of_work() as uow:
            uow.api_tokens.add(tenant_tok, "a" * 64)
            uow.api_tokens.add(server_tok, "b" * 64)
            uow.api_tokens.revoke(tenant_tok.id, NOW + timedelta(hours=1))
            uow.api_tokens.revoke(tenant_tok.id, NOW + timedelta(hours=2))
        with db.unit_of_work(readonly=True) as uow:
            got = uow.api_tokens.by_hash("a" * 64)
            assert got is not None and got.revoked_at == NOW + timedelta(hours=1)
            assert got.expires_at == NOW + timedelta(days=1)
            assert uow.api_tokens.get(server_tok.id) == server_tok
            assert [x.id for x in uow.api_tokens.list(t.id)] == [tenant_tok.id]
            assert [x.id for x in uow.api_tokens.list()] == [tenant_tok.id, server_tok.id]

    def test_api_token_last_use(self, db: Database) -> None:
        """A token's last use is written when it has none or an older one than ``since``, not otherwise."""
        t, _, _, _ = seed(db)
        tok = ApiToken(str(uuid.uuid4()), t.id, "a", NOW)
        other = ApiToken(str(uuid.uuid4()), t.id, "b", NOW)
        minute = timedelta(minutes=1)
        with db.unit_of_work() as uow:
            uow.api_tokens.add(tok, "a" * 64)
            uow.api_tokens.add(other, "b" * 64)
            assert uow.api_tokens.get(tok.id).last_used_at is None  # type: ignore[union-attr]
            uow.api_tokens.mark_used(tok.id, NOW, since=NOW - minute)
        for at, expected in ((NOW + timedelta(seconds=59), NOW), (NOW + minute, NOW + minute)):
            with db.unit_of_work() as uow:
                uow.api_tokens.mark_used(tok.id, at, since=at - minute)
            with db.unit_of_work(readonly=True) as uow:
                got = uow.api_tokens.by_hash("a" * 64)
                assert got is not None and got.last_used_at == expected
                assert uow.api_tokens.get(other.id).last_used_at is None  # type: ignore[union-attr]

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

    def test_awaiting_configuration_held_then_released(self, db: Database) -> None:
        """An enrollment awaiting configuration since its TokenUpdate is held (with its device's serial)
        once that is older than the bound; set_awaiting_configuration(False) releases it."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            uow.enrollments.update_token(e.id, b"\x01" * 32, "magic", None, True, NOW)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.health.stuck_awaiting(t.id, NOW) == []
            assert uow.health.stuck_awaiting(t.id, NOW + timedelta(minutes=1)) == [
                (e.id, "UDID-1", "SER1", NOW)
            ]
        with db.unit_of_work() as uow:
            uow.enrollments.set_awaiting_configuration(e.id, False)
        with db.unit_of_work(readonly=True) as uow:
            got = uow.enrollments.get(t.id, e.id)
            assert got is not None and not got.awaiting_configuration
            assert uow.health.stuck_awaiting(t.id, NOW + timedelta(minutes=1)) == []


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

    def test_pending_count(self, db: Database) -> None:
        """pending_count counts queued, sent and NotNow commands of every tenant, not answered ones."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            assert uow.commands.pending_count() == 0
            for n in (1, 2, 3, 4):
                uow.commands.enqueue(command(t, e, n))
            uow.commands.mark_sent(uow.commands.get_by_uuid(t.id, "cmd-2").id, NOW)  # type: ignore[union-attr]
            uow.commands.record_result(e.id, "cmd-3", CommandStatus.NOT_NOW, b"r", [], NOW)
            uow.commands.record_result(e.id, "cmd-4", CommandStatus.ACKNOWLEDGED, b"r", [], NOW)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.commands.pending_count() == 3

    def test_list_for_device_until(self, db: Database) -> None:
        """A device's commands, newest first, only those created before ``until`` when it is given."""
        t, _, d, e = seed(db)
        with db.unit_of_work() as uow:
            for n in (1, 2, 3):
                uow.commands.enqueue(command(t, e, n))
        with db.unit_of_work(readonly=True) as uow:
            every = uow.commands.list_for_device(t.id, d.id)
            assert [c.command_uuid for c in every] == ["cmd-3", "cmd-2", "cmd-1"]
            older = uow.commands.list_for_device(t.id, d.id, until=NOW + timedelta(seconds=3), limit=1)
            assert [c.command_uuid for c in older] == ["cmd-2"]
            assert uow.commands.list_for_device(t.id, d.id, until=NOW) == []

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

    def test_incident_facts_count_in_the_window(self, db: Database) -> None:
        """Incident facts: failures per reason with first and last time, distinct non-empty users and
        devices (UDID, else serial) of the failures and of them with the attempts at the steps, each
        failure's step and platform fields once, and the oldest failures as a sample; events outside
        the window, succeeded, of other steps or reasons, or another tenant's are left out."""
        t, _, _, _ = seed(db)
        lim, sig = "DEVICE_LIMIT_REACHED", "SIGNATURE_INVALID"
        rows: list[
            tuple[str, int, Step, Outcome, str | None, str | None, str | None, str | None, dict[str, Any]]
        ] = [
            # (tenant, minutes, step, outcome, reason, upn, udid, serial, detail)
            (t.id, 0, Step.PORTAL, Outcome.FAILED, lim, "ana@a.example", None, "S1", {"platform": "ios"}),
            (
                t.id,
                1,
                Step.PORTAL,
                Outcome.FAILED,
                lim,
                "bo@a.example",
                "U2",
                "S2",
                {"type": "ade", "x": 1, "product": None},
            ),
            (t.id, 1, Step.PROFILE, Outcome.FAILED, lim, "ana@a.example", None, "S1", {"type": True}),
            (
                t.id,
                2,
                Step.SCEP,
                Outcome.FAILED,
                sig,
                "",
                "",
                "",
                {"product": "iPad13,1", "platform": ["ios"]},
            ),
            (t.id, 3, Step.PORTAL, Outcome.OK, lim, "cy@a.example", None, "S3", {}),  # not failed: attempt
            (t.id, 4, Step.AUTHENTICATE, Outcome.OK, None, "di@a.example", "U4", None, {}),
            (t.id, 5, Step.COMMAND, Outcome.FAILED, "PUSH_REJECTED", "ed@a.example", "U5", None, {}),
            (t.id, 6, Step.CHECKOUT, Outcome.OK, None, "fa@a.example", "U6", None, {}),
            (t.id, 90, Step.PORTAL, Outcome.FAILED, lim, "late@a.example", None, "S9", {}),  # after until
            (t.id, 7, Step.PORTAL, Outcome.FAILED, sig, None, None, None, {"type": 3}),
            ("other-tenant", 1, Step.PORTAL, Outcome.FAILED, lim, "x@b.example", None, "SX", {}),
        ]
        with db.unit_of_work() as uow:
            for tid, m, step, outcome, reason, upn, udid, serial, detail in rows:
                uow.events.append(
                    Event(
                        tenant_id=tid,
                        at=NOW + timedelta(minutes=m),
                        step=step,
                        outcome=outcome,
                        reason=reason,
                        upn=upn,
                        udid=udid,
                        serial=serial,
                        detail=detail,
                    )
                )
        steps = ("portal", "profile", "scep", "authenticate")
        with db.unit_of_work(readonly=True) as uow:
            f = uow.events.incident_facts(t.id, [lim, sig], steps, NOW, NOW + timedelta(minutes=60), sample=2)
            none = uow.events.incident_facts(t.id, ["NOPE"], steps, NOW, NOW + timedelta(minutes=60))
        assert f.failures == {
            lim: (3, NOW, NOW + timedelta(minutes=1)),
            sig: (2, NOW + timedelta(minutes=2), NOW + timedelta(minutes=7)),
        }
        assert (f.failing_users, f.failing_devices) == (2, 2)  # ana, bo; S1, U2
        assert (f.attempting_users, f.attempting_devices) == (4, 4)  # + cy, di; + S3, U4
        assert sorted(map(repr, f.kinds)) == sorted(  # by repr: True is not 1, 3 is not "3"
            map(
                repr,
                [
                    ("portal", {"platform": "ios"}),
                    ("portal", {"type": "ade"}),
                    ("profile", {"type": True}),
                    ("scep", {"product": "iPad13,1", "platform": ["ios"]}),
                    ("portal", {"type": 3}),
                ],
            )
        )
        assert [(e.step, e.at) for e in f.samples[lim]] == [
            (Step.PORTAL, NOW),
            (Step.PROFILE, NOW + timedelta(minutes=1)),  # of equal times, the greater id first
        ]
        assert [e.at for e in f.samples[sig]] == [NOW + timedelta(minutes=2), NOW + timedelta(minutes=7)]
        assert none.failures == {} and none.samples == {} and none.kinds == []
        assert (none.failing_users, none.attempting_users, none.attempting_devices) == (0, 4, 4)

    def test_a_serial_finds_the_events_naming_its_udid(self, db: Database) -> None:
        """By serial: the events naming it and those naming the UDID of the device known by it
        (TokenUpdate and commands name the UDID only); another device's UDID stays out."""
        t, _, d, _ = seed(db)
        with db.unit_of_work() as uow:
            for i, (serial, udid) in enumerate([(d.serial, None), (None, d.udid), (None, "UDID-2")]):
                uow.events.append(
                    Event(
                        tenant_id=t.id,
                        at=NOW + timedelta(minutes=i),
                        step=Step.TOKENUPDATE,
                        outcome=Outcome.OK,
                        serial=serial,
                        udid=udid,
                        detail={"i": i},
                    )
                )
        with db.unit_of_work(readonly=True) as uow:
            assert [e.detail["i"] for e in uow.events.query(t.id, serial=d.serial)] == [1, 0]
            assert [e.detail["i"] for e in uow.events.query(t.id, serial=d.serial, udid=d.udid)] == []
            assert [e.detail["i"] for e in uow.events.query(t.id, serial="UNKNOWN")] == []

    def test_after_id_reads_forward(self, db: Database) -> None:
        """With after_id, the events of greater id come oldest first (what `pomona events --follow` reads)."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            for i in range(4):
                uow.events.append(
                    Event(
                        tenant_id=t.id,
                        at=NOW - timedelta(minutes=i),  # later ids, earlier times: the order is by id
                        step=Step.ADMIN,
                        outcome=Outcome.OK,
                        serial="S1" if i % 2 else "S2",
                        detail={"i": i},
                    )
                )
        with db.unit_of_work(readonly=True) as uow:
            ids = sorted(e.id or 0 for e in uow.events.query(t.id))
            got = uow.events.query(t.id, after_id=ids[0])
            assert [e.detail["i"] for e in got] == [1, 2, 3]
            assert [e.detail["i"] for e in uow.events.query(t.id, after_id=ids[0], limit=1)] == [1]
            assert [e.detail["i"] for e in uow.events.query(t.id, after_id=ids[0], serial="S1")] == [1, 3]
            assert uow.events.query(t.id, after_id=ids[-1]) == []
            assert uow.events.query("other-tenant", after_id=0) == []

    def test_empty_detail_reads_back_empty(self, db: Database) -> None:
        """An event without detail and a command without an error chain read back as {} and []."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            uow.events.append(Event(tenant_id=t.id, at=NOW, step=Step.ADMIN, outcome=Outcome.OK))
            uow.commands.enqueue(command(t, e, 1))
        with db.unit_of_work(readonly=True) as uow:
            (ev,) = uow.events.query(t.id)
            assert ev.detail == {} and ev.id is not None and ev.at == NOW and ev.step is Step.ADMIN
            got = uow.commands.get_by_uuid(t.id, "cmd-1")
            assert got is not None and got.error_chain == [] and got.status is CommandStatus.QUEUED


def group(t: Tenant, name: str) -> Group:
    return Group(str(uuid.uuid4()), t.id, name, NOW)


def restriction(type_: str, priority: int, **kw: object) -> Restriction:
    cls = RESTRICTION_TYPES[RestrictionKind(type_)]
    return cls(id=str(uuid.uuid4()), name=f"{type_}-{priority}", priority=priority, is_default=False, **kw)  # type: ignore[arg-type]


class TestDevicesBulk:
    def test_lookups_by_many_keys(self, db: Database) -> None:
        """Devices and active enrollments are found by many ids, UDIDs or serials at once."""
        t, _, d, e = seed(db)
        other = Device(id=str(uuid.uuid4()), tenant_id=t.id, udid="UDID-2", serial="SER1", created_at=NOW)
        with db.unit_of_work() as uow:
            uow.devices.upsert(other)
            assert set(uow.devices.by_ids(t.id, [d.id, other.id, "nope"])) == {d.id, other.id}
            assert set(uow.devices.by_udids(t.id, ["UDID-1", "UDID-9"])) == {"UDID-1"}
            assert {x.id for x in uow.devices.by_serials(t.id, ["SER1"])["SER1"]} == {d.id, other.id}
            assert uow.devices.by_ids("other-tenant", [d.id]) == {}
            assert uow.devices.count(t.id) == 2
            assert list(uow.enrollments.active_for_udids(t.id, ["UDID-1", "UDID-2"])) == ["UDID-1"]
            assert [x.id for x in uow.enrollments.active_for_device(t.id, None, "SER1")] == [e.id]
            assert uow.enrollments.active_count_for_user(e.user_id or "") == 1


class TestChannelState:
    def test_next_command_and_not_now(self, db: Database) -> None:
        """The channel read names the enrollment, the last check-in and the oldest pending command;
        skipping NotNow passes over a command the device deferred."""
        t, _, d, e = seed(db)
        assert db.channel_state("nope", skip_not_now=False) is None
        with db.unit_of_work() as uow:
            c1 = uow.commands.enqueue(command(t, e, 1))
            c2 = uow.commands.enqueue(command(t, e, 2))
            uow.commands.record_result(e.id, "cmd-1", CommandStatus.NOT_NOW, b"r", [], NOW)
        st = db.channel_state("fp1", skip_not_now=False)
        assert st is not None and (st.enrollment_id, st.device_id, st.last_seen_at) == (e.id, d.id, NOW)
        assert st.next_command_id == c1.id and st.next_command_body == b"<plist/>"
        st = db.channel_state("fp1", skip_not_now=True)
        assert st is not None and st.next_command_id == c2.id
        with db.unit_of_work() as uow:
            assert uow.commands.take(c2.id, e.id, NOW)
            assert not uow.commands.take(c2.id, "other", NOW)
        st = db.channel_state("fp1", skip_not_now=True)
        assert st is not None and st.next_command_id == c2.id  # Sent stays pending until its result


# --- the idle check-in's read on the raw driver (storage/hot_sql.py) ------------------------------


def test_same_answer_as_sqlalchemy(sql: SqlDatabase) -> None:
    """The raw read returns what the SQLAlchemy statement returns, the timestamp in UTC."""
    from pomona.storage.commands_sql import CHANNEL_ANY

    t, _, d, e = seed(sql)
    with sql.unit_of_work() as uow:
        c1 = uow.commands.enqueue(command(t, e, 1))
    st = sql.channel_state("fp1", skip_not_now=False)
    with sql.unit_of_work(readonly=True) as uow:
        row = uow.conn.execute(CHANNEL_ANY, {"fp": "fp1"}).one()
    assert st is not None
    assert (st.enrollment_id, st.tenant_id, st.udid, st.device_id) == tuple(row[:4])
    assert st.last_seen_at == NOW and st.next_command_id == c1.id == row[5]
    assert st.next_command_body == bytes(row[6])


def test_a_connection_per_thread_and_closed_at_dispose(sql: SqlDatabase) -> None:
    """Each thread (an event loop's, a worker's) reads on its own connection, closed when the thread ends
    (tests/storage/test_hot_connections.py); dispose closes them all and a later read opens a new one."""
    import asyncio
    import threading

    seed(sql)
    assert sql.channel_state("fp1", skip_not_now=False) is not None
    seen: list[object] = []

    def other() -> None:
        async def on_loop() -> None:
            assert sql.channel_state("fp1", skip_not_now=True) is not None
            seen.append(sql.hot._conn())

        asyncio.run(on_loop())

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert seen and seen[0] is not sql.hot._conn()
    assert sql.hot.open_connections() == 1  # the ended thread's connection closed with it
    sql.dispose()
    assert sql.hot.open_connections() == 0
    assert sql.channel_state("fp1", skip_not_now=False) is not None


def test_dropped_connection_is_opened_again(pg_url: str) -> None:
    """A PostgreSQL connection the server ended (restart, idle timeout, a proxy) is replaced and the read
    repeated: the device sees no error."""
    sql = SqlDatabase(pg_url)
    try:
        _dropped_and_read_again(sql)
    finally:
        sql.dispose()


def _dropped_and_read_again(sql: SqlDatabase) -> None:
    from sqlalchemy import text

    seed(sql)
    assert sql.channel_state("fp1", skip_not_now=False) is not None
    pid = sql.hot._conn().info.backend_pid
    with sql.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    st = sql.channel_state("fp1", skip_not_now=False)
    assert st is not None and st.udid == "UDID-1"
    assert sql.hot._conn().info.backend_pid != pid


class TestGroups:
    def test_groups_and_members(self, db: Database) -> None:
        """Groups are listed by name, members are added once, counted and removed."""
        t, u, _, _ = seed(db)
        g1, g2 = group(t, "Sales"), group(t, "Engineering")
        with db.unit_of_work() as uow:
            uow.groups.add(g1)
            uow.groups.add(g2)
            assert uow.groups.add_member(g1.id, u.id) is True
            assert uow.groups.add_member(g1.id, u.id) is False
        with db.unit_of_work() as uow:
            assert [g.name for g in uow.groups.list(t.id)] == ["Engineering", "Sales"]
            got = uow.groups.by_name(t.id, "Sales")
            assert got is not None and got.id == g1.id and got == g1  # created_at comes back in UTC
            assert uow.groups.names(t.id, {g1.id, "nope"}) == {g1.id: "Sales"}
            assert uow.groups.member_count(g1.id) == 1 and uow.users.group_ids(u.id) == {g1.id}
            uow.groups.remove_member(g1.id, u.id)
            assert uow.groups.member_count(g1.id) == 0
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.groups.add(group(t, "Sales"))


class TestRestrictions:
    def test_round_trip(self, db: Database) -> None:
        """Restrictions keep their settings and groups, sort by type then priority, and change in place."""
        t, _, _, _ = seed(db)
        g = group(t, "Sales")
        limit = restriction("limit", 1, device_limit=3)
        plat = restriction("platform", 2, ios_allowed=False, ios_min_os="17.0", group_ids=frozenset({g.id}))
        with db.unit_of_work() as uow:
            uow.groups.add(g)
            uow.restrictions.add(plat, t.id, NOW)
            uow.restrictions.add(limit, t.id, NOW)
        with db.unit_of_work() as uow:
            got = uow.restrictions.list(t.id)
            assert [r.id for r in got] == [limit.id, plat.id]
            assert got[1] == plat and got[0].device_limit == 3
            uow.restrictions.update(plat.id, NOW, ios_allowed=True, name="renamed", priority=5)
            uow.restrictions.unassign(plat.id, g.id)
            uow.restrictions.assign(limit.id, g.id)
            uow.restrictions.assign(limit.id, g.id)
        with db.unit_of_work() as uow:
            by_id = {r.id: r for r in uow.restrictions.list(t.id)}
            p = by_id[plat.id]
            assert p.ios_allowed and p.name == "renamed" and p.priority == 5 and p.group_ids == frozenset()
            assert by_id[limit.id].group_ids == {g.id}
            uow.restrictions.delete(limit.id)
            assert [r.id for r in uow.restrictions.list(t.id)] == [plat.id]
            assert uow.restrictions.list("other-tenant") == []

    def test_priority_unique_per_type(self, db: Database) -> None:
        """Two restrictions of one type cannot share a priority."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            uow.restrictions.add(restriction("limit", 1), t.id, NOW)
            uow.restrictions.add(restriction("platform", 1), t.id, NOW)
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.restrictions.add(restriction("limit", 1), t.id, NOW)


class TestCorporateAndBlocks:
    def test_corporate_identifiers(self, db: Database) -> None:
        """Upserts add new identifiers only; a device matches by serial before IMEI, spaces ignored."""
        t, _, _, _ = seed(db)

        def ident(kind: str, value: str, description: str | None = None) -> CorporateIdentifier:
            return CorporateIdentifier(
                str(uuid.uuid4()), t.id, kind, value, description, "not_contacted", None, NOW
            )

        with db.unit_of_work() as uow:
            assert uow.corporate.upsert_many(t.id, [ident("serial", "SER1"), ident("imei", "3561")]) == 2
            assert uow.corporate.upsert_many(t.id, [ident("serial", "SER1", "desk 4")]) == 0
        with db.unit_of_work() as uow:
            serial = uow.corporate.get(t.id, "serial", "SER1")
            assert serial is not None and serial.description == "desk 4" and serial.state == "not_contacted"
            m = uow.corporate.match(t.id, "ser 1", "3561")
            assert m is not None and m.kind == "serial"
            m = uow.corporate.match(t.id, "OTHER", "35 61")
            assert m is not None and m.kind == "imei"
            assert uow.corporate.match(t.id, None, None) is None
            uow.corporate.set_state(serial.id, "enrolled", NOW)
            assert [(c.kind, c.state) for c in uow.corporate.list(t.id)] == [
                ("imei", "not_contacted"),
                ("serial", "enrolled"),
            ]
            assert uow.corporate.delete(t.id, "imei", "3561") and not uow.corporate.delete(
                t.id, "imei", "3561"
            )
            assert len(uow.corporate.list(t.id)) == 1

    def test_blocks(self, db: Database) -> None:
        """A block by serial or UDID is added once, found and removed."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            uow.blocks.add(BlockedDevice(str(uuid.uuid4()), t.id, "serial", "SER1", "lost", NOW))
            uow.blocks.add(BlockedDevice(str(uuid.uuid4()), t.id, "serial", "SER1", "again", NOW))
            uow.blocks.add(
                BlockedDevice(str(uuid.uuid4()), t.id, "udid", "U9", None, NOW + timedelta(seconds=1))
            )
        with db.unit_of_work() as uow:
            assert [b.value for b in uow.blocks.list(t.id)] == ["SER1", "U9"]
            assert uow.blocks.is_blocked(t.id, serial="SER1") and uow.blocks.is_blocked(t.id, udid="U9")
            assert not uow.blocks.is_blocked(t.id, serial="U9") and not uow.blocks.is_blocked(t.id)
            assert uow.blocks.remove(t.id, "serial", "SER1") and not uow.blocks.remove(t.id, "serial", "SER1")
            assert not uow.blocks.is_blocked(t.id, serial="SER1")


class TestFailureReport:
    def test_grouped_counts(self, db: Database) -> None:
        """Failure events are counted by reason, platform, step and day, within the days asked for."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            for at, reason, detail in [
                (NOW, "A", {"product": "iPhone15,2"}),
                (NOW, "A", {"product": "iPad13,1", "type": "corporate"}),
                (NOW + timedelta(days=1), "B", {}),
                (NOW + timedelta(days=5), "A", {}),
            ]:
                uow.events.append(
                    Event(
                        tenant_id=t.id,
                        at=at,
                        step=Step.SCEP,
                        outcome=Outcome.FAILED,
                        reason=reason,
                        detail=detail,
                    )
                )
            uow.events.append(Event(tenant_id=t.id, at=NOW, step=Step.SCEP, outcome=Outcome.OK))
        until = NOW + timedelta(days=1)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.events.failure_report(t.id, NOW, until, "reason") == [("A", 2), ("B", 1)]
            assert uow.events.failure_report(t.id, NOW, until, "platform") == [
                ("ios", 1),
                ("ipados", 1),
                ("unknown", 1),
            ]
            assert uow.events.failure_report(t.id, NOW, until, "type") == [("byod", 2), ("corporate", 1)]
            assert uow.events.failure_report(t.id, NOW, until, "day") == [
                ("2026-11-26", 2),
                ("2026-11-27", 1),
            ]
            assert uow.events.failure_report(t.id, NOW, NOW + timedelta(days=9), "step") == [("scep", 4)]
            assert uow.events.failure_report("other-tenant", NOW, until, "reason") == []


class TestReportListing:
    def test_rollup_rows_and_enrollments_by_day(self, db: Database) -> None:
        """The console's report reads the roll-up's rows of the days asked for, and counts the enrollments
        started per UTC day (one just before midnight UTC stays on its day)."""
        t, _, _, e = seed(db)  # one enrollment started at NOW
        late = NOW.replace(hour=23, minute=59, second=30)
        with db.unit_of_work() as uow:
            uow.enrollments.add(replace(e, id=str(uuid.uuid4()), cert_fingerprint="fp2", started_at=late))
            uow.enrollments.add(
                replace(e, id=str(uuid.uuid4()), cert_fingerprint="fp3", started_at=NOW + timedelta(days=1))
            )
            uow.enrollments.add(
                replace(e, id=str(uuid.uuid4()), cert_fingerprint="fp4", started_at=NOW + timedelta(days=9))
            )
            for at, reason, detail in [
                (NOW, "A", {"product": "iPhone15,2"}),
                (NOW, "A", {"product": "iPhone15,2"}),
                (NOW + timedelta(days=1), "B", {"type": "ade"}),
                (NOW + timedelta(days=5), "A", {}),
            ]:
                uow.events.append(Event(t.id, at, Step.SCEP, Outcome.FAILED, reason=reason, detail=detail))
        since, until = NOW.replace(hour=0, minute=0), NOW.replace(hour=0, minute=0) + timedelta(days=2)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.report_listing.failure_rows(t.id, since, until) == [
                ("2026-11-26", "A", "ios", "byod", "scep", 2),
                ("2026-11-27", "B", "unknown", "ade", "scep", 1),
            ]
            assert uow.report_listing.enrollments_by_day(t.id, since, until) == {
                "2026-11-26": 2,
                "2026-11-27": 1,
            }
            assert uow.report_listing.failure_rows("other-tenant", since, until) == []
            assert uow.report_listing.enrollments_by_day("other-tenant", since, until) == {}


def pushable(db: Database, t: Tenant, e: Enrollment) -> None:
    with db.unit_of_work() as uow:
        uow.tenants.set_push_cert(t.id, b"c", b"k", e.topic, NOW + timedelta(days=300))
        uow.enrollments.update_token(e.id, b"\x01" * 32, "magic", None, False, NOW)


class TestPushQueue:
    def test_claim_leases_and_coalesces(self, db: Database) -> None:
        """Requests coalesce to one row; a claimed row is leased to its claimer until the lease passes."""
        t, _, _, e = seed(db)
        pushable(db, t, e)
        later = NOW + timedelta(seconds=1)
        with db.unit_of_work() as uow:
            uow.commands.enqueue(command(t, e, 1))
            uow.pushes.request(t.id, [e.id, e.id], NOW)
            uow.pushes.request(t.id, [e.id], NOW)
            assert uow.pushes.queue_size() == 1 and uow.pushes.queue_size(t.id) == 1
        with db.unit_of_work() as uow:
            (job,) = uow.pushes.claim(later, later + timedelta(seconds=60), "a", 10)
            assert uow.pushes.claim(later, later + timedelta(seconds=60), "b", 10) == []
        assert (job.enrollment_id, job.kind, job.topic, job.tenant_topic) == (
            e.id,
            PushKind.COMMAND,
            e.topic,
            e.topic,
        )
        assert job.has_pending and job.push_token == b"\x01" * 32 and job.push_magic == "magic"
        assert not job.token_invalid and not job.tenant_cert_invalid and job.last_seen_at == NOW
        after_lease = later + timedelta(seconds=61)
        with db.unit_of_work() as uow:
            (again,) = uow.pushes.claim(after_lease, after_lease + timedelta(seconds=60), "b", 10)
            assert again.enrollment_id == e.id

    def test_reschedule_and_drop_only_by_claimer(self, db: Database) -> None:
        """Only the claimer reschedules or drops a row; a rescheduled row is due again at its new time."""
        t, _, _, e = seed(db)
        pushable(db, t, e)
        with db.unit_of_work() as uow:
            uow.pushes.request(t.id, [e.id], NOW)
            uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "a", 10)
            uow.pushes.drop("b", [e.id])
            uow.pushes.reschedule("b", [PushReschedule(e.id, NOW, 9, 9, NOW, "X")])
            assert uow.pushes.queue_size() == 1
            due = NOW + timedelta(minutes=5)
            uow.pushes.reschedule("a", [PushReschedule(e.id, due, 1, 2, NOW, "PUSH_UNREACHABLE")])
            assert uow.pushes.claim(due - timedelta(seconds=1), due + timedelta(seconds=60), "a", 10) == []
            (job,) = uow.pushes.claim(due, due + timedelta(seconds=60), "a", 10)
            assert (job.attempts, job.failures, job.first_pushed_at) == (1, 2, NOW)
            uow.pushes.drop("a", [e.id])
            assert uow.pushes.queue_size() == 0

    def test_command_resets_backoff_canary_does_not(self, db: Database) -> None:
        """A new command makes the row a due command push with backoff reset; a canary only makes it due."""
        t, _, _, e = seed(db)
        pushable(db, t, e)
        later = NOW + timedelta(hours=1)
        with db.unit_of_work() as uow:
            uow.pushes.request(t.id, [e.id], NOW)
            uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "a", 10)
            uow.pushes.reschedule("a", [PushReschedule(e.id, later, 3, 1, NOW, None)])
            uow.pushes.request(t.id, [e.id], NOW, kind=PushKind.CANARY)
            (job,) = uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "a", 10)
            assert (job.kind, job.attempts) == (PushKind.COMMAND, 3)
            uow.pushes.request(t.id, [e.id], NOW)
            (job,) = uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "b", 10)
            assert (job.attempts, job.failures, job.first_pushed_at) == (0, 0, None)

    def test_token_update_requeues_pending(self, db: Database) -> None:
        """A TokenUpdate clears a dead token and queues a push when commands wait."""
        t, _, _, e = seed(db)
        pushable(db, t, e)
        with db.unit_of_work() as uow:
            uow.reachability.mark_token_invalid([TokenRefusal(e.id, NOW, "PUSH_TOKEN_UNREGISTERED")])
            uow.pushes.token_updated(e.id, t.id, NOW)
            assert uow.pushes.queue_size() == 0  # nothing waits
            uow.commands.enqueue(command(t, e, 1))
            uow.reachability.mark_token_invalid([TokenRefusal(e.id, NOW, "PUSH_TOKEN_UNREGISTERED")])
            (r,) = uow.reachability.reachability(t.id)
            assert r.push_token_invalid_reason == "PUSH_TOKEN_UNREGISTERED" and r.last_push_at == NOW
            uow.pushes.token_updated(e.id, t.id, NOW)
            assert uow.pushes.queue_size() == 1
            (job,) = uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "a", 10)
            assert not job.token_invalid


class TestPushState:
    def test_reachability(self, db: Database) -> None:
        """Pushes are recorded per enrollment; silent ones past a time are listed as unanswered."""
        t, _, d, e = seed(db)
        first = NOW + timedelta(minutes=1)
        with db.unit_of_work() as uow:
            uow.reachability.record_pushes([PushAttempt(e.id, first, "delivered", first)])
        with db.unit_of_work(readonly=True) as uow:
            (r,) = uow.reachability.reachability(t.id)
            assert (r.enrollment_id, r.device_id, r.udid, r.serial) == (e.id, d.id, "UDID-1", "SER1")
            assert (r.last_push_at, r.last_push_status, r.first_unanswered_push_at) == (
                first,
                "delivered",
                first,
            )
            assert uow.reachability.unanswered(t.id, NOW) == []
            assert [x.enrollment_id for x in uow.reachability.unanswered(t.id, first)] == [e.id]
            assert uow.reachability.last_pushes([e.id, "nope"]) == {e.id: (first, "delivered")}
            assert uow.reachability.seen_since([d.id]) == {d.id: NOW}
            assert uow.reachability.pick_canary(t.id, e.topic, 5, NOW) == []  # no push token yet
        pushable(db, t, e)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.reachability.pick_canary(t.id, e.topic, 5, NOW) == [(e.id, d.id)]
            assert uow.reachability.pick_canary(t.id, "other.topic", 5, NOW) == []

    def test_cert_state_and_credentials(self, db: Database) -> None:
        """A refusal is set once; a new certificate clears it and the pending key, and makes pushes due."""
        t, _, _, e = seed(db)
        with db.unit_of_work() as uow:
            assert uow.push_certs.cert_state(t.id) == PushCertState()
            assert uow.push_certs.credentials(e.topic) is None
        pushable(db, t, e)
        later = NOW + timedelta(hours=1)
        with db.unit_of_work() as uow:
            creds = uow.push_certs.credentials(e.topic)
            assert creds == PushCredentials(t.id, b"c", b"k")
            uow.push_certs.set_pending_key(t.id, b"sealed")
            assert uow.push_certs.set_cert_invalid(t.id, NOW, "APNS_CERT_INVALID")
            assert not uow.push_certs.set_cert_invalid(t.id, NOW, "APNS_CERT_INVALID")
            st = uow.push_certs.cert_state(t.id)
            assert (st.invalid_at, st.invalid_reason, st.pending_key) == (NOW, "APNS_CERT_INVALID", b"sealed")
            uow.pushes.request(t.id, [e.id], later)
            (job,) = uow.pushes.claim(later, later + timedelta(seconds=60), "a", 10)
            assert job.tenant_cert_invalid
            uow.push_certs.cert_changed(t.id, NOW, "admin@acme.example")
            st = uow.push_certs.cert_state(t.id)
            assert st == PushCertState(None, None, "admin@acme.example", NOW, None)
            (job,) = uow.pushes.claim(NOW, NOW + timedelta(seconds=60), "b", 10)  # due now, lease cleared
            assert not job.tenant_cert_invalid

    def test_reenrollment(self, db: Database) -> None:
        """A replaced topic marks its active enrollments once; they are counted and listed."""
        t, u, _, e = seed(db)
        with db.unit_of_work() as uow:
            assert uow.reenrollments.active_on_topic(t.id, e.topic) == 1
            assert uow.reenrollments.mark_reenroll_required(t.id, e.topic, NOW) == 1
            assert uow.reenrollments.mark_reenroll_required(t.id, e.topic, NOW) == 0
        with db.unit_of_work(readonly=True) as uow:
            count, rows = uow.reenrollments.reenroll_required(t.id)
            assert count == 1 and rows == [ReEnrollment(e.id, "UDID-1", "SER1", e.topic, NOW, u.id)]
            assert uow.reenrollments.reenroll_required(t.id, limit=0) == (1, [])

    def test_webhooks(self, db: Database) -> None:
        """A tenant has one webhook; deliveries are listed newest first."""
        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            assert uow.webhooks.webhook(t.id) is None
            uow.webhooks.set_webhook(t.id, "https://a.example/hook", b"s1", NOW)
            uow.webhooks.set_webhook(t.id, "https://b.example/hook", b"s2", NOW)
            for n in (1, 2):
                uow.webhooks.record_delivery(
                    WebhookDelivery(t.id, NOW, "https://b.example/hook", f"C{n}", n, "delivered", 200, None)
                )
        with db.unit_of_work(readonly=True) as uow:
            assert uow.webhooks.webhook(t.id) == ("https://b.example/hook", b"s2")
            got = uow.webhooks.deliveries(t.id)
            assert [(d.codes, d.attempts, d.at, d.http_status) for d in got] == [
                ("C2", 2, NOW, 200),
                ("C1", 1, NOW, 200),
            ]
            assert (
                all(d.id is not None for d in got) and uow.webhooks.deliveries(t.id, limit=1)[0].codes == "C2"
            )


class TestHealthFindings:
    def test_record_resolve_notify(self, db: Database) -> None:
        """Findings are new once, kept while found, resolved when gone, and marked notified."""
        t, u, _, _ = seed(db)
        a = Finding(ReasonCode.APNS_CERT_EXPIRING, Severity.WARNING, "tenant", {"n": 1})
        b = Finding(ReasonCode.DEVICE_UNRESPONSIVE, Severity.CRITICAL, "device:U1")
        later = NOW + timedelta(hours=1)
        with db.unit_of_work() as uow:
            assert uow.health.record(t.id, [a, b], NOW) == [a, b]
            assert uow.health.record(t.id, [a], later) == []
            uow.health.mark_notified(t.id, [(a.code.value, "tenant")], NOW)
        with db.unit_of_work(readonly=True) as uow:
            (open_,) = uow.health.open_findings(t.id)
            assert (open_.finding.key, dict(open_.finding.facts)) == (a.key, {"n": 1})
            assert (open_.first_seen, open_.last_seen) == (NOW, later)
            assert uow.health.unlicensed_users(t.id) == 1
            assert uow.health.mfa_users(t.id) == 0
        with db.unit_of_work() as uow:
            uow.users.update(t.id, u.id, mfa_required=True)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.health.mfa_users(t.id) == 1


class TestPortalSessions:
    def test_sessions_round_trip_and_revocation(self, db: Database) -> None:
        """A session reads back by its id hash; revoking one, or every one of a user, sets revoked_at; an
        expired one is purged."""
        from pomona.ports import PortalSession

        t, u, _, _ = seed(db)
        live = PortalSession(t.id, u.id, NOW, NOW + timedelta(hours=8), "stamp")
        old = PortalSession(t.id, u.id, NOW - timedelta(days=1), NOW - timedelta(hours=1), "stamp")
        with db.unit_of_work() as uow:
            uow.portal_sessions.add("h1", live)
            uow.portal_sessions.add("h2", live)
            uow.portal_sessions.add("h3", old)
        with db.unit_of_work() as uow:
            assert uow.portal_sessions.get("h1") == live
            assert uow.portal_sessions.get("nope") is None
            uow.portal_sessions.revoke("h1", NOW, "signout")
        with db.unit_of_work() as uow:
            got = uow.portal_sessions.get("h1")
            assert got is not None and (got.revoked_at, got.revoked_why) == (NOW, "signout")
            assert uow.portal_sessions.revoke_user(t.id, u.id, NOW + timedelta(minutes=1), "user") == 2
            uow.portal_sessions.purge(t.id, u.id, NOW)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.portal_sessions.get("h3") is None
            h2 = uow.portal_sessions.get("h2")
            assert h2 is not None and (h2.revoked_at, h2.revoked_why) == (NOW + timedelta(minutes=1), "user")


class TestConsoleStores:
    def test_admin_accounts(self, db: Database) -> None:
        """Accounts read back by id and by email (any case), list oldest first, update, and an email is
        taken once."""
        from pomona.ports import AdminAccount

        t, _, _, _ = seed(db)
        op = AdminAccount("a1", "op@example.com", "operator", None, "h1", NOW)
        hd = AdminAccount("a2", "hd@acme.example", "helpdesk", t.id, "h2", NOW + timedelta(seconds=1))
        with db.unit_of_work() as uow:
            uow.admins.add(op)
            uow.admins.add(hd)
        with pytest.raises(ConflictError), db.unit_of_work() as uow:
            uow.admins.add(AdminAccount("a3", "op@example.com", "admin", t.id, "h3", NOW))
        with db.unit_of_work() as uow:
            assert uow.admins.get("a1") == op and uow.admins.by_email("HD@acme.example") == hd
            assert uow.admins.list() == [op, hd]
            uow.admins.update(
                AdminAccount("a2", "hd@acme.example", "helpdesk", t.id, "h9", hd.created_at, False, "S")
            )
        with db.unit_of_work(readonly=True) as uow:
            got = uow.admins.get("a2")
            assert got is not None and (got.password_hash, got.enabled, got.totp_secret) == ("h9", False, "S")

    def test_console_sessions(self, db: Database) -> None:
        """A session reads back by its hash; revoking it or every one of an account sets revoked_at; an
        expired one is purged."""
        from pomona.ports import AdminAccount, ConsoleSession

        seed(db)
        live = ConsoleSession("a1", NOW, NOW + timedelta(hours=8), "stamp")
        old = ConsoleSession("a1", NOW - timedelta(days=1), NOW - timedelta(hours=1), "stamp")
        with db.unit_of_work() as uow:
            uow.admins.add(AdminAccount("a1", "op@example.com", "operator", None, "h1", NOW))
            for h, s in (("h1", live), ("h2", live), ("h3", old)):
                uow.console_sessions.add(h, s)
        with db.unit_of_work() as uow:
            assert uow.console_sessions.get("h1") == live and uow.console_sessions.get("no") is None
            uow.console_sessions.revoke("h1", NOW, "signout")
            assert uow.console_sessions.revoke_admin("a1", NOW, "password") == 2
            uow.console_sessions.purge("a1", NOW)
        with db.unit_of_work(readonly=True) as uow:
            h1, h2 = uow.console_sessions.get("h1"), uow.console_sessions.get("h2")
            assert h1 is not None and h1.revoked_why == "signout"
            assert h2 is not None and (h2.revoked_at, h2.revoked_why) == (NOW, "password")
            assert uow.console_sessions.get("h3") is None

    def test_audit_log(self, db: Database) -> None:
        """Entries list newest first, per tenant or all, paged by id, with their detail."""
        from pomona.ports import AuditEntry

        t, _, _, _ = seed(db)
        with db.unit_of_work() as uow:
            uow.audit.append(AuditEntry(NOW, "op@example.com", "admin.create", None, "hd@x", "cli"))
            uow.audit.append(
                AuditEntry(NOW, "hd@x", "device.retire", t.id, "UDID-1", "10.0.0.1", {"serial": "S"})
            )
        with db.unit_of_work(readonly=True) as uow:
            every = uow.audit.list()
            assert [e.action for e in every] == ["device.retire", "admin.create"]
            assert every[0].detail == {"serial": "S"} and every[0].source == "10.0.0.1"
            assert [e.action for e in uow.audit.list(t.id)] == ["device.retire"]
            assert [e.action for e in uow.audit.list(before_id=every[0].id)] == ["admin.create"]

    def test_audit_log_filters(self, db: Database) -> None:
        """The filters: actor exact, action a prefix (its % and _ taken literally), source exact, at in
        [since, until)."""
        from pomona.ports import AuditEntry

        t, _, _, _ = seed(db)
        later = NOW + timedelta(days=2)
        with db.unit_of_work() as uow:
            uow.audit.append(AuditEntry(NOW, "a@x", "token.create", t.id, None, "cli"))
            uow.audit.append(AuditEntry(later, "b@x", "token.revoke", t.id, None, "10.0.0.1"))
            uow.audit.append(AuditEntry(later, "a@x", "device.retire", t.id, None, "10.0.0.1"))
        with db.unit_of_work(readonly=True) as uow:

            def acts(**kw: Any) -> list[str]:
                return [e.action for e in uow.audit.list(t.id, **kw)]

            assert acts(actor="a@x") == ["device.retire", "token.create"]
            assert acts(action="token.") == ["token.revoke", "token.create"]
            assert acts(action="token%") == [] and acts(action="token_") == []
            assert acts(source="10.0.0.1", actor="b@x") == ["token.revoke"]
            assert acts(since=NOW + timedelta(days=1)) == ["device.retire", "token.revoke"]
            assert acts(until=NOW + timedelta(days=1)) == ["token.create"]

    @pytest.mark.parametrize("sort", ["name", "serial", "last_seen"])
    def test_device_listing_keyset(self, db: Database, sort: str) -> None:
        """Keyset pages of 2 walk every device once, in order, empty sort values last; the prefix filter
        matches a name or a serial number."""
        from pomona.ports import DeviceCursor

        t, _, d0, _ = seed(db)
        names = ["b", None, "a", "a", None]
        devices = [
            Device(
                id=f"id-{i}",
                tenant_id=t.id,
                udid=f"U{i}",
                serial=None if n is None else f"S{n}{i}",
                device_name=n,
                last_seen_at=None if n is None else NOW - timedelta(minutes=i % 3),
                created_at=NOW,
            )
            for i, n in enumerate(names)
        ]
        with db.unit_of_work() as uow:
            for d in devices:
                uow.devices.upsert(d)
        field = {"name": "device_name", "serial": "serial", "last_seen": "last_seen_at"}[sort]
        every = [d0, *devices]
        valued = sorted((d for d in every if getattr(d, field) is not None), key=lambda d: d.id)
        valued.sort(key=lambda d: getattr(d, field), reverse=sort == "last_seen")
        expected = [d.id for d in valued] + sorted(d.id for d in every if getattr(d, field) is None)
        seen: list[str] = []
        after = None
        with db.unit_of_work(readonly=True) as uow:
            while True:
                page = uow.device_listing.page(t.id, sort=sort, after=after, limit=2)  # type: ignore[arg-type]
                seen += [d.id for d in page]
                if len(page) < 2:
                    break
                v = getattr(page[-1], field)
                after = DeviceCursor(v, page[-1].id, v is None)
            assert seen == expected
            # the same walk, filtered: devices whose name or serial starts with "S" (every serial here)
            matching = [i for i in expected if next(d for d in every if d.id == i).serial]
            seen, after = [], None
            while True:
                page = uow.device_listing.page(t.id, sort=sort, after=after, prefix="S", limit=1)  # type: ignore[arg-type]
                if not page:
                    break
                seen.append(page[0].id)
                v = getattr(page[0], field)
                after = DeviceCursor(v, page[0].id, v is None)
            assert seen == matching
            assert uow.device_listing.count(t.id) == 6
            assert uow.device_listing.count(t.id, prefix="a") == 2
            assert {d.id for d in uow.device_listing.page(t.id, prefix="Sb")} == {"id-0"}
            assert uow.device_listing.page("other-tenant") == []

    def test_device_listing_filters(self, db: Database) -> None:
        """Each DeviceFilter (platform, OS prefix and versions, ownership, enrollment type, state, last
        check-in) lists the same devices on every backend, combined with AND, pages and counts alike."""
        from pomona.domain.models import BlockedDevice, CorporateIdentifier
        from pomona.ports import DeviceFilter, PushAttempt

        t, _, d0, _ = seed(db)  # d0: no product, no OS, an active BYOD enrollment, seen NOW
        specs = [  # name, product, OS, enrollment (type, status, awaiting) or None, days unseen, IMEI
            ("pad", "iPad13,18", "18.1", ("ade", "active", True), 0, None),
            ("corp", "iPhone15,2", "16.7.2", ("corporate", "active", False), 40, None),
            ("ret", "iPhone15,2", "9.3", ("byod", "retired", False), None, None),
            ("pod", "iPod9,1", "17.4", None, 2, "350000000000001"),
            ("blk", "iPhone15,2", "17.0", ("byod", "blocked", False), 3, None),
        ]
        with db.unit_of_work() as uow:
            for i, (name, product, os_version, enr, days, imei) in enumerate(specs):
                uow.devices.upsert(
                    Device(
                        id=f"d-{name}",
                        tenant_id=t.id,
                        udid=f"U-{name}",
                        serial=f"S-{name}",
                        product_name=product,
                        os_version=os_version,
                        imei=imei,
                        last_seen_at=None if days is None else NOW - timedelta(days=days),
                        created_at=NOW,
                    )
                )
                if enr is not None:
                    uow.enrollments.add(
                        Enrollment(
                            id=f"e-{name}",
                            tenant_id=t.id,
                            device_id=f"d-{name}",
                            udid=f"U-{name}",
                            user_id=None,
                            status=EnrollmentStatus(enr[1]),
                            type=EnrollmentType(enr[0]),
                            cert_fingerprint=f"fp-{i}",
                            topic="com.apple.mgmt.x",
                            started_at=NOW,
                            awaiting_configuration=enr[2],
                        )
                    )
            uow.corporate.upsert_many(
                t.id,
                [
                    CorporateIdentifier(
                        "c1", t.id, "imei", "350000000000001", None, "not_contacted", None, NOW
                    )
                ],
            )
            uow.blocks.add(BlockedDevice("b1", t.id, "serial", "S-blk", None, NOW))
            uow.reachability.record_pushes(
                [PushAttempt("e-corp", NOW, "delivered", NOW - timedelta(hours=5))]
            )
        d = d0.id
        cases: list[tuple[DeviceFilter, set[str]]] = [
            (DeviceFilter(platform="ipados"), {"d-pad"}),
            (DeviceFilter(platform="ios"), {"d-corp", "d-ret", "d-pod", "d-blk"}),
            (DeviceFilter(os_prefix="17"), {"d-pod", "d-blk"}),
            (DeviceFilter(os_prefix="16.7"), {"d-corp"}),
            (DeviceFilter(os_versions=("18.1", "9.3")), {"d-pad", "d-ret"}),
            (DeviceFilter(os_versions=()), set()),
            (DeviceFilter(ownership="corporate"), {"d-pad", "d-corp", "d-pod"}),
            (DeviceFilter(ownership="personal"), {d, "d-ret", "d-blk"}),
            (DeviceFilter(enrollment_type="byod"), {d}),
            (DeviceFilter(enrollment_type="ade"), {"d-pad"}),
            (DeviceFilter(state="active"), {d, "d-pad", "d-corp"}),
            (DeviceFilter(state="awaiting"), {"d-pad"}),
            (DeviceFilter(state="unresponsive", unresponsive_before=NOW - timedelta(hours=4)), {"d-corp"}),
            (DeviceFilter(state="unresponsive", unresponsive_before=NOW - timedelta(hours=6)), set()),
            (DeviceFilter(state="retired"), {"d-ret"}),
            (DeviceFilter(state="blocked"), {"d-blk"}),
            (DeviceFilter(state="unenrolled"), {"d-ret", "d-pod", "d-blk"}),
            (DeviceFilter(seen_before=NOW - timedelta(days=1)), {"d-corp", "d-ret", "d-pod", "d-blk"}),
            (
                DeviceFilter(
                    platform="ios", state="unenrolled", seen_before=NOW - timedelta(days=2, hours=12)
                ),
                {"d-ret", "d-blk"},
            ),
        ]
        with db.unit_of_work(readonly=True) as uow:
            assert sorted(uow.device_listing.os_versions(t.id)) == ["16.7.2", "17.0", "17.4", "18.1", "9.3"]
            for f, expected in cases:
                for sort in ("name", "serial", "last_seen"):
                    got = uow.device_listing.page(t.id, sort=sort, filters=f)  # type: ignore[arg-type]
                    assert {x.id for x in got} == expected, (f, sort)
                assert uow.device_listing.count(t.id, filters=f) == len(expected), f
            assert uow.device_listing.page("other-tenant", filters=DeviceFilter(state="unenrolled")) == []

    def test_user_listing_keyset(self, db: Database) -> None:
        """Users page by UPN from a cursor, filtered by a UPN prefix (any case), with their active devices
        and group names read for a whole page at once; another tenant's users never appear."""
        t, ana, _, _ = seed(db)
        other = tenant("globex")
        users = [
            User(f"u-{n}", t.id, f"{n}@acme.example", f"{n}@acme.example", n, created_at=NOW)
            for n in ("bob", "bea", "cy")
        ]
        g1, g2 = group(t, "Staff"), group(t, "Sales")
        with db.unit_of_work() as uow:
            uow.tenants.add(other, CA_KEY)
            uow.users.add(
                User("u-x", other.id, "bob@globex.example", "bob@globex.example", "Bob", created_at=NOW)
            )
            for u in users:
                uow.users.add(u)
            uow.groups.add(g1)
            uow.groups.add(g2)
            uow.groups.add_member(g1.id, ana.id)
            uow.groups.add_member(g2.id, ana.id)
            uow.groups.add_member(g1.id, "u-bob")
        with db.unit_of_work(readonly=True) as uow:
            ul = uow.user_listing
            first = ul.page(t.id, limit=2)
            assert [u.upn for u in first] == ["ana@acme.example", "bea@acme.example"]
            assert [u.upn for u in ul.page(t.id, after=first[-1].upn)] == [
                "bob@acme.example",
                "cy@acme.example",
            ]
            assert [u.upn for u in ul.page(t.id, prefix="B")] == ["bea@acme.example", "bob@acme.example"]
            assert [u.upn for u in ul.page(t.id, prefix="b", after="bea@acme.example")] == [
                "bob@acme.example"
            ]
            assert ul.count(t.id) == 4 and ul.count(t.id, prefix="bo") == 1 and ul.count(other.id) == 1
            assert ul.device_counts([ana.id, "u-bob"]) == {ana.id: 1} and ul.device_counts([]) == {}
            assert ul.group_names([ana.id, "u-bob", "u-cy"]) == {
                ana.id: ["Sales", "Staff"],
                "u-bob": ["Staff"],
            }


def shared(db: Database) -> Any:
    """The database's shared-state ports (ports.Leases, ports.SharedLimits), which every backend has."""
    assert hasattr(db, "lease_acquire") and hasattr(db, "totp_claim")
    return db


class TestLeases:
    def test_one_holder_until_it_expires_or_releases(self, db: Database) -> None:
        """A lease has one holder; its holder renews it; another takes it once it expired or was released."""
        d = shared(db)
        assert d.lease_acquire("health", "a", NOW, 10.0)
        assert not d.lease_acquire("health", "b", NOW + timedelta(seconds=5), 10.0)
        assert d.lease_acquire("health", "a", NOW + timedelta(seconds=5), 10.0)  # renewed to +15 s
        assert d.lease_holder("health", NOW + timedelta(seconds=14)) == "a"
        assert not d.lease_acquire("health", "b", NOW + timedelta(seconds=14), 10.0)
        assert d.lease_holder("health", NOW + timedelta(seconds=15)) is None
        assert d.lease_acquire("health", "b", NOW + timedelta(seconds=15), 10.0)
        assert d.lease_holder("health", NOW + timedelta(seconds=16)) == "b"
        d.lease_release("health", "a")  # not a's: nothing happens
        assert d.lease_holder("health", NOW + timedelta(seconds=16)) == "b"
        d.lease_release("health", "b")
        assert d.lease_holder("health", NOW + timedelta(seconds=16)) is None
        assert d.lease_acquire("health", "a", NOW + timedelta(seconds=16), 10.0)

    def test_leases_are_per_name(self, db: Database) -> None:
        """Two job names are two leases: holding one says nothing of the other."""
        d = shared(db)
        assert d.lease_acquire("health", "a", NOW, 10.0)
        assert d.lease_acquire("abm-sync", "b", NOW, 10.0)
        assert (d.lease_holder("health", NOW), d.lease_holder("abm-sync", NOW)) == ("a", "b")


class TestSharedLimits:
    def test_failed_tries_count_in_a_window(self, db: Database) -> None:
        """Failures count up in the window opened by the first; a closed window starts again at one."""
        d = shared(db)
        assert d.limit_hits("k", NOW, 300.0) is None
        for i in range(3):
            d.limit_fail("k", NOW + timedelta(seconds=i), 300.0, 10)
        assert d.limit_hits("k", NOW + timedelta(seconds=10), 300.0) == (3, NOW)
        assert d.limit_hits("k", NOW + timedelta(seconds=300), 300.0) is None  # window closed
        d.limit_fail("k", NOW + timedelta(seconds=301), 300.0, 10)
        assert d.limit_hits("k", NOW + timedelta(seconds=302), 300.0) == (1, NOW + timedelta(seconds=301))
        assert d.limit_hits("other", NOW, 300.0) is None
        d.limit_reset("k")
        assert d.limit_hits("k", NOW + timedelta(seconds=302), 300.0) is None

    def test_a_try_past_the_limit_opens_the_window_again(self, db: Database) -> None:
        """Once the limit is reached, each further failure moves the window's start to its own time."""
        d = shared(db)
        for _ in range(2):
            d.limit_fail("k", NOW, 300.0, 2)
        d.limit_fail("k", NOW + timedelta(seconds=100), 300.0, 2)
        assert d.limit_hits("k", NOW + timedelta(seconds=350), 300.0) == (3, NOW + timedelta(seconds=100))

    def test_purge_removes_closed_windows(self, db: Database) -> None:
        """Purging removes the windows opened before the given time, and no other."""
        d = shared(db)
        d.limit_fail("old", NOW, 300.0, 10)
        d.limit_fail("new", NOW + timedelta(minutes=10), 300.0, 10)
        assert d.limit_purge(NOW + timedelta(minutes=5)) == 1
        assert d.limit_hits("new", NOW + timedelta(minutes=10), 300.0) is not None

    def test_totp_step_is_claimed_once(self, db: Database) -> None:
        """A TOTP step is accepted once per user, and never one at or before the last accepted."""
        d = shared(db)
        assert d.totp_claim("u1", 100)
        assert not d.totp_claim("u1", 100)
        assert not d.totp_claim("u1", 99)
        assert d.totp_claim("u2", 100)
        assert d.totp_claim("u1", 101)


class TestScepRa:
    def test_the_first_ra_kept_is_the_one_read(self, db: Database) -> None:
        """A tenant has no RA until one is kept; a second one kept later does not replace it."""
        from pomona.ports import CaKeyPair

        t, _, _, _ = seed(db)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.tenants.scep_ra(t.id) is None
        first, second = CaKeyPair(b"ra-cert-1", b"ra-key-1"), CaKeyPair(b"ra-cert-2", b"ra-key-2")
        with db.unit_of_work() as uow:
            uow.tenants.keep_scep_ra(t.id, first)
        with db.unit_of_work() as uow:
            uow.tenants.keep_scep_ra(t.id, second)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.tenants.scep_ra(t.id) == first
            assert uow.tenants.scep_ra("no-such-tenant") is None
