"""SQL stores of enrollment tokens and the device identity certificates issued through SCEP."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from pomona.domain.models import EnrollmentToken, IssuedCert
from pomona.storage import schema as s
from pomona.storage.rows import RecordCodec

ENROLLMENT_TOKEN = RecordCodec(EnrollmentToken)
ISSUED_CERT = RecordCodec(IssuedCert)


class SqlEnrollmentTokenStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, token: EnrollmentToken, token_hash: str) -> None:
        self.conn.execute(
            insert(s.enrollment_tokens).values(ENROLLMENT_TOKEN.dump(token, token_hash=token_hash))
        )

    def by_hash(self, token_hash: str) -> EnrollmentToken | None:
        return self._by_hash(token_hash, for_update=False)

    def by_hash_for_update(self, token_hash: str) -> EnrollmentToken | None:
        """The token, locked until the transaction ends (SQLite's BEGIN IMMEDIATE already is)."""
        return self._by_hash(token_hash, for_update=self.conn.dialect.name != "sqlite")

    def _by_hash(self, token_hash: str, *, for_update: bool) -> EnrollmentToken | None:
        q = select(s.enrollment_tokens).where(s.enrollment_tokens.c.token_hash == token_hash)
        if for_update:
            q = q.with_for_update()
        r = self.conn.execute(q).first()
        return None if r is None else ENROLLMENT_TOKEN.load_row(r)

    def consume(self, token_id: str) -> None:
        self.conn.execute(
            update(s.enrollment_tokens)
            .where(s.enrollment_tokens.c.id == token_id)
            .values(uses_count=s.enrollment_tokens.c.uses_count + 1)
        )

    def get(self, tenant_id: str, token_id: str) -> EnrollmentToken | None:
        q = select(s.enrollment_tokens).where(
            s.enrollment_tokens.c.tenant_id == tenant_id, s.enrollment_tokens.c.id == token_id
        )
        r = self.conn.execute(q).first()
        return None if r is None else ENROLLMENT_TOKEN.load_row(r)

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[EnrollmentToken]:
        q = (
            select(s.enrollment_tokens)
            .where(s.enrollment_tokens.c.tenant_id == tenant_id, s.enrollment_tokens.c.ade_serial.is_(None))
            .order_by(s.enrollment_tokens.c.created_at.desc(), s.enrollment_tokens.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [ENROLLMENT_TOKEN.load_row(r) for r in self.conn.execute(q)]

    def revoke(self, token_id: str) -> None:
        self.conn.execute(
            update(s.enrollment_tokens).where(s.enrollment_tokens.c.id == token_id).values(revoked=True)
        )


class SqlCertStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, cert: IssuedCert) -> None:
        self.conn.execute(insert(s.certs).values(ISSUED_CERT.dump(cert)))

    def get(self, fingerprint: str) -> IssuedCert | None:
        r = self.conn.execute(select(s.certs).where(s.certs.c.fingerprint == fingerprint)).first()
        return None if r is None else ISSUED_CERT.load_row(r)

    def bind(self, fingerprint: str, enrollment_id: str) -> None:
        self.conn.execute(
            update(s.certs).where(s.certs.c.fingerprint == fingerprint).values(enrollment_id=enrollment_id)
        )
