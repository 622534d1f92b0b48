"""SQL stores of the console (issue 13): admin accounts, their sessions, the audit log, and the device
and user lists' keyset pages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, delete, false, func, insert, not_, or_, select, true, update

from pomona.domain.models import Device, EnrollmentStatus, EnrollmentType, User
from pomona.ports import (
    AdeProfileCount,
    AdeProfileDevice,
    AdminAccount,
    AuditEntry,
    ConsoleSession,
    DeviceCursor,
    DeviceFilter,
    DeviceSort,
    RollupRow,
    SessionEnd,
)
from pomona.storage import rollup
from pomona.storage import schema as s
from pomona.storage.devices_sql import DEVICE
from pomona.storage.rows import RecordCodec, utc, utc_req
from pomona.storage.users_sql import USER

ADMIN = RecordCodec(AdminAccount)
_A = s.admin_accounts
_S = s.console_sessions
_L = s.audit_log
_D = s.devices
_U = s.users
#: Apple's profile_status values of a device that has the profile it was given (services/abm.py HELD).
ABM_HELD = ("assigned", "pushed")


class SqlAdminStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, account: AdminAccount) -> None:
        self.conn.execute(insert(_A).values(ADMIN.dump(account)))

    def get(self, admin_id: str) -> AdminAccount | None:
        r = self.conn.execute(select(_A).where(_A.c.id == admin_id)).first()
        return None if r is None else ADMIN.load_row(r)

    def by_email(self, email: str) -> AdminAccount | None:
        r = self.conn.execute(select(_A).where(_A.c.email == email.lower())).first()
        return None if r is None else ADMIN.load_row(r)

    def list(self) -> list[AdminAccount]:
        rows = self.conn.execute(select(_A).order_by(_A.c.created_at, _A.c.email))
        return [ADMIN.load_row(r) for r in rows]

    def update(self, account: AdminAccount) -> None:
        values = ADMIN.dump(account)
        values.pop("id")
        self.conn.execute(update(_A).where(_A.c.id == account.id).values(values))


class SqlConsoleSessionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, id_hash: str, session: ConsoleSession) -> None:
        self.conn.execute(
            insert(_S).values(
                id_hash=id_hash,
                admin_id=session.admin_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
                revoked_at=session.revoked_at,
                revoked_why=session.revoked_why,
                stamp=session.stamp,
            )
        )

    def get(self, id_hash: str) -> ConsoleSession | None:
        r = self.conn.execute(select(_S).where(_S.c.id_hash == id_hash)).first()
        if r is None:
            return None
        return ConsoleSession(
            r.admin_id,
            utc_req(r.created_at),
            utc_req(r.expires_at),
            r.stamp,
            utc(r.revoked_at),
            r.revoked_why,
        )

    def revoke(self, id_hash: str, at: datetime, why: SessionEnd) -> None:
        self.conn.execute(
            update(_S)
            .where(_S.c.id_hash == id_hash, _S.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_why=why)
        )

    def revoke_admin(self, admin_id: str, at: datetime, why: SessionEnd) -> int:
        done = self.conn.execute(
            update(_S)
            .where(_S.c.admin_id == admin_id, _S.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_why=why)
        )
        return int(done.rowcount)

    def purge(self, admin_id: str, before: datetime) -> None:
        self.conn.execute(delete(_S).where(_S.c.admin_id == admin_id, _S.c.expires_at < before))


class SqlAuditLog:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, entry: AuditEntry) -> None:
        self.conn.execute(
            insert(_L).values(
                at=entry.at,
                actor=entry.actor[:320],
                action=entry.action[:64],
                tenant_id=entry.tenant_id,
                target=None if entry.target is None else entry.target[:255],
                source=None if entry.source is None else entry.source[:64],
                detail=json.dumps(dict(entry.detail), default=str),
            )
        )

    def list(
        self,
        tenant_id: str | None = None,
        *,
        limit: int = 50,
        before_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditEntry]:
        q = select(_L)
        if tenant_id is not None:
            q = q.where(_L.c.tenant_id == tenant_id)
        if before_id is not None:
            q = q.where(_L.c.id < before_id)
        if actor:
            q = q.where(_L.c.actor == actor)
        if action:
            q = q.where(_L.c.action.startswith(action, autoescape=True))
        if source:
            q = q.where(_L.c.source == source)
        if since is not None:
            q = q.where(_L.c.at >= since)
        if until is not None:
            q = q.where(_L.c.at < until)
        rows = self.conn.execute(q.order_by(_L.c.id.desc()).limit(limit))
        return [
            AuditEntry(
                utc_req(r.at), r.actor, r.action, r.tenant_id, r.target, r.source, json.loads(r.detail), r.id
            )
            for r in rows
        ]


_SORT_COLUMNS: dict[str, Any] = {
    "name": _D.c.device_name,
    "serial": _D.c.serial,
    "last_seen": _D.c.last_seen_at,
}


def prefix_filter(prefix: str | None) -> Any:
    """Devices whose name or serial number starts with ``prefix`` (case-sensitive ranges an index can
    serve), or None for no filter."""
    if not prefix:
        return None
    end = prefix + "\U0010ffff"
    return or_(
        and_(_D.c.device_name >= prefix, _D.c.device_name < end),
        and_(_D.c.serial >= prefix, _D.c.serial < end),
    )


_E = s.enrollments
_CORPORATE_TYPES = (EnrollmentType.ADE.value, EnrollmentType.CORPORATE.value)


def _enrolled(*more: Any, status: EnrollmentStatus = EnrollmentStatus.ACTIVE) -> Any:
    """The device has an enrollment in ``status`` (that also meets ``more``): a correlated EXISTS, one
    probe of the (tenant, udid, status) index per row the page walks. (An uncorrelated ``udid IN
    (SELECT ...)`` builds the whole set first: 100 ms for the active enrollments of 200,000 devices,
    where a page of 50 needs a few hundred probes.)"""
    return (
        select(_E.c.id)
        .where(_E.c.tenant_id == _D.c.tenant_id, _E.c.udid == _D.c.udid, _E.c.status == status.value, *more)
        .exists()
    )


def device_filters(tenant_id: str, f: DeviceFilter | None) -> list[Any]:
    """The WHERE conditions of a :class:`DeviceFilter`: a LIKE or comparison on the row, an EXISTS probe
    of the device's enrollments, or an IN over a small set (corporate identifiers, blocked devices); no
    join multiplies rows."""
    if f is None:
        return []
    out: list[Any] = []
    if f.platform == "ipados":
        out.append(_D.c.product_name.startswith("iPad", autoescape=True))
    elif f.platform == "ios":
        out.append(
            or_(
                _D.c.product_name.startswith("iPhone", autoescape=True),
                _D.c.product_name.startswith("iPod", autoescape=True),
            )
        )
    if f.os_prefix:
        out.append(
            or_(
                _D.c.os_version == f.os_prefix, _D.c.os_version.startswith(f.os_prefix + ".", autoescape=True)
            )
        )
    if f.os_versions is not None:
        out.append(_D.c.os_version.in_(list(f.os_versions)) if f.os_versions else false())
    if f.ownership is not None:
        ci = s.corporate_identifiers
        corporate = or_(
            _enrolled(_E.c.type.in_(_CORPORATE_TYPES)),
            _D.c.serial.in_(select(ci.c.value).where(ci.c.tenant_id == tenant_id, ci.c.kind == "serial")),
            _D.c.imei.in_(select(ci.c.value).where(ci.c.tenant_id == tenant_id, ci.c.kind == "imei")),
        )
        # the serial/IMEI IN is unknown (not false) for a device without one: coalesce to false
        out.append(
            func.coalesce(corporate, false())
            if f.ownership == "corporate"
            else not_(func.coalesce(corporate, false()))
        )
    if f.enrollment_type:
        out.append(_enrolled(_E.c.type == f.enrollment_type))
    if f.state == "active":
        out.append(_enrolled())
    elif f.state == "awaiting":
        out.append(_enrolled(_E.c.awaiting_configuration == true()))
    elif f.state == "unresponsive":
        before = f.unresponsive_before
        out.append(_enrolled(_E.c.first_unanswered_push_at <= before) if before is not None else false())
    elif f.state == "unenrolled":
        out.append(not_(_enrolled()))
    elif f.state == "retired":
        out.append(and_(not_(_enrolled()), _enrolled(status=EnrollmentStatus.RETIRED)))
    elif f.state == "blocked":
        b = s.blocked_devices
        out.append(
            or_(
                _D.c.udid.in_(select(b.c.value).where(b.c.tenant_id == tenant_id, b.c.kind == "udid")),
                _D.c.serial.in_(select(b.c.value).where(b.c.tenant_id == tenant_id, b.c.kind == "serial")),
            )
        )
    if f.seen_before is not None:
        out.append(or_(_D.c.last_seen_at < f.seen_before, _D.c.last_seen_at.is_(None)))
    return out


class SqlDeviceListing:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def page(
        self,
        tenant_id: str,
        *,
        sort: DeviceSort = "name",
        after: DeviceCursor | None = None,
        prefix: str | None = None,
        filters: DeviceFilter | None = None,
        limit: int = 50,
    ) -> list[Device]:
        """Rows with a sort value first, in order (last check-in: newest first), then those without, by
        id. Each part is one indexed range read from the cursor on (the filters checked on the way)."""
        col = _SORT_COLUMNS[sort]
        base = [_D.c.tenant_id == tenant_id, *device_filters(tenant_id, filters)]
        f = prefix_filter(prefix)
        if f is not None:
            base.append(f)
        out: list[Device] = []
        if after is None or not after.empty:
            cond = [*base, col.is_not(None)]
            if after is not None:
                v = after.value
                cond.append(
                    or_(col < v, and_(col == v, _D.c.id > after.id))
                    if sort == "last_seen"
                    else or_(col > v, and_(col == v, _D.c.id > after.id))
                )
            # Filtered, the few matching rows are found through both indexes (name, serial) and sorted;
            # ordering by an expression keeps the planner from walking the whole sort index instead.
            key = func.coalesce(col, col) if f is not None else col
            order = (key.desc(), _D.c.id) if sort == "last_seen" else (key, _D.c.id)
            rows = self.conn.execute(select(_D).where(*cond).order_by(*order).limit(limit))
            out = [DEVICE.load_row(r) for r in rows]
        if len(out) < limit:
            cond = [*base, col.is_(None)]
            if after is not None and after.empty:
                cond.append(_D.c.id > after.id)
            rows = self.conn.execute(select(_D).where(*cond).order_by(_D.c.id).limit(limit - len(out)))
            out += [DEVICE.load_row(r) for r in rows]
        return out

    def count(
        self,
        tenant_id: str,
        *,
        prefix: str | None = None,
        filters: DeviceFilter | None = None,
        cap: int | None = None,
    ) -> int:
        cond = [_D.c.tenant_id == tenant_id, *device_filters(tenant_id, filters)]
        f = prefix_filter(prefix)
        if f is not None:
            cond.append(f)
        if cap is None:
            return int(self.conn.execute(select(func.count()).select_from(_D).where(*cond)).scalar_one())
        inner = select(_D.c.id).where(*cond).limit(cap).subquery()
        return int(self.conn.execute(select(func.count()).select_from(inner)).scalar_one())

    def os_versions(self, tenant_id: str) -> list[str]:
        q = (
            select(_D.c.os_version)
            .where(_D.c.tenant_id == tenant_id, _D.c.os_version.is_not(None))
            .distinct()
        )
        return [v for (v,) in self.conn.execute(q)]


def _upn_range(prefix: str | None) -> Any:
    """UPNs starting with ``prefix`` (stored lower-case) as a range the (tenant, upn) index serves."""
    if not prefix:
        return None
    p = prefix.lower()
    return and_(_U.c.upn >= p, _U.c.upn < p + "\U0010ffff")


class SqlUserListing:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def page(
        self, tenant_id: str, *, after: str | None = None, prefix: str | None = None, limit: int = 50
    ) -> list[User]:
        """One range read of the (tenant, upn) index from the cursor on."""
        q = select(_U).where(_U.c.tenant_id == tenant_id)
        r = _upn_range(prefix)
        if r is not None:
            q = q.where(r)
        if after is not None:
            q = q.where(_U.c.upn > after)
        return [USER.load_row(row) for row in self.conn.execute(q.order_by(_U.c.upn).limit(limit))]

    def count(self, tenant_id: str, *, prefix: str | None = None) -> int:
        q = select(func.count()).select_from(_U).where(_U.c.tenant_id == tenant_id)
        r = _upn_range(prefix)
        if r is not None:
            q = q.where(r)
        return int(self.conn.execute(q).scalar_one())

    def device_counts(self, user_ids: Sequence[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        e = s.enrollments
        q = (
            select(e.c.user_id, func.count())
            .where(e.c.user_id.in_(list(user_ids)), e.c.status == EnrollmentStatus.ACTIVE.value)
            .group_by(e.c.user_id)
        )
        return {uid: int(n) for uid, n in self.conn.execute(q)}

    def group_names(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        if not user_ids:
            return {}
        m, g = s.group_members, s.groups
        q = (
            select(m.c.user_id, g.c.name)
            .join(g, g.c.id == m.c.group_id)
            .where(m.c.user_id.in_(list(user_ids)))
            .order_by(m.c.user_id, g.c.name)
        )
        out: dict[str, list[str]] = {}
        for uid, name in self.conn.execute(q):
            out.setdefault(uid, []).append(name)
        return out


def _how_many(cond: Any) -> Any:
    """How many rows meet ``cond``, as one column of a single pass."""
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


class SqlAbmListing:
    """Per-profile counts for the Apple settings page from indexes only (migration 0017): the assignments
    grouped by profile along ix (tenant, profile, serial, last error), in its order (no sort); the
    devices ABM lists with each profile's UUID under a token counted in ix (tenant, token, profile UUID,
    serial, status, deleted). A tenant with more than :data:`MAX_SUMS` profile definitions is counted
    with one GROUP BY join."""

    MAX_SUMS = 40

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def profile_counts(self, tenant_id: str) -> dict[str, AdeProfileCount]:
        p, pd = s.abm_profiles, s.abm_profile_definitions
        ids = [str(r[0]) for r in self.conn.execute(select(p.c.id).where(p.c.tenant_id == tenant_id))]
        if not ids:
            return {}
        defined = self.conn.execute(
            select(pd.c.profile_id, pd.c.token_id, pd.c.profile_uuid).where(pd.c.profile_id.in_(ids))
        ).all()
        if len(ids) > self.MAX_SUMS or len(defined) > self.MAX_SUMS:
            return self._grouped(tenant_id)
        a, d = s.abm_assignments, s.abm_devices
        wanted = {
            str(r[0]): (int(r[1]), int(r[2]))
            for r in self.conn.execute(
                select(a.c.profile_id, func.count(), func.count(a.c.last_error))
                .where(a.c.tenant_id == tenant_id)
                .group_by(a.c.profile_id)
            )
        }
        held: dict[str, int] = {}
        for pid, tok, u in defined:
            n = self.conn.execute(
                select(func.count()).where(
                    d.c.tenant_id == tenant_id,
                    d.c.token_id == tok,
                    d.c.profile_uuid == u,
                    d.c.deleted.is_(False),
                    d.c.profile_status.in_(ABM_HELD),
                )
            ).scalar_one()
            held[str(pid)] = held.get(str(pid), 0) + int(n)
        out = {
            pid: AdeProfileCount(wanted.get(pid, (0, 0))[0], held.get(pid, 0), wanted.get(pid, (0, 0))[1])
            for pid in ids
        }
        return {pid: c for pid, c in out.items() if c != AdeProfileCount()}

    def _grouped(self, tenant_id: str) -> dict[str, AdeProfileCount]:
        a, d, pd = s.abm_assignments, s.abm_devices, s.abm_profile_definitions
        wanted = {
            str(r[0]): (int(r[1]), int(r[2] or 0))
            for r in self.conn.execute(
                select(
                    a.c.profile_id,
                    func.count(),
                    func.sum(case((a.c.last_error.is_not(None), 1), else_=0)),
                )
                .where(a.c.tenant_id == tenant_id)
                .group_by(a.c.profile_id)
            )
        }
        held = {
            str(r[0]): int(r[1])
            for r in self.conn.execute(
                select(pd.c.profile_id, func.count())
                .select_from(
                    d.join(pd, and_(pd.c.profile_uuid == d.c.profile_uuid, pd.c.token_id == d.c.token_id))
                )
                .where(
                    d.c.tenant_id == tenant_id,
                    d.c.deleted.is_(False),
                    d.c.profile_status.in_(ABM_HELD),
                )
                .group_by(pd.c.profile_id)
            )
        }
        return {
            pid: AdeProfileCount(wanted.get(pid, (0, 0))[0], held.get(pid, 0), wanted.get(pid, (0, 0))[1])
            for pid in set(wanted) | set(held)
        }

    def profile_devices(
        self,
        tenant_id: str,
        profile_id: str,
        definitions: Mapping[str, str],
        *,
        after: str | None = None,
        limit: int = 50,
    ) -> list[AdeProfileDevice]:
        """Walks from ``after``, each stopped at ``limit`` rows, merged: the assignments wanting the profile
        (ix tenant+profile+serial), the devices ABM lists with it under each token (ix
        tenant+token+profile UUID+serial, migration 0017); then each of the
        page's serials looked up by key: its ABM record, its assignment, its newest device (ix
        tenant+serial) and its last dep/ade event (ix tenant+serial+at)."""
        a, d = s.abm_assignments, s.abm_devices
        q = select(a.c.serial_number).where(a.c.tenant_id == tenant_id, a.c.profile_id == profile_id)
        if after is not None:
            q = q.where(a.c.serial_number > after)
        serials = {str(r[0]) for r in self.conn.execute(q.order_by(a.c.serial_number).limit(limit))}
        for token, uuid in definitions.items():  # one walk of ix (tenant, token, profile UUID, serial) each
            q = select(d.c.serial_number).where(
                d.c.tenant_id == tenant_id,
                d.c.token_id == token,
                d.c.profile_uuid == uuid,
                d.c.deleted.is_(False),
            )
            if after is not None:
                q = q.where(d.c.serial_number > after)
            serials |= {str(r[0]) for r in self.conn.execute(q.order_by(d.c.serial_number).limit(limit))}
        page = sorted(serials)[:limit]
        if not page:
            return []
        listed = {
            str(r.serial_number): r
            for r in self.conn.execute(
                select(
                    d.c.serial_number, d.c.model, d.c.profile_status, d.c.profile_uuid, d.c.token_id
                ).where(d.c.tenant_id == tenant_id, d.c.serial_number.in_(page), d.c.deleted.is_(False))
            )
        }
        wanted = {
            str(r.serial_number): r
            for r in self.conn.execute(
                select(a.c.serial_number, a.c.explicit, a.c.rule_id, a.c.attempts, a.c.last_error).where(
                    a.c.tenant_id == tenant_id, a.c.serial_number.in_(page), a.c.profile_id == profile_id
                )
            )
        }
        dev: dict[str, str] = {}
        for serial, did, _ in self.conn.execute(
            select(_D.c.serial, _D.c.id, _D.c.created_at)
            .where(_D.c.tenant_id == tenant_id, _D.c.serial.in_(page))
            .order_by(_D.c.created_at)
        ):
            dev[str(serial)] = str(did)  # the newest wins
        e = s.events
        last_ids = [
            r[0]
            for r in self.conn.execute(
                select(func.max(e.c.id))
                .where(e.c.tenant_id == tenant_id, e.c.serial.in_(page), e.c.step.in_(("dep", "ade")))
                .group_by(e.c.serial)
            )
        ]
        events = {
            str(r.serial): r
            for r in self.conn.execute(
                select(e.c.serial, e.c.at, e.c.step, e.c.outcome, e.c.reason).where(e.c.id.in_(last_ids))
            )
        }
        out: list[AdeProfileDevice] = []
        for serial in page:
            ld, w, ev = listed.get(serial), wanted.get(serial), events.get(serial)
            held = bool(
                ld is not None
                and definitions.get(str(ld.token_id)) == ld.profile_uuid
                and ld.profile_status in ABM_HELD
            )
            how = "abm" if w is None else "explicit" if w.explicit else "rule" if w.rule_id else "default"
            out.append(
                AdeProfileDevice(
                    serial=serial,
                    model="" if ld is None else str(ld.model),
                    profile_status="" if ld is None else str(ld.profile_status),
                    how=how,
                    held=held,
                    attempts=0 if w is None else int(w.attempts),
                    last_error=None if w is None else w.last_error,
                    device_id=dev.get(serial),
                    event_at=None if ev is None else utc(ev.at),
                    event_step=None if ev is None else str(ev.step),
                    event_outcome=None if ev is None else str(ev.outcome),
                    event_reason=None if ev is None else ev.reason,
                )
            )
        return out


class SqlReportListing:
    """The console's reports: the failure roll-up's rows (its primary key starts with tenant and day)
    and the enrollments started per UTC day, counted in the database."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def failure_rows(self, tenant_id: str, since: datetime, until: datetime) -> list[RollupRow]:
        fr = s.failure_rollup
        q = (
            select(fr.c.day, fr.c.reason, fr.c.platform, fr.c.enrollment_type, fr.c.step, fr.c.count)
            .where(fr.c.tenant_id == tenant_id, fr.c.day >= rollup.day(since), fr.c.day <= rollup.day(until))
            .order_by(fr.c.day, fr.c.reason)
        )
        return [(str(a), str(b), str(c), str(d), str(e), int(n)) for a, b, c, d, e, n in self.conn.execute(q)]

    def enrollments_by_day(self, tenant_id: str, since: datetime, until: datetime) -> dict[str, int]:
        e = s.enrollments
        if self.conn.dialect.name == "postgresql":
            day: Any = func.to_char(func.timezone("UTC", e.c.started_at), "YYYY-MM-DD")
        else:  # SQLite keeps UTC text: "YYYY-MM-DD HH:MM:SS..."
            day = func.substr(e.c.started_at, 1, 10)
        q = (
            select(day.label("day"), func.count())
            .where(e.c.tenant_id == tenant_id, e.c.started_at >= since, e.c.started_at <= until)
            .group_by(day)
        )
        return {str(d): int(n) for d, n in self.conn.execute(q)}
