"""Release from Setup Assistant (issue 12, "Release"): a device whose TokenUpdate says
AwaitingConfiguration gets DeviceConfigured once its initial commands are answered, its acknowledgement
ends the hold, a device held too long leaves one AWAITING_CONFIGURATION_STUCK event and a health finding
naming `pomona abm release`, and an admin releases it through the API or the console. All through the
real app and the virtual device."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.testing.clock import FrozenClock
from pomona.testing.virtual_device import CHECKIN_CONTENT_TYPE, VirtualDevice

TENANT = "acme"


@pytest.fixture
def clock(pomona: Pomona) -> FrozenClock:
    """The services' clock, frozen at the real time (the device's identity is valid now)."""
    c = FrozenClock(datetime.now(UTC))
    pomona.clock = c  # before any service is built
    return c


@pytest.fixture
def client(pomona: Pomona, clock: FrozenClock) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def tenant(pomona: Pomona, client: TestClient) -> TenantSetup:
    return setup_tenant(pomona, TENANT)


def held_device(client: TestClient, setup: TenantSetup, on_request: object = None) -> VirtualDevice:
    """A device enrolled as an ADE device with await_device_configured enrolls: TokenUpdate says
    AwaitingConfiguration."""
    device = VirtualDevice(setup.enroll_url, client=client, on_request=on_request)  # type: ignore[arg-type]
    device.facts = dataclasses.replace(device.facts, awaiting_configuration=True)
    device.enroll()
    return device


def awaiting(pomona: Pomona, device: VirtualDevice) -> bool:
    view = pomona.commands.device(TENANT, device.udid)
    assert view.enrollment is not None
    return view.enrollment.awaiting_configuration


def queued_types(pomona: Pomona, device: VirtualDevice) -> list[str]:
    view = pomona.commands.device(TENANT, device.udid)
    return [c.request_type for c in reversed(view.commands) if c.status.value in ("Queued", "Sent", "NotNow")]


class TestAutomaticRelease:
    def test_released_after_token_update(
        self, pomona: Pomona, client: TestClient, tenant: TenantSetup
    ) -> None:
        """With nothing queued, the TokenUpdate saying AwaitingConfiguration queues DeviceConfigured; its
        acknowledgement ends the hold (an OK event says released), and the device's next TokenUpdate
        (AwaitingConfiguration false) queues nothing more."""
        device = held_device(client, tenant)
        assert awaiting(pomona, device) and queued_types(pomona, device) == ["DeviceConfigured"]
        with pomona.db.unit_of_work(readonly=True) as uow:  # a push wakes it at Setup Assistant
            assert uow.pushes.queue_size(tenant.tenant_id) == 1
        handled = device.poll()
        assert [(h.request_type, h.status) for h in handled] == [("DeviceConfigured", "Acknowledged")]
        assert not awaiting(pomona, device) and not device.facts.awaiting_configuration
        done = [e for e in pomona.commands.events(TENANT, udid=device.udid) if e.detail.get("released")]
        assert [(e.outcome.value, e.detail["request_type"]) for e in done] == [("ok", "DeviceConfigured")]
        assert device.check_in_url is not None
        r = device.signed_put(device.check_in_url, device.token_update_message(), CHECKIN_CONTENT_TYPE)
        assert r.status_code == 200
        assert not awaiting(pomona, device) and queued_types(pomona, device) == []
        assert device.poll() == []

    def test_not_released_while_initial_commands_are_pending(
        self, pomona: Pomona, client: TestClient, tenant: TenantSetup
    ) -> None:
        """Commands queued for the device before its TokenUpdate are answered first: DeviceConfigured is
        queued after the last of them (in the same connection), never before; a NotNow does not count
        as answered."""
        serials: list[str] = []

        def after(response: httpx.Response) -> None:  # the admin's initial commands, once it authenticated
            if b"<string>Authenticate</string>" in response.request.content and response.status_code == 200:
                pomona.commands.enqueue(TENANT, "DeviceInformation", {"Queries": ["DeviceName"]}, serials)
                pomona.commands.enqueue(TENANT, "DeviceInformation", {"Queries": ["OSVersion"]}, serials)

        device = VirtualDevice(tenant.enroll_url, client=client, on_request=after)  # type: ignore[arg-type]
        serials.append(device.serial)
        device.facts = dataclasses.replace(device.facts, awaiting_configuration=True)
        device.enroll()
        assert queued_types(pomona, device) == ["DeviceInformation", "DeviceInformation"]
        first = pomona.commands.device(TENANT, device.udid).commands[-1]
        device.inject(first.command_uuid, status="NotNow")
        handled = device.poll()
        assert [(h.request_type, h.status) for h in handled] == [
            ("DeviceInformation", "NotNow"),
            ("DeviceInformation", "Acknowledged"),
        ]
        assert awaiting(pomona, device) and queued_types(pomona, device) == ["DeviceInformation"]
        handled = device.poll()
        assert [(h.request_type, h.status) for h in handled] == [
            ("DeviceInformation", "Acknowledged"),
            ("DeviceConfigured", "Acknowledged"),
        ]
        assert not awaiting(pomona, device)

    def test_a_device_not_held_gets_no_release(
        self, pomona: Pomona, client: TestClient, tenant: TenantSetup
    ) -> None:
        """A device whose TokenUpdate does not say AwaitingConfiguration (not ADE, or no hold) gets nothing."""
        device = VirtualDevice(tenant.enroll_url, client=client)  # type: ignore[arg-type]
        device.enroll()
        assert queued_types(pomona, device) == [] and device.poll() == []


class TestStuckAndManualRelease:
    def test_stuck_event_health_and_api_release(
        self, pomona: Pomona, client: TestClient, clock: FrozenClock, tenant: TenantSetup
    ) -> None:
        """A device that never takes its DeviceConfigured is held past the threshold: the watch job
        records one failed AWAITING_CONFIGURATION_STUCK event (not again on the next round), health names
        the serial and `pomona abm release` as the fix (the API's device view shows it); the API's release
        queues DeviceConfigured, and once acknowledged the finding goes away."""
        device = held_device(client, tenant)
        clock.advance(minutes=30)
        assert pomona.health.flag_stuck() == 0
        clock.advance(hours=1)
        assert pomona.health.flag_stuck() == 1
        assert pomona.health.flag_stuck() == 0
        (stuck,) = pomona.commands.events(TENANT, reason="AWAITING_CONFIGURATION_STUCK")
        assert (stuck.outcome.value, stuck.serial, stuck.udid) == ("failed", device.serial, device.udid)
        found = [
            f for f in pomona.health.run(TENANT)["findings"] if f["code"] == "AWAITING_CONFIGURATION_STUCK"
        ]
        assert [(f["facts"]["serial"], f["facts"]["fix"]) for f in found] == [
            (device.serial, f"pomona abm release --tenant {TENANT} --serial {device.serial}")
        ]
        auth = {"Authorization": f"Bearer {tenant.admin_token}"}
        shown = client.get(f"/api/v1/tenants/{TENANT}/devices/{device.serial}", headers=auth).json()
        assert shown["awaiting_configuration"] is True
        assert [f["code"] for f in shown["findings"]] == ["AWAITING_CONFIGURATION_STUCK"]
        r = client.post(
            f"/api/v1/tenants/{TENANT}/devices/{device.serial}/release",
            headers={"Authorization": f"Bearer {tenant.admin_token}"},
        )
        assert r.status_code == 201 and r.json()["request_type"] == "DeviceConfigured"
        assert [h.request_type for h in device.poll()] == ["DeviceConfigured", "DeviceConfigured"]
        assert not awaiting(pomona, device)
        assert not [
            f for f in pomona.health.run(TENANT)["findings"] if f["code"] == "AWAITING_CONFIGURATION_STUCK"
        ]
        (manual,) = [e for e in pomona.commands.events(TENANT) if e.detail.get("action") == "device.release"]
        assert manual.serial == device.serial and manual.detail["awaiting_configuration"] is True

    def test_release_of_an_unknown_device_is_not_found(self, client: TestClient, tenant: TenantSetup) -> None:
        """The API's release of a device the tenant does not have is NOT_FOUND."""
        r = client.post(
            f"/api/v1/tenants/{TENANT}/devices/NOSUCHSERIAL/release",
            headers={"Authorization": f"Bearer {tenant.admin_token}"},
        )
        assert (r.status_code, r.json()["reason"]) == (404, "NOT_FOUND")


class TestConsoleRelease:
    def test_helpdesk_releases_a_held_device_from_its_page(
        self, pomona: Pomona, client: TestClient, clock: FrozenClock, tenant: TenantSetup
    ) -> None:
        """The device page of a device held past the threshold shows health's finding and a Release
        button (with CSRF); helpdesk's release queues DeviceConfigured, is audited, and once the device
        took it the button is gone."""
        device = held_device(client, tenant)
        clock.advance(hours=2)
        pomona.health.run(TENANT)
        did = pomona.commands.device(TENANT, device.udid).device.id
        pomona.console.create_account("hd@acme.example", "console-pass-1", "helpdesk", TENANT)
        app = client.app
        with TestClient(app, base_url="https://pomona.test", follow_redirects=False) as b:  # type: ignore[arg-type]

            def csrf(html: str) -> str:
                m = re.search(r'name="csrf" value="([^"]+)"', html)
                assert m is not None
                return m.group(1)

            page = b.get("/console/signin").text
            form = {"csrf": csrf(page), "email": "hd@acme.example", "password": "console-pass-1", "code": ""}
            assert b.post("/console/signin", data=form).status_code == 303
            page = b.get(f"/console/t/{TENANT}/devices/{did}").text
            assert 'data-code="AWAITING_CONFIGURATION_STUCK"' in page and 'id="release"' in page
            assert (
                b.post(f"/console/t/{TENANT}/devices/{did}/release", data={"csrf": "wrong"}).status_code
                == 403
            )
            r = b.post(f"/console/t/{TENANT}/devices/{did}/release", data={"csrf": csrf(page)})
            assert r.status_code == 303 and r.headers["location"].endswith("?done=released")
            assert queued_types(pomona, device) == ["DeviceConfigured", "DeviceConfigured"]
            (entry,) = [e for e in pomona.console.audit_log(TENANT) if e.action == "device.release"]
            assert (entry.actor, entry.target) == ("hd@acme.example", device.udid)
            device.poll()
            assert 'id="release"' not in b.get(f"/console/t/{TENANT}/devices/{did}").text


class TestNoReleaseAfterErase:
    def test_an_erased_held_device_gets_no_release(
        self, pomona: Pomona, client: TestClient, tenant: TenantSetup
    ) -> None:
        """A held device erased before its release: the erase ends the enrollment, so no DeviceConfigured
        is queued after it (nothing is left pending)."""
        serials: list[str] = []

        def after(response: httpx.Response) -> None:
            if b"<string>Authenticate</string>" in response.request.content and response.status_code == 200:
                pomona.commands.enqueue(TENANT, "EraseDevice", {}, serials)

        device = VirtualDevice(tenant.enroll_url, client=client, on_request=after)  # type: ignore[arg-type]
        serials.append(device.serial)
        device.facts = dataclasses.replace(device.facts, awaiting_configuration=True)
        device.enroll()
        assert [h.request_type for h in device.poll()] == ["EraseDevice"]
        view = pomona.commands.device(TENANT, device.udid)
        assert view.enrollment is None and [c.request_type for c in view.commands] == ["EraseDevice"]
