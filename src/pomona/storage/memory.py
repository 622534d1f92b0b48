"""The in-memory backend: every store port over plain dicts, for tests and for services run without SQL.

It passes the same conformance suite as SQLite and PostgreSQL (tests/storage/test_conformance.py).

Transactions: a unit of work holds the database's lock from start to end (one at a time, as SQLite's
BEGIN IMMEDIATE does for writers) and writes in place, logging the value each write replaced. On an
exception the log is played backwards, so the unit of work leaves nothing behind; on success the log is
dropped. Records are frozen dataclasses, replaced whole, never changed in place. A unit of work opened
inside another on the same thread (the lock is re-entrant) sees the outer one's uncommitted writes.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, Unpack

from pomona.domain.checks import Finding, RecordedFinding
from pomona.domain.errors import ConflictError
from pomona.domain.models import (
    ApiToken,
    BlockedDevice,
    CommandStatus,
    CorporateIdentifier,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentToken,
    EnrollmentType,
    Event,
    Group,
    IssuedCert,
    Outcome,
    QueuedCommand,
    Tenant,
    User,
)
from pomona.domain.policy import Restriction
from pomona.ports import (
    INCIDENT_DETAIL,
    RULE_FIELDS,
    AbmAssignment,
    AbmAssignmentRule,
    AbmDeviceRecord,
    AbmHistoryEntry,
    AbmProfileRecord,
    AbmTokenInfo,
    AbmUpsert,
    AdeProfileCount,
    AdeProfileDevice,
    AdminAccount,
    AuditEntry,
    CaKeyPair,
    ChannelState,
    ConsoleSession,
    Database,
    DeviceCursor,
    DeviceFilter,
    DeviceSort,
    EventFilters,
    IncidentFacts,
    Leases,
    PortalSession,
    PushAttempt,
    PushCertState,
    PushCredentials,
    PushJob,
    PushKind,
    PushReschedule,
    Reachability,
    ReEnrollment,
    RollupRow,
    SessionEnd,
    SharedLimits,
    TokenRefusal,
    WebhookDelivery,
)
from pomona.protocol.dep import AbmDevice, ServerToken
from pomona.storage import rollup
from pomona.storage.channel import ChannelContext, store_channel, store_take

_K = TypeVar("_K")
_V = TypeVar("_V")
_MISSING: Any = object()

_PENDING = (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.NOT_NOW)
_ACTIVE = EnrollmentStatus.ACTIVE
#: What UserStore.update may change (the SQL store's list).
_USER_UPDATABLE = frozenset(
    {"enabled", "licensed", "mfa_required", "totp_secret", "is_dem", "display_name", "password_hash"}
)
_DEVICE_FACTS = tuple(
    f.name
    for f in dataclasses.fields(Device)
    if f.name not in ("id", "tenant_id", "udid", "last_seen_at", "created_at")
)


@dataclass(frozen=True, slots=True)
class _EnrollmentPush:
    """An enrollment's push state (columns of the enrollments table in SQL)."""

    token_invalid_at: datetime | None = None
    token_invalid_reason: str | None = None
    last_push_at: datetime | None = None
    last_push_status: str | None = None
    first_unanswered_push_at: datetime | None = None
    reenroll_required_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _QueueRow:
    enrollment_id: str
    tenant_id: str
    due_at: datetime
    kind: PushKind
    created_at: datetime
    attempts: int = 0
    failures: int = 0
    last_error: str | None = None
    first_pushed_at: datetime | None = None
    claimed_until: datetime | None = None
    claimed_by: str | None = None


@dataclass
class _Data:
    """Every table, keyed by its primary key."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    tenant_ca_keys: dict[str, bytes] = field(default_factory=dict)  # the tenants' ca_key_pem column
    tenant_push_keys: dict[str, bytes] = field(default_factory=dict)  # the tenants' push_key_pem column
    tenant_push: dict[str, PushCertState] = field(default_factory=dict)
    api_tokens: dict[str, tuple[str, ApiToken]] = field(default_factory=dict)  # hash -> token
    users: dict[str, User] = field(default_factory=dict)
    group_members: dict[tuple[str, str], None] = field(default_factory=dict)  # (group, user)
    enrollment_tokens: dict[str, tuple[str, EnrollmentToken]] = field(
        default_factory=dict
    )  # id -> hash, token
    certs: dict[str, IssuedCert] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    enrollments: dict[str, Enrollment] = field(default_factory=dict)
    enrollment_push: dict[str, _EnrollmentPush] = field(default_factory=dict)
    commands: dict[int, QueuedCommand] = field(default_factory=dict)
    events: dict[int, Event] = field(default_factory=dict)
    failure_rollup: dict[tuple[str, ...], int] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    restrictions: dict[str, tuple[str, Restriction]] = field(default_factory=dict)  # id -> tenant, r
    restriction_groups: dict[tuple[str, str], None] = field(default_factory=dict)  # (restriction, group)
    corporate: dict[str, CorporateIdentifier] = field(default_factory=dict)
    blocks: dict[str, BlockedDevice] = field(default_factory=dict)
    push_queue: dict[str, _QueueRow] = field(default_factory=dict)
    webhooks: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    deliveries: dict[int, WebhookDelivery] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, bytes] = field(default_factory=dict)
    portal_sessions: dict[str, PortalSession] = field(default_factory=dict)  # id hash -> session
    admins: dict[str, AdminAccount] = field(default_factory=dict)
    console_sessions: dict[str, ConsoleSession] = field(default_factory=dict)  # id hash -> session
    audit: dict[int, AuditEntry] = field(default_factory=dict)
    abm_keypairs: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # tenant -> (cert, key)
    abm_tokens: dict[str, tuple[AbmTokenInfo, ServerToken]] = field(default_factory=dict)
    abm_devices: dict[tuple[str, str], AbmDeviceRecord] = field(default_factory=dict)  # (tenant, serial)
    abm_history: dict[int, tuple[str, str, AbmHistoryEntry]] = field(default_factory=dict)
    abm_profiles: dict[str, AbmProfileRecord] = field(default_factory=dict)  # id -> (no definitions)
    abm_definitions: dict[tuple[str, str], str] = field(default_factory=dict)  # (profile, token) -> uuid
    abm_assignments: dict[tuple[str, str], AbmAssignment] = field(default_factory=dict)  # (tenant, serial)
    abm_rules: dict[str, AbmAssignmentRule] = field(default_factory=dict)  # id -> rule
    sequences: dict[str, int] = field(default_factory=dict)
    scep_ras: dict[str, CaKeyPair] = field(default_factory=dict)  # the tenants' scep_ra_* columns
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> holder, expires_at
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> hits, window_start
    totp_steps: dict[str, int] = field(default_factory=dict)  # user id -> last accepted step


class _Tx:
    """One unit of work's writes, with the undo log that rolls them back."""

    def __init__(self, data: _Data) -> None:
        self.d = data
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []

    def put(self, table: dict[_K, _V], key: _K, value: _V) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def pop(self, table: dict[_K, _V], key: _K) -> bool:
        if key not in table:
            return False
        self._undo.append((table, key, table.pop(key)))
        return True

    def change(self, table: dict[_K, _V], key: _K, **values: object) -> bool:
        """Replace a record with some fields changed; False when there is none under the key."""
        old = table.get(key)
        if old is None:
            return False
        self.put(table, key, dataclasses.replace(old, **values))  # type: ignore[type-var]
        return True

    def next_id(self, sequence: str) -> int:
        n = self.d.sequences.get(sequence, 0) + 1
        self.put(self.d.sequences, sequence, n)
        return n

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()


def _conflict(what: str) -> ConflictError:
    return ConflictError(f"already exists: {what}")


def _page(items: Iterable[_V], limit: int, offset: int = 0) -> list[_V]:
    return list(items)[offset : offset + limit]


def _ts(value: datetime | None) -> tuple[bool, datetime | None]:
    """A sort key that puts None first, as SQLite does in ascending order."""
    return (value is not None, value)


class _Store:
    def __init__(self, tx: _Tx) -> None:
        self.tx = tx
        self.d = tx.d


class MemoryTenantStore(_Store):
    def add(self, tenant: Tenant, ca_key_pem: bytes) -> None:
        if tenant.id in self.d.tenants or any(t.name == tenant.name for t in self.d.tenants.values()):
            raise _conflict(f"tenant {tenant.name}")
        self.tx.put(self.d.tenants, tenant.id, tenant)
        self.tx.put(self.d.tenant_ca_keys, tenant.id, ca_key_pem)

    def ca_keypair(self, tenant_id: str) -> CaKeyPair | None:
        t, key = self.d.tenants.get(tenant_id), self.d.tenant_ca_keys.get(tenant_id)
        return None if t is None or key is None else CaKeyPair(t.ca_cert_pem, key)

    def scep_ra(self, tenant_id: str) -> CaKeyPair | None:
        return self.d.scep_ras.get(tenant_id) if tenant_id in self.d.tenants else None

    def keep_scep_ra(self, tenant_id: str, ra: CaKeyPair) -> None:
        if tenant_id in self.d.tenants and tenant_id not in self.d.scep_ras:
            self.tx.put(self.d.scep_ras, tenant_id, ra)

    def get(self, tenant_id: str) -> Tenant | None:
        return self.d.tenants.get(tenant_id)

    def by_name(self, name: str) -> Tenant | None:
        return next((t for t in self.d.tenants.values() if t.name == name), None)

    def list(self) -> list[Tenant]:
        return sorted(self.d.tenants.values(), key=lambda t: t.name)

    def set_push_cert(
        self, tenant_id: str, cert_pem: bytes, key_pem: bytes, topic: str, not_after: datetime
    ) -> None:
        self.tx.change(
            self.d.tenants, tenant_id, push_cert_pem=cert_pem, push_topic=topic, push_not_after=not_after
        )
        self.tx.put(self.d.tenant_push_keys, tenant_id, key_pem)

    def set_authority(self, tenant_id: str, authority: str) -> None:
        self.tx.change(self.d.tenants, tenant_id, mdm_authority=authority)

    def set_seats(self, tenant_id: str, seats: int) -> None:
        self.tx.change(self.d.tenants, tenant_id, licence_seats=seats)

    def bump_policy_version(self, tenant_id: str) -> None:
        t = self.d.tenants.get(tenant_id)
        if t is not None:
            self.tx.change(self.d.tenants, tenant_id, policy_version=t.policy_version + 1)


class MemoryApiTokenStore(_Store):
    def add(self, token: ApiToken, token_hash: str) -> None:
        if token_hash in self.d.api_tokens:
            raise _conflict("api token")
        self.tx.put(self.d.api_tokens, token_hash, (token_hash, token))

    def by_hash(self, token_hash: str) -> ApiToken | None:
        found = self.d.api_tokens.get(token_hash)
        return None if found is None else found[1]

    def get(self, token_id: str) -> ApiToken | None:
        return next((t for _, t in self.d.api_tokens.values() if t.id == token_id), None)

    def list(self, tenant_id: str | None = None) -> list[ApiToken]:
        found = [t for _, t in self.d.api_tokens.values() if tenant_id is None or t.tenant_id == tenant_id]
        return sorted(found, key=lambda t: (t.created_at, t.id))

    def revoke(self, token_id: str, at: datetime) -> None:
        for h, t in list(self.d.api_tokens.values()):
            if t.id == token_id and t.revoked_at is None:
                self.tx.put(self.d.api_tokens, h, (h, dataclasses.replace(t, revoked_at=at)))

    def mark_used(self, token_id: str, at: datetime, *, since: datetime) -> None:
        for h, t in list(self.d.api_tokens.values()):
            if t.id == token_id and (t.last_used_at is None or t.last_used_at <= since):
                self.tx.put(self.d.api_tokens, h, (h, dataclasses.replace(t, last_used_at=at)))


class MemoryUserStore(_Store):
    def add(self, user: User) -> None:
        if user.id in self.d.users or self.by_upn(user.tenant_id, user.upn) is not None:
            raise _conflict(f"user {user.upn}")
        self.tx.put(self.d.users, user.id, user)

    def get(self, tenant_id: str, user_id: str) -> User | None:
        u = self.d.users.get(user_id)
        return u if u is not None and u.tenant_id == tenant_id else None

    def by_upn(self, tenant_id: str, upn: str) -> User | None:
        upn = upn.lower()
        return next((u for u in self.d.users.values() if u.tenant_id == tenant_id and u.upn == upn), None)

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[User]:
        mine = sorted((u for u in self.d.users.values() if u.tenant_id == tenant_id), key=lambda u: u.upn)
        return _page(mine, limit, offset)

    def update(self, tenant_id: str, user_id: str, **fields: object) -> None:
        values = {k: v for k, v in fields.items() if k in _USER_UPDATABLE}
        if values and self.get(tenant_id, user_id) is not None:
            self.tx.change(self.d.users, user_id, **values)

    def delete(self, tenant_id: str, user_id: str) -> None:
        """Its group memberships and enrollment tokens go with it; enrollments and certificates stay,
        without their user (the SQL schema's ON DELETE rules)."""
        if self.get(tenant_id, user_id) is None:
            return
        self.tx.pop(self.d.users, user_id)
        for key in [k for k in self.d.group_members if k[1] == user_id]:
            self.tx.pop(self.d.group_members, key)
        for tid, (_, tok) in list(self.d.enrollment_tokens.items()):
            if tok.user_id == user_id:
                self.tx.pop(self.d.enrollment_tokens, tid)
        for eid in [e.id for e in self.d.enrollments.values() if e.user_id == user_id]:
            self.tx.change(self.d.enrollments, eid, user_id=None)
        for fp in [c.fingerprint for c in self.d.certs.values() if c.user_id == user_id]:
            self.tx.change(self.d.certs, fp, user_id=None)

    def licensed_count(self, tenant_id: str) -> int:
        return sum(1 for u in self.d.users.values() if u.tenant_id == tenant_id and u.licensed)

    def group_ids(self, user_id: str) -> set[str]:
        return {g for g, u in self.d.group_members if u == user_id}


class MemoryEnrollmentTokenStore(_Store):
    def add(self, token: EnrollmentToken, token_hash: str) -> None:
        if token.id in self.d.enrollment_tokens or self._find(token_hash) is not None:
            raise _conflict("enrollment token")
        self.tx.put(self.d.enrollment_tokens, token.id, (token_hash, token))

    def _find(self, token_hash: str) -> EnrollmentToken | None:
        return next((t for h, t in self.d.enrollment_tokens.values() if h == token_hash), None)

    def by_hash(self, token_hash: str) -> EnrollmentToken | None:
        return self._find(token_hash)

    def by_hash_for_update(self, token_hash: str) -> EnrollmentToken | None:
        return self._find(token_hash)  # the unit of work holds the database's lock

    def consume(self, token_id: str) -> None:
        found = self.d.enrollment_tokens.get(token_id)
        if found is not None:
            h, t = found
            self.tx.put(
                self.d.enrollment_tokens, token_id, (h, dataclasses.replace(t, uses_count=t.uses_count + 1))
            )

    def get(self, tenant_id: str, token_id: str) -> EnrollmentToken | None:
        found = self.d.enrollment_tokens.get(token_id)
        return found[1] if found is not None and found[1].tenant_id == tenant_id else None

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[EnrollmentToken]:
        mine = [
            t
            for _, t in self.d.enrollment_tokens.values()
            if t.tenant_id == tenant_id and t.ade_serial is None
        ]
        return _page(sorted(mine, key=lambda t: (t.created_at, t.id), reverse=True), limit, offset)

    def revoke(self, token_id: str) -> None:
        found = self.d.enrollment_tokens.get(token_id)
        if found is not None:
            h, t = found
            self.tx.put(self.d.enrollment_tokens, token_id, (h, dataclasses.replace(t, revoked=True)))


class MemoryCertStore(_Store):
    def add(self, cert: IssuedCert) -> None:
        if cert.fingerprint in self.d.certs:
            raise _conflict("certificate")
        self.tx.put(self.d.certs, cert.fingerprint, cert)

    def get(self, fingerprint: str) -> IssuedCert | None:
        return self.d.certs.get(fingerprint)

    def bind(self, fingerprint: str, enrollment_id: str) -> None:
        self.tx.change(self.d.certs, fingerprint, enrollment_id=enrollment_id)


class MemoryDeviceStore(_Store):
    def _mine(self, tenant_id: str) -> Iterator[Device]:
        return (d for d in self.d.devices.values() if d.tenant_id == tenant_id)

    def upsert(self, device: Device) -> Device:
        """Insert the device, or refresh the facts it reported (only those that are set)."""
        existing = self.by_udid(device.tenant_id, device.udid)
        if existing is None:
            if device.id in self.d.devices:
                raise _conflict("device id")
            self.tx.put(self.d.devices, device.id, device)
            return device
        values = {k: getattr(device, k) for k in _DEVICE_FACTS if getattr(device, k) is not None}
        if device.last_seen_at is not None:
            values["last_seen_at"] = device.last_seen_at
        self.tx.change(self.d.devices, existing.id, **values)
        return self.d.devices[existing.id]

    def by_udid(self, tenant_id: str, udid: str) -> Device | None:
        return next((d for d in self._mine(tenant_id) if d.udid == udid), None)

    def get(self, tenant_id: str, device_id: str) -> Device | None:
        d = self.d.devices.get(device_id)
        return d if d is not None and d.tenant_id == tenant_id else None

    def by_serial(self, tenant_id: str, serial: str) -> list[Device]:
        return [d for d in self._mine(tenant_id) if d.serial == serial]

    def by_ids(self, tenant_id: str, ids: Sequence[str]) -> dict[str, Device]:
        return {i: d for i in ids if (d := self.get(tenant_id, i)) is not None}

    def by_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Device]:
        wanted = set(udids)
        return {d.udid: d for d in self._mine(tenant_id) if d.udid in wanted}

    def by_serials(self, tenant_id: str, serials: Sequence[str]) -> dict[str, list[Device]]:
        wanted = set(serials)
        out: dict[str, list[Device]] = {}
        for d in self._mine(tenant_id):
            if d.serial in wanted:
                out.setdefault(d.serial, []).append(d)
        return out

    def count(self, tenant_id: str) -> int:
        return sum(1 for _ in self._mine(tenant_id))

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[Device]:
        return _page(sorted(self._mine(tenant_id), key=lambda d: (_ts(d.created_at), d.id)), limit, offset)

    def update_inventory(self, tenant_id: str, device_id: str, fields: dict[str, object]) -> None:
        values = {k: v for k, v in fields.items() if k in _DEVICE_FACTS or k == "last_seen_at"}
        if values and self.get(tenant_id, device_id) is not None:
            self.tx.change(self.d.devices, device_id, **values)

    def touch(self, device_id: str, at: datetime) -> None:
        self.tx.change(self.d.devices, device_id, last_seen_at=at)


class MemoryEnrollmentStore(_Store):
    def _where(self, pred: Callable[[Enrollment], bool]) -> list[Enrollment]:
        return [e for e in self.d.enrollments.values() if pred(e)]

    def add(self, enrollment: Enrollment) -> None:
        if enrollment.id in self.d.enrollments:
            raise _conflict("enrollment")
        self.tx.put(self.d.enrollments, enrollment.id, enrollment)

    def get(self, tenant_id: str, enrollment_id: str) -> Enrollment | None:
        e = self.d.enrollments.get(enrollment_id)
        return e if e is not None and e.tenant_id == tenant_id else None

    def active_for_udid(self, tenant_id: str, udid: str) -> Enrollment | None:
        found = self._where(lambda e: e.tenant_id == tenant_id and e.udid == udid and e.status is _ACTIVE)
        return max(found, key=lambda e: e.started_at, default=None)

    def active_for_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Enrollment]:
        wanted = set(udids)
        out: dict[str, Enrollment] = {}
        for e in self._where(lambda e: e.tenant_id == tenant_id and e.udid in wanted and e.status is _ACTIVE):
            out.setdefault(e.udid, e)
        return out

    def by_fingerprint(self, fingerprint: str) -> Enrollment | None:
        found = self._where(lambda e: e.cert_fingerprint == fingerprint)
        return max(found, key=lambda e: e.started_at, default=None)

    def active_by_fingerprint(self, fingerprint: str) -> tuple[Enrollment, datetime | None] | None:
        for e in self._where(lambda e: e.cert_fingerprint == fingerprint and e.status is _ACTIVE):
            d = self.d.devices.get(e.device_id)
            if d is not None:
                return e, d.last_seen_at
        return None

    def for_device(self, tenant_id: str, device_id: str) -> list[Enrollment]:
        found = self._where(lambda e: e.tenant_id == tenant_id and e.device_id == device_id)
        return sorted(found, key=lambda e: e.started_at, reverse=True)

    def active_count_for_user(self, user_id: str) -> int:
        return len(self.active_for_user(user_id))

    def active_for_user(self, user_id: str) -> list[Enrollment]:
        found = self._where(lambda e: e.user_id == user_id and e.status is _ACTIVE)
        return sorted(found, key=lambda e: e.started_at)

    def active_for_device(self, tenant_id: str, udid: str | None, serial: str | None) -> list[Enrollment]:
        def matches(e: Enrollment) -> bool:
            if e.tenant_id != tenant_id or e.status is not _ACTIVE:
                return False
            d = self.d.devices.get(e.device_id)
            return bool(udid and e.udid == udid) or bool(serial and d is not None and d.serial == serial)

        return self._where(matches)

    def end(self, enrollment_id: str, status: EnrollmentStatus, at: datetime) -> None:
        self.tx.change(self.d.enrollments, enrollment_id, status=status, ended_at=at)

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
        self.tx.change(self.d.enrollments, enrollment_id, **values)

    def set_type(self, enrollment_id: str, type_: EnrollmentType) -> None:
        self.tx.change(self.d.enrollments, enrollment_id, type=type_)

    def set_awaiting_configuration(self, enrollment_id: str, awaiting: bool) -> None:
        self.tx.change(self.d.enrollments, enrollment_id, awaiting_configuration=awaiting)


def _next_command(d: _Data, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None:
    statuses = _PENDING[:2] if skip_not_now else _PENDING
    pending = (c for c in d.commands.values() if c.enrollment_id == enrollment_id and c.status in statuses)
    return min(pending, key=lambda c: c.id, default=None)


class MemoryCommandQueue(_Store):
    def enqueue(self, command: QueuedCommand) -> QueuedCommand:
        if any(
            c.tenant_id == command.tenant_id and c.command_uuid == command.command_uuid
            for c in self.d.commands.values()
        ):
            raise _conflict(f"command {command.command_uuid}")
        stored = dataclasses.replace(command, id=self.tx.next_id("commands"))
        self.tx.put(self.d.commands, stored.id, stored)
        return stored

    def enqueue_many(self, commands: Sequence[QueuedCommand]) -> list[QueuedCommand]:
        return [self.enqueue(c) for c in commands]

    def next_for(self, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None:
        return _next_command(self.d, enrollment_id, skip_not_now=skip_not_now)

    def mark_sent(self, command_id: int, at: datetime) -> None:
        self.tx.change(self.d.commands, command_id, status=CommandStatus.SENT, sent_at=at)

    def take(self, command_id: int, enrollment_id: str, at: datetime) -> bool:
        c = self.d.commands.get(command_id)
        e = self.d.enrollments.get(enrollment_id)
        if c is None or c.enrollment_id != enrollment_id or c.status not in _PENDING:
            return False
        if e is None or e.status is not _ACTIVE:
            return False
        return self.tx.change(self.d.commands, command_id, status=CommandStatus.SENT, sent_at=at)

    def get_by_uuid(self, tenant_id: str, command_uuid: str) -> QueuedCommand | None:
        return next(
            (
                c
                for c in self.d.commands.values()
                if c.tenant_id == tenant_id and c.command_uuid == command_uuid
            ),
            None,
        )

    def record_result(
        self,
        enrollment_id: str,
        command_uuid: str,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> QueuedCommand | None:
        found = next(
            (
                c
                for c in self.d.commands.values()
                if c.enrollment_id == enrollment_id and c.command_uuid == command_uuid
            ),
            None,
        )
        if found is not None:
            self.tx.change(
                self.d.commands, found.id, status=status, result=result, result_at=at, error_chain=error_chain
            )
        return found

    def cancel_pending(self, enrollment_id: str) -> int:
        ids = [
            c.id
            for c in self.d.commands.values()
            if c.enrollment_id == enrollment_id and c.status in _PENDING
        ]
        for i in ids:
            self.tx.change(self.d.commands, i, status=CommandStatus.CANCELLED)
        return len(ids)

    def pending_count(self) -> int:
        return sum(1 for c in self.d.commands.values() if c.status in _PENDING)

    def list_for_device(
        self, tenant_id: str, device_id: str, *, limit: int = 100, until: datetime | None = None
    ) -> list[QueuedCommand]:
        mine = (
            c
            for c in self.d.commands.values()
            if c.tenant_id == tenant_id
            and c.device_id == device_id
            and (until is None or c.created_at < until)
        )
        return sorted(mine, key=lambda c: c.id, reverse=True)[:limit]


class MemoryEventLog(_Store):
    def append(self, event: Event) -> None:
        n = self.tx.next_id("events")
        self.tx.put(self.d.events, n, dataclasses.replace(event, id=n))
        key = rollup.failure_key(event)
        if key is not None:
            k = tuple(key[c] for c in rollup.KEY)
            self.tx.put(self.d.failure_rollup, k, self.d.failure_rollup.get(k, 0) + 1)

    def query(self, tenant_id: str, **filters: Unpack[EventFilters]) -> list[Event]:
        upn, since, until = filters.get("upn"), filters.get("since"), filters.get("until")
        after = filters.get("after_id")
        wanted = {
            "upn": None if upn is None else upn.lower(),
            **{k: filters.get(k) for k in ("serial", "udid", "reason")},
        }
        udids: set[str] = set()
        if wanted["serial"] is not None and wanted["udid"] is None:  # the device's whole story
            udids = {
                d.udid
                for d in self.d.devices.values()
                if d.tenant_id == tenant_id and d.serial == wanted["serial"]
            }
        serial = wanted.pop("serial") if udids else None
        fields = [(k, v) for k, v in wanted.items() if v is not None]

        def matches(e: Event) -> bool:
            return (
                e.tenant_id == tenant_id
                and all(getattr(e, k) == v for k, v in fields)
                and (serial is None or e.serial == serial or e.udid in udids)
                and (since is None or e.at >= since)
                and (until is None or e.at < until)
                and (after is None or (e.id or 0) > after)
            )

        found = [e for e in self.d.events.values() if matches(e)]
        if after is not None:
            return sorted(found, key=lambda e: e.id or 0)[: filters.get("limit", 100)]
        return sorted(found, key=lambda e: (e.at, e.id or 0), reverse=True)[: filters.get("limit", 100)]

    def incident_facts(
        self,
        tenant_id: str,
        reasons: Sequence[str],
        steps: Sequence[str],
        since: datetime,
        until: datetime,
        sample: int = 10,
    ) -> IncidentFacts:
        wanted = set(reasons)
        window = [e for e in self.d.events.values() if e.tenant_id == tenant_id and since <= e.at < until]
        failed = [e for e in window if e.reason in wanted and e.outcome is Outcome.FAILED]
        tried = [e for e in window if e.step.value in steps]
        by_reason: dict[str, list[Event]] = {}
        for e in failed:
            by_reason.setdefault(str(e.reason), []).append(e)

        def who(events: list[Event]) -> tuple[set[str], set[str]]:
            users = {u for e in events if (u := e.upn)}
            return users, {d for e in events if (d := e.udid or e.serial)}

        users, devices = who(failed)
        att_users, att_devices = who(tried)
        kinds: list[tuple[str, dict[str, object]]] = []
        for e in failed:
            detail = {k: v for k in INCIDENT_DETAIL if (v := e.detail.get(k)) is not None}
            kind = (e.step.value, detail)
            if kind not in kinds:
                kinds.append(kind)
        return IncidentFacts(
            failures={
                r: (len(es), min(e.at for e in es), max(e.at for e in es)) for r, es in by_reason.items()
            },
            failing_users=len(users),
            failing_devices=len(devices),
            attempting_users=len(users | att_users),
            attempting_devices=len(devices | att_devices),
            kinds=kinds,
            samples={
                r: sorted(es, key=lambda e: (e.at, -(e.id or 0)))[:sample] for r, es in by_reason.items()
            },
        )

    def failure_report(
        self, tenant_id: str, since: datetime, until: datetime, group_by: str
    ) -> list[tuple[str, int]]:
        col = rollup.KEY.index(rollup.GROUPS[group_by])
        first, last = rollup.day(since), rollup.day(until)
        totals: dict[str, int] = {}
        for key, count in self.d.failure_rollup.items():
            if key[0] == tenant_id and first <= key[1] <= last:
                totals[key[col]] = totals.get(key[col], 0) + count
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


_FINISHED = (CommandStatus.ACKNOWLEDGED, CommandStatus.ERROR, CommandStatus.COMMAND_FORMAT_ERROR)


class MemoryHistoryStore(_Store):
    def _old_events(self, tenant_id: str, before: datetime) -> list[int]:
        return [k for k, e in self.d.events.items() if e.tenant_id == tenant_id and e.at < before]

    def _old_commands(self, tenant_id: str, before: datetime) -> list[int]:
        return [
            k
            for k, c in self.d.commands.items()
            if c.tenant_id == tenant_id
            and c.status in _FINISHED
            and c.result_at is not None
            and c.result_at < before
        ]

    def old_events(self, tenant_id: str, before: datetime) -> int:
        return len(self._old_events(tenant_id, before))

    def old_commands(self, tenant_id: str, before: datetime) -> int:
        return len(self._old_commands(tenant_id, before))

    def prune_events(self, tenant_id: str, before: datetime, limit: int) -> int:
        batch = self._old_events(tenant_id, before)[:limit]
        for k in batch:
            self.tx.pop(self.d.events, k)
        return len(batch)

    def prune_commands(self, tenant_id: str, before: datetime, limit: int) -> int:
        batch = self._old_commands(tenant_id, before)[:limit]
        for k in batch:
            self.tx.pop(self.d.commands, k)
        return len(batch)


class MemoryGroupStore(_Store):
    def add(self, group: Group) -> None:
        if group.id in self.d.groups or self.by_name(group.tenant_id, group.name) is not None:
            raise _conflict(f"group {group.name}")
        self.tx.put(self.d.groups, group.id, group)

    def by_name(self, tenant_id: str, name: str) -> Group | None:
        return next((g for g in self.d.groups.values() if g.tenant_id == tenant_id and g.name == name), None)

    def list(self, tenant_id: str) -> list[Group]:
        return sorted((g for g in self.d.groups.values() if g.tenant_id == tenant_id), key=lambda g: g.name)

    def names(self, tenant_id: str, ids: set[str]) -> dict[str, str]:
        return {g.id: g.name for g in self.d.groups.values() if g.tenant_id == tenant_id and g.id in ids}

    def add_member(self, group_id: str, user_id: str) -> bool:
        if (group_id, user_id) in self.d.group_members:
            return False
        self.tx.put(self.d.group_members, (group_id, user_id), None)
        return True

    def remove_member(self, group_id: str, user_id: str) -> None:
        self.tx.pop(self.d.group_members, (group_id, user_id))

    def member_count(self, group_id: str) -> int:
        return sum(1 for g, _ in self.d.group_members if g == group_id)


#: Restriction fields that are not settings (RestrictionStore.update leaves them).
_R_FIXED = frozenset({"id", "kind", "is_default", "group_ids"})


class MemoryRestrictionStore(_Store):
    def _check_priority(self, tenant_id: str, r: Restriction) -> None:
        for rid, (tid, other) in self.d.restrictions.items():
            if rid != r.id and tid == tenant_id and (other.kind, other.priority) == (r.kind, r.priority):
                raise _conflict(f"restriction priority {r.priority}")

    def add(self, r: Restriction, tenant_id: str, at: datetime) -> None:
        if r.id in self.d.restrictions:
            raise _conflict("restriction")
        self._check_priority(tenant_id, r)
        self.tx.put(self.d.restrictions, r.id, (tenant_id, dataclasses.replace(r, group_ids=frozenset())))
        for gid in r.group_ids:
            self.tx.put(self.d.restriction_groups, (r.id, gid), None)

    def update(self, restriction_id: str, at: datetime, **fields: object) -> None:
        found = self.d.restrictions.get(restriction_id)
        if found is None:
            return
        tenant_id, r = found
        names = {f.name for f in dataclasses.fields(r)} - _R_FIXED
        values: dict[str, Any] = {k: v for k, v in fields.items() if k in names}
        new = dataclasses.replace(r, **values)
        self._check_priority(tenant_id, new)
        self.tx.put(self.d.restrictions, restriction_id, (tenant_id, new))

    def assign(self, restriction_id: str, group_id: str) -> None:
        self.tx.put(self.d.restriction_groups, (restriction_id, group_id), None)

    def unassign(self, restriction_id: str, group_id: str) -> None:
        self.tx.pop(self.d.restriction_groups, (restriction_id, group_id))

    def delete(self, restriction_id: str) -> None:
        if self.tx.pop(self.d.restrictions, restriction_id):
            for key in [k for k in self.d.restriction_groups if k[0] == restriction_id]:
                self.tx.pop(self.d.restriction_groups, key)

    def list(self, tenant_id: str) -> list[Restriction]:
        out = [
            dataclasses.replace(
                r, group_ids=frozenset(g for rid, g in self.d.restriction_groups if rid == r.id)
            )
            for tid, r in self.d.restrictions.values()
            if tid == tenant_id
        ]
        return sorted(out, key=lambda r: (r.kind, r.is_default, r.priority))


def _normalize(value: str) -> str:
    return "".join(value.split()).upper()


class MemoryCorporateStore(_Store):
    def upsert_many(self, tenant_id: str, rows: list[CorporateIdentifier]) -> int:
        """Insert new identifiers; an existing one keeps its state and gets the new description."""
        added = 0
        for c in rows:
            existing = self.get(tenant_id, c.kind, c.value)
            if existing is None:
                self.tx.put(self.d.corporate, c.id, dataclasses.replace(c, tenant_id=tenant_id))
                added += 1
            elif c.description is not None:
                self.tx.change(self.d.corporate, existing.id, description=c.description)
        return added

    def get(self, tenant_id: str, kind: str, value: str) -> CorporateIdentifier | None:
        return next(
            (
                c
                for c in self.d.corporate.values()
                if c.tenant_id == tenant_id and c.kind == kind and c.value == value
            ),
            None,
        )

    def match(self, tenant_id: str, serial: str | None, imei: str | None) -> CorporateIdentifier | None:
        for kind, value in (("serial", serial), ("imei", imei)):
            if value and (found := self.get(tenant_id, kind, _normalize(value))) is not None:
                return found
        return None

    def set_state(self, identifier_id: str, state: str, at: datetime) -> None:
        self.tx.change(self.d.corporate, identifier_id, state=state, last_contact_at=at)

    def list(self, tenant_id: str, *, limit: int = 1000, offset: int = 0) -> list[CorporateIdentifier]:
        mine = (c for c in self.d.corporate.values() if c.tenant_id == tenant_id)
        return _page(sorted(mine, key=lambda c: (c.kind, c.value)), limit, offset)

    def delete(self, tenant_id: str, kind: str, value: str) -> bool:
        found = self.get(tenant_id, kind, value)
        return found is not None and self.tx.pop(self.d.corporate, found.id)


class MemoryBlockStore(_Store):
    def _find(self, tenant_id: str, kind: str, value: str) -> BlockedDevice | None:
        return next(
            (
                b
                for b in self.d.blocks.values()
                if b.tenant_id == tenant_id and b.kind == kind and b.value == value
            ),
            None,
        )

    def add(self, b: BlockedDevice) -> None:
        if self._find(b.tenant_id, b.kind, b.value) is None:
            self.tx.put(self.d.blocks, b.id, b)

    def remove(self, tenant_id: str, kind: str, value: str) -> bool:
        found = self._find(tenant_id, kind, value)
        return found is not None and self.tx.pop(self.d.blocks, found.id)

    def is_blocked(self, tenant_id: str, *, serial: str | None = None, udid: str | None = None) -> bool:
        return any(
            v and self._find(tenant_id, k, v) is not None for k, v in (("serial", serial), ("udid", udid))
        )

    def list(self, tenant_id: str) -> list[BlockedDevice]:
        return sorted(
            (b for b in self.d.blocks.values() if b.tenant_id == tenant_id), key=lambda b: b.created_at
        )


def _push_state(d: _Data, enrollment_id: str) -> _EnrollmentPush:
    return d.enrollment_push.get(enrollment_id) or _EnrollmentPush()


def _has_pending(d: _Data, enrollment_id: str) -> bool:
    return _next_command(d, enrollment_id, skip_not_now=False) is not None


class MemoryPushQueue(_Store):
    def request(
        self, tenant_id: str, enrollment_ids: Iterable[str], now: datetime, kind: PushKind = PushKind.COMMAND
    ) -> None:
        kind = PushKind(kind)
        for eid in dict.fromkeys(enrollment_ids):
            row = self.d.push_queue.get(eid)
            if row is None:
                self.tx.put(self.d.push_queue, eid, _QueueRow(eid, tenant_id, now, kind, now))
            elif kind is PushKind.COMMAND:
                self.tx.put(
                    self.d.push_queue,
                    eid,
                    dataclasses.replace(
                        row,
                        due_at=now,
                        kind=kind,
                        attempts=0,
                        failures=0,
                        first_pushed_at=None,
                        claimed_until=None,
                        claimed_by=None,
                    ),
                )
            else:  # a canary only makes an existing row due now
                self.tx.change(self.d.push_queue, eid, due_at=now, claimed_until=None, claimed_by=None)

    def token_updated(self, enrollment_id: str, tenant_id: str, now: datetime) -> None:
        st = _push_state(self.d, enrollment_id)
        if st.token_invalid_at is not None:
            new = dataclasses.replace(st, token_invalid_at=None, token_invalid_reason=None)
            self.tx.put(self.d.enrollment_push, enrollment_id, new)
        if _has_pending(self.d, enrollment_id) and enrollment_id not in self.d.push_queue:
            self.request(tenant_id, [enrollment_id], now)

    def claim(self, now: datetime, lease_until: datetime, claimed_by: str, limit: int) -> list[PushJob]:
        free = [
            r
            for r in self.d.push_queue.values()
            if r.due_at <= now and (r.claimed_until is None or r.claimed_until < now)
        ]
        for r in sorted(free, key=lambda r: r.due_at)[:limit]:
            self.tx.change(
                self.d.push_queue, r.enrollment_id, claimed_until=lease_until, claimed_by=claimed_by
            )
        jobs = []
        for r in self.d.push_queue.values():
            e = self.d.enrollments.get(r.enrollment_id)
            t = self.d.tenants.get(r.tenant_id)
            if r.claimed_by != claimed_by or e is None or t is None or e.device_id not in self.d.devices:
                continue
            st = _push_state(self.d, e.id)
            cert = self.d.tenant_push.get(t.id) or PushCertState()
            jobs.append(
                PushJob(
                    enrollment_id=r.enrollment_id,
                    tenant_id=r.tenant_id,
                    kind=r.kind,
                    attempts=r.attempts,
                    failures=r.failures,
                    first_pushed_at=r.first_pushed_at,
                    udid=e.udid,
                    device_id=e.device_id,
                    status=e.status.value,
                    topic=e.topic,
                    push_token=e.push_token,
                    push_magic=e.push_magic,
                    token_invalid=st.token_invalid_at is not None,
                    reenroll_required=st.reenroll_required_at is not None,
                    tenant_topic=t.push_topic,
                    tenant_cert_invalid=cert.invalid_at is not None,
                    tenant_not_after=t.push_not_after,
                    has_pending=_has_pending(self.d, e.id),
                    last_seen_at=self.d.devices[e.device_id].last_seen_at,
                    first_unanswered_push_at=st.first_unanswered_push_at,
                )
            )
        return jobs

    def _claimed(self, claimed_by: str, enrollment_id: str) -> bool:
        row = self.d.push_queue.get(enrollment_id)
        return row is not None and row.claimed_by == claimed_by

    def reschedule(self, claimed_by: str, rows: Sequence[PushReschedule]) -> None:
        for r in rows:
            if self._claimed(claimed_by, r.enrollment_id):
                self.tx.change(
                    self.d.push_queue,
                    r.enrollment_id,
                    due_at=r.due_at,
                    attempts=r.attempts,
                    failures=r.failures,
                    first_pushed_at=r.first_pushed_at,
                    last_error=r.last_error,
                    claimed_until=None,
                    claimed_by=None,
                )

    def drop(self, claimed_by: str, enrollment_ids: Sequence[str]) -> None:
        for eid in enrollment_ids:
            if self._claimed(claimed_by, eid):
                self.tx.pop(self.d.push_queue, eid)

    def queue_size(self, tenant_id: str | None = None) -> int:
        return sum(1 for r in self.d.push_queue.values() if tenant_id is None or r.tenant_id == tenant_id)


class MemoryPushReachability(_Store):
    def _set(self, enrollment_id: str, **values: object) -> None:
        if enrollment_id in self.d.enrollments:
            new = dataclasses.replace(_push_state(self.d, enrollment_id), **values)  # type: ignore[arg-type]
            self.tx.put(self.d.enrollment_push, enrollment_id, new)

    def record_pushes(self, rows: Sequence[PushAttempt]) -> None:
        for r in rows:
            self._set(
                r.enrollment_id,
                last_push_at=r.at,
                last_push_status=r.status,
                first_unanswered_push_at=r.first_unanswered_push_at,
            )

    def mark_token_invalid(self, rows: Sequence[TokenRefusal]) -> None:
        for r in rows:
            self._set(
                r.enrollment_id,
                token_invalid_at=r.at,
                token_invalid_reason=r.reason,
                last_push_at=r.at,
                last_push_status=r.reason,
            )

    def _rows(self, tenant_id: str, pred: Callable[[_EnrollmentPush], bool]) -> list[Reachability]:
        out = []
        for e in sorted(self.d.enrollments.values(), key=lambda e: e.started_at):
            d = self.d.devices.get(e.device_id)
            st = _push_state(self.d, e.id)
            if e.tenant_id != tenant_id or e.status is not _ACTIVE or d is None or not pred(st):
                continue
            out.append(
                Reachability(
                    e.id,
                    e.device_id,
                    e.udid,
                    d.serial,
                    st.last_push_at,
                    st.last_push_status,
                    d.last_seen_at,
                    st.first_unanswered_push_at,
                    st.token_invalid_reason,
                )
            )
        return out

    def reachability(self, tenant_id: str, *, limit: int = 1000) -> list[Reachability]:
        return self._rows(tenant_id, lambda st: True)[:limit]

    def unanswered(
        self, tenant_id: str, before: datetime, enrollment_ids: Sequence[str] | None = None
    ) -> list[Reachability]:
        rows = self._rows(
            tenant_id,
            lambda st: (
                st.first_unanswered_push_at is not None
                and st.first_unanswered_push_at <= before
                and st.token_invalid_at is None
            ),
        )
        return rows if enrollment_ids is None else [r for r in rows if r.enrollment_id in enrollment_ids]

    def pick_canary(
        self, tenant_id: str, topic: str, count: int, seen_before: datetime
    ) -> list[tuple[str, str]]:
        found = []
        for e in self.d.enrollments.values():
            d = self.d.devices.get(e.device_id)
            st = _push_state(self.d, e.id)
            if (
                e.tenant_id == tenant_id
                and e.topic == topic
                and e.status is _ACTIVE
                and e.push_token is not None
                and st.token_invalid_at is None
                and st.reenroll_required_at is None
                and d is not None
            ):
                found.append((_ts(d.last_seen_at), e.id, e.device_id))
        return [(eid, did) for _, eid, did in sorted(found)[:count]]

    def seen_since(self, device_ids: Sequence[str]) -> dict[str, datetime | None]:
        return {i: d.last_seen_at for i in device_ids if (d := self.d.devices.get(i)) is not None}

    def last_pushes(self, enrollment_ids: Sequence[str]) -> dict[str, tuple[datetime | None, str | None]]:
        return {
            i: (st.last_push_at, st.last_push_status)
            for i in enrollment_ids
            if i in self.d.enrollments and (st := _push_state(self.d, i)) is not None
        }


class MemoryPushCertStore(_Store):
    def credentials(self, topic: str) -> PushCredentials | None:
        for t in self.d.tenants.values():
            if t.push_topic == topic:
                key = self.d.tenant_push_keys.get(t.id)
                if t.push_cert_pem is None or key is None:
                    return None
                return PushCredentials(t.id, t.push_cert_pem, key)
        return None

    def cert_state(self, tenant_id: str) -> PushCertState:
        return self.d.tenant_push.get(tenant_id) or PushCertState()

    def _set(self, tenant_id: str, **values: object) -> None:
        if tenant_id in self.d.tenants:
            new = dataclasses.replace(self.cert_state(tenant_id), **values)  # type: ignore[arg-type]
            self.tx.put(self.d.tenant_push, tenant_id, new)

    def set_cert_invalid(self, tenant_id: str, at: datetime, reason: str) -> bool:
        if tenant_id not in self.d.tenants or self.cert_state(tenant_id).invalid_at is not None:
            return False
        self._set(tenant_id, invalid_at=at, invalid_reason=reason)
        return True

    def set_pending_key(self, tenant_id: str, sealed: bytes | None) -> None:
        self._set(tenant_id, pending_key=sealed)

    def cert_changed(self, tenant_id: str, at: datetime, apple_id: str | None) -> None:
        values: dict[str, object] = {
            "invalid_at": None,
            "invalid_reason": None,
            "updated_at": at,
            "pending_key": None,
        }
        if apple_id:
            values["apple_id"] = apple_id
        self._set(tenant_id, **values)
        for r in list(self.d.push_queue.values()):
            if r.tenant_id == tenant_id:
                self.tx.change(
                    self.d.push_queue,
                    r.enrollment_id,
                    due_at=at,
                    failures=0,
                    claimed_until=None,
                    claimed_by=None,
                )


class MemoryReEnrollmentStore(_Store):
    def _active(self, tenant_id: str) -> list[Enrollment]:
        mine = (e for e in self.d.enrollments.values() if e.tenant_id == tenant_id and e.status is _ACTIVE)
        return sorted(mine, key=lambda e: e.started_at)

    def active_on_topic(self, tenant_id: str, topic: str) -> int:
        return sum(1 for e in self._active(tenant_id) if e.topic == topic)

    def mark_reenroll_required(self, tenant_id: str, old_topic: str, at: datetime) -> int:
        marked = 0
        for e in self._active(tenant_id):
            st = _push_state(self.d, e.id)
            if e.topic == old_topic and st.reenroll_required_at is None:
                self.tx.put(self.d.enrollment_push, e.id, dataclasses.replace(st, reenroll_required_at=at))
                marked += 1
        return marked

    def reenroll_required(self, tenant_id: str, *, limit: int = 1000) -> tuple[int, list[ReEnrollment]]:
        rows = []
        for e in self._active(tenant_id):
            since = _push_state(self.d, e.id).reenroll_required_at
            d = self.d.devices.get(e.device_id)
            if since is not None and d is not None:
                rows.append(ReEnrollment(e.id, e.udid, d.serial, e.topic, since, e.user_id))
        return len(rows), rows[:limit]


class MemoryWebhookStore(_Store):
    def set_webhook(self, tenant_id: str, url: str, sealed_secret: bytes, at: datetime) -> None:
        self.tx.put(self.d.webhooks, tenant_id, (url, sealed_secret))

    def webhook(self, tenant_id: str) -> tuple[str, bytes] | None:
        return self.d.webhooks.get(tenant_id)

    def record_delivery(self, delivery: WebhookDelivery) -> None:
        n = self.tx.next_id("deliveries")
        self.tx.put(self.d.deliveries, n, dataclasses.replace(delivery, id=n, codes=delivery.codes[:255]))

    def deliveries(self, tenant_id: str, *, limit: int = 50) -> list[WebhookDelivery]:
        mine = (w for w in self.d.deliveries.values() if w.tenant_id == tenant_id)
        return sorted(mine, key=lambda w: w.id or 0, reverse=True)[:limit]


class MemoryPortalSessionStore(_Store):
    def add(self, id_hash: str, session: PortalSession) -> None:
        self.tx.put(self.d.portal_sessions, id_hash, session)

    def get(self, id_hash: str) -> PortalSession | None:
        return self.d.portal_sessions.get(id_hash)

    def revoke(self, id_hash: str, at: datetime, why: SessionEnd) -> None:
        found = self.d.portal_sessions.get(id_hash)
        if found is not None and found.revoked_at is None:
            ended = dataclasses.replace(found, revoked_at=at, revoked_why=why)
            self.tx.put(self.d.portal_sessions, id_hash, ended)

    def revoke_user(self, tenant_id: str, user_id: str, at: datetime, why: SessionEnd) -> int:
        mine = [
            (h, p)
            for h, p in self.d.portal_sessions.items()
            if p.tenant_id == tenant_id and p.user_id == user_id and p.revoked_at is None
        ]
        for h, p in mine:
            self.tx.put(self.d.portal_sessions, h, dataclasses.replace(p, revoked_at=at, revoked_why=why))
        return len(mine)

    def purge(self, tenant_id: str, user_id: str, before: datetime) -> None:
        for h, p in list(self.d.portal_sessions.items()):
            if p.tenant_id == tenant_id and p.user_id == user_id and p.expires_at < before:
                self.tx.pop(self.d.portal_sessions, h)


class MemoryAdminStore(_Store):
    def add(self, account: AdminAccount) -> None:
        if any(a.email == account.email.lower() for a in self.d.admins.values()):
            raise ConflictError(f"an admin account {account.email} exists", email=account.email)
        self.tx.put(self.d.admins, account.id, dataclasses.replace(account, email=account.email.lower()))

    def get(self, admin_id: str) -> AdminAccount | None:
        return self.d.admins.get(admin_id)

    def by_email(self, email: str) -> AdminAccount | None:
        return next((a for a in self.d.admins.values() if a.email == email.lower()), None)

    def list(self) -> list[AdminAccount]:
        return sorted(self.d.admins.values(), key=lambda a: (a.created_at, a.email))

    def update(self, account: AdminAccount) -> None:
        if account.id in self.d.admins:
            self.tx.put(self.d.admins, account.id, account)


class MemoryConsoleSessionStore(_Store):
    def add(self, id_hash: str, session: ConsoleSession) -> None:
        self.tx.put(self.d.console_sessions, id_hash, session)

    def get(self, id_hash: str) -> ConsoleSession | None:
        return self.d.console_sessions.get(id_hash)

    def revoke(self, id_hash: str, at: datetime, why: SessionEnd) -> None:
        found = self.d.console_sessions.get(id_hash)
        if found is not None and found.revoked_at is None:
            ended = dataclasses.replace(found, revoked_at=at, revoked_why=why)
            self.tx.put(self.d.console_sessions, id_hash, ended)

    def revoke_admin(self, admin_id: str, at: datetime, why: SessionEnd) -> int:
        mine = [
            (h, c)
            for h, c in self.d.console_sessions.items()
            if c.admin_id == admin_id and c.revoked_at is None
        ]
        for h, c in mine:
            self.tx.put(self.d.console_sessions, h, dataclasses.replace(c, revoked_at=at, revoked_why=why))
        return len(mine)

    def purge(self, admin_id: str, before: datetime) -> None:
        for h, c in list(self.d.console_sessions.items()):
            if c.admin_id == admin_id and c.expires_at < before:
                self.tx.pop(self.d.console_sessions, h)


class MemoryAuditLog(_Store):
    def append(self, entry: AuditEntry) -> None:
        n = self.tx.next_id("audit")
        self.tx.put(self.d.audit, n, dataclasses.replace(entry, id=n, detail=dict(entry.detail)))

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
        rows = [
            e
            for n, e in sorted(self.d.audit.items(), reverse=True)
            if (tenant_id is None or e.tenant_id == tenant_id)
            and (before_id is None or n < before_id)
            and (not actor or e.actor == actor)
            and (not action or e.action.startswith(action))
            and (not source or e.source == source)
            and (since is None or e.at >= since)
            and (until is None or e.at < until)
        ]
        return rows[:limit]


def _starts(value: str | None, prefix: str) -> bool:
    return value is not None and value.startswith(prefix)


class MemoryDeviceListing(_Store):
    """The SQL listing's order: rows with a sort value (last check-in newest first), then the rest by id."""

    def _mine(self, tenant_id: str, prefix: str | None, filters: DeviceFilter | None = None) -> list[Device]:
        keep = self._filter(tenant_id, filters)
        return [
            d
            for d in self.d.devices.values()
            if d.tenant_id == tenant_id
            and (not prefix or _starts(d.device_name, prefix) or _starts(d.serial, prefix))
            and keep(d)
        ]

    def _filter(self, tenant_id: str, f: DeviceFilter | None) -> Callable[[Device], bool]:
        """The SQL listing's :func:`device_filters`, over the dicts."""
        if f is None or f.empty:
            return lambda d: True
        mine = [e for e in self.d.enrollments.values() if e.tenant_id == tenant_id]
        active = {e.udid: e for e in mine if e.status is EnrollmentStatus.ACTIVE}
        retired = {e.udid for e in mine if e.status is EnrollmentStatus.RETIRED}
        corp = {(c.kind, c.value) for c in self.d.corporate.values() if c.tenant_id == tenant_id}
        blocked = {(b.kind, b.value) for b in self.d.blocks.values() if b.tenant_id == tenant_id}

        def unanswered(e: Enrollment) -> bool:
            st = self.d.enrollment_push.get(e.id)
            first = None if st is None else st.first_unanswered_push_at
            return first is not None and f.unresponsive_before is not None and first <= f.unresponsive_before

        def ok(d: Device) -> bool:
            e = active.get(d.udid)
            product, os_version = d.product_name or "", d.os_version
            if f.platform == "ipados" and not product.startswith("iPad"):
                return False
            if f.platform == "ios" and not product.startswith(("iPhone", "iPod")):
                return False
            if f.os_prefix and not (
                os_version == f.os_prefix or (os_version or "").startswith(f.os_prefix + ".")
            ):
                return False
            if f.os_versions is not None and os_version not in f.os_versions:
                return False
            if f.ownership is not None:
                corporate = (
                    (e is not None and e.type in (EnrollmentType.ADE, EnrollmentType.CORPORATE))
                    or ("serial", d.serial) in corp
                    or ("imei", d.imei) in corp
                )
                if corporate != (f.ownership == "corporate"):
                    return False
            if f.enrollment_type and (e is None or e.type.value != f.enrollment_type):
                return False
            state = {
                None: True,
                "active": e is not None,
                "awaiting": e is not None and e.awaiting_configuration,
                "unresponsive": e is not None and unanswered(e),
                "unenrolled": e is None,
                "retired": e is None and d.udid in retired,
                "blocked": ("udid", d.udid) in blocked or ("serial", d.serial) in blocked,
            }[f.state]
            if not state:
                return False
            return f.seen_before is None or d.last_seen_at is None or d.last_seen_at < f.seen_before

        return ok

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
        name = {"name": "device_name", "serial": "serial", "last_seen": "last_seen_at"}[sort]
        mine = self._mine(tenant_id, prefix, filters)
        valued = sorted((d for d in mine if getattr(d, name) is not None), key=lambda d: d.id)
        valued.sort(key=lambda d: getattr(d, name), reverse=sort == "last_seen")
        empty = sorted((d for d in mine if getattr(d, name) is None), key=lambda d: d.id)
        if after is not None and after.empty:
            return [d for d in empty if d.id > after.id][:limit]
        if after is not None:
            v = after.value

            def later(d: Device) -> bool:
                x = getattr(d, name)
                if x == v:
                    return bool(d.id > after.id)
                return bool(x < v) if sort == "last_seen" else bool(x > v)

            valued = [d for d in valued if later(d)]
        return (valued + empty)[:limit]

    def count(
        self,
        tenant_id: str,
        *,
        prefix: str | None = None,
        filters: DeviceFilter | None = None,
        cap: int | None = None,
    ) -> int:
        n = len(self._mine(tenant_id, prefix, filters))
        return n if cap is None else min(n, cap)

    def os_versions(self, tenant_id: str) -> list[str]:
        return sorted(
            {d.os_version for d in self.d.devices.values() if d.tenant_id == tenant_id and d.os_version}
        )


class MemoryUserListing(_Store):
    """The SQL listing's order: by UPN, from the cursor on."""

    def _mine(self, tenant_id: str, prefix: str | None) -> list[User]:
        p = (prefix or "").lower()
        return sorted(
            (u for u in self.d.users.values() if u.tenant_id == tenant_id and u.upn.startswith(p)),
            key=lambda u: u.upn,
        )

    def page(
        self, tenant_id: str, *, after: str | None = None, prefix: str | None = None, limit: int = 50
    ) -> list[User]:
        return [u for u in self._mine(tenant_id, prefix) if after is None or u.upn > after][:limit]

    def count(self, tenant_id: str, *, prefix: str | None = None) -> int:
        return len(self._mine(tenant_id, prefix))

    def device_counts(self, user_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(user_ids)
        out: dict[str, int] = {}
        for e in self.d.enrollments.values():
            if e.user_id in wanted and e.status is _ACTIVE:
                out[e.user_id] = out.get(e.user_id, 0) + 1
        return out

    def group_names(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        wanted = set(user_ids)
        out: dict[str, list[str]] = {}
        for gid, uid in self.d.group_members:
            g = self.d.groups.get(gid)
            if uid in wanted and g is not None:
                out.setdefault(uid, []).append(g.name)
        return {uid: sorted(names) for uid, names in out.items()}


class MemoryHealthStore(_Store):
    """Findings kept as rows (the finding, first/last seen, resolved and notified times)."""

    def _open(self, tenant_id: str) -> list[dict[str, Any]]:
        mine = (
            f for f in self.d.findings.values() if f["tenant_id"] == tenant_id and f["resolved_at"] is None
        )
        return sorted(mine, key=lambda f: f["first_seen"])

    def open_findings(self, tenant_id: str) -> list[RecordedFinding]:
        return [RecordedFinding(f["finding"], f["first_seen"], f["last_seen"]) for f in self._open(tenant_id)]

    def _update(self, row: dict[str, Any], **values: object) -> None:
        self.tx.put(self.d.findings, row["id"], {**row, **values})

    def record(self, tenant_id: str, found: Sequence[Finding], now: datetime) -> list[Finding]:
        """Upsert what was found now; resolve what is no longer found. Returns the NEW findings."""
        current = {(f["code"], f["subject"]): f for f in self._open(tenant_id)}
        new = []
        for f in found:
            old = current.pop(f.key, None)
            if old is not None:
                self._update(old, last_seen=now, finding=f)
                continue
            row_id = str(uuid.uuid4())
            row: dict[str, Any] = {
                "id": row_id,
                "tenant_id": tenant_id,
                "code": f.code.value,
                "subject": f.subject,
                "finding": f,
                "first_seen": now,
                "last_seen": now,
                "resolved_at": None,
                "notified_at": None,
            }
            self.tx.put(self.d.findings, row_id, row)
            new.append(f)
        for gone in current.values():
            self._update(gone, resolved_at=now)
        return new

    def mark_notified(self, tenant_id: str, codes: list[tuple[str, str]], now: datetime) -> None:
        wanted = set(codes)
        for f in self._open(tenant_id):
            if (f["code"], f["subject"]) in wanted:
                self._update(f, notified_at=now)

    def stuck_awaiting(self, tenant_id: str, before: datetime) -> list[tuple[str, str, str | None, datetime]]:
        held = sorted(
            (
                (e.token_updated_at, e.id, e.udid, e.device_id)
                for e in self.d.enrollments.values()
                if e.tenant_id == tenant_id
                and e.status is _ACTIVE
                and e.awaiting_configuration
                and e.token_updated_at is not None
                and e.token_updated_at < before
            ),
            key=lambda r: r[0],
        )[:1000]
        out: list[tuple[str, str, str | None, datetime]] = []
        for since, eid, udid, device_id in held:
            d = self.d.devices.get(device_id)
            out.append((eid, udid, None if d is None else d.serial, since))
        return out

    def unlicensed_users(self, tenant_id: str) -> int:
        return sum(
            1 for u in self.d.users.values() if u.tenant_id == tenant_id and u.enabled and not u.licensed
        )

    def mfa_users(self, tenant_id: str) -> int:
        return sum(
            1 for u in self.d.users.values() if u.tenant_id == tenant_id and u.enabled and u.mfa_required
        )


class MemoryReportListing(_Store):
    def failure_rows(self, tenant_id: str, since: datetime, until: datetime) -> list[RollupRow]:
        first, last = rollup.day(since), rollup.day(until)
        return sorted(
            (k[1], k[2], k[3], k[4], k[5], n)
            for k, n in self.d.failure_rollup.items()
            if k[0] == tenant_id and first <= k[1] <= last
        )

    def enrollments_by_day(self, tenant_id: str, since: datetime, until: datetime) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.d.enrollments.values():
            if e.tenant_id == tenant_id and since <= e.started_at <= until:
                k = rollup.day(e.started_at)
                out[k] = out.get(k, 0) + 1
        return out


class MemoryAbmListing(_Store):
    """The SQL listing's counts, from the ABM store's dictionaries."""

    def profile_counts(self, tenant_id: str) -> dict[str, AdeProfileCount]:
        wanted: dict[str, list[int]] = {}
        for (t, _), a in self.d.abm_assignments.items():
            if t == tenant_id:
                n = wanted.setdefault(a.profile_id, [0, 0])
                n[0] += 1
                n[1] += a.last_error is not None
        by_uuid = {(token, u): pid for (pid, token), u in self.d.abm_definitions.items()}
        held: dict[str, int] = {}
        for (t, _), r in self.d.abm_devices.items():
            pid = by_uuid.get((r.token_id, r.device.profile_uuid))
            if t == tenant_id and not r.deleted and r.device.profile_status in ("assigned", "pushed") and pid:
                held[pid] = held.get(pid, 0) + 1
        return {
            pid: AdeProfileCount(wanted.get(pid, [0, 0])[0], held.get(pid, 0), wanted.get(pid, [0, 0])[1])
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
        wanted = {
            s: a
            for (t, s), a in self.d.abm_assignments.items()
            if t == tenant_id and a.profile_id == profile_id
        }
        listed = {s: r for (t, s), r in self.d.abm_devices.items() if t == tenant_id and not r.deleted}
        showing = {s for s, r in listed.items() if definitions.get(r.token_id) == r.device.profile_uuid}
        page = sorted(s for s in set(wanted) | showing if after is None or s > after)[:limit]
        out: list[AdeProfileDevice] = []
        for serial in page:
            r, a = listed.get(serial), wanted.get(serial)
            devices = sorted(
                (d for d in self.d.devices.values() if d.tenant_id == tenant_id and d.serial == serial),
                key=lambda d: d.created_at or datetime.min.replace(tzinfo=UTC),
            )
            events = [
                e
                for e in self.d.events.values()
                if e.tenant_id == tenant_id and e.serial == serial and e.step in ("dep", "ade")
            ]
            ev = max(events, key=lambda e: e.id or 0) if events else None
            out.append(
                AdeProfileDevice(
                    serial=serial,
                    model="" if r is None else r.device.model,
                    profile_status="" if r is None else r.device.profile_status,
                    how="abm"
                    if a is None
                    else "explicit"
                    if a.explicit
                    else "rule"
                    if a.rule_id
                    else "default",
                    held=serial in showing
                    and r is not None
                    and r.device.profile_status in ("assigned", "pushed"),
                    attempts=0 if a is None else a.attempts,
                    last_error=None if a is None else a.last_error,
                    device_id=devices[-1].id if devices else None,
                    event_at=None if ev is None else ev.at,
                    event_step=None if ev is None else ev.step.value,
                    event_outcome=None if ev is None else ev.outcome.value,
                    event_reason=None if ev is None else ev.reason,
                )
            )
        return out


class MemoryAbmStore(_Store):
    def set_keypair(self, tenant_id: str, cert_pem: bytes, key_pem: bytes, at: datetime) -> None:
        self.tx.put(self.d.abm_keypairs, tenant_id, (cert_pem, key_pem))

    def keypair(self, tenant_id: str) -> tuple[bytes, bytes] | None:
        return self.d.abm_keypairs.get(tenant_id)

    def add_token(self, info: AbmTokenInfo, credentials: ServerToken) -> None:
        if any(t.tenant_id == info.tenant_id and t.name == info.name for t, _ in self.d.abm_tokens.values()):
            raise _conflict(f"ABM token {info.name}")
        self.tx.put(self.d.abm_tokens, info.id, (info, credentials))

    def tokens(self, tenant_id: str) -> list[AbmTokenInfo]:
        return sorted(
            (t for t, _ in self.d.abm_tokens.values() if t.tenant_id == tenant_id), key=lambda t: t.name
        )

    def credentials(self, token_id: str) -> ServerToken | None:
        found = self.d.abm_tokens.get(token_id)
        return None if found is None else found[1]

    def remove_token(self, tenant_id: str, token_id: str) -> bool:
        found = self.d.abm_tokens.get(token_id)
        return (
            found is not None and found[0].tenant_id == tenant_id and self.tx.pop(self.d.abm_tokens, token_id)
        )

    def _token_change(self, token_id: str, **values: object) -> None:
        found = self.d.abm_tokens.get(token_id)
        if found is not None:
            self.tx.put(self.d.abm_tokens, token_id, (dataclasses.replace(found[0], **values), found[1]))  # type: ignore[arg-type]

    def sync_done(self, token_id: str, cursor: str, at: datetime, *, full: bool) -> None:
        values: dict[str, object] = {"cursor": cursor, "last_sync_at": at, "last_error": None}
        if full:
            values["last_full_sync_at"] = at
        self._token_change(token_id, **values)

    def sync_failed(self, token_id: str, reason: str, at: datetime) -> None:
        values: dict[str, object] = {"last_error": reason, "last_error_at": at}
        if reason == "DEP_CURSOR_EXPIRED":
            values["cursor"] = None
        self._token_change(token_id, **values)

    def upsert_devices(
        self, tenant_id: str, token_id: str, devices: Sequence[AbmDevice], at: datetime
    ) -> AbmUpsert:
        latest = {d.serial_number: d for d in devices}
        added = modified = deleted = unchanged = 0
        for serial, d in latest.items():
            gone = d.op_type == "deleted"
            old = self.d.abm_devices.get((tenant_id, serial))
            if gone and old is not None:
                d = dataclasses.replace(old.device, op_type="deleted", op_date=d.op_date)
            elif not d.op_type and old is not None and not old.deleted:  # a full fetch has no operation
                d = dataclasses.replace(d, op_type=old.device.op_type, op_date=old.device.op_date)
            if old is not None and old.deleted == gone and old.device == d:
                unchanged += 1
                continue
            first = at if old is None else old.first_seen_at
            self.tx.put(
                self.d.abm_devices,
                (tenant_id, serial),
                AbmDeviceRecord(tenant_id, token_id, d, gone, first, at),
            )
            if gone:
                deleted += 1
            elif old is None or old.deleted:
                added += 1
            else:
                modified += 1
            op = d.op_type or ("added" if old is None or old.deleted else "modified")
            entry = AbmHistoryEntry(
                at,
                op,
                d.op_date,
                d.profile_status,
                d.profile_uuid,
                d.profile_assign_time,
                d.profile_push_time,
                d.device_assigned_by,
                token_id,
            )
            self.tx.put(self.d.abm_history, self.tx.next_id("abm_history"), (tenant_id, serial, entry))
        return AbmUpsert(added, modified, deleted, unchanged)

    def devices(
        self, tenant_id: str, *, serial: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[AbmDeviceRecord]:
        rows = sorted(
            (r for (t, s), r in self.d.abm_devices.items() if t == tenant_id and serial in (None, s)),
            key=lambda r: r.device.serial_number,
        )
        return _page(rows, limit, offset)

    def device_count(self, tenant_id: str, *, deleted: bool = False) -> int:
        return sum(1 for (t, _), r in self.d.abm_devices.items() if t == tenant_id and r.deleted == deleted)

    def listed_serials(self, tenant_id: str, token_id: str) -> set[str]:
        return {
            s
            for (t, s), r in self.d.abm_devices.items()
            if t == tenant_id and r.token_id == token_id and not r.deleted
        }

    def history(
        self,
        tenant_id: str,
        serial: str,
        *,
        limit: int = 200,
        newest: bool = False,
        until: datetime | None = None,
    ) -> list[AbmHistoryEntry]:
        found = [
            e
            for _, (t, s, e) in sorted(self.d.abm_history.items())
            if (t, s) == (tenant_id, serial) and (until is None or e.at < until)
        ]
        return found[-limit:] if newest else found[:limit]

    def add_history(self, tenant_id: str, entries: Sequence[tuple[str, AbmHistoryEntry]]) -> None:
        for serial, entry in entries:
            self.tx.put(self.d.abm_history, self.tx.next_id("abm_history"), (tenant_id, serial, entry))

    def flagged(
        self, tenant_id: str, reason: str, *, serial: str | None = None
    ) -> list[tuple[str, datetime]]:
        latest: dict[str, AbmHistoryEntry] = {}
        for _, (t, s, e) in sorted(self.d.abm_history.items()):
            if t == tenant_id and serial in (None, s):
                latest[s] = e
        return sorted((s, e.at) for s, e in latest.items() if e.reason == reason)

    def profile_states(self, tenant_id: str, token_id: str) -> list[tuple[str, str, str]]:
        return [
            (s, r.device.profile_uuid, r.device.profile_status)
            for (t, s), r in self.d.abm_devices.items()
            if t == tenant_id and r.token_id == token_id and not r.deleted
        ]

    def save_profile(self, profile: AbmProfileRecord) -> None:
        if any(
            p.tenant_id == profile.tenant_id and p.name == profile.name and p.id != profile.id
            for p in self.d.abm_profiles.values()
        ):
            raise _conflict(f"ADE profile {profile.name}")
        self.tx.put(self.d.abm_profiles, profile.id, dataclasses.replace(profile, definitions={}))

    def profiles(self, tenant_id: str) -> list[AbmProfileRecord]:
        return [
            dataclasses.replace(
                p, definitions={t: u for (pid, t), u in self.d.abm_definitions.items() if pid == p.id}
            )
            for p in sorted(self.d.abm_profiles.values(), key=lambda p: p.name)
            if p.tenant_id == tenant_id
        ]

    def clear_default(self, tenant_id: str, token_id: str | None, keep: str) -> None:
        for p in list(self.d.abm_profiles.values()):
            if p.tenant_id == tenant_id and p.token_id == token_id and p.id != keep and p.is_default:
                self.tx.put(self.d.abm_profiles, p.id, dataclasses.replace(p, is_default=False))

    def set_definition(self, profile_id: str, token_id: str, profile_uuid: str, at: datetime) -> None:
        self.tx.put(self.d.abm_definitions, (profile_id, token_id), profile_uuid)

    def drop_definitions(self, profile_id: str, token_id: str | None = None) -> None:
        for pid, t in list(self.d.abm_definitions):
            if pid == profile_id and token_id in (None, t):
                self.tx.pop(self.d.abm_definitions, (pid, t))

    def assignments(self, tenant_id: str) -> dict[str, AbmAssignment]:
        return {s: a for (t, s), a in self.d.abm_assignments.items() if t == tenant_id}

    def assignment(self, tenant_id: str, serial: str) -> AbmAssignment | None:
        return self.d.abm_assignments.get((tenant_id, serial))

    def save_assignments(self, tenant_id: str, assignments: Sequence[AbmAssignment]) -> None:
        for a in assignments:
            if a.tenant_id == tenant_id:
                self.tx.put(self.d.abm_assignments, (tenant_id, a.serial_number), a)

    def add_rule(self, rule: AbmAssignmentRule) -> None:
        self.tx.put(self.d.abm_rules, rule.id, rule)

    def rules(self, tenant_id: str) -> list[AbmAssignmentRule]:
        return sorted(
            (r for r in self.d.abm_rules.values() if r.tenant_id == tenant_id),
            key=lambda r: (r.priority, r.created_at, r.id),
        )

    def remove_rule(self, tenant_id: str, rule_id: str) -> bool:
        found = self.d.abm_rules.get(rule_id)
        return bool(
            found is not None and found.tenant_id == tenant_id and self.tx.pop(self.d.abm_rules, rule_id)
        )

    def device_facts(self, tenant_id: str, token_id: str) -> dict[str, dict[str, str]]:
        return {
            s: {c: str(getattr(r.device, c, "") or "") for c in RULE_FIELDS}
            for (t, s), r in self.d.abm_devices.items()
            if t == tenant_id and r.token_id == token_id and not r.deleted
        }


class MemoryUnitOfWork:
    """The memory stores over one transaction."""

    def __init__(self, tx: _Tx) -> None:
        self.tenants = MemoryTenantStore(tx)
        self.api_tokens = MemoryApiTokenStore(tx)
        self.users = MemoryUserStore(tx)
        self.enrollment_tokens = MemoryEnrollmentTokenStore(tx)
        self.certs = MemoryCertStore(tx)
        self.devices = MemoryDeviceStore(tx)
        self.enrollments = MemoryEnrollmentStore(tx)
        self.commands = MemoryCommandQueue(tx)
        self.events = MemoryEventLog(tx)
        self.history = MemoryHistoryStore(tx)
        self.groups = MemoryGroupStore(tx)
        self.restrictions = MemoryRestrictionStore(tx)
        self.corporate = MemoryCorporateStore(tx)
        self.blocks = MemoryBlockStore(tx)
        self.pushes = MemoryPushQueue(tx)
        self.reachability = MemoryPushReachability(tx)
        self.push_certs = MemoryPushCertStore(tx)
        self.reenrollments = MemoryReEnrollmentStore(tx)
        self.webhooks = MemoryWebhookStore(tx)
        self.health = MemoryHealthStore(tx)
        self.portal_sessions = MemoryPortalSessionStore(tx)
        self.admins = MemoryAdminStore(tx)
        self.console_sessions = MemoryConsoleSessionStore(tx)
        self.audit = MemoryAuditLog(tx)
        self.device_listing = MemoryDeviceListing(tx)
        self.user_listing = MemoryUserListing(tx)
        self.abm_listing = MemoryAbmListing(tx)
        self.report_listing = MemoryReportListing(tx)
        self.abm = MemoryAbmStore(tx)
        self.abm_view = self.abm  # the same store, without its secrets (ports.AbmView)


class MemoryDatabase:
    """:class:`pomona.ports.Database` in memory: what a test wires a service to instead of SQL."""

    def __init__(self) -> None:
        self._data = _Data()
        self._lock = threading.RLock()

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[MemoryUnitOfWork]:
        with self._lock:
            tx = _Tx(self._data)
            try:
                yield MemoryUnitOfWork(tx)
            except BaseException:
                tx.rollback()
                raise

    def channel_state(self, fingerprint: str, *, skip_not_now: bool) -> ChannelState | None:
        with self._lock:
            d = self._data
            for e in d.enrollments.values():
                device = d.devices.get(e.device_id)
                if e.cert_fingerprint != fingerprint or e.status is not _ACTIVE or device is None:
                    continue
                nxt = _next_command(d, e.id, skip_not_now=skip_not_now)
                return ChannelState(
                    e.id,
                    e.tenant_id,
                    e.udid,
                    e.device_id,
                    device.last_seen_at,
                    None if nxt is None else nxt.id,
                    None if nxt is None else nxt.body,
                )
        return None

    def take_command(self, command_id: int, enrollment_id: str, device_id: str | None, at: datetime) -> bool:
        return store_take(self, command_id, enrollment_id, device_id, at)

    def command_channel(self) -> ChannelContext:
        return store_channel(self)

    def settings_get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.settings.get(key)

    def settings_put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data.settings[key] = value

    def settings_add(self, key: str, value: bytes) -> bytes:
        with self._lock:
            return self._data.settings.setdefault(key, value)

    # --- state shared between processes (ports.Leases, ports.SharedLimits) -------------------------
    def lease_acquire(self, name: str, holder: str, now: datetime, ttl: float) -> bool:
        t = now.timestamp()
        with self._lock:
            found = self._data.leases.get(name)
            if found is not None and found[0] != holder and found[1] > t:
                return False
            self._data.leases[name] = (holder, t + ttl)
            return True

    def lease_release(self, name: str, holder: str) -> None:
        with self._lock:
            if self._data.leases.get(name, ("", 0.0))[0] == holder:
                del self._data.leases[name]

    def lease_holder(self, name: str, now: datetime) -> str | None:
        with self._lock:
            found = self._data.leases.get(name)
        return found[0] if found is not None and found[1] > now.timestamp() else None

    def limit_hits(self, key: str, now: datetime, window: float) -> tuple[int, datetime] | None:
        with self._lock:
            found = self._data.rate_limits.get(key)
        if found is None or found[1] <= now.timestamp() - window:
            return None
        return found[0], datetime.fromtimestamp(found[1], UTC)

    def limit_fail(self, key: str, now: datetime, window: float, limit: int) -> None:
        t = now.timestamp()
        with self._lock:
            hits, start = self._data.rate_limits.get(key, (0, t))
            if start <= t - window:
                hits, start = 0, t
            elif hits >= limit:
                start = t
            self._data.rate_limits[key] = (hits + 1, start)

    def limit_reset(self, key: str) -> None:
        with self._lock:
            self._data.rate_limits.pop(key, None)

    def limit_purge(self, before: datetime) -> int:
        with self._lock:
            old = [k for k, (_, start) in self._data.rate_limits.items() if start < before.timestamp()]
            for k in old:
                del self._data.rate_limits[k]
        return len(old)

    def totp_claim(self, user_id: str, step: int) -> bool:
        with self._lock:
            if self._data.totp_steps.get(user_id, -1) >= step:
                return False
            self._data.totp_steps[user_id] = step
            return True

    def dispose(self) -> None:
        """Nothing to release (the SQL database's counterpart closes its engine)."""


def _satisfies_the_port(db: MemoryDatabase) -> Database:
    """Never called: mypy checks here that MemoryDatabase is a :class:`pomona.ports.Database`."""
    return db


def _shares_state(db: MemoryDatabase) -> tuple[Leases, SharedLimits]:
    """Never called: mypy checks here that MemoryDatabase has the shared-state ports."""
    return db, db
