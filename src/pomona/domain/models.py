"""Plain domain records. Storage returns these; services and adapters read them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"  # authenticated; commands flow
    REMOVED = "removed"  # CheckOut received (the user removed the profile) or the device was erased
    REPLACED = "replaced"  # the same device authenticated again with a new identity
    RETIRED = "retired"  # an admin, or the user in the portal, retired the record
    BLOCKED = "blocked"  # an admin blocked the device


class EnrollmentType(StrEnum):
    BYOD = "byod"
    CORPORATE = "corporate"
    ADE = "ade"
    ACCOUNT_DRIVEN = "account_driven"
    DEM = "dem"


class CommandStatus(StrEnum):
    QUEUED = "Queued"
    SENT = "Sent"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    NOT_NOW = "NotNow"
    CANCELLED = "Cancelled"


class Step(StrEnum):
    """The enrollment and management steps that leave events."""

    PORTAL = "portal"
    PROFILE = "profile"
    SCEP = "scep"
    AUTHENTICATE = "authenticate"
    TOKENUPDATE = "tokenupdate"
    CHECKOUT = "checkout"
    CHECKIN = "checkin"  # the other check-in messages (UserAuthenticate, bootstrap tokens, unknown types)
    COMMAND = "command"
    ADMIN = "admin"
    PUSH = "push"
    DEP = "dep"  # Apple Business Manager: token upload, sync, profile assignment
    ADE = "ade"  # the ADE enrollment endpoint: MachineInfo, Setup Assistant sign-in, the profile


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"


def tenant_id_of(ref: str) -> str | None:
    """The tenant id a reference is, if it has the form of one (a UUID, in any of the spellings
    ``uuid.UUID`` reads), in the stored form; None for a reference that can only be a name.

    Tenant names never have this form (``AdminService.create_tenant`` refuses them, migration 0008 renamed
    older ones), so a reference names one tenant, by its id or by its name, never both."""
    try:
        return str(uuid.UUID(ref.strip()))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as every reader sees it (and caches it). No private key is here: the device CA's key is read
    by the code that signs (``TenantStore.ca_keypair``), the push key by the push gateway
    (``PushCertStore.credentials``)."""

    id: str
    name: str
    domain: str
    created_at: datetime
    ca_cert_pem: bytes
    push_cert_pem: bytes | None = None
    push_topic: str | None = None
    push_not_after: datetime | None = None
    mdm_authority: str | None = None
    licence_seats: int = 0
    policy_version: int = 0


# A user principal name: one "@", a non-empty name, and a domain with a dot inside it, no white space or
# control character, at most MAX_UPN characters (an e-mail address's limit). Checked without a regular
# expression: the pattern it replaces backtracked quadratically on a long name (64 KB took 19 s).
MAX_UPN = 254


def is_upn(text: str) -> bool:
    """Whether ``text`` is a well-formed UPN (name@domain.tld)."""
    if not text or len(text) > MAX_UPN or not text.isprintable() or any(c.isspace() for c in text):
        return False
    name, at, domain = text.partition("@")
    return bool(at) and bool(name) and "@" not in domain and "." in domain[1:-1]


@dataclass(frozen=True, slots=True)
class User:
    id: str
    tenant_id: str
    upn: str
    email: str
    display_name: str
    enabled: bool = True
    password_hash: str | None = None
    created_at: datetime | None = None
    licensed: bool = False
    mfa_required: bool = False
    totp_secret: str | None = None
    is_dem: bool = False


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    id: str
    tenant_id: str
    user_id: str | None
    expires_at: datetime
    uses_allowed: int
    uses_count: int
    created_at: datetime
    revoked: bool = False
    ade_serial: str | None = None  # an ADE challenge: the serial whose verified MachineInfo it answered

    def remaining(self) -> int:
        return max(0, self.uses_allowed - self.uses_count)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A device identity certificate issued through SCEP, and what it was issued for."""

    fingerprint: str  # sha256 hex of the DER
    tenant_id: str
    serial: str
    token_id: str | None
    user_id: str | None
    not_after: datetime
    issued_at: datetime
    enrollment_id: str | None = None
    ade_serial: str | None = None  # issued for an ADE challenge: Authenticate must name this serial


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    tenant_id: str
    udid: str
    serial: str | None
    product_name: str | None = None
    model: str | None = None
    model_name: str | None = None
    device_name: str | None = None
    os_version: str | None = None
    build_version: str | None = None
    imei: str | None = None
    meid: str | None = None
    capacity_gb: float | None = None
    battery_level: float | None = None
    last_seen_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Enrollment:
    id: str
    tenant_id: str
    device_id: str
    udid: str
    user_id: str | None
    status: EnrollmentStatus
    type: EnrollmentType
    cert_fingerprint: str
    topic: str
    started_at: datetime
    push_token: bytes | None = None
    push_magic: str | None = None
    unlock_token: bytes | None = None
    awaiting_configuration: bool = False
    token_updated_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    id: int
    tenant_id: str
    command_uuid: str
    enrollment_id: str
    device_id: str
    request_type: str
    body: bytes  # the command plist as sent to the device
    status: CommandStatus
    created_at: datetime
    sent_at: datetime | None = None
    result_at: datetime | None = None
    result: bytes | None = None  # the device's raw report plist
    error_chain: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Event:
    tenant_id: str
    at: datetime
    step: Step
    outcome: Outcome
    reason: str | None = None
    user_id: str | None = None
    upn: str | None = None
    serial: str | None = None
    udid: str | None = None
    enrollment_id: str | None = None
    request_id: str | None = None
    detail: dict[str, object] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    tenant_id: str | None  # None: a server-wide admin token
    name: str
    created_at: datetime
    expires_at: datetime | None = None  # None: no expiry
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None  # the last admin API request it authenticated (to the minute)


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    tenant_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CorporateIdentifier:
    id: str
    tenant_id: str
    kind: str  # serial | imei
    value: str
    description: str | None
    state: str  # not_contacted | enrolled | failed
    last_contact_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BlockedDevice:
    id: str
    tenant_id: str
    kind: str  # serial | udid
    value: str
    note: str | None
    created_at: datetime
