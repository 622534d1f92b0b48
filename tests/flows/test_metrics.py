"""/metrics through the real ASGI app: the counters a virtual device moves, and who may read them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.domain.reasons import ReasonCode
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)


@pytest.fixture
def measured(db_url: str, tmp_path: Path) -> Iterator[Pomona]:
    """A Pomona wired as the server is: counting for /metrics."""
    p = build(
        Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test"), measure=True
    )
    yield p
    p.close()


def client_from(p: Pomona, address: tuple[str, int]) -> TestClient:
    return TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test", client=address)  # type: ignore[arg-type]


def scrape(c: TestClient, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = c.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class TestCounters:
    def test_an_enrollment_and_a_refusal_move_their_counters(self, measured: Pomona) -> None:
        """After one enrollment and one refused reuse of its link, /metrics shows the completed
        enrollment, the refusal by reason code and step, the check-ins, and the requests by route."""
        s = setup_tenant(measured, uses=1)
        with client_from(measured, LOCAL) as c:
            before = scrape(c)
            VirtualDevice(s.enroll_url, client=c).enroll()  # type: ignore[arg-type]
            with pytest.raises(EnrollmentRefused) as refused:
                VirtualDevice(s.enroll_url, client=c).enroll()  # type: ignore[arg-type]
            assert refused.value.reason == ReasonCode.ENROLLMENT_TOKEN_INVALID.value
            after = scrape(c)
        reason = ReasonCode.ENROLLMENT_TOKEN_INVALID.value
        assert value(before, "pomona_refusals_total", reason=reason, step="profile") == 0
        assert value(after, "pomona_refusals_total", reason=reason, step="profile") == 1
        assert value(after, "pomona_enrollments_completed_total") == 1
        for message_type in ("Authenticate", "TokenUpdate"):
            assert value(after, "pomona_checkins_total", channel="checkin", message_type=message_type) == 1
        route = "/enroll/{token}"
        assert value(after, "pomona_http_requests_total", route=route, method="GET", status="200") == 1
        assert value(after, "pomona_http_requests_total", route=route, method="GET", status="403") == 1
        assert value(after, "pomona_http_request_duration_seconds_count", route=route) == 2

    def test_routes_are_templates_not_paths(self, measured: Pomona) -> None:
        """Requests are labelled by route template: two tenants' API paths share one series, and paths
        that match no route all count as `unmatched`."""
        s = setup_tenant(measured, "acme")
        t = setup_tenant(measured, "bravo")
        with client_from(measured, LOCAL) as c:
            for x in (s, t):
                c.get(
                    f"/api/v1/tenants/{x.name}/devices", headers={"Authorization": f"Bearer {x.admin_token}"}
                )
            for n in range(3):
                c.get(f"/scan-{n}.php")
            got = scrape(c)
        api = {"route": "/api/v1/tenants/{tenant}/devices", "method": "GET", "status": "200"}
        assert value(got, "pomona_http_requests_total", **api) == 2
        assert value(got, "pomona_http_requests_total", route="unmatched", method="GET", status="404") == 3
        assert not [k for k in got if any(v.startswith(("/scan", "/api/v1/tenants/acme")) for _, v in k[1])]

    def test_pending_commands_are_read_when_scraped(self, measured: Pomona) -> None:
        """A queued command shows in pomona_commands_pending until the device answers it."""
        s = setup_tenant(measured)
        with client_from(measured, LOCAL) as c:
            d = VirtualDevice(s.enroll_url, client=c)  # type: ignore[arg-type]
            d.enroll()
            assert value(scrape(c), "pomona_commands_pending") == 0
            auth = {"Authorization": f"Bearer {s.admin_token}"}
            body = {"request_type": "DeviceInformation", "devices": [d.udid]}
            r = c.post(f"/api/v1/tenants/{s.name}/commands", json=body, headers=auth)
            assert r.status_code == 201, r.text
            assert value(scrape(c), "pomona_commands_pending") == 1
            d.poll()
            got = scrape(c)
        assert value(got, "pomona_commands_pending") == 0
        assert value(got, "pomona_checkins_total", channel="connect", message_type="Acknowledged") == 1


class TestPushOutcomes:
    def test_pushes_are_counted_by_outcome(self, db_url: str, tmp_path: Path) -> None:
        """A push APNs accepts and one it refuses for a bad token count under `delivered` and
        `device_permanent` (the server's own push gateway, pointed at the APNs emulator)."""
        import asyncio

        from pomona.testing.apns_emulator import ApnsEmulator

        with ApnsEmulator.start(seed=3) as emu:
            (tmp_path / "apns-ca.pem").write_bytes(emu.ca_pem)
            settings = Settings(
                data_dir=tmp_path,
                database_url=db_url,
                public_url="https://pomona.test",
                apns_url=emu.url,
                apns_ca=tmp_path / "apns-ca.pem",
            )
            p = build(settings, measure=True)
            try:
                s = setup_tenant(p, uses=2, push=False)
                cert, key = emu.issue_push_cert()
                p.apns.upload(s.name, cert, key, canary=False)
                with client_from(p, LOCAL) as c:
                    good, bad = (VirtualDevice(s.enroll_url, client=c) for _ in range(2))  # type: ignore[arg-type]
                    good.enroll()
                    bad.enroll()
                    emu.set_token_outcome(str(bad.push_token), "BadDeviceToken")
                    p.commands.enqueue(s.name, "SecurityInfo", {}, [good.udid, bad.udid])
                    asyncio.run(p.push.run_once())
                    got = scrape(c)
            finally:
                asyncio.run(p.background.close_gateway())
                p.close()
        assert value(got, "pomona_push_outcomes_total", outcome="delivered") == 1
        assert value(got, "pomona_push_outcomes_total", outcome="device_permanent") == 1


class TestAccess:
    def test_a_remote_caller_without_a_token_is_refused(self, measured: Pomona) -> None:
        """From an address POMONA_METRICS_ALLOW does not name, /metrics is API_AUTH_FAILED, with no
        counter in the body."""
        with client_from(measured, REMOTE) as c:
            r = c.get("/metrics")
        assert r.status_code == 401
        assert r.json()["reason"] == ReasonCode.API_AUTH_FAILED.value
        assert "pomona_" not in r.text

    def test_a_server_token_opens_it_a_tenant_token_does_not(self, measured: Pomona) -> None:
        """From afar, a server-wide API token reads /metrics; a tenant's token or an unknown one is refused."""
        s = setup_tenant(measured)
        server = measured.admin.create_api_token(None, "prometheus").secret
        with client_from(measured, REMOTE) as c:
            assert "pomona_commands_pending" in str(scrape(c, authorization=f"Bearer {server}"))
            for token in (s.admin_token, "not-a-token"):
                r = c.get("/metrics", headers={"authorization": f"Bearer {token}"})
                assert r.status_code == 401 and r.json()["reason"] == ReasonCode.API_AUTH_FAILED.value

    def test_a_request_forwarded_by_an_unknown_proxy_is_not_local(self, measured: Pomona) -> None:
        """A loopback peer carrying X-Forwarded-For (a reverse proxy that is not a trusted proxy) is
        refused: the client behind it may be anyone."""
        with client_from(measured, LOCAL) as c:
            r = c.get("/metrics", headers={"x-forwarded-for": "198.51.100.9"})
        assert r.status_code == 401

    def test_an_allowed_network_reads_it(self, db_url: str, tmp_path: Path) -> None:
        """POMONA_METRICS_ALLOW names the monitoring network: a caller in it reads /metrics, loopback is
        then no longer allowed."""
        settings = Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url="https://pomona.test",
            metrics_allow=["203.0.113.0/24"],
        )
        p = build(settings, measure=True)
        try:
            with client_from(p, REMOTE) as c:
                assert c.get("/metrics").status_code == 200
            with client_from(p, LOCAL) as c:
                assert c.get("/metrics").status_code == 401
        finally:
            p.close()
