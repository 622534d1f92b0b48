"""Enrollment policy use cases: licences, groups, restrictions, corporate identifiers, blocking,
retiring, and the decision itself (at the portal, at the enrollment link, at Authenticate, and as a
dry run for admins).
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from pomona.domain.errors import (
    ConflictError,
    InvalidInputError,
    LicensesExhaustedError,
    NotFoundError,
    PolicyError,
)
from pomona.domain.models import (
    BlockedDevice,
    CorporateIdentifier,
    Device,
    Enrollment,
    EnrollmentStatus,
    Group,
    Step,
    Tenant,
    User,
)
from pomona.domain.policy import (
    DEFAULT_DEVICE_LIMIT,
    MAX_DEVICE_LIMIT,
    RESTRICTION_TYPES,
    Access,
    Decision,
    OtherEnrollment,
    Platform,
    PolicyInput,
    Restriction,
    RestrictionKind,
    Stage,
    UserFacts,
    decide,
    default_restriction_name,
    numbered_restriction_name,
    parse_version,
)
from pomona.i18n import msg
from pomona.ports import (
    BlockStore,
    CommandQueue,
    CorporateStore,
    DeviceStore,
    EnrollmentStore,
    GroupStore,
    HasEvents,
    PortalSessionStore,
    RestrictionStore,
    TenantStore,
    UserStore,
)
from pomona.services.base import ServiceBase, find_tenant

DEFAULT_PRIORITY = 1_000_000  # the built-in Default ranks after every assigned restriction
MAX_CORPORATE_ROWS = 5000
MAX_RESTRICTION_NAME = 255
_IMEI_DIGITS = 15


def normalize_identifier(value: str) -> str:
    return "".join(value.split()).upper()


@dataclass(frozen=True)
class LinkWarning:
    """Why a link just created may not work yet: a reason code (None for a warning without one, the
    plain-http URL) and one line for the admin, in their language, naming the command that fixes it."""

    reason: str | None
    message: str

    def to_dict(self) -> dict[str, str | None]:
        return {"reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class ImportReport:
    imported: int
    unchanged: int
    errors: list[dict[str, object]]  # {"row": n, "value": ..., "error": ..., "code": ..., "key": ...}
    accepted: list[dict[str, object]] = field(default_factory=list)  # {"row": n, "value": ..., "kind": ...}


class DefaultsStores(Protocol):
    """What :meth:`PolicyService.ensure_defaults` reads and writes, in the caller's unit of work."""

    @property
    def restrictions(self) -> RestrictionStore: ...


def ensure_default_restrictions(uow: DefaultsStores, tenant_id: str, now: datetime) -> list[Restriction]:
    """The tenant's restrictions, with the built-in Default of each kind added where it is missing (in
    the caller's unit of work: a new tenant gets them in the transaction that creates it)."""
    existing = uow.restrictions.list(tenant_id)
    kinds = {r.kind for r in existing if r.is_default}
    for kind, cls in RESTRICTION_TYPES.items():
        if kind not in kinds:
            default = cls(
                id=str(uuid.uuid4()),
                name=default_restriction_name(kind),
                priority=DEFAULT_PRIORITY,
                is_default=True,
            )
            uow.restrictions.add(default, tenant_id, now)
    return uow.restrictions.list(tenant_id) if len(kinds) < len(RESTRICTION_TYPES) else existing


class DecisionStores(DefaultsStores, Protocol):
    """What :meth:`PolicyService.policy_input` reads, in the caller's unit of work: the stores of every
    service that asks for a decision include these."""

    @property
    def users(self) -> UserStore: ...
    @property
    def groups(self) -> GroupStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def corporate(self) -> CorporateStore: ...
    @property
    def blocks(self) -> BlockStore: ...


class PolicyStores(DecisionStores, HasEvents, Protocol):
    """The policy service's stores: the decision's, the tenants, the command queue (retiring a
    device cancels what it had queued), the devices (a user's details name them) and the portal's
    sessions (disabling a user ends them)."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def devices(self) -> DeviceStore: ...
    @property
    def portal_sessions(self) -> PortalSessionStore: ...


@dataclass(frozen=True)
class UserSummary:
    """A user as `pomona user list` shows them: with how many groups and active enrollments."""

    user: User
    groups: int
    devices: int


@dataclass(frozen=True)
class UserDetail:
    """A user as `pomona user show` shows them: groups by name, active enrollments with their devices."""

    user: User
    groups: list[str]
    enrollments: list[tuple[Enrollment, Device | None]]


@dataclass
class PolicyService(ServiceBase[PolicyStores]):
    _cache: dict[str, tuple[int, tuple[Restriction, ...]]] = field(default_factory=dict)

    # --- helpers ----------------------------------------------------------------------------------
    def _tenant(self, uow: PolicyStores, ref: str) -> Tenant:
        t = find_tenant(uow.tenants, ref)
        return t

    def _user(self, uow: PolicyStores, t: Tenant, upn: str) -> User:
        u = uow.users.by_upn(t.id, upn)
        if u is None:
            raise NotFoundError(msg("error.user.not_found", upn=upn, tenant=t.name), upn=upn)
        return u

    def _group(self, uow: PolicyStores, t: Tenant, name: str) -> Group:
        g = uow.groups.by_name(t.id, name)
        if g is None:
            raise NotFoundError(msg("error.group.not_found", group=name, tenant=t.name), group=name)
        return g

    def _audit(self, uow: PolicyStores, t: Tenant, action: str, **detail: object) -> None:
        uow.events.append(self.ok_event(t.id, Step.ADMIN, detail={"action": action, **detail}))

    def restrictions(self, uow: DefaultsStores, tenant: Tenant) -> tuple[Restriction, ...]:
        """The tenant's restrictions, cached per process and checked against the tenant's policy version."""
        cached = self._cache.get(tenant.id)
        if cached is not None and cached[0] == tenant.policy_version:
            return cached[1]
        rs = tuple(self.ensure_defaults(uow, tenant.id))
        self._cache[tenant.id] = (tenant.policy_version, rs)
        return rs

    def ensure_defaults(self, uow: DefaultsStores, tenant_id: str) -> list[Restriction]:
        return ensure_default_restrictions(uow, tenant_id, self.clock.now())

    # --- the decision -----------------------------------------------------------------------------
    def policy_input(
        self,
        uow: DecisionStores,
        tenant: Tenant,
        *,
        stage: Stage,
        user: User | None,
        platform: Platform | None = None,
        os_version: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        imei: str | None = None,
        ade: bool = False,
        device_enrollments: list[Enrollment] | None = None,
        corporate: bool | None = None,
        userless: bool = False,
    ) -> PolicyInput:
        """The facts the policy engine decides on. A caller that has already read the device's active
        enrollments or its corporate-identifier match passes them, so they are not read twice."""
        restrictions = self.restrictions(uow, tenant)
        facts = None
        count = 0
        other = None
        if device_enrollments is None:
            device_enrollments = (
                uow.enrollments.active_for_device(tenant.id, udid, serial) if (udid or serial) else []
            )
        if user is not None:
            gids = uow.users.group_ids(user.id)
            facts = UserFacts(
                user.id,
                user.upn,
                user.enabled,
                user.licensed,
                user.is_dem,
                frozenset(gids),
                uow.groups.names(tenant.id, gids),
            )
            # Only active enrollments count, and not this device's own (a re-enrollment replaces it).
            count = uow.enrollments.active_count_for_user(user.id) - sum(
                1 for e in device_enrollments if e.user_id == user.id
            )
        for e in device_enrollments:
            if user is None or e.user_id != user.id:
                prev = None if e.user_id is None else uow.users.get(tenant.id, e.user_id)
                other = OtherEnrollment(e.id, e.user_id, None if prev is None else prev.upn, e.started_at)
                break
        if corporate is None:
            corporate = uow.corporate.match(tenant.id, serial, imei) is not None
        corporate = corporate or ade
        blocked = uow.blocks.is_blocked(tenant.id, serial=serial, udid=udid) if (serial or udid) else False
        free = 0
        if user is not None and not user.licensed:  # only then does the number of free seats matter
            free = max(0, tenant.licence_seats - uow.users.licensed_count(tenant.id))
        return PolicyInput(
            stage=stage,
            now=self.clock.now(),
            mdm_authority=tenant.mdm_authority,
            push_not_after=tenant.push_not_after if tenant.push_cert_pem else None,
            user=facts,
            free_seats=free,
            restrictions=restrictions,
            platform=platform,
            os_version=os_version,
            serial=serial,
            udid=udid,
            corporate=corporate,
            blocked=blocked,
            active_device_count=count,
            other_user_enrollment=other,
            userless=userless and user is None,
        )

    def explain(
        self,
        tenant_ref: str,
        upn: str,
        *,
        serial: str | None = None,
        os_version: str | None = None,
        platform: str | None = None,
        udid: str | None = None,
    ) -> Decision:
        """The dry run: what would happen if this user enrolled this device now (at Authenticate)."""
        plat = _platform_arg(platform)
        if os_version is not None:
            _check_version(os_version)
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            user = uow.users.by_upn(t.id, upn)
            inp = self.policy_input(
                uow,
                t,
                stage=Stage.AUTHENTICATE,
                user=user,
                platform=plat,
                os_version=os_version,
                serial=serial,
                udid=udid,
            )
        return decide(inp)

    def link_check(self, tenant_ref: str, upn: str) -> Decision:
        """The dry run for an enrollment link just given to this user: would the link's profile be served
        now (Stage.PROFILE, the portal's checks: authority, push certificate, the user enabled and
        licensed)? The device's own facts are not known yet, so they are not checked."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            user = uow.users.by_upn(t.id, upn)
            inp = self.policy_input(uow, t, stage=Stage.PROFILE, user=user)
        return decide(inp)

    def link_warnings(
        self, tenant_ref: str, upn: str, public_url: str, lang: str | None
    ) -> list[LinkWarning]:
        """What the admin should know about a link just given to ``upn`` on ``public_url`` (the CLI's
        `enroll-token create` and POST .../enrollment-tokens show the same): a plain http:// URL off this
        machine, and the refusal the link would meet now (``link_check``), with its title and the command
        that fixes it (the first of its resolution in the knowledge base)."""
        from pomona import knowledge
        from pomona.i18n import t
        from pomona.services.installation import is_plain_http_remote

        out: list[LinkWarning] = []
        if is_plain_http_remote(public_url):
            out.append(LinkWarning(None, t("cli.warning.plain_http", lang, url=public_url)))
        decision = self.link_check(tenant_ref, upn)
        if decision.allowed or decision.reason is None:
            return out
        code = decision.reason.value
        with self.db.unit_of_work(readonly=True) as uow:
            tenant = self._tenant(uow, tenant_ref)
        facts = {**decision.facts, "tenant": tenant.name, "upn": upn, "seats": tenant.licence_seats}
        title = knowledge.text_for(code, lang, **facts).title
        fixes = knowledge.fix_commands(code, **facts)
        if fixes:
            message = t(
                "cli.warning.cannot_enroll_fix",
                lang,
                upn=upn,
                tenant=tenant.name,
                message=title,
                fix=fixes[0],
            )
        else:
            message = t("cli.warning.cannot_enroll", lang, upn=upn, tenant=tenant.name, message=title)
        out.append(LinkWarning(code, message))
        return out

    # --- licences ---------------------------------------------------------------------------------
    def set_seats(self, tenant_ref: str, seats: int) -> dict[str, int]:
        if not 0 <= seats <= 10_000_000:
            raise InvalidInputError(msg("error.licence.seats"), field="seats")
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            used = uow.users.licensed_count(t.id)
            if seats < used:
                raise InvalidInputError(
                    msg("error.licence.below_used", used=used),
                    field="seats",
                    used=used,
                )
            uow.tenants.set_seats(t.id, seats)
            self._audit(uow, t, "licence.set", seats=seats)
            return {"seats": seats, "assigned": used, "free": seats - used}

    def seats(self, tenant_ref: str) -> dict[str, int]:
        """The tenant's licence seats: how many, how many assigned, how many free."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            used = uow.users.licensed_count(t.id)
        return {"seats": t.licence_seats, "assigned": used, "free": max(0, t.licence_seats - used)}

    def licence(self, tenant_ref: str, upn: str, *, assign: bool) -> dict[str, object]:
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            u = self._user(uow, t, upn)
            used = uow.users.licensed_count(t.id)
            if assign and not u.licensed:
                if used >= t.licence_seats:
                    raise LicensesExhaustedError(
                        msg("error.licence.exhausted", seats=t.licence_seats, tenant=t.name),
                        seats=t.licence_seats,
                    )
                used += 1
            elif not assign and u.licensed:
                used -= 1
            uow.users.update(t.id, u.id, licensed=assign)
            self._audit(uow, t, "licence.assign" if assign else "licence.remove", upn=u.upn)
            return {
                "upn": u.upn,
                "licensed": assign,
                "seats": t.licence_seats,
                "assigned": used,
                "free": t.licence_seats - used,
            }

    # --- users and groups -------------------------------------------------------------------------
    def users_overview(self, tenant_ref: str, *, limit: int = 100, offset: int = 0) -> list[UserSummary]:
        """A page of the tenant's users by UPN, each with its group and active-enrollment counts (two
        indexed counts per user: a page of 100 is a few milliseconds)."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            return [
                UserSummary(u, len(uow.users.group_ids(u.id)), uow.enrollments.active_count_for_user(u.id))
                for u in uow.users.list(t.id, limit=limit, offset=offset)
            ]

    def user_detail(self, tenant_ref: str, upn: str) -> UserDetail:
        """One user: flags, groups by name, and the active enrollments with their devices."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            u = self._user(uow, t, upn.strip().lower())
            names = uow.groups.names(t.id, uow.users.group_ids(u.id))
            active = uow.enrollments.active_for_user(u.id)
            devices = uow.devices.by_ids(t.id, [e.device_id for e in active])
            return UserDetail(u, sorted(names.values()), [(e, devices.get(e.device_id)) for e in active])

    def set_user_flags(self, tenant_ref: str, upn: str, **flags: object) -> User:
        """Change a user's flags. Disabling ends the user's portal sessions at once (re-enabling does
        not revive them); the event names the user."""
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            u = self._user(uow, t, upn.strip().lower())
            uow.users.update(t.id, u.id, **flags)
            if flags.get("enabled") is False:
                uow.portal_sessions.revoke_user(t.id, u.id, self.clock.now(), "user")
            shown = {k: v for k, v in flags.items() if k not in ("totp_secret", "password_hash")}
            uow.events.append(
                self.ok_event(
                    t.id, Step.ADMIN, user_id=u.id, upn=u.upn, detail={"action": "user.update", **shown}
                )
            )
            got = uow.users.get(t.id, u.id)
            assert got is not None
            return got

    def delete_user(self, tenant_ref: str, upn: str) -> None:
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            u = self._user(uow, t, upn)
            uow.users.delete(t.id, u.id)
            self._audit(uow, t, "user.delete", upn=u.upn)

    def create_group(self, tenant_ref: str, name: str) -> Group:
        name = name.strip()
        if not name or len(name) > 255:
            raise InvalidInputError(msg("error.group.name"), field="name")
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            if uow.groups.by_name(t.id, name) is not None:
                raise ConflictError(msg("error.group.exists", group=name), group=name)
            g = Group(str(uuid.uuid4()), t.id, name, self.clock.now())
            uow.groups.add(g)
            self._audit(uow, t, "group.create", group=name)
            return g

    def add_member(self, tenant_ref: str, group: str, upn: str, *, remove: bool = False) -> None:
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            g = self._group(uow, t, group)
            u = self._user(uow, t, upn)
            if remove:
                uow.groups.remove_member(g.id, u.id)
            else:
                uow.groups.add_member(g.id, u.id)
            self._audit(
                uow, t, "group.remove_member" if remove else "group.add_member", group=group, upn=u.upn
            )

    def find_groups(self, tenant_ref: str, contains: str = "", *, limit: int = 100) -> tuple[list[str], int]:
        """The names of the tenant's groups whose name contains ``contains`` (any case), the first
        ``limit`` by name, and how many match in all (a console's group picker)."""
        needle = contains.strip().casefold()
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            names = sorted(
                (g.name for g in uow.groups.list(t.id) if needle in g.name.casefold()), key=str.casefold
            )
        return names[: max(0, limit)], len(names)

    def list_groups(self, tenant_ref: str) -> list[tuple[Group, int]]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            return [(g, uow.groups.member_count(g.id)) for g in uow.groups.list(t.id)]

    # --- restrictions -----------------------------------------------------------------------------
    def list_restrictions(self, tenant_ref: str) -> tuple[list[Restriction], dict[str, str]]:
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            rs = self.ensure_defaults(uow, t.id)
            names = uow.groups.names(t.id, {g for r in rs for g in r.group_ids})
            return rs, names

    def create_restriction(
        self,
        tenant_ref: str,
        *,
        type_: RestrictionKind | str,
        priority: int,
        groups: list[str],
        name: str | None = None,
        **settings: object,
    ) -> Restriction:
        kind = _kind(type_)
        if kind is None:
            raise InvalidInputError(msg("error.restriction.type"), field="type")
        name = None if name is None else name.strip()
        if name is not None and len(name) > MAX_RESTRICTION_NAME:
            raise InvalidInputError(msg("error.restriction.name", max=MAX_RESTRICTION_NAME), field="name")
        if not 1 <= priority < DEFAULT_PRIORITY:
            raise InvalidInputError(msg("error.restriction.priority"), field="priority")
        values = _restriction_settings(kind, settings)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            existing = self.ensure_defaults(uow, t.id)
            if any(r.kind is kind and r.priority == priority for r in existing):
                raise ConflictError(
                    msg("error.restriction.priority_taken", kind=kind.value, priority=priority),
                    priority=priority,
                )
            gids = frozenset(self._group(uow, t, g).id for g in groups)
            blank = RESTRICTION_TYPES[kind](
                id=str(uuid.uuid4()),
                name=name or numbered_restriction_name(kind, priority),
                priority=priority,
                is_default=False,
                group_ids=gids,
            )
            r = replace(blank, **values)  # type: ignore[arg-type]  # this kind's fields: _restriction_settings
            uow.restrictions.add(r, t.id, self.clock.now())
            uow.tenants.bump_policy_version(t.id)
            self._audit(
                uow,
                t,
                "restriction.create",
                restriction=r.name,
                type=kind.value,
                priority=priority,
                groups=groups,
                **values,
            )
            return r

    def edit_restriction(
        self,
        tenant_ref: str,
        *,
        type_: RestrictionKind | str,
        default: bool = False,
        priority: int | None = None,
        new_priority: int | None = None,
        groups: list[str] | None = None,
        **settings: object,
    ) -> Restriction:
        """Edit a restriction (the Default of a type, or the one with `priority`); `groups` adds assignments."""
        kind = _kind(type_)
        if kind is None:  # the kind is part of the restriction's address: no such restriction
            raise NotFoundError(msg("error.restriction.not_found"), type=type_, priority=priority)
        values = _restriction_settings(kind, settings, partial=True)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            rs = self.ensure_defaults(uow, t.id)
            target = next(
                (r for r in rs if r.kind is kind and (r.is_default if default else r.priority == priority)),
                None,
            )
            if target is None:
                raise NotFoundError(msg("error.restriction.not_found"), type=kind.value, priority=priority)
            if new_priority is not None:
                if not 1 <= new_priority < DEFAULT_PRIORITY:
                    raise InvalidInputError(msg("error.restriction.priority"), field="priority")
                if target.is_default:
                    raise InvalidInputError(msg("error.restriction.default_last"), field="priority")
                if any(r.kind is kind and r.priority == new_priority and r.id != target.id for r in rs):
                    raise ConflictError(
                        msg("error.restriction.priority_taken", kind=kind.value, priority=new_priority)
                    )
                values["priority"] = new_priority
            if groups:
                if target.is_default:
                    raise InvalidInputError(msg("error.restriction.default_everyone"))
                for g in groups:
                    uow.restrictions.assign(target.id, self._group(uow, t, g).id)
            uow.restrictions.update(target.id, self.clock.now(), **values)
            uow.tenants.bump_policy_version(t.id)
            assigned = {"groups": groups} if groups else {}
            self._audit(uow, t, "restriction.edit", restriction=target.name, **assigned, **values)
            return next(r for r in uow.restrictions.list(t.id) if r.id == target.id)

    def unassign_restriction(
        self, tenant_ref: str, *, type_: RestrictionKind | str, priority: int, groups: list[str]
    ) -> Restriction:
        """Assign the restriction with `priority` to these groups no longer (`edit_restriction` assigns).
        The Default of a type applies to everyone: it has no groups to remove."""
        kind = _kind(type_)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            rs = self.ensure_defaults(uow, t.id)
            target = next((r for r in rs if r.kind is kind and r.priority == priority), None)
            if target is None:
                raise NotFoundError(msg("error.restriction.not_found"), type=type_, priority=priority)
            if target.is_default:
                raise InvalidInputError(msg("error.restriction.default_everyone"))
            for g in groups:
                uow.restrictions.unassign(target.id, self._group(uow, t, g).id)
            uow.tenants.bump_policy_version(t.id)
            self._audit(uow, t, "restriction.unassign", restriction=target.name, groups=groups)
            return next(r for r in uow.restrictions.list(t.id) if r.id == target.id)

    def delete_restriction(self, tenant_ref: str, type_: RestrictionKind | str, priority: int) -> None:
        kind = _kind(type_)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            target = next(
                (r for r in uow.restrictions.list(t.id) if r.kind is kind and r.priority == priority), None
            )
            if target is None:
                raise NotFoundError(msg("error.restriction.not_found"), type=type_, priority=priority)
            if target.is_default:
                raise InvalidInputError(msg("error.restriction.default_delete"))
            uow.restrictions.delete(target.id)
            uow.tenants.bump_policy_version(t.id)
            self._audit(uow, t, "restriction.delete", restriction=target.name)

    # --- corporate identifiers --------------------------------------------------------------------
    def import_corporate(self, tenant_ref: str, text: str) -> ImportReport:
        """CSV rows `identifier[,description]` (serial numbers, or 15-digit IMEIs). All or nothing."""
        rows: list[CorporateIdentifier] = []
        errors: list[dict[str, object]] = []
        seen: set[tuple[str, str]] = set()
        accepted: list[dict[str, object]] = []
        now = self.clock.now()
        try:  # newline="": the csv module splits lines itself (a lone CR is a line end, not an error)
            records = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:  # a field over the csv module's limit (found by bench/fuzz.py)
            raise InvalidInputError(msg("error.csv.unreadable", error=exc), field="file") from None
        for n, rec in enumerate(records, start=1):
            if not rec or not "".join(rec).strip():
                continue
            raw = rec[0].strip()
            if n == 1 and raw.lower() in ("serial", "imei", "identifier", "serial number", "serialnumber"):
                continue
            value = normalize_identifier(raw)
            kind = "imei" if value.isdigit() and len(value) == _IMEI_DIGITS else "serial"
            if kind == "serial" and not (8 <= len(value) <= 20 and value.isalnum()):
                errors.append(
                    {
                        "row": n,
                        "value": raw,
                        "error": "not a serial number (8-20 letters and digits) nor a 15-digit IMEI",
                        "code": InvalidInputError.reason.value,
                        "key": "error.corporate.row_identifier",
                    }
                )
                continue
            if (kind, value) in seen:
                errors.append(
                    {
                        "row": n,
                        "value": raw,
                        "error": "duplicate of an earlier row",
                        "code": InvalidInputError.reason.value,
                        "key": "error.corporate.row_duplicate",
                    }
                )
                continue
            seen.add((kind, value))
            accepted.append({"row": n, "value": value, "kind": kind})
            desc = rec[1].strip() if len(rec) > 1 and rec[1].strip() else None
            rows.append(
                CorporateIdentifier(str(uuid.uuid4()), "", kind, value, desc, "not_contacted", None, now)
            )
            if len(rows) > MAX_CORPORATE_ROWS:
                raise InvalidInputError(msg("error.corporate.too_many", max=MAX_CORPORATE_ROWS), field="file")
        if errors:
            return ImportReport(0, 0, errors, accepted)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            added = uow.corporate.upsert_many(t.id, [replace(r, tenant_id=t.id) for r in rows])
            self._audit(uow, t, "corporate.import", rows=len(rows), added=added)
        return ImportReport(added, len(rows) - added, [], accepted)

    def list_corporate(
        self, tenant_ref: str, *, limit: int = 1000, offset: int = 0
    ) -> list[CorporateIdentifier]:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.corporate.list(self._tenant(uow, tenant_ref).id, limit=limit, offset=offset)

    # --- devices: block, retire -------------------------------------------------------------------
    def block(
        self,
        tenant_ref: str,
        *,
        serial: str | None = None,
        udid: str | None = None,
        note: str | None = None,
        unblock: bool = False,
    ) -> int:
        """Block (or unblock) a device by serial or UDID. Its active enrollments become blocked: their
        next check-in is answered with Apple's 403 com.apple.unrecognized.device, and the device unenrolls."""
        if (serial is None) == (udid is None):
            raise InvalidInputError(msg("error.device.one_of"))
        kind, value = (
            ("serial", normalize_identifier(serial)) if serial is not None else ("udid", (udid or "").strip())
        )
        if not value:
            raise InvalidInputError(msg("error.device.empty", field=kind), field=kind)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            if unblock:
                uow.blocks.remove(t.id, kind, value)
                self._audit(uow, t, "device.unblock", **{kind: value})
                return 0
            uow.blocks.add(BlockedDevice(str(uuid.uuid4()), t.id, kind, value, note, self.clock.now()))
            ended = 0
            for e in uow.enrollments.active_for_device(
                t.id, value if kind == "udid" else None, value if kind == "serial" else None
            ):
                uow.enrollments.end(e.id, EnrollmentStatus.BLOCKED, self.clock.now())
                uow.commands.cancel_pending(e.id)
                ended += 1
            self._audit(uow, t, "device.block", ended_enrollments=ended, **{kind: value})
            return ended

    def retire(
        self,
        tenant_ref: str,
        *,
        serial: str | None = None,
        udid: str | None = None,
        by_user: User | None = None,
    ) -> int:
        """Retire a device's active enrollment: it stops counting against the limit, and the device is
        told to unenroll at its next check-in. `by_user` limits it to that user's own devices (portal)."""
        if (serial is None) == (udid is None):
            raise InvalidInputError(msg("error.device.one_of"))
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            found = uow.enrollments.active_for_device(
                t.id, udid, normalize_identifier(serial) if serial else None
            )
            if by_user is not None:
                found = [e for e in found if e.user_id == by_user.id]
            if not found:
                raise NotFoundError(msg("error.device.not_enrolled"), serial=serial, udid=udid)
            for e in found:
                uow.enrollments.end(e.id, EnrollmentStatus.RETIRED, self.clock.now())
                uow.commands.cancel_pending(e.id)
            self._audit(
                uow, t, "device.retire", serial=serial, udid=udid, by=None if by_user is None else by_user.upn
            )
            return len(found)


def _platform_arg(platform: str | None) -> Platform | None:
    if platform is None:
        return None
    p = platform.strip().lower()
    if p in ("ios", "iphone", "ipod"):
        return Platform.IOS
    if p in ("ipados", "ipad"):
        return Platform.IPADOS
    if p.startswith("iphone") or p.startswith("ipod"):
        return Platform.IOS
    if p.startswith("ipad"):
        return Platform.IPADOS
    raise InvalidInputError(msg("error.platform"), field="platform")


def _check_version(v: str) -> str:
    try:
        parse_version(v)
    except ValueError as exc:
        raise InvalidInputError(msg("error.os_version", version=v), field="os_version") from exc
    return v


def _kind(value: RestrictionKind | str) -> RestrictionKind | None:
    """The restriction kind an adapter passed (the enum, or its value as the CLI and API spell it)."""
    try:
        return RestrictionKind(value)
    except ValueError:
        return None


def _restriction_settings(
    kind: RestrictionKind, s: dict[str, object], *, partial: bool = False
) -> dict[str, object]:
    """Map CLI/API settings (ios, ipados, personal, min_os, max_os, limit) to the fields of the restriction
    dataclass of ``kind`` (which are also what ``RestrictionStore.update`` takes)."""
    out: dict[str, object] = {}

    def flag(name: str) -> bool | None:
        v = s.get(name)
        if v is None:
            return None
        if isinstance(v, bool):
            return v
        try:
            return Access(str(v)).allowed
        except ValueError:
            raise InvalidInputError(msg("error.restriction.access", name=name), field=name) from None

    if kind is RestrictionKind.PLATFORM:
        for key, fields in (
            ("ios", ("ios_allowed",)),
            ("ipados", ("ipados_allowed",)),
            ("personal", ("ios_personal_allowed", "ipados_personal_allowed")),
            ("ios_personal", ("ios_personal_allowed",)),
            ("ipados_personal", ("ipados_personal_allowed",)),
        ):
            allowed = flag(key)
            if allowed is not None:
                for f in fields:
                    out[f] = allowed
        for key, fields in (
            ("min_os", ("ios_min_os", "ipados_min_os")),
            ("max_os", ("ios_max_os", "ipados_max_os")),
            ("ios_min_os", ("ios_min_os",)),
            ("ios_max_os", ("ios_max_os",)),
            ("ipados_min_os", ("ipados_min_os",)),
            ("ipados_max_os", ("ipados_max_os",)),
        ):
            version = s.get(key)
            if version is not None:
                for f in fields:
                    out[f] = None if version == "" else _check_version(str(version))
        if s.get("limit") is not None:
            raise InvalidInputError(msg("error.restriction.limit_wrong_kind"), field="limit")
    else:
        limit = s.get("limit")
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_DEVICE_LIMIT:
                raise InvalidInputError(
                    msg("error.restriction.limit_range", max=MAX_DEVICE_LIMIT), field="limit"
                )
            out["device_limit"] = limit
        elif not partial:
            out["device_limit"] = DEFAULT_DEVICE_LIMIT
        if any(s.get(k) is not None for k in ("ios", "ipados", "personal", "min_os", "max_os")):
            raise InvalidInputError(msg("error.restriction.platform_wrong_kind"))
    return out


def refusal(decision: Decision) -> PolicyError:
    """The error a refused decision raises, carrying its facts for the event and the response."""
    assert decision.reason is not None
    key, facts = decision.text_key
    err = PolicyError(msg(key, **facts), reason=decision.reason)
    err.context.update(decision.facts)
    return err
