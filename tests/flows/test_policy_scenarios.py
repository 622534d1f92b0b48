"""One scenario per policy reason code, through the real app, on SQLite and PostgreSQL.

Each scenario drives virtual devices and the admin surface (``p.policy.*``, ``p.admin.*``) into the
state, then checks three things: the portal (its refusal page shows the code, in en and in zh-CN; or,
for codes only Authenticate can see, the portal does NOT refuse on it), the Authenticate refusal (the
virtual device is refused at step ``authenticate`` with the code, and no active enrollment is added),
and the events carrying the code. A device reaches Authenticate while the portal would refuse by
downloading the profile and running SCEP while allowed, and only then changing the state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.testing.pushcert import make_standin_push_cert
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

PASSWORD = "portal-pass-1"
BASE = "https://pomona.test"


def ua(os_version: str = "17.4", kind: str = "iPhone") -> str:
    v = os_version.replace(".", "_")
    os_name = "OS" if kind == "iPad" else "iPhone OS"
    return (
        f"Mozilla/5.0 ({kind}; CPU {os_name} {v} like Mac OS X) AppleWebKit/605.1.15 "
        f"(KHTML, like Gecko) Version/{os_version} Mobile/15E148 Safari/604.1"
    )


class Portal:
    """A phone's browser on the portal (its own cookie jar)."""

    def __init__(self, app: object, tenant: str, user_agent: str) -> None:
        self.c = TestClient(app, base_url=BASE, headers={"User-Agent": user_agent})  # type: ignore[arg-type]
        self.tenant = tenant

    def close(self) -> None:
        self.c.close()

    def csrf(self, html: str) -> str:
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', html)
        assert m, html[:500]
        return m.group(1)

    def sign_in(self, upn: str, password: str = PASSWORD) -> str:
        page = self.c.get(f"/portal/{self.tenant}/signin")
        r = self.c.post(
            f"/portal/{self.tenant}/signin",
            data={"csrf": self.csrf(page.text), "upn": upn, "password": password},
        )
        return r.text

    def enroll(self) -> tuple[int, str]:
        """Press "Enroll this device": (status, the page's reason code or "")."""
        page = self.c.get(f"/portal/{self.tenant}/devices")
        r = self.c.post(f"/portal/{self.tenant}/enroll", data={"csrf": self.csrf(page.text)})
        m = re.search(r'data-reason="([A-Z_]+)"', r.text)
        return r.status_code, (m.group(1) if m else "")

    def refusal_in(self, lang: str) -> tuple[str, str]:
        """The refusal page again, in ``lang`` (the visible switch): (html lang, reason code shown)."""
        r = self.c.get(
            f"/portal/{self.tenant}/lang/{lang}", params={"next": f"/portal/{self.tenant}/refused"}
        )
        html_lang = re.search(r'<html lang="([^"]+)"', r.text)
        code = re.search(r'id="reason-code">([A-Z_]+)<', r.text)
        return (html_lang.group(1) if html_lang else "", code.group(1) if code else "")


@pytest.fixture
def app(pomona: Pomona) -> object:
    return create_app(pomona=pomona, eager=False)


@pytest.fixture
def client(app: object) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    s = setup_tenant(pomona)
    for upn in ("pia@acme.example", "bo@acme.example"):
        pomona.admin.create_user(s.name, upn, password=PASSWORD)
        pomona.policy.licence(s.name, upn, assign=True)
    return s


PIA = "pia@acme.example"
BO = "bo@acme.example"


def active_count(p: Pomona, tenant: str, upn: str) -> int:
    with p.db.unit_of_work(readonly=True) as uow:
        t = uow.tenants.by_name(tenant)
        assert t is not None
        u = uow.users.by_upn(t.id, upn)
        return 0 if u is None else uow.enrollments.active_count_for_user(u.id)


def device_enrolled(p: Pomona, tenant: str, udid: str) -> bool:
    with p.db.unit_of_work(readonly=True) as uow:
        t = uow.tenants.by_name(tenant)
        assert t is not None
        return uow.enrollments.active_for_udid(t.id, udid) is not None


def staged(p: Pomona, client: TestClient, tenant: str, upn: str, **kw: object) -> VirtualDevice:
    """A device of ``upn`` that downloaded its profile and got its identity: next is Authenticate."""
    url = p.enrollment.urls.enroll(p.admin.create_enrollment_token(tenant, upn).secret)
    d = VirtualDevice(url, client=client, **kw)  # type: ignore[arg-type]
    d.download()
    d.run_scep()
    return d


def refused_at_authenticate(p: Pomona, d: VirtualDevice, tenant: str, upn: str, code: str) -> None:
    before = active_count(p, tenant, upn)
    with pytest.raises(EnrollmentRefused) as err:
        d.complete_enrollment()
    assert (err.value.step, err.value.reason) == ("authenticate", code)
    assert active_count(p, tenant, upn) == before, "a refused Authenticate counted against the user"
    assert not device_enrolled(p, tenant, d.udid)


def steps_with(p: Pomona, tenant: str, code: str) -> set[str]:
    return {e.step.value for e in p.commands.events(tenant, reason=code) if e.outcome.value == "failed"}


def portal_refuses(app: object, tenant: str, upn: str, code: str, *, user_agent: str | None = None) -> None:
    """Signed in (before the state changed, when given ``signed_in``), the portal refuses with ``code``
    and shows it in English and in Chinese."""
    b = Portal(app, tenant, user_agent or ua())
    try:
        b.sign_in(upn)
        status, shown = b.enroll()
        assert (status, shown) == (403, code)
        assert b.refusal_in("en") == ("en", code)
        assert b.refusal_in("zh-CN") == ("zh-CN", code)
    finally:
        b.close()


def portal_allows(app: object, tenant: str, upn: str, *, user_agent: str | None = None) -> None:
    b = Portal(app, tenant, user_agent or ua())
    try:
        b.sign_in(upn)
        status, shown = b.enroll()
        assert (status, shown) == (200, ""), shown
    finally:
        b.close()


def set_tenant(p: Pomona, tenant: str, **fields: object) -> None:
    """Tenant facts no admin command can undo (no authority, no push certificate); the check-in service
    caches tenants, so it is told to forget this one, as a restart would."""
    with p.db.unit_of_work() as uow:
        t = uow.tenants.by_name(tenant)
        assert t is not None
        if "mdm_authority" in fields:
            uow.tenants.set_authority(t.id, fields["mdm_authority"])  # type: ignore[arg-type]
        if "push_cert_pem" in fields:
            uow.tenants.set_push_cert(t.id, None, None, t.push_topic, None)  # type: ignore[arg-type]
    p.checkin.forget_tenant(t.id)


class TestDirectoryAndLicences:
    def test_user_not_found(self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup) -> None:
        """A user deleted after sign-in (portal) and after SCEP (Authenticate) is USER_NOT_FOUND."""
        d = staged(pomona, client, acme.name, PIA)
        b = Portal(app, acme.name, ua())
        b.sign_in(PIA)
        pomona.policy.delete_user(acme.name, PIA)
        status, shown = b.enroll()
        assert (status, shown) == (403, "USER_NOT_FOUND")
        assert b.refusal_in("en") == ("en", "USER_NOT_FOUND")
        assert b.refusal_in("zh-CN") == ("zh-CN", "USER_NOT_FOUND")
        b.close()
        refused_at_authenticate(pomona, d, acme.name, PIA, "USER_NOT_FOUND")
        assert steps_with(pomona, acme.name, "USER_NOT_FOUND") == {"portal", "authenticate"}

    def test_user_disabled(self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup) -> None:
        """A disabled user is refused at sign-in in the portal and at Authenticate: USER_DISABLED."""
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.set_user_flags(acme.name, PIA, enabled=False)
        b = Portal(app, acme.name, ua())
        page = b.sign_in(PIA)
        assert 'data-reason="USER_DISABLED"' in page
        assert b.refusal_in("en") == ("en", "USER_DISABLED")
        assert b.refusal_in("zh-CN") == ("zh-CN", "USER_DISABLED")
        b.close()
        refused_at_authenticate(pomona, d, acme.name, PIA, "USER_DISABLED")
        assert steps_with(pomona, acme.name, "USER_DISABLED") == {"portal", "authenticate"}

    def test_user_not_licensed(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """A user whose licence was removed, with seats free, is USER_NOT_LICENSED."""
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.licence(acme.name, PIA, assign=False)
        portal_refuses(app, acme.name, PIA, "USER_NOT_LICENSED")
        refused_at_authenticate(pomona, d, acme.name, PIA, "USER_NOT_LICENSED")
        assert steps_with(pomona, acme.name, "USER_NOT_LICENSED") == {"portal", "authenticate"}

    def test_licenses_exhausted(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """An unlicensed user when every seat is assigned is LICENSES_EXHAUSTED."""
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.licence(acme.name, PIA, assign=False)
        assigned = pomona.policy.licence(acme.name, BO, assign=True)["assigned"]
        pomona.policy.set_seats(acme.name, int(assigned))  # type: ignore[call-overload]
        portal_refuses(app, acme.name, PIA, "LICENSES_EXHAUSTED")
        refused_at_authenticate(pomona, d, acme.name, PIA, "LICENSES_EXHAUSTED")
        assert steps_with(pomona, acme.name, "LICENSES_EXHAUSTED") == {"portal", "authenticate"}


class TestTenantOnboarding:
    def test_mdm_authority_not_set(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """A tenant without an MDM authority enrolls nothing: MDM_AUTHORITY_NOT_SET."""
        d = staged(pomona, client, acme.name, PIA)
        set_tenant(pomona, acme.name, mdm_authority=None)
        portal_refuses(app, acme.name, PIA, "MDM_AUTHORITY_NOT_SET")
        refused_at_authenticate(pomona, d, acme.name, PIA, "MDM_AUTHORITY_NOT_SET")
        assert steps_with(pomona, acme.name, "MDM_AUTHORITY_NOT_SET") == {"portal", "authenticate"}

    def test_apns_cert_missing(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """A tenant whose push certificate is gone enrolls nothing: APNS_CERT_MISSING."""
        d = staged(pomona, client, acme.name, PIA)
        set_tenant(pomona, acme.name, push_cert_pem=None)
        portal_refuses(app, acme.name, PIA, "APNS_CERT_MISSING")
        refused_at_authenticate(pomona, d, acme.name, PIA, "APNS_CERT_MISSING")
        assert steps_with(pomona, acme.name, "APNS_CERT_MISSING") == {"portal", "authenticate"}

    def test_apns_cert_expired(
        self,
        pomona: Pomona,
        app: object,
        client: TestClient,
        acme: TenantSetup,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Once the uploaded push certificate's validity ends, enrollment stops: APNS_CERT_EXPIRED."""
        cert, key = make_standin_push_cert(acme.topic, days=2)
        pomona.apns.upload(acme.name, cert, key, canary=False)
        pomona.checkin.forget_tenant(acme.tenant_id)
        d = staged(pomona, client, acme.name, PIA)
        later = datetime.now(UTC) + timedelta(days=3)  # push certificate expired, device identity valid
        monkeypatch.setattr(pomona.clock, "now", lambda: later)
        portal_refuses(app, acme.name, PIA, "APNS_CERT_EXPIRED")
        refused_at_authenticate(pomona, d, acme.name, PIA, "APNS_CERT_EXPIRED")
        assert steps_with(pomona, acme.name, "APNS_CERT_EXPIRED") == {"portal", "authenticate"}


class TestRestrictions:
    def test_platform_blocked(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """iOS blocked by the device type restriction: PLATFORM_BLOCKED for the iPhone."""
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, ios="block")
        portal_refuses(app, acme.name, PIA, "PLATFORM_BLOCKED")
        refused_at_authenticate(pomona, d, acme.name, PIA, "PLATFORM_BLOCKED")
        assert steps_with(pomona, acme.name, "PLATFORM_BLOCKED") == {"portal", "authenticate"}

    def test_personal_device_blocked(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """Personal devices blocked: the portal cannot tell and lets the user on; Authenticate refuses."""
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, personal="block")
        portal_allows(app, acme.name, PIA)
        d = staged(pomona, client, acme.name, PIA)
        refused_at_authenticate(pomona, d, acme.name, PIA, "PERSONAL_DEVICE_BLOCKED")
        assert steps_with(pomona, acme.name, "PERSONAL_DEVICE_BLOCKED") == {"authenticate"}

    def test_os_version_too_low(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """iOS 16.7 under a minimum of 17.0: OS_VERSION_TOO_LOW."""
        d = staged(pomona, client, acme.name, PIA, os_version="16.7")
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, min_os="17.0")
        portal_refuses(app, acme.name, PIA, "OS_VERSION_TOO_LOW", user_agent=ua("16.7"))
        refused_at_authenticate(pomona, d, acme.name, PIA, "OS_VERSION_TOO_LOW")
        assert steps_with(pomona, acme.name, "OS_VERSION_TOO_LOW") == {"portal", "authenticate"}

    def test_os_version_too_high(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """iOS 18.1 under a maximum of 17: OS_VERSION_TOO_HIGH."""
        d = staged(pomona, client, acme.name, PIA, os_version="18.1")
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, max_os="17")
        portal_refuses(app, acme.name, PIA, "OS_VERSION_TOO_HIGH", user_agent=ua("18.1"))
        refused_at_authenticate(pomona, d, acme.name, PIA, "OS_VERSION_TOO_HIGH")
        assert steps_with(pomona, acme.name, "OS_VERSION_TOO_HIGH") == {"portal", "authenticate"}

    def test_device_limit_reached(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """With one device enrolled and a limit of 1, a second one is DEVICE_LIMIT_REACHED."""
        first = staged(pomona, client, acme.name, PIA)
        first.complete_enrollment()
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.edit_restriction(acme.name, type_="limit", default=True, limit=1)
        portal_refuses(app, acme.name, PIA, "DEVICE_LIMIT_REACHED")
        refused_at_authenticate(pomona, d, acme.name, PIA, "DEVICE_LIMIT_REACHED")
        assert active_count(pomona, acme.name, PIA) == 1
        assert steps_with(pomona, acme.name, "DEVICE_LIMIT_REACHED") == {"portal", "authenticate"}

    def test_device_blocked(self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup) -> None:
        """A device blocked by serial: the portal does not know the device; Authenticate refuses it."""
        d = staged(pomona, client, acme.name, PIA)
        pomona.policy.block(acme.name, serial=d.serial)
        portal_allows(app, acme.name, PIA)
        refused_at_authenticate(pomona, d, acme.name, PIA, "DEVICE_BLOCKED")
        assert steps_with(pomona, acme.name, "DEVICE_BLOCKED") == {"authenticate"}


class TestDeviceIdentity:
    def test_device_enrolled_to_other_user(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup
    ) -> None:
        """A device still enrolled to Bo, enrolling for Pia: DEVICE_ENROLLED_TO_OTHER_USER; Bo's stays."""
        bos = staged(pomona, client, acme.name, BO)
        bos.complete_enrollment()
        portal_allows(app, acme.name, PIA)
        d = staged(pomona, client, acme.name, PIA, udid=bos.udid, serial=bos.serial)
        before = active_count(pomona, acme.name, PIA)
        with pytest.raises(EnrollmentRefused) as err:
            d.complete_enrollment()
        assert (err.value.step, err.value.reason) == ("authenticate", "DEVICE_ENROLLED_TO_OTHER_USER")
        assert active_count(pomona, acme.name, PIA) == before
        assert active_count(pomona, acme.name, BO) == 1
        assert steps_with(pomona, acme.name, "DEVICE_ENROLLED_TO_OTHER_USER") == {"authenticate"}
