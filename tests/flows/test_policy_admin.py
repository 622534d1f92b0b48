"""Restriction priority, DEM, the dry run, corporate identifiers, blocking, retiring, re-enrollment and
bulk import, through the real services and the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, reasons, setup_tenant
from pomona.app import Pomona, create_app
from pomona.domain.errors import PomonaError
from pomona.protocol.command import COMMAND_CONTENT_TYPE
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona, uses=100)


def device(client: TestClient, url: str, **kw: object) -> VirtualDevice:
    return VirtualDevice(url, client=client, **kw)  # type: ignore[arg-type]


def link(p: Pomona, s: TenantSetup, upn: str | None = None, uses: int = 50) -> str:
    return p.enrollment.urls.enroll(p.admin.create_enrollment_token(s.name, upn or s.upn, uses=uses).secret)


def add_user(p: Pomona, s: TenantSetup, upn: str, **flags: bool) -> None:
    p.admin.create_user(s.name, upn, **flags)  # type: ignore[arg-type]
    p.policy.licence(s.name, upn, assign=True)


class TestPriority:
    def test_best_priority_wins_among_overlapping_groups(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A user in two groups gets the limit restriction with the better priority; swapping priorities swaps it."""
        p, s = pomona, acme
        for g in ("sales", "staff"):
            p.policy.create_group(s.name, g)
            p.policy.add_member(s.name, g, s.upn)
        p.policy.create_restriction(
            s.name, type_="limit", priority=2, groups=["staff"], name="staff 3", limit=3
        )
        p.policy.create_restriction(
            s.name, type_="limit", priority=1, groups=["sales"], name="sales 1", limit=1
        )
        d = p.policy.explain(s.name, s.upn)
        assert d.limit_restriction is not None and d.limit_restriction.name == "sales 1"
        assert d.limit_restriction.via_group == "sales" and d.device_limit == 1
        device(client, s.enroll_url).enroll()
        with pytest.raises(EnrollmentRefused) as err:
            device(client, s.enroll_url).enroll()
        assert (err.value.step, err.value.reason) == ("profile", "DEVICE_LIMIT_REACHED")
        p.policy.edit_restriction(s.name, type_="limit", priority=1, new_priority=5)
        d = p.policy.explain(s.name, s.upn)
        assert (
            d.limit_restriction is not None and d.limit_restriction.name == "staff 3" and d.device_count == 1
        )
        device(client, s.enroll_url).enroll()

    def test_default_applies_and_cannot_be_deleted(self, pomona: Pomona, acme: TenantSetup) -> None:
        """Users in no group get the Default; it can be edited but not deleted, and ranks last."""
        p, s = pomona, acme
        d = p.policy.explain(s.name, s.upn)
        assert d.limit_restriction is not None and d.limit_restriction.is_default and d.device_limit == 15
        p.policy.edit_restriction(s.name, type_="limit", default=True, limit=4)
        assert p.policy.explain(s.name, s.upn).device_limit == 4
        rs, _ = p.policy.list_restrictions(s.name)
        default = next(r for r in rs if r.kind == "limit" and r.is_default)
        with pytest.raises(PomonaError) as err:
            p.policy.delete_restriction(s.name, "limit", default.priority)
        assert err.value.reason == "INVALID_INPUT"
        with pytest.raises(PomonaError) as err:
            p.policy.edit_restriction(s.name, type_="limit", default=True, limit=16)
        assert err.value.reason == "INVALID_INPUT"

    def test_platform_restriction_by_group(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A platform restriction assigned to a group blocks iPadOS for its members only."""
        p, s = pomona, acme
        add_user(p, s, "bo@acme.example")
        p.policy.create_group(s.name, "kiosk")
        p.policy.add_member(s.name, "kiosk", "bo@acme.example")
        p.policy.create_restriction(s.name, type_="platform", priority=1, groups=["kiosk"], ipados="block")
        device(client, link(p, s), product="iPad13,18").enroll()
        with pytest.raises(EnrollmentRefused) as err:
            device(client, link(p, s, "bo@acme.example"), product="iPad13,18").enroll()
        # The browser says iPad: the link refuses before any profile is served.
        assert (err.value.step, err.value.reason) == ("profile", "PLATFORM_BLOCKED")
        d = p.policy.explain(s.name, "bo@acme.example", platform="iPad", os_version="17.4")
        assert d.reason == "PLATFORM_BLOCKED" and d.platform_restriction is not None
        assert d.platform_restriction.via_group == "kiosk"


class TestDem:
    def test_dem_ignores_the_limit(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A device enrollment manager enrolls past the limit; the enrollments are of type dem."""
        p, s = pomona, acme
        p.policy.edit_restriction(s.name, type_="limit", default=True, limit=1)
        add_user(p, s, "dem@acme.example", is_dem=True)
        url = link(p, s, "dem@acme.example")
        ds = [device(client, url) for _ in range(3)]
        for d in ds:
            d.enroll()
        assert p.policy.explain(s.name, "dem@acme.example").device_limit == 1000
        types = {e.type.value for d in ds for e in p.commands.device(s.name, d.udid).history}
        assert types == {"dem"}


class TestCorporate:
    def test_import_all_or_nothing(self, pomona: Pomona, acme: TenantSetup) -> None:
        """A file with a bad row imports nothing and lists the row; a good file imports every row."""
        p, s = pomona, acme
        r = p.policy.import_corporate(s.name, "serial,description\nF2LX12345678,ok\nbad!,x\n")
        assert r.imported == 0 and [e["row"] for e in r.errors] == [3]
        assert p.policy.list_corporate(s.name) == []
        r = p.policy.import_corporate(s.name, "F2LX12345678,ipad cart\n35 209900 176148 1\n")
        assert (r.imported, r.errors) == (2, [])
        kinds = {(c.kind, c.value, c.state) for c in p.policy.list_corporate(s.name)}
        assert kinds == {
            ("serial", "F2LX12345678", "not_contacted"),
            ("imei", "352099001761481", "not_contacted"),
        }

    def test_corporate_device_passes_personal_block(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """With personal devices blocked, a listed serial enrolls as corporate and its identifier shows Enrolled."""
        p, s = pomona, acme
        p.policy.edit_restriction(s.name, type_="platform", default=True, personal="block")
        p.policy.import_corporate(s.name, "C0RP00000001\n")
        corp = device(client, s.enroll_url, serial="C0RP00000001")
        corp.enroll()
        with pytest.raises(EnrollmentRefused) as err:
            device(client, s.enroll_url).enroll()
        assert err.value.reason == "PERSONAL_DEVICE_BLOCKED"
        hist = p.commands.device(s.name, corp.udid).history
        assert hist[0].type.value == "corporate"
        assert [c.state for c in p.policy.list_corporate(s.name)] == ["enrolled"]
        d = p.policy.explain(s.name, s.upn, serial="C0RP00000001", platform="iPhone")
        assert d.ownership.value == "corporate"


class TestBlockAndRetire:
    def test_blocked_device_is_told_to_unenroll(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """Blocking an enrolled device answers its next check-in with Apple's 403 unrecognized-device body."""
        p, s = pomona, acme
        d = device(client, s.enroll_url)
        d.enroll()
        assert p.policy.block(s.name, serial=d.serial) == 1
        r = d.signed_put(d.server_url or "", d.idle_message(), COMMAND_CONTENT_TYPE)
        assert r.status_code == 403 and r.headers["content-type"] == "application/json"
        assert r.json()["code"] == "com.apple.unrecognized.device" and r.json()["reason"] == "DEVICE_BLOCKED"
        assert p.policy.explain(s.name, s.upn).device_count == 0
        with pytest.raises(EnrollmentRefused) as err:
            device(client, s.enroll_url, serial=d.serial).enroll()
        assert (err.value.step, err.value.reason) == ("authenticate", "DEVICE_BLOCKED")
        assert "DEVICE_BLOCKED" in reasons(p, s.name)

    def test_retire_frees_a_slot(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """Retiring frees a slot in the limit and the retired device is told to unenroll."""
        p, s = pomona, acme
        p.policy.edit_restriction(s.name, type_="limit", default=True, limit=1)
        d = device(client, s.enroll_url)
        d.enroll()
        p.policy.retire(s.name, serial=d.serial)
        r = d.signed_put(d.server_url or "", d.idle_message(), COMMAND_CONTENT_TYPE)
        assert r.status_code == 403 and r.json()["code"] == "com.apple.unrecognized.device"
        device(client, s.enroll_url).enroll()


class TestReenrollment:
    def test_other_user_then_retire(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A device still enrolled to another user is refused, naming that user; after retiring it enrolls."""
        p, s = pomona, acme
        add_user(p, s, "bo@acme.example")
        first = device(client, s.enroll_url)
        first.enroll()
        again = device(client, link(p, s, "bo@acme.example"), serial=first.serial, udid=first.udid)
        with pytest.raises(EnrollmentRefused) as err:
            again.enroll()
        assert (err.value.step, err.value.reason) == ("authenticate", "DEVICE_ENROLLED_TO_OTHER_USER")
        ev = p.commands.events(s.name, reason="DEVICE_ENROLLED_TO_OTHER_USER")[0]
        assert ev.detail["previous_user"] == s.upn and ev.upn == "bo@acme.example"
        p.policy.retire(s.name, serial=first.serial)
        again.enroll()
        assert p.commands.device(s.name, first.udid).enrollment is not None

    def test_same_user_replaces_and_cancels(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The same device re-enrolling for the same user replaces its record and cancels its queued commands."""
        p, s = pomona, acme
        d = device(client, s.enroll_url)
        d.enroll()
        queued = p.commands.enqueue(s.name, "SecurityInfo", {}, [d.udid])[0]
        device(client, s.enroll_url, serial=d.serial, udid=d.udid).enroll()
        assert p.commands.command(s.name, queued.command_uuid).status.value == "Cancelled"
        assert p.commands.list_devices(s.name)[1] == 1
        assert p.policy.explain(s.name, s.upn).device_count == 1

    def test_repeat_download_is_recorded(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A user with an active enrollment downloading the profile again leaves that evidence."""
        p, s = pomona, acme
        device(client, s.enroll_url).enroll()
        client.get(s.enroll_url)
        profile_events = [e for e in p.commands.events(s.name) if e.step.value == "profile"]
        assert profile_events[0].detail["repeat_download"] is True
        assert profile_events[-1].detail["repeat_download"] is False


class TestDirectory:
    def test_licences(self, pomona: Pomona, acme: TenantSetup) -> None:
        """Seats are counted; assigning past them is LICENSES_EXHAUSTED; removing frees one."""
        p, s = pomona, acme
        p.policy.set_seats(s.name, 1)
        p.admin.create_user(s.name, "bo@acme.example")
        with pytest.raises(PomonaError) as err:
            p.policy.licence(s.name, "bo@acme.example", assign=True)
        assert err.value.reason == "LICENSES_EXHAUSTED"
        assert p.policy.explain(s.name, "bo@acme.example").reason == "LICENSES_EXHAUSTED"
        p.policy.licence(s.name, s.upn, assign=False)
        assert p.policy.explain(s.name, "bo@acme.example").reason == "USER_NOT_LICENSED"
        p.policy.licence(s.name, "bo@acme.example", assign=True)
        with pytest.raises(PomonaError):
            p.policy.set_seats(s.name, 0)

    def test_bulk_import(self, pomona: Pomona, acme: TenantSetup) -> None:
        """A CSV import is all or nothing, creates groups, and respects licence seats."""
        from pomona.services.directory_import import import_users

        p, s = pomona, acme
        bad = "upn,display_name,groups,licensed\nx@acme.example,X,a;b,yes\nnot-an-upn,Y,,no\nx@acme.example,,,\n"
        r = import_users(p, s.name, bad)
        assert [e["row"] for e in r.errors] == [3, 4] and r.imported == 0
        assert len(p.admin.list_users(s.name)) == 1
        good = "upn,display_name,groups,licensed,dem,mfa_required\nx@acme.example,X,a;b,yes,no,yes\ny@acme.example,Y,b,no,,\n"
        seen: list[int] = []
        r = import_users(p, s.name, good, progress=lambda done, total: seen.append(done))
        assert (r.imported, r.groups_created, r.errors) == (2, 2, []) and seen[-1] == 2
        x = p.policy.set_user_flags(s.name, "x@acme.example")
        assert x.licensed and x.mfa_required and not x.is_dem
        assert {g.name: n for g, n in p.policy.list_groups(s.name)} == {"a": 1, "b": 2}
        p.policy.set_seats(s.name, 2)
        with pytest.raises(PomonaError) as err:
            import_users(p, s.name, "upn,licensed\nz@acme.example,yes\n")
        assert err.value.reason == "LICENSES_EXHAUSTED"
        assert len(p.admin.list_users(s.name)) == 3


class TestAdminSurface:
    def test_api_explain_and_restrictions(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The API creates groups and restrictions and answers the dry run."""
        h = {"Authorization": f"Bearer {acme.admin_token}"}
        base = f"/api/v1/tenants/{acme.name}"
        assert client.post(f"{base}/groups", headers=h, json={"name": "ops"}).status_code == 201
        assert client.post(f"{base}/groups/ops/members", headers=h, json={"upn": acme.upn}).status_code == 201
        r = client.post(
            f"{base}/restrictions",
            headers=h,
            json={"type": "platform", "priority": 1, "groups": ["ops"], "min_os": "17.0"},
        )
        assert r.status_code == 201, r.text
        r = client.post(
            f"{base}/policy/explain",
            headers=h,
            json={"upn": acme.upn, "os_version": "16.7", "platform": "iPhone"},
        )
        body = r.json()
        assert body["reason"] == "OS_VERSION_TOO_LOW" and body["platform_restriction"]["via_group"] == "ops"
        r = client.post(
            f"{base}/restrictions",
            headers=h,
            json={"type": "limit", "priority": 1, "groups": ["ops"], "limit": 99},
        )
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")
        r = client.post(f"{base}/corporate-identifiers", headers=h, json={"csv": "!!\n"})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")
        kinds = [x["type"] for x in client.get(f"{base}/restrictions", headers=h).json()["restrictions"]]
        assert sorted(kinds) == ["limit", "platform", "platform"]
