"""The command channel's writes on the raw driver: a device's result and its next command in one transaction,
and the take of the command the idle read named (``ports.ChannelTx``, ``CommandChannel.take_command``).

They run on :class:`~pomona.storage.hot_sql.HotReads`' per-thread connections (sqlite3, psycopg), with no
SQLAlchemy execute, pool or transaction per request (issue 14: a fan-out's check-in that fetched a command
and its result cost 4.6 ms of server CPU per device through SQLAlchemy).

Each SQLAlchemy statement is compiled once for the dialect; its constants and its bind and result
processors (SQLite's timestamps and booleans) are worked out once too, so a call binds plain values and
runs the SQL on the driver, as SQLAlchemy would have sent it. A transaction is the driver's: SQLite
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
from sqlalchemy.engine import Dialect

from pomona.domain.models import CommandStatus, EnrollmentStatus, Event, Outcome
from pomona.ports import ChannelEnrollment, ReportedCommand
from pomona.storage import schema as s
from pomona.storage.commands_sql import _MARK_SENT, _RECORD_RESULT, _TAKE, PENDING
from pomona.storage.devices_sql import _TOUCH
from pomona.storage.events_sql import _NEW_EVENT
from pomona.storage.hot_sql import HotReads, _get_running_loop
from pomona.storage.rows import utc


class ChannelStatement:
    """One statement compiled for a dialect, called with the values of ``names`` (in that order)."""

    def __init__(self, stmt: Any, dialect: Dialect, names: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(names) if stmt.is_insert else None)
        self.sql = compiled.string
        self.names = tuple(names)
        procs: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            procs[name] = bind.type.dialect_impl(dialect).bind_processor(dialect)
        constants = compiled.construct_params({n: None for n in names})
        self.positional = bool(compiled.positiontup)
        # a slot per position: (index of the call's value, its processor) or (-1, the bound constant)
        self.slots: list[tuple[int, Any]] = []
        self.named: dict[str, Any] = {}
        self.procs: list[tuple[str, int, Any]] = []
        for name, value in constants.items():
            if name not in self.names:
                proc = procs.get(name)
                self.named[name] = value if proc is None or value is None else proc(value)
        for i, name in enumerate(self.names):
            self.procs.append((name, i, procs.get(name)))
        if self.positional:
            for name in compiled.positiontup or ():
                if name in self.names:
                    self.slots.append((self.names.index(name), procs.get(name)))
                else:
                    self.slots.append((-1, self.named[name]))
        columns = getattr(stmt, "selected_columns", None)
        self.results: list[Any] = []
        if columns is not None and not stmt.is_dml:
            self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def params(self, values: Sequence[Any]) -> Any:
        """The driver's parameters for these values (a tuple for qmark, a dict for pyformat)."""
        if self.positional:
            out = []
            for i, proc in self.slots:
                if i < 0:
                    out.append(proc)
                else:
                    v = values[i]
                    out.append(v if proc is None or v is None else proc(v))
            return tuple(out)
        named = dict(self.named)
        for name, i, proc in self.procs:
            v = values[i]
            named[name] = v if proc is None or v is None else proc(v)
        return named

    def row(self, raw: Sequence[Any] | None) -> tuple[Any, ...] | None:
        """A fetched row with the column types' result processors applied."""
        if raw is None:
            return None
        return tuple(v if p is None or v is None else p(v) for p, v in zip(self.results, raw, strict=True))


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
        self.bound_q = ChannelStatement(_BOUND, d, ["fp"])
        self.command_q = ChannelStatement(_COMMAND, d, ["tid", "cuuid", "eid"])
        self.record_q = ChannelStatement(
            _RECORD_RESULT, d, ["cid", "b_status", "b_result", "b_at", "b_chain"]
        )
        self.event_q = ChannelStatement(insert(s.events), d, _NEW_EVENT.fields)
        self.next_q = {
            True: ChannelStatement(_next(PENDING[:2]), d, ["eid"]),
            False: ChannelStatement(_next(PENDING), d, ["eid"]),
        }
        self.mark_q = ChannelStatement(_MARK_SENT, d, ["cid", "at"])
        self.touch_q = ChannelStatement(_TOUCH, d, ["did", "at"])
        self.take_q = ChannelStatement(_TAKE, d, ["cid", "eid", "at"])

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
        self.prepare = not channel.is_sqlite

    def _execute(self, q: ChannelStatement, values: Sequence[Any]) -> Any:
        if self.prepare:
            return self.conn.execute(q.sql, q.params(values), prepare=True)
        return self.conn.execute(q.sql, q.params(values))

    def run(self, q: ChannelStatement, values: Sequence[Any]) -> None:
        self._execute(q, values)

    def rowcount(self, q: ChannelStatement, values: Sequence[Any]) -> int:
        return int(self._execute(q, values).rowcount)

    def first(self, q: ChannelStatement, values: Sequence[Any]) -> tuple[Any, ...] | None:
        return q.row(self._execute(q, values).fetchone())

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
