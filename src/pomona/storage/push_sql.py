"""SQL storage of push delivery (issue 4): the durable push queue, reachability, the certificate lifecycle.

The push queue holds at most one row per enrollment (coalesced). Claiming is safe with several server
processes:

- PostgreSQL: ``UPDATE push_queue SET claimed_until = :lease, claimed_by = :me WHERE enrollment_id IN
  (SELECT ... WHERE due AND NOT leased ORDER BY due_at LIMIT :n FOR UPDATE SKIP LOCKED)``: concurrent
  claimers skip each other's rows instead of waiting on them;
- SQLite: the same UPDATE inside the unit of work's ``BEGIN IMMEDIATE`` transaction: one writer at a
  time, so two claimers never see the same free row.

A claim is a lease: a process that dies (SIGKILL) after claiming leaves rows whose ``claimed_until``
passes, and any process claims them again. Results are written back only ``WHERE claimed_by = :me``, so
a row re-queued by a new command while it was being pushed (the upsert clears the claim) is not
overwritten by the older result: it stays due and is pushed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pomona.domain.models import CommandStatus, EnrollmentStatus
from pomona.ports import PushJob, Reachability
from pomona.storage import schema as s
from pomona.storage.sql import _utc

_PENDING = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)
_ACTIVE = EnrollmentStatus.ACTIVE.value


class SqlPushQueue:
    """The push queue and per-enrollment push state, inside one unit of work's transaction."""

    def __init__(self, conn: Connection, is_sqlite: bool) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite

    # -- requests ----------------------------------------------------------------------------------
    def request(
        self, tenant_id: str, enrollment_ids: Iterable[str], now: datetime, kind: str = "command"
    ) -> None:
        """Ask for a push to each enrollment now (one row per enrollment; a new command resets backoff)."""
        rows = [
            {"enrollment_id": eid, "tenant_id": tenant_id, "due_at": now, "kind": kind, "created_at": now}
            for eid in dict.fromkeys(enrollment_ids)
        ]
        if not rows:
            return
        ins = (sqlite_insert if self.is_sqlite else pg_insert)(s.push_queue)
        if kind == "command":
            stmt = ins.on_conflict_do_update(
                index_elements=[s.push_queue.c.enrollment_id],
                set_={
                    "due_at": ins.excluded.due_at,
                    "kind": "command",
                    "attempts": 0,
                    "failures": 0,
                    "first_pushed_at": None,
                    "claimed_until": None,
                    "claimed_by": None,
                },
            )
        else:  # a canary only makes an existing row due now
            stmt = ins.on_conflict_do_update(
                index_elements=[s.push_queue.c.enrollment_id],
                set_={"due_at": ins.excluded.due_at, "claimed_until": None, "claimed_by": None},
            )
        for i in range(0, len(rows), 500):
            self.conn.execute(stmt, rows[i : i + 500])

    def token_updated(self, enrollment_id: str, tenant_id: str, now: datetime) -> None:
        """A new TokenUpdate: the token is valid again; push if commands are waiting."""
        self.conn.execute(
            update(s.enrollments)
            .where(
                and_(s.enrollments.c.id == enrollment_id, s.enrollments.c.push_token_invalid_at.is_not(None))
            )
            .values(push_token_invalid_at=None, push_token_invalid_reason=None)
        )
        waiting = self.conn.execute(
            select(literal(1))
            .where(and_(s.commands.c.enrollment_id == enrollment_id, s.commands.c.status.in_(_PENDING)))
            .limit(1)
        ).first()
        if waiting is not None:
            queued = self.conn.execute(
                select(s.push_queue.c.enrollment_id).where(s.push_queue.c.enrollment_id == enrollment_id)
            ).first()
            if queued is None:
                self.request(tenant_id, [enrollment_id], now)

    # -- claiming ----------------------------------------------------------------------------------
    def claim(self, now: datetime, lease_until: datetime, claimed_by: str, limit: int) -> list[PushJob]:
        q = s.push_queue
        free = and_(q.c.due_at <= now, or_(q.c.claimed_until.is_(None), q.c.claimed_until < now))
        pick = select(q.c.enrollment_id).where(free).order_by(q.c.due_at).limit(limit)
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        self.conn.execute(
            update(q)
            .where(q.c.enrollment_id.in_(pick.scalar_subquery()))
            .values(claimed_until=lease_until, claimed_by=claimed_by)
            .execution_options(synchronize_session=False)
        )
        e, d, t, c = s.enrollments, s.devices, s.tenants, s.commands
        pending = (
            exists()
            .where(
                and_(c.c.enrollment_id == q.c.enrollment_id, c.c.status.in_([literal(x) for x in _PENDING]))
            )
            .correlate(q)
        )
        rows = self.conn.execute(
            select(
                q.c.enrollment_id,
                q.c.tenant_id,
                q.c.kind,
                q.c.attempts,
                q.c.failures,
                q.c.first_pushed_at,
                e.c.udid,
                e.c.device_id,
                e.c.status,
                e.c.topic,
                e.c.push_token,
                e.c.push_magic,
                e.c.push_token_invalid_at,
                e.c.reenroll_required_at,
                t.c.push_topic,
                t.c.push_cert_invalid_at,
                t.c.push_not_after,
                pending.label("has_pending"),
                d.c.last_seen_at,
                e.c.first_unanswered_push_at,
            )
            .select_from(
                q.join(e, e.c.id == q.c.enrollment_id)
                .join(d, d.c.id == e.c.device_id)
                .join(t, t.c.id == q.c.tenant_id)
            )
            .where(q.c.claimed_by == claimed_by)
        ).all()
        return [
            PushJob(
                enrollment_id=r[0],
                tenant_id=r[1],
                kind=r[2],
                attempts=int(r[3]),
                failures=int(r[4]),
                first_pushed_at=_utc(r[5]),
                udid=r[6],
                device_id=r[7],
                status=r[8],
                topic=r[9],
                push_token=None if r[10] is None else bytes(r[10]),
                push_magic=r[11],
                token_invalid=r[12] is not None,
                reenroll_required=r[13] is not None,
                tenant_topic=r[14],
                tenant_cert_invalid=r[15] is not None,
                tenant_not_after=_utc(r[16]),
                has_pending=bool(r[17]),
                last_seen_at=_utc(r[18]),
                first_unanswered_push_at=_utc(r[19]),
            )
            for r in rows
        ]

    def reschedule(self, claimed_by: str, rows: Sequence[dict[str, Any]]) -> None:
        """Release claimed rows with a new due time: dicts of eid, due_at, attempts, failures,
        first_pushed_at, last_error."""
        if not rows:
            return
        q = s.push_queue
        self.conn.execute(
            update(q)
            .where(and_(q.c.enrollment_id == bindparam("b_eid"), q.c.claimed_by == claimed_by))
            .values(
                due_at=bindparam("b_due_at"),
                attempts=bindparam("b_attempts"),
                failures=bindparam("b_failures"),
                first_pushed_at=bindparam("b_first_pushed_at"),
                last_error=bindparam("b_last_error"),
                claimed_until=None,
                claimed_by=None,
            )
            .execution_options(synchronize_session=False),
            _b(rows),
        )

    def drop(self, claimed_by: str, enrollment_ids: Sequence[str]) -> None:
        if not enrollment_ids:
            return
        q = s.push_queue
        self.conn.execute(
            delete(q).where(and_(q.c.enrollment_id == bindparam("b_eid"), q.c.claimed_by == claimed_by)),
            [{"b_eid": x} for x in enrollment_ids],
        )

    # -- per-enrollment state ----------------------------------------------------------------------
    def record_pushes(self, rows: Sequence[dict[str, Any]]) -> None:
        """dicts of eid, at, status, first_unanswered."""
        if not rows:
            return
        e = s.enrollments
        self.conn.execute(
            update(e)
            .where(e.c.id == bindparam("b_eid"))
            .values(
                last_push_at=bindparam("b_at"),
                last_push_status=bindparam("b_status"),
                first_unanswered_push_at=bindparam("b_first_unanswered"),
            )
            .execution_options(synchronize_session=False),
            _b(rows),
        )

    def mark_token_invalid(self, rows: Sequence[dict[str, Any]]) -> None:
        """dicts of eid, at, reason: no more pushes until a new TokenUpdate."""
        if not rows:
            return
        e = s.enrollments
        self.conn.execute(
            update(e)
            .where(e.c.id == bindparam("b_eid"))
            .values(
                push_token_invalid_at=bindparam("b_at"),
                push_token_invalid_reason=bindparam("b_reason"),
                last_push_at=bindparam("b_at"),
                last_push_status=bindparam("b_reason"),
            )
            .execution_options(synchronize_session=False),
            _b(rows),
        )

    def reachability(self, tenant_id: str, *, limit: int = 1000) -> list[Reachability]:
        e, d = s.enrollments, s.devices
        rows = self.conn.execute(
            select(
                e.c.id,
                e.c.device_id,
                e.c.udid,
                d.c.serial,
                e.c.last_push_at,
                e.c.last_push_status,
                d.c.last_seen_at,
                e.c.first_unanswered_push_at,
                e.c.push_token_invalid_reason,
            )
            .select_from(e.join(d, d.c.id == e.c.device_id))
            .where(and_(e.c.tenant_id == tenant_id, e.c.status == _ACTIVE))
            .order_by(e.c.started_at)
            .limit(limit)
        ).all()
        return [
            Reachability(r[0], r[1], r[2], r[3], _utc(r[4]), r[5], _utc(r[6]), _utc(r[7]), r[8]) for r in rows
        ]

    def unanswered(self, tenant_id: str, before: datetime) -> list[Reachability]:
        """Active enrollments whose first unanswered accepted push is older than ``before``."""
        e, d = s.enrollments, s.devices
        rows = self.conn.execute(
            select(
                e.c.id,
                e.c.device_id,
                e.c.udid,
                d.c.serial,
                e.c.last_push_at,
                e.c.last_push_status,
                d.c.last_seen_at,
                e.c.first_unanswered_push_at,
                e.c.push_token_invalid_reason,
            )
            .select_from(e.join(d, d.c.id == e.c.device_id))
            .where(
                and_(
                    e.c.tenant_id == tenant_id,
                    e.c.status == _ACTIVE,
                    e.c.first_unanswered_push_at.is_not(None),
                    e.c.first_unanswered_push_at <= before,
                    e.c.push_token_invalid_at.is_(None),
                )
            )
        ).all()
        return [
            Reachability(r[0], r[1], r[2], r[3], _utc(r[4]), r[5], _utc(r[6]), _utc(r[7]), r[8]) for r in rows
        ]

    def queue_size(self, tenant_id: str | None = None) -> int:
        q = select(func.count()).select_from(s.push_queue)
        if tenant_id is not None:
            q = q.where(s.push_queue.c.tenant_id == tenant_id)
        return int(self.conn.execute(q).scalar_one())

    # -- tenant-wide state -------------------------------------------------------------------------
    def set_cert_invalid(self, tenant_id: str, at: datetime, reason: str) -> bool:
        """Stop pushing for the tenant until its certificate changes; True when newly set."""
        t = s.tenants
        res = self.conn.execute(
            update(t)
            .where(and_(t.c.id == tenant_id, t.c.push_cert_invalid_at.is_(None)))
            .values(push_cert_invalid_at=at, push_cert_invalid_reason=reason)
        )
        return bool(res.rowcount)

    def cert_state(self, tenant_id: str) -> dict[str, Any]:
        t = s.tenants
        r = self.conn.execute(
            select(
                t.c.push_cert_invalid_at,
                t.c.push_cert_invalid_reason,
                t.c.push_apple_id,
                t.c.push_cert_updated_at,
                t.c.push_pending_key,
            ).where(t.c.id == tenant_id)
        ).first()
        if r is None:
            return {}
        return {
            "invalid_at": _utc(r[0]),
            "invalid_reason": r[1],
            "apple_id": r[2],
            "updated_at": _utc(r[3]),
            "pending_key": None if r[4] is None else bytes(r[4]),
        }

    def set_pending_key(self, tenant_id: str, sealed: bytes | None) -> None:
        self.conn.execute(
            update(s.tenants).where(s.tenants.c.id == tenant_id).values(push_pending_key=sealed)
        )

    def cert_changed(self, tenant_id: str, at: datetime, apple_id: str | None) -> None:
        """A new certificate: clear the tenant-wide refusal, make every queued push due now."""
        values: dict[str, object] = {
            "push_cert_invalid_at": None,
            "push_cert_invalid_reason": None,
            "push_cert_updated_at": at,
            "push_pending_key": None,
        }
        if apple_id:
            values["push_apple_id"] = apple_id
        self.conn.execute(update(s.tenants).where(s.tenants.c.id == tenant_id).values(**values))
        self.conn.execute(
            update(s.push_queue)
            .where(s.push_queue.c.tenant_id == tenant_id)
            .values(due_at=at, failures=0, claimed_until=None, claimed_by=None)
        )

    def active_on_topic(self, tenant_id: str, topic: str) -> int:
        e = s.enrollments
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(e)
                .where(and_(e.c.tenant_id == tenant_id, e.c.topic == topic, e.c.status == _ACTIVE))
            ).scalar_one()
        )

    def mark_reenroll_required(self, tenant_id: str, old_topic: str, at: datetime) -> int:
        e = s.enrollments
        res = self.conn.execute(
            update(e)
            .where(
                and_(
                    e.c.tenant_id == tenant_id,
                    e.c.topic == old_topic,
                    e.c.status == _ACTIVE,
                    e.c.reenroll_required_at.is_(None),
                )
            )
            .values(reenroll_required_at=at)
        )
        return int(res.rowcount or 0)

    def reenroll_required(self, tenant_id: str, *, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
        e, d = s.enrollments, s.devices
        where = and_(e.c.tenant_id == tenant_id, e.c.status == _ACTIVE, e.c.reenroll_required_at.is_not(None))
        count = int(self.conn.execute(select(func.count()).select_from(e).where(where)).scalar_one())
        rows = self.conn.execute(
            select(e.c.id, e.c.udid, d.c.serial, e.c.topic, e.c.reenroll_required_at, e.c.user_id)
            .select_from(e.join(d, d.c.id == e.c.device_id))
            .where(where)
            .order_by(e.c.started_at)
            .limit(limit)
        ).all()
        return count, [
            {
                "enrollment_id": r[0],
                "udid": r[1],
                "serial": r[2],
                "topic": r[3],
                "since": None if r[4] is None else _utc(r[4]).isoformat(),  # type: ignore[union-attr]
                "user_id": r[5],
            }
            for r in rows
        ]

    def pick_canary(
        self, tenant_id: str, topic: str, count: int, seen_before: datetime
    ) -> list[tuple[str, str]]:
        """Up to ``count`` pushable enrollments on the topic, least recently seen first, preferring
        those not seen since ``seen_before`` (their check-in is then certain to be recorded)."""
        e, d = s.enrollments, s.devices
        rows = self.conn.execute(
            select(e.c.id, e.c.device_id)
            .select_from(e.join(d, d.c.id == e.c.device_id))
            .where(
                and_(
                    e.c.tenant_id == tenant_id,
                    e.c.topic == topic,
                    e.c.status == _ACTIVE,
                    e.c.push_token.is_not(None),
                    e.c.push_token_invalid_at.is_(None),
                    e.c.reenroll_required_at.is_(None),
                )
            )
            .order_by(d.c.last_seen_at)
            .limit(count)
        ).all()
        del seen_before
        return [(r[0], r[1]) for r in rows]

    def seen_since(self, device_ids: Sequence[str]) -> dict[str, datetime | None]:
        if not device_ids:
            return {}
        rows = self.conn.execute(
            select(s.devices.c.id, s.devices.c.last_seen_at).where(s.devices.c.id.in_(list(device_ids)))
        ).all()
        return {r[0]: _utc(r[1]) for r in rows}

    def last_pushes(self, enrollment_ids: Sequence[str]) -> dict[str, tuple[datetime | None, str | None]]:
        if not enrollment_ids:
            return {}
        e = s.enrollments
        rows = self.conn.execute(
            select(e.c.id, e.c.last_push_at, e.c.last_push_status).where(e.c.id.in_(list(enrollment_ids)))
        ).all()
        return {r[0]: (_utc(r[1]), r[2]) for r in rows}

    # -- webhooks ----------------------------------------------------------------------------------
    def set_webhook(self, tenant_id: str, url: str, sealed_secret: bytes, at: datetime) -> None:
        w = s.webhooks
        self.conn.execute(delete(w).where(w.c.tenant_id == tenant_id))
        self.conn.execute(insert(w).values(tenant_id=tenant_id, url=url, secret=sealed_secret, created_at=at))

    def webhook(self, tenant_id: str) -> tuple[str, bytes] | None:
        w = s.webhooks
        r = self.conn.execute(select(w.c.url, w.c.secret).where(w.c.tenant_id == tenant_id)).first()
        return None if r is None else (r[0], bytes(r[1]))

    def record_delivery(
        self,
        tenant_id: str,
        at: datetime,
        url: str,
        codes: str,
        attempts: int,
        status: str,
        http_status: int | None,
        error: str | None,
    ) -> None:
        self.conn.execute(
            insert(s.webhook_deliveries).values(
                tenant_id=tenant_id,
                at=at,
                url=url,
                codes=codes[:255],
                attempts=attempts,
                status=status,
                http_status=http_status,
                error=error,
            )
        )

    def deliveries(self, tenant_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        w = s.webhook_deliveries
        rows = self.conn.execute(
            select(w).where(w.c.tenant_id == tenant_id).order_by(w.c.id.desc()).limit(limit)
        ).all()
        out = []
        for r in rows:
            m = dict(r._mapping)
            m["at"] = _utc(m["at"])
            out.append(m)
        return out


def _b(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bound parameter names must not be column names in an UPDATE's SET clause: prefix them."""
    return [{f"b_{k}": v for k, v in r.items()} for r in rows]
