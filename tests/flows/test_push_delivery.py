"""Push delivery and the push certificate lifecycle, on both databases, with the APNs emulator in process.

The worker's batch (``PushService.run_once``) runs on a fresh event loop per call, with its own APNs
client; virtual devices enroll through the real ASGI app.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import update
from starlette.testclient import TestClient

from helpers import reasons, setup_tenant
from pomona.app import Pomona, create_app
from pomona.domain.errors import PomonaError
from pomona.pki.apns_certs import decode_vendor_signed_request, load_pem_cert, load_pem_key, make_p12
from pomona.push.apns import ApnsClient
from pomona.push.gateway import ApnsGateway, TenantIdentitySource
from pomona.services.apns_lifecycle import Notifier
from pomona.services.push import BatchStats
from pomona.storage import schema
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.virtual_device import VirtualDevice

CHECKIN = "application/x-apple-aspen-mdm-checkin"
VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
APPLE_PUSH = VECTORS / "micromdm+nanomdm/test/e2e/testdata/push.pem"
MOCKS = VECTORS / "micromdm+micromdm/pkg/crypto/testdata"


@pytest.fixture(scope="module")
def emu() -> Iterator[ApnsEmulator]:
    with ApnsEmulator.start(seed=1) as e:
        yield e


@pytest.fixture
def emu_clean(emu: ApnsEmulator) -> ApnsEmulator:
    emu.reset_faults()
    emu.reset_stats()
    return emu


def run_batch(p: Pomona, emu: ApnsEmulator) -> BatchStats:
    """One worker batch on a fresh loop with a fresh APNs client pointed at the emulator."""

    async def go() -> BatchStats:
        source = TenantIdentitySource(p.db, p.apns.kit.open)
        client = ApnsClient(source, base_url=emu.url, verify=emu.ca_pem, max_attempts=2, backoff=0.01)
        p.push.gateway = ApnsGateway(client, source)
        try:
            return await p.push.run_once()
        finally:
            await asyncio.to_thread(client.close)
            p.push.gateway = None

    return asyncio.run(go())


def tenant_on_emulator(p: Pomona, emu: ApnsEmulator, name: str = "acme") -> Any:
    setup = setup_tenant(p, name, uses=20, push=False)
    cert, key = emu.issue_push_cert()
    p.apns.upload(name, cert, key, apple_id=f"mdm@{name}.example", canary=False)
    return setup


def enroll(p: Pomona, setup: Any, emu: ApnsEmulator, count: int = 1) -> list[VirtualDevice]:
    client = TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test")  # type: ignore[arg-type]
    devices = []
    for _ in range(count):
        issued = p.admin.create_enrollment_token(setup.name, setup.upn)
        d = VirtualDevice(p.enrollment.urls.enroll(issued.secret), client=client)  # type: ignore[arg-type]
        d.enroll()
        assert d.push_token is not None
        devices.append(d)
    return devices


def diagnosed(p: Pomona, code: str, **who: str) -> tuple[str, str]:
    """The first finding of `pomona diagnose` when an admin pastes `code`."""
    first = p.diagnose.diagnose("acme", message=code, **who).findings[0]  # type: ignore[arg-type]
    return str(first.code), first.verdict.value


def drain(p: Pomona, emu: ApnsEmulator, rounds: int = 5) -> None:
    for _ in range(rounds):
        if run_batch(p, emu).claimed == 0:
            return


class TestPushQueue:
    def test_enqueue_writes_one_push_per_enrollment(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """Two commands for one device leave one push in the queue; push=False leaves none."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        pomona.commands.enqueue("acme", "ProfileList", {}, [d.udid])
        assert pomona.push.queue_size("acme") == 1
        other = enroll(pomona, setup, emu_clean)[0]
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [other.udid], push=False)
        assert pomona.push.queue_size("acme") == 1

    def test_push_wakes_the_device_and_the_row_goes_once_commands_are_done(
        self, pomona: Pomona, emu_clean: ApnsEmulator
    ) -> None:
        """A push reaches the emulator, the device polls, and the queue empties after its result."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        emu_clean.register(d.push_token or "", d.poll)
        (cmd,) = pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        stats = run_batch(pomona, emu_clean)
        assert stats.delivered == 1
        assert emu_clean.wait_delivered(1)
        assert pomona.commands.command("acme", cmd.command_uuid).status.value == "Acknowledged"
        row = pomona.push.reachability("acme")[0]
        assert row["last_push_status"] == "delivered" and row["last_push_at"] is not None
        # The row stays until its next due time, then goes: no pending command is left.
        with pomona.db.unit_of_work() as uow:
            uow.conn.execute(update(schema.push_queue).values(due_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
        assert run_batch(pomona, emu_clean).dropped == 1
        assert pomona.push.queue_size("acme") == 0

    def test_a_claimed_row_is_not_claimed_twice_until_its_lease_passes(self, pomona: Pomona) -> None:
        """Two claimers never get the same row; a lapsed lease (a killed process) frees it."""
        setup = setup_tenant(pomona, "acme", uses=5)
        del setup
        now = dt.datetime.now(dt.UTC)
        with pomona.db.unit_of_work() as uow:
            t = uow.tenants.by_name("acme")
            assert t is not None
        # a queue row needs an enrollment: enroll one device through the app
        client = TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test")  # type: ignore[arg-type]
        issued = pomona.admin.create_enrollment_token("acme", "ana@acme.example")
        d = VirtualDevice(pomona.enrollment.urls.enroll(issued.secret), client=client)  # type: ignore[arg-type]
        d.enroll()
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        later = dt.datetime.now(dt.UTC)
        with pomona.db.unit_of_work() as uow:
            first = uow.pushes.claim(later, later + dt.timedelta(seconds=60), "a", 10)
        with pomona.db.unit_of_work() as uow:
            second = uow.pushes.claim(later, later + dt.timedelta(seconds=60), "b", 10)
        with pomona.db.unit_of_work() as uow:
            third = uow.pushes.claim(
                later + dt.timedelta(seconds=61), later + dt.timedelta(seconds=120), "c", 10
            )
        assert (len(first), len(second), len(third)) == (1, 0, 1)
        assert first[0].has_pending and now <= later

    def test_unregistered_token_is_not_pushed_until_a_new_token_update(
        self, pomona: Pomona, emu_clean: ApnsEmulator
    ) -> None:
        """410 Unregistered marks the token invalid (PUSH_TOKEN_UNREGISTERED); a TokenUpdate clears it."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        emu_clean.set_token_outcome(d.push_token or "", "Unregistered")
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        run_batch(pomona, emu_clean)
        assert "PUSH_TOKEN_UNREGISTERED" in reasons(pomona, "acme")
        assert pomona.push.queue_size("acme") == 0
        assert diagnosed(pomona, "PUSH_TOKEN_UNREGISTERED", udid=d.udid) == (
            "PUSH_TOKEN_UNREGISTERED",
            "proven",
        )
        pomona.commands.enqueue("acme", "ProfileList", {}, [d.udid])
        assert run_batch(pomona, emu_clean).sent == 0  # not pushed again
        emu_clean.set_token_outcome(d.push_token or "", None)
        assert d.signed_put(d.check_in_url or "", d.token_update_message(), CHECKIN).status_code == 200
        assert pomona.push.queue_size("acme") == 1
        assert run_batch(pomona, emu_clean).delivered == 1

    @pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
    def test_permanent_device_refusals(self, pomona: Pomona, emu_clean: ApnsEmulator, reason: str) -> None:
        """BadDeviceToken and DeviceTokenNotForTopic are permanent for the device (PUSH_REJECTED)."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        emu_clean.set_token_outcome(d.push_token or "", reason)
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        run_batch(pomona, emu_clean)
        assert "PUSH_REJECTED" in reasons(pomona, "acme")
        assert pomona.push.reachability("acme")[0]["push_token_invalid"] == "PUSH_REJECTED"
        assert diagnosed(pomona, "PUSH_REJECTED", udid=d.udid) == ("PUSH_REJECTED", "proven")

    @pytest.mark.parametrize("reason", ["BadCertificate", "BadCertificateEnvironment", "TopicDisallowed"])
    def test_tenant_refusal_stops_pushing_until_the_certificate_changes(
        self, pomona: Pomona, emu_clean: ApnsEmulator, reason: str
    ) -> None:
        """A certificate APNs refuses is APNS_CERT_INVALID for the tenant; a renewal resumes pushing."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        emu_clean.configure(tenant_outcome=reason)
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        run_batch(pomona, emu_clean)
        assert reasons(pomona, "acme").count("APNS_CERT_INVALID") == 1
        assert "APNS_CERT_INVALID" in [
            f["code"] for f in pomona.apns.findings("acme", dt.datetime.now(dt.UTC))
        ]
        assert run_batch(pomona, emu_clean).sent == 0  # held
        assert diagnosed(pomona, "NoEnrollmentPolicy", udid=d.udid) == ("APNS_CERT_INVALID", "proven")
        emu_clean.reset_faults()
        cert, key = emu_clean.issue_push_cert(setup_topic(pomona))
        pomona.apns.upload("acme", cert, key, canary=False)
        assert run_batch(pomona, emu_clean).delivered == 1

    def test_unreachable_apns_is_retried_without_loss(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """No answer from APNs: PUSH_UNREACHABLE, the push stays queued and goes once APNs is back."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])

        async def go() -> BatchStats:
            source = TenantIdentitySource(pomona.db, pomona.apns.kit.open)
            client = ApnsClient(
                source, base_url="https://127.0.0.1:9", verify=emu_clean.ca_pem, max_attempts=1
            )
            pomona.push.gateway = ApnsGateway(client, source)
            try:
                return await pomona.push.run_once()
            finally:
                await asyncio.to_thread(client.close)

        assert asyncio.run(go()).outcomes == {"transient": 1}
        assert "PUSH_UNREACHABLE" in reasons(pomona, "acme")
        assert pomona.push.queue_size("acme") == 1
        # The tenant's event names no device; the device's own push record is found by its serial.
        assert diagnosed(pomona, "PUSH_UNREACHABLE", serial=d.serial) == ("PUSH_UNREACHABLE", "proven")

    def test_unresponsive_device_is_reported(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """Accepted pushes and a silent device past the threshold: DEVICE_UNRESPONSIVE."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)  # not registered with the emulator: it never wakes
        with pomona.db.unit_of_work() as uow:  # last seen ten minutes ago
            uow.conn.execute(
                update(schema.devices).values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
            )
        pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        run_batch(pomona, emu_clean)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=pomona.push.settings.unresponsive_after + 120)
        found = pomona.push.unresponsive("acme", later)
        assert [f["code"] for f in found] == ["DEVICE_UNRESPONSIVE"]
        assert pomona.push.unresponsive("acme", dt.datetime.now(dt.UTC)) == []
        # diagnose reads the same reachability: not the answer now, likely past the threshold (a silent
        # device is the funnel's stuck step: the server sees the silence, not its cause)
        assert diagnosed(pomona, "DEVICE_UNRESPONSIVE", udid=d.udid)[0] != "DEVICE_UNRESPONSIVE"
        pomona.diagnose.clock = type("Later", (), {"now": staticmethod(lambda: later)})()  # type: ignore[assignment]
        assert diagnosed(pomona, "DEVICE_UNRESPONSIVE", udid=d.udid) == ("DEVICE_UNRESPONSIVE", "likely")


def setup_topic(p: Pomona) -> str:
    topic = p.admin.get_tenant("acme").push_topic
    assert topic is not None
    return topic


class TestUpload:
    def test_apple_certificate_yields_its_topic(self, pomona: Pomona) -> None:
        """Apple's real push certificate (shared vectors) is read with its topic."""
        if not APPLE_PUSH.exists():
            pytest.skip("shared vectors missing")
        setup_tenant(pomona, "acme", push=False)
        facts = pomona.apns.inspect(APPLE_PUSH.read_bytes())
        assert facts["topic"].startswith("com.apple.mgmt.External.e0bd1eac-")
        with pytest.raises(PomonaError) as exc:
            pomona.apns.upload("acme", APPLE_PUSH.read_bytes(), canary=False)
        assert exc.value.reason == "APNS_CERT_INVALID"  # Apple's certificate, but no key for it here

    @pytest.mark.parametrize("name", ["mock_push_cert_no_uid.pem", "mock_push_cert_wrong_uid_prefix.pem"])
    def test_not_an_mdm_topic_is_refused(self, pomona: Pomona, name: str) -> None:
        """No UID, or a UID outside com.apple.mgmt.: APNS_CERT_INVALID."""
        if not (MOCKS / name).exists():
            pytest.skip("shared vectors missing")
        setup_tenant(pomona, "acme", push=False)
        with pytest.raises(PomonaError) as exc:
            pomona.apns.upload("acme", (MOCKS / name).read_bytes(), b"", canary=False)
        assert exc.value.reason == "APNS_CERT_INVALID"

    def test_key_mismatch_and_no_client_auth_are_refused(
        self, pomona: Pomona, emu_clean: ApnsEmulator
    ) -> None:
        """A key that is not the certificate's: APNS_CERT_INVALID."""
        setup_tenant(pomona, "acme", push=False)
        cert, _ = emu_clean.issue_push_cert()
        _, other = emu_clean.issue_push_cert()
        with pytest.raises(PomonaError) as exc:
            pomona.apns.upload("acme", cert, other, canary=False)
        assert exc.value.reason == "APNS_CERT_INVALID"

    def test_expired_certificate_is_refused(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """An expired certificate: APNS_CERT_EXPIRED."""
        setup_tenant(pomona, "acme", push=False)
        cert, key = emu_clean.issue_push_cert(
            days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        )
        with pytest.raises(PomonaError) as exc:
            pomona.apns.upload("acme", cert, key, canary=False)
        assert exc.value.reason == "APNS_CERT_EXPIRED"

    def test_p12_upload_with_apple_id(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """A .p12 with its password is accepted and the Apple ID recorded; the key is sealed at rest."""
        setup_tenant(pomona, "acme", push=False)
        cert, key = emu_clean.issue_push_cert()
        p12 = make_p12(load_pem_cert(cert), load_pem_key(key), b"secret")
        r = pomona.apns.upload("acme", p12, password=b"secret", apple_id="it@acme.example", canary=False)
        assert r.apple_id == "it@acme.example"
        with pomona.db.unit_of_work(readonly=True) as uow:
            creds = uow.push_certs.credentials(r.topic)
        assert creds is not None and b"PRIVATE KEY" not in creds.key  # sealed with the server key
        assert "push_key_pem" not in repr(pomona.admin.get_tenant("acme"))

    def test_csr_key_is_used_by_the_later_upload(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """The CSR's pending key (sealed) completes an upload given only the certificate."""
        setup_tenant(pomona, "acme", push=False)
        chain, vkey = vendor_identity()
        r = pomona.apns.csr("acme", vendor_chain_pem=chain, vendor_key_pem=vkey)
        assert r.vendor_signed is not None
        assert decode_vendor_signed_request(r.vendor_signed).signature_valid
        csr = x509.load_pem_x509_csr(r.csr_pem.encode())

        class PublicOnly:  # the emulator's CA signs a key it is given; Apple signs the CSR's
            def public_key(self) -> Any:
                return csr.public_key()

        topic = "com.apple.mgmt.External.csr-test"
        cert = emu_clean._ca.issue(  # noqa: SLF001 - the emulator plays Apple's CA
            x509.Name([x509.NameAttribute(NameOID.USER_ID, topic)]),
            PublicOnly(),  # type: ignore[arg-type]
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        up = pomona.apns.upload("acme", cert.public_bytes(serialization.Encoding.PEM), canary=False)
        assert up.topic == topic


def vendor_identity() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MDM Vendor: Pomona Test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TestRenewNeverReplace:
    def test_another_topic_is_refused_with_devices_counted(
        self, pomona: Pomona, emu_clean: ApnsEmulator
    ) -> None:
        """A certificate with another topic: APNS_TOPIC_CHANGED, saying how many devices it cuts off."""
        setup = tenant_on_emulator(pomona, emu_clean)
        enroll(pomona, setup, emu_clean, 2)
        cert, key = emu_clean.issue_push_cert()
        with pytest.raises(PomonaError) as exc:
            pomona.apns.upload("acme", cert, key, canary=False)
        assert exc.value.reason == "APNS_TOPIC_CHANGED"
        assert exc.value.context["devices"] == 2
        assert "APNS_TOPIC_CHANGED" in reasons(pomona, "acme")

    def test_confirmed_replacement_marks_enrollments_for_re_enrollment(
        self, pomona: Pomona, emu_clean: ApnsEmulator
    ) -> None:
        """replace + confirm accepts it; every enrollment under the old topic must re-enroll."""
        setup = tenant_on_emulator(pomona, emu_clean)
        enroll(pomona, setup, emu_clean, 2)
        cert, key = emu_clean.issue_push_cert()
        r = pomona.apns.upload(
            "acme", cert, key, replace=True, confirm="devices-must-re-enroll", canary=False
        )
        assert r.replaced and r.reenroll_required == 2
        listed = pomona.apns.reenroll_required("acme")
        assert listed["count"] == 2 and len(listed["enrollments"]) == 2
        assert "APNS_TOPIC_CHANGED" in [
            f["code"] for f in pomona.apns.findings("acme", dt.datetime.now(dt.UTC))
        ]

    def test_renewal_keeps_devices_receiving_pushes(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """A renewed certificate (same topic) is accepted and devices keep getting pushes; canary reports."""
        setup = tenant_on_emulator(pomona, emu_clean)
        (d,) = enroll(pomona, setup, emu_clean)
        emu_clean.register(d.push_token or "", d.poll)
        cert, key = emu_clean.issue_push_cert(setup_topic(pomona))
        quick = replace(pomona.apns, canary_wait=0.2)
        r = quick.upload("acme", cert, key)
        assert r.renewed and not r.replaced
        assert r.canary["devices"] == 1  # queued; no worker runs in this process, so no answer yet
        (cmd,) = pomona.commands.enqueue("acme", "SecurityInfo", {}, [d.udid])
        drain(pomona, emu_clean)
        assert emu_clean.wait_delivered(1)
        assert pomona.commands.command("acme", cmd.command_uuid).status.value == "Acknowledged"

    def test_canary_with_no_devices(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """No enrolled device: the canary says so."""
        tenant_on_emulator(pomona, emu_clean)
        cert, key = emu_clean.issue_push_cert(setup_topic(pomona))
        assert pomona.apns.upload("acme", cert, key).canary["result"] == "no_enrolled_devices"

    def test_expired_certificate_blocks_enrollment(self, pomona: Pomona, emu_clean: ApnsEmulator) -> None:
        """Once the tenant's certificate has expired, enrollment is refused with APNS_CERT_EXPIRED."""
        setup = tenant_on_emulator(pomona, emu_clean)
        with pomona.db.unit_of_work() as uow:
            t = uow.tenants.by_name("acme")
            assert t is not None and t.push_topic
            creds = uow.push_certs.credentials(t.push_topic)
            assert creds is not None
            uow.tenants.set_push_cert(
                t.id,
                creds.cert_pem,
                creds.key,
                t.push_topic,
                dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
            )
        with pytest.raises(Exception):  # noqa: B017 - the device sees a refusal; the reason is in the events
            enroll(pomona, setup, emu_clean)
        assert "APNS_CERT_EXPIRED" in reasons(pomona, "acme")
        found = pomona.apns.findings("acme", dt.datetime.now(dt.UTC))
        assert [f["code"] for f in found] == ["APNS_CERT_EXPIRED"]


class TestFindingsAndWebhooks:
    @pytest.mark.parametrize(("days", "threshold"), [(29.5, 30), (13, 14), (6, 7), (0.5, 1)])
    def test_expiring_findings(
        self, pomona: Pomona, emu_clean: ApnsEmulator, days: float, threshold: int
    ) -> None:
        """APNS_CERT_EXPIRING at 30, 14, 7 and 1 days before expiry."""
        tenant_on_emulator(pomona, emu_clean)
        t = pomona.admin.get_tenant("acme")
        assert t.push_not_after is not None
        now = t.push_not_after - dt.timedelta(days=days)
        (f,) = pomona.apns.findings("acme", now)
        assert (f["code"], f["facts"]["threshold_days"]) == ("APNS_CERT_EXPIRING", threshold)
        assert pomona.apns.findings("acme", t.push_not_after - dt.timedelta(days=60)) == []

    def test_webhook_is_signed_retried_and_recorded(self, pomona: Pomona) -> None:
        """The notice is HMAC-SHA256 signed, retried after a failure, and the delivery recorded."""
        setup_tenant(pomona, "acme")
        calls: list[tuple[bytes, dict[str, str]]] = []

        class Poster:
            def check(self, url: str) -> None:
                pass

            def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
                calls.append((body, headers))
                if len(calls) == 1:
                    raise OSError("connection refused")
                return 503 if len(calls) == 2 else 200

        n = Notifier(pomona.db, pomona.clock, pomona.apns.kit, Poster(), sleep=lambda _s: None)
        n.configure("acme", "https://hooks.example/pomona", "s3cret-s3cret-s3cret")
        tid = pomona.admin.get_tenant("acme").id
        r = n.notify(tid, [{"code": "APNS_CERT_EXPIRING", "severity": "warning", "facts": {}}])
        assert (r["status"], r["attempts"]) == ("delivered", 3)
        body, headers = calls[-1]
        expected = hmac.new(b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Pomona-Signature"] == f"sha256={expected}"
        assert json.loads(body)["findings"][0]["code"] == "APNS_CERT_EXPIRING"
        (rec,) = n.deliveries("acme")
        assert (rec["status"], rec["attempts"], rec["codes"]) == ("delivered", 3, "APNS_CERT_EXPIRING")
