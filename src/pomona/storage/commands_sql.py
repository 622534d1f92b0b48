"""SQL store of the command queue, and the command channel's one-statement read (CHANNEL_*).

The statements of the check-in hot path are built once, at import, with bound parameters.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, insert, literal, select, update

from pomona.domain.models import CommandStatus, EnrollmentStatus, QueuedCommand
from pomona.storage import schema as s
from pomona.storage.rows import RecordCodec, chunks

COMMAND = RecordCodec(QueuedCommand)
_NEW_COMMAND = RecordCodec(QueuedCommand, skip=("id",))

_C = s.commands
PENDING = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)


def _is_pending(col: Any, statuses: tuple[str, ...] = PENDING) -> Any:
    return col.in_([literal(x) for x in statuses])


def _next_command(statuses: tuple[str, ...]) -> Select[Any]:
    """The oldest pending command of an enrollment."""
    return (
        select(_C)
        .where(and_(_C.c.enrollment_id == bindparam("eid"), _is_pending(_C.c.status, statuses)))
        .order_by(_C.c.id)
        .limit(1)
    )


def _channel(statuses: tuple[str, ...]) -> Select[Any]:
    e, d = s.enrollments, s.devices
    pending = _C.alias("pending")
    nxt = (
        select(pending.c.id)
        .where(and_(pending.c.enrollment_id == e.c.id, _is_pending(pending.c.status, statuses)))
        .order_by(pending.c.id)
        .limit(1)
        .correlate(e)
        .scalar_subquery()
    )
    return (
        select(e.c.id, e.c.tenant_id, e.c.udid, e.c.device_id, d.c.last_seen_at, _C.c.id, _C.c.body)
        .select_from(e.join(d, d.c.id == e.c.device_id).outerjoin(_C, _C.c.id == nxt))
        .where(and_(e.c.cert_fingerprint == bindparam("fp"), e.c.status == EnrollmentStatus.ACTIVE.value))
        .limit(1)
    )


#: The command channel's read (SqlDatabase.channel_state): enrollment, last check-in, next command.
CHANNEL_ANY = _channel(PENDING)
CHANNEL_SKIP_NOT_NOW = _channel(PENDING[:2])
_NEXT_ANY = _next_command(PENDING)
_NEXT_SKIP_NOT_NOW = _next_command(PENDING[:2])
_MARK_SENT = (
    update(_C)
    .where(_C.c.id == bindparam("cid"))
    .values(status=CommandStatus.SENT.value, sent_at=bindparam("at"))
)
_TAKE = (
    update(_C)
    .where(
        and_(
            _C.c.id == bindparam("cid"),
            _C.c.enrollment_id == bindparam("eid"),
            _is_pending(_C.c.status),
            select(literal(1))
            .where(
                and_(
                    s.enrollments.c.id == bindparam("eid"),
                    s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
            .exists(),
        )
    )
    .values(status=CommandStatus.SENT.value, sent_at=bindparam("at"))
)
_BY_ENROLLMENT_UUID = select(_C).where(
    and_(_C.c.enrollment_id == bindparam("eid"), _C.c.command_uuid == bindparam("cuuid"))
)
_RECORD_RESULT = (
    update(_C)
    .where(_C.c.id == bindparam("cid"))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        result_at=bindparam("b_at"),
        error_chain=bindparam("b_chain"),
    )
)


class SqlCommandQueue:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def enqueue(self, command: QueuedCommand) -> QueuedCommand:
        (out,) = self.enqueue_many([command])
        return out

    def enqueue_many(self, commands: Sequence[QueuedCommand]) -> list[QueuedCommand]:
        """Insert the commands in batches (one multi-row INSERT ... RETURNING each), in order."""
        stmt = insert(_C).returning(_C.c.id, sort_by_parameter_order=True)
        out: list[QueuedCommand] = []
        for part in chunks(commands):
            ids = [int(r[0]) for r in self.conn.execute(stmt, [_NEW_COMMAND.dump(x) for x in part])]
            out.extend(dataclasses.replace(x, id=i) for x, i in zip(part, ids, strict=True))
        return out

    def next_for(self, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None:
        q = _NEXT_SKIP_NOT_NOW if skip_not_now else _NEXT_ANY
        r = self.conn.execute(q, {"eid": enrollment_id}).first()
        return None if r is None else COMMAND.load_row(r)

    def mark_sent(self, command_id: int, at: datetime) -> None:
        self.conn.execute(_MARK_SENT, {"cid": command_id, "at": at})

    def get_by_uuid(self, tenant_id: str, command_uuid: str) -> QueuedCommand | None:
        r = self.conn.execute(
            select(_C).where(and_(_C.c.tenant_id == tenant_id, _C.c.command_uuid == command_uuid))
        ).first()
        return None if r is None else COMMAND.load_row(r)

    def record_result(
        self,
        enrollment_id: str,
        command_uuid: str,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> QueuedCommand | None:
        r = self.conn.execute(_BY_ENROLLMENT_UUID, {"eid": enrollment_id, "cuuid": command_uuid}).first()
        if r is None:
            return None
        cmd = COMMAND.load_row(r)
        self.conn.execute(
            _RECORD_RESULT,
            {
                "cid": cmd.id,
                "b_status": status.value,
                "b_result": result,
                "b_at": at,
                "b_chain": json.dumps(error_chain, default=str) if error_chain else None,
            },
        )
        return cmd

    def take(self, command_id: int, enrollment_id: str, at: datetime) -> bool:
        """Mark a command read outside the transaction as sent, if it is still pending and its
        enrollment still active: False when either changed meanwhile (then look again)."""
        return bool(self.conn.execute(_TAKE, {"cid": command_id, "eid": enrollment_id, "at": at}).rowcount)

    def cancel_pending(self, enrollment_id: str) -> int:
        res = self.conn.execute(
            update(_C)
            .where(and_(_C.c.enrollment_id == enrollment_id, _C.c.status.in_(PENDING)))
            .values(status=CommandStatus.CANCELLED.value)
        )
        return int(res.rowcount or 0)

    def pending_count(self) -> int:
        """Commands of every tenant not yet answered (queued, sent, NotNow): /metrics reads it."""
        q = select(func.count()).select_from(_C).where(_C.c.status.in_(PENDING))
        return int(self.conn.execute(q).scalar_one())

    def list_for_device(
        self, tenant_id: str, device_id: str, *, limit: int = 100, until: datetime | None = None
    ) -> list[QueuedCommand]:
        conds = [_C.c.tenant_id == tenant_id, _C.c.device_id == device_id]
        if until is not None:
            conds.append(_C.c.created_at < until)
        q = select(_C).where(and_(*conds)).order_by(_C.c.id.desc()).limit(limit)
        return [COMMAND.load_row(r) for r in self.conn.execute(q)]
