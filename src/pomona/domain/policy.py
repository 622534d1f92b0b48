"""The enrollment policy engine: who may enroll what, as Intune decides it. Pure: no I/O.

Checks run in a fixed order, and the first refusal wins:

    1. MDM authority set                      MDM_AUTHORITY_NOT_SET
    2. push certificate present and valid     APNS_CERT_MISSING, APNS_CERT_EXPIRED
    3. user found, enabled, licensed          USER_NOT_FOUND, USER_DISABLED, USER_NOT_LICENSED,
                                              LICENSES_EXHAUSTED (unlicensed, and no seat is free)
    4. device not blocked                     DEVICE_BLOCKED                     (when the device is known)
    5. device type restriction: platform      PLATFORM_BLOCKED
    6. device type restriction: OS range      OS_VERSION_TOO_LOW, OS_VERSION_TOO_HIGH  (when the OS is known)
    7. ownership: personal devices allowed    PERSONAL_DEVICE_BLOCKED            (at Authenticate)
    8. previous enrollment of this device     DEVICE_ENROLLED_TO_OTHER_USER      (at Authenticate)
    9. device limit restriction               DEVICE_LIMIT_REACHED

A userless enrollment (``PolicyInput.userless``: an ADE device whose profile signs no user in, auth
``none``) has no user to check: checks 3, 8 and 9 are skipped, and the Default restrictions apply (no
group). Every other check runs as above; an ADE device is corporate, so check 7 never refuses it.

Restrictions come in two kinds (``RestrictionKind``), one dataclass each: a ``DeviceTypeRestriction``
decides checks 5 to 7, a ``DeviceLimitRestriction`` check 9. Restrictions of one kind apply by group; the
one with the best (lowest) priority number among those assigned to a group of the user wins; the
built-in Default of each kind applies to everyone and ranks last.

Which devices count against the limit: the user's ACTIVE enrollments only. Removed (checked out or
erased), replaced, retired and blocked enrollments do not count, and neither does the device being
enrolled when it is already actively enrolled to this same user (a re-enrollment replaces its record).
A device enrollment manager (DEM) may enroll up to 1,000 devices, whatever the limit restriction says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypeAlias, TypeVar

from pomona.domain.reasons import ReasonCode

DEFAULT_DEVICE_LIMIT = 15
MAX_DEVICE_LIMIT = 15
DEM_DEVICE_LIMIT = 1000


class Platform(StrEnum):
    IOS = "ios"
    IPADOS = "ipados"


class Stage(StrEnum):
    PORTAL = "portal"  # before any profile is served: what the browser says
    PROFILE = "profile"  # the enrollment link is fetched: the same checks as the portal
    AUTHENTICATE = "authenticate"  # the device's own facts


class Ownership(StrEnum):
    CORPORATE = "corporate"
    PERSONAL = "personal"


def platform_of_product(product: str | None) -> Platform | None:
    """iPhone*/iPod* are iOS, iPad* is iPadOS (Apple's ProductName values)."""
    if not product:
        return None
    if product.startswith("iPad"):
        return Platform.IPADOS
    if product.startswith(("iPhone", "iPod")):
        return Platform.IOS
    return None


# A Safari User-Agent is a few hundred characters; a longer header is an attack, never a device. Both
# patterns run in linear time: the first takes each "(iPhone..." group up to its ")" in one pass (no lazy
# quantifier scanning ahead from every start: that was quadratic in the header's length), and the second
# looks for the version inside that group only.
MAX_USER_AGENT = 1024
_UA_GROUP = re.compile(r"\((iPhone|iPad|iPod)([^)]*)")
_UA_OS = re.compile(r"OS (\d+)[_.](\d+)(?:[_.](\d+))?")


def platform_of_user_agent(user_agent: str | None) -> tuple[Platform | None, str | None]:
    """Platform and OS version from a Safari User-Agent. iPadOS 13+ Safari asks for the desktop site
    and says 'Macintosh': then neither is known, and Authenticate decides with the device's own facts.
    Only the first ``MAX_USER_AGENT`` characters are read."""
    if not user_agent:
        return None, None
    for group in _UA_GROUP.finditer(user_agent[:MAX_USER_AGENT]):
        m = _UA_OS.search(group.group(2))
        if m:
            platform = Platform.IPADOS if group.group(1) == "iPad" else Platform.IOS
            version = ".".join(x for x in m.group(1, 2, 3) if x is not None)
            return platform, version
    return None, None


def platform_from_detail(detail: dict[str, object]) -> str:
    """The platform an event speaks of, from what it recorded: the product, or the browser's User-Agent."""
    product = detail.get("product")
    if isinstance(product, str) and (p := platform_of_product(product)) is not None:
        return p.value
    ua = detail.get("user_agent")
    if isinstance(ua, str) and (p := platform_of_user_agent(ua)[0]) is not None:
        return p.value
    plat = detail.get("platform")
    if isinstance(plat, str) and plat in ("ios", "ipados"):
        return plat
    return "unknown"


def parse_version(text: str) -> tuple[int, ...]:
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ValueError(f"not an OS version: {text!r} (use 17, 17.4 or 17.4.1)")
    return tuple(int(p) for p in parts)


def version_lt(a: str, b: str) -> bool:
    ta, tb = parse_version(a), parse_version(b)
    n = max(len(ta), len(tb))
    return ta + (0,) * (n - len(ta)) < tb + (0,) * (n - len(tb))


def version_gt_max(version: str, maximum: str) -> bool:
    """A maximum of '17' admits every 17.x; '17.4' admits 17.4.x."""
    tv, tm = parse_version(version), parse_version(maximum)
    return tv[: len(tm)] > tm


class RestrictionKind(StrEnum):
    """The two kinds of enrollment restriction, as Intune has them (the stored ``type`` column)."""

    PLATFORM = "platform"  # device type: platforms, OS range, personally-owned devices
    LIMIT = "limit"  # device limit: how many devices a user may enroll


# The names Pomona gives restrictions itself. They are stored as they are and are stable keys: every
# surface shows them in its reader's language (``presenters.display_name``), never as stored.
def default_restriction_name(kind: RestrictionKind) -> str:
    """The stored name of the built-in Default restriction of ``kind``."""
    return f"Default {kind.value} restriction"


def numbered_restriction_name(kind: RestrictionKind, priority: int) -> str:
    """The stored name of a restriction created without one."""
    return f"{kind.value} restriction {priority}"


_NUMBERED_NAME = re.compile(r"(platform|limit) restriction ([1-9][0-9]*)")


def builtin_name_key(name: str) -> tuple[str, dict[str, object]] | None:
    """The catalogue key (``name.restriction.*``) and values of a name Pomona gave, to show it in the
    reader's language; None for a name an admin gave."""
    for kind in RestrictionKind:
        if name == default_restriction_name(kind):
            return f"name.restriction.default.{kind.value}", {}
    m = _NUMBERED_NAME.fullmatch(name)
    if m:
        return f"name.restriction.numbered.{m[1]}", {"priority": int(m[2])}
    return None


class Access(StrEnum):
    """A restriction setting as admins write it (CLI ``--ios block``, API ``"ios": "block"``)."""

    ALLOW = "allow"
    BLOCK = "block"

    @classmethod
    def of(cls, allowed: bool) -> Access:
        return cls.ALLOW if allowed else cls.BLOCK

    @property
    def allowed(self) -> bool:
        return self is Access.ALLOW


@dataclass(frozen=True, slots=True)
class _RestrictionBase:
    """What every restriction has: a priority (1 is the highest; the Default of a kind ranks last whatever
    its number) and the groups it is assigned to (none for the Default, which applies to everyone)."""

    id: str
    name: str
    priority: int
    is_default: bool
    group_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DeviceTypeRestriction(_RestrictionBase):
    """Which platforms may enroll, in which OS range, and whether personally-owned devices may.

    https://learn.microsoft.com/mem/intune/enrollment/enrollment-restrictions-set
    """

    kind: ClassVar[RestrictionKind] = RestrictionKind.PLATFORM

    ios_allowed: bool = True
    ipados_allowed: bool = True
    ios_personal_allowed: bool = True
    ipados_personal_allowed: bool = True
    ios_min_os: str | None = None
    ios_max_os: str | None = None
    ipados_min_os: str | None = None
    ipados_max_os: str | None = None

    def allowed(self, p: Platform) -> bool:
        return self.ios_allowed if p is Platform.IOS else self.ipados_allowed

    def personal_allowed(self, p: Platform) -> bool:
        return self.ios_personal_allowed if p is Platform.IOS else self.ipados_personal_allowed

    def os_range(self, p: Platform) -> tuple[str | None, str | None]:
        return (
            (self.ios_min_os, self.ios_max_os)
            if p is Platform.IOS
            else (self.ipados_min_os, self.ipados_max_os)
        )


@dataclass(frozen=True, slots=True)
class DeviceLimitRestriction(_RestrictionBase):
    """How many devices a user may enroll (1 to MAX_DEVICE_LIMIT; a DEM always gets DEM_DEVICE_LIMIT).

    https://learn.microsoft.com/mem/intune/enrollment/enrollment-restrictions-set
    """

    kind: ClassVar[RestrictionKind] = RestrictionKind.LIMIT

    device_limit: int = DEFAULT_DEVICE_LIMIT


Restriction: TypeAlias = DeviceTypeRestriction | DeviceLimitRestriction
RESTRICTION_TYPES: dict[RestrictionKind, type[Restriction]] = {
    RestrictionKind.PLATFORM: DeviceTypeRestriction,
    RestrictionKind.LIMIT: DeviceLimitRestriction,
}


@dataclass(frozen=True, slots=True)
class UserFacts:
    id: str
    upn: str
    enabled: bool
    licensed: bool
    is_dem: bool
    group_ids: frozenset[str]
    group_names: dict[str, str] = field(default_factory=dict)  # id -> name, for explanations


@dataclass(frozen=True, slots=True)
class OtherEnrollment:
    enrollment_id: str
    user_id: str | None
    upn: str | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class PolicyInput:
    stage: Stage
    now: datetime
    mdm_authority: str | None
    push_not_after: datetime | None  # None: no push certificate
    user: UserFacts | None  # None: not in the directory
    free_seats: int
    restrictions: tuple[Restriction, ...]
    platform: Platform | None = None
    os_version: str | None = None
    serial: str | None = None
    udid: str | None = None
    corporate: bool = False  # listed as a corporate identifier, or ADE
    blocked: bool = False
    active_device_count: int = 0  # the user's active enrollments, not counting this device's own
    other_user_enrollment: OtherEnrollment | None = None
    userless: bool = False  # no user to check (an ADE device with auth none): checks 3, 8, 9 skipped


@dataclass(frozen=True, slots=True)
class Applied:
    """Which restriction of one type applied, and why."""

    id: str
    name: str
    priority: int
    is_default: bool
    via_group: str | None  # the group that made it apply (None for the Default)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: ReasonCode | None
    message: str  # English, for logs and the admin API; user-facing text comes from the catalogue
    platform_restriction: Applied | None
    limit_restriction: Applied | None
    device_count: int
    device_limit: int
    ownership: Ownership
    is_dem: bool
    facts: dict[str, object] = field(default_factory=dict)  # the numbers and names the refusal names

    @property
    def text_key(self) -> tuple[str, dict[str, object]]:
        """The catalogue key of what the decision says (``decision.<CODE>``, whose English is ``message``)
        and the values it names: surfaces render it in their reader's language."""
        if self.reason is None:
            return "decision.allowed", {}
        if self.reason is ReasonCode.DEVICE_ENROLLED_TO_OTHER_USER and not self.facts.get("previous_user"):
            return "decision.DEVICE_ENROLLED_TO_OTHER_USER.unknown", dict(self.facts)
        return f"decision.{self.reason.value}", dict(self.facts)

    def to_dict(self) -> dict[str, object]:
        def applied(a: Applied | None) -> dict[str, object] | None:
            if a is None:
                return None
            return {
                "id": a.id,
                "name": a.name,
                "priority": a.priority,
                "default": a.is_default,
                "via_group": a.via_group,
            }

        return {
            "allowed": self.allowed,
            "reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "platform_restriction": applied(self.platform_restriction),
            "limit_restriction": applied(self.limit_restriction),
            "device_count": self.device_count,
            "device_limit": self.device_limit,
            "ownership": self.ownership.value,
            "dem": self.is_dem,
            "facts": self.facts,
        }


R = TypeVar("R", DeviceTypeRestriction, DeviceLimitRestriction)


def applicable(
    restrictions: tuple[Restriction, ...], kind: type[R], user: UserFacts | None
) -> tuple[R, Applied] | None:
    """The restriction of ``kind`` that applies to the user: best priority among assigned, else Default."""
    best: tuple[int, R, str] | None = None
    default: R | None = None
    for r in restrictions:
        if not isinstance(r, kind):
            continue
        if r.is_default:
            default = r
            continue
        if user is None:
            continue
        hit = sorted(r.group_ids & user.group_ids)
        if hit and (best is None or r.priority < best[0]):
            best = (r.priority, r, hit[0])
    if best is not None:
        r, gid = best[1], best[2]
        name = user.group_names.get(gid, gid) if user else gid
        return r, Applied(r.id, r.name, r.priority, False, name)
    if default is not None:
        return default, Applied(default.id, default.name, default.priority, True, None)
    return None


def decide(inp: PolicyInput) -> Decision:
    """The decision on ``inp``: the checks of the module docstring, in its order; the first refusal wins."""
    user = inp.user
    type_rule = applicable(inp.restrictions, DeviceTypeRestriction, user)
    limit_rule = applicable(inp.restrictions, DeviceLimitRestriction, user)
    plat = None if type_rule is None else type_rule[1]
    lim = None if limit_rule is None else limit_rule[1]
    is_dem = bool(user and user.is_dem)
    limit_value = (
        DEM_DEVICE_LIMIT
        if is_dem
        else (limit_rule[0].device_limit if limit_rule is not None else DEFAULT_DEVICE_LIMIT)
    )
    ownership = Ownership.CORPORATE if inp.corporate else Ownership.PERSONAL
    count = inp.active_device_count

    def refuse(reason: ReasonCode, message: str, **facts: object) -> Decision:
        return Decision(False, reason, message, plat, lim, count, limit_value, ownership, is_dem, dict(facts))

    if not inp.mdm_authority:
        return refuse(ReasonCode.MDM_AUTHORITY_NOT_SET, "the tenant's MDM authority is not set")
    if inp.push_not_after is None:
        return refuse(ReasonCode.APNS_CERT_MISSING, "the tenant has no APNs push certificate")
    if inp.push_not_after <= inp.now:
        return refuse(
            ReasonCode.APNS_CERT_EXPIRED,
            "the APNs push certificate has expired",
            expired_at=inp.push_not_after.isoformat(),
        )
    if user is None:
        if not inp.userless:
            return refuse(ReasonCode.USER_NOT_FOUND, "the user is not in this tenant's directory")
    elif not user.enabled:
        return refuse(ReasonCode.USER_DISABLED, "the user is disabled", upn=user.upn)
    elif not user.licensed:
        if inp.free_seats <= 0:
            return refuse(
                ReasonCode.LICENSES_EXHAUSTED, "the user has no licence and no seat is free", upn=user.upn
            )
        return refuse(
            ReasonCode.USER_NOT_LICENSED, "the user has no licence", upn=user.upn, free_seats=inp.free_seats
        )
    if inp.blocked:
        return refuse(
            ReasonCode.DEVICE_BLOCKED, "an admin blocked this device", serial=inp.serial, udid=inp.udid
        )
    if inp.platform is not None and type_rule is not None:
        r = type_rule[0]
        if not r.allowed(inp.platform):
            return refuse(
                ReasonCode.PLATFORM_BLOCKED,
                f"{inp.platform.value} is blocked by {r.name}",
                platform=inp.platform.value,
                restriction=r.name,
            )
        low, high = r.os_range(inp.platform)
        if inp.os_version:
            try:
                if low and version_lt(inp.os_version, low):
                    return refuse(
                        ReasonCode.OS_VERSION_TOO_LOW,
                        f"{inp.os_version} is below the minimum {low}",
                        os_version=inp.os_version,
                        minimum=low,
                        restriction=r.name,
                    )
                if high and version_gt_max(inp.os_version, high):
                    return refuse(
                        ReasonCode.OS_VERSION_TOO_HIGH,
                        f"{inp.os_version} is above the maximum {high}",
                        os_version=inp.os_version,
                        maximum=high,
                        restriction=r.name,
                    )
            except ValueError:
                pass  # an unparsable version reported by a device is not ours to refuse on
        if inp.stage is Stage.AUTHENTICATE and not inp.corporate and not r.personal_allowed(inp.platform):
            return refuse(
                ReasonCode.PERSONAL_DEVICE_BLOCKED,
                f"personally-owned {inp.platform.value} devices are blocked by {r.name}",
                platform=inp.platform.value,
                restriction=r.name,
                serial=inp.serial,
            )
    other = inp.other_user_enrollment
    if user is None:  # userless: no previous-user check, no device limit
        return Decision(True, None, "allowed", plat, lim, count, limit_value, ownership, is_dem, {})
    if inp.stage is Stage.AUTHENTICATE and other is not None and other.user_id != user.id:
        return refuse(
            ReasonCode.DEVICE_ENROLLED_TO_OTHER_USER,
            f"the device is still enrolled to {other.upn or 'another user'}",
            previous_user=other.upn,
            previous_enrollment=other.enrollment_id,
            since=other.started_at.isoformat(),
            serial=inp.serial,
        )
    if count >= limit_value:
        return refuse(
            ReasonCode.DEVICE_LIMIT_REACHED,
            f"{count} of {limit_value} devices are enrolled",
            count=count,
            limit=limit_value,
            restriction=None if lim is None else lim.name,
        )
    return Decision(True, None, "allowed", plat, lim, count, limit_value, ownership, is_dem, {})
