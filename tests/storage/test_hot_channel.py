"""The command channel's writes on the raw driver (storage/hot_channel.py ``HotChannel``) against the same
operations over the SQLAlchemy stores (storage/channel.py ``StoreChannel``): the same rows and events on
SQLite and PostgreSQL, one transaction each; and the ``ports.ChannelTx`` contract on every backend."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from helpers import active_enrollment
from pomona.domain.errors import StorageBusyError
from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    Event,
    Outcome,
    QueuedCommand,
    Step,
    Tenant,
    User,
)
from pomona.ports import ChannelTx, Database
from pomona.storage import schema as s
from pomona.storage.channel import StoreChannel, store_take
from pomona.storage.sql import SqlDatabase

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
CHAIN: list[dict[str, object]] = [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain", "Note": "<é>"}]


def _seed(db: Database, n: int, *, last_seen: datetime | None = NOW) -> tuple[Tenant, list[Enrollment]]:
    """A tenant with a user and ``n`` enrolled devices (identities fp0, fp1, ...), each with three
    queued commands cmd-<i>-1..3."""
    t = Tenant(id=str(uuid.uuid4()), name="acme", domain="acme.example", created_at=NOW, ca_cert_pem=b"c")
    u = User(
        id=str(uuid.uuid4()),
        tenant_id=t.id,
        upn="ana@acme.example",
        email="ana@acme.example",
        display_name="Ana",
        created_at=NOW,
    )
    out = []
    with db.unit_of_work() as uow:
        uow.tenants.add(t, b"key")
        uow.users.add(u)
        for i in range(n):
            d = Device(
                id=str(uuid.uuid4()),
                tenant_id=t.id,
                udid=f"UDID-{i}",
                serial=f"SER{i}",
                created_at=NOW,
                last_seen_at=last_seen,
            )
            uow.devices.upsert(d)
            e = active_enrollment(d, f"fp{i}", NOW, user_id=u.id)
            uow.enrollments.add(e)
            uow.commands.enqueue_many(
                [
                    QueuedCommand(
                        id=0,
                        tenant_id=t.id,
                        command_uuid=f"cmd-{i}-{k}",
                        enrollment_id=e.id,
                        device_id=d.id,
                        request_type="SecurityInfo",
                        body=f"<plist>{k}</plist>".encode(),
                        status=CommandStatus.QUEUED,
                        created_at=NOW,
                    )
                    for k in (1, 2, 3)
                ]
            )
            out.append(e)
    return t, out


def _script(ch: ChannelTx, fingerprint: str, n: int) -> list[object]:
    """A device's morning: NotNow to its first command, Error to its second, then Acknowledged to its
    third, each with its event, the next command marked sent and the device seen. What each read gave."""
    seen: list[object] = []
    e = ch.bound(fingerprint)
    assert e is not None
    seen.append((e.udid == f"UDID-{n}", e.user_id is not None, e.awaiting_configuration, e.last_seen_at))
    for k, status, chain in (
        (1, CommandStatus.NOT_NOW, []),
        (2, CommandStatus.ERROR, CHAIN),
        (3, CommandStatus.ACKNOWLEDGED, []),
    ):
        cmd = ch.command(e, f"cmd-{n}-{k}")
        assert cmd is not None
        seen.append((cmd.command_uuid == f"cmd-{n}-{k}", cmd.request_type, cmd.enrollment_id == e.id))
        ch.record_result(cmd, status, f"<report>{k}</report>".encode(), chain, LATER)
        detail: dict[str, object] = {
            "command_uuid": cmd.command_uuid,
            "status": status.value,
            "error_chain": chain,
        }
        ch.append_event(
            Event(
                tenant_id=e.tenant_id,
                at=LATER,
                step=Step.COMMAND,
                outcome=Outcome.OK,
                user_id=e.user_id,
                udid=e.udid,
                enrollment_id=e.id,
                request_id="rid",
                detail=detail,
            )
        )
        skip = ch.next_command(e.id, skip_not_now=True)
        anyone = ch.next_command(e.id, skip_not_now=False)
        seen.append((None if skip is None else skip[1], None if anyone is None else anyone[1]))
        if skip is not None:
            ch.mark_sent(skip[0], LATER)
    ch.touch(e.device_id, LATER)
    seen.append(ch.command(e, "cmd-unknown"))
    return seen


def _rows(db: SqlDatabase, e: Enrollment) -> list[object]:
    """What the database holds for the enrollment, without the ids that differ between devices."""
    c, ev, d = s.commands, s.events, s.devices
    with db.unit_of_work(readonly=True) as uow:
        cmds = [
            (r.command_uuid.rsplit("-", 1)[1], r.status, r.sent_at, r.result_at, r.result, r.error_chain)
            for r in uow.conn.execute(select(c).where(c.c.enrollment_id == e.id).order_by(c.c.id))
        ]
        events = [
            (r.tenant_id, r.at, r.step, r.outcome, r.user_id, r.udid == e.udid, r.request_id, r.detail)
            for r in uow.conn.execute(select(ev).where(ev.c.enrollment_id == e.id).order_by(ev.c.id))
        ]
        seen = uow.conn.execute(select(d.c.last_seen_at).where(d.c.id == e.device_id)).scalar_one()
    # the CommandUUID in an event's detail names its device: cmd-<device>-<k>
    return [cmds, [(x[:5], x[6], re.sub(r"cmd-\d+-", "cmd-N-", x[7])) for x in events], seen]


def _utc(v: Any) -> Any:
    return v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v


def _normalised(rows: list[Any]) -> list[Any]:
    """Timestamps in UTC (SQLite's come back naive), binary results as bytes."""
    cmds, events, seen = rows
    return [
        [
            (k, st, _utc(sent), _utc(res_at), None if r is None else bytes(r), chain)
            for k, st, sent, res_at, r, chain in cmds
        ],
        [(*(_utc(x) for x in ev), rid, detail) for ev, rid, detail in events],
        _utc(seen),
    ]


def test_raw_and_stores_write_the_same_rows(sql: SqlDatabase) -> None:
    """The raw driver's transaction and the SQLAlchemy stores answer the same reads and leave the same
    commands, events and last check-in (timestamps in UTC, the error chain as JSON)."""
    _, (raw_e, orm_e) = _seed(sql, 2)
    with sql.command_channel() as ch:
        raw = _script(ch, "fp0", 0)
    with sql.unit_of_work() as uow:
        orm = _script(StoreChannel(uow), "fp1", 1)
    assert raw == orm
    assert raw[-1] is None
    raw_rows, orm_rows = _normalised(_rows(sql, raw_e)), _normalised(_rows(sql, orm_e))
    assert raw_rows == orm_rows
    cmds, events, seen = raw_rows
    assert [x[1] for x in cmds] == ["NotNow", "Error", "Acknowledged"] and seen == LATER
    assert len(events) == 3 and '"ErrorCode": 12021' in events[1][-1]


def test_take_same_as_stores(sql: SqlDatabase) -> None:
    """The idle take marks the command sent and the device seen, as over the stores; a command no longer
    pending, or an enrollment no longer active, is not taken and nothing is written."""
    _, (raw_e, orm_e) = _seed(sql, 2, last_seen=None)
    for e, take in ((raw_e, sql.take_command), (orm_e, lambda *a: store_take(sql, *a))):
        with sql.unit_of_work(readonly=True) as uow:
            first = uow.commands.next_for(e.id, skip_not_now=False)
        assert first is not None
        assert take(first.id, e.id, e.device_id, LATER)
        assert not take(first.id, "another-enrollment", None, LATER)
    assert _normalised(_rows(sql, raw_e)) == _normalised(_rows(sql, orm_e))
    cmds, _, seen = _normalised(_rows(sql, raw_e))
    assert cmds[0][1:3] == ("Sent", LATER) and seen == LATER
    with sql.unit_of_work() as uow:
        uow.enrollments.end(raw_e.id, EnrollmentStatus.REMOVED, LATER)
        second = uow.commands.next_for(raw_e.id, skip_not_now=False)
    assert second is not None and not sql.take_command(second.id, raw_e.id, None, LATER)


def test_a_raised_block_writes_nothing(sql: SqlDatabase) -> None:
    """A result, its event and the next command's sent mark commit together: a block that raises halfway
    leaves the command pending and no event, and the connection serves the next transaction."""
    _, (e,) = _seed(sql, 1)
    before = _rows(sql, e)
    with pytest.raises(RuntimeError), sql.command_channel() as ch:
        b = ch.bound("fp0")
        assert b is not None
        cmd = ch.command(b, "cmd-0-1")
        assert cmd is not None
        ch.record_result(cmd, CommandStatus.ACKNOWLEDGED, b"<r/>", [], LATER)
        ch.mark_sent(cmd.id + 1, LATER)
        raise RuntimeError("the process dies here")
    assert _rows(sql, e) == before
    with sql.command_channel() as ch:
        assert ch.bound("fp0") is not None


def test_failure_events_are_refused(sql: SqlDatabase) -> None:
    """The raw transaction writes OK events only (a failure belongs in the roll-up too): nothing is
    written when one is given."""
    _, (e,) = _seed(sql, 1)
    failed = Event(tenant_id=e.tenant_id, at=LATER, step=Step.COMMAND, outcome=Outcome.FAILED, reason="X")
    with pytest.raises(ValueError), sql.command_channel() as ch:
        ch.append_event(failed)
    with sql.unit_of_work(readonly=True) as uow:
        assert uow.events.query(e.tenant_id) == []


def test_a_held_lock_on_the_loop_is_storage_busy(db_url: str) -> None:
    """On the event loop's thread a write that waits on another transaction's lock gives up after the
    loop's bound with StorageBusyError (the request then runs again in a worker thread), as
    ``unit_of_work`` does."""
    sql = SqlDatabase(db_url)
    sql.create_all()
    try:
        _, (e,) = _seed(sql, 1)
        with sql.unit_of_work(readonly=True) as uow:
            first = uow.commands.next_for(e.id, skip_not_now=False)
        assert first is not None
        outcome: list[object] = []

        def on_loop() -> None:
            async def take() -> None:
                try:
                    outcome.append(sql.take_command(first.id, e.id, None, LATER))
                except StorageBusyError as exc:
                    outcome.append(exc)

            asyncio.run(take())

        with sql.unit_of_work() as uow:  # holds the write lock (SQLite) or the command's row (PostgreSQL)
            uow.commands.mark_sent(first.id, NOW)
            th = threading.Thread(target=on_loop)
            th.start()
            th.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], StorageBusyError)
        assert sql.take_command(first.id, e.id, None, LATER)  # this thread: no bound, the lock is free
    finally:
        sql.dispose()


class TestChannelContract:
    def test_reads(self, db: Database) -> None:
        """An unknown identity has no enrollment; another enrollment's CommandUUID is no command of this
        one; NotNow is skipped only when asked."""
        _, (a, b) = _seed(db, 2)
        with db.command_channel() as ch:
            assert ch.bound("nope") is None
            ea, eb = ch.bound("fp0"), ch.bound("fp1")
            assert ea is not None and eb is not None and ea.id == a.id and eb.id == b.id
            assert ea.last_seen_at == NOW and not ea.awaiting_configuration
            assert ch.command(ea, "cmd-1-1") is None
            first = ch.command(ea, "cmd-0-1")
            assert first is not None and first.request_type == "SecurityInfo"
            ch.record_result(first, CommandStatus.NOT_NOW, b"<r/>", [], LATER)
            nxt = ch.next_command(a.id, skip_not_now=True)
            assert nxt is not None and nxt[1] == b"<plist>2</plist>"
            again = ch.next_command(a.id, skip_not_now=False)
            assert again is not None and again[0] == first.id

    def test_ended_enrollment_is_not_bound(self, db: Database) -> None:
        """An identity whose enrollment ended is bound to nothing, and its command is not taken."""
        _, (a,) = _seed(db, 1)
        with db.unit_of_work() as uow:
            first = uow.commands.next_for(a.id, skip_not_now=False)
            uow.enrollments.end(a.id, EnrollmentStatus.RETIRED, LATER)
        assert first is not None
        with db.command_channel() as ch:
            assert ch.bound("fp0") is None
        assert not db.take_command(first.id, a.id, a.device_id, LATER)
