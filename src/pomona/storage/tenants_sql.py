"""SQL stores of tenants and admin API tokens.

The tenants table holds each tenant CA's private key (``ca_key_pem``); a :class:`Tenant` is read without
it (the selects name the record's columns), and only :meth:`SqlTenantStore.ca_keypair` reads the key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from pomona.domain.models import ApiToken, Tenant
from pomona.ports import CaKeyPair, Sealer
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec
from pomona.storage.sealed import seal, unseal

TENANT = RecordCodec(Tenant)
API_TOKEN = RecordCodec(ApiToken)
_TENANT = select(*(s.tenants.c[name] for name in TENANT.fields))  # every column but the private keys
_GET = Prepared(_TENANT.where(s.tenants.c.id == bindparam("id")))
_CA_KEYPAIR = Prepared(
    select(s.tenants.c.ca_cert_pem, s.tenants.c.ca_key_pem).where(s.tenants.c.id == bindparam("id"))
)


class SqlTenantStore:
    def __init__(self, conn: Connection, sealer: Sealer | None = None) -> None:
        self.conn = conn
        self.sealer = sealer  # the CA key is sealed at rest (context ca-key:<tenant id>)

    def add(self, tenant: Tenant, ca_key_pem: bytes) -> None:
        sealed = seal(self.sealer, ca_key_pem, f"ca-key:{tenant.id}")
        self.conn.execute(insert(s.tenants).values(TENANT.dump(tenant, ca_key_pem=sealed)))

    def ca_keypair(self, tenant_id: str) -> CaKeyPair | None:
        r = _CA_KEYPAIR.first(self.conn, {"id": tenant_id})
        if r is None:
            return None
        key = unseal(self.sealer, bytes(r["ca_key_pem"]), f"ca-key:{tenant_id}")
        return CaKeyPair(bytes(r["ca_cert_pem"]), key)

    def scep_ra(self, tenant_id: str) -> CaKeyPair | None:
        t = s.tenants
        q = select(t.c.scep_ra_cert_pem, t.c.scep_ra_key_pem).where(t.c.id == tenant_id)
        r = self.conn.execute(q).first()
        if r is None or r.scep_ra_cert_pem is None or r.scep_ra_key_pem is None:
            return None
        key = unseal(self.sealer, bytes(r.scep_ra_key_pem), f"scep-ra-key:{tenant_id}")
        return CaKeyPair(bytes(r.scep_ra_cert_pem), key)

    def keep_scep_ra(self, tenant_id: str, ra: CaKeyPair) -> None:
        t = s.tenants
        sealed = seal(self.sealer, ra.key_pem, f"scep-ra-key:{tenant_id}")
        self.conn.execute(
            update(t)
            .where(t.c.id == tenant_id, t.c.scep_ra_cert_pem.is_(None))
            .values(scep_ra_cert_pem=ra.cert_pem, scep_ra_key_pem=sealed)
        )

    def get(self, tenant_id: str) -> Tenant | None:
        r = _GET.first(self.conn, {"id": tenant_id})
        return None if r is None else TENANT.load(r)

    def by_name(self, name: str) -> Tenant | None:
        r = self.conn.execute(_TENANT.where(s.tenants.c.name == name)).first()
        return None if r is None else TENANT.load_row(r)

    def list(self) -> list[Tenant]:
        return [TENANT.load_row(r) for r in self.conn.execute(_TENANT.order_by(s.tenants.c.name))]

    def _set(self, tenant_id: str, **values: object) -> None:
        self.conn.execute(update(s.tenants).where(s.tenants.c.id == tenant_id).values(**values))

    def set_push_cert(
        self, tenant_id: str, cert_pem: bytes, key_pem: bytes, topic: str, not_after: datetime
    ) -> None:
        self._set(
            tenant_id,
            push_cert_pem=cert_pem,
            push_key_pem=key_pem,
            push_topic=topic,
            push_not_after=not_after,
        )

    def set_authority(self, tenant_id: str, authority: str) -> None:
        self._set(tenant_id, mdm_authority=authority)

    def bump_policy_version(self, tenant_id: str) -> None:
        self._set(tenant_id, policy_version=s.tenants.c.policy_version + 1)

    def set_seats(self, tenant_id: str, seats: int) -> None:
        self._set(tenant_id, licence_seats=seats)


class SqlApiTokenStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, token: ApiToken, token_hash: str) -> None:
        self.conn.execute(insert(s.api_tokens).values(API_TOKEN.dump(token, token_hash=token_hash)))

    def by_hash(self, token_hash: str) -> ApiToken | None:
        r = self.conn.execute(select(s.api_tokens).where(s.api_tokens.c.token_hash == token_hash)).first()
        return None if r is None else API_TOKEN.load_row(r)

    def get(self, token_id: str) -> ApiToken | None:
        r = self.conn.execute(select(s.api_tokens).where(s.api_tokens.c.id == token_id)).first()
        return None if r is None else API_TOKEN.load_row(r)

    def list(self, tenant_id: str | None = None) -> list[ApiToken]:
        q = select(s.api_tokens).order_by(s.api_tokens.c.created_at, s.api_tokens.c.id)
        if tenant_id is not None:
            q = q.where(s.api_tokens.c.tenant_id == tenant_id)
        return [API_TOKEN.load_row(r) for r in self.conn.execute(q)]

    def revoke(self, token_id: str, at: datetime) -> None:
        self.conn.execute(
            update(s.api_tokens)
            .where(s.api_tokens.c.id == token_id, s.api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    def mark_used(self, token_id: str, at: datetime, *, since: datetime) -> None:
        t = s.api_tokens
        self.conn.execute(
            update(t)
            .where(t.c.id == token_id, or_(t.c.last_used_at.is_(None), t.c.last_used_at <= since))
            .values(last_used_at=at)
        )
