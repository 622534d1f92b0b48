"""The contracts services need. Storage, the CA, push and ABM implement them; app.py wires them.

Stores are split by concern, as their consumers use them. All stores of one ``UnitOfWork`` share one
database transaction: a use case either commits everything it wrote or nothing.

Narrow ports, defined by their consumer (NanoMDM's ``storage.go``): no service receives the whole
``Database``. Each service module declares a Protocol naming exactly the stores its transactions use
(``class ReportStores(HasEvents, Protocol)`` with a read-only property per store) and receives a
``Transactions[ReportStores]`` (``ServiceBase[ReportStores]``); the few that need more of the database
add :class:`ChannelStates` or :class:`SettingsStore` to it. A store a service did not declare is a mypy
error, and a method that takes the caller's unit of work (``PolicyService.policy_input``) declares its
own Protocol, which every caller's includes. ``SqlDatabase`` and ``MemoryDatabase`` satisfy all of them
structurally: adding a store to a service is one line in its Protocol, and visible in review.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias, TypedDict, TypeVar, Unpack

if TYPE_CHECKING:  # in annotations only: the CLI's start-up does not load cryptography's x509
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pomona.domain.checks import Finding, RecordedFinding, UrlProbe
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
    QueuedCommand,
    Tenant,
    User,
)
from pomona.domain.policy import Restriction
from pomona.protocol.dep import AbmDevice, FetchPage, ServerToken
from pomona.protocol.errors import ProtocolError


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


class Resolver(Protocol):
    """DNS look-ups for diagnosis (net/dns.py implements it on dnspython)."""

    def cname(self, name: str) -> str | None: ...


class WellKnownFetcher(Protocol):
    """GET of https://<domain>/.well-known/com.apple.remotemanagement: (status, body) or raises OSError."""

    def fetch(self, url: str) -> tuple[int, bytes]: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class UrlProber(Protocol):
    """The public URL as a device sees it (net/probe.py): TLS, ``/healthz``, the server's clock."""

    def probe(self, url: str) -> UrlProbe: ...


class Metrics(Protocol):
    """What the server counts for ``/metrics`` (pomona/metrics.py implements it on prometheus-client).
    Every method is called on a request's path: an implementation must cost about a microsecond."""

    def request(self, route: str, method: str, status: int, seconds: float) -> None: ...
    def refusal(self, reason: str, step: str) -> None: ...
    def enrollment_completed(self) -> None: ...
    def checkin(self, channel: str, message_type: str) -> None: ...
    def push_outcome(self, outcome: str) -> None: ...
    def exposition(self) -> tuple[bytes, str]:
        """The text to answer a scrape with, and its content type."""
        ...


class NoMetrics:
    """Counts nothing: the services' default when nothing is measured (tests, the CLI)."""

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        pass

    def refusal(self, reason: str, step: str) -> None:
        pass

    def enrollment_completed(self) -> None:
        pass

    def checkin(self, channel: str, message_type: str) -> None:
        pass

    def push_outcome(self, outcome: str) -> None:
        pass

    def exposition(self) -> tuple[bytes, str]:
        return b"", "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class CaKeyPair:
    """A tenant device CA's certificate and private key (PEM), read only by the code that signs with the
    CA; a :class:`Tenant` carries the certificate alone, so no cached tenant holds the key."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


class TenantStore(Protocol):
    def add(self, tenant: Tenant, ca_key_pem: bytes) -> None: ...
    # The one read of the CA's private key: for the code that signs with the CA (SCEP), no other.
    def ca_keypair(self, tenant_id: str) -> CaKeyPair | None: ...
    # A P-256 CA's RSA SCEP RA (key sealed at rest), shared by every process: the first one kept wins.
    def scep_ra(self, tenant_id: str) -> CaKeyPair | None: ...
    def keep_scep_ra(self, tenant_id: str, ra: CaKeyPair) -> None: ...  # only where none is kept yet
    def get(self, tenant_id: str) -> Tenant | None: ...
    def by_name(self, name: str) -> Tenant | None: ...
    def list(self) -> list[Tenant]: ...
    def set_push_cert(
        self, tenant_id: str, cert_pem: bytes, key_pem: bytes, topic: str, not_after: datetime
    ) -> None: ...
    def set_authority(self, tenant_id: str, authority: str) -> None: ...
    def set_seats(self, tenant_id: str, seats: int) -> None: ...
    def bump_policy_version(self, tenant_id: str) -> None: ...


#: Why a portal session ended: signed out, the password changed, the user disabled or deleted.
SessionEnd = Literal["signout", "password", "user"]


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A signed-in portal session, kept server-side; the browser's cookie carries only its random id
    (the store keeps the id's hash). ``stamp`` is a digest of the user's password hash at sign-in: a
    changed password ends the session."""

    tenant_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    stamp: str
    revoked_at: datetime | None = None
    revoked_why: SessionEnd | None = None


class PortalSessionStore(Protocol):
    def add(self, id_hash: str, session: PortalSession) -> None: ...
    def get(self, id_hash: str) -> PortalSession | None: ...
    def revoke(self, id_hash: str, at: datetime, why: SessionEnd) -> None: ...
    def revoke_user(self, tenant_id: str, user_id: str, at: datetime, why: SessionEnd) -> int: ...
    def purge(self, tenant_id: str, user_id: str, before: datetime) -> None: ...  # expired before


# --- the console (issue 13): admin accounts, their sessions, the audit log, the device list -------
#: Who an admin account is: the server operator (every tenant), a tenant's admin, or its helpdesk.
AdminRole = Literal["operator", "admin", "helpdesk"]


@dataclass(frozen=True, slots=True)
class AdminAccount:
    """A console account. ``tenant_id`` is None for an operator, a tenant's id otherwise; the email is
    kept lower-case and is unique server-wide."""

    id: str
    email: str
    role: AdminRole
    tenant_id: str | None
    password_hash: str
    created_at: datetime
    enabled: bool = True
    totp_secret: str | None = None
    last_sign_in_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session, kept server-side as a portal session is (PortalSession): the cookie
    carries a random id, the store its hash; ``stamp`` ends it at a password change."""

    admin_id: str
    created_at: datetime
    expires_at: datetime
    stamp: str
    revoked_at: datetime | None = None
    revoked_why: SessionEnd | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change made by an admin: who, in which tenant (None: server-wide), what, to what, when, and
    from which address. ``id`` is given by the store."""

    at: datetime
    actor: str  # the admin's email, or "cli" for the pomona command
    action: str  # e.g. device.retire, admin.create
    tenant_id: str | None = None
    target: str | None = None
    source: str | None = None  # the client address, or "cli"
    detail: Mapping[str, object] = field(default_factory=dict)
    id: int | None = None


class AdminAccountStore(Protocol):
    def add(self, account: AdminAccount) -> None: ...  # ConflictError when the email is taken
    def get(self, admin_id: str) -> AdminAccount | None: ...
    def by_email(self, email: str) -> AdminAccount | None: ...
    def list(self) -> list[AdminAccount]: ...  # oldest first
    def update(self, account: AdminAccount) -> None: ...


class ConsoleSessionStore(Protocol):
    def add(self, id_hash: str, session: ConsoleSession) -> None: ...
    def get(self, id_hash: str) -> ConsoleSession | None: ...
    def revoke(self, id_hash: str, at: datetime, why: SessionEnd) -> None: ...
    def revoke_admin(self, admin_id: str, at: datetime, why: SessionEnd) -> int: ...
    def purge(self, admin_id: str, before: datetime) -> None: ...  # expired before


class AuditLog(Protocol):
    def append(self, entry: AuditEntry) -> None: ...
    # newest first; tenant_id None: every entry; before_id: the keyset cursor (entries older than it);
    # the filters: the actor (exact), the action (a prefix), the source (exact), at in [since, until)
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
    ) -> list[AuditEntry]: ...


#: How the console's device list sorts: by name, serial (both ascending) or last check-in (newest first).
DeviceSort = Literal["name", "serial", "last_seen"]


@dataclass(frozen=True, slots=True)
class DeviceCursor:
    """Where a page of the device list ends: the last row's sort value and id. Rows whose sort value is
    empty come after every other row (``empty``), by id."""

    value: str | datetime | None
    id: str
    empty: bool = False


#: A device's state on the console's list: "active" (an active enrollment), "awaiting" (that enrollment
#: waits for DeviceConfigured), "unresponsive" (its pushes unanswered since before a time), "retired" (no
#: active enrollment, one retired), "blocked" (its serial or UDID is blocked), "unenrolled" (no active one).
DeviceState = Literal["active", "awaiting", "unresponsive", "retired", "blocked", "unenrolled"]


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """The device list's filters, combined (AND); None is no filter. Ownership is "corporate" when the
    active enrollment is ADE or corporate, or the serial number or IMEI is a corporate identifier;
    "personal" otherwise. The enrollment type is the active enrollment's."""

    platform: Literal["ios", "ipados"] | None = None  # by the product name (iPhone/iPod, iPad)
    os_prefix: str | None = None  # "17" is 17 and every 17.x
    os_versions: tuple[str, ...] | None = None  # exactly these OS versions (an OS minimum, resolved)
    ownership: Literal["corporate", "personal"] | None = None
    enrollment_type: str | None = None
    state: DeviceState | None = None
    seen_before: datetime | None = None  # last check-in before this (or never)
    unresponsive_before: datetime | None = None  # "unresponsive": first unanswered push before this

    @property
    def empty(self) -> bool:
        return self == DeviceFilter()


class DeviceListing(Protocol):
    """The console's device list over a large tenant: keyset pages (no OFFSET), optionally filtered by
    a prefix of the name or serial number and by :class:`DeviceFilter`."""

    def page(
        self,
        tenant_id: str,
        *,
        sort: DeviceSort = "name",
        after: DeviceCursor | None = None,
        prefix: str | None = None,
        filters: DeviceFilter | None = None,
        limit: int = 50,
    ) -> list[Device]: ...
    def count(
        self, tenant_id: str, *, prefix: str | None = None, filters: DeviceFilter | None = None
    ) -> int: ...
    # the distinct OS versions of the tenant's devices (to resolve an OS minimum)
    def os_versions(self, tenant_id: str) -> list[str]: ...


class UserListing(Protocol):
    """The console's user list over a large tenant: keyset pages by UPN (no OFFSET), optionally the
    UPNs starting with a prefix, and the page's facts read for all its rows at once."""

    def page(
        self, tenant_id: str, *, after: str | None = None, prefix: str | None = None, limit: int = 50
    ) -> list[User]: ...
    def count(self, tenant_id: str, *, prefix: str | None = None) -> int: ...
    # user id -> how many active enrollments (users without any are left out)
    def device_counts(self, user_ids: Sequence[str]) -> dict[str, int]: ...
    # user id -> the names of its groups, sorted (users in no group are left out)
    def group_names(self, user_ids: Sequence[str]) -> dict[str, list[str]]: ...


@dataclass(frozen=True, slots=True)
class AdeProfileCount:
    """How many of a tenant's ABM devices Pomona wants an ADE profile on (``wanted``: explicit, by rule
    or adopted by the default), how many ABM shows with it (``held``: its UUID under the device's token,
    status assigned or pushed), and how many wanted ones ABM last refused (``failing``)."""

    wanted: int = 0
    held: int = 0
    failing: int = 0


@dataclass(frozen=True, slots=True)
class AdeProfileDevice:
    """A device an ADE profile applies to, on the profile's page: Apple's fields as the last sync left
    them (``model`` and ``profile_status`` empty when ABM does not list it yet), how Pomona wants the
    profile on it (``explicit``, ``rule``, ``default``; ``abm``: ABM shows it and Pomona wants nothing),
    whether ABM shows it (``held``), the reconciliation's last refusal, the enrolled device's id (the
    newest of that serial), and the serial's last ADE/ABM event (step dep or ade)."""

    serial: str
    model: str
    profile_status: str
    how: str  # explicit | rule | default | abm
    held: bool
    attempts: int = 0
    last_error: str | None = None
    device_id: str | None = None
    event_at: datetime | None = None
    event_step: str | None = None
    event_outcome: str | None = None
    event_reason: str | None = None


class AbmListing(Protocol):
    """The console's Apple settings page over a large tenant: per-profile device counts in a few
    aggregate reads (no row per device comes back), and one profile's devices a keyset page at a time."""

    def profile_counts(self, tenant_id: str) -> dict[str, AdeProfileCount]: ...  # profile id -> counts
    def profile_devices(
        self,
        tenant_id: str,
        profile_id: str,
        definitions: Mapping[str, str],
        *,
        after: str | None = None,
        limit: int = 50,
    ) -> list[AdeProfileDevice]:
        """The devices Pomona wants the profile on or ABM shows with it (its UUID per token in
        ``definitions``), by serial, those after ``after``, at most ``limit``."""
        ...


#: A failure roll-up row: (UTC day, reason, platform, enrollment type, step, count).
RollupRow: TypeAlias = tuple[str, str, str, str, str, int]


class ReportListing(Protocol):
    """The console's reports and dashboard chart over a large tenant: the failure roll-up's rows for a
    span of days (hundreds, whatever the event log holds) and the enrollments started per UTC day."""

    def failure_rows(self, tenant_id: str, since: datetime, until: datetime) -> list[RollupRow]: ...
    def enrollments_by_day(self, tenant_id: str, since: datetime, until: datetime) -> dict[str, int]: ...


class ApiTokenStore(Protocol):
    def add(self, token: ApiToken, token_hash: str) -> None: ...
    def by_hash(self, token_hash: str) -> ApiToken | None: ...
    def get(self, token_id: str) -> ApiToken | None: ...
    # tenant_id None: every token (server-wide and of every tenant), oldest first
    def list(self, tenant_id: str | None = None) -> list[ApiToken]: ...
    def revoke(self, token_id: str, at: datetime) -> None: ...
    # last_used_at = at, unless it is already later than ``since`` (at most one write per token a minute)
    def mark_used(self, token_id: str, at: datetime, *, since: datetime) -> None: ...


class UserStore(Protocol):
    def add(self, user: User) -> None: ...
    def get(self, tenant_id: str, user_id: str) -> User | None: ...
    def by_upn(self, tenant_id: str, upn: str) -> User | None: ...
    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[User]: ...
    def update(self, tenant_id: str, user_id: str, **fields: object) -> None: ...
    def delete(self, tenant_id: str, user_id: str) -> None: ...
    def licensed_count(self, tenant_id: str) -> int: ...
    def group_ids(self, user_id: str) -> set[str]: ...


class EnrollmentTokenStore(Protocol):
    def add(self, token: EnrollmentToken, token_hash: str) -> None: ...
    def by_hash(self, token_hash: str) -> EnrollmentToken | None: ...
    def by_hash_for_update(self, token_hash: str) -> EnrollmentToken | None: ...
    def consume(self, token_id: str) -> None: ...
    def get(self, tenant_id: str, token_id: str) -> EnrollmentToken | None: ...
    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[EnrollmentToken]: ...
    def revoke(self, token_id: str) -> None: ...


class CertStore(Protocol):
    def add(self, cert: IssuedCert) -> None: ...
    def get(self, fingerprint: str) -> IssuedCert | None: ...
    def bind(self, fingerprint: str, enrollment_id: str) -> None: ...


class DeviceStore(Protocol):
    def upsert(self, device: Device) -> Device: ...
    def by_udid(self, tenant_id: str, udid: str) -> Device | None: ...
    def get(self, tenant_id: str, device_id: str) -> Device | None: ...
    def by_serial(self, tenant_id: str, serial: str) -> list[Device]: ...
    def by_ids(self, tenant_id: str, ids: Sequence[str]) -> dict[str, Device]: ...
    def by_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Device]: ...
    def by_serials(self, tenant_id: str, serials: Sequence[str]) -> dict[str, list[Device]]: ...
    def count(self, tenant_id: str) -> int: ...
    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[Device]: ...
    def update_inventory(self, tenant_id: str, device_id: str, fields: dict[str, object]) -> None: ...
    def touch(self, device_id: str, at: datetime) -> None: ...


class EnrollmentStore(Protocol):
    def add(self, enrollment: Enrollment) -> None: ...
    def get(self, tenant_id: str, enrollment_id: str) -> Enrollment | None: ...
    def active_for_udid(self, tenant_id: str, udid: str) -> Enrollment | None: ...
    def active_for_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Enrollment]: ...
    def by_fingerprint(self, fingerprint: str) -> Enrollment | None: ...
    def active_by_fingerprint(self, fingerprint: str) -> tuple[Enrollment, datetime | None] | None: ...
    def for_device(self, tenant_id: str, device_id: str) -> list[Enrollment]: ...
    def active_count_for_user(self, user_id: str) -> int: ...
    def active_for_user(self, user_id: str) -> list[Enrollment]: ...
    def active_for_device(self, tenant_id: str, udid: str | None, serial: str | None) -> list[Enrollment]: ...
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
    def set_awaiting_configuration(self, enrollment_id: str, awaiting: bool) -> None:
        """The device left Setup Assistant (DeviceConfigured acknowledged): no longer awaiting."""
        ...


class CommandQueue(Protocol):
    def enqueue(self, command: QueuedCommand) -> QueuedCommand: ...
    def enqueue_many(self, commands: Sequence[QueuedCommand]) -> list[QueuedCommand]: ...
    def next_for(self, enrollment_id: str, *, skip_not_now: bool) -> QueuedCommand | None: ...
    def mark_sent(self, command_id: int, at: datetime) -> None: ...
    def take(self, command_id: int, enrollment_id: str, at: datetime) -> bool: ...
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
    def pending_count(self) -> int: ...
    def list_for_device(
        self, tenant_id: str, device_id: str, *, limit: int = 100, until: datetime | None = None
    ) -> list[QueuedCommand]: ...  # newest first; ``until``: only those created before it


class EventFilters(TypedDict, total=False):
    """What :meth:`EventLog.query` selects by (None: any): a UPN (any case), a device, a ReasonCode
    value, ``since <= at < until``; at most ``limit`` events (default 100), newest first. With
    ``after_id``: only the events of greater id, oldest first (to follow the log, `pomona events --follow`).
    ``serial`` (without ``udid``) selects the device's whole story: the events naming the serial, and those
    naming the UDID of a device the tenant knows by that serial (TokenUpdate, commands and pushes name
    the UDID only)."""

    upn: str | None
    serial: str | None
    udid: str | None
    reason: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    after_id: int | None


#: The detail fields an incident summary reads of each failure (its platform and enrollment type).
INCIDENT_DETAIL: Final = ("product", "user_agent", "platform", "type")


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What :meth:`EventLog.incident_facts` counts of the failed events with the given reasons and the
    attempts at the given steps (``since <= at < until``). ``failures``: per reason, (how many, the first
    and the last time). Users are non-empty UPNs, devices the UDID or else the serial (non-empty);
    ``attempting_*`` counts the union of the attempts' and the failures' sets. ``kinds``: each distinct
    (step, the failure's :data:`INCIDENT_DETAIL` fields in its detail, those not null). ``samples``: per reason,
    its ``sample`` oldest failures (of equal times, the greatest id first)."""

    failures: dict[str, tuple[int, datetime, datetime]] = field(default_factory=dict)
    failing_users: int = 0
    failing_devices: int = 0
    attempting_users: int = 0
    attempting_devices: int = 0
    kinds: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    samples: dict[str, list[Event]] = field(default_factory=dict)


class EventLog(Protocol):
    def append(self, event: Event) -> None: ...
    def query(self, tenant_id: str, **filters: Unpack[EventFilters]) -> list[Event]: ...
    def incident_facts(
        self,
        tenant_id: str,
        reasons: Sequence[str],
        steps: Sequence[str],
        since: datetime,
        until: datetime,
        sample: int = 10,
    ) -> IncidentFacts: ...
    def failure_report(
        self, tenant_id: str, since: datetime, until: datetime, group_by: str
    ) -> list[tuple[str, int]]: ...


class HistoryStore(Protocol):
    """Old history, deleted a bounded batch at a time (services/retention.py): a tenant's events older
    than ``before``, and its answered commands (Acknowledged, Error, CommandFormatError) whose result came
    before ``before``. A pending command (Queued, Sent, NotNow) is never counted or deleted. Each
    ``prune_*`` deletes at most ``limit`` rows and says how many it deleted; the ``old_*`` count."""

    def old_events(self, tenant_id: str, before: datetime) -> int: ...
    def old_commands(self, tenant_id: str, before: datetime) -> int: ...
    def prune_events(self, tenant_id: str, before: datetime, limit: int) -> int: ...
    def prune_commands(self, tenant_id: str, before: datetime, limit: int) -> int: ...


class GroupStore(Protocol):
    def add(self, group: Group) -> None: ...
    def by_name(self, tenant_id: str, name: str) -> Group | None: ...
    def list(self, tenant_id: str) -> list[Group]: ...
    def names(self, tenant_id: str, ids: set[str]) -> dict[str, str]: ...
    def add_member(self, group_id: str, user_id: str) -> bool: ...
    def remove_member(self, group_id: str, user_id: str) -> None: ...
    def member_count(self, group_id: str) -> int: ...


class RestrictionStore(Protocol):
    def add(self, r: Restriction, tenant_id: str, at: datetime) -> None: ...
    def update(self, restriction_id: str, at: datetime, **fields: object) -> None: ...
    def assign(self, restriction_id: str, group_id: str) -> None: ...
    def unassign(self, restriction_id: str, group_id: str) -> None: ...
    def delete(self, restriction_id: str) -> None: ...
    def list(self, tenant_id: str) -> list[Restriction]: ...


class CorporateStore(Protocol):
    def upsert_many(self, tenant_id: str, rows: list[CorporateIdentifier]) -> int: ...
    def get(self, tenant_id: str, kind: str, value: str) -> CorporateIdentifier | None: ...
    def match(self, tenant_id: str, serial: str | None, imei: str | None) -> CorporateIdentifier | None: ...
    def set_state(self, identifier_id: str, state: str, at: datetime) -> None: ...
    def list(self, tenant_id: str, *, limit: int = 1000, offset: int = 0) -> list[CorporateIdentifier]: ...
    def delete(self, tenant_id: str, kind: str, value: str) -> bool: ...


class BlockStore(Protocol):
    def add(self, b: BlockedDevice) -> None: ...
    def remove(self, tenant_id: str, kind: str, value: str) -> bool: ...
    def is_blocked(self, tenant_id: str, *, serial: str | None = None, udid: str | None = None) -> bool: ...
    def list(self, tenant_id: str) -> list[BlockedDevice]: ...


class HealthStore(Protocol):
    def open_findings(self, tenant_id: str) -> list[RecordedFinding]: ...
    def record(self, tenant_id: str, found: Sequence[Finding], now: datetime) -> list[Finding]: ...
    def mark_notified(self, tenant_id: str, codes: list[tuple[str, str]], now: datetime) -> None: ...
    def stuck_awaiting(self, tenant_id: str, before: datetime) -> list[tuple[str, str, str | None, datetime]]:
        """(enrollment id, udid, serial, since) of each active enrollment awaiting configuration since
        before ``before`` (its TokenUpdate), at most 1000."""
        ...

    def unlicensed_users(self, tenant_id: str) -> int: ...
    def mfa_users(self, tenant_id: str) -> int: ...  # enabled users who must pass MFA


class PushKind(StrEnum):
    """Why a push-queue row exists: commands wait, or a certificate canary."""

    COMMAND = "command"
    CANARY = "canary"


class PushOutcome(StrEnum):
    """What APNs said about one push, reduced to what the worker does next (push/apns.py ``classify``)."""

    DELIVERED = "delivered"  # accepted: re-push with backoff while commands wait
    DEVICE_PERMANENT = "device_permanent"  # the token is dead (410, BadDeviceToken): stop until TokenUpdate
    TENANT_PERMANENT = "tenant_permanent"  # the certificate is refused: stop the tenant until it changes
    TRANSIENT = "transient"  # 429, 5xx, no connection: retry later, never lost


@dataclass(frozen=True, slots=True)
class PushJob:
    """A claimed queue row with what sending and recording need."""

    enrollment_id: str
    tenant_id: str
    kind: PushKind
    attempts: int
    failures: int
    first_pushed_at: datetime | None
    udid: str
    device_id: str
    status: str
    topic: str
    push_token: bytes | None
    push_magic: str | None
    token_invalid: bool
    reenroll_required: bool
    tenant_topic: str | None
    tenant_cert_invalid: bool
    tenant_not_after: datetime | None
    has_pending: bool
    last_seen_at: datetime | None
    first_unanswered_push_at: datetime | None


@dataclass(frozen=True, slots=True)
class PushReschedule:
    """A claimed row released with a new due time (the worker's backoff)."""

    enrollment_id: str
    due_at: datetime
    attempts: int
    failures: int
    first_pushed_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PushAttempt:
    """A push sent to an enrollment and what APNs said (``status``: delivered or a ReasonCode value)."""

    enrollment_id: str
    at: datetime
    status: str
    first_unanswered_push_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenRefusal:
    """APNs refused an enrollment's token for good: no more pushes until a new TokenUpdate."""

    enrollment_id: str
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Reachability:
    enrollment_id: str
    device_id: str
    udid: str
    serial: str | None
    last_push_at: datetime | None
    last_push_status: str | None
    last_seen_at: datetime | None
    first_unanswered_push_at: datetime | None
    push_token_invalid_reason: str | None


@dataclass(frozen=True, slots=True)
class PushCertState:
    """A tenant's push-certificate lifecycle beside the certificate itself (on :class:`Tenant`)."""

    invalid_at: datetime | None = None  # APNs refused the certificate: no pushes until it changes
    invalid_reason: str | None = None
    apple_id: str | None = None  # who owns it in Apple's portal
    updated_at: datetime | None = None
    pending_key: bytes | None = None  # the sealed key of a CSR made here, waiting for its certificate


@dataclass(frozen=True, slots=True)
class PushCredentials:
    """What the push client needs for a topic: the tenant's certificate and key (sealed, or PEM)."""

    tenant_id: str
    cert_pem: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class ReEnrollment:
    """An enrollment cut off by a replaced push certificate (another topic): it must re-enroll."""

    enrollment_id: str
    udid: str
    serial: str | None
    topic: str
    since: datetime | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One POST of findings to a tenant's webhook, as recorded."""

    tenant_id: str
    at: datetime
    url: str
    codes: str
    attempts: int
    status: str  # delivered | failed
    http_status: int | None
    error: str | None
    id: int | None = None


class PushQueue(Protocol):
    """The durable push queue, one row per enrollment (storage/push_sql.py): the push worker claims rows
    under a lease, commands and TokenUpdate request pushes."""

    def request(
        self, tenant_id: str, enrollment_ids: Iterable[str], now: datetime, kind: PushKind = PushKind.COMMAND
    ) -> None: ...
    def token_updated(self, enrollment_id: str, tenant_id: str, now: datetime) -> None: ...
    def claim(self, now: datetime, lease_until: datetime, claimed_by: str, limit: int) -> list[PushJob]: ...
    def reschedule(self, claimed_by: str, rows: Sequence[PushReschedule]) -> None: ...
    def drop(self, claimed_by: str, enrollment_ids: Sequence[str]) -> None: ...
    def queue_size(self, tenant_id: str | None = None) -> int: ...


class PushReachabilityStore(Protocol):
    """Per-enrollment push state: the last push and its answer, dead tokens, silent devices."""

    def record_pushes(self, rows: Sequence[PushAttempt]) -> None: ...
    def mark_token_invalid(self, rows: Sequence[TokenRefusal]) -> None: ...
    def reachability(self, tenant_id: str, *, limit: int = 1000) -> list[Reachability]: ...
    def unanswered(
        self, tenant_id: str, before: datetime, enrollment_ids: Sequence[str] | None = None
    ) -> list[Reachability]: ...
    def pick_canary(
        self, tenant_id: str, topic: str, count: int, seen_before: datetime
    ) -> list[tuple[str, str]]: ...
    def seen_since(self, device_ids: Sequence[str]) -> dict[str, datetime | None]: ...
    def last_pushes(self, enrollment_ids: Sequence[str]) -> dict[str, tuple[datetime | None, str | None]]: ...


class PushCertStore(Protocol):
    """The tenant's push-certificate lifecycle state, and the credentials the push client reads."""

    def credentials(self, topic: str) -> PushCredentials | None: ...
    def cert_state(self, tenant_id: str) -> PushCertState: ...
    def set_cert_invalid(self, tenant_id: str, at: datetime, reason: str) -> bool: ...
    def set_pending_key(self, tenant_id: str, sealed: bytes | None) -> None: ...
    def cert_changed(self, tenant_id: str, at: datetime, apple_id: str | None) -> None: ...


class ReEnrollmentStore(Protocol):
    """Enrollments on a push topic, and those a certificate replacement cut off."""

    def active_on_topic(self, tenant_id: str, topic: str) -> int: ...
    def mark_reenroll_required(self, tenant_id: str, old_topic: str, at: datetime) -> int: ...
    def reenroll_required(self, tenant_id: str, *, limit: int = 1000) -> tuple[int, list[ReEnrollment]]: ...


class WebhookStore(Protocol):
    """A tenant's webhook (its secret sealed) and the record of deliveries to it."""

    def set_webhook(self, tenant_id: str, url: str, sealed_secret: bytes, at: datetime) -> None: ...
    def webhook(self, tenant_id: str) -> tuple[str, bytes] | None: ...
    def record_delivery(self, delivery: WebhookDelivery) -> None: ...
    def deliveries(self, tenant_id: str, *, limit: int = 50) -> list[WebhookDelivery]: ...


# --- Apple Business Manager ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AbmTokenInfo:
    """One uploaded ABM server token, without its secrets (those are read by :meth:`AbmStore.credentials`)."""

    id: str
    tenant_id: str
    name: str
    consumer_key: str
    access_token_expiry: datetime
    created_at: datetime
    cursor: str | None = None
    last_sync_at: datetime | None = None
    last_full_sync_at: datetime | None = None
    last_error: str | None = None  # the reason code of the last failed sync, cleared by a good one
    last_error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AbmDeviceRecord:
    """A device as the last sync left it: Apple's fields, and whether ABM deleted it (kept as history)."""

    tenant_id: str
    token_id: str
    device: AbmDevice
    deleted: bool
    first_seen_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AbmHistoryEntry:
    """One step of a device's ABM timeline: what a sync saw change (added, modified, deleted)."""

    at: datetime  # when Pomona saw it
    op_type: str  # added | modified | deleted | seen (a full fetch that found the device changed)
    op_date: datetime | None
    profile_status: str
    profile_uuid: str
    profile_assign_time: datetime | None
    profile_push_time: datetime | None
    device_assigned_by: str
    token_id: str
    reason: str | None = None  # a failed assignment: Apple's answer (FAILED, NOT_ACCESSIBLE) or a code

    def to_json(self) -> dict[str, object]:
        def iso(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {
            "at": self.at.isoformat(),
            "reason": self.reason,
            "op_type": self.op_type,
            "op_date": iso(self.op_date),
            "profile_status": self.profile_status,
            "profile_uuid": self.profile_uuid or None,
            "profile_assign_time": iso(self.profile_assign_time),
            "profile_push_time": iso(self.profile_push_time),
            "device_assigned_by": self.device_assigned_by or None,
            "token_id": self.token_id,
        }


@dataclass(frozen=True, slots=True)
class AbmUpsert:
    """What :meth:`AbmStore.upsert_devices` did to one page."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class AbmProfileRecord:
    """An ADE profile as kept: its settings (``domain.ade_profile.AdeProfile``'s fields as JSON, without
    the URLs, which the server's public URL gives), whether it is the default of its token (or of every
    token when ``token_id`` is None), and Apple's UUID of it under each token it was defined at."""

    id: str
    tenant_id: str
    name: str
    settings: Mapping[str, object]
    created_at: datetime
    updated_at: datetime
    token_id: str | None = None
    is_default: bool = False
    definitions: Mapping[str, str] = field(default_factory=dict)  # token id -> profile_uuid


@dataclass(frozen=True, slots=True)
class AbmAssignment:
    """The profile Pomona wants on a device, and the reconciliation's state: ``attempts`` counts the
    assignments since ABM last showed the device with it; the next one waits until ``next_try_at``."""

    tenant_id: str
    serial_number: str
    profile_id: str
    explicit: bool = True  # False: the token's default, adopted when the device came without a profile
    attempts: int = 0
    next_try_at: datetime | None = None
    last_try_at: datetime | None = None
    last_error: str | None = None
    rule_id: str | None = None  # not explicit: the assignment rule it came from (None: the default)


#: The device fields an assignment rule can match (Apple's names).
RULE_FIELDS: Final = ("model", "device_family", "order_number")


@dataclass(frozen=True, slots=True)
class AbmAssignmentRule:
    """ "Devices whose ``field`` matches ``value`` get this profile": ``value`` is a case-insensitive
    glob (``iPad*``); the rules are tried by ``priority`` (lowest first), then age."""

    id: str
    tenant_id: str
    profile_id: str
    field: str  # one of RULE_FIELDS
    value: str
    priority: int
    created_at: datetime


class AbmStore(Protocol):
    """The tenant's ABM key pair, server tokens (sealed), sync cursors, devices and their timelines; its
    ADE profiles, their UUIDs at ABM per token, and the assignment each device should have."""

    def set_keypair(self, tenant_id: str, cert_pem: bytes, key_pem: bytes, at: datetime) -> None: ...
    def keypair(self, tenant_id: str) -> tuple[bytes, bytes] | None: ...
    def add_token(self, info: AbmTokenInfo, credentials: ServerToken) -> None: ...
    def tokens(self, tenant_id: str) -> list[AbmTokenInfo]: ...
    def credentials(self, token_id: str) -> ServerToken | None: ...
    def remove_token(self, tenant_id: str, token_id: str) -> bool: ...
    def sync_done(self, token_id: str, cursor: str, at: datetime, *, full: bool) -> None: ...
    def sync_failed(self, token_id: str, reason: str, at: datetime) -> None: ...
    def upsert_devices(
        self, tenant_id: str, token_id: str, devices: Sequence[AbmDevice], at: datetime
    ) -> AbmUpsert: ...
    def devices(
        self, tenant_id: str, *, serial: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[AbmDeviceRecord]: ...
    def device_count(self, tenant_id: str, *, deleted: bool = False) -> int: ...
    def listed_serials(self, tenant_id: str, token_id: str) -> set[str]: ...  # not deleted
    def history(
        self,
        tenant_id: str,
        serial: str,
        *,
        limit: int = 200,
        newest: bool = False,
        until: datetime | None = None,
    ) -> list[AbmHistoryEntry]: ...  # oldest first: the first `limit` entries, or the last (newest=True)
    def add_history(self, tenant_id: str, entries: Sequence[tuple[str, AbmHistoryEntry]]) -> None:
        """Timeline entries not seen by a sync (assignments), (serial, entry) each, in one go."""
        ...

    def profile_states(self, tenant_id: str, token_id: str) -> list[tuple[str, str, str]]:
        """(serial, profile_uuid, profile_status) of each device the token lists (not deleted)."""
        ...

    def flagged(
        self, tenant_id: str, reason: str, *, serial: str | None = None
    ) -> list[tuple[str, datetime]]:
        """(serial, at) of each device whose latest timeline entry has this reason (a later entry, such
        as ABM listing the device again, clears it), by serial."""
        ...

    # ADE profiles
    def save_profile(self, profile: AbmProfileRecord) -> None: ...  # add or replace (not definitions)
    def profiles(self, tenant_id: str) -> list[AbmProfileRecord]: ...  # by name, with definitions
    def clear_default(self, tenant_id: str, token_id: str | None, keep: str) -> None: ...
    def set_definition(self, profile_id: str, token_id: str, profile_uuid: str, at: datetime) -> None: ...
    def drop_definitions(self, profile_id: str, token_id: str | None = None) -> None: ...
    # what each device should have
    def assignments(self, tenant_id: str) -> dict[str, AbmAssignment]: ...
    def assignment(self, tenant_id: str, serial: str) -> AbmAssignment | None: ...  # one device's
    def save_assignments(self, tenant_id: str, assignments: Sequence[AbmAssignment]) -> None:
        """Add or replace each (by serial), in one go."""
        ...

    # assignment rules (by model, device family, order number)
    def add_rule(self, rule: AbmAssignmentRule) -> None: ...
    def rules(self, tenant_id: str) -> list[AbmAssignmentRule]: ...  # by priority, then age
    def remove_rule(self, tenant_id: str, rule_id: str) -> bool: ...
    def device_facts(self, tenant_id: str, token_id: str) -> dict[str, dict[str, str]]:
        """serial -> {field: value} of RULE_FIELDS, for each device the token lists (not deleted)."""
        ...


class AbmView(Protocol):
    """The ABM store without its secrets (no key pair, no credentials), for diagnosis and health: the
    tokens' records, the devices as synced and their timelines, the ADE profiles and one device's
    assignment. The unit of work gives the same store under this narrower type (``uow.abm_view``)."""

    def tokens(self, tenant_id: str) -> list[AbmTokenInfo]: ...
    def devices(
        self, tenant_id: str, *, serial: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[AbmDeviceRecord]: ...
    def history(
        self,
        tenant_id: str,
        serial: str,
        *,
        limit: int = 200,
        newest: bool = False,
        until: datetime | None = None,
    ) -> list[AbmHistoryEntry]: ...  # oldest first: the first `limit` entries, or the last (newest=True)
    def profiles(self, tenant_id: str) -> list[AbmProfileRecord]: ...
    def assignment(self, tenant_id: str, serial: str) -> AbmAssignment | None: ...


class AbmClient(Protocol):
    """One ABM server token's session with Apple (net/abm.py over HTTP): each call authenticates as
    needed and raises the typed ``AbmError`` of Apple's answer (domain/errors.py)."""

    def account(self) -> dict[str, object]: ...
    def fetch_devices(self, cursor: str | None, limit: int) -> FetchPage: ...
    def sync_devices(self, cursor: str, limit: int) -> FetchPage: ...
    def define_profile(self, profile: Mapping[str, object]) -> str: ...
    def get_profile(self, profile_uuid: str) -> dict[str, object]: ...
    def assign_profile(self, profile_uuid: str, serials: Sequence[str]) -> dict[str, str]: ...
    def clear_profile(self, profile_uuid: str, serials: Sequence[str]) -> dict[str, str]: ...
    def disown(self, serials: Sequence[str]) -> dict[str, str]: ...
    def device_status(self, serials: Sequence[str]) -> dict[str, str]:
        """``POST /devices`` (device details): each serial's ``response_status`` (SUCCESS, or
        NOT_ACCESSIBLE for a device ABM does not give this server)."""
        ...


class AbmKeys(Protocol):
    """The ABM key pair and the server token's decryption (pki/abm.py): ``decrypt_token`` raises a
    ``ProtocolError`` (CmsError) for a ``.p7m`` the key does not open."""

    def make_keypair(self, common_name: str) -> tuple[bytes, bytes]: ...
    def decrypt_token(self, data: bytes, cert_pem: bytes, key_pem: bytes) -> bytes: ...


class AbmConnector(Protocol):
    """Opens an :class:`AbmClient` for one token's credentials (the base URL is the server's setting)."""

    def connect(self, credentials: ServerToken) -> AbmClient: ...


class UnitOfWork(Protocol):
    """One transaction over every store: ``with db.unit_of_work() as uow:`` commits on success and rolls
    back on error."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def api_tokens(self) -> ApiTokenStore: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def enrollment_tokens(self) -> EnrollmentTokenStore: ...
    @property
    def certs(self) -> CertStore: ...
    @property
    def devices(self) -> DeviceStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def events(self) -> EventLog: ...
    @property
    def history(self) -> HistoryStore: ...
    @property
    def groups(self) -> GroupStore: ...
    @property
    def restrictions(self) -> RestrictionStore: ...
    @property
    def corporate(self) -> CorporateStore: ...
    @property
    def blocks(self) -> BlockStore: ...
    @property
    def pushes(self) -> PushQueue: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...
    @property
    def push_certs(self) -> PushCertStore: ...
    @property
    def reenrollments(self) -> ReEnrollmentStore: ...
    @property
    def webhooks(self) -> WebhookStore: ...
    @property
    def health(self) -> HealthStore: ...
    @property
    def portal_sessions(self) -> PortalSessionStore: ...
    @property
    def admins(self) -> AdminAccountStore: ...
    @property
    def console_sessions(self) -> ConsoleSessionStore: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def device_listing(self) -> DeviceListing: ...
    @property
    def user_listing(self) -> UserListing: ...
    @property
    def abm_listing(self) -> AbmListing: ...
    @property
    def report_listing(self) -> ReportListing: ...
    @property
    def abm(self) -> AbmStore: ...
    @property
    def abm_view(self) -> AbmView: ...  # the same store, without its secrets


U_co = TypeVar("U_co", covariant=True)


class Transactions(Protocol[U_co]):
    """Opens units of work over the stores ``U_co`` names: a consumer's own Protocol of stores (a
    ``Database`` is ``Transactions`` of every such Protocol, as its ``UnitOfWork`` has every store)."""

    def unit_of_work(self, *, readonly: bool = False) -> AbstractContextManager[U_co]: ...


class ChannelStates(Protocol):
    """The command channel's hot read, outside any transaction (check-in only)."""

    def channel_state(self, fingerprint: str, *, skip_not_now: bool) -> ChannelState | None: ...


@dataclass(frozen=True, slots=True)
class ChannelEnrollment:
    """The active enrollment an identity is bound to, as much of it as a command result needs, with the
    device's last check-in."""

    id: str
    tenant_id: str
    udid: str
    device_id: str
    user_id: str | None
    awaiting_configuration: bool
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReportedCommand:
    """The queued command a device's report answers."""

    id: int
    enrollment_id: str
    command_uuid: str
    request_type: str


class ChannelTx(Protocol):
    """One transaction of the command channel (a device's result and its next command): the few reads
    and writes it makes, all committed together or not at all. SQL runs them on the raw driver
    (storage/hot_channel.py); storage/channel.py runs them over a unit of work's stores."""

    def bound(self, fingerprint: str) -> ChannelEnrollment | None:
        """The active enrollment bound to this identity, or None."""
        ...

    def command(self, enrollment: ChannelEnrollment, command_uuid: str) -> ReportedCommand | None:
        """The enrollment's command of this CommandUUID, or None."""
        ...

    def record_result(
        self,
        command: ReportedCommand,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> None: ...
    def append_event(self, event: Event) -> None:
        """Write an OK event (a failure's roll-up is the unit of work's)."""
        ...

    def next_command(self, enrollment_id: str, *, skip_not_now: bool) -> tuple[int, bytes] | None:
        """The oldest pending command: (id, body)."""
        ...

    def mark_sent(self, command_id: int, at: datetime) -> None: ...
    def touch(self, device_id: str, at: datetime) -> None: ...


class CommandChannel(ChannelStates, Protocol):
    """The command channel's hot path: the idle read, taking the command it named, and the transaction
    of a result (check-in only)."""

    def take_command(self, command_id: int, enrollment_id: str, device_id: str | None, at: datetime) -> bool:
        """Mark a command read by :meth:`channel_state` sent, if it is still pending and its enrollment
        still active, and the device seen at ``at`` (unless ``device_id`` is None), in one transaction:
        False when either changed meanwhile (nothing written)."""
        ...

    def command_channel(self) -> AbstractContextManager[ChannelTx]:
        """A write transaction of the command channel: committed when the block ends, rolled back when
        it raises."""
        ...


class Sealer(Protocol):
    """Secrets at rest (pki/sealing.py implements it with the server key): ``seal`` encrypts and binds the
    value to ``context`` (where it is stored, e.g. ``ca-key:<tenant id>``); ``open`` reverses it, or
    raises ``ServerKeyError`` (SERVER_KEY_MISMATCH) for a value this server's keys do not open."""

    def seal(self, plaintext: bytes, context: str) -> bytes: ...
    def open(self, sealed: bytes, context: str) -> bytes: ...
    def is_sealed(self, value: bytes) -> bool: ...
    def is_current(self, value: bytes) -> bool: ...


class SettingsStore(Protocol):
    """Server-wide values by key, each written in its own transaction (session secret, OIDC settings)."""

    def settings_get(self, key: str) -> bytes | None: ...
    def settings_put(self, key: str, value: bytes) -> None: ...
    def settings_add(self, key: str, value: bytes) -> bytes:
        """Store ``value`` unless the key has one; the stored value either way. Processes starting at
        once on one database all get the first writer's (a generated secret stays one secret)."""
        ...


class HasEvents(Protocol):
    """The least a service's stores include: every refusal leaves an event (``ServiceBase.record_failure``)."""

    @property
    def events(self) -> EventLog: ...


class Database(Transactions[UnitOfWork], CommandChannel, SettingsStore, Protocol):
    """The whole database, as a backend provides it. Only the composition root and the backends name
    it; consumers name the narrow parts they use."""


class CaCertificate(Protocol):
    """A tenant's device CA certificate, without its key: enough to check what the CA issued."""

    certificate: x509.Certificate

    def is_issuer_of(self, cert: x509.Certificate) -> bool: ...


class CertificateAuthority(CaCertificate, Protocol):
    """A tenant's device CA with its key (pki/ implements it): it signs."""

    def issue(
        self, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, subject: x509.Name, days: int = 365
    ) -> x509.Certificate: ...
    def to_pem(self) -> tuple[bytes, bytes]: ...


class Pki(Protocol):
    def new_ca(self, common_name: str, key_type: str) -> CertificateAuthority: ...
    def load_ca(self, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority: ...  # to sign
    def load_ca_certificate(self, cert_pem: bytes) -> CaCertificate: ...  # to verify, without the key


# --- SCEP (pki/scep.py implements it) ----------------------------------------------------------------
IssueIdentity: TypeAlias = (
    "Callable[[str | None, rsa.RSAPublicKey | ec.EllipticCurvePublicKey, x509.Name], x509.Certificate]"
)
"""(challenge password, public key, subject) -> the issued identity; raises a refusal to refuse."""


@dataclass(frozen=True, slots=True)
class ScepAnswer:
    """One SCEP HTTP answer, and the responder's own refusal (a wire-format fault) for the caller to
    record; refusals raised by the issuer are the issuer's to record."""

    status: int
    body: bytes
    content_type: str
    refused: ProtocolError | None = None


class ScepEndpoint(Protocol):
    def handle(self, method: str, query: Mapping[str, str], body: bytes) -> ScepAnswer: ...


class ScepResponders(Protocol):
    """Builds a tenant's SCEP endpoint over its CA; ``refusals`` are the exception types of ``issue``
    that refuse issuance (answered as CertRep FAILURE) rather than fail the request."""

    def responder(
        self,
        ca: CertificateAuthority,
        issue: IssueIdentity,
        refusals: tuple[type[Exception], ...],
        ra: CaKeyPair | None = None,
    ) -> ScepEndpoint: ...

    def new_ra(self, ca: CertificateAuthority) -> CaKeyPair | None:
        """A new RSA RA certificate and key issued by ``ca`` if its key is not RSA (else None)."""
        ...


# --- push delivery and the push certificate (issue 4) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class PushRequest:
    """One MDM wake-up: the device's token (raw bytes), its PushMagic and the tenant's topic."""

    token: bytes
    push_magic: str
    topic: str


@dataclass(frozen=True, slots=True)
class PushReply:
    """What APNs said about one push, already classified (push/apns.py ``classify``).

    ``outcome`` is delivered | device_permanent | tenant_permanent | transient; ``reason_code`` the
    ReasonCode value (None when delivered); ``status``/``reason`` are Apple's own.
    """

    outcome: PushOutcome
    reason_code: str | None
    status: int | None = None
    reason: str | None = None
    detail: str | None = None


class PushGateway(Protocol):
    """Sends pushes (push/ implements it over the APNs client). One per process, on the worker's loop."""

    async def send(self, pushes: Sequence[PushRequest]) -> list[PushReply]: ...
    def forget(self, topic: str) -> None: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PushCertCheck:
    """An uploaded push certificate as upload validation sees it (push/certkit.py builds it)."""

    cert_pem: bytes
    key_pem: bytes  # PKCS#8 PEM, unencrypted (sealed before it is stored)
    topic: str | None
    subject: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    problems: list[str] = field(default_factory=list)  # no_topic, not_mdm_topic, expired, ...


class PushCertKit(Protocol):
    """The cryptography of the push certificate lifecycle; the server key seals keys at rest."""

    def make_csr(self, common_name: str, email: str | None) -> tuple[bytes, bytes]: ...
    def vendor_sign(self, csr_pem: bytes, vendor_chain_pem: bytes, vendor_key_pem: bytes) -> str: ...
    def check(
        self, cert: bytes, key_pem: bytes | None, p12_password: bytes | None, now: datetime
    ) -> PushCertCheck: ...
    def seal(self, plaintext: bytes, context: str) -> bytes: ...
    def open(self, sealed: bytes, context: str) -> bytes: ...


class WebhookPoster(Protocol):
    """POSTs a JSON body with headers; returns the HTTP status or raises OSError. ``check`` refuses a
    target the server must not call (``WebhookTargetError``: a non-public address, unless the operator
    allows private ones); ``post`` checks again, and connects to the address it checked."""

    def check(self, url: str) -> None: ...
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int: ...


class ProfileSigner(Protocol):
    """Signs .mobileconfig bytes with the server's signing identity (CMS SignedData, attached)."""

    def sign(self, content: bytes) -> bytes: ...


# --- state shared between processes (issue 14) ------------------------------------------------------
class Leases(Protocol):
    """Named leases with an expiry: the holder of a singleton job's lease is the one process that runs
    it. Each call is its own short transaction; times are the caller's clock (hosts keep NTP time)."""

    def lease_acquire(self, name: str, holder: str, now: datetime, ttl: float) -> bool:
        """Take the lease, or renew it if ``holder`` holds it: True if ``holder`` holds it until
        ``now + ttl`` seconds; False while another holder's lease has not expired."""
        ...

    def lease_release(self, name: str, holder: str) -> None: ...  # if ``holder`` holds it
    def lease_holder(self, name: str, now: datetime) -> str | None: ...  # None: free or expired


class SharedLimits(Protocol):
    """Counters every process shares: failed tries per key in a window, and the last TOTP step each
    user signed in with. Each call is one statement in its own transaction; writes are atomic upserts."""

    def limit_hits(self, key: str, now: datetime, window: float) -> tuple[int, datetime] | None:
        """Failed tries under ``key`` in the window that is open at ``now``, and when it opened."""
        ...

    def limit_fail(self, key: str, now: datetime, window: float, limit: int) -> None:
        """Count one failed try; once ``limit`` is reached each further try opens the window again."""
        ...

    def limit_reset(self, key: str) -> None: ...
    def limit_purge(self, before: datetime) -> int: ...  # windows opened before; how many removed

    def totp_claim(self, user_id: str, step: int) -> bool:
        """Record ``step`` as the user's last accepted TOTP step: False (a replay) if it is not later
        than the one recorded, also when two processes claim the same step at once."""
        ...
