"""Realistic iOS answers to MDM commands, for the virtual device and for tests.

:class:`DeviceFacts` describes one iPhone or iPad; :func:`respond` returns the report keys a real device
sends back for a command (besides ``UDID``, ``Status`` and ``CommandUUID``): ``QueryResponses`` with only
the queried keys for ``DeviceInformation``, a ``SecurityInfo`` dictionary, a ``ProfileList`` array, an
``InstalledApplicationList`` array, and so on. :func:`apply_command` returns the facts after a command
that changes the device (install or remove a profile, rename).

Shapes follow Apple's schema (``apple/device-management``, ``mdm/commands/*.yaml`` ``responsekeys``) and
a real ``DeviceInformation`` report (micromdm/nanomdm ``mdm/testdata/DeviceInformation.1.plist``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from pomona.protocol import plist
from pomona.protocol.errors import PlistError

__all__ = [
    "DeviceFacts",
    "InstalledApp",
    "InstalledProfileFacts",
    "UnsupportedCommandError",
    "apply_command",
    "respond",
]


class UnsupportedCommandError(ValueError):
    """The simulated device has no model of this ``RequestType`` (a real device answers CommandFormatError)."""


@dataclass(frozen=True, slots=True)
class InstalledProfileFacts:
    """A configuration profile installed on the simulated device (as ``ProfileList`` reports it)."""

    identifier: str
    uuid: str
    display_name: str | None = None
    organization: str | None = None
    removal_disallowed: bool = False
    is_managed: bool = True
    payloads: tuple[tuple[str, str, str], ...] = ()  # (PayloadType, PayloadIdentifier, PayloadUUID)


@dataclass(frozen=True, slots=True)
class InstalledApp:
    """An app installed on the simulated device."""

    identifier: str
    name: str
    version: str
    short_version: str
    bundle_size: int = 50_000_000
    dynamic_size: int = 10_000_000
    is_managed: bool = False


_BUILTIN_APPS = (
    InstalledApp("com.apple.mobilesafari", "Safari", "8617.1.17.10.9", "17.4"),
    InstalledApp("com.apple.mobilemail", "Mail", "3774.500.171", "17.4"),
    InstalledApp("com.apple.Maps", "Maps", "2010.25.7.11.36", "17.4"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFacts:
    """Everything the simulated iPhone or iPad knows about itself."""

    udid: str
    serial_number: str
    product_name: str = "iPhone15,2"
    model_name: str = "iPhone"
    model: str = "MQ0T3LL/A"
    model_number: str = "MQ0T3"
    device_name: str = "iPhone"
    os_version: str = "17.4"
    build_version: str = "21E219"
    imei: str | None = "35 674108 123456 1"
    meid: str | None = "35674108123456"
    iccid: str | None = "8901 2601 2345 6789 0123"
    modem_firmware_version: str | None = "1.50.03"
    phone_number: str | None = None
    capacity_gb: float = 128.0
    available_capacity_gb: float = 97.53
    battery_level: float = 0.87
    wifi_mac: str = "a4:cf:99:12:34:56"
    bluetooth_mac: str = "a4:cf:99:12:34:57"
    time_zone: str = "America/Los_Angeles"
    is_supervised: bool = False
    awaiting_configuration: bool = False
    passcode_present: bool = True
    is_activation_lock_enabled: bool = False
    is_find_my_enabled: bool = True
    is_cloud_backup_enabled: bool = False
    is_user_enrollment: bool = False
    push_token: bytes | None = None
    profiles: tuple[InstalledProfileFacts, ...] = ()
    apps: tuple[InstalledApp, ...] = field(default=_BUILTIN_APPS)

    @property
    def has_cellular(self) -> bool:
        """Whether the device has a cellular modem (iPhones and cellular iPads)."""
        return self.imei is not None


def _query_values(facts: DeviceFacts) -> dict[str, object]:
    """Every ``DeviceInformation`` query this simulator answers, with Apple's value types."""
    values: dict[str, object] = {
        "UDID": facts.udid,
        "DeviceName": facts.device_name,
        "OSVersion": facts.os_version,
        "BuildVersion": facts.build_version,
        "ModelName": facts.model_name,
        "Model": facts.model,
        "ModelNumber": facts.model_number,
        "ProductName": facts.product_name,
        "SerialNumber": facts.serial_number,
        "DeviceCapacity": float(facts.capacity_gb),
        "AvailableDeviceCapacity": float(facts.available_capacity_gb),
        "BatteryLevel": float(facts.battery_level),
        "WiFiMAC": facts.wifi_mac,
        "BluetoothMAC": facts.bluetooth_mac,
        "IsSupervised": facts.is_supervised,
        "IsMultiUser": False,
        "IsActivationLockEnabled": facts.is_activation_lock_enabled,
        "IsDeviceLocatorServiceEnabled": facts.is_find_my_enabled,
        "IsCloudBackupEnabled": facts.is_cloud_backup_enabled,
        "IsDoNotDisturbInEffect": False,
        "IsMDMLostModeEnabled": False,
        "AwaitingConfiguration": facts.awaiting_configuration,
        "TimeZone": facts.time_zone,
        "iTunesStoreAccountIsActive": False,
        "DiagnosticSubmissionEnabled": False,
        "AppAnalyticsEnabled": False,
    }
    if facts.push_token is not None:
        values["PushToken"] = facts.push_token
    if facts.has_cellular:
        values.update(
            {
                "IMEI": facts.imei,
                "CellularTechnology": 3,  # GSM and CDMA
                "IsRoaming": False,
                "DataRoamingEnabled": False,
                "VoiceRoamingEnabled": True,
                "PersonalHotspotEnabled": False,
                "IsNetworkTethered": False,
            }
        )
        if facts.meid is not None:
            values["MEID"] = facts.meid
        if facts.iccid is not None:
            values["ICCID"] = facts.iccid
        if facts.modem_firmware_version is not None:
            values["ModemFirmwareVersion"] = facts.modem_firmware_version
        if facts.phone_number is not None:
            values["PhoneNumber"] = facts.phone_number
    else:
        values["CellularTechnology"] = 0
    return values


def _device_information(params: Mapping[str, object], facts: DeviceFacts) -> dict[str, object]:
    queries = params.get("Queries")
    if not isinstance(queries, list):
        raise UnsupportedCommandError("DeviceInformation without a Queries array")
    known = _query_values(facts)
    # iOS answers the queries it knows and silently leaves out the others.
    answers = {q: known[q] for q in queries if isinstance(q, str) and q in known}
    return {"QueryResponses": answers}


def _security_info(facts: DeviceFacts) -> dict[str, object]:
    return {
        "SecurityInfo": {
            "HardwareEncryptionCaps": 3,  # block-level and file-level encryption
            "PasscodePresent": facts.passcode_present,
            "PasscodeCompliant": True,
            "PasscodeCompliantWithProfiles": True,
            "PasscodeLockGracePeriodEnforced": 0,
            "AutoLockTime": 30,
            "ManagementStatus": {"IsUserEnrollment": facts.is_user_enrollment},
        }
    }


def _profile_list(facts: DeviceFacts) -> dict[str, object]:
    items: list[dict[str, object]] = []
    for p in facts.profiles:
        item: dict[str, object] = {
            "PayloadIdentifier": p.identifier,
            "PayloadUUID": p.uuid,
            "PayloadVersion": 1,
            "PayloadRemovalDisallowed": p.removal_disallowed,
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": p.is_managed,
            "PayloadContent": [
                {"PayloadType": t, "PayloadIdentifier": i, "PayloadUUID": u, "PayloadVersion": 1}
                for t, i, u in p.payloads
            ],
        }
        if p.display_name is not None:
            item["PayloadDisplayName"] = p.display_name
        if p.organization is not None:
            item["PayloadOrganization"] = p.organization
        items.append(item)
    return {"ProfileList": items}


def _installed_apps(params: Mapping[str, object], facts: DeviceFacts) -> dict[str, object]:
    wanted = params.get("Identifiers")
    managed_only = params.get("ManagedAppsOnly") is True
    items: list[dict[str, object]] = []
    for app in facts.apps:
        if isinstance(wanted, list) and app.identifier not in wanted:
            continue
        if managed_only and not app.is_managed:
            continue
        items.append(
            {
                "Identifier": app.identifier,
                "Name": app.name,
                "Version": app.version,
                "ShortVersion": app.short_version,
                "BundleSize": app.bundle_size,
                "DynamicSize": app.dynamic_size,
                "IsValidated": True,
                "Installing": False,
                "AppStoreVendable": False,
                "DeviceBasedVPP": False,
                "BetaApp": False,
                "AdHocCodeSigned": False,
                "HasUpdateAvailable": False,
                "IsAppClip": False,
            }
        )
    return {"InstalledApplicationList": items}


def _settings(params: Mapping[str, object]) -> dict[str, object]:
    items = params.get("Settings")
    count = len(items) if isinstance(items, list) else 0
    # iOS reports one result per item, in order (Apple's page: SettingsResponse.Settings is an array).
    return {"Settings": [{"Status": "Acknowledged"} for _ in range(count)]}


_EMPTY_RESPONSE = frozenset(
    {
        "InstallProfile",
        "RemoveProfile",
        "DeviceLock",
        "EraseDevice",
        "RestartDevice",
        "DeviceConfigured",
        "ShutDownDevice",
    }
)


def respond(request_type: str, params: Mapping[str, object], facts: DeviceFacts) -> dict[str, object]:
    """The report keys an iOS device sends for a successful command (besides UDID/Status/CommandUUID).

    Raises :class:`UnsupportedCommandError` for a request type this simulator does not model.
    """
    if request_type == "DeviceInformation":
        return _device_information(params, facts)
    if request_type == "SecurityInfo":
        return _security_info(facts)
    if request_type == "ProfileList":
        return _profile_list(facts)
    if request_type == "InstalledApplicationList":
        return _installed_apps(params, facts)
    if request_type == "Settings":
        return _settings(params)
    if request_type in _EMPTY_RESPONSE:
        return {}
    raise UnsupportedCommandError(f"the simulated device does not model {request_type!r}")


def _profile_from_payload(payload: bytes) -> InstalledProfileFacts:
    """Read the identifiers of an (unsigned) profile the way the device records them."""
    try:
        top = plist.loads(payload)
    except PlistError as exc:
        raise UnsupportedCommandError(f"InstallProfile payload is not an unsigned profile: {exc}") from exc
    identifier = top.get("PayloadIdentifier")
    payload_uuid = top.get("PayloadUUID")
    if not isinstance(identifier, str) or not isinstance(payload_uuid, str):
        raise UnsupportedCommandError("InstallProfile payload lacks PayloadIdentifier/PayloadUUID")
    content = top.get("PayloadContent")
    payloads: list[tuple[str, str, str]] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict):
                t, i, u = item.get("PayloadType"), item.get("PayloadIdentifier"), item.get("PayloadUUID")
                if isinstance(t, str) and isinstance(i, str) and isinstance(u, str):
                    payloads.append((t, i, u))
    name = top.get("PayloadDisplayName")
    org = top.get("PayloadOrganization")
    return InstalledProfileFacts(
        identifier=identifier,
        uuid=payload_uuid,
        display_name=name if isinstance(name, str) else None,
        organization=org if isinstance(org, str) else None,
        payloads=tuple(payloads),
    )


def apply_command(request_type: str, params: Mapping[str, object], facts: DeviceFacts) -> DeviceFacts:
    """The device's facts after it carried out a command (unchanged for read-only commands).

    InstallProfile replaces a profile with the same identifier; RemoveProfile removes it; Settings
    DeviceName renames; DeviceConfigured ends ``AwaitingConfiguration``.
    """
    if request_type == "InstallProfile":
        payload = params.get("Payload")
        if not isinstance(payload, bytes):
            raise UnsupportedCommandError("InstallProfile without Payload data")
        new = _profile_from_payload(payload)
        kept = tuple(p for p in facts.profiles if p.identifier != new.identifier)
        return dataclasses.replace(facts, profiles=(*kept, new))
    if request_type == "RemoveProfile":
        identifier = params.get("Identifier")
        return dataclasses.replace(
            facts, profiles=tuple(p for p in facts.profiles if p.identifier != identifier)
        )
    if request_type == "Settings":
        items = params.get("Settings")
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("Item") == "DeviceName":
                name = item.get("DeviceName")
                if isinstance(name, str):
                    facts = dataclasses.replace(facts, device_name=name)
        return facts
    if request_type == "DeviceConfigured":
        return dataclasses.replace(facts, awaiting_configuration=False)
    return facts
