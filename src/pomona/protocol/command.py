"""MDM commands (server to device) and command reports (device to server).

Commands are typed builders serialised with :mod:`plistlib` (never string templates); each one produces
``{"CommandUUID": ..., "Command": {"RequestType": ..., <keys>}}``. Key names are Apple's, exactly as in
Apple's schema (``apple/device-management``, ``mdm/commands/*.yaml``); a test cross-checks every builder
against it.

:func:`build_command` turns admin-API JSON parameters (Apple's key names; ``<data>`` values as base64
strings) into a command, and raises :class:`CommandBuildError` for an unknown request type or bad
parameters. :func:`decode_command` is the device side of the same wire format.

Devices answer on the command channel (content type :data:`COMMAND_CONTENT_TYPE`) with a report:
:func:`decode_report` / :func:`encode_report` and :class:`CommandReport`.

Reference: https://developer.apple.com/documentation/devicemanagement/commands-and-queries
"""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

from pomona.protocol import plist
from pomona.protocol.errors import CommandBuildError, CommandParseError, PlistError, ReportParseError

__all__ = [
    "COMMAND_CONTENT_TYPE",
    "COMMAND_TYPES",
    "DEFAULT_DEVICE_INFORMATION_QUERIES",
    "DEVICE_INFORMATION_QUERIES",
    "INVENTORY_KEYS",
    "Command",
    "CommandBuildError",
    "CommandParseError",
    "CommandReport",
    "DeviceConfigured",
    "DeviceInformation",
    "DeviceLock",
    "EraseDevice",
    "InstallProfile",
    "InstalledApplicationList",
    "ProfileList",
    "RemoveProfile",
    "ReportParseError",
    "ReportStatus",
    "RestartDevice",
    "SecurityInfo",
    "Settings",
    "build_command",
    "decode_command",
    "decode_inventory",
    "decode_report",
    "encode_report",
]

COMMAND_CONTENT_TYPE: Final = "application/x-apple-aspen-mdm"
"""Content type of the command channel (the ``ServerURL`` of the MDM payload)."""

DEVICE_INFORMATION_QUERIES: Final = frozenset(
    {
        "UDID",
        "OrganizationInfo",
        "MDMOptions",
        "LastCloudBackupDate",
        "AwaitingConfiguration",
        "iTunesStoreAccountIsActive",
        "iTunesStoreAccountHash",
        "DeviceName",
        "OSVersion",
        "SupplementalOSVersionExtra",
        "BuildVersion",
        "SupplementalBuildVersion",
        "ModelName",
        "Model",
        "ModelNumber",
        "ProductName",
        "SerialNumber",
        "DeviceCapacity",
        "AvailableDeviceCapacity",
        "IMEI",
        "MEID",
        "ModemFirmwareVersion",
        "CellularTechnology",
        "BatteryLevel",
        "IsSupervised",
        "IsMultiUser",
        "IsDeviceLocatorServiceEnabled",
        "IsActivationLockEnabled",
        "IsDoNotDisturbInEffect",
        "EASDeviceIdentifier",
        "IsCloudBackupEnabled",
        "IsMDMLostModeEnabled",
        "MaximumResidentUsers",
        "EstimatedResidentUsers",
        "QuotaSize",
        "ResidentUsers",
        "UserSessionTimeout",
        "TemporarySessionTimeout",
        "TemporarySessionOnly",
        "ManagedAppleIDDefaultDomains",
        "OnlineAuthenticationGracePeriod",
        "SkipLanguageAndLocaleSetupForNewUsers",
        "PushToken",
        "DiagnosticSubmissionEnabled",
        "AppAnalyticsEnabled",
        "TimeZone",
        "ICCID",
        "BluetoothMAC",
        "WiFiMAC",
        "CurrentCarrierNetwork",
        "SIMCarrierNetwork",
        "SubscriberCarrierNetwork",
        "CarrierSettingsVersion",
        "PhoneNumber",
        "DataRoamingEnabled",
        "VoiceRoamingEnabled",
        "PersonalHotspotEnabled",
        "IsNetworkTethered",
        "IsRoaming",
        "SubscriberMCC",
        "SubscriberMNC",
        "CurrentMCC",
        "CurrentMNC",
        "ServiceSubscriptions",
        "SoftwareUpdateDeviceID",
        "SoftwareUpdateSettings",
        "AccessibilitySettings",
        "DevicePropertiesAttestation",
    }
)
"""Query names an iOS/iPadOS device answers in ``DeviceInformation`` (Apple's schema, iOS 18.1)."""

DEFAULT_DEVICE_INFORMATION_QUERIES: Final = (
    "UDID",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ModelName",
    "Model",
    "ModelNumber",
    "ProductName",
    "SerialNumber",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "IMEI",
    "MEID",
    "ICCID",
    "WiFiMAC",
    "BluetoothMAC",
    "IsSupervised",
    "IsActivationLockEnabled",
    "IsDeviceLocatorServiceEnabled",
    "IsCloudBackupEnabled",
    "IsMDMLostModeEnabled",
    "AwaitingConfiguration",
    "TimeZone",
)
"""The inventory queries Pomona sends when the admin does not choose."""


# --------------------------------------------------------------------------------------------------
# Parameter validation (admin-API JSON to typed values)
# --------------------------------------------------------------------------------------------------


class _Params:
    """Typed, consuming access to admin-API parameters; any leftover key is an error."""

    def __init__(self, request_type: str, params: Mapping[str, object]) -> None:
        if not isinstance(params, Mapping):
            raise CommandBuildError("params must be an object", request_type=request_type)
        for key in params:
            if not isinstance(key, str):
                raise CommandBuildError("param names must be strings", request_type=request_type)
        self._rt = request_type
        self._left = dict(params)

    def _err(self, key: str, detail: str) -> CommandBuildError:
        return CommandBuildError(f"{self._rt}.{key}: {detail}", request_type=self._rt, key=key)

    def _take(self, key: str, required: bool) -> object:
        if key not in self._left or self._left[key] is None:
            self._left.pop(key, None)
            if required:
                raise self._err(key, "is required")
            return None
        return self._left.pop(key)

    def string(self, key: str, *, required: bool = False, max_len: int = 4096) -> str | None:
        value = self._take(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._err(key, "must be a string")
        if required and not value:
            raise self._err(key, "must not be empty")
        if len(value) > max_len:
            raise self._err(key, f"must be at most {max_len} characters")
        return value

    def req_string(self, key: str, *, max_len: int = 4096) -> str:
        value = self.string(key, required=True, max_len=max_len)
        assert value is not None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._take(key, False)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._err(key, "must be a boolean")
        return value

    def data(self, key: str, *, required: bool = False) -> bytes | None:
        value = self._take(key, required)
        if value is None:
            return None
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self._err(key, "must be base64") from exc
        else:
            raise self._err(key, "must be base64 data")
        if required and not raw:
            raise self._err(key, "must not be empty")
        return raw

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._take(key, False)
        if value is None:
            return None
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._err(key, "must be an array of strings")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item:
                raise self._err(key, "must be an array of non-empty strings")
            out.append(item)
        return tuple(out)

    def dicts(self, key: str, *, required: bool = False) -> tuple[Mapping[str, object], ...] | None:
        value = self._take(key, required)
        if value is None:
            return None
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._err(key, "must be an array of objects")
        out: list[Mapping[str, object]] = []
        for item in value:
            if not isinstance(item, Mapping):
                raise self._err(key, "must be an array of objects")
            out.append(item)
        return tuple(out)

    def done(self) -> None:
        if self._left:
            unknown = sorted(self._left)
            raise CommandBuildError(
                f"{self._rt}: unknown parameter(s) {', '.join(unknown)}",
                request_type=self._rt,
                key=unknown[0],
            )


def _new_uuid() -> str:
    return str(uuid.uuid4()).upper()


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every MDM command: a ``RequestType``, a ``CommandUUID`` and the command's own keys.

    https://developer.apple.com/documentation/devicemanagement/commands-and-queries
    """

    request_type: ClassVar[str] = ""

    command_uuid: str = field(default_factory=_new_uuid)

    def __post_init__(self) -> None:
        if not isinstance(self.command_uuid, str) or not self.command_uuid.strip():
            raise CommandBuildError("CommandUUID must be a non-empty string", request_type=self.request_type)

    def command_keys(self) -> dict[str, object]:
        """The keys of the ``Command`` dictionary besides ``RequestType`` (Apple's names)."""
        return {}

    def to_dict(self) -> dict[str, object]:
        """The full command as a dictionary: ``{CommandUUID, Command: {RequestType, ...}}``."""
        command: dict[str, object] = {"RequestType": self.request_type}
        command.update(self.command_keys())
        return {"CommandUUID": self.command_uuid, "Command": command}

    def to_plist(self) -> bytes:
        """The command as the XML plist body sent to the device."""
        return plist.dumps(self.to_dict())

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        """Build from admin-API parameters (Apple's key names); the base has no parameters."""
        p = _Params(cls.request_type, params)
        p.done()
        return cls._make(command_uuid)

    @classmethod
    def _make(cls, command_uuid: str | None, **kwargs: object) -> Self:
        if command_uuid is not None:
            kwargs["command_uuid"] = command_uuid
        return cls(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class DeviceInformation(Command):
    """Query device attributes; ``Queries`` lists the attribute names.

    https://developer.apple.com/documentation/devicemanagement/deviceinformationcommand
    """

    request_type: ClassVar[str] = "DeviceInformation"

    queries: tuple[str, ...] = DEFAULT_DEVICE_INFORMATION_QUERIES

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.queries:
            raise CommandBuildError(
                "Queries must not be empty", request_type=self.request_type, key="Queries"
            )
        unknown = sorted(set(self.queries) - DEVICE_INFORMATION_QUERIES)
        if unknown:
            raise CommandBuildError(
                f"unknown DeviceInformation queries: {', '.join(unknown)}",
                request_type=self.request_type,
                key="Queries",
            )

    def command_keys(self) -> dict[str, object]:
        return {"Queries": list(self.queries)}

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        queries = p.strings("Queries")
        p.done()
        if queries is None:
            return cls._make(command_uuid)
        return cls._make(command_uuid, queries=queries)


INVENTORY_KEYS: Final[Mapping[str, str]] = {
    "ProductName": "product_name",
    "Model": "model",
    "ModelName": "model_name",
    "DeviceName": "device_name",
    "OSVersion": "os_version",
    "BuildVersion": "build_version",
    "SerialNumber": "serial",
    "IMEI": "imei",
    "MEID": "meid",
    "DeviceCapacity": "capacity_gb",
    "BatteryLevel": "battery_level",
}
"""The ``DeviceInformation`` answers Pomona keeps, Apple's ``QueryResponses`` key to the inventory field."""

_NUMERIC_INVENTORY: Final = frozenset({"capacity_gb", "battery_level"})


def decode_inventory(report: CommandReport) -> dict[str, str | float] | None:
    """The inventory facts of a ``DeviceInformation`` report, under the field names of :data:`INVENTORY_KEYS`.

    None when the report carries no ``QueryResponses`` dictionary. Queries Pomona does not keep are left
    out, and so is a value of the wrong type (``DeviceCapacity`` and ``BatteryLevel`` are numbers, not
    booleans; the others strings): a device's answer is reported, not refused.
    https://developer.apple.com/documentation/devicemanagement/deviceinformationresponse
    """
    responses = report.payload.get("QueryResponses")
    if not isinstance(responses, dict):
        return None
    facts: dict[str, str | float] = {}
    for key, name in INVENTORY_KEYS.items():
        value = responses.get(key)
        if name in _NUMERIC_INVENTORY:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                facts[name] = float(value)
        elif isinstance(value, str):
            facts[name] = value
    return facts


@dataclass(frozen=True, kw_only=True)
class SecurityInfo(Command):
    """Query security-related information (passcode, encryption, management status).

    https://developer.apple.com/documentation/devicemanagement/securityinfocommand
    """

    request_type: ClassVar[str] = "SecurityInfo"


@dataclass(frozen=True, kw_only=True)
class ProfileList(Command):
    """List installed configuration profiles.

    https://developer.apple.com/documentation/devicemanagement/profilelistcommand
    """

    request_type: ClassVar[str] = "ProfileList"

    managed_only: bool | None = None

    def command_keys(self) -> dict[str, object]:
        return {} if self.managed_only is None else {"ManagedOnly": self.managed_only}

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        managed_only = p.boolean("ManagedOnly")
        p.done()
        return cls._make(command_uuid, managed_only=managed_only)


@dataclass(frozen=True, kw_only=True)
class InstalledApplicationList(Command):
    """List installed apps, optionally only some bundle identifiers or only managed apps.

    https://developer.apple.com/documentation/devicemanagement/installedapplicationlistcommand
    """

    request_type: ClassVar[str] = "InstalledApplicationList"

    identifiers: tuple[str, ...] | None = None
    managed_apps_only: bool | None = None

    def command_keys(self) -> dict[str, object]:
        keys: dict[str, object] = {}
        if self.identifiers is not None:
            keys["Identifiers"] = list(self.identifiers)
        if self.managed_apps_only is not None:
            keys["ManagedAppsOnly"] = self.managed_apps_only
        return keys

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        identifiers = p.strings("Identifiers")
        managed_apps_only = p.boolean("ManagedAppsOnly")
        p.done()
        return cls._make(command_uuid, identifiers=identifiers, managed_apps_only=managed_apps_only)


@dataclass(frozen=True, kw_only=True)
class InstallProfile(Command):
    """Install a configuration profile; ``Payload`` is the (possibly signed) .mobileconfig bytes.

    https://developer.apple.com/documentation/devicemanagement/installprofilecommand
    """

    request_type: ClassVar[str] = "InstallProfile"

    payload: bytes = field(repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.payload, bytes) or not self.payload:
            raise CommandBuildError(
                "Payload must be non-empty data", request_type=self.request_type, key="Payload"
            )

    def command_keys(self) -> dict[str, object]:
        return {"Payload": self.payload}

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        payload = p.data("Payload", required=True)
        p.done()
        return cls._make(command_uuid, payload=payload)


@dataclass(frozen=True, kw_only=True)
class RemoveProfile(Command):
    """Remove the installed profile whose top-level ``PayloadIdentifier`` is ``Identifier``.

    https://developer.apple.com/documentation/devicemanagement/removeprofilecommand
    """

    request_type: ClassVar[str] = "RemoveProfile"

    identifier: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.identifier, str) or not self.identifier:
            raise CommandBuildError(
                "Identifier must be a non-empty string", request_type=self.request_type, key="Identifier"
            )

    def command_keys(self) -> dict[str, object]:
        return {"Identifier": self.identifier}

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        identifier = p.req_string("Identifier", max_len=1024)
        p.done()
        return cls._make(command_uuid, identifier=identifier)


@dataclass(frozen=True, kw_only=True)
class DeviceLock(Command):
    """Lock the device now, optionally showing a message and a phone number on the lock screen.

    ``PIN`` (six digits) applies to macOS only; iOS ignores it.
    https://developer.apple.com/documentation/devicemanagement/devicelockcommand
    """

    request_type: ClassVar[str] = "DeviceLock"

    message: str | None = None
    phone_number: str | None = None
    pin: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pin(self.pin, self.request_type)

    def command_keys(self) -> dict[str, object]:
        keys: dict[str, object] = {}
        if self.message is not None:
            keys["Message"] = self.message
        if self.phone_number is not None:
            keys["PhoneNumber"] = self.phone_number
        if self.pin is not None:
            keys["PIN"] = self.pin
        return keys

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        message = p.string("Message", max_len=1024)
        phone_number = p.string("PhoneNumber", max_len=64)
        pin = p.string("PIN", max_len=6)
        p.done()
        return cls._make(command_uuid, message=message, phone_number=phone_number, pin=pin)


@dataclass(frozen=True, kw_only=True)
class EraseDevice(Command):
    """Erase the device; ``PreserveDataPlan`` keeps the eSIM plan. ``PIN`` applies to macOS only.

    https://developer.apple.com/documentation/devicemanagement/erasedevicecommand
    """

    request_type: ClassVar[str] = "EraseDevice"

    pin: str | None = field(default=None, repr=False)
    preserve_data_plan: bool | None = None
    disallow_proximity_setup: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pin(self.pin, self.request_type)

    def command_keys(self) -> dict[str, object]:
        keys: dict[str, object] = {}
        if self.pin is not None:
            keys["PIN"] = self.pin
        if self.preserve_data_plan is not None:
            keys["PreserveDataPlan"] = self.preserve_data_plan
        if self.disallow_proximity_setup is not None:
            keys["DisallowProximitySetup"] = self.disallow_proximity_setup
        return keys

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        pin = p.string("PIN", max_len=6)
        preserve = p.boolean("PreserveDataPlan")
        disallow = p.boolean("DisallowProximitySetup")
        p.done()
        return cls._make(
            command_uuid, pin=pin, preserve_data_plan=preserve, disallow_proximity_setup=disallow
        )


@dataclass(frozen=True, kw_only=True)
class RestartDevice(Command):
    """Restart the device (supervised iOS devices).

    https://developer.apple.com/documentation/devicemanagement/restartdevicecommand
    """

    request_type: ClassVar[str] = "RestartDevice"


@dataclass(frozen=True, kw_only=True)
class DeviceConfigured(Command):
    """Release a device that waits in Setup Assistant (``AwaitingConfiguration``) after ADE enrollment.

    https://developer.apple.com/documentation/devicemanagement/deviceconfiguredcommand
    """

    request_type: ClassVar[str] = "DeviceConfigured"


def _check_pin(pin: str | None, request_type: str) -> None:
    if pin is not None and (len(pin) != 6 or not pin.isascii() or not pin.isdigit()):
        raise CommandBuildError("PIN must be six digits", request_type=request_type, key="PIN")


# Settings items: the ``Item`` name and the keys (with their Python types) each item carries.
_SETTING_ITEMS: Final[Mapping[str, Mapping[str, type]]] = {
    "DeviceName": {"DeviceName": str},
    "OrganizationInfo": {"OrganizationInfo": dict},
    "TimeZone": {"TimeZone": str},
    "Bluetooth": {"Enabled": bool},
    "DataRoaming": {"Enabled": bool},
    "VoiceRoaming": {"Enabled": bool},
    "PersonalHotspot": {"Enabled": bool},
    "DiagnosticSubmission": {"Enabled": bool},
    "AppAnalytics": {"Enabled": bool},
}
_ORGANIZATION_INFO_KEYS: Final = frozenset(
    {
        "OrganizationName",
        "OrganizationShortName",
        "OrganizationAddress",
        "OrganizationPhone",
        "OrganizationEmail",
        "OrganizationMagic",
    }
)


def _check_setting(item: Mapping[str, object], request_type: str) -> dict[str, object]:
    """Validate one ``Settings`` item: a known ``Item`` with exactly its keys, of the right types."""
    name = item.get("Item")
    if not isinstance(name, str) or name not in _SETTING_ITEMS:
        raise CommandBuildError(
            f"Settings: unsupported Item {name!r} (supported: {', '.join(sorted(_SETTING_ITEMS))})",
            request_type=request_type,
            key="Settings",
        )
    spec = _SETTING_ITEMS[name]
    out: dict[str, object] = {"Item": name}
    for key, kind in spec.items():
        value = item.get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise CommandBuildError(
                f"Settings[{name}].{key} must be a {kind.__name__}", request_type=request_type, key="Settings"
            )
        if isinstance(value, str) and not value.strip():
            raise CommandBuildError(
                f"Settings[{name}].{key} must not be empty", request_type=request_type, key="Settings"
            )
        out[key] = value
    extra = set(item) - set(spec) - {"Item"}
    if extra:
        raise CommandBuildError(
            f"Settings[{name}]: unknown key(s) {', '.join(sorted(extra))}",
            request_type=request_type,
            key="Settings",
        )
    if name == "OrganizationInfo":
        info = out["OrganizationInfo"]
        assert isinstance(info, dict)
        if not isinstance(info.get("OrganizationName"), str) or set(info) - _ORGANIZATION_INFO_KEYS:
            raise CommandBuildError(
                "Settings[OrganizationInfo] needs OrganizationName and only known Organization* keys",
                request_type=request_type,
                key="Settings",
            )
        if not all(isinstance(v, str) for v in info.values()):
            raise CommandBuildError(
                "Settings[OrganizationInfo] values must be strings", request_type=request_type, key="Settings"
            )
        out["OrganizationInfo"] = dict(info)
    return out


@dataclass(frozen=True, kw_only=True)
class Settings(Command):
    """Change device settings; each item of ``Settings`` is ``{Item: <name>, <keys of that item>}``.

    Supported items: DeviceName, OrganizationInfo, TimeZone, Bluetooth, DataRoaming, VoiceRoaming,
    PersonalHotspot, DiagnosticSubmission, AppAnalytics. Use :meth:`device_name` for the common case.
    https://developer.apple.com/documentation/devicemanagement/settingscommand
    """

    request_type: ClassVar[str] = "Settings"

    items: tuple[Mapping[str, object], ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.items:
            raise CommandBuildError(
                "Settings must not be empty", request_type=self.request_type, key="Settings"
            )
        checked = tuple(_check_setting(item, self.request_type) for item in self.items)
        object.__setattr__(self, "items", checked)

    @classmethod
    def device_name(cls, name: str, *, command_uuid: str | None = None) -> Settings:
        """A Settings command that renames the device (supervised iOS devices)."""
        return cls._make(command_uuid, items=({"Item": "DeviceName", "DeviceName": name},))

    def command_keys(self) -> dict[str, object]:
        return {"Settings": [dict(item) for item in self.items]}

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, command_uuid: str | None = None) -> Self:
        p = _Params(cls.request_type, params)
        items = p.dicts("Settings", required=True)
        p.done()
        return cls._make(command_uuid, items=items)


COMMAND_TYPES: Final[Mapping[str, type[Command]]] = {
    cls.request_type: cls
    for cls in (
        DeviceInformation,
        SecurityInfo,
        ProfileList,
        InstalledApplicationList,
        InstallProfile,
        RemoveProfile,
        DeviceLock,
        EraseDevice,
        RestartDevice,
        Settings,
        DeviceConfigured,
    )
}
"""Every command Pomona can build, by ``RequestType``."""


def build_command(
    request_type: str, params: Mapping[str, object], command_uuid: str | None = None
) -> Command:
    """Build a command from admin-API JSON parameters (Apple's key names; data as base64 strings).

    Raises :class:`CommandBuildError` for an unknown request type, an unknown or missing parameter,
    or a parameter of the wrong type or value.
    """
    cls = COMMAND_TYPES.get(request_type) if isinstance(request_type, str) else None
    if cls is None:
        raise CommandBuildError(f"unknown RequestType {request_type!r}", request_type=None)
    if command_uuid is not None and (not isinstance(command_uuid, str) or not command_uuid.strip()):
        raise CommandBuildError("CommandUUID must be a non-empty string", request_type=request_type)
    return cls.from_params(params, command_uuid=command_uuid)


def decode_command(body: bytes) -> tuple[str, str, dict[str, object]]:
    """Decode a command body as a device receives it: ``(command_uuid, request_type, params)``.

    ``params`` holds the ``Command`` keys other than ``RequestType``. Raises :class:`CommandParseError`.
    """
    raw = bytes(body)
    try:
        d = plist.loads(raw)
    except PlistError as exc:
        raise CommandParseError(str(exc), raw=raw) from exc
    command_uuid = d.get("CommandUUID")
    command = d.get("Command")
    if not isinstance(command_uuid, str) or not command_uuid:
        raise CommandParseError("CommandUUID must be a non-empty string", raw=raw)
    if not isinstance(command, dict):
        raise CommandParseError("Command must be a dictionary", raw=raw)
    request_type = command.get("RequestType")
    if not isinstance(request_type, str) or not request_type:
        raise CommandParseError("Command.RequestType must be a non-empty string", raw=raw)
    params: dict[str, object] = {k: v for k, v in command.items() if k != "RequestType"}
    return command_uuid, request_type, params


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


class ReportStatus(enum.StrEnum):
    """The ``Status`` of a command report.

    https://developer.apple.com/documentation/devicemanagement/implementing-device-management/sending-mdm-commands-to-a-device
    """

    IDLE = "Idle"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    NOT_NOW = "NotNow"


_REPORT_KEYS: Final = frozenset({"UDID", "Status", "CommandUUID", "ErrorChain"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReport:
    """What a device sends on the command channel: ``Idle``, or the result of the previous command.

    ``udid`` is the device channel id (``UDID``, else ``EnrollmentID``); ``payload`` holds every key
    besides ``UDID``, ``Status``, ``CommandUUID`` and ``ErrorChain`` (e.g. ``QueryResponses``, and the
    ``UserID``/``EnrollmentID`` of a user channel).
    https://developer.apple.com/documentation/devicemanagement/implementing-device-management/sending-mdm-commands-to-a-device
    """

    udid: str
    status: ReportStatus
    command_uuid: str | None
    raw: bytes = field(repr=False)
    error_chain: list[dict[str, object]] = field(default_factory=list)
    payload: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def is_idle(self) -> bool:
        """Whether the device only asks for the next command."""
        return self.status is ReportStatus.IDLE


def decode_report(body: bytes, *, max_size: int = plist.DEFAULT_MAX_SIZE) -> CommandReport:
    """Decode a command report. Raises :class:`ReportParseError` (keeping the raw body).

    A non-``Idle`` report must carry a ``CommandUUID``; ``ErrorChain`` must be a list of dictionaries.
    """
    raw = bytes(body)

    def fail(detail: str) -> ReportParseError:
        return ReportParseError(detail, raw=raw)

    try:
        d = plist.loads(raw, max_size=max_size)
    except PlistError as exc:
        raise fail(str(exc)) from exc
    udid = d.get("UDID")
    if not isinstance(udid, str) or not udid:
        udid = d.get("EnrollmentID")
    if not isinstance(udid, str) or not udid:
        raise fail("neither UDID nor EnrollmentID is present")
    status_value = d.get("Status")
    try:
        status = ReportStatus(status_value) if isinstance(status_value, str) else None
    except ValueError:
        status = None
    if status is None:
        raise fail(f"unknown Status {status_value!r}")
    command_uuid = d.get("CommandUUID")
    if command_uuid is not None and (not isinstance(command_uuid, str) or not command_uuid):
        raise fail("CommandUUID must be a non-empty string")
    if command_uuid is None and status is not ReportStatus.IDLE:
        raise fail(f"a {status} report must carry a CommandUUID")
    chain_value = d.get("ErrorChain", [])
    if not isinstance(chain_value, list):
        raise fail("ErrorChain must be an array")
    chain: list[dict[str, object]] = []
    for item in chain_value:
        if not isinstance(item, dict):
            raise fail("ErrorChain items must be dictionaries")
        chain.append(item)
    payload = {k: v for k, v in d.items() if k not in _REPORT_KEYS}
    return CommandReport(
        udid=udid, status=status, command_uuid=command_uuid, raw=raw, error_chain=chain, payload=payload
    )


def encode_report(
    *,
    udid: str,
    status: ReportStatus | str,
    command_uuid: str | None = None,
    error_chain: Sequence[Mapping[str, object]] | None = None,
    payload: Mapping[str, object] | None = None,
) -> bytes:
    """Encode a command report as a device sends it (device side, for the virtual device and tests).

    ``payload`` keys are added at the top level (e.g. ``QueryResponses``); they must not repeat the
    report's own keys.
    """
    status_value = ReportStatus(status)
    d: dict[str, object] = {"UDID": udid, "Status": status_value.value}
    if command_uuid is not None:
        d["CommandUUID"] = command_uuid
    if error_chain:
        d["ErrorChain"] = [dict(item) for item in error_chain]
    for key, value in (payload or {}).items():
        if key in _REPORT_KEYS:
            raise ValueError(f"payload must not set the report key {key}")
        d[key] = value
    return plist.dumps(d)
