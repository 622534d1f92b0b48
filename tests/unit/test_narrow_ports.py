"""Narrow ports (ports.py): each service names the stores its transactions use, read here from its
Protocol's members; mypy --strict holds the code to them, and this file holds the Protocols to intent."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, get_args, get_origin, get_type_hints

import pytest

import pomona.services
from pomona.domain.checks import Finding
from pomona.domain.errors import BodyTooLargeError
from pomona.pki.adapters import LocalPki
from pomona.pki.scep import LocalScep
from pomona.pki.sealing import KeyringSealer
from pomona.ports import UnitOfWork
from pomona.push.certkit import LocalPushCertKit
from pomona.push.gateway import TenantIdentitySource
from pomona.services.abm import AbmService
from pomona.services.ade import AdeEnrollmentService
from pomona.services.admin import AdminService
from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
from pomona.services.base import ServiceBase
from pomona.services.checkin import CheckinCore, CheckinService, RecordRefusals
from pomona.services.checkin.results import RESULT_HOOKS
from pomona.services.checks import DiscoverySettings
from pomona.services.commands import CommandService
from pomona.services.console import ConsoleService
from pomona.services.console_admin import AdminPagesService
from pomona.services.console_apple import AppleSettingsService
from pomona.services.console_reports import ConsoleReportsService
from pomona.services.diagnose import Context, DiagnoseService
from pomona.services.directory_import import HasPolicy
from pomona.services.enrollment import EnrollmentService, Urls
from pomona.services.health import HealthService
from pomona.services.policy import PolicyService
from pomona.services.portal import PortalService
from pomona.services.push import PushService
from pomona.services.reports import ReportService
from pomona.services.retention import RetentionService
from pomona.services.scep import ScepService
from pomona.storage.database import SqlUnitOfWork
from pomona.testing import FrozenClock, MemoryDatabase

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


# --- reading the Protocols ------------------------------------------------------------------------
def stores(proto: type) -> dict[str, object]:
    """The stores a Protocol declares, inherited ones included: each read-only property and its type."""
    out: dict[str, object] = {}
    for k in reversed(proto.__mro__):
        if k in (object, Generic, Protocol) or not getattr(k, "_is_protocol", False):
            continue
        for name, member in vars(k).items():
            if isinstance(member, property):
                assert member.fget is not None
                out[name] = get_type_hints(member.fget)["return"]
    return out


def declared(cls: type) -> type:
    """X of a service class's ``ServiceBase[X]``."""
    for k in cls.__mro__:
        for base in getattr(k, "__orig_bases__", ()):
            if get_origin(base) is ServiceBase:
                (proto,) = get_args(base)
                assert isinstance(proto, type)
                return proto
    raise AssertionError(f"{cls.__name__} does not say which stores it uses")


def transactions_of(annotation: object) -> type:
    """X of ``Transactions[X]`` (or of a Protocol that extends ``Transactions[X]``)."""
    for t in (annotation, *getattr(annotation, "__orig_bases__", ())):
        args = get_args(t)
        if args and getattr(get_origin(t), "__name__", "") == "Transactions":
            assert isinstance(args[0], type)
            return args[0]
    raise AssertionError(f"{annotation!r} opens no units of work")


def db_type(cls: type) -> type:
    """The class of a service's ``db`` (the origin, for a plain ``Transactions[X]``)."""
    t = get_type_hints(cls)["db"]
    origin = get_origin(t) or t
    assert isinstance(origin, type)
    return origin


def discovered() -> set[type]:
    """Every ServiceBase subclass defined under pomona.services."""
    found: set[type] = set()
    for info in pkgutil.walk_packages(pomona.services.__path__, "pomona.services."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, ServiceBase) and obj is not ServiceBase:
                found.add(obj)
    return found


EVERY_STORE = set(stores(UnitOfWork))
DECISION = {"restrictions", "users", "groups", "enrollments", "corporate", "blocks"}  # policy_input reads
CHECKIN = DECISION | {"tenants", "certs", "devices", "commands", "pushes", "events"}

# The reviewed record: a service that needs another store changes its Protocol AND this line.
EXPECTED: dict[type, set[str]] = {
    AbmService: {"tenants", "abm", "events"},
    AdeEnrollmentService: DECISION | {"tenants", "abm", "enrollment_tokens", "events"},
    AdminService: {"tenants", "users", "api_tokens", "enrollment_tokens", "restrictions", "events"},
    ApnsLifecycle: {"tenants", "push_certs", "reenrollments", "pushes", "reachability", "events"},
    Notifier: {"tenants", "webhooks", "events"},
    CheckinCore: CHECKIN,
    CheckinService: CHECKIN,
    ConsoleService: {
        "tenants",
        "admins",
        "console_sessions",
        "audit",
        "device_listing",
        "user_listing",
        "devices",
        "enrollments",
        "commands",
        "users",
        "pushes",
        "reachability",
        "abm_view",
        "blocks",
        "events",
    },
    AppleSettingsService: {"abm_listing", "events"},
    AdminPagesService: {"events"},
    ConsoleReportsService: {"report_listing", "events"},
    CommandService: {"tenants", "devices", "enrollments", "commands", "pushes", "events"},
    DiagnoseService: DECISION | {"tenants", "devices", "events", "reachability", "abm_view"},
    EnrollmentService: DECISION | {"tenants", "enrollment_tokens", "certs", "events"},
    HealthService: {"tenants", "users", "health", "events", "abm_view"},
    PolicyService: DECISION | {"tenants", "commands", "events", "devices", "portal_sessions"},
    PortalService: DECISION | {"tenants", "devices", "events", "portal_sessions"},
    PushService: {"tenants", "pushes", "reachability", "push_certs", "events"},
    ReportService: {"tenants", "events"},
    RetentionService: {"tenants", "history", "events"},
    ScepService: {"tenants", "events"},
}

# Consumers that are not services, and methods that run in their caller's unit of work.
OTHERS: dict[str, tuple[type, set[str]]] = {
    "RecordRefusals": (
        transactions_of(get_type_hints(RecordRefusals.__init__)["db"]),
        {"events", "enrollments"},
    ),
    "TenantIdentitySource": (
        transactions_of(get_type_hints(TenantIdentitySource.__init__)["db"]),
        {"push_certs"},
    ),
    "import_users": (get_args(stores(HasPolicy)["policy"])[0], {"tenants", "users", "groups", "events"}),
    "Context.uow (checkers)": (
        get_type_hints(Context)["uow"],
        DECISION | {"reachability", "events", "abm_view"},
    ),
    "PolicyService.policy_input": (get_type_hints(PolicyService.policy_input)["uow"], DECISION),
    "PolicyService.ensure_defaults": (get_type_hints(PolicyService.ensure_defaults)["uow"], {"restrictions"}),
    "AdminService.tenant": (get_type_hints(AdminService.tenant)["uow"], {"tenants"}),
    "PushService.request": (get_type_hints(PushService.request)["uow"], {"pushes"}),
    "command result hooks": (
        get_type_hints(next(iter(RESULT_HOOKS.values())))["uow"],
        {"devices", "enrollments", "commands"},
    ),
}
assert len({get_type_hints(hook)["uow"] for hook in RESULT_HOOKS.values()}) == 1


class TestEveryServiceDeclaresItsStores:
    def test_every_service_is_listed(self) -> None:
        """Every ServiceBase subclass under pomona.services names a stores Protocol and is in EXPECTED."""
        found = discovered()
        assert found == set(EXPECTED)
        for cls in found:
            assert getattr(declared(cls), "_is_protocol", False), cls.__name__
            assert declared(cls) is not UnitOfWork, cls.__name__

    @pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
    def test_declared_stores(self, cls: type) -> None:
        """A service's Protocol declares the stores of the record, no more and no fewer."""
        assert set(stores(declared(cls))) == EXPECTED[cls]

    @pytest.mark.parametrize("name", list(OTHERS))
    def test_other_consumers(self, name: str) -> None:
        """The identity source, the refusal recorder, the import, the checkers and the methods that run in
        a caller's unit of work each declare their own, smaller set."""
        proto, expected = OTHERS[name]
        assert set(stores(proto)) == expected


class TestNarrow:
    def test_no_service_reaches_every_store(self) -> None:
        """No service's Protocol is the whole UnitOfWork: each leaves out at least a third of the stores."""
        for cls in EXPECTED:
            assert len(stores(declared(cls))) <= len(EVERY_STORE) * 2 // 3, cls.__name__

    def test_checkin_cannot_reach_admin_or_certificate_stores(self) -> None:
        """The check-in chain (service, core, refusal recorder) reaches no API token, enrollment token,
        webhook, health finding, push certificate, re-enrollment or reachability store."""
        forbidden = {"api_tokens", "enrollment_tokens", "webhooks", "health", "push_certs"}
        forbidden |= {"reenrollments", "reachability"}
        for proto in (declared(CheckinService), declared(CheckinCore), OTHERS["RecordRefusals"][0]):
            assert not forbidden & set(stores(proto)), proto.__name__

    @pytest.mark.parametrize(
        ("store", "who"),
        [
            ("api_tokens", {AdminService}),
            ("enrollment_tokens", {AdminService, EnrollmentService, AdeEnrollmentService}),
            ("webhooks", {Notifier}),
            ("push_certs", {PushService, ApnsLifecycle}),
            ("reenrollments", {ApnsLifecycle}),
            ("health", {HealthService}),
            ("abm", {AbmService, AdeEnrollmentService}),
            ("certs", {EnrollmentService, CheckinService, CheckinCore}),
        ],
    )
    def test_who_reaches_a_secret_bearing_store(self, store: str, who: set[type]) -> None:
        """Stores of secrets and credentials are reached by the services that own them, and no other."""
        assert {cls for cls in EXPECTED if store in stores(declared(cls))} == who

    def test_only_checkin_reads_the_channel_and_only_the_portal_the_settings(self) -> None:
        """The hot read outside transactions is the check-in chain's; the server settings the portal's."""
        channel = {cls for cls in EXPECTED if hasattr(db_type(cls), "channel_state")}
        settings = {cls for cls in EXPECTED if hasattr(db_type(cls), "settings_get")}
        assert channel == {CheckinService, CheckinCore}
        assert settings == {PortalService}
        for cls in channel | settings:  # the extra part comes with the service's own stores
            assert transactions_of(db_type(cls)) is declared(cls)


class TestBackendsSatisfyEveryProtocol:
    def _protocols(self) -> list[type]:
        return [declared(cls) for cls in EXPECTED] + [proto for proto, _ in OTHERS.values()]

    def test_declared_types_are_the_unit_of_works(self) -> None:
        """Each declared store has the UnitOfWork's type, so a whole Database is every consumer's port."""
        every = stores(UnitOfWork)
        for proto in self._protocols():
            for name, t in stores(proto).items():
                assert every[name] is t, f"{proto.__name__}.{name}"

    def test_both_backends_provide_every_declared_store(self) -> None:
        """The SQL and in-memory units of work both have every store some consumer declares."""
        names = {name for proto in self._protocols() for name in stores(proto)}
        with MemoryDatabase().unit_of_work(readonly=True) as uow:
            assert all(getattr(uow, name, None) is not None for name in names)
        assert names <= set(vars(SqlUnitOfWork))

    def test_every_service_runs_over_memory(self) -> None:
        """Wired as app.py wires them, over MemoryDatabase (mypy checks it is each one's port): a tenant is
        created and checked, the portal keeps its session key, a check-in refusal is recorded and reported."""
        w = wire(MemoryDatabase(), FrozenClock(START))
        tenant = w.admin.create_tenant("acme", "acme.example", key_type="p256")
        assert w.health.run("acme")["tenant"] == "acme"
        assert w.portal.session_secret() == w.portal.session_secret()
        with pytest.raises(BodyTooLargeError):
            w.checkin.refuse_oversized(tenant.id, "connect")
        report = w.reports.failures(
            "acme", since=START - timedelta(hours=1), until=START + timedelta(hours=1)
        )
        assert report["top_reasons"] == [{"reason": BodyTooLargeError.reason.value, "count": 1}]


class FakeSigner:
    def sign(self, content: bytes) -> bytes:
        return content


class FakePoster:
    def check(self, url: str) -> None:
        pass

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        return 204


def no_findings(tenant_id: str, now: datetime, enrollment_ids: object = None, /) -> list[Finding]:
    return []


@dataclass
class Wired:
    identities: TenantIdentitySource
    policy: PolicyService
    admin: AdminService
    enrollment: EnrollmentService
    push: PushService
    scep: ScepService
    checkin: CheckinService
    commands: CommandService
    portal: PortalService
    diagnose: DiagnoseService
    health: HealthService
    reports: ReportService
    apns: ApnsLifecycle
    notifier: Notifier


def wire(db: MemoryDatabase, clock: FrozenClock) -> Wired:
    """Every service over one in-memory database, as app.build does over SQL."""
    pki, kit = LocalPki(), LocalPushCertKit(KeyringSealer([bytes(32)]))
    discovery = DiscoverySettings("enroll.example", "register.example")
    policy = PolicyService(db, clock)
    admin = AdminService(db, clock, pki)
    enrollment = EnrollmentService(db, clock, pki, FakeSigner(), Urls("https://pomona.test"), policy)
    push = PushService(db, clock)
    return Wired(
        identities=TenantIdentitySource(db, kit.open),
        policy=policy,
        admin=admin,
        enrollment=enrollment,
        push=push,
        scep=ScepService(db, clock, pki, LocalScep(), enrollment),
        checkin=CheckinService(db, clock, pki, policy),
        commands=CommandService(db, clock, push.wake),
        portal=PortalService(db, clock, admin, policy, enrollment),
        diagnose=DiagnoseService(db, clock, policy, None, None, discovery, no_findings, no_findings),
        health=HealthService(db, clock, None, discovery, no_findings, no_findings, None),
        reports=ReportService(db, clock),
        apns=ApnsLifecycle(db, clock, kit),
        notifier=Notifier(db, clock, kit, FakePoster()),
    )
