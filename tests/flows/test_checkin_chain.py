"""The check-in chain end to end: user channels, the message types Pomona does not implement, refusal events.

The virtual device enrolls through the real ASGI app, on SQLite and PostgreSQL; the messages a Mac or a
Shared iPad would add are signed with the device's own identity, as the device signs them.
"""

from __future__ import annotations

import plistlib
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.domain.models import Enrollment, Event
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE, encode_token_update
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

USER_ID = "B5A5C2D4-0000-4C4B-9E2A-3C1D0E5F6A7B"


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


@pytest.fixture
def mac(client: TestClient, acme: TenantSetup) -> VirtualDevice:
    d = VirtualDevice(acme.enroll_url, client=client, product="MacBookPro18,3", os_version="14.4")  # type: ignore[arg-type]
    d.enroll()
    return d


def enrollment(p: Pomona, s: TenantSetup, udid: str) -> Enrollment:
    with p.db.unit_of_work(readonly=True) as uow:
        found = uow.enrollments.active_for_udid(s.tenant_id, udid)
    assert found is not None
    return found


def events(p: Pomona, s: TenantSetup, step: str, **filters: object) -> list[Event]:
    return [e for e in p.commands.events(s.name, **filters) if e.step.value == step]


def put(d: VirtualDevice, keys: dict[str, object], **kw: object) -> object:
    body = plistlib.dumps({"UDID": d.udid, **keys})
    return d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE, **kw)  # type: ignore[arg-type]


class TestUserChannelTokenUpdate:
    def test_keeps_the_device_push_token(self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup) -> None:
        """A TokenUpdate on a user channel leaves the device channel's push token and magic as they were."""
        before = enrollment(pomona, acme, mac.udid)
        assert before.push_token is not None and before.push_token.hex() == mac.push_token
        body = encode_token_update(
            udid=mac.udid,
            topic=mac.topic or "",
            token=b"\x99" * 32,
            push_magic="USER-CHANNEL-MAGIC",
            user_id=USER_ID,
            user_short_name="ana",
            user_long_name="Ana",
        )
        r = mac.signed_put(mac.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
        assert r.status_code == 200
        after = enrollment(pomona, acme, mac.udid)
        assert (after.push_token, after.push_magic) == (before.push_token, before.push_magic)
        assert after.unlock_token == before.unlock_token

    def test_is_recorded_as_a_user_channel_event(
        self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup
    ) -> None:
        """The user channel's TokenUpdate leaves an OK event naming the channel's user, not storing it."""
        body = encode_token_update(
            udid=mac.udid, topic=mac.topic or "", token=b"\x99" * 32, push_magic="M", user_id=USER_ID
        )
        assert mac.signed_put(mac.check_in_url or "", body, CHECKIN_CONTENT_TYPE).status_code == 200
        user_events = [
            e for e in events(pomona, acme, "tokenupdate", udid=mac.udid) if e.detail.get("channel")
        ]
        assert len(user_events) == 1
        e = user_events[0]
        assert (e.outcome.value, e.detail["channel"], e.detail["device_user_id"], e.detail["stored"]) == (
            "ok",
            "user",
            USER_ID,
            False,
        )

    def test_device_channel_token_update_still_stores(
        self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup
    ) -> None:
        """A TokenUpdate on the device channel still replaces the push token."""
        body = encode_token_update(udid=mac.udid, topic=mac.topic or "", token=b"\x42" * 32, push_magic="NEW")
        assert mac.signed_put(mac.check_in_url or "", body, CHECKIN_CONTENT_TYPE).status_code == 200
        after = enrollment(pomona, acme, mac.udid)
        assert (after.push_token, after.push_magic) == (b"\x42" * 32, "NEW")


class TestMessagesPomonaDoesNotImplement:
    @pytest.mark.parametrize(
        ("keys", "status"),
        [
            ({"MessageType": "UserAuthenticate", "UserID": USER_ID, "UserShortName": "ana"}, 410),
            ({"MessageType": "SetBootstrapToken", "BootstrapToken": b"token"}, 400),
            ({"MessageType": "DeclarativeManagement", "Endpoint": "tokens"}, 400),
            ({"MessageType": "GetToken", "TokenServiceType": "com.apple.maid"}, 400),
            ({"MessageType": "ReturnToServiceSomeday"}, 400),
        ],
        ids=lambda v: v["MessageType"] if isinstance(v, dict) else str(v),
    )
    def test_refused_with_message_type_unsupported(
        self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup, keys: dict[str, object], status: int
    ) -> None:
        """Each is refused with its documented status and MESSAGE_TYPE_UNSUPPORTED, leaving one event
        under the step checkin that names the message type; the enrollment stays."""
        r = put(mac, keys)
        assert (r.status_code, r.json()["reason"]) == (status, "MESSAGE_TYPE_UNSUPPORTED")  # type: ignore[attr-defined]
        refused = events(pomona, acme, "checkin", reason="MESSAGE_TYPE_UNSUPPORTED")
        assert [(e.udid, e.detail["message_type"]) for e in refused] == [(mac.udid, keys["MessageType"])]
        assert enrollment(pomona, acme, mac.udid).push_token is not None

    def test_get_bootstrap_token_answers_no_token(
        self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup
    ) -> None:
        """GetBootstrapToken gets a 200 response without a BootstrapToken, and an OK event."""
        r = put(mac, {"MessageType": "GetBootstrapToken", "AwaitingConfiguration": False})
        assert r.status_code == 200 and plistlib.loads(r.content) == {}  # type: ignore[attr-defined]
        assert r.headers["content-type"] == "application/xml"  # type: ignore[attr-defined]
        ok = events(pomona, acme, "checkin", udid=mac.udid)
        assert [(e.outcome.value, e.detail["message_type"]) for e in ok] == [("ok", "GetBootstrapToken")]

    def test_still_authenticated_first(self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup) -> None:
        """An unsigned UserAuthenticate is SIGNATURE_INVALID (under the step checkin), not a 410."""
        r = put(mac, {"MessageType": "UserAuthenticate", "UserID": USER_ID}, signature="omit")
        assert (r.status_code, r.json()["reason"]) == (401, "SIGNATURE_INVALID")  # type: ignore[attr-defined]
        assert [e.reason for e in events(pomona, acme, "checkin")] == ["SIGNATURE_INVALID"]

    def test_from_a_removed_device(self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup) -> None:
        """A known type from an identity with no enrollment left is UNKNOWN_ENROLLMENT, not its own answer."""
        cert, url = mac.identity_cert, pomona.enrollment.urls.checkin(acme.tenant_id)
        mac.checkout()
        body = plistlib.dumps({"MessageType": "GetBootstrapToken", "UDID": mac.udid})
        r = mac.signed_put(url, body, CHECKIN_CONTENT_TYPE, cert=cert)
        assert (r.status_code, r.json()["reason"]) == (401, "UNKNOWN_ENROLLMENT")  # type: ignore[attr-defined]


class TestRefusalEvents:
    def test_policy_refusal_leaves_exactly_one_described_event(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A policy refusal at Authenticate leaves one event, naming the user and the device's facts."""
        pomona.policy.edit_restriction(acme.name, type_="platform", default=True, personal="block")
        d = VirtualDevice(acme.enroll_url, client=client)  # type: ignore[arg-type]
        with pytest.raises(EnrollmentRefused) as err:
            d.enroll()
        assert err.value.reason == "PERSONAL_DEVICE_BLOCKED"
        refused = events(pomona, acme, "authenticate", reason="PERSONAL_DEVICE_BLOCKED")
        assert len(refused) == 1
        e = refused[0]
        assert (e.upn, e.serial, e.udid) == (acme.upn, d.serial, d.udid) and e.user_id
        assert e.detail["product"] == d.product and e.detail["error"]

    def test_other_refusals_leave_one_event(
        self, pomona: Pomona, mac: VirtualDevice, acme: TenantSetup
    ) -> None:
        """A refusal the core raises (here TOPIC_MISMATCH) leaves exactly one event, with the claimed UDID."""
        body = encode_token_update(
            udid=mac.udid, topic="com.apple.mgmt.External.other", token=b"t", push_magic="p"
        )
        r = mac.signed_put(mac.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
        assert (r.status_code, r.json()["reason"]) == (401, "TOPIC_MISMATCH")
        assert [
            (e.step.value, e.udid) for e in pomona.commands.events(acme.name, reason="TOPIC_MISMATCH")
        ] == [("tokenupdate", mac.udid)]
