"""Simulated iOS command responses: shapes from Apple's schemas and a real report."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pomona.protocol.command import (
    DEVICE_INFORMATION_QUERIES,
    build_command,
    decode_command,
    decode_report,
    encode_report,
)
from pomona.protocol.profile import build_enrollment_profile, encode_profile
from pomona.testing.ios_responses import (
    DeviceFacts,
    UnsupportedCommandError,
    apply_command,
    respond,
)


def _load_apple_schema() -> ModuleType:
    """The schema checker helper lives in tests/protocol; load it by path."""
    if "apple_schema" in sys.modules:
        return sys.modules["apple_schema"]
    path = Path(__file__).resolve().parents[1] / "protocol" / "apple_schema.py"
    spec = importlib.util.spec_from_file_location("apple_schema", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["apple_schema"] = module
    spec.loader.exec_module(module)
    return module


apple_schema = _load_apple_schema()

IPHONE = DeviceFacts(udid="00008110-000A1C3E0C38801E", serial_number="F2LXK0ABCD12", push_token=b"\x01" * 32)
WIFI_IPAD = DeviceFacts(
    udid="00008103-001234560E0A001E",
    serial_number="DMPXK0ABCD34",
    product_name="iPad13,18",
    model_name="iPad",
    model="MPQ03LL/A",
    model_number="MPQ03",
    imei=None,
    meid=None,
    iccid=None,
)
PROFILE = encode_profile(
    build_enrollment_profile(
        tenant_id="acme",
        organization="Acme",
        display_name="Acme MDM",
        scep_url="https://mdm.acme.test/scep",
        scep_challenge="c",
        scep_subject=[[["CN", "x"]]],
        scep_name="pomona",
        server_url="https://mdm.acme.test/mdm",
        check_in_url="https://mdm.acme.test/checkin",
        topic="com.apple.mgmt.External.x",
    )
)
COMMANDS: dict[str, dict[str, object]] = {
    "DeviceInformation": {"Queries": sorted(DEVICE_INFORMATION_QUERIES)},
    "SecurityInfo": {},
    "ProfileList": {},
    "InstalledApplicationList": {},
    "InstallProfile": {"Payload": PROFILE},
    "RemoveProfile": {"Identifier": "com.pomona.enroll.acme"},
    "DeviceLock": {"Message": "Call IT"},
    "EraseDevice": {},
    "RestartDevice": {},
    "Settings": {"Settings": [{"Item": "DeviceName", "DeviceName": "Front desk"}]},
    "DeviceConfigured": {},
}


def params_of(request_type: str) -> dict[str, object]:
    """The params exactly as the device receives them (through the real builder and decoder)."""
    raw = COMMANDS[request_type]
    if request_type == "InstallProfile":
        raw = {"Payload": base64.b64encode(PROFILE).decode()}
    _, _, params = decode_command(build_command(request_type, raw).to_plist())
    return params


class TestAgainstAppleSchema:
    @pytest.fixture(autouse=True)
    def _shared(self) -> None:
        apple_schema.require_shared("apple-device-management", "mdm", "commands")

    @pytest.mark.parametrize("request_type", sorted(COMMANDS))
    @pytest.mark.parametrize("facts", [IPHONE, WIFI_IPAD], ids=["iphone", "wifi-ipad"])
    def test_response_matches_response_keys(self, request_type: str, facts: DeviceFacts) -> None:
        """Each response uses only the schema's response keys, with their types, valid on iOS."""
        installed = apply_command("InstallProfile", params_of("InstallProfile"), facts)
        response = respond(request_type, params_of(request_type), installed)
        keys = apple_schema.command_schema(request_type).get("responsekeys") or []
        if request_type == "Settings":
            # Apple's YAML types the Settings response as one dictionary; Apple's documentation and
            # devices use an array of those dictionaries, one per item. Check each element.
            settings_keys = keys[0]["subkeys"]
            assert isinstance(response["Settings"], list)
            for item in response["Settings"]:
                assert apple_schema.check(item, settings_keys, platform="iOS") == []
            return
        assert apple_schema.check(response, keys, platform="iOS") == []


class TestDeviceInformation:
    def test_only_queried_keys_are_answered(self) -> None:
        """QueryResponses holds exactly the queried keys the device knows."""
        response = respond("DeviceInformation", {"Queries": ["UDID", "SerialNumber", "OSVersion"]}, IPHONE)
        assert response == {
            "QueryResponses": {"UDID": IPHONE.udid, "SerialNumber": IPHONE.serial_number, "OSVersion": "17.4"}
        }

    def test_shape_matches_the_real_report(self) -> None:
        """Like the real capture, the answer sits in a QueryResponses dict that includes the UDID."""
        body = apple_schema.require_shared(
            "vectors", "micromdm+nanomdm", "mdm", "testdata", "DeviceInformation.1.plist"
        ).read_bytes()
        real = decode_report(body)
        ours = respond("DeviceInformation", {"Queries": ["UDID", "HostName"]}, IPHONE)
        assert set(ours) == {"QueryResponses"} <= set(real.payload)
        assert ours["QueryResponses"] == {"UDID": IPHONE.udid}  # HostName is macOS-only: iOS leaves it out

    def test_wifi_ipad_has_no_cellular_identifiers(self) -> None:
        """A Wi-Fi iPad does not answer IMEI, MEID or ICCID."""
        answers = respond("DeviceInformation", {"Queries": ["IMEI", "MEID", "ICCID", "WiFiMAC"]}, WIFI_IPAD)
        assert answers == {"QueryResponses": {"WiFiMAC": WIFI_IPAD.wifi_mac}}

    def test_types_are_apples(self) -> None:
        """Capacities and battery are reals, flags booleans, strings strings."""
        q = respond("DeviceInformation", {"Queries": sorted(DEVICE_INFORMATION_QUERIES)}, IPHONE)[
            "QueryResponses"
        ]
        assert isinstance(q, dict)
        assert isinstance(q["DeviceCapacity"], float) and isinstance(q["BatteryLevel"], float)
        assert q["IsSupervised"] is False and q["ProductName"] == "iPhone15,2"
        assert q["PushToken"] == b"\x01" * 32

    def test_missing_queries_is_unsupported(self) -> None:
        """DeviceInformation without a Queries array is not modelled."""
        with pytest.raises(UnsupportedCommandError):
            respond("DeviceInformation", {}, IPHONE)

    def test_full_loop_through_report_codec(self) -> None:
        """A response sent through encode_report and decode_report arrives intact."""
        payload = respond("DeviceInformation", params_of("DeviceInformation"), IPHONE)
        report = decode_report(
            encode_report(udid=IPHONE.udid, status="Acknowledged", command_uuid="C", payload=payload)
        )
        assert report.payload == payload


class TestStateChanges:
    def test_install_then_list_then_remove(self) -> None:
        """An installed profile is listed with its payloads, and RemoveProfile removes it."""
        facts = apply_command("InstallProfile", params_of("InstallProfile"), IPHONE)
        listed = respond("ProfileList", {}, facts)["ProfileList"]
        assert isinstance(listed, list) and [p["PayloadIdentifier"] for p in listed] == [
            "com.pomona.enroll.acme"
        ]
        assert {c["PayloadType"] for c in listed[0]["PayloadContent"]} == {
            "com.apple.mdm",
            "com.apple.security.scep",
        }
        removed = apply_command("RemoveProfile", params_of("RemoveProfile"), facts)
        assert respond("ProfileList", {}, removed) == {"ProfileList": []}

    def test_reinstall_replaces(self) -> None:
        """Installing a profile with the same identifier again replaces it instead of adding one."""
        once = apply_command("InstallProfile", params_of("InstallProfile"), IPHONE)
        twice = apply_command("InstallProfile", params_of("InstallProfile"), once)
        assert len(twice.profiles) == 1

    def test_rename(self) -> None:
        """Settings DeviceName renames the device."""
        assert apply_command("Settings", params_of("Settings"), IPHONE).device_name == "Front desk"

    def test_device_configured_releases(self) -> None:
        """DeviceConfigured ends AwaitingConfiguration."""
        waiting = dataclasses.replace(IPHONE, awaiting_configuration=True)
        assert apply_command("DeviceConfigured", {}, waiting).awaiting_configuration is False

    def test_read_only_commands_change_nothing(self) -> None:
        """Queries leave the facts unchanged."""
        assert apply_command("SecurityInfo", {}, IPHONE) is IPHONE

    @pytest.mark.parametrize("payload", [b"not a plist", b"<plist><dict/></plist>", None])
    def test_bad_install_payload(self, payload: object) -> None:
        """An InstallProfile payload that is not an unsigned profile is not modelled."""
        with pytest.raises(UnsupportedCommandError):
            apply_command("InstallProfile", {"Payload": payload}, IPHONE)

    def test_managed_apps_filter(self) -> None:
        """InstalledApplicationList honours Identifiers and ManagedAppsOnly."""
        only = respond("InstalledApplicationList", {"Identifiers": ["com.apple.Maps"]}, IPHONE)
        assert [a["Identifier"] for a in only["InstalledApplicationList"]] == ["com.apple.Maps"]  # type: ignore[index, union-attr]
        assert respond("InstalledApplicationList", {"ManagedAppsOnly": True}, IPHONE) == {
            "InstalledApplicationList": []
        }

    def test_unknown_command_is_unsupported(self) -> None:
        """A request type the simulator does not model raises UnsupportedCommandError."""
        with pytest.raises(UnsupportedCommandError):
            respond("EnableLostMode", {}, IPHONE)
