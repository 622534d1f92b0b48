"""History retention (ports.HistoryStore, services/retention.py) on every backend: old events and answered
commands go, a bounded batch per transaction; recent ones, pending commands and other tenants stay; the
batches are found by an index on both databases."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Delete, Select, text

from helpers import active_enrollment
from pomona.domain.errors import InvalidInputError
from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    Event,
    Outcome,
    QueuedCommand,
    Step,
    Tenant,
)
from pomona.domain.reasons import ReasonCode
from pomona.ports import Database
from pomona.services.retention import Retention, RetentionService
from pomona.storage import history_sql
from pomona.storage.sql import SqlDatabase
from pomona.testing import FrozenClock

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)
CA_KEY = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"


def make_tenant(db: Database, name: str) -> tuple[Tenant, Enrollment]:
    """A tenant with one device and its active enrollment."""
    t = Tenant(id=str(uuid.uuid4()), name=name, domain=f"{name}.example", created_at=NOW, ca_cert_pem=b"c")
    d = Device(id=str(uuid.uuid4()), tenant_id=t.id, udid=f"UDID-{name}", serial=f"S-{name}", created_at=NOW)
    e = active_enrollment(d, f"fp-{name}", NOW)
    with db.unit_of_work() as uow:
        uow.tenants.add(t, CA_KEY)
        uow.devices.upsert(d)
        uow.enrollments.add(e)
    return t, e


def add_events(db: Database, t: Tenant, at: datetime, n: int) -> None:
    with db.unit_of_work() as uow:
        for i in range(n):
            reason = "SIGNATURE_INVALID" if i % 2 else None
            outcome = Outcome.FAILED if reason else Outcome.OK
            uow.events.append(Event(t.id, at + timedelta(seconds=i), Step.SCEP, outcome, reason, serial="S1"))


def add_command(
    db: Database, t: Tenant, e: Enrollment, uuid_: str, status: CommandStatus, answered: datetime | None
) -> None:
    """A command created 60 days ago, answered at ``answered`` with ``status`` (or left queued)."""
    with db.unit_of_work() as uow:
        uow.commands.enqueue(
            QueuedCommand(
                id=0,
                tenant_id=t.id,
                command_uuid=uuid_,
                enrollment_id=e.id,
                device_id=e.device_id,
                request_type="DeviceInformation",
                body=b"<plist/>",
                status=CommandStatus.QUEUED,
                created_at=NOW - timedelta(days=60),
            )
        )
        if status is CommandStatus.SENT:
            found = uow.commands.get_by_uuid(t.id, uuid_)
            assert found is not None
            uow.commands.mark_sent(found.id, NOW - timedelta(days=60))
        elif status is not CommandStatus.QUEUED:
            assert answered is not None
            uow.commands.record_result(e.id, uuid_, status, b"<plist/>", [], answered)


def command_uuids(db: Database, t: Tenant, e: Enrollment) -> set[str]:
    with db.unit_of_work(readonly=True) as uow:
        return {c.command_uuid for c in uow.commands.list_for_device(t.id, e.device_id, limit=1000)}


def event_times(db: Database, t: Tenant) -> list[datetime]:
    with db.unit_of_work(readonly=True) as uow:
        return sorted(e.at for e in uow.events.query(t.id, limit=1000))


def seed_commands(db: Database, t: Tenant, e: Enrollment) -> None:
    """Answered long ago (three finished kinds, a NotNow), answered lately, and never answered."""
    for uuid_, status, answered in (
        ("old-ack", CommandStatus.ACKNOWLEDGED, OLD),
        ("old-error", CommandStatus.ERROR, OLD),
        ("old-format", CommandStatus.COMMAND_FORMAT_ERROR, OLD),
        ("old-notnow", CommandStatus.NOT_NOW, OLD),
        ("new-ack", CommandStatus.ACKNOWLEDGED, RECENT),
        ("queued", CommandStatus.QUEUED, None),
        ("sent", CommandStatus.SENT, None),
    ):
        add_command(db, t, e, uuid_, status, answered)


class TestHistoryStore:
    def test_old_events_go_recent_stay_other_tenants_untouched(self, db: Database) -> None:
        """prune_events deletes the tenant's events before the cut-off only; another tenant's old events
        stay; the count before says how many would go."""
        a, _ = make_tenant(db, "acme")
        b, _ = make_tenant(db, "bolt")
        add_events(db, a, OLD, 5)
        add_events(db, a, RECENT, 3)
        add_events(db, b, OLD, 4)
        cut = NOW - timedelta(days=30)
        with db.unit_of_work(readonly=True) as uow:
            assert (uow.history.old_events(a.id, cut), uow.history.old_events(b.id, cut)) == (5, 4)
        with db.unit_of_work() as uow:
            assert uow.history.prune_events(a.id, cut, 100) == 5
        assert all(at >= cut for at in event_times(db, a)) and len(event_times(db, a)) == 3
        assert len(event_times(db, b)) == 4

    def test_a_batch_is_bounded_and_takes_the_oldest(self, db: Database) -> None:
        """A batch deletes at most ``limit`` rows, the oldest first; the next batch goes on from there."""
        a, _ = make_tenant(db, "acme")
        add_events(db, a, OLD, 5)
        with db.unit_of_work() as uow:
            assert uow.history.prune_events(a.id, NOW, 2) == 2
        assert event_times(db, a) == [OLD + timedelta(seconds=i) for i in (2, 3, 4)]
        with db.unit_of_work() as uow:
            assert uow.history.prune_events(a.id, NOW, 2) == 2
            assert uow.history.prune_events(a.id, NOW, 2) == 1
            assert uow.history.prune_events(a.id, NOW, 2) == 0

    def test_only_old_finished_commands_go(self, db: Database) -> None:
        """Acknowledged, Error and CommandFormatError results before the cut-off go; a recent result, a
        NotNow answered long ago, and Queued or Sent commands created long ago stay."""
        a, ea = make_tenant(db, "acme")
        b, eb = make_tenant(db, "bolt")
        seed_commands(db, a, ea)
        seed_commands(db, b, eb)
        cut = NOW - timedelta(days=30)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.history.old_commands(a.id, cut) == 3
        with db.unit_of_work() as uow:
            assert uow.history.prune_commands(a.id, cut, 2) == 2
            assert uow.history.prune_commands(a.id, cut, 2) == 1
            assert uow.history.prune_commands(a.id, cut, 2) == 0
        assert command_uuids(db, a, ea) == {"old-notnow", "new-ack", "queued", "sent"}
        assert len(command_uuids(db, b, eb)) == 7
        with db.unit_of_work(readonly=True) as uow:
            assert uow.commands.pending_count() == 6  # both tenants' queued, sent and NotNow
            nxt = uow.commands.next_for(ea.id, skip_not_now=False)
            assert nxt is not None and nxt.command_uuid == "old-notnow"

    def test_failure_counts_outlive_the_events(self, db: Database) -> None:
        """The daily failure roll-up that reports read is kept when the events go."""
        a, _ = make_tenant(db, "acme")
        add_events(db, a, OLD, 4)
        with db.unit_of_work() as uow:
            uow.history.prune_events(a.id, NOW, 100)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.events.query(a.id) == []
            report = uow.events.failure_report(a.id, OLD - timedelta(days=1), NOW, "reason")
        assert report == [("SIGNATURE_INVALID", 2)]


class TestRetentionService:
    def test_prune_goes_in_batches_per_tenant(self, db: Database) -> None:
        """The service deletes every tenant's old history in batches of its size, reports each tenant's
        counts (none for a tenant with nothing old), and calls progress up to the total."""
        a, ea = make_tenant(db, "acme")
        b, _ = make_tenant(db, "bolt")
        make_tenant(db, "calm")
        add_events(db, a, OLD, 7)
        add_events(db, a, RECENT, 2)
        add_events(db, b, OLD, 3)
        seed_commands(db, a, ea)
        seen: list[tuple[int, int]] = []
        service = RetentionService(db, FrozenClock(NOW), Retention(30, 30), batch=3)
        report = service.prune(progress=lambda done, total: seen.append((done, total)))
        assert {t.tenant: (t.events, t.commands) for t in report.tenants} == {"acme": (7, 3), "bolt": (3, 0)}
        assert (report.events, report.commands) == (10, 3)
        assert report.events_before == report.commands_before == NOW - timedelta(days=30)
        assert seen[-1] == (13, 13) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert len(event_times(db, a)) == 2 and event_times(db, b) == []
        assert service.prune().tenants == []

    def test_dry_run_counts_and_deletes_nothing(self, db: Database) -> None:
        """--dry-run's counts are what a prune then deletes."""
        a, ea = make_tenant(db, "acme")
        add_events(db, a, OLD, 4)
        seed_commands(db, a, ea)
        service = RetentionService(db, FrozenClock(NOW), Retention(30, 30))
        dry = service.prune(dry_run=True)
        assert dry.dry_run and (dry.events, dry.commands) == (4, 3)
        assert len(event_times(db, a)) == 4 and len(command_uuids(db, a, ea)) == 7
        done = service.prune()
        assert (done.events, done.commands) == (4, 3) and not done.dry_run

    def test_a_zero_keeps_that_history(self, db: Database) -> None:
        """Events kept forever (0) while commands are pruned: only commands go, and the run job does
        nothing when both are 0."""
        a, ea = make_tenant(db, "acme")
        add_events(db, a, OLD, 4)
        seed_commands(db, a, ea)
        report = RetentionService(db, FrozenClock(NOW), Retention(0, 30)).prune()
        assert report.events_before is None and (report.events, report.commands) == (0, 3)
        assert len(event_times(db, a)) == 4
        assert RetentionService(db, FrozenClock(NOW), Retention()).run() is None
        assert len(command_uuids(db, a, ea)) == 4

    @pytest.mark.parametrize("keep", [Retention(3, 0), Retention(0, 6), Retention(-1, 30)])
    def test_under_a_week_is_refused(self, db: Database, keep: Retention) -> None:
        """A retention under 7 days (diagnosis reads a week back) is INVALID_INPUT; nothing is deleted."""
        a, _ = make_tenant(db, "acme")
        add_events(db, a, RECENT, 2)
        with pytest.raises(InvalidInputError) as info:
            RetentionService(db, FrozenClock(NOW), Retention(30, 30)).prune(retention=keep)
        assert info.value.reason is ReasonCode.INVALID_INPUT
        assert len(event_times(db, a)) == 2


def fill(conn: Any, n: int) -> None:
    """``n`` events and commands over five tenants, a third of the commands pending, then ANALYZE: the
    statistics of a database in use (an empty table is planned as a sequential scan, rightly)."""
    t0 = NOW - timedelta(days=90)
    for i in range(5):
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, domain, created_at, ca_cert_pem, ca_key_pem, licence_seats, "
                "policy_version) VALUES (:i, :i, 'x.example', :c, :p, :p, 0, 0)"
            ),
            {"i": f"t{i}", "c": t0, "p": b"p"},
        )
        conn.execute(
            text("INSERT INTO devices (id, tenant_id, udid, created_at) VALUES (:i, :i, :i, :c)"),
            {"i": f"t{i}", "c": t0},
        )
        conn.execute(
            text(
                "INSERT INTO enrollments (id, tenant_id, device_id, udid, status, type, cert_fingerprint, "
                "topic, started_at, awaiting_configuration) VALUES (:i, :i, :i, :i, 'active', 'byod', :i, "
                "'x', :c, false)"
            ),
            {"i": f"t{i}", "c": t0},
        )
    times = [t0 + timedelta(minutes=30 * k) for k in range(n)]
    conn.execute(
        text("INSERT INTO events (tenant_id, at, step, outcome) VALUES (:t, :at, 'scep', 'ok')"),
        [{"t": f"t{k % 5}", "at": at} for k, at in enumerate(times)],
    )
    conn.execute(
        text(
            "INSERT INTO commands (tenant_id, command_uuid, enrollment_id, device_id, request_type, body, "
            "status, created_at, result_at) VALUES (:t, :u, :t, :t, 'X', :b, :s, :at, :r)"
        ),
        [
            {
                "t": f"t{k % 5}",
                "u": str(k),
                "b": b"x",
                "s": "Queued" if k % 3 == 0 else "Acknowledged",
                "at": at,
                "r": None if k % 3 == 0 else at,
            }
            for k, at in enumerate(times)
        ],
    )
    conn.exec_driver_sql("ANALYZE")


def plan(d: SqlDatabase, stmt: Select[Any] | Delete) -> str:
    """The database's plan for ``stmt`` over a filled database (EXPLAIN QUERY PLAN on SQLite, EXPLAIN of
    the generic plan on PostgreSQL), all in a transaction rolled back."""
    params = {"tid": "t1", "before": NOW - timedelta(days=30), "n": 5000}
    with d.engine.connect() as conn:
        fill(conn, 4000)
        c = stmt.compile(dialect=conn.dialect)
        values = c.construct_params(params)
        if d.is_sqlite:
            args = tuple(values[k] for k in c.positiontup or ())
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(c), args).fetchall()
            conn.rollback()
            return "\n".join(str(r[-1]) for r in rows)
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            names.append(m.group(1))
            return f"${len(names)}"

        sql = re.sub(r"%\((\w+)\)s", number, str(c))
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")  # what the server settles on
        conn.exec_driver_sql("PREPARE q AS " + sql)
        shown = ", ".join(str(values[n]) if isinstance(values[n], int) else f"'{values[n]}'" for n in names)
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE q({shown})").fetchall()
        conn.exec_driver_sql("DEALLOCATE q")
        conn.rollback()
        return "\n".join(str(r[0]) for r in rows)


class TestPlans:
    @pytest.mark.parametrize(
        ("name", "index"),
        [
            ("PRUNE_EVENTS", "ix_events_tenant_at"),
            ("COUNT_EVENTS", "ix_events_tenant_at"),
            ("PRUNE_COMMANDS", "ix_commands_tenant_result_at"),
            ("COUNT_COMMANDS", "ix_commands_tenant_result_at"),
        ],
    )
    def test_found_by_the_tenant_and_time_index(self, db_url: str, name: str, index: str) -> None:
        """Each batch and count reads the (tenant, time) index, never the whole table; a batch deletes
        by primary key."""
        d = SqlDatabase(db_url)
        try:
            stmt = getattr(history_sql, name)
            shown = plan(d, stmt[not d.is_sqlite] if isinstance(stmt, dict) else stmt)
        finally:
            d.dispose()
        assert index in shown, shown
        assert not re.search(r"SCAN (events|commands)\b|Seq Scan", shown), shown
        if name.startswith("PRUNE"):
            assert re.search(r"INTEGER PRIMARY KEY|pk_(events|commands)", shown), shown
