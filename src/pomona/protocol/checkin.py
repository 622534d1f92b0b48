"""Check-in protocol messages: one frozen dataclass per ``MessageType``, each keeping its raw body.

Devices ``PUT`` these plists to the ``CheckInURL`` of the enrollment profile with the content type
:data:`CHECKIN_CONTENT_TYPE`. :func:`decode_checkin` turns a body into one class per ``MessageType``
(:class:`Authenticate`, :class:`TokenUpdate`, :class:`CheckOut`, :class:`UserAuthenticate`,
:class:`GetBootstrapToken`, :class:`SetBootstrapToken`, :class:`DeclarativeManagement`, :class:`GetToken`),
chosen from one registry (:data:`MESSAGE_TYPES`), and fails in typed ways:
:class:`UnrecognizedMessageTypeError` for a missing or unknown ``MessageType``, :class:`CheckinParseError`
for anything else (both keep the raw body). Unknown keys are tolerated (a Mac sends an undocumented
``Challenge`` in ``Authenticate``).

Messages that can arrive on a user channel (a macOS user, a Shared iPad user) carry ``UserID`` /
``EnrollmentUserID``; their ``is_user_channel`` says so. ``udid`` is always the device channel id.

The ``encode_*`` functions build the bodies a device sends, for the virtual device and tests.

Reference: https://developer.apple.com/documentation/devicemanagement/check-in
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypedDict

from pomona.protocol import plist
from pomona.protocol.errors import (
    CheckinParseError,
    PlistError,
    ProtocolError,
    UnrecognizedMessageTypeError,
)

__all__ = [
    "CHECKIN_CONTENT_TYPE",
    "MESSAGE_TYPES",
    "Authenticate",
    "CheckOut",
    "CheckinMessage",
    "CheckinParseError",
    "DeclarativeManagement",
    "GetBootstrapToken",
    "GetToken",
    "ProtocolError",
    "SetBootstrapToken",
    "TokenUpdate",
    "UserAuthenticate",
    "UnrecognizedMessageTypeError",
    "decode_checkin",
    "encode_authenticate",
    "encode_checkout",
    "encode_get_bootstrap_token_response",
    "encode_token_update",
]

CHECKIN_CONTENT_TYPE: Final = "application/x-apple-aspen-mdm-checkin"
"""Content type of check-in requests (the command channel uses ``application/x-apple-aspen-mdm``)."""


class _UserChannelFields(TypedDict):
    enrollment_id: str | None
    enrollment_user_id: str | None
    user_id: str | None
    user_short_name: str | None
    user_long_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _UserChannel:
    """The identifiers of a message that can come on a user channel (NanoMDM's ``mdm.Enrollment``).

    ``user_id`` (a macOS user's GUID; all F's on a Shared iPad) or ``enrollment_user_id`` (user enrollment)
    marks a user channel; ``udid`` stays the device channel's id.
    """

    enrollment_id: str | None = None
    enrollment_user_id: str | None = None
    user_id: str | None = None
    user_short_name: str | None = None
    user_long_name: str | None = None

    @property
    def is_user_channel(self) -> bool:
        """Whether this message comes from a user channel rather than the device channel."""
        return self.user_id is not None or self.enrollment_user_id is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticate:
    """The first check-in of an enrollment, sent when the MDM profile is being installed.

    ``udid`` is the device channel identifier: the UDID, or the ``EnrollmentID`` for a user enrollment
    (which has no UDID). Device facts are optional: iOS 9+ sends serial, product, OS and build; macOS also
    sends ``DeviceName``, ``Model`` and ``ModelName``.

    https://developer.apple.com/documentation/devicemanagement/authenticaterequest
    """

    message_type: ClassVar[str] = "Authenticate"

    udid: str
    topic: str
    raw: bytes = field(repr=False)
    enrollment_id: str | None = None
    serial_number: str | None = None
    product_name: str | None = None
    model: str | None = None
    model_name: str | None = None
    device_name: str | None = None
    os_version: str | None = None
    build_version: str | None = None
    imei: str | None = None
    meid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenUpdate(_UserChannel):
    """Sent after enrollment and whenever the push token changes; carries what APNs pushes need.

    A message with ``user_id`` or ``enrollment_user_id`` is for a user channel (Shared iPad or a macOS
    user); otherwise it is for the device channel.

    https://developer.apple.com/documentation/devicemanagement/tokenupdaterequest
    """

    message_type: ClassVar[str] = "TokenUpdate"

    udid: str
    topic: str
    token: bytes = field(repr=False)
    push_magic: str = field(repr=False)
    raw: bytes = field(repr=False)
    unlock_token: bytes | None = field(default=None, repr=False)
    awaiting_configuration: bool = False
    not_on_console: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOut:
    """Sent when the MDM profile is removed (only if the profile set ``CheckOutWhenRemoved``).

    https://developer.apple.com/documentation/devicemanagement/checkoutrequest
    """

    message_type: ClassVar[str] = "CheckOut"

    udid: str
    topic: str
    raw: bytes = field(repr=False)
    enrollment_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserAuthenticate:
    """A macOS user logs in: the server manages this user channel (a ``DigestChallenge``) or declines (410).

    Sent on the user channel only; ``digest_response`` is absent in the first of the two requests.
    https://developer.apple.com/documentation/devicemanagement/userauthenticaterequest
    """

    message_type: ClassVar[str] = "UserAuthenticate"

    udid: str
    user_id: str
    raw: bytes = field(repr=False)
    digest_response: str | None = field(default=None, repr=False)
    enrollment_id: str | None = None
    enrollment_user_id: str | None = None
    user_short_name: str | None = None
    user_long_name: str | None = None

    @property
    def is_user_channel(self) -> bool:
        """Always: UserAuthenticate exists only on a user channel."""
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class GetBootstrapToken:
    """A supervised Mac asks for the bootstrap token the server escrowed for it.

    Apple's schema lists no device identifier; devices send their ``UDID`` (or ``EnrollmentID``) as in
    every check-in, so ``udid`` is kept when present.
    https://developer.apple.com/documentation/devicemanagement/getbootstraptokenrequest
    """

    message_type: ClassVar[str] = "GetBootstrapToken"

    udid: str | None
    raw: bytes = field(repr=False)
    awaiting_configuration: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBootstrapToken:
    """A supervised Mac escrows (or, with no ``BootstrapToken``, clears) its bootstrap token.

    https://developer.apple.com/documentation/devicemanagement/setbootstraptokenrequest
    """

    message_type: ClassVar[str] = "SetBootstrapToken"

    udid: str | None
    raw: bytes = field(repr=False)
    bootstrap_token: bytes | None = field(default=None, repr=False)
    awaiting_configuration: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclarativeManagement(_UserChannel):
    """A declarative-management request (``Endpoint``: tokens, declaration-items, status, declaration/…).

    https://developer.apple.com/documentation/devicemanagement/declarativemanagementrequest
    """

    message_type: ClassVar[str] = "DeclarativeManagement"

    udid: str
    endpoint: str
    raw: bytes = field(repr=False)
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetToken(_UserChannel):
    """The device asks for a token of a service (``com.apple.maid``, ``com.apple.watch.pairing``).

    https://developer.apple.com/documentation/devicemanagement/gettokenrequest
    """

    message_type: ClassVar[str] = "GetToken"

    udid: str
    token_service_type: str
    raw: bytes = field(repr=False)
    token_parameters: Mapping[str, object] | None = field(default=None, repr=False, compare=False)


CheckinMessage = (
    Authenticate
    | TokenUpdate
    | CheckOut
    | UserAuthenticate
    | GetBootstrapToken
    | SetBootstrapToken
    | DeclarativeManagement
    | GetToken
)
"""Any decoded check-in message."""


class _Reader:
    """Typed access to the keys of a decoded check-in dictionary; wrong types raise CheckinParseError."""

    __slots__ = ("_d", "_raw")

    def __init__(self, d: Mapping[str, object], raw: bytes) -> None:
        self._d = d
        self._raw = raw

    def _fail(self, key: str, expected: str) -> CheckinParseError:
        got = type(self._d[key]).__name__ if key in self._d else "nothing"
        return CheckinParseError(f"{key} must be {expected}, got {got}", raw=self._raw)

    def opt_str(self, key: str) -> str | None:
        value = self._d.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None or value == "":
            raise self._fail(key, "a non-empty string")
        return value

    def opt_bytes(self, key: str) -> bytes | None:
        value = self._d.get(key)
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise self._fail(key, "data")
        return value

    def req_bytes(self, key: str) -> bytes:
        value = self.opt_bytes(key)
        if not value:
            raise self._fail(key, "non-empty data")
        return value

    def opt_bool(self, key: str) -> bool | None:
        value = self._d.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean")
        return value

    def opt_dict(self, key: str) -> Mapping[str, object] | None:
        value = self._d.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail(key, "a dictionary")
        return value

    def opt_channel_id(self) -> str | None:
        """The device channel id if the message names one (``UDID``, else ``EnrollmentID``)."""
        return self.opt_str("UDID") or self.opt_str("EnrollmentID")

    def user_channel(self) -> _UserChannelFields:
        """The user-channel identifiers, for ``**`` into a message that can come on a user channel."""
        return _UserChannelFields(
            enrollment_id=self.opt_str("EnrollmentID"),
            enrollment_user_id=self.opt_str("EnrollmentUserID"),
            user_id=self.opt_str("UserID"),
            user_short_name=self.opt_str("UserShortName"),
            user_long_name=self.opt_str("UserLongName"),
        )

    def channel_id(self) -> str:
        """The device channel id: ``UDID``, else ``EnrollmentID`` (user enrollment has no UDID)."""
        udid = self.opt_str("UDID")
        if udid:
            return udid
        enrollment_id = self.opt_str("EnrollmentID")
        if enrollment_id:
            return enrollment_id
        raise CheckinParseError("neither UDID nor EnrollmentID is present", raw=self._raw)


def _authenticate(r: _Reader, raw: bytes) -> Authenticate:
    return Authenticate(
        udid=r.channel_id(),
        topic=r.req_str("Topic"),
        raw=raw,
        enrollment_id=r.opt_str("EnrollmentID"),
        serial_number=r.opt_str("SerialNumber"),
        product_name=r.opt_str("ProductName"),
        model=r.opt_str("Model"),
        model_name=r.opt_str("ModelName"),
        device_name=r.opt_str("DeviceName"),
        os_version=r.opt_str("OSVersion"),
        build_version=r.opt_str("BuildVersion"),
        imei=r.opt_str("IMEI"),
        meid=r.opt_str("MEID"),
    )


def _token_update(r: _Reader, raw: bytes) -> TokenUpdate:
    return TokenUpdate(
        udid=r.channel_id(),
        topic=r.req_str("Topic"),
        token=r.req_bytes("Token"),
        push_magic=r.req_str("PushMagic"),
        raw=raw,
        unlock_token=r.opt_bytes("UnlockToken"),
        awaiting_configuration=bool(r.opt_bool("AwaitingConfiguration")),
        not_on_console=r.opt_bool("NotOnConsole"),
        **r.user_channel(),
    )


def _checkout(r: _Reader, raw: bytes) -> CheckOut:
    return CheckOut(
        udid=r.channel_id(),
        topic=r.req_str("Topic"),
        raw=raw,
        enrollment_id=r.opt_str("EnrollmentID"),
    )


def _user_authenticate(r: _Reader, raw: bytes) -> UserAuthenticate:
    return UserAuthenticate(
        udid=r.channel_id(),
        user_id=r.req_str("UserID"),
        raw=raw,
        digest_response=r.opt_str("DigestResponse"),
        enrollment_id=r.opt_str("EnrollmentID"),
        enrollment_user_id=r.opt_str("EnrollmentUserID"),
        user_short_name=r.opt_str("UserShortName"),
        user_long_name=r.opt_str("UserLongName"),
    )


def _get_bootstrap_token(r: _Reader, raw: bytes) -> GetBootstrapToken:
    return GetBootstrapToken(
        udid=r.opt_channel_id(),
        raw=raw,
        awaiting_configuration=bool(r.opt_bool("AwaitingConfiguration")),
    )


def _set_bootstrap_token(r: _Reader, raw: bytes) -> SetBootstrapToken:
    return SetBootstrapToken(
        udid=r.opt_channel_id(),
        raw=raw,
        bootstrap_token=r.opt_bytes("BootstrapToken"),
        awaiting_configuration=bool(r.opt_bool("AwaitingConfiguration")),
    )


def _declarative_management(r: _Reader, raw: bytes) -> DeclarativeManagement:
    return DeclarativeManagement(
        udid=r.channel_id(),
        endpoint=r.req_str("Endpoint"),
        raw=raw,
        data=r.opt_bytes("Data"),
        **r.user_channel(),
    )


def _get_token(r: _Reader, raw: bytes) -> GetToken:
    return GetToken(
        udid=r.channel_id(),
        token_service_type=r.req_str("TokenServiceType"),
        raw=raw,
        token_parameters=r.opt_dict("TokenParameters"),
        **r.user_channel(),
    )


_DECODERS: Final[Mapping[str, Callable[[_Reader, bytes], CheckinMessage]]] = {
    "Authenticate": _authenticate,
    "TokenUpdate": _token_update,
    "CheckOut": _checkout,
    "UserAuthenticate": _user_authenticate,
    "GetBootstrapToken": _get_bootstrap_token,
    "SetBootstrapToken": _set_bootstrap_token,
    "DeclarativeManagement": _declarative_management,
    "GetToken": _get_token,
}

MESSAGE_TYPES: Final = frozenset(_DECODERS)
"""Every ``MessageType`` :func:`decode_checkin` knows; any other is an :class:`UnrecognizedMessageTypeError`."""


def decode_checkin(body: bytes, *, max_size: int = plist.DEFAULT_MAX_SIZE) -> CheckinMessage:
    """Decode a check-in request body.

    Raises :class:`UnrecognizedMessageTypeError` when ``MessageType`` is missing or unknown, and
    :class:`CheckinParseError` for a body that is not a plist dictionary (too large, malformed, unsafe)
    or lacks a required key or has a key of the wrong type. Both keep the raw body.
    """
    raw = bytes(body)
    try:
        d = plist.loads(raw, max_size=max_size)
    except PlistError as exc:
        raise CheckinParseError(str(exc), raw=raw) from exc
    message_type = d.get("MessageType")
    if not isinstance(message_type, str):
        raise UnrecognizedMessageTypeError(None, raw=raw)
    decoder = _DECODERS.get(message_type)
    if decoder is None:
        raise UnrecognizedMessageTypeError(message_type, raw=raw)
    return decoder(_Reader(d, raw), raw)


def _put(d: dict[str, object], key: str, value: object) -> None:
    if value is not None:
        d[key] = value


def encode_authenticate(
    *,
    udid: str,
    topic: str,
    serial_number: str | None = None,
    product_name: str | None = None,
    model: str | None = None,
    model_name: str | None = None,
    device_name: str | None = None,
    os_version: str | None = None,
    build_version: str | None = None,
    imei: str | None = None,
    meid: str | None = None,
) -> bytes:
    """Encode an ``Authenticate`` check-in as a device sends it (absent facts are left out)."""
    d: dict[str, object] = {"MessageType": "Authenticate", "Topic": topic, "UDID": udid}
    _put(d, "SerialNumber", serial_number)
    _put(d, "ProductName", product_name)
    _put(d, "Model", model)
    _put(d, "ModelName", model_name)
    _put(d, "DeviceName", device_name)
    _put(d, "OSVersion", os_version)
    _put(d, "BuildVersion", build_version)
    _put(d, "IMEI", imei)
    _put(d, "MEID", meid)
    return plist.dumps(d)


def encode_token_update(
    *,
    udid: str,
    topic: str,
    token: bytes,
    push_magic: str,
    unlock_token: bytes | None = None,
    awaiting_configuration: bool = False,
    user_id: str | None = None,
    user_short_name: str | None = None,
    user_long_name: str | None = None,
) -> bytes:
    """Encode a ``TokenUpdate`` check-in as iOS sends it (``AwaitingConfiguration`` always present)."""
    d: dict[str, object] = {
        "MessageType": "TokenUpdate",
        "Topic": topic,
        "UDID": udid,
        "Token": token,
        "PushMagic": push_magic,
        "AwaitingConfiguration": awaiting_configuration,
    }
    _put(d, "UnlockToken", unlock_token)
    _put(d, "UserID", user_id)
    _put(d, "UserShortName", user_short_name)
    _put(d, "UserLongName", user_long_name)
    return plist.dumps(d)


def encode_checkout(*, udid: str, topic: str) -> bytes:
    """Encode a ``CheckOut`` check-in as a device sends it when its MDM profile is removed."""
    return plist.dumps({"MessageType": "CheckOut", "Topic": topic, "UDID": udid})


def encode_get_bootstrap_token_response(bootstrap_token: bytes | None) -> bytes:
    """The server's answer to ``GetBootstrapToken``: with no token the key is left out, as Apple documents
    for a server that holds none.

    https://developer.apple.com/documentation/devicemanagement/getbootstraptokenresponse
    """
    d: dict[str, object] = {}
    _put(d, "BootstrapToken", bootstrap_token)
    return plist.dumps(d)
