"""Stores of the directory and enrollment policy: groups, restrictions, corporate identifiers, blocks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row

from pomona.domain.models import BlockedDevice, CorporateIdentifier, Group
from pomona.domain.policy import DeviceLimitRestriction, DeviceTypeRestriction, Restriction, RestrictionKind
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import utc as _utc
from pomona.storage.rows import utc_req


class SqlGroupStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, group: Group) -> None:
        self.conn.execute(
            insert(s.groups).values(
                id=group.id, tenant_id=group.tenant_id, name=group.name, created_at=group.created_at
            )
        )

    def by_name(self, tenant_id: str, name: str) -> Group | None:
        r = self.conn.execute(
            select(s.groups).where(and_(s.groups.c.tenant_id == tenant_id, s.groups.c.name == name))
        ).first()
        return None if r is None else Group(r.id, r.tenant_id, r.name, utc_req(r.created_at))

    def list(self, tenant_id: str) -> list[Group]:
        q = select(s.groups).where(s.groups.c.tenant_id == tenant_id).order_by(s.groups.c.name)
        return [Group(r.id, r.tenant_id, r.name, utc_req(r.created_at)) for r in self.conn.execute(q)]

    def names(self, tenant_id: str, ids: set[str]) -> dict[str, str]:
        if not ids:
            return {}
        q = select(s.groups.c.id, s.groups.c.name).where(
            and_(s.groups.c.tenant_id == tenant_id, s.groups.c.id.in_(ids))
        )
        return {r[0]: r[1] for r in self.conn.execute(q)}

    def add_member(self, group_id: str, user_id: str) -> bool:
        exists = self.conn.execute(
            select(s.group_members.c.user_id).where(
                and_(s.group_members.c.group_id == group_id, s.group_members.c.user_id == user_id)
            )
        ).first()
        if exists:
            return False
        self.conn.execute(insert(s.group_members).values(group_id=group_id, user_id=user_id))
        return True

    def remove_member(self, group_id: str, user_id: str) -> None:
        self.conn.execute(
            delete(s.group_members).where(
                and_(s.group_members.c.group_id == group_id, s.group_members.c.user_id == user_id)
            )
        )

    def member_count(self, group_id: str) -> int:
        q = select(func.count()).select_from(s.group_members).where(s.group_members.c.group_id == group_id)
        return int(self.conn.execute(q).scalar_one())


# One table holds both kinds (its ``type`` column is the RestrictionKind); each kind's dataclass fields are
# columns of the same name, and the other kind's columns keep their defaults.
_TYPE_FIELDS = (
    "ios_allowed",
    "ipados_allowed",
    "ios_personal_allowed",
    "ipados_personal_allowed",
    "ios_min_os",
    "ios_max_os",
    "ipados_min_os",
    "ipados_max_os",
)
_LIMIT_FIELDS = ("device_limit",)
_R_FIELDS = _TYPE_FIELDS + _LIMIT_FIELDS


def _kind_values(r: Restriction) -> dict[str, object]:
    """The columns of the restriction's own kind."""
    names = _TYPE_FIELDS if isinstance(r, DeviceTypeRestriction) else _LIMIT_FIELDS
    return {k: getattr(r, k) for k in names}


class SqlRestrictionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, r: Restriction, tenant_id: str, at: datetime) -> None:
        self.conn.execute(
            insert(s.restrictions).values(
                id=r.id,
                tenant_id=tenant_id,
                name=r.name,
                type=r.kind.value,
                priority=r.priority,
                is_default=r.is_default,
                created_at=at,
                updated_at=at,
                **_kind_values(r),
            )
        )
        for gid in r.group_ids:
            self.conn.execute(insert(s.restriction_groups).values(restriction_id=r.id, group_id=gid))

    def update(self, restriction_id: str, at: datetime, **fields: object) -> None:
        values = {k: v for k, v in fields.items() if k in _R_FIELDS or k in ("name", "priority")}
        values["updated_at"] = at
        self.conn.execute(
            update(s.restrictions).where(s.restrictions.c.id == restriction_id).values(**values)
        )

    def assign(self, restriction_id: str, group_id: str) -> None:
        exists = self.conn.execute(
            select(s.restriction_groups.c.group_id).where(
                and_(
                    s.restriction_groups.c.restriction_id == restriction_id,
                    s.restriction_groups.c.group_id == group_id,
                )
            )
        ).first()
        if not exists:
            self.conn.execute(
                insert(s.restriction_groups).values(restriction_id=restriction_id, group_id=group_id)
            )

    def unassign(self, restriction_id: str, group_id: str) -> None:
        self.conn.execute(
            delete(s.restriction_groups).where(
                and_(
                    s.restriction_groups.c.restriction_id == restriction_id,
                    s.restriction_groups.c.group_id == group_id,
                )
            )
        )

    def delete(self, restriction_id: str) -> None:
        self.conn.execute(delete(s.restrictions).where(s.restrictions.c.id == restriction_id))

    def list(self, tenant_id: str) -> list[Restriction]:
        rows = list(self.conn.execute(select(s.restrictions).where(s.restrictions.c.tenant_id == tenant_id)))
        if not rows:
            return []
        assigned: dict[str, set[str]] = {}
        q = select(s.restriction_groups).where(
            s.restriction_groups.c.restriction_id.in_([r.id for r in rows])
        )
        for a in self.conn.execute(q):
            assigned.setdefault(a.restriction_id, set()).add(a.group_id)
        out = [_restriction(r, frozenset(assigned.get(r.id, ()))) for r in rows]
        return sorted(out, key=lambda r: (r.kind.value, r.is_default, r.priority))


def _restriction(r: Row[Any], groups: frozenset[str]) -> Restriction:
    m = r._mapping
    if RestrictionKind(m["type"]) is RestrictionKind.LIMIT:
        return DeviceLimitRestriction(
            id=m["id"],
            name=m["name"],
            priority=m["priority"],
            is_default=bool(m["is_default"]),
            group_ids=groups,
            device_limit=int(m["device_limit"]),
        )
    return DeviceTypeRestriction(
        id=m["id"],
        name=m["name"],
        priority=m["priority"],
        is_default=bool(m["is_default"]),
        group_ids=groups,
        ios_allowed=bool(m["ios_allowed"]),
        ipados_allowed=bool(m["ipados_allowed"]),
        ios_personal_allowed=bool(m["ios_personal_allowed"]),
        ipados_personal_allowed=bool(m["ipados_personal_allowed"]),
        ios_min_os=m["ios_min_os"],
        ios_max_os=m["ios_max_os"],
        ipados_min_os=m["ipados_min_os"],
        ipados_max_os=m["ipados_max_os"],
    )


def _identity_lookup(table: Any, kinds: tuple[str, ...], *, ids_only: bool) -> Prepared:
    """The rows of ``table`` (corporate identifiers, blocked devices) of a tenant listing any of these
    kinds of identifier (``kind`` = k AND ``value`` = :k), one statement per combination of kinds."""
    conds = [and_(table.c.kind == k, table.c.value == bindparam(k)) for k in kinds]
    q = select(table.c.id) if ids_only else select(table)
    q = q.where(and_(table.c.tenant_id == bindparam("tenant_id"), or_(*conds)))
    return Prepared(q.limit(1) if ids_only else q)


_CORPORATE_MATCH: dict[tuple[str, ...], Prepared] = {
    kinds: _identity_lookup(s.corporate_identifiers, kinds, ids_only=False)
    for kinds in (("serial",), ("imei",), ("serial", "imei"))
}
_BLOCKED: dict[tuple[str, ...], Prepared] = {
    kinds: _identity_lookup(s.blocked_devices, kinds, ids_only=True)
    for kinds in (("serial",), ("udid",), ("serial", "udid"))
}


def _corp(m: Mapping[Any, Any]) -> CorporateIdentifier:
    return CorporateIdentifier(
        m["id"],
        m["tenant_id"],
        m["kind"],
        m["value"],
        m["description"],
        m["state"],
        _utc(m["last_contact_at"]),
        utc_req(m["created_at"]),
    )


class SqlCorporateStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def upsert_many(self, tenant_id: str, rows: list[CorporateIdentifier]) -> int:
        """Insert new identifiers; an existing one keeps its state and gets the new description."""
        added = 0
        for c in rows:
            existing = self.get(tenant_id, c.kind, c.value)
            if existing is None:
                self.conn.execute(
                    insert(s.corporate_identifiers).values(
                        id=c.id,
                        tenant_id=tenant_id,
                        kind=c.kind,
                        value=c.value,
                        description=c.description,
                        state=c.state,
                        created_at=c.created_at,
                    )
                )
                added += 1
            elif c.description is not None:
                self.conn.execute(
                    update(s.corporate_identifiers)
                    .where(s.corporate_identifiers.c.id == existing.id)
                    .values(description=c.description)
                )
        return added

    def get(self, tenant_id: str, kind: str, value: str) -> CorporateIdentifier | None:
        t = s.corporate_identifiers
        r = self.conn.execute(
            select(t).where(and_(t.c.tenant_id == tenant_id, t.c.kind == kind, t.c.value == value))
        ).first()
        return None if r is None else _corp(r._mapping)

    def match(self, tenant_id: str, serial: str | None, imei: str | None) -> CorporateIdentifier | None:
        """The identifier listing this device's serial (preferred) or IMEI, in one query."""
        wanted = {k: normalize_identifier(v) for k, v in (("serial", serial), ("imei", imei)) if v}
        if not wanted:
            return None
        rows = _CORPORATE_MATCH[tuple(wanted)].all(self.conn, {"tenant_id": tenant_id, **wanted})
        return min(map(_corp, rows), key=lambda c: c.kind != "serial", default=None)

    def set_state(self, identifier_id: str, state: str, at: datetime) -> None:
        t = s.corporate_identifiers
        self.conn.execute(update(t).where(t.c.id == identifier_id).values(state=state, last_contact_at=at))

    def list(self, tenant_id: str, *, limit: int = 1000, offset: int = 0) -> list[CorporateIdentifier]:
        t = s.corporate_identifiers
        q = (
            select(t)
            .where(t.c.tenant_id == tenant_id)
            .order_by(t.c.kind, t.c.value)
            .limit(limit)
            .offset(offset)
        )
        return [_corp(r._mapping) for r in self.conn.execute(q)]

    def delete(self, tenant_id: str, kind: str, value: str) -> bool:
        t = s.corporate_identifiers
        res = self.conn.execute(
            delete(t).where(and_(t.c.tenant_id == tenant_id, t.c.kind == kind, t.c.value == value))
        )
        return bool(res.rowcount)


def normalize_identifier(value: str) -> str:
    return "".join(value.split()).upper()


class SqlBlockStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, b: BlockedDevice) -> None:
        if self.is_blocked(b.tenant_id, **{b.kind: b.value}):
            return
        self.conn.execute(
            insert(s.blocked_devices).values(
                id=b.id,
                tenant_id=b.tenant_id,
                kind=b.kind,
                value=b.value,
                note=b.note,
                created_at=b.created_at,
            )
        )

    def remove(self, tenant_id: str, kind: str, value: str) -> bool:
        t = s.blocked_devices
        res = self.conn.execute(
            delete(t).where(and_(t.c.tenant_id == tenant_id, t.c.kind == kind, t.c.value == value))
        )
        return bool(res.rowcount)

    def is_blocked(self, tenant_id: str, *, serial: str | None = None, udid: str | None = None) -> bool:
        wanted = {k: v for k, v in (("serial", serial), ("udid", udid)) if v}
        if not wanted:
            return False
        return _BLOCKED[tuple(wanted)].first(self.conn, {"tenant_id": tenant_id, **wanted}) is not None

    def list(self, tenant_id: str) -> list[BlockedDevice]:
        t = s.blocked_devices
        q = select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.created_at)
        return [
            BlockedDevice(r.id, r.tenant_id, r.kind, r.value, r.note, utc_req(r.created_at))
            for r in self.conn.execute(q)
        ]
