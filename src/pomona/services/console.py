"""The admin and helpdesk console's use cases (issue 13): admin accounts, signing in, console sessions,
the audit log, and what the pages read (the dashboard, the device list and page, troubleshooting, users
and groups, the policy dry run) and change (a licence: through
:class:`~pomona.services.policy.PolicyService`, the use cases the CLI runs). The restrictions page's
use cases are in :mod:`pomona.services.console_policy`.

Roles (``ROLE_ACTIONS``): the server operator works in every tenant; a tenant's admin and helpdesk in
their own tenant only. Helpdesk reads, diagnoses, retires, re-pushes and releases (from Setup
Assistant), and changes nothing else (no policy, no certificate, no accounts). :meth:`ConsoleService.scope` is the one place a tenant is resolved
for an account: a tenant that is not the account's is NOT_FOUND, as a tenant that does not exist. A
change the role may not make is refused by :meth:`ConsoleService.change_scope`, which records the refusal
(an event with its reason, and an audit entry ``console.refused``) in its own transaction.

Passwords are argon2id (services/passwords.py, as the portal's), sign-in is rate-limited per account and
per address (the portal's RateLimiter), TOTP is the portal's RFC 6238 code, and sessions are kept
server-side as the portal's are: the cookie names a random id whose hash the store keeps; a password
change or a disabled account ends them. Every change leaves an :class:`~pomona.ports.AuditEntry`.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal, Protocol, get_args

from pomona.domain.checks import RecordedFinding, device_subjects
from pomona.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    QueuedCommand,
    Step,
    Tenant,
    User,
)
from pomona.domain.policy import Decision, parse_version
from pomona.i18n import msg
from pomona.ports import (
    AbmView,
    AdminAccount,
    AdminAccountStore,
    AdminRole,
    AuditEntry,
    AuditLog,
    BlockStore,
    CommandQueue,
    ConsoleSession,
    ConsoleSessionStore,
    DeviceCursor,
    DeviceFilter,
    DeviceListing,
    DeviceSort,
    DeviceState,
    DeviceStore,
    EnrollmentStore,
    HasEvents,
    PushQueue,
    PushReachabilityStore,
    SessionEnd,
    SharedLimits,
    TenantStore,
    Transactions,
    UserListing,
    UserStore,
)
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.commands import CommandService
from pomona.services.passwords import MIN_LENGTH, hash_password, verify_password
from pomona.services.policy import PolicyService
from pomona.services.portal import RateLimiter, new_totp_secret, totp_at
from pomona.services.release import release_command

SESSION_LIFETIME: Final = timedelta(hours=8)
ROLES: Final[tuple[AdminRole, ...]] = get_args(AdminRole)
#: The device page's commands and blocking: a tenant's admins (and the operator), never helpdesk.
DEVICE_ACTIONS: Final = frozenset({"lock", "erase", "restart", "rename", "block", "unblock"})
#: What each role may do. "read" and "diagnose" are every page; the rest are changes.
ROLE_ACTIONS: Final[dict[str, frozenset[str]]] = {
    "operator": frozenset(
        {"read", "diagnose", "retire", "repush", "release", "policy", "certificate", "accounts", "sso"}
    )
    | DEVICE_ACTIONS,
    "admin": frozenset(
        {"read", "diagnose", "retire", "repush", "release", "policy", "certificate", "accounts", "sso"}
    )
    | DEVICE_ACTIONS,
    "helpdesk": frozenset({"read", "diagnose", "retire", "repush", "release"}),
}
#: The command each device action queues (``block`` and ``unblock`` queue none).
ACTION_COMMANDS: Final[dict[str, str]] = {
    "lock": "DeviceLock",
    "erase": "EraseDevice",
    "restart": "RestartDevice",
    "rename": "Settings",
}
PLATFORMS: Final = ("ios", "ipados")
OWNERSHIPS: Final = ("corporate", "personal")
DEVICE_STATES: Final[tuple[DeviceState, ...]] = get_args(DeviceState)
#: How long the tenant's list of OS versions (for an OS minimum) is kept: reading it walks every device.
OS_VERSIONS_TTL: Final = timedelta(minutes=5)
UNRESPONSIVE_AFTER: Final = timedelta(hours=4)  # the push service's default (settings.unresponsive_after)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TOP_REASONS_DAYS: Final = 30
#: The device page's timeline: the newest entries shown at once (each source read with this LIMIT).
TIMELINE_PAGE: Final = 100
#: The command results the timeline shows at their time (a queued command shows at its creation).
_RESULTS: Final = frozenset(
    {
        CommandStatus.ACKNOWLEDGED,
        CommandStatus.ERROR,
        CommandStatus.COMMAND_FORMAT_ERROR,
        CommandStatus.NOT_NOW,
    }
)
#: The order of entries of the same instant, newest first: what followed comes first.
_KIND_ORDER: Final = {"abm": 0, "event": 1, "command": 2, "push": 3}
#: The ABM timeline's op types with a text of their own (services/abm.py, storage/abm_sql.py).
ABM_OPS: Final = frozenset({"added", "modified", "deleted", "seen", "elsewhere", "assign", "assign-failed"})
MAX_PAGE: Final = 200
#: The TOTP "secret" of an account that must enrol an authenticator at its next sign-in (not base32:
#: never a code's key). See services/console_auth.py.
TOTP_PENDING: Final = "-"


def can(account: AdminAccount, action: str) -> bool:
    return action in ROLE_ACTIONS.get(account.role, frozenset())


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _stamp(account: AdminAccount) -> str:
    return hashlib.sha256(account.password_hash.encode()).hexdigest()


class ConsoleSignInStatus(StrEnum):
    SIGNED_IN = "signed_in"
    BAD_CREDENTIALS = "bad_credentials"  # unknown email, wrong password, or disabled (not told which)
    NEED_TOTP = "need_totp"  # right password, the account has TOTP and no (or a wrong) code was given
    ENROL_TOTP = "enrol_totp"  # right password, the account must enrol an authenticator first
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class ConsoleSignIn:
    status: ConsoleSignInStatus
    account: AdminAccount | None = None
    retry_after: int = 0


@dataclass(frozen=True)
class Dashboard:
    tenant: Tenant
    findings: list[RecordedFinding]  # critical first
    push_not_after: datetime | None
    push_days_left: int | None
    top_reasons: list[tuple[str, int]]  # the last TOP_REASONS_DAYS days
    devices: int


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    enrollment: Enrollment | None  # the active one


@dataclass(frozen=True)
class DevicePage:
    rows: list[DeviceRow]
    total: int | None  # None: filtered, over more than one page (not counted: see ConsoleService.devices)
    next: DeviceCursor | None


@dataclass(frozen=True)
class DeviceQuery:
    """The device list's filters as the page's query string gives them (already checked: an unknown
    value is None). ``os`` is a prefix ("17" is every 17.x), ``os_min`` a minimum, ``stale_days`` "last
    check-in more than N days ago (or never)"."""

    platform: str | None = None
    os: str | None = None
    os_min: str | None = None
    ownership: str | None = None
    enrollment_type: str | None = None
    state: DeviceState | None = None
    stale_days: int | None = None


TimelineKind = Literal["event", "command", "push", "abm"]


@dataclass(frozen=True)
class TimelineEntry:
    """One row of a device's timeline. ``what`` says what happened, as a catalogue key's last part
    (``console.timeline.<kind>.<what>``): an event's step, a command's status (``Queued`` at its
    creation), a push's answer (``sent``, ``refused``), an ABM timeline entry's op type. ``facts`` are
    the values its text names (a request type, an outcome, a profile status), device-controlled ones
    included: the page escapes them."""

    at: datetime
    kind: TimelineKind
    what: str
    reason: str | None = None
    facts: Mapping[str, str] = field(default_factory=dict)
    seq: int = 0  # the source's order within one instant (an event's or command's id)


@dataclass(frozen=True)
class TimelineCursor:
    """Where the next (older) timeline page starts: entries before ``at``, or at ``at`` and before when
    ``inclusive`` (the page ended inside one instant's entries and left them all to the next)."""

    at: datetime
    inclusive: bool = False


@dataclass(frozen=True)
class DeviceDetail:
    device: Device
    enrollments: list[Enrollment]
    commands: list[QueuedCommand]
    timeline: list[TimelineEntry] = field(default_factory=list)  # newest first, at most TIMELINE_PAGE
    older: TimelineCursor | None = None  # the next page's start, when there are older entries
    blocked: bool = False  # by serial or UDID (the Unblock button)
    findings: list[RecordedFinding] = field(default_factory=list)  # health's, about this device

    @property
    def awaiting_configuration(self) -> bool:
        """Held at Setup Assistant: its active enrollment awaits DeviceConfigured (the Release button)."""
        return any(e.status is EnrollmentStatus.ACTIVE and e.awaiting_configuration for e in self.enrollments)


@dataclass(frozen=True)
class UserOverview:
    """Troubleshoot's view of a user: their licence and their devices with the active enrollment."""

    user: User
    devices: list[DeviceRow]


@dataclass(frozen=True)
class UserRow:
    """A user on the users page: licence and DEM flags (on the user), active devices, group names."""

    user: User
    devices: int
    groups: list[str]


@dataclass(frozen=True)
class UserPage:
    rows: list[UserRow]
    total: int
    next: str | None  # the last UPN shown, when there are more


class ConsoleStores(HasEvents, Protocol):
    """The console's stores: its own (accounts, sessions, audit, the device list), and what its pages
    read."""

    @property
    def tenants(self) -> TenantStore: ...
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
    def devices(self) -> DeviceStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def pushes(self) -> PushQueue: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...  # the device's last push (its timeline)
    @property
    def abm_view(self) -> AbmView: ...  # the device's ABM timeline
    @property
    def blocks(self) -> BlockStore: ...  # whether the device is blocked (Unblock)


class ConsoleDatabase(Transactions[ConsoleStores], SharedLimits, Protocol):
    """The console's database: its stores, plus the sign-in limits and TOTP steps every process shares."""


@dataclass
class ConsoleService(ServiceBase[ConsoleStores]):
    db: ConsoleDatabase
    policy: PolicyService
    findings: Callable[[str], list[RecordedFinding]]  # a tenant's open health findings (HealthService)
    on_push: Callable[[], None] | None = None  # wakes the push worker (PushService.wake)
    unresponsive_after: timedelta = UNRESPONSIVE_AFTER
    _os_cache: dict[str, tuple[datetime, list[str]]] = field(default_factory=dict, init=False, repr=False)

    @functools.cached_property
    def command_service(self) -> CommandService:
        """The command queue's use cases (`pomona command`): what the device actions queue through."""
        return CommandService(self.db, self.clock, self.on_push, metrics=self.metrics)

    @functools.cached_property
    def limiter(self) -> RateLimiter:
        """Failed sign-in tries per account and address, shared by every process (in the database)."""
        return RateLimiter(self.db)

    # --- accounts ---------------------------------------------------------------------------------
    def create_account(
        self,
        email: str,
        password: str,
        role: str,
        tenant_ref: str | None = None,
        *,
        totp: bool = False,
        actor: str = "cli",
        source: str = "cli",
    ) -> AdminAccount:
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise InvalidInputError(f"not an email address: {email!r}", field="email")
        if role not in ROLES:
            raise InvalidInputError(f"role must be one of {', '.join(ROLES)}", field="role")
        if role == "operator" and tenant_ref:
            raise InvalidInputError("an operator works in every tenant: give no --tenant", field="tenant")
        if role != "operator" and not tenant_ref:
            raise InvalidInputError(f"a {role} belongs to one tenant: give --tenant", field="tenant")
        _check_password(password)
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            t = find_tenant(uow.tenants, tenant_ref) if tenant_ref else None
            account = AdminAccount(
                id=str(uuid.uuid4()),
                email=email,
                role=role,  # checked against ROLES above
                tenant_id=None if t is None else t.id,
                password_hash=hash_password(password),
                created_at=now,
                totp_secret=new_totp_secret() if totp else None,
            )
            if uow.admins.by_email(email) is not None:
                raise ConflictError(f"an admin account {email} exists", email=email)
            uow.admins.add(account)
            self._audit(uow, actor, "admin.create", account.tenant_id, email, source, {"role": role})
        return account

    def list_accounts(self, tenant_ref: str | None = None) -> list[tuple[AdminAccount, str | None]]:
        """Every account (or a tenant's), with its tenant's name."""
        with self.db.unit_of_work(readonly=True) as uow:
            names = {t.id: t.name for t in uow.tenants.list()}
            accounts = uow.admins.list()
            if tenant_ref:
                t = find_tenant(uow.tenants, tenant_ref)
                accounts = [a for a in accounts if a.tenant_id == t.id]
        return [(a, names.get(a.tenant_id) if a.tenant_id else None) for a in accounts]

    def set_enabled(
        self, email: str, enabled: bool, *, actor: str = "cli", source: str = "cli"
    ) -> AdminAccount:
        """Disable (its sessions end) or enable an account."""
        with self.db.unit_of_work() as uow:
            a = self._account(uow, email)
            a = replace(a, enabled=enabled)
            uow.admins.update(a)
            if not enabled:
                uow.console_sessions.revoke_admin(a.id, self.clock.now(), "user")
            action = "admin.enable" if enabled else "admin.disable"
            self._audit(uow, actor, action, a.tenant_id, a.email, source, {})
        return a

    def reset_password(
        self, email: str, password: str, *, actor: str = "cli", source: str = "cli"
    ) -> AdminAccount:
        """A new password: the account's sessions end."""
        _check_password(password)
        with self.db.unit_of_work() as uow:
            a = replace(self._account(uow, email), password_hash=hash_password(password))
            uow.admins.update(a)
            uow.console_sessions.revoke_admin(a.id, self.clock.now(), "password")
            self._audit(uow, actor, "admin.reset_password", a.tenant_id, a.email, source, {})
        return a

    def _account(self, uow: ConsoleStores, email: str) -> AdminAccount:
        a = uow.admins.by_email(email.strip())
        if a is None:
            raise NotFoundError(f"no admin account {email!r}", email=email)
        return a

    # --- signing in -------------------------------------------------------------------------------
    def sign_in(self, email: str, password: str, code: str, source: str) -> ConsoleSignIn:
        """Password (argon2, the same time for an unknown account), then the TOTP code when the account
        has one. At most the limiter's tries per account and per address in its window."""
        email = email.strip().lower()[:320]
        now = self.clock.now()
        keys = (f"console:e:{email}", f"console:a:{source}")
        wait = max(self.limiter.blocked_for(k, now) for k in keys)
        if wait:
            return ConsoleSignIn(ConsoleSignInStatus.RATE_LIMITED, retry_after=wait)
        with self.db.unit_of_work(readonly=True) as uow:
            a = uow.admins.by_email(email)
        ok, rehash = verify_password(a.password_hash if a else None, password)
        if a is None or not ok or not a.enabled:
            for k in keys:
                self.limiter.fail(k, now)
            return ConsoleSignIn(ConsoleSignInStatus.BAD_CREDENTIALS)
        if a.totp_secret == TOTP_PENDING:
            return ConsoleSignIn(ConsoleSignInStatus.ENROL_TOTP, a)
        if a.totp_secret:
            if not code.strip():
                return ConsoleSignIn(ConsoleSignInStatus.NEED_TOTP, a)
            if not self._totp_ok(a, code.strip(), now):
                for k in keys:
                    self.limiter.fail(k, now)
                return ConsoleSignIn(ConsoleSignInStatus.NEED_TOTP, a)
        for k in keys:
            self.limiter.reset(k)
        with self.db.unit_of_work() as uow:
            a = replace(a, last_sign_in_at=now, password_hash=rehash or a.password_hash)
            uow.admins.update(a)
            self._audit(uow, a.email, "console.sign_in", a.tenant_id, None, source, {})
        return ConsoleSignIn(ConsoleSignInStatus.SIGNED_IN, a)

    def _totp_ok(self, a: AdminAccount, code: str, now: datetime) -> bool:
        assert a.totp_secret is not None
        step = int(now.timestamp()) // 30
        for s in (step - 1, step, step + 1):
            if secrets.compare_digest(totp_at(a.totp_secret, s), code):
                return self.db.totp_claim(a.id, s)  # a code is good once, in every process
        return False

    def open_session(self, account: AdminAccount) -> str:
        sid = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            uow.console_sessions.purge(account.id, now)
            uow.console_sessions.add(
                _sid_hash(sid), ConsoleSession(account.id, now, now + SESSION_LIFETIME, _stamp(account))
            )
        return sid

    def session_account(self, sid: str) -> AdminAccount | None:
        """The account a session id is signed in as, or None: unknown, expired, signed out, the account
        disabled or deleted, or its password changed since."""
        now = self.clock.now()
        h = _sid_hash(sid)
        with self.db.unit_of_work(readonly=True) as uow:
            s = uow.console_sessions.get(h)
            if s is None or s.revoked_at is not None or s.expires_at <= now:
                return None
            a = uow.admins.get(s.admin_id)
        if a is None or not a.enabled:
            self._end(h, "user")
            return None
        if _stamp(a) != s.stamp:
            self._end(h, "password")
            return None
        return a

    def close_session(self, sid: str, account: AdminAccount | None, source: str) -> None:
        with self.db.unit_of_work() as uow:
            uow.console_sessions.revoke(_sid_hash(sid), self.clock.now(), "signout")
            if account is not None:
                self._audit(uow, account.email, "console.sign_out", account.tenant_id, None, source, {})

    def _end(self, id_hash: str, why: SessionEnd) -> None:
        with self.db.unit_of_work() as uow:
            uow.console_sessions.revoke(id_hash, self.clock.now(), why)

    # --- scope ------------------------------------------------------------------------------------
    def scope(self, account: AdminAccount, tenant_ref: str, action: str = "read") -> Tenant:
        """The tenant an account works in: NOT_FOUND for another tenant's (as for none at all), and
        ForbiddenError for an action its role does not have."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
        if account.tenant_id is not None and account.tenant_id != t.id:
            raise NotFoundError(f"no tenant {tenant_ref!r}", tenant=tenant_ref)
        if not can(account, action):
            raise ForbiddenError(f"the {account.role} role may not {action}", action=action)
        return t

    def change_scope(self, account: AdminAccount, tenant_ref: str, action: str, source: str | None) -> Tenant:
        """:meth:`scope` for a change: another tenant's is NOT_FOUND (and nothing is recorded in it); a
        change the role may not make is refused, and the refusal leaves an event (its reason) and an
        audit entry, in their own transaction."""
        t = self.scope(account, tenant_ref)
        if can(account, action):
            return t
        detail: dict[str, object] = {"actor": account.email, "role": account.role, "action": action}
        self.record_failure(t.id, Step.ADMIN, ForbiddenError.reason, detail=detail)
        self.audit(account.email, "console.refused", t.id, action, source, {"role": account.role})
        raise ForbiddenError(f"the {account.role} role may not {action}", action=action)

    def tenants(self, account: AdminAccount) -> list[Tenant]:
        with self.db.unit_of_work(readonly=True) as uow:
            every = uow.tenants.list()
        return [t for t in every if account.tenant_id in (None, t.id)]

    # --- pages ------------------------------------------------------------------------------------
    def dashboard(self, account: AdminAccount, tenant_ref: str) -> Dashboard:
        t = self.scope(account, tenant_ref)
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            top = uow.events.failure_report(t.id, now - timedelta(days=TOP_REASONS_DAYS), now, "reason")
            count = uow.devices.count(t.id)
        findings = self.findings(t.id)
        days = None if t.push_not_after is None else (t.push_not_after - now).days
        return Dashboard(t, findings, t.push_not_after, days, top[:10], count)

    def devices(
        self,
        account: AdminAccount,
        tenant_ref: str,
        *,
        sort: DeviceSort = "name",
        after: DeviceCursor | None = None,
        prefix: str | None = None,
        query: DeviceQuery | None = None,
        limit: int = 50,
    ) -> DevicePage:
        """A keyset page of the tenant's devices, filtered (a name or serial prefix, and ``query``), with
        their active enrollments.

        A list filtered by ``query`` is not counted unless it fits in its first page: counting walks
        every match (or, for a rare state, every device) and its enrollment, 100 to 400 ms on 200,000
        devices, where a page stops after 50 matches."""
        t = self.scope(account, tenant_ref)
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.unit_of_work(readonly=True) as uow:
            f = self._device_filter(uow, t.id, query)
            rows = uow.device_listing.page(
                t.id, sort=sort, after=after, prefix=prefix, filters=f, limit=limit + 1
            )
            shown = rows[:limit]
            total: int | None = None
            if after is None and len(rows) <= limit:
                total = len(shown)  # the whole list is this page: nothing to count
            elif f is None:
                total = uow.device_listing.count(t.id, prefix=prefix)
            active = uow.enrollments.active_for_udids(t.id, [d.udid for d in shown])
        nxt = None
        if len(rows) > limit:
            last = shown[-1]
            value = {"name": last.device_name, "serial": last.serial, "last_seen": last.last_seen_at}[sort]
            nxt = DeviceCursor(value, last.id, value is None)
        return DevicePage([DeviceRow(d, active.get(d.udid)) for d in shown], total, nxt)

    def _os_versions(self, uow: ConsoleStores, tenant_id: str) -> list[str]:
        """The tenant's OS versions, kept OS_VERSIONS_TTL (a version first seen since is missed that
        long by an OS minimum; reading them walks every device: 120 ms on 200,000)."""
        now = self.clock.now()
        kept = self._os_cache.get(tenant_id)
        if kept is None or now - kept[0] > OS_VERSIONS_TTL:
            kept = (now, uow.device_listing.os_versions(tenant_id))
            self._os_cache[tenant_id] = kept
        return kept[1]

    def _device_filter(
        self, uow: ConsoleStores, tenant_id: str, q: DeviceQuery | None
    ) -> DeviceFilter | None:
        """The storage filter of a query: the OS minimum resolved to the tenant's OS versions at or above
        it (a version is compared as numbers, which SQL strings are not), the ages to times."""
        if q is None:
            return None
        now = self.clock.now()
        versions = None
        if q.os_min:
            low = parse_version(q.os_min)

            def at_least(v: str) -> bool:
                try:
                    tv = parse_version(v)
                except ValueError:
                    return False
                n = max(len(tv), len(low))
                return tv + (0,) * (n - len(tv)) >= low + (0,) * (n - len(low))

            versions = tuple(sorted(v for v in self._os_versions(uow, tenant_id) if at_least(v)))
        f = DeviceFilter(
            platform="ios" if q.platform == "ios" else "ipados" if q.platform == "ipados" else None,
            os_prefix=q.os or None,
            os_versions=versions,
            ownership="corporate"
            if q.ownership == "corporate"
            else "personal"
            if q.ownership == "personal"
            else None,
            enrollment_type=q.enrollment_type or None,
            state=q.state,
            seen_before=None if q.stale_days is None else now - timedelta(days=q.stale_days),
            unresponsive_before=now - self.unresponsive_after if q.state == "unresponsive" else None,
        )
        return None if f.empty else f

    def device(
        self,
        account: AdminAccount,
        tenant_ref: str,
        device_id: str,
        *,
        timeline: bool = True,
        older: TimelineCursor | None = None,
    ) -> DeviceDetail:
        """A device's page: inventory, enrollments, command queue, whether it is blocked and (with
        ``timeline``) one page of its timeline, from ``older`` on (None: the newest)."""
        t = self.scope(account, tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            d = uow.devices.get(t.id, device_id)
            if d is None:
                raise NotFoundError(f"no device {device_id!r}", device=device_id)
            enrollments = uow.enrollments.for_device(t.id, d.id)
            detail = DeviceDetail(
                d,
                enrollments,
                uow.commands.list_for_device(t.id, d.id, limit=50),
                blocked=uow.blocks.is_blocked(t.id, serial=d.serial or None, udid=d.udid),
            )
            if timeline:
                entries, cursor = self._timeline(uow, t.id, d, enrollments, older, TIMELINE_PAGE)
                detail = replace(detail, timeline=entries, older=cursor)
        # Health's open findings about this device (as the last health round recorded them).
        subjects = device_subjects(d.udid, d.serial)
        mine = [r for r in self.findings(t.id) if r.finding.subject in subjects]
        return replace(detail, findings=mine)

    def _timeline(
        self,
        uow: ConsoleStores,
        tenant_id: str,
        d: Device,
        enrollments: list[Enrollment],
        older: TimelineCursor | None,
        limit: int,
    ) -> tuple[list[TimelineEntry], TimelineCursor | None]:
        """One page of the device's timeline, newest first, and where the next page starts (None: no
        older entry). Each source is read by its index with LIMIT ``limit + 1`` before the cursor (the
        events naming the device, its commands, its ABM timeline), then merged here: at most a few
        hundred rows whatever the device's history. Pushes are what the push service records: a refused
        push is an event (step push), the last accepted one each enrollment's last push."""
        until = None
        if older is not None:
            until = older.at + timedelta(microseconds=1) if older.inclusive else older.at
        more = False
        rows: list[TimelineEntry] = []
        if d.serial:  # the device's whole story: events naming its serial, or its UDID
            events = uow.events.query(tenant_id, serial=d.serial, until=until, limit=limit + 1)
        else:
            events = uow.events.query(tenant_id, udid=d.udid, until=until, limit=limit + 1)
        more |= len(events) > limit
        for e in events:
            facts = {"outcome": e.outcome.value}
            if e.step is Step.PUSH:
                rows.append(TimelineEntry(e.at, "push", "refused", e.reason, facts, e.id or 0))
            else:
                rows.append(TimelineEntry(e.at, "event", e.step.value, e.reason, facts, e.id or 0))
        commands = uow.commands.list_for_device(tenant_id, d.id, limit=limit + 1, until=until)
        more |= len(commands) > limit
        for c in commands:
            facts = {"request_type": c.request_type}
            rows.append(TimelineEntry(c.created_at, "command", CommandStatus.QUEUED.value, None, facts, c.id))
            if c.status in _RESULTS and c.result_at is not None:
                err = next(iter(c.error_chain), {})
                code = err.get("ErrorCode")
                facts = {
                    **facts,
                    "error": "" if code is None else f"{err.get('ErrorDomain', '')} {code}".strip(),
                }
                rows.append(TimelineEntry(c.result_at, "command", c.status.value, None, facts, c.id))
        refused = {(r.at, r.reason) for r in rows if r.kind == "push"}
        for at, status in uow.reachability.last_pushes([e.id for e in enrollments]).values():
            if at is None or (at, status) in refused:  # a refusal's event already says it
                continue
            rows.append(TimelineEntry(at, "push", "sent", None, {"status": status or ""}))
        if d.serial:
            history = uow.abm_view.history(tenant_id, d.serial, limit=limit + 1, newest=True, until=until)
            more |= len(history) > limit
            for n, h in enumerate(history):
                what = h.op_type if h.op_type in ABM_OPS else "other"
                facts = {"op": h.op_type, "profile_status": h.profile_status or ""}
                rows.append(TimelineEntry(h.at, "abm", what, h.reason, facts, n))
        if until is not None:
            rows = [r for r in rows if r.at < until]
        rows.sort(key=lambda r: (r.at, -_KIND_ORDER[r.kind], r.seq), reverse=True)
        if len(rows) <= limit and not more:
            return rows, None
        page = rows[:limit]
        last = page[-1].at
        # The next page starts at the page's last instant, which this page leaves to it in full (one
        # instant's entries are never split); a page that is one instant only goes on before it.
        kept = [r for r in page if r.at > last]
        if kept:
            return kept, TimelineCursor(last, inclusive=True)
        return page, TimelineCursor(last)

    def user_overview(self, account: AdminAccount, tenant_ref: str, upn: str) -> UserOverview | None:
        t = self.scope(account, tenant_ref, "diagnose")
        with self.db.unit_of_work(readonly=True) as uow:
            u = uow.users.by_upn(t.id, upn.strip())
            if u is None:
                return None
            active = uow.enrollments.active_for_user(u.id)
            devices = uow.devices.by_ids(t.id, [e.device_id for e in active])
        rows = [DeviceRow(devices[e.device_id], e) for e in active if e.device_id in devices]
        return UserOverview(u, rows)

    def dry_run(
        self,
        account: AdminAccount,
        tenant_ref: str,
        upn: str,
        serial: str | None = None,
        *,
        platform: str | None = None,
        os_version: str | None = None,
    ) -> Decision:
        """The policy dry run for the user (and a device, by serial, platform, OS version): what would
        happen at enrollment now (`pomona policy explain`)."""
        t = self.scope(account, tenant_ref, "diagnose")
        return self.policy.explain(
            t.id,
            upn.strip().lower(),
            serial=serial or None,
            platform=platform or None,
            os_version=os_version or None,
        )

    def users(
        self,
        account: AdminAccount,
        tenant_ref: str,
        *,
        after: str | None = None,
        prefix: str | None = None,
        limit: int = 50,
    ) -> UserPage:
        """A keyset page of the tenant's users by UPN (those starting with ``prefix``), each with its
        active devices and groups (two reads for the whole page)."""
        t = self.scope(account, tenant_ref)
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.user_listing.page(t.id, after=after, prefix=prefix, limit=limit + 1)
            total = uow.user_listing.count(t.id, prefix=prefix)
            shown = found[:limit]
            ids = [u.id for u in shown]
            counts = uow.user_listing.device_counts(ids)
            groups = uow.user_listing.group_names(ids)
        rows = [UserRow(u, counts.get(u.id, 0), groups.get(u.id, [])) for u in shown]
        return UserPage(rows, total, shown[-1].upn if len(found) > limit else None)

    def seats(self, account: AdminAccount, tenant_ref: str) -> dict[str, int]:
        t = self.scope(account, tenant_ref)
        return self.policy.seats(t.id)

    def set_licence(
        self, account: AdminAccount, tenant_ref: str, upn: str, assign: bool, source: str
    ) -> dict[str, object]:
        """Assign or remove a user's licence (`pomona licence assign|remove`), audited."""
        t = self.change_scope(account, tenant_ref, "policy", source)
        done = self.policy.licence(t.id, upn.strip().lower(), assign=assign)
        action = "licence.assign" if assign else "licence.remove"
        self.audit(account.email, action, t.id, str(done["upn"]), source, {})
        return done

    # --- actions ----------------------------------------------------------------------------------
    def retire(self, account: AdminAccount, tenant_ref: str, device_id: str, source: str) -> int:
        t = self.scope(account, tenant_ref, "retire")
        with self.db.unit_of_work(readonly=True) as uow:
            d = uow.devices.get(t.id, device_id)
        if d is None:
            raise NotFoundError(f"no device {device_id!r}", device=device_id)
        n = self.policy.retire(t.id, udid=d.udid)
        self.audit(account.email, "device.retire", t.id, d.udid, source, {"serial": d.serial})
        return n

    def repush(self, account: AdminAccount, tenant_ref: str, device_id: str, source: str) -> None:
        """Push the device now (its active enrollment): it checks in and takes what is queued."""
        t = self.scope(account, tenant_ref, "repush")
        with self.db.unit_of_work() as uow:
            d = uow.devices.get(t.id, device_id)
            if d is None:
                raise NotFoundError(f"no device {device_id!r}", device=device_id)
            e = uow.enrollments.active_for_udid(t.id, d.udid)
            if e is None:
                raise InvalidInputError("the device is not enrolled", field="device", device=device_id)
            uow.pushes.request(t.id, [e.id], self.clock.now())
            self._audit(uow, account.email, "device.repush", t.id, d.udid, source, {"serial": d.serial})
        if self.on_push is not None:
            self.on_push()

    def release(self, account: AdminAccount, tenant_ref: str, device_id: str, source: str) -> str:
        """Release the device from Setup Assistant: DeviceConfigured queued for its active enrollment,
        and a push (services/release.py). Returns the command's UUID."""
        t = self.scope(account, tenant_ref, "release")
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            d = uow.devices.get(t.id, device_id)
            if d is None:
                raise NotFoundError(f"no device {device_id!r}", device=device_id)
            e = uow.enrollments.active_for_udid(t.id, d.udid)
            if e is None:
                raise InvalidInputError("the device is not enrolled", field="device", device=device_id)
            (cmd,) = uow.commands.enqueue_many([release_command(e, now)])
            uow.pushes.request(t.id, [e.id], now)
            detail = {"serial": d.serial, "command_uuid": cmd.command_uuid}
            self._audit(uow, account.email, "device.release", t.id, d.udid, source, detail)
        if self.on_push is not None:
            self.on_push()
        return cmd.command_uuid

    def device_action(
        self,
        account: AdminAccount,
        tenant_ref: str,
        device_id: str,
        action: str,
        source: str,
        *,
        name: str | None = None,
        message: str | None = None,
        typed_serial: str | None = None,
    ) -> str | None:
        """Lock, erase, restart or rename a device (the command queued for its active enrollment through
        :meth:`CommandService.enqueue`, which pushes), block or unblock it (`pomona device block|unblock`);
        audited.
        Helpdesk is refused (403, audited, nothing queued). Erase needs the device's serial number (its
        UDID when it has none) typed again. Returns the queued command's UUID (None for block)."""
        if action not in DEVICE_ACTIONS:
            raise InvalidInputError(f"no device action {action!r}", field="action")
        t = self.change_scope(account, tenant_ref, action, source)
        with self.db.unit_of_work(readonly=True) as uow:
            d = uow.devices.get(t.id, device_id)
        if d is None:
            raise NotFoundError(f"no device {device_id!r}", device=device_id)
        detail: dict[str, object] = {"serial": d.serial}
        if action == "unblock":
            self._unblock(account, t, d, source)
            return None
        if action == "block":
            ended = self.policy.block(
                t.id,
                serial=d.serial if d.serial else None,
                udid=None if d.serial else d.udid,
                note=f"console: {account.email}"[:255],
            )
            self.audit(
                account.email, "device.block", t.id, d.udid, source, {**detail, "ended_enrollments": ended}
            )
            return None
        params: dict[str, object] = {}
        if action == "erase":
            expected = d.serial or d.udid
            if (typed_serial or "").strip().upper() != expected.upper():
                raise InvalidInputError(msg("console.erase.mismatch"), field="serial")
        elif action == "lock" and message and message.strip():
            params["Message"] = message.strip()[:1024]
        elif action == "rename":
            new_name = (name or "").strip()
            if not new_name or len(new_name) > 255:
                raise InvalidInputError(msg("console.rename.invalid"), field="name")
            params["Settings"] = [{"Item": "DeviceName", "DeviceName": new_name}]
            detail["name"] = new_name
        request_type = ACTION_COMMANDS[action]
        (cmd,) = self.command_service.enqueue(t.id, request_type, params, [d.id])
        detail.update({"request_type": request_type, "command_uuid": cmd.command_uuid})
        self.audit(account.email, f"device.{action}", t.id, d.udid, source, detail)
        return cmd.command_uuid

    def _unblock(self, account: AdminAccount, t: Tenant, d: Device, source: str) -> None:
        """Lift the device's blocks, by serial and by UDID (`pomona device unblock`: the console blocks by
        serial, the CLI and the API by either), audited. A device not blocked is refused (CONFLICT)."""
        with self.db.unit_of_work(readonly=True) as uow:
            by_serial = bool(d.serial) and uow.blocks.is_blocked(t.id, serial=d.serial)
            by_udid = uow.blocks.is_blocked(t.id, udid=d.udid)
        if not (by_serial or by_udid):
            raise ConflictError(msg("console.unblock.not_blocked"), device=d.id)
        if by_serial:
            self.policy.block(t.id, serial=d.serial, unblock=True)
        if by_udid:
            self.policy.block(t.id, udid=d.udid, unblock=True)
        kinds = [k for k, on in (("serial", by_serial), ("udid", by_udid)) if on]
        detail: dict[str, object] = {"serial": d.serial, "unblocked": kinds}
        self.audit(account.email, "device.unblock", t.id, d.udid, source, detail)

    # --- the audit log ----------------------------------------------------------------------------
    def audit(
        self,
        actor: str,
        action: str,
        tenant_id: str | None,
        target: str | None,
        source: str | None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        with self.db.unit_of_work() as uow:
            self._audit(uow, actor, action, tenant_id, target, source, detail or {})

    def _audit(
        self,
        uow: ConsoleStores,
        actor: str,
        action: str,
        tenant_id: str | None,
        target: str | None,
        source: str | None,
        detail: Mapping[str, object],
    ) -> None:
        uow.audit.append(AuditEntry(self.clock.now(), actor, action, tenant_id, target, source, dict(detail)))

    def audit_page(
        self,
        account: AdminAccount,
        tenant_ref: str,
        *,
        before_id: int | None = None,
        limit: int = 50,
        actor: str | None = None,
        action: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[Tenant, list[AuditEntry]]:
        """A tenant's audit log for the console, newest first, in keyset pages (``before_id``), filtered
        (``actor``, ``action`` prefix, ``source``, ``since``, ``until``: AuditLog.list's)."""
        t = self.scope(account, tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return t, uow.audit.list(
                t.id,
                limit=max(1, min(limit, MAX_PAGE)),
                before_id=before_id,
                actor=actor,
                action=action,
                source=source,
                since=since,
                until=until,
            )

    def audit_log(self, tenant_ref: str | None = None, *, limit: int = 50) -> list[AuditEntry]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref) if tenant_ref else None
            return uow.audit.list(None if t is None else t.id, limit=limit)


def _check_password(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInputError(f"a password has at least {MIN_LENGTH} characters", field="password")


__all__ = ["ROLES", "ConsoleService", "ConsoleSignInStatus", "DeviceQuery", "can"]
