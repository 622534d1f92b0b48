"""Check-in decoding, table-driven over real device captures, plus malformed input and encoders."""

from __future__ import annotations

import base64
import plistlib
from pathlib import Path

import pytest
from apple_schema import UNKNOWN, check, checkin_schema, require_shared

from pomona.protocol.checkin import (
    CHECKIN_CONTENT_TYPE,
    MESSAGE_TYPES,
    Authenticate,
    CheckinParseError,
    CheckOut,
    DeclarativeManagement,
    GetBootstrapToken,
    GetToken,
    SetBootstrapToken,
    TokenUpdate,
    UnrecognizedMessageTypeError,
    UserAuthenticate,
    decode_checkin,
    encode_authenticate,
    encode_checkout,
    encode_get_bootstrap_token_response,
    encode_token_update,
)
from pomona.protocol.command import decode_report
from pomona.protocol.errors import PlistTooLargeError, ProtocolError

TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
IPAD_UDID = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
MAC_UDID = "66ADE930-5FDF-5EC4-8429-15640684C489"


def captures_dir() -> Path:
    return require_shared("vectors", "micromdm+nanomdm", "mdm", "testdata")


def capture(name: str) -> bytes:
    return (captures_dir() / f"{name}.plist").read_bytes()


def expected_txt(name: str) -> dict[str, str]:
    lines = (captures_dir() / f"{name}.txt").read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines if line.strip())


# Expected values, read by hand from each capture.
CASES: list[tuple[str, type, dict[str, object]]] = [
    (
        "Authenticate.1",
        Authenticate,
        {
            "udid": IPAD_UDID,
            "topic": TOPIC,
            "serial_number": "F5JM992LF193",
            "product_name": "iPad2,5",
            "os_version": "9.3.5",
            "build_version": "13G36",
            "device_name": None,
            "model": None,
            "model_name": None,
            "imei": None,
            "meid": None,
            "enrollment_id": None,
        },
    ),
    (
        "Authenticate.2",
        Authenticate,
        {
            "udid": MAC_UDID,
            "topic": TOPIC,
            "serial_number": "C02MT66KFLHH",
            "product_name": "iMac14,2",
            "model": "iMac14,2",
            "model_name": "iMac",
            "device_name": "Fruit",
            "os_version": "10.12.6",
            "build_version": "16G2136",
        },
    ),
    (
        "TokenUpdate.1",
        TokenUpdate,
        {
            "udid": IPAD_UDID,
            "topic": TOPIC,
            "push_magic": "CEFDF0BD-E342-4A27-8742-E930EA116B0A",
            "token": base64.b64decode("R+juwGLC9ynsFwPBs+GPGXHYXwC+dkRdNAgLqnAbX1E="),
            "awaiting_configuration": False,
            "is_user_channel": False,
        },
    ),
    (
        "TokenUpdate.2",
        TokenUpdate,
        {
            "udid": MAC_UDID,
            "topic": TOPIC,
            "push_magic": "888CEB39-BFFA-40F6-89FA-B60752EB63C2",
            "token": base64.b64decode("G6fJAGbFD3domiTzpCXK9oowD3KeiORgqUFgItXWQsw="),
            "unlock_token": None,
            "awaiting_configuration": False,
        },
    ),
]

# Each .txt file holds device facts (BuildVersion, OSVersion, ProductName) of the device that sent the
# capture beside it; those facts come from that device's Authenticate (matched by UDID), not from the
# capture itself (TokenUpdate and command reports do not carry them).
TXT_FILES = ("TokenUpdate.1", "TokenUpdate.2", "DeviceInformation.1")
TXT_TO_FIELD = {"BuildVersion": "build_version", "OSVersion": "os_version", "ProductName": "product_name"}


class TestRealCaptures:
    @pytest.mark.parametrize(("name", "kind", "expected"), CASES, ids=[c[0] for c in CASES])
    def test_capture_decodes_to_expected_values(
        self, name: str, kind: type, expected: dict[str, object]
    ) -> None:
        """Each real check-in decodes to its message type with every expected value."""
        body = capture(name)
        msg = decode_checkin(body)
        assert type(msg) is kind
        assert msg.raw == body
        for attr, value in expected.items():
            assert getattr(msg, attr) == value, attr

    def test_unlock_token_is_kept_as_bytes(self) -> None:
        """The iPad's TokenUpdate carries its UnlockToken as raw bytes."""
        msg = decode_checkin(capture("TokenUpdate.1"))
        assert isinstance(msg, TokenUpdate)
        assert msg.unlock_token is not None and msg.unlock_token.startswith(b"DATA")
        # A keybag: a DATA chunk (8-byte header + its length) then a SIGN chunk (8 + 20 bytes).
        data_len = int.from_bytes(msg.unlock_token[4:8], "big")
        assert len(msg.unlock_token) == 8 + data_len + 8 + 20

    def test_unknown_challenge_key_is_tolerated(self) -> None:
        """The Mac's undocumented Challenge key does not stop decoding."""
        body = capture("Authenticate.2")
        assert plistlib.loads(body)["Challenge"] == b"apple"
        assert isinstance(decode_checkin(body), Authenticate)

    @pytest.mark.parametrize("name", TXT_FILES)
    def test_txt_values_match_the_same_devices_authenticate(self, name: str) -> None:
        """Every value in a .txt file equals what the same device (by UDID) sent in its Authenticate."""
        expected = expected_txt(name)
        assert expected and set(expected) <= set(TXT_TO_FIELD)
        body = capture(name)
        udid = decode_report(body).udid if name.startswith("DeviceInformation") else decode_checkin(body).udid
        authenticates = [
            m for n in ("Authenticate.1", "Authenticate.2") if (m := decode_checkin(capture(n))).udid == udid
        ]
        assert len(authenticates) == 1
        for key, value in expected.items():
            assert getattr(authenticates[0], TXT_TO_FIELD[key]) == value, key

    def test_device_information_capture_is_a_report_not_a_checkin(self) -> None:
        """The DeviceInformation capture has no MessageType, so it is not a check-in."""
        with pytest.raises(UnrecognizedMessageTypeError) as info:
            decode_checkin(capture("DeviceInformation.1"))
        assert info.value.message_type is None

    def test_messages_are_frozen(self) -> None:
        """Decoded messages are immutable."""
        msg = decode_checkin(capture("Authenticate.1"))
        with pytest.raises(AttributeError):
            msg.udid = "other"  # type: ignore[misc]


def body_of(d: dict[str, object]) -> bytes:
    return plistlib.dumps(d)


BASE_TOKEN: dict[str, object] = {
    "MessageType": "TokenUpdate",
    "Topic": TOPIC,
    "UDID": IPAD_UDID,
    "Token": b"\x01\x02",
    "PushMagic": "magic",
}


class TestMalformed:
    @pytest.mark.parametrize(
        "body",
        [b"", b"garbage", b"<plist><dict>", plistlib.dumps(["MessageType", "Authenticate"])],
        ids=["empty", "garbage", "unclosed", "array"],
    )
    def test_non_dict_bodies_are_parse_errors(self, body: bytes) -> None:
        """Bodies that are not plist dictionaries raise CheckinParseError keeping the raw body."""
        with pytest.raises(CheckinParseError) as info:
            decode_checkin(body)
        assert info.value.raw == body

    @pytest.mark.parametrize("name", ["Authenticate.1", "TokenUpdate.1"])
    def test_truncated_captures_are_parse_errors(self, name: str) -> None:
        """A capture cut short anywhere inside the plist raises CheckinParseError."""
        body = capture(name)
        end = body.index(b"</plist>")
        for cut in range(0, end, 7):
            with pytest.raises((CheckinParseError, UnrecognizedMessageTypeError)):
                decode_checkin(body[:cut])

    def test_oversized_body_is_a_parse_error_caused_by_the_size(self) -> None:
        """A body over the size limit raises CheckinParseError whose cause is PlistTooLargeError."""
        body = capture("Authenticate.1")
        with pytest.raises(CheckinParseError) as info:
            decode_checkin(body, max_size=100)
        assert isinstance(info.value.__cause__, PlistTooLargeError)

    def test_entity_expansion_is_a_parse_error(self) -> None:
        """A check-in declaring entities is refused."""
        body = b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "x">]><plist><dict/></plist>'
        with pytest.raises(CheckinParseError):
            decode_checkin(body)

    @pytest.mark.parametrize("message_type", ["Bogus", "authenticate", ""])
    def test_unknown_message_type(self, message_type: str) -> None:
        """An unknown MessageType raises UnrecognizedMessageTypeError naming it and keeping the body."""
        body = body_of({**BASE_TOKEN, "MessageType": message_type})
        with pytest.raises(UnrecognizedMessageTypeError) as info:
            decode_checkin(body)
        assert info.value.message_type == message_type and info.value.raw == body

    @pytest.mark.parametrize("value", [None, 5])
    def test_missing_or_non_string_message_type(self, value: object) -> None:
        """A missing or non-string MessageType is unrecognized."""
        d = {k: v for k, v in BASE_TOKEN.items() if k != "MessageType"}
        if value is not None:
            d["MessageType"] = value
        with pytest.raises(UnrecognizedMessageTypeError):
            decode_checkin(body_of(d))

    @pytest.mark.parametrize(
        "change",
        [
            {"Topic": None},
            {"Topic": 5},
            {"Token": None},
            {"Token": "not-data"},
            {"Token": b""},
            {"PushMagic": None},
            {"UDID": None},
            {"UDID": b"bytes"},
            {"AwaitingConfiguration": "yes"},
            {"UnlockToken": "text"},
            {"UserID": 3},
        ],
        ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values()))),
    )
    def test_missing_or_mistyped_token_update_keys(self, change: dict[str, object]) -> None:
        """A TokenUpdate missing a required key or with a wrongly typed key raises CheckinParseError."""
        d = {**BASE_TOKEN, **change}
        d = {k: v for k, v in d.items() if v is not None}
        with pytest.raises(CheckinParseError):
            decode_checkin(body_of(d))

    def test_errors_share_the_protocol_base(self) -> None:
        """Both check-in errors are ProtocolErrors (and ValueErrors)."""
        assert issubclass(CheckinParseError, ProtocolError)
        assert issubclass(UnrecognizedMessageTypeError, ProtocolError)


class TestOtherShapes:
    def test_user_enrollment_uses_enrollment_id(self) -> None:
        """A user enrollment (EnrollmentID, no UDID) decodes with the EnrollmentID as channel id."""
        d = {k: v for k, v in BASE_TOKEN.items() if k != "UDID"}
        msg = decode_checkin(body_of({**d, "EnrollmentID": "ENR-1"}))
        assert isinstance(msg, TokenUpdate)
        assert (msg.udid, msg.enrollment_id) == ("ENR-1", "ENR-1")

    def test_shared_ipad_user_channel(self) -> None:
        """A TokenUpdate with UserID is a user-channel token."""
        msg = decode_checkin(body_of({**BASE_TOKEN, "UserID": "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"}))
        assert isinstance(msg, TokenUpdate) and msg.is_user_channel

    def test_checkout(self) -> None:
        """A CheckOut decodes with its UDID and topic."""
        msg = decode_checkin(body_of({"MessageType": "CheckOut", "Topic": TOPIC, "UDID": IPAD_UDID}))
        assert isinstance(msg, CheckOut)
        assert (msg.udid, msg.topic, msg.message_type) == (IPAD_UDID, TOPIC, "CheckOut")

    def test_user_enrollment_user_channel(self) -> None:
        """A TokenUpdate with EnrollmentUserID (user enrollment on macOS) is a user-channel token."""
        d = {k: v for k, v in BASE_TOKEN.items() if k != "UDID"}
        msg = decode_checkin(body_of({**d, "EnrollmentID": "ENR-1", "EnrollmentUserID": "ENR-U"}))
        assert isinstance(msg, TokenUpdate) and msg.is_user_channel and msg.udid == "ENR-1"

    def test_every_message_type_has_a_decoder(self) -> None:
        """The registry knows Apple's eight check-in message types and nothing else."""
        names = {p.stem for p in require_shared("apple-device-management", "mdm", "checkin").glob("*.yaml")}
        assert {m.lower() for m in MESSAGE_TYPES} == names

    def test_content_type(self) -> None:
        """The check-in content type is Apple's aspen checkin type."""
        assert CHECKIN_CONTENT_TYPE == "application/x-apple-aspen-mdm-checkin"


MAC = {"UDID": MAC_UDID}
USER = {"UserID": "B5A5C2D4-0000-4C4B-9E2A-3C1D0E5F6A7B", "UserShortName": "ana", "UserLongName": "Ana"}

# The other known message types: (body keys, expected class, expected attributes).
OTHER_CASES: list[tuple[dict[str, object], type, dict[str, object]]] = [
    (
        {"MessageType": "UserAuthenticate", **MAC, **USER},
        UserAuthenticate,
        {"udid": MAC_UDID, "user_id": USER["UserID"], "digest_response": None, "is_user_channel": True},
    ),
    (
        {"MessageType": "UserAuthenticate", **MAC, **USER, "DigestResponse": "d"},
        UserAuthenticate,
        {"digest_response": "d", "user_short_name": "ana", "user_long_name": "Ana"},
    ),
    (
        {"MessageType": "GetBootstrapToken", **MAC, "AwaitingConfiguration": True},
        GetBootstrapToken,
        {"udid": MAC_UDID, "awaiting_configuration": True},
    ),
    (
        {"MessageType": "GetBootstrapToken", "AwaitingConfiguration": False},
        GetBootstrapToken,
        {"udid": None, "awaiting_configuration": False},
    ),
    (
        {"MessageType": "SetBootstrapToken", **MAC, "BootstrapToken": b"\x01\x02"},
        SetBootstrapToken,
        {"udid": MAC_UDID, "bootstrap_token": b"\x01\x02", "awaiting_configuration": False},
    ),
    (
        {"MessageType": "SetBootstrapToken", **MAC},
        SetBootstrapToken,
        {"bootstrap_token": None},
    ),
    (
        {"MessageType": "DeclarativeManagement", **MAC, "Endpoint": "tokens"},
        DeclarativeManagement,
        {"udid": MAC_UDID, "endpoint": "tokens", "data": None, "is_user_channel": False},
    ),
    (
        {"MessageType": "DeclarativeManagement", **MAC, **USER, "Endpoint": "status", "Data": b"{}"},
        DeclarativeManagement,
        {"endpoint": "status", "data": b"{}", "user_short_name": "ana", "is_user_channel": True},
    ),
    (
        {
            "MessageType": "GetToken",
            "EnrollmentID": "ENR-1",
            "TokenServiceType": "com.apple.maid",
            "TokenParameters": {"PhoneUDID": "P"},
        },
        GetToken,
        {"udid": "ENR-1", "token_service_type": "com.apple.maid", "token_parameters": {"PhoneUDID": "P"}},
    ),
]


class TestOtherMessageTypes:
    @pytest.mark.parametrize(
        ("keys", "kind", "expected"),
        OTHER_CASES,
        ids=[f"{c[0]['MessageType']}-{i}" for i, c in enumerate(OTHER_CASES)],
    )
    def test_decodes_to_its_own_class(
        self, keys: dict[str, object], kind: type, expected: dict[str, object]
    ) -> None:
        """Each of the other known message types decodes to its own class with its values."""
        body = body_of(keys)
        msg = decode_checkin(body)
        assert type(msg) is kind and msg.raw == body and msg.message_type == keys["MessageType"]
        for attr, value in expected.items():
            assert getattr(msg, attr) == value, attr

    @pytest.mark.parametrize(
        "keys",
        [
            {"MessageType": "UserAuthenticate", **MAC},
            {"MessageType": "UserAuthenticate", **USER},
            {"MessageType": "DeclarativeManagement", **MAC},
            {"MessageType": "DeclarativeManagement", **MAC, "Endpoint": "tokens", "Data": "text"},
            {"MessageType": "GetToken", **MAC},
            {"MessageType": "GetToken", **MAC, "TokenServiceType": "com.apple.maid", "TokenParameters": []},
            {"MessageType": "SetBootstrapToken", **MAC, "BootstrapToken": "text"},
            {"MessageType": "GetBootstrapToken", **MAC, "AwaitingConfiguration": "yes"},
        ],
        ids=lambda k: str(k["MessageType"]),
    )
    def test_missing_or_mistyped_keys(self, keys: dict[str, object]) -> None:
        """A required key missing, or a key of the wrong type, is a CheckinParseError."""
        with pytest.raises(CheckinParseError):
            decode_checkin(body_of(keys))

    def test_get_bootstrap_token_response_without_a_token(self) -> None:
        """With no token, the GetBootstrapToken response leaves the key out, as Apple documents."""
        assert plistlib.loads(encode_get_bootstrap_token_response(None)) == {}
        assert plistlib.loads(encode_get_bootstrap_token_response(b"t")) == {"BootstrapToken": b"t"}


class TestEncoders:
    def test_authenticate_round_trip(self) -> None:
        """encode_authenticate produces a body decode_checkin reads back field for field."""
        body = encode_authenticate(
            udid="00008110-000A1C3E0C38801E",
            topic=TOPIC,
            serial_number="F2LXK0ABCD12",
            product_name="iPhone15,2",
            model="MQ0T3LL/A",
            model_name="iPhone",
            device_name="Ana's iPhone",
            os_version="17.4",
            build_version="21E219",
            imei="35 674108 123456 1",
            meid="35674108123456",
        )
        msg = decode_checkin(body)
        assert isinstance(msg, Authenticate)
        assert (msg.udid, msg.product_name, msg.device_name, msg.imei) == (
            "00008110-000A1C3E0C38801E",
            "iPhone15,2",
            "Ana's iPhone",
            "35 674108 123456 1",
        )

    def test_authenticate_leaves_out_absent_facts(self) -> None:
        """Facts not given are absent from the body, as on a device that does not send them."""
        d = plistlib.loads(encode_authenticate(udid="U", topic=TOPIC))
        assert d == {"MessageType": "Authenticate", "Topic": TOPIC, "UDID": "U"}

    def test_token_update_round_trip(self) -> None:
        """encode_token_update produces a body decode_checkin reads back field for field."""
        body = encode_token_update(
            udid="U",
            topic=TOPIC,
            token=b"\xaa" * 32,
            push_magic="PM",
            unlock_token=b"DATA",
            awaiting_configuration=True,
        )
        msg = decode_checkin(body)
        assert isinstance(msg, TokenUpdate)
        assert (msg.token, msg.push_magic, msg.unlock_token, msg.awaiting_configuration) == (
            b"\xaa" * 32,
            "PM",
            b"DATA",
            True,
        )

    def test_token_update_always_sends_awaiting_configuration(self) -> None:
        """Like iOS, the TokenUpdate body always carries AwaitingConfiguration."""
        d = plistlib.loads(encode_token_update(udid="U", topic=TOPIC, token=b"t", push_magic="p"))
        assert d["AwaitingConfiguration"] is False

    def test_checkout_round_trip(self) -> None:
        """encode_checkout produces a CheckOut body."""
        msg = decode_checkin(encode_checkout(udid="U", topic=TOPIC))
        assert isinstance(msg, CheckOut) and (msg.udid, msg.topic) == ("U", TOPIC)

    @pytest.mark.parametrize(
        ("message_type", "body_factory"),
        [
            (
                "Authenticate",
                lambda: encode_authenticate(udid="U", topic=TOPIC, serial_number="S", os_version="17.4"),
            ),
            ("TokenUpdate", lambda: encode_token_update(udid="U", topic=TOPIC, token=b"t", push_magic="p")),
            ("CheckOut", lambda: encode_checkout(udid="U", topic=TOPIC)),
        ],
    )
    def test_encoded_bodies_match_apples_schema(self, message_type: str, body_factory: object) -> None:
        """Encoded check-ins use only keys of Apple's check-in schema with the right types (iOS)."""
        require_shared("apple-device-management")
        assert callable(body_factory)
        d = plistlib.loads(body_factory())
        keys = checkin_schema(message_type)["payloadkeys"]
        # EnrollmentID is "required" only for user enrollment, which these device-channel bodies are not.
        problems = [p for p in check(d, keys, platform="iOS") if p.path != "EnrollmentID"]
        assert problems == []

    def test_mac_capture_challenge_is_outside_apples_schema(self) -> None:
        """The schema checker sees the Mac's Challenge key as undocumented, which the decoder tolerates."""
        require_shared("apple-device-management")
        d = plistlib.loads(capture("Authenticate.2"))
        problems = check(d, checkin_schema("Authenticate")["payloadkeys"], platform="macOS")
        assert [(p.path, p.kind) for p in problems] == [("Challenge", UNKNOWN)]
