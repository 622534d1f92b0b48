"""SQL store of the directory's users."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from pomona.domain.models import User
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec

USER = RecordCodec(User)
#: What :meth:`SqlUserStore.update` may change.
USER_UPDATABLE = frozenset(
    {"enabled", "licensed", "mfa_required", "totp_secret", "is_dem", "display_name", "password_hash"}
)
_GROUP_IDS = Prepared(select(s.group_members.c.group_id).where(s.group_members.c.user_id == bindparam("uid")))
_GET = Prepared(
    select(s.users).where(s.users.c.tenant_id == bindparam("tenant_id"), s.users.c.id == bindparam("id"))
)


class SqlUserStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _one(self, tenant_id: str, cond: Any) -> User | None:
        r = self.conn.execute(select(s.users).where(and_(s.users.c.tenant_id == tenant_id, cond))).first()
        return None if r is None else USER.load_row(r)

    def add(self, user: User) -> None:
        self.conn.execute(insert(s.users).values(USER.dump(user)))

    def get(self, tenant_id: str, user_id: str) -> User | None:
        r = _GET.first(self.conn, {"tenant_id": tenant_id, "id": user_id})
        return None if r is None else USER.load(r)

    def by_upn(self, tenant_id: str, upn: str) -> User | None:
        return self._one(tenant_id, s.users.c.upn == upn.lower())

    def update(self, tenant_id: str, user_id: str, **fields: object) -> None:
        values = {k: v for k, v in fields.items() if k in USER_UPDATABLE}
        if values:
            self.conn.execute(
                update(s.users)
                .where(and_(s.users.c.tenant_id == tenant_id, s.users.c.id == user_id))
                .values(**values)
            )

    def delete(self, tenant_id: str, user_id: str) -> None:
        self.conn.execute(
            delete(s.users).where(and_(s.users.c.tenant_id == tenant_id, s.users.c.id == user_id))
        )

    def licensed_count(self, tenant_id: str) -> int:
        q = (
            select(func.count())
            .select_from(s.users)
            .where(and_(s.users.c.tenant_id == tenant_id, s.users.c.licensed))
        )
        return int(self.conn.execute(q).scalar_one())

    def group_ids(self, user_id: str) -> set[str]:
        return {r["group_id"] for r in _GROUP_IDS.all(self.conn, {"uid": user_id})}

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[User]:
        q = (
            select(s.users)
            .where(s.users.c.tenant_id == tenant_id)
            .order_by(s.users.c.upn)
            .limit(limit)
            .offset(offset)
        )
        return [USER.load_row(r) for r in self.conn.execute(q)]
