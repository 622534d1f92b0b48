"""The contracts services need. Storage, the CA, push and ABM implement them; app.py wires them.

Stores are split by concern, as their consumers use them. All stores of one ``UnitOfWork`` share one
database transaction: a use case either commits everything it wrote or nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

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
    QueuedCommand,
    Tenant,
    User,
)


@dataclass(frozen=True, slots=True)
class ChannelState:
    """What the command channel needs to answer an idle device: read in one statement."""

    enrollment_id: str
    tenant_id: str
    udid: str
    device_id: str
    last_seen_at: datetime | None
    next_command_id: int | None
    next_command_body: bytes | None


class Clock(Protocol):
    def now(self) -> datetime: ...


class TenantStore(Protocol):
    def add(self, tenant: Tenant) -> None: ...
    def get(self, tenant_id: str) -> Tenant | None: ...
    def by_name(self, name: str) -> Tenant | None: ...
    def list(self) -> list[Tenant]: ...
    def set_push_cert(
        self, tenant_id: str, cert_pem: bytes, key_pem: bytes, topic: str, not_after: datetime
    ) -> None: ...
    def set_authority(self, tenant_id: str, authority: str) -> None: ...


class ApiTokenStore(Protocol):
    def add(self, token: ApiToken, token_hash: str) -> None: ...
    def by_hash(self, token_hash: str) -> ApiToken | None: ...


class UserStore(Protocol):
    def add(self, user: User) -> None: ...
    def get(self, tenant_id: str, user_id: str) -> User | None: ...
    def by_upn(self, tenant_id: str, upn: str) -> User | None: ...
    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[User]: ...


class EnrollmentTokenStore(Protocol):
    def add(self, token: EnrollmentToken, token_hash: str) -> None: ...
    def by_hash(self, token_hash: str) -> EnrollmentToken | None: ...
    def by_hash_for_update(self, token_hash: str) -> EnrollmentToken | None: ...
    def consume(self, token_id: str) -> None: ...


class CertStore(Protocol):
    def add(self, cert: IssuedCert) -> None: ...
    def get(self, fingerprint: str) -> IssuedCert | None: ...
    def bind(self, fingerprint: str, enrollment_id: str) -> None: ...


class DeviceStore(Protocol):
    def upsert(self, device: Device) -> Device: ...
    def by_udid(self, tenant_id: str, udid: str) -> Device | None: ...
    def get(self, tenant_id: str, device_id: str) -> Device | None: ...
    def by_serial(self, tenant_id: str, serial: str) -> list[Device]: ...
    def count(self, tenant_id: str) -> int: ...
    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[Device]: ...
    def update_inventory(self, tenant_id: str, device_id: str, fields: dict[str, object]) -> None: ...
    def touch(self, device_id: str, at: datetime) -> None: ...


class EnrollmentStore(Protocol):
    def add(self, enrollment: Enrollment) -> None: ...
    def get(self, tenant_id: str, enrollment_id: str) -> Enrollment | None: ...
    def active_for_udid(self, tenant_id: str, udid: str) -> Enrollment | None: ...
    def by_fingerprint(self, fingerprint: str) -> Enrollment | None: ...
    def active_by_fingerprint(self, fingerprint: str) -> tuple[Enrollment, datetime | None] | None: ...
    def for_device(self, tenant_id: str, device_id: str) -> list[Enrollment]: ...
    def end(self, enrollment_id: str, status: EnrollmentStatus, at: datetime) -> None: ...
    def update_token(
        self,
        enrollment_id: str,
        push_token: bytes,
        push_magic: str,
        unlock_token: bytes | None,
        awaiting_configuration: bool,
        at: datetime,
    ) -> None: ...
    def set_type(self, enrollment_id: str, type_: EnrollmentType) -> None: ...


class CommandQueue(Protocol):
    def enqueue(self, command: QueuedCommand) -> QueuedCommand: ...
    def next_for(self, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None: ...
    def mark_sent(self, command_id: int, at: datetime) -> None: ...
    def get_by_uuid(self, tenant_id: str, command_uuid: str) -> QueuedCommand | None: ...
    def record_result(
        self,
        enrollment_id: str,
        command_uuid: str,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> QueuedCommand | None: ...
    def cancel_pending(self, enrollment_id: str) -> int: ...
    def list_for_device(self, tenant_id: str, device_id: str, *, limit: int = 100) -> list[QueuedCommand]: ...


class EventLog(Protocol):
    def append(self, event: Event) -> None: ...
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
    ) -> list[Event]: ...


class UnitOfWork(Protocol):
    """One transaction over every store. ``with uow:`` commits on success and rolls back on error."""

    tenants: TenantStore
    api_tokens: ApiTokenStore
    users: UserStore
    enrollment_tokens: EnrollmentTokenStore
    certs: CertStore
    devices: DeviceStore
    enrollments: EnrollmentStore
    commands: CommandQueue
    events: EventLog

    def __enter__(self) -> UnitOfWork: ...
    def __exit__(self, *exc: object) -> None: ...


class Database(Protocol):
    def unit_of_work(self, *, readonly: bool = False) -> AbstractContextManager[UnitOfWork]: ...
    def channel_state(self, fingerprint: str, *, skip_not_now: bool) -> ChannelState | None: ...
    def settings_get(self, key: str) -> bytes | None: ...
    def settings_put(self, key: str, value: bytes) -> None: ...




class CertificateAuthority(Protocol):
    """A tenant's device CA (pki/ implements it)."""

    certificate: x509.Certificate

    def issue(self, public_key: CertificatePublicKeyTypes, subject: x509.Name, days: int = 365) -> x509.Certificate: ...
    def is_issuer_of(self, cert: x509.Certificate) -> bool: ...
    def to_pem(self) -> tuple[bytes, bytes]: ...


class Pki(Protocol):
    def new_ca(self, common_name: str, key_type: str) -> CertificateAuthority: ...
    def load_ca(self, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority: ...


class ProfileSigner(Protocol):
    """Signs .mobileconfig bytes with the server's signing identity (CMS SignedData, attached)."""

    def sign(self, content: bytes) -> bytes: ...
