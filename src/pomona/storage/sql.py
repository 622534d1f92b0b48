"""The SQL implementation of the store ports: SQLAlchemy 2 Core, sync, on SQLite or PostgreSQL.

SQLite runs in WAL mode; write transactions start with BEGIN IMMEDIATE so that two writers never
deadlock on a lock upgrade. PostgreSQL claims queue rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row

from pomona.domain.models import (
    ApiToken,
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentToken,
    EnrollmentType,
    Event,
    IssuedCert,
    Outcome,
    QueuedCommand,
    Step,
    Tenant,
    User,
)
from pomona.domain.policy import platform_from_detail
from pomona.ports import ChannelState
from pomona.storage import schema as s
from pomona.storage.health_sql import SqlHealthStore
from pomona.storage.policy_sql import SqlBlockStore, SqlCorporateStore, SqlGroupStore, SqlRestrictionStore

if TYPE_CHECKING:
    from pomona.storage.push_sql import SqlPushQueue


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc_req(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_IN_CHUNK = 500  # ids per IN list or multi-row INSERT: well under SQLite's and PostgreSQL's bind limits

_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _in(conn: Connection, col: Any, values: Sequence[str]) -> Iterator[Any]:
    """Conditions ``col IN values``, one per query to run: on PostgreSQL a single ``= ANY(array)``
    (one bind parameter, one plan, one scan), on SQLite IN lists of at most _IN_CHUNK."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield col == any_(bindparam(None, list(values), type_=ARRAY(col.type)))
        return
    for part in _chunks(values):
        yield col.in_(part)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'pomona.db').resolve()}"


class SqlDatabase:
    """An engine plus the unit-of-work factory. One per process."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=pool_size
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            self.url = url
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
        self._local = threading.local()

    @classmethod
    def for_tests(cls, url: str) -> SqlDatabase:
        db = cls(url)
        return db

    def create_all(self) -> None:
        """Apply the Alembic migrations up to head."""
        from pomona.storage.migrate import upgrade

        upgrade(self.engine)

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[SqlUnitOfWork]:
        conn = self.engine.connect()
        if self.is_sqlite:
            conn.info["sqlite_readonly"] = readonly
        try:
            with conn.begin():
                yield SqlUnitOfWork(conn, self.is_sqlite)
        finally:
            conn.close()

    def channel_state(self, fingerprint: str, *, skip_not_now: bool) -> ChannelState | None:
        """The command channel's hot read, in one statement outside any transaction: the active
        enrollment bound to this identity, the device's last check-in, and the next command, if any.
        """
        q = _CHANNEL_SKIP_NOT_NOW if skip_not_now else _CHANNEL_ANY
        if self.is_sqlite:
            # A deferred (read) transaction is the same one-statement snapshot, and costs half of
            # switching the pooled connection to autocommit and back.
            with self.engine.connect() as conn:
                conn.info["sqlite_readonly"] = True
                r = conn.execute(q, {"fp": fingerprint}).first()
        else:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                r = conn.execute(q, {"fp": fingerprint}).first()
        if r is None:
            return None
        return ChannelState(r[0], r[1], r[2], r[3], _utc(r[4]), r[5], None if r[6] is None else bytes(r[6]))

    def settings_get(self, key: str) -> bytes | None:
        with self.unit_of_work(readonly=True) as uow:
            row = uow.conn.execute(select(s.settings.c.value).where(s.settings.c.key == key)).first()
            return None if row is None else bytes(row[0])

    def settings_put(self, key: str, value: bytes) -> None:
        with self.unit_of_work() as uow:
            done = uow.conn.execute(
                update(s.settings).where(s.settings.c.key == key).values(value=value)
            ).rowcount
            if not done:
                uow.conn.execute(insert(s.settings).values(key=key, value=value))

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    # Straight on the driver connection: the same statement without a trip through the engine's
    # execution machinery (twice per check-in).
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("BEGIN" if conn.info.get("sqlite_readonly") else "BEGIN IMMEDIATE")


class SqlUnitOfWork:
    """The stores over one transaction's connection, each made on first use (a check-in touches two or
    three of them)."""

    def __init__(self, conn: Connection, is_sqlite: bool) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite

    @cached_property
    def tenants(self) -> SqlTenantStore:
        return SqlTenantStore(self.conn)

    @cached_property
    def api_tokens(self) -> SqlApiTokenStore:
        return SqlApiTokenStore(self.conn)

    @cached_property
    def users(self) -> SqlUserStore:
        return SqlUserStore(self.conn)

    @cached_property
    def enrollment_tokens(self) -> SqlEnrollmentTokenStore:
        return SqlEnrollmentTokenStore(self.conn, self.is_sqlite)

    @cached_property
    def certs(self) -> SqlCertStore:
        return SqlCertStore(self.conn)

    @cached_property
    def devices(self) -> SqlDeviceStore:
        return SqlDeviceStore(self.conn)

    @cached_property
    def enrollments(self) -> SqlEnrollmentStore:
        return SqlEnrollmentStore(self.conn)

    @cached_property
    def commands(self) -> SqlCommandQueue:
        return SqlCommandQueue(self.conn, self.is_sqlite)

    @cached_property
    def events(self) -> SqlEventLog:
        return SqlEventLog(self.conn)

    @cached_property
    def groups(self) -> SqlGroupStore:
        return SqlGroupStore(self.conn)

    @cached_property
    def restrictions(self) -> SqlRestrictionStore:
        return SqlRestrictionStore(self.conn)

    @cached_property
    def corporate(self) -> SqlCorporateStore:
        return SqlCorporateStore(self.conn)

    @cached_property
    def blocks(self) -> SqlBlockStore:
        return SqlBlockStore(self.conn)

    @cached_property
    def pushes(self) -> SqlPushQueue:
        from pomona.storage.push_sql import SqlPushQueue

        return SqlPushQueue(self.conn, self.is_sqlite)

    @cached_property
    def health(self) -> SqlHealthStore:
        return SqlHealthStore(self.conn)

    def __enter__(self) -> SqlUnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# --- stores ---------------------------------------------------------------------------------------


def _tenant(r: Row[Any]) -> Tenant:
    m = r._mapping
    return Tenant(
        id=m["id"],
        name=m["name"],
        domain=m["domain"],
        created_at=_utc_req(m["created_at"]),
        ca_cert_pem=bytes(m["ca_cert_pem"]),
        ca_key_pem=bytes(m["ca_key_pem"]),
        push_cert_pem=None if m["push_cert_pem"] is None else bytes(m["push_cert_pem"]),
        push_key_pem=None if m["push_key_pem"] is None else bytes(m["push_key_pem"]),
        push_topic=m["push_topic"],
        push_not_after=_utc(m["push_not_after"]),
        mdm_authority=m["mdm_authority"],
        licence_seats=int(m["licence_seats"]),
        policy_version=int(m["policy_version"]),
    )


class SqlTenantStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, tenant: Tenant) -> None:
        self.conn.execute(
            insert(s.tenants).values(
                id=tenant.id,
                name=tenant.name,
                domain=tenant.domain,
                created_at=tenant.created_at,
                ca_cert_pem=tenant.ca_cert_pem,
                ca_key_pem=tenant.ca_key_pem,
                push_cert_pem=tenant.push_cert_pem,
                push_key_pem=tenant.push_key_pem,
                push_topic=tenant.push_topic,
                push_not_after=tenant.push_not_after,
                mdm_authority=tenant.mdm_authority,
            )
        )

    def get(self, tenant_id: str) -> Tenant | None:
        r = self.conn.execute(select(s.tenants).where(s.tenants.c.id == tenant_id)).first()
        return None if r is None else _tenant(r)

    def by_name(self, name: str) -> Tenant | None:
        r = self.conn.execute(select(s.tenants).where(s.tenants.c.name == name)).first()
        return None if r is None else _tenant(r)

    def list(self) -> list[Tenant]:
        return [_tenant(r) for r in self.conn.execute(select(s.tenants).order_by(s.tenants.c.name))]

    def set_push_cert(
        self, tenant_id: str, cert_pem: bytes, key_pem: bytes, topic: str, not_after: datetime
    ) -> None:
        self.conn.execute(
            update(s.tenants)
            .where(s.tenants.c.id == tenant_id)
            .values(push_cert_pem=cert_pem, push_key_pem=key_pem, push_topic=topic, push_not_after=not_after)
        )

    def set_authority(self, tenant_id: str, authority: str) -> None:
        self.conn.execute(
            update(s.tenants).where(s.tenants.c.id == tenant_id).values(mdm_authority=authority)
        )

    def bump_policy_version(self, tenant_id: str) -> None:
        t = s.tenants
        self.conn.execute(update(t).where(t.c.id == tenant_id).values(policy_version=t.c.policy_version + 1))

    def set_seats(self, tenant_id: str, seats: int) -> None:
        self.conn.execute(update(s.tenants).where(s.tenants.c.id == tenant_id).values(licence_seats=seats))


class SqlApiTokenStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, token: ApiToken, token_hash: str) -> None:
        self.conn.execute(
            insert(s.api_tokens).values(
                id=token.id,
                tenant_id=token.tenant_id,
                name=token.name,
                token_hash=token_hash,
                created_at=token.created_at,
            )
        )

    def by_hash(self, token_hash: str) -> ApiToken | None:
        r = self.conn.execute(select(s.api_tokens).where(s.api_tokens.c.token_hash == token_hash)).first()
        if r is None:
            return None
        m = r._mapping
        return ApiToken(
            id=m["id"], tenant_id=m["tenant_id"], name=m["name"], created_at=_utc_req(m["created_at"])
        )


def _user(r: Row[Any]) -> User:
    m = r._mapping
    return User(
        id=m["id"],
        tenant_id=m["tenant_id"],
        upn=m["upn"],
        email=m["email"],
        display_name=m["display_name"],
        enabled=bool(m["enabled"]),
        password_hash=m["password_hash"],
        created_at=_utc(m["created_at"]),
        licensed=bool(m["licensed"]),
        mfa_required=bool(m["mfa_required"]),
        totp_secret=m["totp_secret"],
        is_dem=bool(m["is_dem"]),
    )


class SqlUserStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, user: User) -> None:
        self.conn.execute(
            insert(s.users).values(
                id=user.id,
                tenant_id=user.tenant_id,
                upn=user.upn,
                email=user.email,
                display_name=user.display_name,
                enabled=user.enabled,
                password_hash=user.password_hash,
                created_at=user.created_at,
                licensed=user.licensed,
                mfa_required=user.mfa_required,
                totp_secret=user.totp_secret,
                is_dem=user.is_dem,
            )
        )

    def update(self, tenant_id: str, user_id: str, **fields: object) -> None:
        allowed = {
            "enabled",
            "licensed",
            "mfa_required",
            "totp_secret",
            "is_dem",
            "display_name",
            "password_hash",
        }
        values = {k: v for k, v in fields.items() if k in allowed}
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
        q = select(s.group_members.c.group_id).where(s.group_members.c.user_id == user_id)
        return {r[0] for r in self.conn.execute(q)}

    def get(self, tenant_id: str, user_id: str) -> User | None:
        r = self.conn.execute(
            select(s.users).where(and_(s.users.c.tenant_id == tenant_id, s.users.c.id == user_id))
        ).first()
        return None if r is None else _user(r)

    def by_upn(self, tenant_id: str, upn: str) -> User | None:
        r = self.conn.execute(
            select(s.users).where(and_(s.users.c.tenant_id == tenant_id, s.users.c.upn == upn.lower()))
        ).first()
        return None if r is None else _user(r)

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[User]:
        q = (
            select(s.users)
            .where(s.users.c.tenant_id == tenant_id)
            .order_by(s.users.c.upn)
            .limit(limit)
            .offset(offset)
        )
        return [_user(r) for r in self.conn.execute(q)]


def _etoken(r: Row[Any]) -> EnrollmentToken:
    m = r._mapping
    return EnrollmentToken(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        expires_at=_utc_req(m["expires_at"]),
        uses_allowed=m["uses_allowed"],
        uses_count=m["uses_count"],
        created_at=_utc_req(m["created_at"]),
        revoked=bool(m["revoked"]),
    )


class SqlEnrollmentTokenStore:
    def __init__(self, conn: Connection, is_sqlite: bool) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite

    def add(self, token: EnrollmentToken, token_hash: str) -> None:
        self.conn.execute(
            insert(s.enrollment_tokens).values(
                id=token.id,
                tenant_id=token.tenant_id,
                user_id=token.user_id,
                token_hash=token_hash,
                expires_at=token.expires_at,
                uses_allowed=token.uses_allowed,
                uses_count=token.uses_count,
                revoked=token.revoked,
                created_at=token.created_at,
            )
        )

    def by_hash(self, token_hash: str) -> EnrollmentToken | None:
        r = self.conn.execute(
            select(s.enrollment_tokens).where(s.enrollment_tokens.c.token_hash == token_hash)
        ).first()
        return None if r is None else _etoken(r)

    def by_hash_for_update(self, token_hash: str) -> EnrollmentToken | None:
        q = select(s.enrollment_tokens).where(s.enrollment_tokens.c.token_hash == token_hash)
        if not self.is_sqlite:
            q = q.with_for_update()
        r = self.conn.execute(q).first()
        return None if r is None else _etoken(r)

    def consume(self, token_id: str) -> None:
        self.conn.execute(
            update(s.enrollment_tokens)
            .where(s.enrollment_tokens.c.id == token_id)
            .values(uses_count=s.enrollment_tokens.c.uses_count + 1)
        )


def _cert(r: Row[Any]) -> IssuedCert:
    m = r._mapping
    return IssuedCert(
        fingerprint=m["fingerprint"],
        tenant_id=m["tenant_id"],
        serial=m["serial"],
        token_id=m["token_id"],
        user_id=m["user_id"],
        not_after=_utc_req(m["not_after"]),
        issued_at=_utc_req(m["issued_at"]),
        enrollment_id=m["enrollment_id"],
    )


class SqlCertStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, cert: IssuedCert) -> None:
        self.conn.execute(
            insert(s.certs).values(
                fingerprint=cert.fingerprint,
                tenant_id=cert.tenant_id,
                serial=cert.serial,
                token_id=cert.token_id,
                user_id=cert.user_id,
                not_after=cert.not_after,
                issued_at=cert.issued_at,
                enrollment_id=cert.enrollment_id,
            )
        )

    def get(self, fingerprint: str) -> IssuedCert | None:
        r = self.conn.execute(select(s.certs).where(s.certs.c.fingerprint == fingerprint)).first()
        return None if r is None else _cert(r)

    def bind(self, fingerprint: str, enrollment_id: str) -> None:
        self.conn.execute(
            update(s.certs).where(s.certs.c.fingerprint == fingerprint).values(enrollment_id=enrollment_id)
        )


_DEVICE_FIELDS = (
    "serial",
    "product_name",
    "model",
    "model_name",
    "device_name",
    "os_version",
    "build_version",
    "imei",
    "meid",
    "capacity_gb",
    "battery_level",
)


def _device(r: Row[Any]) -> Device:
    m = r._mapping
    return Device(
        id=m["id"],
        tenant_id=m["tenant_id"],
        udid=m["udid"],
        last_seen_at=_utc(m["last_seen_at"]),
        created_at=_utc(m["created_at"]),
        **{k: m[k] for k in _DEVICE_FIELDS},
    )


class SqlDeviceStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def upsert(self, device: Device) -> Device:
        """Insert the device, or refresh the facts it reported (only those that are set)."""
        existing = self.by_udid(device.tenant_id, device.udid)
        if existing is None:
            self.conn.execute(
                insert(s.devices).values(
                    id=device.id,
                    tenant_id=device.tenant_id,
                    udid=device.udid,
                    last_seen_at=device.last_seen_at,
                    created_at=device.created_at,
                    **{k: getattr(device, k) for k in _DEVICE_FIELDS},
                )
            )
            return device
        values: dict[str, object] = {
            k: getattr(device, k) for k in _DEVICE_FIELDS if getattr(device, k) is not None
        }
        if device.last_seen_at is not None:
            values["last_seen_at"] = device.last_seen_at
        if values:
            self.conn.execute(update(s.devices).where(s.devices.c.id == existing.id).values(**values))
        refreshed = self.get(device.tenant_id, existing.id)
        assert refreshed is not None
        return refreshed

    def by_udid(self, tenant_id: str, udid: str) -> Device | None:
        r = self.conn.execute(
            select(s.devices).where(and_(s.devices.c.tenant_id == tenant_id, s.devices.c.udid == udid))
        ).first()
        return None if r is None else _device(r)

    def get(self, tenant_id: str, device_id: str) -> Device | None:
        r = self.conn.execute(
            select(s.devices).where(and_(s.devices.c.tenant_id == tenant_id, s.devices.c.id == device_id))
        ).first()
        return None if r is None else _device(r)

    def by_serial(self, tenant_id: str, serial: str) -> list[Device]:
        q = select(s.devices).where(and_(s.devices.c.tenant_id == tenant_id, s.devices.c.serial == serial))
        return [_device(r) for r in self.conn.execute(q)]

    def by_ids(self, tenant_id: str, ids: Sequence[str]) -> dict[str, Device]:
        """Devices by id, in a few queries (see _in): {id: device}."""
        d = s.devices
        out: dict[str, Device] = {}
        for cond in _in(self.conn, d.c.id, ids):
            for r in self.conn.execute(select(d).where(and_(d.c.tenant_id == tenant_id, cond))):
                out[r._mapping["id"]] = _device(r)
        return out

    def by_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Device]:
        """Devices by UDID (unique in a tenant): {udid: device}."""
        d = s.devices
        out: dict[str, Device] = {}
        for cond in _in(self.conn, d.c.udid, udids):
            for r in self.conn.execute(select(d).where(and_(d.c.tenant_id == tenant_id, cond))):
                out[r._mapping["udid"]] = _device(r)
        return out

    def by_serials(self, tenant_id: str, serials: Sequence[str]) -> dict[str, list[Device]]:
        """Devices by serial number (not unique): {serial: [devices]}."""
        d = s.devices
        out: dict[str, list[Device]] = {}
        for cond in _in(self.conn, d.c.serial, serials):
            q = select(d).where(and_(d.c.tenant_id == tenant_id, cond))
            for r in self.conn.execute(q):
                out.setdefault(r._mapping["serial"], []).append(_device(r))
        return out

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[Device]:
        q = (
            select(s.devices)
            .where(s.devices.c.tenant_id == tenant_id)
            .order_by(s.devices.c.created_at, s.devices.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [_device(r) for r in self.conn.execute(q)]

    def count(self, tenant_id: str) -> int:
        q = select(func.count()).select_from(s.devices).where(s.devices.c.tenant_id == tenant_id)
        return int(self.conn.execute(q).scalar_one())

    def update_inventory(self, tenant_id: str, device_id: str, fields: dict[str, object]) -> None:
        values = {k: v for k, v in fields.items() if k in _DEVICE_FIELDS or k == "last_seen_at"}
        if values:
            self.conn.execute(
                update(s.devices)
                .where(and_(s.devices.c.tenant_id == tenant_id, s.devices.c.id == device_id))
                .values(**values)
            )

    def touch(self, device_id: str, at: datetime) -> None:
        self.conn.execute(_TOUCH, {"did": device_id, "at": at})


def _enrollment(r: Row[Any]) -> Enrollment:
    m = r._mapping
    return Enrollment(
        id=m["id"],
        tenant_id=m["tenant_id"],
        device_id=m["device_id"],
        udid=m["udid"],
        user_id=m["user_id"],
        status=EnrollmentStatus(m["status"]),
        type=EnrollmentType(m["type"]),
        cert_fingerprint=m["cert_fingerprint"],
        topic=m["topic"],
        started_at=_utc_req(m["started_at"]),
        push_token=None if m["push_token"] is None else bytes(m["push_token"]),
        push_magic=m["push_magic"],
        unlock_token=None if m["unlock_token"] is None else bytes(m["unlock_token"]),
        awaiting_configuration=bool(m["awaiting_configuration"]),
        token_updated_at=_utc(m["token_updated_at"]),
        ended_at=_utc(m["ended_at"]),
    )


_ACTIVE_BY_FP = (
    select(s.enrollments, s.devices.c.last_seen_at)
    .join(s.devices, s.devices.c.id == s.enrollments.c.device_id)
    .where(
        and_(
            s.enrollments.c.cert_fingerprint == bindparam("fp"),
            s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
        )
    )
    .limit(1)
)


class SqlEnrollmentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, enrollment: Enrollment) -> None:
        e = enrollment
        self.conn.execute(
            insert(s.enrollments).values(
                id=e.id,
                tenant_id=e.tenant_id,
                device_id=e.device_id,
                udid=e.udid,
                user_id=e.user_id,
                status=e.status.value,
                type=e.type.value,
                cert_fingerprint=e.cert_fingerprint,
                topic=e.topic,
                started_at=e.started_at,
                push_token=e.push_token,
                push_magic=e.push_magic,
                unlock_token=e.unlock_token,
                awaiting_configuration=e.awaiting_configuration,
                token_updated_at=e.token_updated_at,
                ended_at=e.ended_at,
            )
        )

    def get(self, tenant_id: str, enrollment_id: str) -> Enrollment | None:
        r = self.conn.execute(
            select(s.enrollments).where(
                and_(s.enrollments.c.tenant_id == tenant_id, s.enrollments.c.id == enrollment_id)
            )
        ).first()
        return None if r is None else _enrollment(r)

    def active_for_udid(self, tenant_id: str, udid: str) -> Enrollment | None:
        r = self.conn.execute(
            select(s.enrollments).where(
                and_(
                    s.enrollments.c.tenant_id == tenant_id,
                    s.enrollments.c.udid == udid,
                    s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
        ).first()
        return None if r is None else _enrollment(r)

    def active_for_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Enrollment]:
        """The active enrollment of each UDID that has one: {udid: enrollment}."""
        e = s.enrollments
        out: dict[str, Enrollment] = {}
        for cond in _in(self.conn, e.c.udid, udids):
            q = select(e).where(
                and_(
                    e.c.tenant_id == tenant_id,
                    cond,
                    e.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
            for r in self.conn.execute(q):
                out.setdefault(r._mapping["udid"], _enrollment(r))
        return out

    def by_fingerprint(self, fingerprint: str) -> Enrollment | None:
        r = self.conn.execute(
            select(s.enrollments)
            .where(s.enrollments.c.cert_fingerprint == fingerprint)
            .order_by(s.enrollments.c.started_at.desc())
            .limit(1)
        ).first()
        return None if r is None else _enrollment(r)

    def active_by_fingerprint(self, fingerprint: str) -> tuple[Enrollment, datetime | None] | None:
        """The active enrollment a device identity is bound to, with the device's last check-in."""
        r = self.conn.execute(_ACTIVE_BY_FP, {"fp": fingerprint}).first()
        if r is None:
            return None
        return _enrollment(r), _utc(r._mapping["last_seen_at"])

    def active_count_for_user(self, user_id: str) -> int:
        q = (
            select(func.count())
            .select_from(s.enrollments)
            .where(
                and_(
                    s.enrollments.c.user_id == user_id,
                    s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
        )
        return int(self.conn.execute(q).scalar_one())

    def active_for_user(self, user_id: str) -> list[Enrollment]:
        q = (
            select(s.enrollments)
            .where(
                and_(
                    s.enrollments.c.user_id == user_id,
                    s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
            .order_by(s.enrollments.c.started_at)
        )
        return [_enrollment(r) for r in self.conn.execute(q)]

    def active_for_device(self, tenant_id: str, udid: str | None, serial: str | None) -> list[Enrollment]:
        """Active enrollments of a device known by UDID or serial number (two indexed lookups)."""
        e, d = s.enrollments, s.devices
        found: dict[str, Enrollment] = {}
        if udid:
            q = select(e).where(
                and_(
                    e.c.tenant_id == tenant_id, e.c.udid == udid, e.c.status == EnrollmentStatus.ACTIVE.value
                )
            )
            found.update((x.id, x) for x in map(_enrollment, self.conn.execute(q)))
        if serial:
            q = (
                select(e)
                .join(d, d.c.id == e.c.device_id)
                .where(
                    and_(
                        d.c.tenant_id == tenant_id,
                        d.c.serial == serial,
                        e.c.status == EnrollmentStatus.ACTIVE.value,
                    )
                )
            )
            found.update((x.id, x) for x in map(_enrollment, self.conn.execute(q)))
        return list(found.values())

    def for_device(self, tenant_id: str, device_id: str) -> list[Enrollment]:
        # By device id alone (unique, indexed): with tenant_id in the WHERE clause SQLite's planner took the
        # (tenant, status) index and scanned the tenant's enrollments. The tenant is checked on the rows.
        q = select(s.enrollments).where(s.enrollments.c.device_id == device_id)
        rows = [_enrollment(r) for r in self.conn.execute(q)]
        return sorted((e for e in rows if e.tenant_id == tenant_id), key=lambda e: e.started_at, reverse=True)

    def end(self, enrollment_id: str, status: EnrollmentStatus, at: datetime) -> None:
        self.conn.execute(
            update(s.enrollments)
            .where(s.enrollments.c.id == enrollment_id)
            .values(status=status.value, ended_at=at)
        )

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
            "push_token": push_token,
            "push_magic": push_magic,
            "awaiting_configuration": awaiting_configuration,
            "token_updated_at": at,
        }
        if unlock_token is not None:
            values["unlock_token"] = unlock_token
        self.conn.execute(update(s.enrollments).where(s.enrollments.c.id == enrollment_id).values(**values))

    def set_type(self, enrollment_id: str, type_: EnrollmentType) -> None:
        self.conn.execute(
            update(s.enrollments).where(s.enrollments.c.id == enrollment_id).values(type=type_.value)
        )


def _command(r: Row[Any]) -> QueuedCommand:
    m = r._mapping
    return QueuedCommand(
        id=m["id"],
        tenant_id=m["tenant_id"],
        command_uuid=m["command_uuid"],
        enrollment_id=m["enrollment_id"],
        device_id=m["device_id"],
        request_type=m["request_type"],
        body=bytes(m["body"]),
        status=CommandStatus(m["status"]),
        created_at=_utc_req(m["created_at"]),
        sent_at=_utc(m["sent_at"]),
        result_at=_utc(m["result_at"]),
        result=None if m["result"] is None else bytes(m["result"]),
        error_chain=json.loads(m["error_chain"]) if m["error_chain"] else [],
    )


_PENDING = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)


def _next_command(statuses: tuple[str, ...]) -> Select[Any]:
    """The oldest pending command of an enrollment; built once (the check-in hot path)."""
    return (
        select(s.commands)
        .where(
            and_(
                s.commands.c.enrollment_id == bindparam("eid"),
                s.commands.c.status.in_([literal(x) for x in statuses]),
            )
        )
        .order_by(s.commands.c.id)
        .limit(1)
    )


_NEXT_ANY = _next_command(_PENDING)
_NEXT_SKIP_NOT_NOW = _next_command(_PENDING[:2])


def _channel(statuses: tuple[str, ...]) -> Select[Any]:
    e, d, c = s.enrollments, s.devices, s.commands
    pending = s.commands.alias("pending")
    nxt = (
        select(pending.c.id)
        .where(and_(pending.c.enrollment_id == e.c.id, pending.c.status.in_([literal(x) for x in statuses])))
        .order_by(pending.c.id)
        .limit(1)
        .correlate(e)
        .scalar_subquery()
    )
    return (
        select(e.c.id, e.c.tenant_id, e.c.udid, e.c.device_id, d.c.last_seen_at, c.c.id, c.c.body)
        .select_from(e.join(d, d.c.id == e.c.device_id).outerjoin(c, c.c.id == nxt))
        .where(and_(e.c.cert_fingerprint == bindparam("fp"), e.c.status == EnrollmentStatus.ACTIVE.value))
        .limit(1)
    )


_CHANNEL_ANY = _channel(_PENDING)
_CHANNEL_SKIP_NOT_NOW = _channel(_PENDING[:2])
_MARK_SENT = (
    update(s.commands)
    .where(s.commands.c.id == bindparam("cid"))
    .values(status=CommandStatus.SENT.value, sent_at=bindparam("at"))
)
_TAKE = (
    update(s.commands)
    .where(
        and_(
            s.commands.c.id == bindparam("cid"),
            s.commands.c.enrollment_id == bindparam("eid"),
            s.commands.c.status.in_([literal(x) for x in _PENDING]),
            select(literal(1))
            .where(
                and_(
                    s.enrollments.c.id == bindparam("eid"),
                    s.enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                )
            )
            .exists(),
        )
    )
    .values(status=CommandStatus.SENT.value, sent_at=bindparam("at"))
)
_BY_ENROLLMENT_UUID = select(s.commands).where(
    and_(s.commands.c.enrollment_id == bindparam("eid"), s.commands.c.command_uuid == bindparam("cuuid"))
)
_RECORD_RESULT = (
    update(s.commands)
    .where(s.commands.c.id == bindparam("cid"))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        result_at=bindparam("b_at"),
        error_chain=bindparam("b_chain"),
    )
)
_INSERT_EVENT = insert(s.events)
_TOUCH = update(s.devices).where(s.devices.c.id == bindparam("did")).values(last_seen_at=bindparam("at"))


class SqlCommandQueue:
    def __init__(self, conn: Connection, is_sqlite: bool) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite

    def enqueue(self, command: QueuedCommand) -> QueuedCommand:
        c = command
        res = self.conn.execute(
            insert(s.commands)
            .values(
                tenant_id=c.tenant_id,
                command_uuid=c.command_uuid,
                enrollment_id=c.enrollment_id,
                device_id=c.device_id,
                request_type=c.request_type,
                body=c.body,
                status=c.status.value,
                created_at=c.created_at,
            )
            .returning(s.commands.c.id)
        )
        new_id = int(res.scalar_one())
        return QueuedCommand(
            id=new_id,
            tenant_id=c.tenant_id,
            command_uuid=c.command_uuid,
            enrollment_id=c.enrollment_id,
            device_id=c.device_id,
            request_type=c.request_type,
            body=c.body,
            status=c.status,
            created_at=c.created_at,
        )

    def enqueue_many(self, commands: Sequence[QueuedCommand]) -> list[QueuedCommand]:
        """Insert the commands in batches (one multi-row INSERT ... RETURNING each), in order."""
        c = s.commands
        stmt = insert(c).returning(c.c.id, sort_by_parameter_order=True)
        out: list[QueuedCommand] = []
        for part in _chunks(commands):
            rows = [
                {
                    "tenant_id": x.tenant_id,
                    "command_uuid": x.command_uuid,
                    "enrollment_id": x.enrollment_id,
                    "device_id": x.device_id,
                    "request_type": x.request_type,
                    "body": x.body,
                    "status": x.status.value,
                    "created_at": x.created_at,
                }
                for x in part
            ]
            ids = [int(r[0]) for r in self.conn.execute(stmt, rows)]
            out.extend(dataclasses.replace(x, id=i) for x, i in zip(part, ids, strict=True))
        return out

    def next_for(self, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None:
        q = _NEXT_SKIP_NOT_NOW if skip_not_now else _NEXT_ANY
        r = self.conn.execute(q, {"eid": enrollment_id}).first()
        return None if r is None else _command(r)

    def mark_sent(self, command_id: int, at: datetime) -> None:
        self.conn.execute(_MARK_SENT, {"cid": command_id, "at": at})

    def get_by_uuid(self, tenant_id: str, command_uuid: str) -> QueuedCommand | None:
        r = self.conn.execute(
            select(s.commands).where(
                and_(s.commands.c.tenant_id == tenant_id, s.commands.c.command_uuid == command_uuid)
            )
        ).first()
        return None if r is None else _command(r)

    def record_result(
        self,
        enrollment_id: str,
        command_uuid: str,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> QueuedCommand | None:
        r = self.conn.execute(_BY_ENROLLMENT_UUID, {"eid": enrollment_id, "cuuid": command_uuid}).first()
        if r is None:
            return None
        cmd = _command(r)
        self.conn.execute(
            _RECORD_RESULT,
            {
                "cid": cmd.id,
                "b_status": status.value,
                "b_result": result,
                "b_at": at,
                "b_chain": json.dumps(error_chain, default=str) if error_chain else None,
            },
        )
        return cmd

    def take(self, command_id: int, enrollment_id: str, at: datetime) -> bool:
        """Mark a command read outside the transaction as sent, if it is still pending and its
        enrollment still active: False when either changed meanwhile (then look again)."""
        return bool(self.conn.execute(_TAKE, {"cid": command_id, "eid": enrollment_id, "at": at}).rowcount)

    def cancel_pending(self, enrollment_id: str) -> int:
        res = self.conn.execute(
            update(s.commands)
            .where(and_(s.commands.c.enrollment_id == enrollment_id, s.commands.c.status.in_(_PENDING)))
            .values(status=CommandStatus.CANCELLED.value)
        )
        return int(res.rowcount or 0)

    def list_for_device(self, tenant_id: str, device_id: str, *, limit: int = 100) -> list[QueuedCommand]:
        q = (
            select(s.commands)
            .where(and_(s.commands.c.tenant_id == tenant_id, s.commands.c.device_id == device_id))
            .order_by(s.commands.c.id.desc())
            .limit(limit)
        )
        return [_command(r) for r in self.conn.execute(q)]


def _event(r: Row[Any]) -> Event:
    m = r._mapping
    return Event(
        id=m["id"],
        tenant_id=m["tenant_id"],
        at=_utc_req(m["at"]),
        step=Step(m["step"]),
        outcome=Outcome(m["outcome"]),
        reason=m["reason"],
        user_id=m["user_id"],
        upn=m["upn"],
        serial=m["serial"],
        udid=m["udid"],
        enrollment_id=m["enrollment_id"],
        request_id=m["request_id"],
        detail=json.loads(m["detail"]) if m["detail"] else {},
    )


class SqlEventLog:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, event: Event) -> None:
        e = event
        self.conn.execute(
            _INSERT_EVENT,
            {
                "tenant_id": e.tenant_id,
                "at": e.at,
                "step": e.step.value,
                "outcome": e.outcome.value,
                "reason": e.reason,
                "user_id": e.user_id,
                "upn": e.upn,
                "serial": e.serial,
                "udid": e.udid,
                "enrollment_id": e.enrollment_id,
                "request_id": e.request_id,
                "detail": json.dumps(e.detail, default=str) if e.detail else None,
            },
        )
        if e.outcome is Outcome.FAILED and e.reason:
            self._count_failure(e)

    def _count_failure(self, e: Event) -> None:
        key = {
            "tenant_id": e.tenant_id,
            "day": e.at.astimezone(UTC).strftime("%Y-%m-%d"),
            "reason": e.reason,
            "platform": platform_from_detail(e.detail),
            "enrollment_type": str(e.detail.get("type") or e.detail.get("enrollment_type") or "byod"),
            "step": e.step.value,
        }
        fr = s.failure_rollup
        if self.conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
        stmt = upsert(fr).values(count=1, **key)
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={"count": fr.c.count + 1})
        self.conn.execute(stmt)

    def failure_report(
        self, tenant_id: str, since: datetime, until: datetime, group_by: str
    ) -> list[tuple[str, int]]:
        """Failure counts from the daily roll-up, grouped by reason, platform, type, step or day."""
        fr = s.failure_rollup
        col = {
            "reason": fr.c.reason,
            "platform": fr.c.platform,
            "type": fr.c.enrollment_type,
            "step": fr.c.step,
            "day": fr.c.day,
        }[group_by]
        q = (
            select(col, func.sum(fr.c.count))
            .where(
                and_(
                    fr.c.tenant_id == tenant_id,
                    fr.c.day >= since.astimezone(UTC).strftime("%Y-%m-%d"),
                    fr.c.day <= until.astimezone(UTC).strftime("%Y-%m-%d"),
                )
            )
            .group_by(col)
            .order_by(func.sum(fr.c.count).desc(), col)
        )
        return [(str(r[0]), int(r[1])) for r in self.conn.execute(q)]

    def query(
        self,
        tenant_id: str,
        *,
        upn: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Event]:
        t = s.events
        conds = [t.c.tenant_id == tenant_id]
        if upn is not None:
            conds.append(t.c.upn == upn.lower())
        if serial is not None:
            conds.append(t.c.serial == serial)
        if udid is not None:
            conds.append(t.c.udid == udid)
        if reason is not None:
            conds.append(t.c.reason == reason)
        if since is not None:
            conds.append(t.c.at >= since)
        if until is not None:
            conds.append(t.c.at < until)
        q = select(t).where(and_(*conds)).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
        return [_event(r) for r in self.conn.execute(q)]
