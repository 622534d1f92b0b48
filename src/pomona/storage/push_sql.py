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
    Select,
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

from pomona.domain.models import EnrollmentStatus
from pomona.ports import (
    PushAttempt,
    PushCertState,
    PushCredentials,
    PushJob,
    PushKind,
    PushReschedule,
    Reachability,
    ReEnrollment,
    TokenRefusal,
    WebhookDelivery,
)
from pomona.storage import schema as s
from pomona.storage.commands_sql import PENDING
from pomona.storage.rows import RecordCodec, chunks, select_in, utc

_Q, _E, _D, _T = s.push_queue, s.enrollments, s.devices, s.tenants
_ACTIVE = _E.c.status == EnrollmentStatus.ACTIVE.value
_RELEASED = {"claimed_until": None, "claimed_by": None}
_DELIVERY = RecordCodec(WebhookDelivery)
_NEW_DELIVERY = RecordCodec(WebhookDelivery, skip=("id",))


def _executemany(conn: Connection, stmt: Any, rows: Sequence[object], params: dict[str, str]) -> None:
    """Run ``stmt`` once per record, binding ``b_<name>`` to each record's attribute ``params[name]``
    (bound names must not be column names of an UPDATE's SET clause)."""
    if rows:
        conn.execute(stmt, [{f"b_{k}": getattr(r, a) for k, a in params.items()} for r in rows])


class SqlPushQueue:
    """The push queue, inside one unit of work's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.is_sqlite = conn.dialect.name == "sqlite"

    def request(
        self, tenant_id: str, enrollment_ids: Iterable[str], now: datetime, kind: PushKind = PushKind.COMMAND
    ) -> None:
        """Ask for a push to each enrollment now (one row per enrollment; a new command resets backoff)."""
        kind = PushKind(kind)
        rows = [
            {
                "enrollment_id": eid,
                "tenant_id": tenant_id,
                "due_at": now,
                "kind": kind.value,
                "created_at": now,
            }
            for eid in dict.fromkeys(enrollment_ids)
        ]
        if not rows:
            return
        if self.is_sqlite:  # each dialect's upsert, imported when first used (CLI start-up)
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        ins = upsert(_Q)
        again: dict[str, Any] = {"due_at": ins.excluded.due_at, **_RELEASED}
        if kind is PushKind.COMMAND:
            again.update(kind=PushKind.COMMAND.value, attempts=0, failures=0, first_pushed_at=None)
        # else: a canary only makes an existing row due now
        stmt = ins.on_conflict_do_update(index_elements=[_Q.c.enrollment_id], set_=again)
        for part in chunks(rows):
            self.conn.execute(stmt, part)

    def token_updated(self, enrollment_id: str, tenant_id: str, now: datetime) -> None:
        """A new TokenUpdate: the token is valid again; push if commands are waiting."""
        self.conn.execute(
            update(_E)
            .where(and_(_E.c.id == enrollment_id, _E.c.push_token_invalid_at.is_not(None)))
            .values(push_token_invalid_at=None, push_token_invalid_reason=None)
        )
        c = s.commands
        waiting = self.conn.execute(
            select(literal(1))
            .where(and_(c.c.enrollment_id == enrollment_id, c.c.status.in_(PENDING)))
            .limit(1)
        ).first()
        if waiting is not None:
            queued = self.conn.execute(
                select(_Q.c.enrollment_id).where(_Q.c.enrollment_id == enrollment_id)
            ).first()
            if queued is None:
                self.request(tenant_id, [enrollment_id], now)

    def claim(self, now: datetime, lease_until: datetime, claimed_by: str, limit: int) -> list[PushJob]:
        free = and_(_Q.c.due_at <= now, or_(_Q.c.claimed_until.is_(None), _Q.c.claimed_until < now))
        pick = select(_Q.c.enrollment_id).where(free).order_by(_Q.c.due_at).limit(limit)
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        self.conn.execute(
            update(_Q)
            .where(_Q.c.enrollment_id.in_(pick.scalar_subquery()))
            .values(claimed_until=lease_until, claimed_by=claimed_by)
            .execution_options(synchronize_session=False)
        )
        c = s.commands
        pending = (
            exists()
            .where(
                and_(c.c.enrollment_id == _Q.c.enrollment_id, c.c.status.in_([literal(x) for x in PENDING]))
            )
            .correlate(_Q)
        )
        rows = self.conn.execute(
            select(
                _Q.c.enrollment_id,
                _Q.c.tenant_id,
                _Q.c.kind,
                _Q.c.attempts,
                _Q.c.failures,
                _Q.c.first_pushed_at,
                _E.c.udid,
                _E.c.device_id,
                _E.c.status,
                _E.c.topic,
                _E.c.push_token,
                _E.c.push_magic,
                _E.c.push_token_invalid_at,
                _E.c.reenroll_required_at,
                _T.c.push_topic,
                _T.c.push_cert_invalid_at,
                _T.c.push_not_after,
                pending.label("has_pending"),
                _D.c.last_seen_at,
                _E.c.first_unanswered_push_at,
            )
            .select_from(
                _Q.join(_E, _E.c.id == _Q.c.enrollment_id)
                .join(_D, _D.c.id == _E.c.device_id)
                .join(_T, _T.c.id == _Q.c.tenant_id)
            )
            .where(_Q.c.claimed_by == claimed_by)
        ).all()
        return [
            PushJob(
                enrollment_id=r[0],
                tenant_id=r[1],
                kind=PushKind(r[2]),
                attempts=int(r[3]),
                failures=int(r[4]),
                first_pushed_at=utc(r[5]),
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
                tenant_not_after=utc(r[16]),
                has_pending=bool(r[17]),
                last_seen_at=utc(r[18]),
                first_unanswered_push_at=utc(r[19]),
            )
            for r in rows
        ]

    def reschedule(self, claimed_by: str, rows: Sequence[PushReschedule]) -> None:
        """Release claimed rows with a new due time."""
        names = ("due_at", "attempts", "failures", "first_pushed_at", "last_error")
        _executemany(
            self.conn,
            update(_Q)
            .where(and_(_Q.c.enrollment_id == bindparam("b_eid"), _Q.c.claimed_by == claimed_by))
            .values(**{n: bindparam(f"b_{n}") for n in names}, **_RELEASED)
            .execution_options(synchronize_session=False),
            rows,
            {"eid": "enrollment_id", **{n: n for n in names}},
        )

    def drop(self, claimed_by: str, enrollment_ids: Sequence[str]) -> None:
        if enrollment_ids:
            self.conn.execute(
                delete(_Q).where(
                    and_(_Q.c.enrollment_id == bindparam("b_eid"), _Q.c.claimed_by == claimed_by)
                ),
                [{"b_eid": x} for x in enrollment_ids],
            )

    def queue_size(self, tenant_id: str | None = None) -> int:
        q = select(func.count()).select_from(_Q)
        if tenant_id is not None:
            q = q.where(_Q.c.tenant_id == tenant_id)
        return int(self.conn.execute(q).scalar_one())


_REACHABILITY = select(
    _E.c.id,
    _E.c.device_id,
    _E.c.udid,
    _D.c.serial,
    _E.c.last_push_at,
    _E.c.last_push_status,
    _D.c.last_seen_at,
    _E.c.first_unanswered_push_at,
    _E.c.push_token_invalid_reason,
).select_from(_E.join(_D, _D.c.id == _E.c.device_id))


class SqlPushReachability:
    """Per-enrollment push state: the last push and its answer, dead tokens, silent devices."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def record_pushes(self, rows: Sequence[PushAttempt]) -> None:
        _executemany(
            self.conn,
            update(_E)
            .where(_E.c.id == bindparam("b_eid"))
            .values(
                last_push_at=bindparam("b_at"),
                last_push_status=bindparam("b_status"),
                first_unanswered_push_at=bindparam("b_first_unanswered"),
            )
            .execution_options(synchronize_session=False),
            rows,
            {
                "eid": "enrollment_id",
                "at": "at",
                "status": "status",
                "first_unanswered": "first_unanswered_push_at",
            },
        )

    def mark_token_invalid(self, rows: Sequence[TokenRefusal]) -> None:
        """No more pushes to these enrollments until a new TokenUpdate."""
        _executemany(
            self.conn,
            update(_E)
            .where(_E.c.id == bindparam("b_eid"))
            .values(
                push_token_invalid_at=bindparam("b_at"),
                push_token_invalid_reason=bindparam("b_reason"),
                last_push_at=bindparam("b_at"),
                last_push_status=bindparam("b_reason"),
            )
            .execution_options(synchronize_session=False),
            rows,
            {"eid": "enrollment_id", "at": "at", "reason": "reason"},
        )

    def _reachability(self, q: Select[Any]) -> list[Reachability]:
        return [
            Reachability(r[0], r[1], r[2], r[3], utc(r[4]), r[5], utc(r[6]), utc(r[7]), r[8])
            for r in self.conn.execute(q)
        ]

    def reachability(self, tenant_id: str, *, limit: int = 1000) -> list[Reachability]:
        q = (
            _REACHABILITY.where(and_(_E.c.tenant_id == tenant_id, _ACTIVE))
            .order_by(_E.c.started_at)
            .limit(limit)
        )
        return self._reachability(q)

    def unanswered(
        self, tenant_id: str, before: datetime, enrollment_ids: Sequence[str] | None = None
    ) -> list[Reachability]:
        """Active enrollments whose first unanswered accepted push is older than ``before`` (only those
        of ``enrollment_ids`` when given: one device's, read by its key)."""
        where = [
            _E.c.tenant_id == tenant_id,
            _ACTIVE,
            _E.c.first_unanswered_push_at.is_not(None),
            _E.c.first_unanswered_push_at <= before,
            _E.c.push_token_invalid_at.is_(None),
        ]
        if enrollment_ids is not None:
            if not enrollment_ids:
                return []
            where.append(_E.c.id.in_(list(enrollment_ids)))
        return self._reachability(_REACHABILITY.where(and_(*where)))

    def pick_canary(
        self, tenant_id: str, topic: str, count: int, seen_before: datetime
    ) -> list[tuple[str, str]]:
        """Up to ``count`` pushable enrollments on the topic, least recently seen first."""
        rows = self.conn.execute(
            select(_E.c.id, _E.c.device_id)
            .select_from(_E.join(_D, _D.c.id == _E.c.device_id))
            .where(
                and_(
                    _E.c.tenant_id == tenant_id,
                    _E.c.topic == topic,
                    _ACTIVE,
                    _E.c.push_token.is_not(None),
                    _E.c.push_token_invalid_at.is_(None),
                    _E.c.reenroll_required_at.is_(None),
                )
            )
            .order_by(_D.c.last_seen_at.asc().nulls_first(), _E.c.id)
            .limit(count)
        ).all()
        del seen_before
        return [(r[0], r[1]) for r in rows]

    def seen_since(self, device_ids: Sequence[str]) -> dict[str, datetime | None]:
        q = select(_D.c.id, _D.c.last_seen_at)
        return {r[0]: utc(r[1]) for r in select_in(self.conn, q, _D.c.id, device_ids)}

    def last_pushes(self, enrollment_ids: Sequence[str]) -> dict[str, tuple[datetime | None, str | None]]:
        q = select(_E.c.id, _E.c.last_push_at, _E.c.last_push_status)
        return {r[0]: (utc(r[1]), r[2]) for r in select_in(self.conn, q, _E.c.id, enrollment_ids)}


class SqlPushCertStore:
    """The tenant's push-certificate lifecycle state, and the credentials the push client reads."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def credentials(self, topic: str) -> PushCredentials | None:
        r = self.conn.execute(
            select(_T.c.id, _T.c.push_cert_pem, _T.c.push_key_pem).where(_T.c.push_topic == topic)
        ).first()
        if r is None or r[1] is None or r[2] is None:
            return None
        return PushCredentials(r[0], bytes(r[1]), bytes(r[2]))

    def set_cert_invalid(self, tenant_id: str, at: datetime, reason: str) -> bool:
        """Stop pushing for the tenant until its certificate changes; True when newly set."""
        res = self.conn.execute(
            update(_T)
            .where(and_(_T.c.id == tenant_id, _T.c.push_cert_invalid_at.is_(None)))
            .values(push_cert_invalid_at=at, push_cert_invalid_reason=reason)
        )
        return bool(res.rowcount)

    def cert_state(self, tenant_id: str) -> PushCertState:
        r = self.conn.execute(
            select(
                _T.c.push_cert_invalid_at,
                _T.c.push_cert_invalid_reason,
                _T.c.push_apple_id,
                _T.c.push_cert_updated_at,
                _T.c.push_pending_key,
            ).where(_T.c.id == tenant_id)
        ).first()
        if r is None:
            return PushCertState()
        return PushCertState(utc(r[0]), r[1], r[2], utc(r[3]), None if r[4] is None else bytes(r[4]))

    def set_pending_key(self, tenant_id: str, sealed: bytes | None) -> None:
        self.conn.execute(update(_T).where(_T.c.id == tenant_id).values(push_pending_key=sealed))

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
        self.conn.execute(update(_T).where(_T.c.id == tenant_id).values(**values))
        self.conn.execute(
            update(_Q).where(_Q.c.tenant_id == tenant_id).values(due_at=at, failures=0, **_RELEASED)
        )


class SqlReEnrollmentStore:
    """Enrollments on a push topic, and those a certificate replacement cut off."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def active_on_topic(self, tenant_id: str, topic: str) -> int:
        q = (
            select(func.count())
            .select_from(_E)
            .where(and_(_E.c.tenant_id == tenant_id, _E.c.topic == topic, _ACTIVE))
        )
        return int(self.conn.execute(q).scalar_one())

    def mark_reenroll_required(self, tenant_id: str, old_topic: str, at: datetime) -> int:
        res = self.conn.execute(
            update(_E)
            .where(
                and_(
                    _E.c.tenant_id == tenant_id,
                    _E.c.topic == old_topic,
                    _ACTIVE,
                    _E.c.reenroll_required_at.is_(None),
                )
            )
            .values(reenroll_required_at=at)
        )
        return int(res.rowcount or 0)

    def reenroll_required(self, tenant_id: str, *, limit: int = 1000) -> tuple[int, list[ReEnrollment]]:
        where = and_(_E.c.tenant_id == tenant_id, _ACTIVE, _E.c.reenroll_required_at.is_not(None))
        count = int(self.conn.execute(select(func.count()).select_from(_E).where(where)).scalar_one())
        rows = self.conn.execute(
            select(_E.c.id, _E.c.udid, _D.c.serial, _E.c.topic, _E.c.reenroll_required_at, _E.c.user_id)
            .select_from(_E.join(_D, _D.c.id == _E.c.device_id))
            .where(where)
            .order_by(_E.c.started_at)
            .limit(limit)
        ).all()
        return count, [ReEnrollment(r[0], r[1], r[2], r[3], utc(r[4]), r[5]) for r in rows]


class SqlWebhookStore:
    """A tenant's webhook (its secret sealed) and the record of deliveries to it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def set_webhook(self, tenant_id: str, url: str, sealed_secret: bytes, at: datetime) -> None:
        w = s.webhooks
        self.conn.execute(delete(w).where(w.c.tenant_id == tenant_id))
        self.conn.execute(insert(w).values(tenant_id=tenant_id, url=url, secret=sealed_secret, created_at=at))

    def webhook(self, tenant_id: str) -> tuple[str, bytes] | None:
        w = s.webhooks
        r = self.conn.execute(select(w.c.url, w.c.secret).where(w.c.tenant_id == tenant_id)).first()
        return None if r is None else (r[0], bytes(r[1]))

    def record_delivery(self, delivery: WebhookDelivery) -> None:
        row = _NEW_DELIVERY.dump(delivery)
        row["codes"] = row["codes"][:255]
        self.conn.execute(insert(s.webhook_deliveries).values(row))

    def deliveries(self, tenant_id: str, *, limit: int = 50) -> list[WebhookDelivery]:
        w = s.webhook_deliveries
        q = select(w).where(w.c.tenant_id == tenant_id).order_by(w.c.id.desc()).limit(limit)
        return [_DELIVERY.load_row(r) for r in self.conn.execute(q)]
