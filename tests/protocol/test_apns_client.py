"""The APNs client against the APNs emulator: real HTTP/2, TLS with client certificates, Apple's answers."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from pomona.domain.reasons import ReasonCode
from pomona.push.apns import ApnsClient, Push, PushResult
from pomona.testing.apns_emulator import ApnsEmulator


def token() -> str:
    return os.urandom(32).hex()


@pytest.fixture(scope="module")
def emu() -> Iterator[ApnsEmulator]:
    with ApnsEmulator.start(seed=7) as e:
        yield e


@pytest.fixture
def clean(emu: ApnsEmulator) -> Iterator[ApnsEmulator]:
    emu.reset_faults()
    emu.reset_stats()
    yield emu
    emu.reset_faults()


@pytest.fixture
def client(clean: ApnsEmulator) -> Iterator[tuple[ApnsClient, str]]:
    cert, key = clean.issue_push_cert()
    c = ApnsClient(base_url=clean.url, verify=clean.ca_pem, backoff=0.005, max_backoff=0.05, max_attempts=10)
    topic = c.set_identity(cert, key).topic
    yield c, topic
    c.close()


def one(c: ApnsClient, push: Push) -> PushResult:
    return c.send_sync([push])[0]


class TestDelivery:
    def test_accepted_push_is_delivered_with_apns_id(self, client: tuple[ApnsClient, str]) -> None:
        """A valid MDM push is answered 200 with an apns-id and reported delivered."""
        c, topic = client
        r = one(c, Push(token(), "magic", topic, expiration=0))
        assert (r.status, r.outcome, r.reason_code, r.attempts) == (200, "delivered", None, 1)
        assert r.apns_id and len(r.apns_id) == 36

    def test_accepted_push_wakes_the_registered_device(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """An accepted push to a registered token calls its callback, as an iPhone would connect."""
        c, topic = client
        tok = token()
        woken = threading.Event()
        clean.register(tok, woken.set)
        try:
            assert one(c, Push(bytes.fromhex(tok), "magic", topic)).outcome == "delivered"
            assert woken.wait(5)
            assert clean.wait_delivered(1)
        finally:
            clean.unregister(tok)

    def test_results_keep_the_order_of_the_pushes(self, client: tuple[ApnsClient, str]) -> None:
        """send() returns one result per push, in the order given."""
        c, topic = client
        toks = [token() for _ in range(50)]
        results = c.send_sync([Push(t, "m", topic) for t in toks])
        assert [r.token_hex for r in results] == toks


class TestFailures:
    @pytest.mark.parametrize(
        ("reason", "status", "outcome", "code"),
        [
            ("Unregistered", 410, "device_permanent", ReasonCode.PUSH_TOKEN_UNREGISTERED),
            ("BadDeviceToken", 400, "device_permanent", ReasonCode.PUSH_REJECTED),
            ("DeviceTokenNotForTopic", 400, "device_permanent", ReasonCode.PUSH_REJECTED),
        ],
    )
    def test_token_outcomes_are_device_permanent(
        self,
        clean: ApnsEmulator,
        client: tuple[ApnsClient, str],
        reason: str,
        status: int,
        outcome: str,
        code: ReasonCode,
    ) -> None:
        """Per-token rejections are classified device-permanent with their reason code, not retried."""
        c, topic = client
        tok = token()
        clean.set_token_outcome(tok, reason)
        r = one(c, Push(tok, "m", topic))
        assert (r.status, r.reason, r.outcome, r.reason_code, r.attempts) == (
            status,
            reason,
            outcome,
            code,
            1,
        )
        assert (r.timestamp is not None) == (status == 410)

    @pytest.mark.parametrize(
        ("reason", "status"),
        [("BadCertificate", 403), ("BadCertificateEnvironment", 403), ("TopicDisallowed", 400)],
    )
    def test_tenant_outcomes_are_tenant_permanent(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str], reason: str, status: int
    ) -> None:
        """Certificate and topic rejections are tenant-permanent APNS_CERT_INVALID."""
        c, topic = client
        clean.set_topic_outcome(topic, reason)
        r = one(c, Push(token(), "m", topic))
        assert (r.status, r.reason, r.outcome, r.reason_code) == (
            status,
            reason,
            "tenant_permanent",
            ReasonCode.APNS_CERT_INVALID,
        )

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (429, ReasonCode.PUSH_REJECTED),
            (500, ReasonCode.PUSH_UNREACHABLE),
            (503, ReasonCode.PUSH_UNREACHABLE),
        ],
    )
    def test_persistent_transient_failures_are_retried_then_reported(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str], status: int, code: ReasonCode
    ) -> None:
        """429/500/503 are retried max_attempts times, then reported transient."""
        c, topic = client
        clean.configure(fail_rate=1.0, fail_status=status)
        r = one(c, Push(token(), "m", topic))
        assert (r.status, r.outcome, r.reason_code, r.attempts) == (status, "transient", code, c.max_attempts)

    def test_certificate_without_uid_is_bad_certificate(self, clean: ApnsEmulator) -> None:
        """A client certificate without a subject UID is answered 403 BadCertificate."""
        cert, key = clean.issue_push_cert(with_uid=False)
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem) as c:
            c.set_identity(cert, key, topic="com.apple.mgmt.External.x")
            r = one(c, Push(token(), "m", "com.apple.mgmt.External.x"))
        assert (r.status, r.reason, r.outcome) == (403, "BadCertificate", "tenant_permanent")

    def test_topic_other_than_the_certificate_uid_is_disallowed(self, clean: ApnsEmulator) -> None:
        """An apns-topic that is not the certificate's UID is answered 400 TopicDisallowed."""
        cert, key = clean.issue_push_cert()
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem) as c:
            c.set_identity(cert, key, topic="com.apple.mgmt.External.other")
            r = one(c, Push(token(), "m", "com.apple.mgmt.External.other"))
        assert (r.status, r.reason, r.reason_code) == (400, "TopicDisallowed", ReasonCode.APNS_CERT_INVALID)

    def test_short_token_is_bad_device_token(self, client: tuple[ApnsClient, str]) -> None:
        """A token that is not 64 hex characters is answered 400 BadDeviceToken."""
        c, topic = client
        r = one(c, Push("abcd", "m", topic))
        assert (r.status, r.reason, r.reason_code) == (400, "BadDeviceToken", ReasonCode.PUSH_REJECTED)

    def test_unknown_topic_is_cert_missing_without_a_request(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """A push for a topic with no certificate is tenant-permanent APNS_CERT_MISSING and never sent."""
        c, _ = client
        r = one(c, Push(token(), "m", "com.apple.mgmt.External.none"))
        assert (r.outcome, r.reason_code, r.status) == (
            "tenant_permanent",
            ReasonCode.APNS_CERT_MISSING,
            None,
        )
        assert clean.stats().received == 0

    def test_untrusted_certificate_fails_tls_and_is_unreachable(self, clean: ApnsEmulator) -> None:
        """A certificate the emulator's CA did not issue fails the TLS handshake: transient PUSH_UNREACHABLE."""
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert()
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem, max_attempts=2, backoff=0.001) as c:
            topic = c.set_identity(cert, key).topic
            r = one(c, Push(token(), "m", topic))
        assert (r.status, r.outcome, r.reason_code) == (None, "transient", ReasonCode.PUSH_UNREACHABLE)

    def test_closed_port_is_unreachable(self, clean: ApnsEmulator) -> None:
        """Nothing listening: retried, then transient PUSH_UNREACHABLE with the error in detail."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cert, key = clean.issue_push_cert()
        with ApnsClient(
            base_url=f"https://127.0.0.1:{port}", verify=clean.ca_pem, max_attempts=3, backoff=0.001
        ) as c:
            topic = c.set_identity(cert, key).topic
            r = one(c, Push(token(), "m", topic))
        assert (r.outcome, r.reason_code, r.attempts) == ("transient", ReasonCode.PUSH_UNREACHABLE, 3)
        assert r.detail

    def test_down_emulator_refuses_then_recovers(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """While the emulator is down pushes are unreachable; once it is up again they are delivered."""
        c, topic = client
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        clean.configure(down=True)
        try:
            r = one(c, Push(token(), "m", topic))
            assert (r.outcome, r.reason_code) == ("transient", ReasonCode.PUSH_UNREACHABLE)
        finally:
            clean.configure(down=False)
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"


class TestResilience:
    def test_503_and_goaway_lose_no_push(self, clean: ApnsEmulator, client: tuple[ApnsClient, str]) -> None:
        """With 20% 503s and a GOAWAY every 500 streams, 2,000 pushes are all finally delivered."""
        c, topic = client
        clean.configure(fail_rate=0.2, fail_status=503, goaway_every=500)
        results = c.send_sync([Push(token(), "m", topic) for _ in range(2000)])
        assert [r.outcome for r in results].count("delivered") == 2000
        stats = clean.stats()
        assert stats.goaways >= 3
        assert stats.rejected.get("ServiceUnavailable", 0) > 0
        assert stats.accepted >= 2000  # at least once: streams cut off by GOAWAY are resent

    def test_new_certificate_rebuilds_the_pool(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """A renewed certificate for the same topic builds a new pool keyed by its fingerprint."""
        c, topic = client
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        first = c.pool_fingerprint(topic)
        cert, key = clean.issue_push_cert(topic)
        renewed = c.set_identity(cert, key)
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        assert c.pool_fingerprint(topic) == renewed.fingerprint != first
        assert c.pools_built == 2

    def test_async_send_belongs_to_one_loop(self, client: tuple[ApnsClient, str]) -> None:
        """A client used from its sync thread refuses to be awaited from another event loop."""
        c, topic = client
        one(c, Push(token(), "m", topic))
        with pytest.raises(RuntimeError):
            asyncio.run(c.send([Push(token(), "m", topic)]))


class TestEmulatorChecks:
    def test_wrong_method_and_path_are_answered_as_apple(self, clean: ApnsEmulator) -> None:
        """GET is 405 MethodNotAllowed, another path 404 BadPath, an empty body 400 PayloadEmpty."""
        assert clean.handle("t", "GET", "/3/device/" + "a" * 64, [], b"")[0] == 405
        assert clean.handle("t", "POST", "/2/device/x", [], b"")[0] == 404
        status, _, body = clean.handle("t", "POST", "/3/device/" + "a" * 64, [], b"")
        assert (status, body) == (400, b'{"reason": "PayloadEmpty"}')
        assert clean.handle("t", "POST", "/3/device/" + "a" * 64, [], b'{"aps":{}}')[0] == 400
