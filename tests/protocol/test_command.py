"""Command builders, admin-API validation, the device-side decoder, and command reports."""

from __future__ import annotations

import base64
import plistlib

import pytest
from apple_schema import (
    MISSING,
    available_on,
    check,
    command_request_types,
    command_schema,
    iter_keys,
    require_shared,
)

from pomona.protocol.command import (
    COMMAND_CONTENT_TYPE,
    COMMAND_TYPES,
    DEFAULT_DEVICE_INFORMATION_QUERIES,
    DEVICE_INFORMATION_QUERIES,
    Command,
    CommandBuildError,
    CommandParseError,
    DeviceInformation,
    InstallProfile,
    ReportParseError,
    ReportStatus,
    Settings,
    build_command,
    decode_command,
    decode_report,
    encode_report,
)
from pomona.protocol.errors import ProtocolError

PROFILE = b"<?xml version='1.0'?><plist><dict/></plist>"

# For each command: admin-API params using every key Pomona supports, and the subset valid on iOS.
FULL_PARAMS: dict[str, dict[str, object]] = {
    "DeviceInformation": {"Queries": ["UDID", "SerialNumber", "BatteryLevel"]},
    "SecurityInfo": {},
    "ProfileList": {"ManagedOnly": True},
    "InstalledApplicationList": {"Identifiers": ["com.apple.mobilesafari"], "ManagedAppsOnly": False},
    "InstallProfile": {"Payload": base64.b64encode(PROFILE).decode()},
    "RemoveProfile": {"Identifier": "com.pomona.enroll.acme"},
    "DeviceLock": {"Message": "Call IT", "PhoneNumber": "+1 555 0100", "PIN": "123456"},
    "EraseDevice": {"PIN": "123456", "PreserveDataPlan": True, "DisallowProximitySetup": True},
    "RestartDevice": {},
    "Settings": {
        "Settings": [
            {"Item": "DeviceName", "DeviceName": "Front desk"},
            {"Item": "OrganizationInfo", "OrganizationInfo": {"OrganizationName": "Acme"}},
            {"Item": "TimeZone", "TimeZone": "Europe/Paris"},
            {"Item": "Bluetooth", "Enabled": True},
            {"Item": "DataRoaming", "Enabled": False},
        ]
    },
    "DeviceConfigured": {},
}
MACOS_ONLY = {"PIN"}


def ios_params(request_type: str) -> dict[str, object]:
    return {k: v for k, v in FULL_PARAMS[request_type].items() if k not in MACOS_ONLY}


def command_dict(cmd: Command) -> dict[str, object]:
    d = plistlib.loads(cmd.to_plist())
    assert set(d) == {"CommandUUID", "Command"}
    inner = d["Command"]
    assert isinstance(inner, dict)
    return inner


class TestBuilders:
    def test_every_builder_is_covered_here(self) -> None:
        """The parameter table covers every command Pomona builds."""
        assert set(FULL_PARAMS) == set(COMMAND_TYPES)

    @pytest.mark.parametrize("request_type", sorted(FULL_PARAMS))
    def test_plist_shape(self, request_type: str) -> None:
        """Every command serialises to {CommandUUID, Command: {RequestType, ...}} with its own type."""
        cmd = build_command(request_type, FULL_PARAMS[request_type], command_uuid="C-1")
        d = plistlib.loads(cmd.to_plist())
        assert d["CommandUUID"] == "C-1"
        assert d["Command"]["RequestType"] == request_type == cmd.request_type

    def test_generated_uuids_are_unique(self) -> None:
        """Commands built without a UUID get distinct generated ones."""
        assert DeviceInformation().command_uuid != DeviceInformation().command_uuid

    def test_device_information_default_queries(self) -> None:
        """DeviceInformation without params asks the default realistic queries."""
        inner = command_dict(build_command("DeviceInformation", {}))
        assert inner["Queries"] == list(DEFAULT_DEVICE_INFORMATION_QUERIES)
        assert {"UDID", "SerialNumber", "OSVersion", "ProductName"} <= set(DEFAULT_DEVICE_INFORMATION_QUERIES)

    def test_install_profile_payload_is_data(self) -> None:
        """InstallProfile carries its payload as plist <data>, decoded from base64 JSON."""
        inner = command_dict(build_command("InstallProfile", FULL_PARAMS["InstallProfile"]))
        assert inner["Payload"] == PROFILE
        assert b"<data>" in InstallProfile(payload=PROFILE).to_plist()

    def test_settings_device_name_helper(self) -> None:
        """Settings.device_name builds the documented DeviceName item."""
        inner = command_dict(Settings.device_name("Front desk"))
        assert inner["Settings"] == [{"Item": "DeviceName", "DeviceName": "Front desk"}]

    def test_optional_keys_are_omitted_when_unset(self) -> None:
        """Unset optional parameters do not appear in the command."""
        for request_type in ("ProfileList", "DeviceLock", "EraseDevice", "InstalledApplicationList"):
            assert command_dict(build_command(request_type, {})) == {"RequestType": request_type}

    def test_matches_real_install_profile_capture(self) -> None:
        """A real InstallProfile command (micromdm capture) round-trips through our decoder and builder."""
        body = require_shared(
            "vectors", "micromdm+micromdm", "mdm", "mdm", "testdata", "InstallProfile.plist"
        )
        uuid, request_type, params = decode_command(body.read_bytes())
        assert (uuid, request_type, params) == (
            "7e761ec5-9e20-42d1-9072-3d5a611e3ac5",
            "InstallProfile",
            {"Payload": b"foobarbaz"},
        )
        rebuilt = build_command(request_type, {"Payload": base64.b64encode(b"foobarbaz").decode()}, uuid)
        assert plistlib.loads(rebuilt.to_plist()) == plistlib.loads(body.read_bytes())

    def test_content_type(self) -> None:
        """The command channel content type is Apple's aspen mdm type."""
        assert COMMAND_CONTENT_TYPE == "application/x-apple-aspen-mdm"


class TestAgainstAppleSchema:
    @pytest.fixture(autouse=True)
    def _shared(self) -> None:
        require_shared("apple-device-management", "mdm", "commands")

    def test_every_request_type_exists_in_apples_schema(self) -> None:
        """Each builder's RequestType is a command Apple's schema describes."""
        assert set(COMMAND_TYPES) <= command_request_types()

    @pytest.mark.parametrize("request_type", sorted(FULL_PARAMS))
    def test_full_command_keys_names_and_types(self, request_type: str) -> None:
        """With every option set, the command uses only Apple's keys, types and allowed values."""
        inner = command_dict(build_command(request_type, FULL_PARAMS[request_type]))
        inner.pop("RequestType")
        assert check(inner, command_schema(request_type).get("payloadkeys")) == []

    @pytest.mark.parametrize("request_type", sorted(FULL_PARAMS))
    def test_ios_command_is_valid_on_ios(self, request_type: str) -> None:
        """Without macOS-only options, every command is valid for iOS, required keys included."""
        inner = command_dict(build_command(request_type, ios_params(request_type)))
        inner.pop("RequestType")
        assert check(inner, command_schema(request_type).get("payloadkeys"), platform="iOS") == []

    def test_missing_required_key_is_caught_by_the_cross_check(self) -> None:
        """The cross-check notices a command lacking a required key (checker sanity)."""
        problems = check({}, command_schema("RemoveProfile")["payloadkeys"], platform="iOS")
        assert [(p.path, p.kind) for p in problems] == [("Identifier", MISSING)]

    def test_device_information_queries_are_apples_ios_queries(self) -> None:
        """The accepted DeviceInformation queries are exactly the iOS query names in Apple's schema."""
        queries_item = next(
            k
            for k in iter_keys(command_schema("DeviceInformation")["payloadkeys"])
            if k.get("key") == "QueriesItem"
        )
        names = {str(k["key"]) for k in queries_item["subkeys"] if available_on(k, "iOS")}
        assert DEVICE_INFORMATION_QUERIES == names


class TestBuildCommandValidation:
    @pytest.mark.parametrize(
        ("request_type", "params"),
        [
            ("Bogus", {}),
            ("deviceinformation", {}),
            ("SecurityInfo", {"Extra": 1}),
            ("DeviceInformation", {"Queries": "UDID"}),
            ("DeviceInformation", {"Queries": ["NotAQuery"]}),
            ("DeviceInformation", {"Queries": []}),
            ("DeviceInformation", {"Queries": [1]}),
            ("InstallProfile", {}),
            ("InstallProfile", {"Payload": "!!! not base64"}),
            ("InstallProfile", {"Payload": ""}),
            ("InstallProfile", {"Payload": 5}),
            ("RemoveProfile", {}),
            ("RemoveProfile", {"Identifier": ""}),
            ("RemoveProfile", {"Identifier": ["a"]}),
            ("DeviceLock", {"PIN": "12345"}),
            ("DeviceLock", {"PIN": "abcdef"}),
            ("DeviceLock", {"Message": 5}),
            ("EraseDevice", {"PreserveDataPlan": "yes"}),
            ("EraseDevice", {"PreserveDataPlan": 1}),
            ("ProfileList", {"ManagedOnly": "true"}),
            ("Settings", {}),
            ("Settings", {"Settings": []}),
            ("Settings", {"Settings": {"Item": "DeviceName"}}),
            ("Settings", {"Settings": [{"Item": "Wallpaper", "Image": "x", "Where": 1}]}),
            ("Settings", {"Settings": [{"Item": "DeviceName"}]}),
            ("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": ""}]}),
            ("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "x", "Extra": 1}]}),
            ("Settings", {"Settings": [{"Item": "Bluetooth", "Enabled": 1}]}),
            ("Settings", {"Settings": [{"Item": "OrganizationInfo", "OrganizationInfo": {"Bad": "x"}}]}),
            ("Settings", {"Settings": ["DeviceName"]}),
            ("InstalledApplicationList", {"Identifiers": [""]}),
        ],
    )
    def test_bad_params_raise_command_build_error(self, request_type: str, params: dict[str, object]) -> None:
        """Unknown types, unknown keys, missing keys and wrong types or values raise CommandBuildError."""
        with pytest.raises(CommandBuildError):
            build_command(request_type, params)

    def test_error_names_the_key(self) -> None:
        """A parameter error says which request type and key it is about."""
        with pytest.raises(CommandBuildError) as info:
            build_command("RemoveProfile", {"Identifier": 3})
        assert (info.value.request_type, info.value.key) == ("RemoveProfile", "Identifier")

    @pytest.mark.parametrize("command_uuid", ["", "   "])
    def test_blank_command_uuid_refused(self, command_uuid: str) -> None:
        """A blank CommandUUID is refused."""
        with pytest.raises(CommandBuildError):
            build_command("SecurityInfo", {}, command_uuid)

    def test_params_must_be_an_object(self) -> None:
        """Params that are not a mapping are refused."""
        with pytest.raises(CommandBuildError):
            build_command("SecurityInfo", ["x"])  # type: ignore[arg-type]

    def test_null_optional_params_are_ignored(self) -> None:
        """JSON nulls for optional parameters mean "not set"."""
        assert command_dict(build_command("DeviceLock", {"Message": None})) == {"RequestType": "DeviceLock"}

    def test_build_error_is_a_protocol_error(self) -> None:
        """CommandBuildError belongs to the protocol error tree."""
        assert issubclass(CommandBuildError, ProtocolError)


class TestDecodeCommand:
    @pytest.mark.parametrize("request_type", sorted(FULL_PARAMS))
    def test_round_trip(self, request_type: str) -> None:
        """decode_command returns the UUID, request type and keys of a built command."""
        cmd = build_command(request_type, FULL_PARAMS[request_type])
        uuid, rt, params = decode_command(cmd.to_plist())
        assert (uuid, rt) == (cmd.command_uuid, request_type)
        assert params == cmd.command_keys()

    @pytest.mark.parametrize(
        "d",
        [
            {},
            {"CommandUUID": "x"},
            {"CommandUUID": "x", "Command": []},
            {"CommandUUID": "x", "Command": {}},
            {"CommandUUID": 1, "Command": {"RequestType": "X"}},
        ],
    )
    def test_malformed_commands(self, d: dict[str, object]) -> None:
        """Bodies lacking a CommandUUID, a Command dict or a RequestType raise CommandParseError."""
        with pytest.raises(CommandParseError):
            decode_command(plistlib.dumps(d))

    def test_non_plist(self) -> None:
        """A non-plist body raises CommandParseError keeping the raw body."""
        with pytest.raises(CommandParseError) as info:
            decode_command(b"nope")
        assert info.value.raw == b"nope"


class TestReports:
    def test_real_device_information_report(self) -> None:
        """The real DeviceInformation report decodes with status, UUID and the other keys as payload."""
        body = require_shared(
            "vectors", "micromdm+nanomdm", "mdm", "testdata", "DeviceInformation.1.plist"
        ).read_bytes()
        report = decode_report(body)
        assert report.udid == "66ADE930-5FDF-5EC4-8429-15640684C489"
        assert report.status is ReportStatus.ACKNOWLEDGED
        assert report.command_uuid == "76eda240-5488-4989-8339-f2ae160113c4"
        assert report.error_chain == []
        assert report.payload == {
            "QueryResponses": {
                "HostName": "fruit.example.com",
                "UDID": "66ADE930-5FDF-5EC4-8429-15640684C489",
            },
            "RequestType": "DeviceInformation",
        }
        assert report.raw == body and not report.is_idle

    def test_idle_report(self) -> None:
        """An Idle report needs no CommandUUID."""
        report = decode_report(encode_report(udid="U", status="Idle"))
        assert report.is_idle and report.command_uuid is None and report.payload == {}

    def test_error_report_keeps_error_chain(self) -> None:
        """An Error report keeps its ErrorChain dictionaries."""
        chain = [{"ErrorCode": 1003, "ErrorDomain": "MCProfileErrorDomain", "LocalizedDescription": "x"}]
        report = decode_report(
            encode_report(udid="U", status=ReportStatus.ERROR, command_uuid="C", error_chain=chain)
        )
        assert report.status is ReportStatus.ERROR and report.error_chain == chain

    @pytest.mark.parametrize("status", [s.value for s in ReportStatus if s is not ReportStatus.IDLE])
    def test_non_idle_needs_command_uuid(self, status: str) -> None:
        """Every status but Idle must name the command it answers."""
        with pytest.raises(ReportParseError):
            decode_report(plistlib.dumps({"UDID": "U", "Status": status}))

    @pytest.mark.parametrize(
        "d",
        [
            {"Status": "Idle"},
            {"UDID": "U"},
            {"UDID": "U", "Status": "Done"},
            {"UDID": "U", "Status": 1},
            {"UDID": "U", "Status": "Acknowledged", "CommandUUID": 5},
            {"UDID": "U", "Status": "Error", "CommandUUID": "C", "ErrorChain": {}},
            {"UDID": "U", "Status": "Error", "CommandUUID": "C", "ErrorChain": ["x"]},
        ],
    )
    def test_malformed_reports(self, d: dict[str, object]) -> None:
        """Reports without an id, with an unknown status, or with a malformed chain raise ReportParseError."""
        with pytest.raises(ReportParseError):
            decode_report(plistlib.dumps(d))

    def test_user_enrollment_report(self) -> None:
        """A report carrying only EnrollmentID uses it as the channel id."""
        report = decode_report(plistlib.dumps({"EnrollmentID": "E", "Status": "Idle"}))
        assert report.udid == "E"

    def test_oversized_and_garbage_reports(self) -> None:
        """Too-large and non-plist report bodies raise ReportParseError."""
        for body, limit in ((encode_report(udid="U", status="Idle"), 10), (b"junk", 1000)):
            with pytest.raises(ReportParseError):
                decode_report(body, max_size=limit)

    def test_encode_refuses_payload_shadowing_report_keys(self) -> None:
        """encode_report does not let payload overwrite UDID/Status/CommandUUID/ErrorChain."""
        with pytest.raises(ValueError):
            encode_report(udid="U", status="Acknowledged", command_uuid="C", payload={"Status": "Idle"})

    def test_report_round_trip_with_payload(self) -> None:
        """Payload keys survive encode_report then decode_report."""
        payload: dict[str, object] = {"QueryResponses": {"UDID": "U", "BatteryLevel": 0.5}}
        report = decode_report(
            encode_report(udid="U", status="Acknowledged", command_uuid="C", payload=payload)
        )
        assert report.payload == payload
