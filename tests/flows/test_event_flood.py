"""Refusals of unauthenticated device requests cannot flood a tenant's event log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE
from pomona.services.throttle import BURST
from pomona.testing.virtual_device import VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def stored_events(p: Pomona, tenant: str) -> list[object]:
    return p.commands.events(tenant, limit=100_000)


class TestEventFlood:
    def test_a_thousand_bad_requests_leave_bounded_rows(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """1000 refused SCEP and check-in requests without any identity leave at most a burst of rows per
        endpoint, and a bounded number of bytes; every request is still refused."""
        junk = b"\x30\x82" + b"M" * 20_000
        for _ in range(500):
            r = client.post(f"/scep/{acme.tenant_id}?operation=PKIOperation", content=junk)
            assert r.status_code == 400
            r = client.put(f"/mdm/{acme.tenant_id}/checkin", content=b"<plist>" + b"x" * 20_000)
            assert r.status_code in (400, 401)
        events = [e for e in stored_events(pomona, acme.name) if e.outcome.value == "failed"]  # type: ignore[attr-defined]
        assert len(events) <= 2 * BURST + 2, len(events)
        size = sum(len(repr(e.detail)) for e in events)  # type: ignore[attr-defined]
        assert size < 2 * BURST * 1_000, size

    def test_identified_devices_refusals_are_all_recorded(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A device with a certificate of the tenant's CA is identified: each of its refusals leaves an
        event, however many."""
        d = VirtualDevice(acme.enroll_url, client=client)  # type: ignore[arg-type]
        d.enroll()
        n = BURST * 2
        body = d.token_update_message(topic="com.apple.mgmt.External.not-this-one")
        for _ in range(n):
            r = d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
            assert r.status_code == 401
        reason = r.json()["reason"]
        refused = pomona.commands.events(acme.name, reason=reason, limit=1000)
        assert len(refused) == n
