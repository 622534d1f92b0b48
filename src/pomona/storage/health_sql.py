"""Store of tenant health: findings with first and last seen, and the tenant-wide counts checks need."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, select, update

from pomona.domain.checks import Finding, RecordedFinding, Severity
from pomona.domain.models import EnrollmentStatus
from pomona.domain.reasons import ReasonCode
from pomona.storage import schema as s
from pomona.storage.rows import utc_req


class SqlHealthStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def open_findings(self, tenant_id: str) -> list[RecordedFinding]:
        return [_recorded(r) for r in self._open(tenant_id)]

    def _open(self, tenant_id: str) -> list[Row[Any]]:
        h = s.health_findings
        q = (
            select(h)
            .where(and_(h.c.tenant_id == tenant_id, h.c.resolved_at.is_(None)))
            .order_by(h.c.first_seen)
        )
        return list(self.conn.execute(q))

    def record(self, tenant_id: str, found: Sequence[Finding], now: datetime) -> list[Finding]:
        """Upsert what was found now; resolve what is no longer found. Returns the NEW findings."""
        h = s.health_findings
        current = {(r.code, r.subject): r.id for r in self._open(tenant_id)}
        new = []
        for f in found:
            facts = json.dumps(dict(f.facts), default=str)
            row_id = current.pop(f.key, None)
            if row_id is not None:
                self.conn.execute(
                    update(h)
                    .where(h.c.id == row_id)
                    .values(last_seen=now, facts=facts, severity=f.severity.value)
                )
            else:
                self.conn.execute(
                    insert(h).values(
                        id=str(uuid.uuid4()),
                        tenant_id=tenant_id,
                        code=f.code.value,
                        subject=f.subject,
                        severity=f.severity.value,
                        facts=facts,
                        first_seen=now,
                        last_seen=now,
                    )
                )
                new.append(f)
        for gone in current.values():
            self.conn.execute(update(h).where(h.c.id == gone).values(resolved_at=now))
        return new

    def mark_notified(self, tenant_id: str, codes: list[tuple[str, str]], now: datetime) -> None:
        h = s.health_findings
        for code, subject in codes:
            self.conn.execute(
                update(h)
                .where(
                    and_(
                        h.c.tenant_id == tenant_id,
                        h.c.code == code,
                        h.c.subject == subject,
                        h.c.resolved_at.is_(None),
                    )
                )
                .values(notified_at=now)
            )

    def stuck_awaiting(self, tenant_id: str, before: datetime) -> list[tuple[str, str, str | None, datetime]]:
        e, d = s.enrollments, s.devices
        q = (
            select(e.c.id, e.c.udid, d.c.serial, e.c.token_updated_at)
            .select_from(e.join(d, d.c.id == e.c.device_id))
            .where(
                and_(
                    e.c.tenant_id == tenant_id,
                    e.c.status == EnrollmentStatus.ACTIVE.value,
                    e.c.awaiting_configuration,
                    e.c.token_updated_at < before,
                )
            )
            .order_by(e.c.token_updated_at)
            .limit(1000)
        )
        return [(r[0], r[1], r[2], utc_req(r[3])) for r in self.conn.execute(q)]

    def unlicensed_users(self, tenant_id: str) -> int:
        u = s.users
        q = (
            select(func.count())
            .select_from(u)
            .where(and_(u.c.tenant_id == tenant_id, u.c.enabled, ~u.c.licensed))
        )
        return int(self.conn.execute(q).scalar_one())


def _recorded(r: Row[Any]) -> RecordedFinding:
    return RecordedFinding(
        Finding(ReasonCode(r.code), Severity(r.severity), r.subject, json.loads(r.facts) if r.facts else {}),
        utc_req(r.first_seen),
        utc_req(r.last_seen),
    )
