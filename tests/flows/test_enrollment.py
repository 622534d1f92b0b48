"""The virtual device enrolls through the real ASGI app (no mocks), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from helpers import TenantSetup, reasons, setup_tenant
from pomona.app import Pomona, create_app
from pomona.pki.ca import CertificateAuthority
from pomona.protocol import cms
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE, encode_authenticate
from pomona.protocol.command import COMMAND_CONTENT_TYPE, encode_report
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def device(client: TestClient, url: str | None = None, **kw: object) -> VirtualDevice:
    return VirtualDevice(url, client=client, **kw)  # type: ignore[arg-type]


def api(client: TestClient, s: TenantSetup, method: str, path: str, **kw: object) -> object:
    r = client.request(
        method, f"/api/v1/tenants/{s.name}{path}", headers={"Authorization": f"Bearer {s.admin_token}"}, **kw
    )  # type: ignore[arg-type]
    return r


def enrollment_count(p: Pomona, s: TenantSetup) -> int:
    views, _ = p.commands.list_devices(s.name, limit=1000)
    return sum(1 for v in views if v.enrollment is not None)


class TestHappyPath:
    def test_enroll_and_device_information(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A device enrolls, DeviceInformation comes back Acknowledged and fills the inventory."""
        d = device(client, acme.enroll_url, product="iPad13,18", os_version="17.4")
        d.enroll()
        r = api(
            client, acme, "POST", "/commands", json={"request_type": "DeviceInformation", "devices": [d.udid]}
        )
        assert r.status_code == 201, r.text  # type: ignore[attr-defined]
        uuid_ = r.json()["commands"][0]["command_uuid"]  # type: ignore[attr-defined]
        handled = d.poll()
        assert [(h.request_type, h.status) for h in handled] == [("DeviceInformation", "Acknowledged")]
        cmd = api(client, acme, "GET", f"/commands/{uuid_}").json()  # type: ignore[attr-defined]
        assert cmd["status"] == "Acknowledged" and cmd["result"]["QueryResponses"]["SerialNumber"] == d.serial
        listed = api(client, acme, "GET", "/devices").json()["devices"]  # type: ignore[attr-defined]
        assert len(listed) == 1
        row = listed[0]
        assert (row["serial"], row["product_name"], row["os_version"], row["model_name"]) == (
            d.serial,
            "iPad13,18",
            "17.4",
            "iPad",
        )
        assert row["enrolled"] and row["last_seen_at"]
        steps = [(e.step.value, e.outcome.value) for e in pomona.commands.events(acme.name, udid=d.udid)]
        assert (
            ("authenticate", "ok") in steps and ("tokenupdate", "ok") in steps and ("command", "ok") in steps
        )

    def test_profile_is_signed_and_stable(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The profile is CMS-signed by the server identity and keeps one identifier per tenant."""
        r1 = client.get(acme.enroll_url)
        assert r1.status_code == 200 and r1.headers["content-type"] == "application/x-apple-aspen-config"
        content, signer = cms.verify_attached(r1.content)
        assert signer == pomona.signer.certificate
        from pomona.protocol.profile import decode_profile

        prof = decode_profile(content)
        assert prof.topic == acme.topic and prof.sign_message
        url2 = pomona.enrollment.urls.enroll(pomona.admin.create_enrollment_token(acme.name, acme.upn).secret)
        prof2 = decode_profile(cms.verify_attached(client.get(url2).content)[0])
        assert prof2.identifier == prof.identifier and prof2.scep_challenge != prof.scep_challenge

    def test_commands_not_now_and_error(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """NotNow is not resent on the same connection but is on the next; an Error keeps its chain."""
        d = device(client, acme.enroll_url)
        d.enroll()
        d.inject("SecurityInfo", status="NotNow", times=1)
        d.inject("ProfileList", status="Error", times=1)
        uuids = [
            pomona.commands.enqueue(acme.name, rt, {}, [d.udid])[0].command_uuid
            for rt in ("SecurityInfo", "ProfileList")
        ]
        first = d.poll()
        assert [(h.request_type, h.status) for h in first] == [
            ("SecurityInfo", "NotNow"),
            ("ProfileList", "Error"),
        ]
        second = d.poll()
        assert [(h.request_type, h.status) for h in second] == [("SecurityInfo", "Acknowledged")]
        err = pomona.commands.command(acme.name, uuids[1])
        assert err.status.value == "Error" and err.error_chain and "ErrorCode" in err.error_chain[0]

    def test_checkout_keeps_history(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """CheckOut ends the enrollment, cancels its queue and keeps the record."""
        d = device(client, acme.enroll_url)
        d.enroll()
        pomona.commands.enqueue(acme.name, "SecurityInfo", {}, [d.udid])
        d.checkout()
        view = pomona.commands.device(acme.name, d.udid)
        assert view.enrollment is None and [e.status.value for e in view.history] == ["removed"]
        assert [c.status.value for c in view.commands] == ["Cancelled"]

    def test_reenroll_replaces(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """The same device enrolling again gets a new enrollment and no duplicate device."""
        d = device(client, acme.enroll_url)
        d.enroll()
        d2 = device(client, acme.enroll_url, udid=d.udid, serial=d.serial)
        d2.enroll()
        views, total = pomona.commands.list_devices(acme.name)
        assert total == 1
        hist = pomona.commands.device(acme.name, d.udid).history
        assert sorted(e.status.value for e in hist) == ["active", "replaced"]

    def test_erase_forgets(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """After EraseDevice the device forgets its enrollment and the server ends it."""
        d = device(client, acme.enroll_url)
        d.enroll()
        pomona.commands.enqueue(acme.name, "EraseDevice", {}, [d.udid])
        d.poll()
        assert not d.enrolled
        assert pomona.commands.device(acme.name, d.udid).enrollment is None

    def test_settings_and_fleet_token(self, pomona: Pomona, client: TestClient) -> None:
        """A token with N uses enrolls N devices and refuses the next; renames apply on the device."""
        s = setup_tenant(pomona, "fleet", uses=2)
        a, b, c = (device(client, s.enroll_url) for _ in range(3))
        a.enroll()
        b.enroll()
        with pytest.raises(EnrollmentRefused) as err:
            c.enroll()
        assert err.value.reason == "ENROLLMENT_TOKEN_INVALID"
        pomona.commands.enqueue(
            s.name, "Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "Kiosk 1"}]}, [a.udid]
        )
        a.poll()
        assert a.facts.device_name == "Kiosk 1"


class TestTokens:
    def test_unknown_token(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An unknown link answers ENROLLMENT_TOKEN_INVALID."""
        r = client.get("/enroll/not-a-token")
        assert (
            r.status_code == 403
            and r.json()["reason"] == "ENROLLMENT_TOKEN_INVALID"
            and r.json()["request_id"]
        )

    def test_used_token(self, pomona: Pomona, client: TestClient) -> None:
        """A one-time link is refused after its enrollment, with an event naming the user."""
        s = setup_tenant(pomona, "once", uses=1)
        device(client, s.enroll_url).enroll()
        with pytest.raises(EnrollmentRefused) as err:
            device(client, s.enroll_url).enroll()
        assert (err.value.step, err.value.reason) == ("profile", "ENROLLMENT_TOKEN_INVALID")
        ev = [e for e in pomona.commands.events(s.name, reason="ENROLLMENT_TOKEN_INVALID")]
        assert ev and ev[0].upn == s.upn and ev[0].step.value == "profile"

    def test_expired_token(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An expired link answers ENROLLMENT_TOKEN_EXPIRED, at the profile and at SCEP."""
        issued = pomona.admin.create_enrollment_token(acme.name, acme.upn, expires_in=timedelta(minutes=1))
        url = pomona.enrollment.urls.enroll(issued.secret)
        d = device(client, url)
        d.download(url)  # downloaded while valid, installed too late
        later = datetime.now(UTC) + timedelta(minutes=2)
        pomona.enrollment.clock = pomona.clock = type("C", (), {"now": staticmethod(lambda: later)})()  # type: ignore[assignment]
        r = client.get(url)
        assert r.status_code == 403 and r.json()["reason"] == "ENROLLMENT_TOKEN_EXPIRED"
        with pytest.raises(EnrollmentRefused) as err:
            d.install()
        assert err.value.step == "scep"
        assert (
            reasons(pomona, acme.name, reason="ENROLLMENT_TOKEN_EXPIRED") == ["ENROLLMENT_TOKEN_EXPIRED"] * 2
        )
        assert enrollment_count(pomona, acme) == 0


class TestPushCertificate:
    def test_missing_push_cert(self, pomona: Pomona, client: TestClient) -> None:
        """A tenant without a push certificate cannot enroll: APNS_CERT_MISSING."""
        s = setup_tenant(pomona, "nopush", push=False)
        r = client.get(s.enroll_url)
        assert r.status_code == 403 and r.json()["reason"] == "APNS_CERT_MISSING"
        assert reasons(pomona, s.name) == ["APNS_CERT_MISSING"]

    def test_expired_push_cert(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An expired push certificate blocks enrollment: APNS_CERT_EXPIRED."""
        with pomona.db.unit_of_work() as uow:
            creds = uow.push_certs.credentials(acme.topic)
            assert creds is not None
            uow.tenants.set_push_cert(
                creds.tenant_id,
                creds.cert_pem,
                creds.key,
                acme.topic,
                datetime.now(UTC) - timedelta(days=1),
            )
        r = client.get(acme.enroll_url)
        assert r.status_code == 403 and r.json()["reason"] == "APNS_CERT_EXPIRED"

    def test_upload_refuses_non_mdm_certificates(self, pomona: Pomona, acme: TenantSetup) -> None:
        """A certificate without an MDM topic UID is refused with APNS_CERT_INVALID."""
        from pomona.domain.errors import PomonaError
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert("com.example.not-mdm")
        with pytest.raises(PomonaError) as err:
            pomona.apns.upload(acme.name, cert, key, canary=False)
        assert err.value.reason == "APNS_CERT_INVALID"
        cert2, _ = make_standin_push_cert()
        with pytest.raises(PomonaError) as err:
            pomona.apns.upload(acme.name, cert2, key, canary=False)
        assert err.value.reason == "APNS_CERT_INVALID"


class TestForgedMessages:
    """Each refusal gets its status and ReasonCode, leaves an event, and writes no enrollment."""

    def _enrolled(self, client: TestClient, s: TenantSetup) -> VirtualDevice:
        d = device(client, s.enroll_url)
        d.enroll()
        return d

    def test_unsigned(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A check-in without Mdm-Signature is SIGNATURE_INVALID."""
        d = self._enrolled(client, acme)
        r = d.signed_put(
            d.check_in_url or "", d.authenticate_message(), CHECKIN_CONTENT_TYPE, signature="omit"
        )
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")
        r = d.signed_put(
            d.check_in_url or "", d.authenticate_message(), CHECKIN_CONTENT_TYPE, signature=b"garbage"
        )
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")
        assert reasons(pomona, acme.name, reason="SIGNATURE_INVALID") == ["SIGNATURE_INVALID"] * 2

    def test_body_tampered(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A signature over another body is SIGNATURE_INVALID."""
        d = self._enrolled(client, acme)
        assert d.identity_cert is not None
        sig = cms.sign_detached(d.idle_message(), d.identity_cert, d.key)
        r = d.signed_put(d.server_url or "", d.idle_message() + b"\n", COMMAND_CONTENT_TYPE, signature=sig)
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")

    def test_other_tenant_ca(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A certificate from another tenant's CA is CERT_NOT_TRUSTED here, and no enrollment appears."""
        other = setup_tenant(pomona, "other")
        d = self._enrolled(client, other)
        body = encode_authenticate(udid="FORGED-UDID", topic=acme.topic, serial_number="FORGED")
        r = d.signed_put(pomona.enrollment.urls.checkin(acme.tenant_id), body, CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "CERT_NOT_TRUSTED")
        assert enrollment_count(pomona, acme) == 0
        assert reasons(pomona, acme.name) == ["CERT_NOT_TRUSTED"]

    def test_expired_identity(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An expired identity from the right CA is CERT_NOT_TRUSTED."""
        d = self._enrolled(client, acme)
        with pomona.db.unit_of_work() as uow:
            pair = uow.tenants.ca_keypair(acme.tenant_id)
            assert pair is not None
        ca = CertificateAuthority.from_pem(pair.cert_pem, pair.key_pem)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
        old = ca.issue(d.key.public_key(), name, days=1, now=datetime.now(UTC) - timedelta(days=30))
        r = d.signed_put(d.server_url or "", d.idle_message(), COMMAND_CONTENT_TYPE, cert=old)
        assert (r.status_code, r.json()["reason"]) == (401, "CERT_NOT_TRUSTED")

    def test_device_a_names_device_b(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A message signed by device A that names device B is CERT_DEVICE_MISMATCH, on both channels."""
        a, b = self._enrolled(client, acme), self._enrolled(client, acme)
        r = a.signed_put(a.check_in_url or "", b.authenticate_message(), CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "CERT_DEVICE_MISMATCH")
        r = a.signed_put(a.server_url or "", b.idle_message(), COMMAND_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "CERT_DEVICE_MISMATCH")
        r = a.signed_put(a.check_in_url or "", b.token_update_message(), CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "CERT_DEVICE_MISMATCH")
        assert pomona.commands.device(acme.name, b.udid).enrollment is not None
        assert len(reasons(pomona, acme.name, reason="CERT_DEVICE_MISMATCH")) == 3

    def test_topic_mismatch(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An Authenticate for another push topic is TOPIC_MISMATCH."""
        d = self._enrolled(client, acme)
        body = encode_authenticate(udid=d.udid, topic="com.apple.mgmt.External.other", serial_number=d.serial)
        r = d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "TOPIC_MISMATCH")

    def test_unknown_enrollment(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """The command channel before Authenticate, or after CheckOut, is UNKNOWN_ENROLLMENT."""
        d = self._enrolled(client, acme)
        cert, idle = d.identity_cert, d.idle_message()
        d.checkout()
        r = d.signed_put(pomona.enrollment.urls.server(acme.tenant_id), idle, COMMAND_CONTENT_TYPE, cert=cert)
        assert (r.status_code, r.json()["reason"]) == (401, "UNKNOWN_ENROLLMENT")
        assert "UNKNOWN_ENROLLMENT" in reasons(pomona, acme.name)

    def test_malformed_and_oversized(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A signed non-plist is MALFORMED_REQUEST (400); a body over 2 MiB is refused with 413."""
        d = self._enrolled(client, acme)
        before = enrollment_count(pomona, acme)
        r = d.signed_put(d.check_in_url or "", b"<plist><dict><key>Mess", CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (400, "MALFORMED_REQUEST")
        big = encode_report(udid=d.udid, status="Idle", payload={"Pad": "x" * (2 * 1024 * 1024 + 10)})
        r = d.signed_put(d.server_url or "", big, COMMAND_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (413, "MALFORMED_REQUEST")
        assert enrollment_count(pomona, acme) == before
        assert reasons(pomona, acme.name, reason="MALFORMED_REQUEST") == ["MALFORMED_REQUEST"] * 2

    def test_garbage_signature_base64(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A header that is not base64 CMS is SIGNATURE_INVALID, not a server error."""
        d = self._enrolled(client, acme)
        r = client.put(
            d.check_in_url or "",
            content=d.authenticate_message(),
            headers={"Content-Type": CHECKIN_CONTENT_TYPE, "Mdm-Signature": "%%%not base64"},
        )
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")
        r = client.put(
            d.check_in_url or "",
            content=d.authenticate_message(),
            headers={
                "Content-Type": CHECKIN_CONTENT_TYPE,
                "Mdm-Signature": base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),
            },
        )
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")


class TestAdminApi:
    def test_tenant_isolation(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A tenant token sees its own tenant only; another tenant answers NOT_FOUND."""
        other = setup_tenant(pomona, "beta")
        d = device(client, other.enroll_url)
        d.enroll()
        h = {"Authorization": f"Bearer {acme.admin_token}"}
        r = client.get("/api/v1/tenants/beta/devices", headers=h)
        assert (r.status_code, r.json()["reason"]) == (404, "NOT_FOUND")
        r = client.post(
            "/api/v1/tenants/acme/commands",
            headers=h,
            json={"request_type": "DeviceLock", "devices": [d.udid]},
        )
        assert (r.status_code, r.json()["reason"]) == (404, "NOT_FOUND")
        assert [t["name"] for t in client.get("/api/v1/tenants", headers=h).json()["tenants"]] == ["acme"]
        r = client.post("/api/v1/tenants", headers=h, json={"name": "x", "domain": "x.example"})
        assert (r.status_code, r.json()["reason"]) == (401, "API_AUTH_FAILED")

    def test_auth_and_input_errors(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """Missing tokens, bad commands and bad bodies get their codes and a request id."""
        r = client.get("/api/v1/tenants/acme/devices")
        assert (r.status_code, r.json()["reason"]) == (401, "API_AUTH_FAILED")
        r = api(client, acme, "POST", "/commands", json={"request_type": "Nope", "devices": ["x"]})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")  # type: ignore[attr-defined]
        r = api(client, acme, "POST", "/commands", json={"devices": "x"})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")  # type: ignore[attr-defined]
        assert r.json()["request_id"]  # type: ignore[attr-defined]

    def test_server_token_creates_tenants(self, pomona: Pomona, client: TestClient) -> None:
        """A server-wide token creates tenants and their admin tokens; the new token works on its tenant."""
        server = pomona.admin.create_api_token(None).secret
        h = {"Authorization": f"Bearer {server}"}
        assert (
            client.post(
                "/api/v1/tenants", headers=h, json={"name": "gamma", "domain": "gamma.example"}
            ).status_code
            == 201
        )
        r = client.post("/api/v1/tenants", headers=h, json={"name": "gamma", "domain": "gamma.example"})
        assert (r.status_code, r.json()["reason"]) == (409, "ALREADY_EXISTS")
        tok = client.post("/api/v1/tenants/gamma/tokens", headers=h).json()["token"]
        assert (
            client.get("/api/v1/tenants/gamma/devices", headers={"Authorization": f"Bearer {tok}"}).json()[
                "total"
            ]
            == 0
        )

    def test_bulk_enqueue_and_events(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """One request queues a command for many devices; events are queryable by device and code."""
        ds = [device(client, acme.enroll_url) for _ in range(3)]
        for d in ds:
            d.enroll()
        r = api(
            client,
            acme,
            "POST",
            "/commands",
            json={"request_type": "RestartDevice", "devices": [d.serial for d in ds]},
        )
        assert r.status_code == 201 and len(r.json()["commands"]) == 3  # type: ignore[attr-defined]
        for d in ds:
            assert [h.status for h in d.poll()] == ["Acknowledged"]
        ev = api(client, acme, "GET", "/events", params={"serial": ds[0].serial}).json()["events"]  # type: ignore[attr-defined]
        assert {e["step"] for e in ev} >= {"authenticate"}
        last = max(e["id"] for e in ev)
        newer = [
            e["id"]
            for e in api(client, acme, "GET", "/events", params={"after_id": last - 2}).json()["events"]
        ]  # type: ignore[attr-defined]
        assert last in newer and newer == sorted(newer) and min(newer) > last - 2
        assert api(client, acme, "GET", "/events", params={"after_id": -1}).status_code == 422  # type: ignore[attr-defined]
        detail = api(client, acme, "GET", f"/devices/{ds[0].udid}").json()  # type: ignore[attr-defined]
        assert (
            detail["enrollments"][0]["status"] == "active"
            and detail["commands"][0]["status"] == "Acknowledged"
        )

    def test_bulk_enqueue_refs_all_or_nothing(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """Refs by id, UDID or serial resolve in bulk; the first bad ref is named and nothing is queued."""
        from pomona.domain.errors import InvalidInputError, NotFoundError

        ds = [device(client, acme.enroll_url) for _ in range(3)]
        for d in ds:
            d.enroll()
        gone = device(client, acme.enroll_url)
        gone.enroll()
        gone.checkout()
        dev_id = pomona.commands.device(acme.name, ds[0].udid).device.id
        refs = [dev_id, ds[1].udid, ds[2].serial, ds[1].udid]  # a repeated ref gets its own command
        out = pomona.commands.enqueue(acme.name, "SecurityInfo", {}, refs)
        assert [c.device_id for c in out] == [
            pomona.commands.device(acme.name, r).device.id
            for r in (dev_id, ds[1].udid, ds[2].serial, ds[1].udid)
        ]
        assert len({c.command_uuid for c in out}) == 4 and len({c.id for c in out}) == 4
        for c in out:
            assert c.command_uuid.encode() in c.body and c.body.count(b"<string>SecurityInfo</string>") == 1
            assert pomona.commands.command(acme.name, c.command_uuid).id == c.id
        before = len(pomona.commands.device(acme.name, ds[0].udid).commands)
        with pytest.raises(NotFoundError) as nf:
            pomona.commands.enqueue(acme.name, "SecurityInfo", {}, [ds[0].udid, "nope", gone.udid])
        assert nf.value.context.get("device") == "nope"
        with pytest.raises(InvalidInputError) as ie:
            pomona.commands.enqueue(acme.name, "SecurityInfo", {}, [ds[0].udid, gone.udid, "nope"])
        assert ie.value.context.get("device") == gone.udid
        assert len(pomona.commands.device(acme.name, ds[0].udid).commands) == before


class TestServedProfileSchema:
    def test_served_profile_passes_apple_schema(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The profile the server serves passes Apple's schema for com.apple.mdm and com.apple.security.scep."""
        import plistlib

        from apple_schema import check_profile_payload

        content, _ = cms.verify_attached(client.get(acme.enroll_url).content)
        profile = plistlib.loads(content)
        payloads = {pl["PayloadType"]: pl for pl in profile["PayloadContent"]}
        assert set(payloads) >= {"com.apple.mdm", "com.apple.security.scep"}
        for kind in ("com.apple.mdm", "com.apple.security.scep"):
            assert check_profile_payload(payloads[kind], platform="iOS") == [], kind
        assert (
            payloads["com.apple.mdm"]["IdentityCertificateUUID"]
            == payloads["com.apple.security.scep"]["PayloadUUID"]
        )
        assert payloads["com.apple.security.scep"]["PayloadContent"]["Key Usage"] == 5
        assert payloads["com.apple.mdm"]["AccessRights"] == 8191


class TestScepRefusalEvents:
    def test_garbage_pkioperation(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A PKIOperation that is not a pkiMessage gets 400 and a MALFORMED_REQUEST event."""
        r = client.post(f"/scep/{acme.tenant_id}?operation=PKIOperation", content=b"not der")
        assert r.status_code == 400
        assert reasons(pomona, acme.name) == ["MALFORMED_REQUEST"]

    def test_wrong_challenge(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A wrong challenge gets a CertRep FAILURE and one ENROLLMENT_TOKEN_INVALID event."""
        from pomona.protocol.scep import build_csr, build_pkcs_req, decode_cert_rep

        d = device(client)
        r = client.get(f"/scep/{acme.tenant_id}?operation=GetCACert")
        ca = x509.load_der_x509_certificate(r.content)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
        from pomona.pki.ca import CertificateAuthority as CA

        signer = CA.generate("self").issue(d.key.public_key(), name)  # any self-made signer will do
        req = build_pkcs_req(build_csr(d.key, name, "wrong"), signer, d.key, ca)
        rep = client.post(f"/scep/{acme.tenant_id}?operation=PKIOperation", content=req)
        result = decode_cert_rep(rep.content, signer, d.key)
        assert result.fail_info is not None and result.certificate is None
        assert reasons(pomona, acme.name) == ["ENROLLMENT_TOKEN_INVALID"]
