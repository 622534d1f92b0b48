"""The command channel's writes on the raw driver: a device's result and its next command in one transaction,
and the take of the command the idle read named (``ports.ChannelTx``, ``CommandChannel.take_command``).

They run on :class:`~pomona.storage.hot_sql.HotReads`' per-thread connections (sqlite3, psycopg), with no
SQLAlchemy execute, pool or transaction per request (issue 14: a fan-out's check-in that fetched a command
and its result cost 4.6 ms of server CPU per device through SQLAlchemy).

Each SQLAlchemy statement is a :class:`~pomona.storage.hot_sql.DriverStatement`, compiled once for the
dialect with its constants and its bind and result processors (SQLite's timestamps and booleans), called
with a tuple of plain values: the SQL runs on the driver as SQLAlchemy would have sent it, prepared on
PostgreSQL (the same runner as the enrollment's ``Prepared`` statements). A transaction is the driver's: SQLite
``BEGIN IMMEDIATE`` ... ``COMMIT`` (ROLLBACK when the block raises) with the connection's busy_timeout
(the loop's short one on the event loop's thread); PostgreSQL ``conn.transaction()`` with the same
``lock_timeout`` bound as ``SqlDatabase.unit_of_work``. A result and the command state it changes, its
event and the next command's ``sent`` mark commit together or not at all.

storage/channel.py runs the same operations over a unit of work's stores (the memory backend, and the
reference the storage tests compare with).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, bindparam, insert, literal, select

from pomona.domain.models import CommandStatus, EnrollmentStatus, Event, Outcome
from pomona.ports import ChannelEnrollment, ReportedCommand
from pomona.storage import schema as s
from pomona.storage.commands_sql import _MARK_SENT, _RECORD_RESULT, _TAKE, PENDING
from pomona.storage.devices_sql import _TOUCH
from pomona.storage.events_sql import _NEW_EVENT
from pomona.storage.hot_sql import DriverStatement, HotReads, _get_running_loop
from pomona.storage.rows import utc


def _next(statuses: tuple[str, ...]) -> Select[Any]:
    c = s.commands
    return (
        select(c.c.id, c.c.body)
        .where(and_(c.c.enrollment_id == bindparam("eid"), c.c.status.in_([literal(x) for x in statuses])))
        .order_by(c.c.id)
        .limit(1)
    )


_E, _D, _C = s.enrollments, s.devices, s.commands
_BOUND = (
    select(
        _E.c.id,
        _E.c.tenant_id,
        _E.c.udid,
        _E.c.device_id,
        _E.c.user_id,
        _E.c.awaiting_configuration,
        _D.c.last_seen_at,
    )
    .select_from(_E.join(_D, _D.c.id == _E.c.device_id))
    .where(
        and_(_E.c.cert_fingerprint == bindparam("fp"), _E.c.status == literal(EnrollmentStatus.ACTIVE.value))
    )
    .limit(1)
)
# by (tenant, CommandUUID): the unique index answers it, however long the device's command history
_COMMAND = select(_C.c.id, _C.c.request_type).where(
    and_(
        _C.c.tenant_id == bindparam("tid"),
        _C.c.command_uuid == bindparam("cuuid"),
        _C.c.enrollment_id == bindparam("eid"),
    )
)


class HotChannel:
    """``ports.ChannelTx`` transactions and the idle take, on :class:`HotReads`' per-thread connections."""

    def __init__(self, reads: HotReads, engine: Engine, loop_lock_wait_ms: int) -> None:
        self.reads = reads
        self.is_sqlite = reads.is_sqlite
        self._loop_wait = loop_lock_wait_ms
        self._local = threading.local()
        d = engine.dialect
        self.bound_q = DriverStatement(_BOUND, d, ["fp"])
        self.command_q = DriverStatement(_COMMAND, d, ["tid", "cuuid", "eid"])
        self.record_q = DriverStatement(_RECORD_RESULT, d, ["cid", "b_status", "b_result", "b_at", "b_chain"])
        self.event_q = DriverStatement(insert(s.events), d, _NEW_EVENT.fields)
        self.next_q = {
            True: DriverStatement(_next(PENDING[:2]), d, ["eid"]),
            False: DriverStatement(_next(PENDING), d, ["eid"]),
        }
        self.mark_q = DriverStatement(_MARK_SENT, d, ["cid", "at"])
        self.touch_q = DriverStatement(_TOUCH, d, ["did", "at"])
        self.take_q = DriverStatement(_TAKE, d, ["cid", "eid", "at"])

    @contextmanager
    def transaction(self) -> Iterator[HotTx]:
        """A write transaction on this thread's connection."""
        if self.is_sqlite:
            conn = self.reads._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield HotTx(self, conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        import psycopg

        conn = self.reads._conn()
        try:
            self._lock_wait(conn)
            tx = conn.transaction()
            tx.__enter__()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self.reads._drop(conn)  # dropped by the server before anything was sent: once more
            conn = self.reads._conn()
            self._lock_wait(conn)
            tx = conn.transaction()
            tx.__enter__()
        try:
            yield HotTx(self, conn)
        except BaseException as exc:
            tx.__exit__(type(exc), exc, exc.__traceback__)
            if conn.broken:
                self.reads._drop(conn)
            raise
        tx.__exit__(None, None, None)

    def _lock_wait(self, conn: Any) -> None:
        """This thread's lock-wait bound on the connection, set once (as ``_pg_lock_wait``)."""
        if getattr(self._local, "waits", None) is not conn:
            wait = self._loop_wait if _get_running_loop() is not None else 0
            conn.execute(f"SET lock_timeout = {wait}")
            self._local.waits = conn

    def take(self, command_id: int, enrollment_id: str, device_id: str | None, at: datetime) -> bool:
        """The idle read's command marked sent. On PostgreSQL its commit does not wait for the WAL
        flush (6.5 ms of the event loop's time per commit on this machine): a take lost in a database
        crash leaves the command Queued, pending as Sent is, and the device's next Idle gets it again;
        the commit stays atomic, and the result's commit, durable, flushes it too."""
        with self.transaction() as tx:
            if not self.is_sqlite:
                tx.conn.execute("SET LOCAL synchronous_commit TO OFF")
            if not tx.rowcount(self.take_q, (command_id, enrollment_id, at)):
                return False
            if device_id is not None:
                tx.run(self.touch_q, (device_id, at))
            return True


class HotTx:
    """``ports.ChannelTx`` on one raw transaction."""

    def __init__(self, channel: HotChannel, conn: Any) -> None:
        self.ch = channel
        self.conn = conn

    def run(self, q: DriverStatement, values: Sequence[Any]) -> None:
        q.run(self.conn, q.params(values))

    def rowcount(self, q: DriverStatement, values: Sequence[Any]) -> int:
        return int(q.run(self.conn, q.params(values)).rowcount)

    def first(self, q: DriverStatement, values: Sequence[Any]) -> Sequence[Any] | None:
        return q.row(q.run(self.conn, q.params(values)))

    def bound(self, fingerprint: str) -> ChannelEnrollment | None:
        r = self.first(self.ch.bound_q, (fingerprint,))
        if r is None:
            return None
        return ChannelEnrollment(r[0], r[1], r[2], r[3], r[4], bool(r[5]), utc(r[6]))

    def command(self, enrollment: ChannelEnrollment, command_uuid: str) -> ReportedCommand | None:
        r = self.first(self.ch.command_q, (enrollment.tenant_id, command_uuid, enrollment.id))
        return None if r is None else ReportedCommand(int(r[0]), enrollment.id, command_uuid, r[1])

    def record_result(
        self,
        command: ReportedCommand,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> None:
        chain = json.dumps(error_chain, default=str) if error_chain else None
        self.run(self.ch.record_q, (command.id, status.value, result, at, chain))

    def append_event(self, event: Event) -> None:
        if event.outcome is not Outcome.OK:  # a failure is counted in the roll-up: the unit of work's job
            raise ValueError("the command channel writes OK events only")
        row = _NEW_EVENT.dump(event)
        self.run(self.ch.event_q, [row[n] for n in _NEW_EVENT.fields])

    def next_command(self, enrollment_id: str, *, skip_not_now: bool) -> tuple[int, bytes] | None:
        r = self.first(self.ch.next_q[skip_not_now], (enrollment_id,))
        return None if r is None else (int(r[0]), bytes(r[1]))

    def mark_sent(self, command_id: int, at: datetime) -> None:
        self.run(self.ch.mark_q, (command_id, at))

    def touch(self, device_id: str, at: datetime) -> None:
        self.run(self.ch.touch_q, (device_id, at))
