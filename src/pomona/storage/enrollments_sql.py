"""SQL store of enrollments: a device's MDM relationship, bound to the identity it authenticated with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from pomona.domain.models import Enrollment, EnrollmentStatus, EnrollmentType
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec, select_in, utc

ENROLLMENT = RecordCodec(Enrollment)

_E = s.enrollments
_IS_ACTIVE = _E.c.status == EnrollmentStatus.ACTIVE.value
_ACTIVE_BY_FP = (
    select(_E, s.devices.c.last_seen_at)
    .join(s.devices, s.devices.c.id == _E.c.device_id)
    .where(and_(_E.c.cert_fingerprint == bindparam("fp"), _IS_ACTIVE))
    .limit(1)
)
_ACTIVE_BY_FP_P = Prepared(_ACTIVE_BY_FP)
_ADD = Prepared(insert(_E).values({name: bindparam(name) for name in ENROLLMENT.fields}))
_GET = Prepared(
    select(_E)
    .where(_E.c.tenant_id == bindparam("tenant_id"), _E.c.id == bindparam("id"))
    .order_by(_E.c.started_at.desc())
    .limit(1)
)
_BY_FP = Prepared(
    select(_E).where(_E.c.cert_fingerprint == bindparam("fp")).order_by(_E.c.started_at.desc()).limit(1)
)
_ACTIVE_FOR_UDID_ALL = Prepared(
    select(_E).where(_E.c.tenant_id == bindparam("tenant_id"), _E.c.udid == bindparam("udid"), _IS_ACTIVE)
)
_ACTIVE_FOR_SERIAL = Prepared(
    select(_E)
    .join(s.devices, s.devices.c.id == _E.c.device_id)
    .where(
        and_(
            s.devices.c.tenant_id == bindparam("tenant_id"),
            s.devices.c.serial == bindparam("serial"),
            _IS_ACTIVE,
        )
    )
)
_ACTIVE_COUNT_FOR_USER = Prepared(
    select(func.count().label("n")).select_from(_E).where(and_(_E.c.user_id == bindparam("uid"), _IS_ACTIVE))
)
_TOKEN_COLUMNS = ("push_token", "push_magic", "awaiting_configuration", "token_updated_at")
_UPDATE_TOKEN = {
    unlock: Prepared(
        update(_E)
        .where(_E.c.id == bindparam("eid"))
        .values({c: bindparam(c) for c in (*_TOKEN_COLUMNS, *(("unlock_token",) if unlock else ()))})
    )
    for unlock in (False, True)
}


class SqlEnrollmentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _all(self, *conds: Any, order: Any = None) -> list[Enrollment]:
        q = select(_E).where(and_(*conds))
        if order is not None:
            q = q.order_by(order)
        return [ENROLLMENT.load_row(r) for r in self.conn.execute(q)]

    def _first(self, *conds: Any) -> Enrollment | None:
        r = self.conn.execute(
            select(_E).where(and_(*conds)).order_by(_E.c.started_at.desc()).limit(1)
        ).first()
        return None if r is None else ENROLLMENT.load_row(r)

    def _set(self, enrollment_id: str, **values: object) -> None:
        self.conn.execute(update(_E).where(_E.c.id == enrollment_id).values(**values))

    def add(self, enrollment: Enrollment) -> None:
        _ADD.run(self.conn, ENROLLMENT.dump(enrollment))

    def get(self, tenant_id: str, enrollment_id: str) -> Enrollment | None:
        r = _GET.first(self.conn, {"tenant_id": tenant_id, "id": enrollment_id})
        return None if r is None else ENROLLMENT.load(r)

    def active_for_udid(self, tenant_id: str, udid: str) -> Enrollment | None:
        return self._first(_E.c.tenant_id == tenant_id, _E.c.udid == udid, _IS_ACTIVE)

    def active_for_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Enrollment]:
        """The active enrollment of each UDID that has one: {udid: enrollment}."""
        out: dict[str, Enrollment] = {}
        q = select(_E).where(and_(_E.c.tenant_id == tenant_id, _IS_ACTIVE))
        for r in select_in(self.conn, q, _E.c.udid, udids):
            e = ENROLLMENT.load_row(r)
            out.setdefault(e.udid, e)
        return out

    def by_fingerprint(self, fingerprint: str) -> Enrollment | None:
        r = _BY_FP.first(self.conn, {"fp": fingerprint})
        return None if r is None else ENROLLMENT.load(r)

    def active_by_fingerprint(self, fingerprint: str) -> tuple[Enrollment, datetime | None] | None:
        """The active enrollment a device identity is bound to, with the device's last check-in."""
        r = _ACTIVE_BY_FP_P.first(self.conn, {"fp": fingerprint})
        if r is None:
            return None
        return ENROLLMENT.load(r), utc(r["last_seen_at"])

    def active_count_for_user(self, user_id: str) -> int:
        r = _ACTIVE_COUNT_FOR_USER.first(self.conn, {"uid": user_id})
        assert r is not None
        return int(r["n"])

    def active_for_user(self, user_id: str) -> list[Enrollment]:
        return self._all(_E.c.user_id == user_id, _IS_ACTIVE, order=_E.c.started_at)

    def active_for_device(self, tenant_id: str, udid: str | None, serial: str | None) -> list[Enrollment]:
        """Active enrollments of a device known by UDID or serial number (two indexed lookups)."""
        found: dict[str, Enrollment] = {}
        if udid:
            rows = _ACTIVE_FOR_UDID_ALL.all(self.conn, {"tenant_id": tenant_id, "udid": udid})
            found.update((x.id, x) for x in map(ENROLLMENT.load, rows))
        if serial:
            rows = _ACTIVE_FOR_SERIAL.all(self.conn, {"tenant_id": tenant_id, "serial": serial})
            found.update((x.id, x) for x in map(ENROLLMENT.load, rows))
        return list(found.values())

    def for_device(self, tenant_id: str, device_id: str) -> list[Enrollment]:
        # By device id alone (unique, indexed): with tenant_id in the WHERE clause SQLite's planner took the
        # (tenant, status) index and scanned the tenant's enrollments. The tenant is checked on the rows.
        rows = self._all(_E.c.device_id == device_id)
        return sorted((e for e in rows if e.tenant_id == tenant_id), key=lambda e: e.started_at, reverse=True)

    def end(self, enrollment_id: str, status: EnrollmentStatus, at: datetime) -> None:
        self._set(enrollment_id, status=status.value, ended_at=at)

    def update_token(
        self,
        enrollment_id: str,
        push_token: bytes,
        push_magic: str,
        unlock_token: bytes | None,
        awaiting_configuration: bool,
        at: datetime,
    ) -> None:
        values: dict[str, object] = {
            "eid": enrollment_id,
            "push_token": push_token,
            "push_magic": push_magic,
            "awaiting_configuration": awaiting_configuration,
            "token_updated_at": at,
        }
        if unlock_token is not None:
            values["unlock_token"] = unlock_token
        _UPDATE_TOKEN[unlock_token is not None].run(self.conn, values)

    def set_type(self, enrollment_id: str, type_: EnrollmentType) -> None:
        self._set(enrollment_id, type=type_.value)

    def set_awaiting_configuration(self, enrollment_id: str, awaiting: bool) -> None:
        self._set(enrollment_id, awaiting_configuration=awaiting)
