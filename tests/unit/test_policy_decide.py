"""decide(), table-driven over plain domain objects: every check of domain/policy.py's docstring, in its order.

No database: a PolicyInput is built here exactly as PolicyService.policy_input would build it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from pomona.domain.policy import (
    DEFAULT_DEVICE_LIMIT,
    DEM_DEVICE_LIMIT,
    RESTRICTION_TYPES,
    Access,
    DeviceLimitRestriction,
    DeviceTypeRestriction,
    OtherEnrollment,
    Ownership,
    Platform,
    PolicyInput,
    Restriction,
    RestrictionKind,
    Stage,
    UserFacts,
    decide,
)
from pomona.domain.reasons import ReasonCode as R

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LAST = 1_000_000  # the priority the service gives the built-in Defaults
STAFF, SALES, KIOSK = "g-staff", "g-sales", "g-kiosk"

DEFAULT_TYPE = DeviceTypeRestriction("rt-0", "Default platform restriction", LAST, True)
DEFAULT_LIMIT = DeviceLimitRestriction("rl-0", "Default limit restriction", LAST, True)


def user(**changes: object) -> UserFacts:
    base = UserFacts(
        id="u-ann",
        upn="ann@acme.example",
        enabled=True,
        licensed=True,
        is_dem=False,
        group_ids=frozenset({STAFF}),
        group_names={STAFF: "staff", SALES: "sales", KIOSK: "kiosk"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def type_rule(**changes: object) -> DeviceTypeRestriction:
    return replace(DEFAULT_TYPE, **changes)  # type: ignore[arg-type]


def limit_rule(**changes: object) -> DeviceLimitRestriction:
    return replace(DEFAULT_LIMIT, **changes)  # type: ignore[arg-type]


RuleT = TypeVar("RuleT", DeviceTypeRestriction, DeviceLimitRestriction)


def assigned(rule: RuleT, name: str, priority: int, *groups: str) -> RuleT:
    """``rule`` as a restriction of its own, with this priority, assigned to these groups."""
    return replace(
        rule, id=f"r-{name}", name=name, priority=priority, is_default=False, group_ids=frozenset(groups)
    )


def other(user_id: str | None = "u-bob", upn: str | None = "bob@acme.example") -> OtherEnrollment:
    return OtherEnrollment("e-old", user_id, upn, NOW - timedelta(days=30))


def policy_input(**changes: object) -> PolicyInput:
    """An iPhone on iOS 17.4, personally owned, of a licensed user with no devices: allowed."""
    base = PolicyInput(
        stage=Stage.AUTHENTICATE,
        now=NOW,
        mdm_authority="pomona",
        push_not_after=NOW + timedelta(days=300),
        user=user(),
        free_seats=0,
        restrictions=(DEFAULT_TYPE, DEFAULT_LIMIT),
        platform=Platform.IOS,
        os_version="17.4",
        serial="C02XK0ABCDEF",
        udid="00008030-0001",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def documented_checks() -> dict[R, int]:
    """Each refusal code of domain/policy.py's docstring table, with the number of the check it belongs to."""
    from pomona.domain import policy

    found: dict[R, int] = {}
    check = 0
    for line in (policy.__doc__ or "").splitlines():
        if m := re.match(r"\s+(\d+)\. ", line):
            check = int(m.group(1))
        elif not line.strip():
            check = 0  # the table ends at the first blank line
        if check:
            found.update(
                {R(w): check for w in re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", line) if w in R.__members__}
            )
    return found


def only(*rules: Restriction) -> tuple[Restriction, ...]:
    """The Defaults plus these restrictions."""
    return (DEFAULT_TYPE, DEFAULT_LIMIT, *rules)


# (case id, changes to the allowed input, the reason expected, or None for allowed)
CASES: list[tuple[str, dict[str, object], R | None]] = [
    ("baseline", {}, None),
    # 1. MDM authority
    ("no authority", {"mdm_authority": None}, R.MDM_AUTHORITY_NOT_SET),
    ("empty authority", {"mdm_authority": ""}, R.MDM_AUTHORITY_NOT_SET),
    # 2. push certificate
    ("no push cert", {"push_not_after": None}, R.APNS_CERT_MISSING),
    ("push cert expires now", {"push_not_after": NOW}, R.APNS_CERT_EXPIRED),
    ("push cert expired", {"push_not_after": NOW - timedelta(days=1)}, R.APNS_CERT_EXPIRED),
    ("push cert valid 1 s more", {"push_not_after": NOW + timedelta(seconds=1)}, None),
    # 3. user
    ("not in directory", {"user": None}, R.USER_NOT_FOUND),
    ("disabled", {"user": user(enabled=False)}, R.USER_DISABLED),
    ("unlicensed, seats free", {"user": user(licensed=False), "free_seats": 3}, R.USER_NOT_LICENSED),
    ("unlicensed, no seat", {"user": user(licensed=False), "free_seats": 0}, R.LICENSES_EXHAUSTED),
    ("licensed, no seat left", {"free_seats": 0}, None),
    # 4. blocked device
    ("blocked", {"blocked": True}, R.DEVICE_BLOCKED),
    # 5. platform
    ("iOS blocked", {"restrictions": (type_rule(ios_allowed=False), DEFAULT_LIMIT)}, R.PLATFORM_BLOCKED),
    (
        "iPadOS blocked, on iPadOS",
        {"restrictions": (type_rule(ipados_allowed=False), DEFAULT_LIMIT), "platform": Platform.IPADOS},
        R.PLATFORM_BLOCKED,
    ),
    ("iPadOS blocked, on iOS", {"restrictions": (type_rule(ipados_allowed=False), DEFAULT_LIMIT)}, None),
    (
        "platform unknown: no platform check",
        {
            "restrictions": (type_rule(ios_allowed=False, ipados_allowed=False), DEFAULT_LIMIT),
            "platform": None,
        },
        None,
    ),
    # 6. OS range
    ("below minimum", {"restrictions": (type_rule(ios_min_os="17.5"), DEFAULT_LIMIT)}, R.OS_VERSION_TOO_LOW),
    ("at minimum", {"restrictions": (type_rule(ios_min_os="17.4"), DEFAULT_LIMIT)}, None),
    (
        "minimum 17 admits 17.0",
        {"restrictions": (type_rule(ios_min_os="17"), DEFAULT_LIMIT), "os_version": "17.0"},
        None,
    ),
    ("above maximum", {"restrictions": (type_rule(ios_max_os="17.3"), DEFAULT_LIMIT)}, R.OS_VERSION_TOO_HIGH),
    (
        "maximum 17 admits 17.9.1",
        {"restrictions": (type_rule(ios_max_os="17"), DEFAULT_LIMIT), "os_version": "17.9.1"},
        None,
    ),
    (
        "maximum 17 refuses 18.0",
        {"restrictions": (type_rule(ios_max_os="17"), DEFAULT_LIMIT), "os_version": "18.0"},
        R.OS_VERSION_TOO_HIGH,
    ),
    (
        "the iPadOS range does not apply to iOS",
        {"restrictions": (type_rule(ipados_min_os="18", ipados_max_os="16"), DEFAULT_LIMIT)},
        None,
    ),
    (
        "OS unknown: no range check",
        {"restrictions": (type_rule(ios_min_os="18"), DEFAULT_LIMIT), "os_version": None},
        None,
    ),
    (
        "unparsable OS: not refused",
        {"restrictions": (type_rule(ios_min_os="18"), DEFAULT_LIMIT), "os_version": "beta"},
        None,
    ),
    # 7. ownership
    (
        "personal blocked",
        {"restrictions": (type_rule(ios_personal_allowed=False), DEFAULT_LIMIT)},
        R.PERSONAL_DEVICE_BLOCKED,
    ),
    (
        "personal blocked, corporate device",
        {"restrictions": (type_rule(ios_personal_allowed=False), DEFAULT_LIMIT), "corporate": True},
        None,
    ),
    (
        "iPadOS personal blocked, on iOS",
        {"restrictions": (type_rule(ipados_personal_allowed=False), DEFAULT_LIMIT)},
        None,
    ),
    # 8. previous enrollment of this device
    ("enrolled to another user", {"other_user_enrollment": other()}, R.DEVICE_ENROLLED_TO_OTHER_USER),
    (
        "enrolled with no user",
        {"other_user_enrollment": other(user_id=None, upn=None)},
        R.DEVICE_ENROLLED_TO_OTHER_USER,
    ),
    ("enrolled to this same user", {"other_user_enrollment": other(user_id="u-ann")}, None),
    # 9. device limit
    ("one below the limit", {"active_device_count": DEFAULT_DEVICE_LIMIT - 1}, None),
    ("at the limit", {"active_device_count": DEFAULT_DEVICE_LIMIT}, R.DEVICE_LIMIT_REACHED),
    (
        "limit 1, one device",
        {"restrictions": only(limit_rule(device_limit=1)), "active_device_count": 1},
        R.DEVICE_LIMIT_REACHED,
    ),
]


class TestEachCheck:
    @pytest.mark.parametrize(("changes", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
    def test_reason(self, changes: dict[str, object], reason: R | None) -> None:
        """Each check of the docstring refuses with its own code, and only when its condition holds."""
        d = decide(policy_input(**changes))
        assert (d.allowed, d.reason) == (reason is None, reason)

    def test_every_refusal_code_is_in_the_table(self) -> None:
        """The table covers every code decide() can refuse with, as the docstring lists them."""
        assert set(documented_checks()) == {c[2] for c in CASES if c[2] is not None}

    def test_refusal_names_its_facts(self) -> None:
        """A refusal carries the numbers and names it was made on, for the event and the refusal page."""
        rule = type_rule(name="Kiosk iPhones", ios_min_os="17.5")
        d = decide(policy_input(restrictions=(rule, DEFAULT_LIMIT)))
        assert d.reason is R.OS_VERSION_TOO_LOW
        assert d.facts == {"os_version": "17.4", "minimum": "17.5", "restriction": "Kiosk iPhones"}
        limited = decide(policy_input(active_device_count=15))
        assert limited.facts == {"count": 15, "limit": 15, "restriction": "Default limit restriction"}


# The docstring's order: every check fails at first; fixing each one exposes the next, in order.
BROKEN_RULE = type_rule(
    id="rt-x", ios_allowed=False, ios_min_os="18", ios_max_os="16", ios_personal_allowed=False
)
ALL_BROKEN = policy_input(
    mdm_authority=None,
    push_not_after=None,
    user=None,
    blocked=True,
    restrictions=only(BROKEN_RULE),
    active_device_count=DEFAULT_DEVICE_LIMIT,
    other_user_enrollment=other(),
)
# (the refusal expected, the change that fixes it)
WALK: list[tuple[R, dict[str, object]]] = [
    (R.MDM_AUTHORITY_NOT_SET, {"mdm_authority": "pomona"}),
    (R.APNS_CERT_MISSING, {"push_not_after": NOW}),
    (R.APNS_CERT_EXPIRED, {"push_not_after": NOW + timedelta(days=1)}),
    (R.USER_NOT_FOUND, {"user": user(enabled=False, licensed=False)}),
    (R.USER_DISABLED, {"user": user(licensed=False)}),
    (R.LICENSES_EXHAUSTED, {"free_seats": 1}),
    (R.USER_NOT_LICENSED, {"user": user()}),
    (R.DEVICE_BLOCKED, {"blocked": False}),
    (R.PLATFORM_BLOCKED, {"restrictions": only(replace(BROKEN_RULE, ios_allowed=True))}),
    (R.OS_VERSION_TOO_LOW, {"restrictions": only(replace(BROKEN_RULE, ios_allowed=True, ios_min_os=None))}),
    (
        R.OS_VERSION_TOO_HIGH,
        {"restrictions": only(replace(BROKEN_RULE, ios_allowed=True, ios_min_os=None, ios_max_os=None))},
    ),
    (R.PERSONAL_DEVICE_BLOCKED, {"corporate": True}),
    (R.DEVICE_ENROLLED_TO_OTHER_USER, {"other_user_enrollment": None}),
    (R.DEVICE_LIMIT_REACHED, {"active_device_count": DEFAULT_DEVICE_LIMIT - 1}),
]


def _walk() -> list[tuple[R | None, PolicyInput]]:
    """(expected reason, input) pairs: each input is the previous one with the previous check fixed."""
    steps: list[tuple[R | None, PolicyInput]] = []
    inp = ALL_BROKEN
    for reason, fix in WALK:
        steps.append((reason, inp))
        inp = replace(inp, **fix)  # type: ignore[arg-type]
    steps.append((None, inp))  # every check fixed: allowed
    return steps


class TestFirstRefusalWins:
    @pytest.mark.parametrize(("reason", "inp"), _walk(), ids=[str(r or "allowed") for r, _ in _walk()])
    def test_order(self, reason: R | None, inp: PolicyInput) -> None:
        """With every later check also failing, the first failing check of the docstring's order decides."""
        d = decide(inp)
        assert (d.allowed, d.reason) == (reason is None, reason)

    def test_walk_covers_every_check_in_the_docstring_order(self) -> None:
        """The walk passes through every refusal code once, in the order of the docstring's checks."""
        checks = documented_checks()
        walked = [r for r, _ in WALK]
        assert sorted(walked) == sorted(checks)
        assert [checks[r] for r in walked] == sorted(checks[r] for r in walked)

    def test_user_checks_come_before_the_device(self) -> None:
        """An unknown user on a blocked device is told about the user (check 3 before check 4)."""
        assert decide(policy_input(user=None, blocked=True)).reason is R.USER_NOT_FOUND


class TestPriorities:
    def test_assigned_beats_default(self) -> None:
        """A restriction assigned to one of the user's groups applies instead of the Default."""
        staff = assigned(limit_rule(device_limit=3), "staff 3", 2, STAFF)
        d = decide(policy_input(restrictions=only(staff), active_device_count=3))
        assert d.reason is R.DEVICE_LIMIT_REACHED and d.device_limit == 3
        assert d.limit_restriction is not None
        assert (d.limit_restriction.name, d.limit_restriction.via_group, d.limit_restriction.is_default) == (
            "staff 3",
            "staff",
            False,
        )

    def test_best_priority_across_groups_wins(self) -> None:
        """Of the restrictions assigned to the user's groups, the lowest priority number applies."""
        staff = assigned(limit_rule(device_limit=3), "staff 3", 2, STAFF)
        sales = assigned(limit_rule(device_limit=1), "sales 1", 1, SALES)
        both = user(group_ids=frozenset({STAFF, SALES}))
        d = decide(policy_input(user=both, restrictions=only(staff, sales), active_device_count=1))
        assert d.reason is R.DEVICE_LIMIT_REACHED and d.device_limit == 1
        assert d.limit_restriction is not None and d.limit_restriction.via_group == "sales"
        reordered = decide(
            policy_input(user=both, restrictions=only(replace(staff, priority=1), replace(sales, priority=2)))
        )
        assert reordered.device_limit == 3

    def test_other_groups_restrictions_do_not_apply(self) -> None:
        """A restriction assigned only to groups the user is not in is ignored: the Default applies."""
        kiosk = assigned(type_rule(ios_allowed=False), "kiosk", 1, KIOSK)
        d = decide(policy_input(restrictions=only(kiosk)))
        assert d.allowed
        assert d.platform_restriction is not None and d.platform_restriction.is_default

    def test_default_ranks_last_whatever_its_number(self) -> None:
        """The Default of a kind applies only when nothing assigned does, even with a better number."""
        default = type_rule(priority=0)
        staff = assigned(type_rule(ios_allowed=False), "staff", 7, STAFF)
        d = decide(policy_input(restrictions=(default, DEFAULT_LIMIT, staff)))
        assert d.reason is R.PLATFORM_BLOCKED
        assert d.platform_restriction is not None and d.platform_restriction.name == "staff"

    def test_kinds_are_chosen_independently(self) -> None:
        """The device type and device limit restrictions are chosen each among their own kind."""
        staff_type = assigned(type_rule(), "staff type", 1, STAFF)
        d = decide(policy_input(restrictions=only(staff_type)))
        assert d.platform_restriction is not None and d.platform_restriction.name == "staff type"
        assert d.limit_restriction is not None and d.limit_restriction.is_default

    def test_unknown_user_gets_the_defaults(self) -> None:
        """With no user (not in the directory), the Defaults are the restrictions reported."""
        staff = assigned(type_rule(), "staff", 1, STAFF)
        d = decide(policy_input(user=None, restrictions=only(staff)))
        assert d.platform_restriction is not None and d.platform_restriction.is_default
        assert d.limit_restriction is not None and d.limit_restriction.is_default

    def test_no_restrictions_at_all(self) -> None:
        """Without any restriction (no Defaults yet), no platform check runs and the limit is the default 15."""
        d = decide(policy_input(restrictions=(), active_device_count=DEFAULT_DEVICE_LIMIT - 1))
        assert d.allowed and d.device_limit == DEFAULT_DEVICE_LIMIT
        assert d.platform_restriction is None and d.limit_restriction is None
        assert decide(policy_input(restrictions=(), active_device_count=DEFAULT_DEVICE_LIMIT)).reason is (
            R.DEVICE_LIMIT_REACHED
        )


class TestDeviceEnrollmentManager:
    @pytest.mark.parametrize(
        ("count", "reason"), [(DEM_DEVICE_LIMIT - 1, None), (DEM_DEVICE_LIMIT, R.DEVICE_LIMIT_REACHED)]
    )
    def test_dem_limit_is_1000(self, count: int, reason: R | None) -> None:
        """A DEM may enroll up to 1,000 devices, whatever the limit restriction says."""
        d = decide(
            policy_input(
                user=user(is_dem=True),
                restrictions=only(limit_rule(device_limit=1)),
                active_device_count=count,
            )
        )
        assert d.reason is reason and d.device_limit == DEM_DEVICE_LIMIT and d.is_dem

    def test_not_dem_keeps_the_restriction(self) -> None:
        """Without the DEM flag, the same user is held to the limit restriction."""
        d = decide(policy_input(restrictions=only(limit_rule(device_limit=1)), active_device_count=1))
        assert d.reason is R.DEVICE_LIMIT_REACHED and d.device_limit == 1 and not d.is_dem


class TestDeviceCount:
    @pytest.mark.parametrize(("count", "allowed"), [(0, True), (4, True), (5, False), (6, False)])
    def test_count_against_limit(self, count: int, allowed: bool) -> None:
        """The user's active enrollments (this device's own excluded by the caller) must stay below the limit."""
        d = decide(policy_input(restrictions=only(limit_rule(device_limit=5)), active_device_count=count))
        assert d.allowed is allowed and d.device_count == count and d.device_limit == 5

    def test_reenrollment_of_own_device_is_not_refused(self) -> None:
        """This device actively enrolled to this user is not counted (the input excludes it), nor 'another user'."""
        d = decide(
            policy_input(
                restrictions=only(limit_rule(device_limit=1)),
                active_device_count=0,
                other_user_enrollment=None,
            )
        )
        assert d.allowed


class TestStages:
    @pytest.mark.parametrize("stage", [Stage.PORTAL, Stage.PROFILE])
    def test_device_facts_checks_only_at_authenticate(self, stage: Stage) -> None:
        """Ownership and the previous enrollment are checked only at Authenticate, where the device speaks."""
        personal = only(type_rule(id="rt-x", ios_personal_allowed=False))
        assert decide(policy_input(stage=stage, restrictions=personal)).allowed
        assert decide(policy_input(stage=stage, other_user_enrollment=other())).allowed
        assert decide(policy_input(restrictions=personal)).reason is R.PERSONAL_DEVICE_BLOCKED
        assert decide(policy_input(other_user_enrollment=other())).reason is R.DEVICE_ENROLLED_TO_OTHER_USER

    @pytest.mark.parametrize("stage", list(Stage))
    def test_other_checks_at_every_stage(self, stage: Stage) -> None:
        """Platform, OS range and the limit are checked at every stage the facts are known."""
        blocked = only(type_rule(id="rt-x", ios_allowed=False))
        assert decide(policy_input(stage=stage, restrictions=blocked)).reason is R.PLATFORM_BLOCKED
        assert decide(policy_input(stage=stage, active_device_count=15)).reason is R.DEVICE_LIMIT_REACHED

    def test_ownership_is_reported(self) -> None:
        """The decision says whether it treated the device as corporate or personal."""
        assert decide(policy_input(corporate=True)).ownership is Ownership.CORPORATE
        assert decide(policy_input()).ownership is Ownership.PERSONAL


class TestUserless:
    def test_no_user_checks_no_previous_user_no_limit(self) -> None:
        """A userless enrollment (ADE, auth none) skips checks 3, 8 and 9 and is allowed, corporate."""
        inp = policy_input(
            user=None, userless=True, corporate=True, other_user_enrollment=other(), active_device_count=99
        )
        d = decide(inp)
        assert d.allowed and d.ownership is Ownership.CORPORATE
        assert decide(replace(inp, userless=False)).reason is R.USER_NOT_FOUND

    def test_tenant_and_device_checks_still_run(self) -> None:
        """Authority, push certificate, blocked device, platform and OS range still refuse it."""
        base = policy_input(user=None, userless=True, corporate=True)
        assert decide(replace(base, mdm_authority=None)).reason is R.MDM_AUTHORITY_NOT_SET
        assert decide(replace(base, push_not_after=None)).reason is R.APNS_CERT_MISSING
        assert decide(replace(base, blocked=True)).reason is R.DEVICE_BLOCKED
        blocked = only(type_rule(id="rt-x", ios_allowed=False))
        assert decide(replace(base, restrictions=blocked)).reason is R.PLATFORM_BLOCKED
        low = only(type_rule(id="rt-x", ios_min_os="18"))
        assert decide(replace(base, restrictions=low)).reason is R.OS_VERSION_TOO_LOW


class TestRestrictionTypes:
    def test_one_dataclass_per_kind(self) -> None:
        """Each RestrictionKind has its own frozen dataclass, which names its kind."""
        assert set(RESTRICTION_TYPES) == set(RestrictionKind)
        for kind, cls in RESTRICTION_TYPES.items():
            assert cls.kind is kind
        assert not hasattr(DEFAULT_TYPE, "device_limit") and not hasattr(DEFAULT_LIMIT, "ios_allowed")

    @pytest.mark.parametrize(("access", "allowed"), [(Access.ALLOW, True), (Access.BLOCK, False)])
    def test_access_round_trip(self, access: Access, allowed: bool) -> None:
        """allow/block map to booleans and back."""
        assert access.allowed is allowed and Access.of(allowed) is access
