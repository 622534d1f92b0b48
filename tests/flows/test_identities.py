"""Identities end: a device certificate serves one enrollment, only while it is active (security issue 10)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography import x509
from sqlalchemy import text
from starlette.testclient import TestClient

from helpers import TenantSetup, reasons, setup_tenant
from pomona.app import Pomona, create_app
from pomona.domain.models import EnrollmentStatus
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE
from pomona.protocol.command import COMMAND_CONTENT_TYPE, encode_report
from pomona.testing.virtual_device import VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def enrolled(client: TestClient, s: TenantSetup) -> VirtualDevice:
    d = VirtualDevice(s.enroll_url, client=client)  # type: ignore[arg-type]
    d.enroll()
    return d


def history(p: Pomona, s: TenantSetup, udid: str) -> list[tuple[str, str]]:
    """The device's enrollments, oldest first: (id, status)."""
    v = p.commands.device(s.name, udid)
    return sorted(((e.id, e.status.value) for e in v.history), key=lambda x: x[0])


def statuses(p: Pomona, s: TenantSetup, udid: str) -> list[str]:
    return sorted(st for _, st in history(p, s, udid))


class Replay:
    """What an attacker kept of a device's old identity: its certificate and messages signed with it."""

    def __init__(self, d: VirtualDevice) -> None:
        assert d.identity_cert is not None
        self.d = d
        self.cert: x509.Certificate = d.identity_cert
        self.authenticate = d.authenticate_message()
        self.token_update = d.token_update_message()
        self.idle = d.idle_message()
        self.checkin_url = d.check_in_url or ""
        self.server_url = d.server_url or ""

    def put(self, url: str, body: bytes, content_type: str = CHECKIN_CONTENT_TYPE) -> tuple[int, str]:
        r = self.d.signed_put(url, body, content_type, cert=self.cert)
        return r.status_code, (r.json().get("reason", "") if r.content else "")


class TestIdentitiesEnd:
    def test_retired_identity_cannot_authenticate_again(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """After retire, the old certificate's Authenticate is IDENTITY_ENDED and no enrollment appears."""
        d = enrolled(client, acme)
        old = Replay(d)
        pomona.policy.retire(acme.name, udid=d.udid)
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        assert statuses(pomona, acme, d.udid) == ["retired"]
        assert pomona.commands.device(acme.name, d.udid).enrollment is None
        assert reasons(pomona, acme.name, reason="IDENTITY_ENDED") == ["IDENTITY_ENDED"]

    def test_checked_out_identity_cannot_authenticate_again(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """After CheckOut, a replayed Authenticate is refused and the device stays unenrolled."""
        d = enrolled(client, acme)
        old = Replay(d)
        d.checkout()
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        assert statuses(pomona, acme, d.udid) == ["removed"]
        r = old.put(old.checkin_url, old.token_update)
        assert r == (401, "UNKNOWN_ENROLLMENT")  # the shared contract: a checked-out device is unknown

    def test_replay_after_reenrollment_leaves_the_new_identity_alone(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A replay of the old Authenticate after re-enrollment is refused; the current one stays and works."""
        d = enrolled(client, acme)
        old = Replay(d)
        d.enroll()  # the same device enrolls again: a new SCEP identity replaces the old one
        assert d.identity_cert != old.cert
        before = history(pomona, acme, d.udid)
        assert sorted(st for _, st in before) == ["active", "replaced"]
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        assert old.put(old.checkin_url, old.token_update) == (401, "IDENTITY_ENDED")
        assert old.put(old.server_url, old.idle, COMMAND_CONTENT_TYPE) == (401, "IDENTITY_ENDED")
        assert history(pomona, acme, d.udid) == before
        current = pomona.commands.device(acme.name, d.udid).enrollment
        assert current is not None and current.status is EnrollmentStatus.ACTIVE
        pomona.commands.enqueue(acme.name, "DeviceInformation", {}, [d.udid], push=False)
        assert [c.request_type for c in d.poll()] == ["DeviceInformation"]

    def test_blocked_identity_stays_refused_after_unblock(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """Block ends the identity: refused while blocked, and still refused after the unblock."""
        d = enrolled(client, acme)
        old = Replay(d)
        pomona.policy.block(acme.name, udid=d.udid)
        assert old.put(old.server_url, old.idle, COMMAND_CONTENT_TYPE)[1] == "DEVICE_BLOCKED"
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        pomona.policy.block(acme.name, udid=d.udid, unblock=True)
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        assert statuses(pomona, acme, d.udid) == ["blocked"]
        d.enroll()  # enrolling again, with a new identity, is the way back
        assert statuses(pomona, acme, d.udid) == ["active", "blocked"]

    def test_ended_identity_is_refused_on_every_channel(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """TokenUpdate, Idle and a command result signed by a retired identity are refused, nothing changes."""
        d = enrolled(client, acme)
        old = Replay(d)
        cmd = pomona.commands.enqueue(acme.name, "DeviceInformation", {}, [d.udid], push=False)
        pomona.policy.retire(acme.name, udid=d.udid)
        result = encode_report(
            udid=d.udid,
            status="Acknowledged",
            command_uuid=cmd[0].command_uuid,
            payload={"QueryResponses": {}},
        )
        for url, body, ctype in (
            (old.checkin_url, old.token_update, CHECKIN_CONTENT_TYPE),
            (old.server_url, old.idle, COMMAND_CONTENT_TYPE),
            (old.server_url, result, COMMAND_CONTENT_TYPE),
        ):
            assert old.put(url, body, ctype) == (403, "UNKNOWN_ENROLLMENT")  # told to unenroll
        assert pomona.commands.command(acme.name, cmd[0].command_uuid).status.value != "acknowledged"
        assert statuses(pomona, acme, d.udid) == ["retired"]

    def test_identity_without_a_recorded_binding_also_ends(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """An identity whose binding an older release did not record ends with its enrollment all the same."""
        d = enrolled(client, acme)
        old = Replay(d)
        with pomona.db.unit_of_work() as uow:
            uow.conn.execute(text("UPDATE device_certs SET enrollment_id = NULL"))  # type: ignore[attr-defined]
        d.complete_enrollment()  # still a refresh while active
        pomona.policy.retire(acme.name, udid=d.udid)
        assert old.put(old.checkin_url, old.authenticate) == (401, "IDENTITY_ENDED")
        assert statuses(pomona, acme, d.udid) == ["retired"]

    def test_refresh_of_an_active_identity_still_works(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """An active identity that authenticates again keeps its one enrollment (a refresh)."""
        d = enrolled(client, acme)
        d.complete_enrollment()
        assert statuses(pomona, acme, d.udid) == ["active"]
