"""SQL stores of enrollment tokens and the device identity certificates issued through SCEP."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from pomona.domain.models import EnrollmentToken, IssuedCert
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec

ENROLLMENT_TOKEN = RecordCodec(EnrollmentToken)
ISSUED_CERT = RecordCodec(IssuedCert)
_TOKEN_BY_HASH = select(s.enrollment_tokens).where(s.enrollment_tokens.c.token_hash == bindparam("hash"))
_BY_HASH = Prepared(_TOKEN_BY_HASH)
_BY_HASH_FOR_UPDATE = Prepared(_TOKEN_BY_HASH.with_for_update())
_CONSUME = Prepared(
    update(s.enrollment_tokens)
    .where(s.enrollment_tokens.c.id == bindparam("id"))
    .values(uses_count=s.enrollment_tokens.c.uses_count + 1)
)
_CERT_ADD = Prepared(insert(s.certs).values({name: bindparam(name) for name in ISSUED_CERT.fields}))
_CERT_GET = Prepared(select(s.certs).where(s.certs.c.fingerprint == bindparam("fp")))
_CERT_BIND = Prepared(
    update(s.certs).where(s.certs.c.fingerprint == bindparam("fp")).values(enrollment_id=bindparam("eid"))
)


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
        r = (_BY_HASH_FOR_UPDATE if for_update else _BY_HASH).first(self.conn, {"hash": token_hash})
        return None if r is None else ENROLLMENT_TOKEN.load(r)

    def consume(self, token_id: str) -> None:
        _CONSUME.run(self.conn, {"id": token_id})

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
        _CERT_ADD.run(self.conn, ISSUED_CERT.dump(cert))

    def get(self, fingerprint: str) -> IssuedCert | None:
        r = _CERT_GET.first(self.conn, {"fp": fingerprint})
        return None if r is None else ISSUED_CERT.load(r)

    def bind(self, fingerprint: str, enrollment_id: str) -> None:
        _CERT_BIND.run(self.conn, {"fp": fingerprint, "eid": enrollment_id})
