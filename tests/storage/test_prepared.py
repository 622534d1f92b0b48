"""The enrollment's statements on the driver inside a unit of work (storage/hot_sql.py, ``Prepared``), on
SQLite and PostgreSQL: the same rows as SQLAlchemy, in the unit of work's transaction, its errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from helpers import active_enrollment
from pomona.domain.errors import ConflictError, StorageBusyError
from pomona.domain.models import (
    Device,
    Enrollment,
    EnrollmentStatus,
    Event,
    IssuedCert,
    Outcome,
    Step,
    Tenant,
    User,
)
from pomona.storage import schema as s
from pomona.storage.database import SqlDatabase
from pomona.storage.hot_sql import DriverStatement, Prepared

NOW = datetime(2026, 11, 26, 12, 0, 5, 123456, tzinfo=UTC)


def seed(sql: SqlDatabase) -> tuple[Tenant, User, Enrollment]:
    t = Tenant(str(uuid.uuid4()), "acme", "acme.example", NOW, b"ca-cert", push_topic="com.apple.mgmt.x")
    u = User(str(uuid.uuid4()), t.id, "ana@acme.example", "ana@acme.example", "Ana", created_at=NOW)
    d = Device(str(uuid.uuid4()), t.id, "UDID-1", serial="SER1", created_at=NOW, last_seen_at=NOW)
    e = active_enrollment(
        d, "fp1", NOW, user_id=u.id, push_token=b"\x00\xfftoken", awaiting_configuration=True
    )
    with sql.unit_of_work() as uow:
        uow.tenants.add(t, b"ca-key")
        uow.users.add(u)
        uow.devices.upsert(d)
        uow.enrollments.add(e)
    return t, u, e


def cert(t: Tenant, fingerprint: str) -> IssuedCert:
    return IssuedCert(fingerprint, t.id, "1f", None, None, NOW, NOW)


def event(t: Tenant) -> Event:
    return Event(t.id, NOW, Step.PROFILE, Outcome.OK, detail={"repeat_download": False})


_ENROLLMENT_AND_SEEN = (
    select(s.enrollments, s.devices.c.last_seen_at)
    .join(s.devices, s.devices.c.id == s.enrollments.c.device_id)
    .where(s.enrollments.c.cert_fingerprint == bindparam("fp"))
)


def test_rows_as_sqlalchemy_reads_them(sql: SqlDatabase) -> None:
    """A row read on the driver is what SQLAlchemy reads: timestamps (UTC), booleans, bytes, a join."""
    seed(sql)
    prepared = Prepared(_ENROLLMENT_AND_SEEN)
    with sql.unit_of_work(readonly=True) as uow:
        ours = prepared.first(uow.conn, {"fp": "fp1"})
        theirs = dict(uow.conn.execute(_ENROLLMENT_AND_SEEN, {"fp": "fp1"}).one()._mapping)
        assert prepared.all(uow.conn, {"fp": "fp1"}) == [theirs]
        assert prepared.first(uow.conn, {"fp": "nope"}) is None
    assert ours == theirs
    assert ours["awaiting_configuration"] is True and ours["push_token"] == b"\x00\xfftoken"
    assert ours["last_seen_at"].replace(tzinfo=UTC) == NOW


def test_stores_read_back_what_they_wrote(sql: SqlDatabase) -> None:
    """The enrollment's store methods (now on the driver) give back the records written, as before."""
    t, u, e = seed(sql)
    with sql.unit_of_work() as uow:
        uow.certs.add(cert(t, "fp1"))
        uow.certs.bind("fp1", e.id)
        uow.enrollments.update_token(e.id, b"new", "magic", None, False, NOW)
        uow.events.append(event(t))
    with sql.unit_of_work(readonly=True) as uow:
        assert uow.tenants.get(t.id) == t
        assert uow.users.get(t.id, u.id) == u
        got = uow.certs.get("fp1")
        assert got is not None and got.enrollment_id == e.id and got.not_after == NOW
        active = uow.enrollments.active_by_fingerprint("fp1")
        assert active is not None and active[1] == NOW
        assert (active[0].push_token, active[0].push_magic, active[0].unlock_token) == (b"new", "magic", None)
        assert active[0].awaiting_configuration is False and active[0].token_updated_at == NOW
        assert uow.enrollments.active_for_device(t.id, "UDID-1", "SER1") == [active[0]]
        assert uow.enrollments.active_count_for_user(u.id) == 1
        assert uow.users.group_ids(u.id) == set()
        assert uow.corporate.match(t.id, "SER1", "35 000000 000000 0") is None
        assert not uow.blocks.is_blocked(t.id, serial="SER1", udid="UDID-1")
        assert [x.detail for x in uow.events.query(t.id)] == [{"repeat_download": False}]


def test_writes_are_in_the_unit_of_works_transaction(sql: SqlDatabase) -> None:
    """A unit of work that fails rolls back what its driver statements wrote (an event, a certificate)."""
    t, _, _ = seed(sql)
    with pytest.raises(RuntimeError), sql.unit_of_work() as uow:
        uow.events.append(event(t))
        uow.certs.add(cert(t, "fp-rolled-back"))
        raise RuntimeError("the step fails after its writes")
    with sql.unit_of_work(readonly=True) as uow:
        assert uow.certs.get("fp-rolled-back") is None
        assert uow.events.query(t.id) == []


def test_driver_errors_come_out_as_sqlalchemys(sql: SqlDatabase) -> None:
    """A constraint the driver reports is SQLAlchemy's IntegrityError, which the unit of work turns into
    ConflictError as before; nothing of the transaction is kept."""
    t, _, _ = seed(sql)
    with sql.unit_of_work() as uow:
        uow.certs.add(cert(t, "fp-twice"))
    with pytest.raises(ConflictError) as caught, sql.unit_of_work() as uow:
        uow.events.append(event(t))
        uow.certs.add(cert(t, "fp-twice"))
    assert isinstance(caught.value.__cause__, IntegrityError)
    with sql.unit_of_work(readonly=True) as uow:
        assert uow.events.query(t.id) == []


def test_outside_a_transaction_sqlalchemy_begins_one(sql: SqlDatabase) -> None:
    """On a connection with nothing begun, the statement runs through SQLAlchemy (which begins a
    transaction), so a rollback still undoes it: the driver alone would have committed it."""
    t, _, _ = seed(sql)
    columns = ("fingerprint", "tenant_id", "serial", "not_after", "issued_at")
    add = Prepared(s.certs.insert().values({k: bindparam(k) for k in columns}))
    get = Prepared(select(s.certs.c.fingerprint).where(s.certs.c.fingerprint == bindparam("fingerprint")))
    with sql.engine.connect() as conn:
        assert not conn.in_transaction()
        values = {
            "fingerprint": "fp-autobegin",
            "tenant_id": t.id,
            "serial": "1",
            "not_after": NOW,
            "issued_at": NOW,
        }
        add.run(conn, values)
        assert get.first(conn, {"fingerprint": "fp-autobegin"}) == {"fingerprint": "fp-autobegin"}
        conn.rollback()
        assert get.first(conn, {"fingerprint": "fp-autobegin"}) is None


def test_lock_wait_on_the_loop_is_storage_busy(sql: SqlDatabase) -> None:
    """A write that waits for a lock on the event loop's thread gives up after the loop's bound with
    StorageBusyError (PostgreSQL: raised by the driver statement itself), as through SQLAlchemy."""
    t, _, _ = seed(sql)
    holder: object
    if sql.is_sqlite:
        holder = sqlite3.connect(sql.engine.url.database or "", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
    else:
        import psycopg

        holder = psycopg.connect(sql.url.replace("postgresql+psycopg://", "postgresql://"))
        holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def on_loop() -> None:
        async def write() -> None:
            with sql.unit_of_work() as uow:
                uow.events.append(event(t))

        try:
            asyncio.run(write())
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    try:
        th = threading.Thread(target=on_loop)
        th.start()
        th.join(10)
    finally:
        holder.rollback()  # type: ignore[attr-defined]
        holder.close()  # type: ignore[attr-defined]
    assert len(errors) == 1 and isinstance(errors[0], StorageBusyError)
    with sql.unit_of_work() as uow:
        uow.events.append(event(t))  # the lock is gone: the same write goes through
    with sql.unit_of_work(readonly=True) as uow:
        assert len(uow.events.query(t.id)) == 1


_SET_TOKEN = (
    update(s.enrollments)
    .where(s.enrollments.c.id == bindparam("eid"), s.enrollments.c.status == EnrollmentStatus.ACTIVE.value)
    .values(
        push_token=bindparam("tok"),
        awaiting_configuration=bindparam("awaiting"),
        token_updated_at=bindparam("at"),
    )
)


def test_values_by_position_or_by_name_bind_the_same(sql: SqlDatabase) -> None:
    """One statement called with values in ``names`` order (the command channel) or by name (the stores)
    sends the same parameters: its constant, bytes, a boolean and a timestamp read back as written."""
    _, _, e = seed(sql)
    dialect = sql.engine.dialect
    by_position = DriverStatement(_SET_TOKEN, dialect, ["eid", "tok", "awaiting", "at"])
    by_name = DriverStatement(_SET_TOKEN, dialect)
    assert by_position.sql == by_name.sql
    for statement, values, token in (
        (by_position, (e.id, b"\x01pos", False, NOW), b"\x01pos"),
        (by_name, {"eid": e.id, "tok": b"\x02name", "awaiting": False, "at": NOW}, b"\x02name"),
    ):
        with sql.unit_of_work() as uow:
            driver = uow.conn.connection.driver_connection
            assert statement.run(driver, statement.params(values)).rowcount == 1
        with sql.unit_of_work(readonly=True) as uow:
            active = uow.enrollments.active_by_fingerprint("fp1")
        assert active is not None and active[0].push_token == token
        assert active[0].awaiting_configuration is False and active[0].token_updated_at == NOW
