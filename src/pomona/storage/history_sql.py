"""SQL store of history retention (ports.HistoryStore): old events and answered commands, deleted a
bounded batch per call.

Each batch is ``DELETE ... WHERE id IN (SELECT id ... LIMIT n)`` over one tenant, found by an index that
starts with the tenant and the time: events by ``ix_events_tenant_at`` (tenant, at), commands by
``ix_commands_tenant_result_at`` (tenant, result_at; migration 0018). Both databases plan the inner
select as a range scan of that index (tests/storage/test_history.py reads the plans), so a batch costs
what it deletes, not the table's size, and a round that finds nothing old reads one index entry per
tenant. Nothing else references these rows: no foreign key points at events or commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Delete, Select, and_, any_, bindparam, delete, func, literal, select

from pomona.domain.models import CommandStatus
from pomona.storage import schema as s

#: The commands a device has answered for good: the only ones retention deletes (never Queued, Sent or
#: NotNow, which still wait for the device, nor Cancelled, which never had a result).
FINISHED = (
    CommandStatus.ACKNOWLEDGED.value,
    CommandStatus.ERROR.value,
    CommandStatus.COMMAND_FORMAT_ERROR.value,
)

_E, _C = s.events, s.commands
_OLD_EVENT = and_(_E.c.tenant_id == bindparam("tid"), _E.c.at < bindparam("before"))
_OLD_COMMAND = and_(
    _C.c.tenant_id == bindparam("tid"),
    _C.c.result_at < bindparam("before"),
    _C.c.status.in_([literal(x) for x in FINISHED]),  # one plan: the list is part of the statement
)


def _batch(table: Any, old: Any, time: Any, *, postgresql: bool) -> Delete:
    """Delete the oldest ``:n`` rows matching ``old``. Oldest first (ORDER BY the index's time column): the
    plan walks the (tenant, time) index and stops after ``:n`` rows; without the order PostgreSQL may
    choose a sequential scan, which reads the whole table when nothing is old. On PostgreSQL the ids are
    gathered first into an array (``id = ANY(ARRAY(SELECT ...))``, run once) and deleted by primary key:
    ``id IN (SELECT ... LIMIT $n)`` gets a generic plan that may hash-join the whole table. SQLite plans
    the IN list that way itself."""
    ids: Select[Any] = select(table.c.id).where(old).order_by(time).limit(bindparam("n"))
    if postgresql:
        return delete(table).where(table.c.id == any_(func.array(ids.scalar_subquery())))
    return delete(table).where(table.c.id.in_(ids.scalar_subquery()))


COUNT_EVENTS = select(func.count()).select_from(_E).where(_OLD_EVENT)
COUNT_COMMANDS = select(func.count()).select_from(_C).where(_OLD_COMMAND)
#: {is PostgreSQL: statement}
PRUNE_EVENTS = {pg: _batch(_E, _OLD_EVENT, _E.c.at, postgresql=pg) for pg in (False, True)}
PRUNE_COMMANDS = {pg: _batch(_C, _OLD_COMMAND, _C.c.result_at, postgresql=pg) for pg in (False, True)}


class SqlHistoryStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"

    def old_events(self, tenant_id: str, before: datetime) -> int:
        return int(self.conn.execute(COUNT_EVENTS, {"tid": tenant_id, "before": before}).scalar_one())

    def old_commands(self, tenant_id: str, before: datetime) -> int:
        return int(self.conn.execute(COUNT_COMMANDS, {"tid": tenant_id, "before": before}).scalar_one())

    def prune_events(self, tenant_id: str, before: datetime, limit: int) -> int:
        res = self.conn.execute(PRUNE_EVENTS[self.pg], {"tid": tenant_id, "before": before, "n": limit})
        return int(res.rowcount or 0)

    def prune_commands(self, tenant_id: str, before: datetime, limit: int) -> int:
        res = self.conn.execute(PRUNE_COMMANDS[self.pg], {"tid": tenant_id, "before": before, "n": limit})
        return int(res.rowcount or 0)
