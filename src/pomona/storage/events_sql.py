"""SQL store of events, the log every refusal leaves, and of its daily failure roll-up."""

from __future__ import annotations

from datetime import datetime
from typing import Unpack

from sqlalchemy import Connection, and_, func, insert, or_, select

from pomona.domain.models import Event
from pomona.ports import EventFilters
from pomona.storage import rollup
from pomona.storage import schema as s
from pomona.storage.rows import RecordCodec

EVENT = RecordCodec(Event)
_NEW_EVENT = RecordCodec(Event, skip=("id",))
_INSERT_EVENT = insert(s.events)


class SqlEventLog:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, event: Event) -> None:
        self.conn.execute(_INSERT_EVENT, _NEW_EVENT.dump(event))
        key = rollup.failure_key(event)
        if key is not None:
            self._count_failure(key)

    def _count_failure(self, key: dict[str, str]) -> None:
        fr = s.failure_rollup
        if self.conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
        stmt = upsert(fr).values(count=1, **key)
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={"count": fr.c.count + 1})
        self.conn.execute(stmt)

    def failure_report(
        self, tenant_id: str, since: datetime, until: datetime, group_by: str
    ) -> list[tuple[str, int]]:
        """Failure counts from the daily roll-up, grouped by reason, platform, type, step or day."""
        fr = s.failure_rollup
        col = fr.c[rollup.GROUPS[group_by]]
        q = (
            select(col, func.sum(fr.c.count))
            .where(
                and_(
                    fr.c.tenant_id == tenant_id,
                    fr.c.day >= rollup.day(since),
                    fr.c.day <= rollup.day(until),
                )
            )
            .group_by(col)
            .order_by(func.sum(fr.c.count).desc(), col)
        )
        return [(str(r[0]), int(r[1])) for r in self.conn.execute(q)]

    def query(self, tenant_id: str, **filters: Unpack[EventFilters]) -> list[Event]:
        t = s.events
        conds = [t.c.tenant_id == tenant_id]
        upn = filters.get("upn")
        serial, udid = filters.get("serial"), filters.get("udid")
        if serial is not None and udid is None:
            d = s.devices
            udids = select(d.c.udid).where(d.c.tenant_id == tenant_id, d.c.serial == serial)
            conds.append(or_(t.c.serial == serial, t.c.udid.in_(udids)))
            serial = None
        for col, value in (
            (t.c.upn, None if upn is None else upn.lower()),
            (t.c.serial, serial),
            (t.c.udid, udid),
            (t.c.reason, filters.get("reason")),
        ):
            if value is not None:
                conds.append(col == value)
        if (since := filters.get("since")) is not None:
            conds.append(t.c.at >= since)
        if (until := filters.get("until")) is not None:
            conds.append(t.c.at < until)
        after = filters.get("after_id")
        if after is not None:
            conds.append(t.c.id > after)
        order = (t.c.id,) if after is not None else (t.c.at.desc(), t.c.id.desc())
        q = select(t).where(and_(*conds)).order_by(*order).limit(filters.get("limit", 100))
        return [EVENT.load_row(r) for r in self.conn.execute(q)]
