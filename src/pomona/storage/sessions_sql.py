"""The SQL store of portal sessions (ports.PortalSessionStore): kept server-side, found by the hash of
the cookie's random id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from pomona.ports import PortalSession, SessionEnd
from pomona.storage import schema as s
from pomona.storage.rows import utc, utc_req

_S = s.portal_sessions


class SqlPortalSessionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, id_hash: str, session: PortalSession) -> None:
        self.conn.execute(
            insert(_S).values(
                id_hash=id_hash,
                tenant_id=session.tenant_id,
                user_id=session.user_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
                revoked_at=session.revoked_at,
                revoked_why=session.revoked_why,
                stamp=session.stamp,
            )
        )

    def get(self, id_hash: str) -> PortalSession | None:
        r = self.conn.execute(select(_S).where(_S.c.id_hash == id_hash)).first()
        if r is None:
            return None
        return PortalSession(
            r.tenant_id,
            r.user_id,
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

    def revoke_user(self, tenant_id: str, user_id: str, at: datetime, why: SessionEnd) -> int:
        done = self.conn.execute(
            update(_S)
            .where(_S.c.tenant_id == tenant_id, _S.c.user_id == user_id, _S.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_why=why)
        )
        return int(done.rowcount)

    def purge(self, tenant_id: str, user_id: str, before: datetime) -> None:
        self.conn.execute(
            delete(_S).where(_S.c.tenant_id == tenant_id, _S.c.user_id == user_id, _S.c.expires_at < before)
        )
