"""SQL store of events, the log every refusal leaves, and of its daily failure roll-up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    and_,
    bindparam,
    case,
    cast,
    distinct,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB

from pomona.domain.models import Event, Outcome
from pomona.ports import INCIDENT_DETAIL, EventFilters, IncidentFacts
from pomona.storage import rollup
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec, utc_req

EVENT = RecordCodec(Event)
_NEW_EVENT = RecordCodec(Event, skip=("id",))
_INSERT_EVENT = Prepared(insert(s.events).values({name: bindparam(name) for name in _NEW_EVENT.fields}))


class SqlEventLog:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, event: Event) -> None:
        _INSERT_EVENT.run(self.conn, _NEW_EVENT.dump(event))
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

    def incident_facts(
        self,
        tenant_id: str,
        reasons: Sequence[str],
        steps: Sequence[str],
        since: datetime,
        until: datetime,
        sample: int = 10,
    ) -> IncidentFacts:
        """Counted in SQL: the failures by the (tenant, reason, at) index, the attempts by the (tenant,
        step, at) one, the distinct users and devices over both in one pass; only the samples are loaded."""
        t = s.events
        reasons = list(dict.fromkeys(reasons))
        window = and_(t.c.tenant_id == tenant_id, t.c.at >= since, t.c.at < until)
        failed = and_(window, t.c.reason.in_(reasons), t.c.outcome == Outcome.FAILED.value)
        user = func.nullif(t.c.upn, "")
        device = func.coalesce(func.nullif(t.c.udid, ""), func.nullif(t.c.serial, ""))
        failures: dict[str, tuple[int, datetime, datetime]] = {}
        kinds: list[tuple[str, dict[str, object]]] = []
        samples: dict[str, list[Event]] = {}
        if reasons:
            for r in self.conn.execute(
                select(t.c.reason, func.count(), func.min(t.c.at), func.max(t.c.at))
                .where(failed)
                .group_by(t.c.reason)
            ):
                failures[str(r[0])] = (int(r[1]), utc_req(r[2]), utc_req(r[3]))
            fields = [self._detail_field(k) for k in INCIDENT_DETAIL]
            for step, *values in self.conn.execute(select(t.c.step, *fields).where(failed).distinct()):
                decoded = [None if v is None else json.loads(v) for v in values]
                detail = {k: v for k, v in zip(INCIDENT_DETAIL, decoded, strict=True) if v is not None}
                kinds.append((str(step), detail))
            for reason in failures:
                q = (
                    select(t)
                    .where(failed, t.c.reason == reason)
                    .order_by(t.c.at, t.c.id.desc())
                    .limit(sample)
                )
                samples[reason] = [EVENT.load_row(r) for r in self.conn.execute(q)]
        parts = []
        if steps:
            parts.append(
                select(user.label("u"), device.label("d"), literal(0).label("f")).where(
                    window, t.c.step.in_(list(steps))
                )
            )
        if reasons:
            parts.append(select(user.label("u"), device.label("d"), literal(1).label("f")).where(failed))
        counts = [0, 0, 0, 0]
        if parts:
            both = union_all(*parts).subquery()
            row = self.conn.execute(
                select(
                    func.count(distinct(case((both.c.f == 1, both.c.u)))),
                    func.count(distinct(case((both.c.f == 1, both.c.d)))),
                    func.count(distinct(both.c.u)),
                    func.count(distinct(both.c.d)),
                )
            ).one()
            counts = [int(n) for n in row]
        return IncidentFacts(
            failures,
            failing_users=counts[0],
            failing_devices=counts[1],
            attempting_users=counts[2],
            attempting_devices=counts[3],
            kinds=kinds,
            samples=samples,
        )

    def _detail_field(self, key: str) -> ColumnElement[Any]:
        """The JSON text of a field of the event's detail (NULL or 'null' when absent)."""
        detail = func.nullif(s.events.c.detail, "")
        if self.conn.dialect.name == "postgresql":
            return cast(cast(detail, JSONB).op("->")(key), Text)
        # SQLite's json_extract gives strings unquoted and booleans as 1/0 (its -> operator, which gives
        # JSON, needs 3.38): quoted back by the value's JSON type.
        path = f"$.{key}"
        kind = func.json_type(detail, path)
        value = func.json_extract(detail, path)
        return case(
            (kind.in_(("true", "false")), kind),
            (kind.in_(("object", "array")), value),
            else_=func.json_quote(value),
        )

    def query(self, tenant_id: str, **filters: Unpack[EventFilters]) -> list[Event]:
        t = s.events
        conds = [t.c.tenant_id == tenant_id]
        upn = filters.get("upn")
        serial, udid = filters.get("serial"), filters.get("udid")
        story: list[ColumnElement[bool]] = []  # the device's story: one indexed search for each
        if serial is not None and udid is None:
            d = s.devices
            udids = list(
                self.conn.execute(
                    select(d.c.udid).where(d.c.tenant_id == tenant_id, d.c.serial == serial)
                ).scalars()
            )
            story.append(t.c.serial == serial)
            if udids:  # those naming the UDID only (or another serial): not twice
                named = t.c.udid == udids[0] if len(udids) == 1 else t.c.udid.in_(udids)
                story.append(and_(named, or_(t.c.serial.is_(None), t.c.serial != serial)))
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
        limit = filters.get("limit", 100)
        if not story:
            order = (t.c.id,) if after is not None else (t.c.at.desc(), t.c.id.desc())
            q = select(t).where(and_(*conds)).order_by(*order).limit(limit)
            return [EVENT.load_row(r) for r in self.conn.execute(q)]
        # One search per part by its (tenant, serial|udid, at) index, each limited, merged here: an OR
        # of the two is planned as a walk of the tenant's events by time (every event of a busy tenant
        # read for a quiet device).
        found: list[Event] = []
        for part in story:
            order = (t.c.id,) if after is not None else (t.c.at.desc(), t.c.id.desc())
            q = select(t).where(and_(*conds, part)).order_by(*order).limit(limit)
            found.extend(EVENT.load_row(r) for r in self.conn.execute(q))
        if after is not None:
            found.sort(key=lambda e: e.id or 0)
        else:
            found.sort(key=lambda e: (e.at, e.id or 0), reverse=True)
        return found[:limit]
