"""Apple Business Manager (ABM, formerly DEP) wire formats: the server token, devices, fetch/sync pages,
and Apple's error bodies. Pure: no I/O.

Apple documents the service at https://developer.apple.com/documentation/devicemanagement/device-assignment
(the JSON objects: https://developer.apple.com/documentation/devicemanagement/device and
https://developer.apple.com/documentation/devicemanagement/fetchdeviceresponse). The shapes here are checked
against the real responses in shared/vectors/micromdm+micromdm/dep/testdata and the JSON Schemas in
shared/vectors/micromdm+apple-device-services/dep/schemas.

The server token (the ``.p7m`` ABM hands out, decrypted) is a MIME message whose body holds the JSON
between ``-----BEGIN MESSAGE-----`` and ``-----END MESSAGE-----``:
``consumer_key``, ``consumer_secret``, ``access_token``, ``access_secret``, ``access_token_expiry``.

Apple's errors are short codes in the body (``EXPIRED_CURSOR``, ``T_C_NOT_SIGNED``, ...), sometimes in a
JSON object ``{"code": ..., "message": ...}``; :func:`error_code` reads either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from pomona.protocol.errors import DepParseError

__all__ = [
    "DEVICE_FIELDS",
    "PROTOCOL_VERSION",
    "AbmDevice",
    "AppleError",
    "FetchPage",
    "ServerToken",
    "decode_fetch_page",
    "decode_server_token",
    "encode_device",
    "encode_server_token",
    "error_code",
    "format_time",
    "parse_time",
]

#: The X-Server-Protocol-Version Pomona speaks: 10 adds ``retry_after_seconds`` to THROTTLED answers.
PROTOCOL_VERSION: Final = "10"

_BEGIN = b"-----BEGIN MESSAGE-----"
_END = b"-----END MESSAGE-----"


class AppleError(StrEnum):
    """The error codes ABM answers in a response body."""

    UNAUTHORIZED = "UNAUTHORIZED"  # 401: the session expired; authenticate again
    FORBIDDEN = "FORBIDDEN"  # 403: the session is not valid; authenticate again
    ACCESS_DENIED = "ACCESS_DENIED"  # 403 at /session: the token is not (or no longer) valid
    TOKEN_EXPIRED = "token_expired"  # 401 at /session: oauth_problem_adv=token_expired
    TOKEN_REJECTED = "token_rejected"  # 401 at /session: a revoked or unknown token
    SIGNATURE_INVALID = "signature_invalid"  # 401 at /session: the OAuth signature does not verify
    T_C_NOT_SIGNED = "T_C_NOT_SIGNED"  # 403: new terms must be accepted in ABM
    EXPIRED_CURSOR = "EXPIRED_CURSOR"  # 400 at /devices/sync
    INVALID_CURSOR = "INVALID_CURSOR"  # 400 at /devices/sync
    CURSOR_REQUIRED = "CURSOR_REQUIRED"  # 400 at /devices/sync
    PROFILE_NOT_FOUND = "PROFILE_NOT_FOUND"  # 400 at GET /profile
    THROTTLED = "THROTTLED"  # 429 (and per device in assign answers), with retry_after_seconds
    MALFORMED_REQUEST_BODY = "MALFORMED_REQUEST_BODY"
    # field errors of POST /profile
    CONFIG_URL_INVALID = "CONFIG_URL_INVALID"
    CONFIG_URL_REQUIRED = "CONFIG_URL_REQUIRED"
    CONFIG_NAME_REQUIRED = "CONFIG_NAME_REQUIRED"
    DEPARTMENT_INVALID = "DEPARTMENT_INVALID"
    FLAGS_INVALID = "FLAGS_INVALID"
    MAGIC_INVALID = "MAGIC_INVALID"
    PROFILE_NAME_INVALID = "PROFILE_NAME_INVALID"
    SUPPORT_EMAIL_INVALID = "SUPPORT_EMAIL_INVALID"
    SUPPORT_PHONE_INVALID = "SUPPORT_PHONE_INVALID"
    INVALID_ANCHOR_CERTS = "INVALID_ANCHOR_CERTS"


#: The codes of POST /profile that name a field of the definition (DEP_PROFILE_REJECTED).
PROFILE_FIELD_ERRORS: Final = frozenset(
    {
        AppleError.CONFIG_URL_INVALID,
        AppleError.CONFIG_URL_REQUIRED,
        AppleError.CONFIG_NAME_REQUIRED,
        AppleError.DEPARTMENT_INVALID,
        AppleError.FLAGS_INVALID,
        AppleError.MAGIC_INVALID,
        AppleError.PROFILE_NAME_INVALID,
        AppleError.SUPPORT_EMAIL_INVALID,
        AppleError.SUPPORT_PHONE_INVALID,
        AppleError.INVALID_ANCHOR_CERTS,
    }
)

_CODE = re.compile(r"[A-Za-z_]{4,40}")


def error_code(body: bytes) -> str:
    """Apple's error code in a response body: the ``code`` of a JSON object, the value of
    ``oauth_problem_adv=...``, or the first code-like word of a plain body ('' if none)."""
    text = body[:2000].decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("code"), str):
            return str(obj["code"])
    if "oauth_problem_adv=" in text:
        return text.split("oauth_problem_adv=", 1)[1].split("&", 1)[0].strip()
    text = text.strip('"')
    m = _CODE.search(text)
    return m.group(0) if m else ""


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time stamp of Apple's ('2018-09-08T16:49:09Z') as an aware datetime; None if absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DepParseError(f"a time stamp must be a string, not {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise DepParseError(f"not an ISO 8601 time stamp: {value[:40]!r}") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """Apple's form of a time stamp: UTC, seconds, 'Z'."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ServerToken:
    """The OAuth 1 credentials in an ABM server token."""

    consumer_key: str
    consumer_secret: str
    access_token: str
    access_secret: str
    access_token_expiry: datetime


def decode_server_token(plaintext: bytes) -> ServerToken:
    """The credentials of a decrypted server token (a MIME message, or the bare JSON)."""
    start, end = plaintext.find(_BEGIN), plaintext.find(_END)
    body = plaintext[start + len(_BEGIN) : end] if 0 <= start < end else plaintext
    try:
        obj = json.loads(body.strip())
    except ValueError:
        raise DepParseError("the server token holds no JSON message") from None
    if not isinstance(obj, dict):
        raise DepParseError("the server token's message is not a JSON object")
    keys = ("consumer_key", "consumer_secret", "access_token", "access_secret")
    values = [obj.get(k) for k in keys]
    for k, v in zip(keys, values, strict=True):
        if not isinstance(v, str) or not v:
            raise DepParseError(f"the server token has no {k}")
    expiry = parse_time(obj.get("access_token_expiry"))
    if expiry is None:
        raise DepParseError("the server token has no access_token_expiry")
    ck, cs, at, ats = (str(v) for v in values)
    return ServerToken(ck, cs, at, ats, expiry)


def encode_server_token(token: ServerToken) -> bytes:
    """The plaintext of a server token as ABM writes it (a MIME text part holding the JSON message)."""
    obj = {
        "consumer_key": token.consumer_key,
        "consumer_secret": token.consumer_secret,
        "access_token": token.access_token,
        "access_secret": token.access_secret,
        "access_token_expiry": format_time(token.access_token_expiry),
    }
    return (
        b"Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + _BEGIN
        + b"\n"
        + json.dumps(obj).encode()
        + b"\n"
        + _END
        + b"\n"
    )


#: Every field of Apple's Device object that Pomona keeps, in Apple's spelling (and ``order_number``,
#: which Apple's device-assignment answers do not carry today: see :class:`AbmDevice`).
DEVICE_FIELDS: Final = (
    "serial_number",
    "model",
    "description",
    "color",
    "asset_tag",
    "device_family",
    "os",
    "profile_status",
    "profile_uuid",
    "profile_assign_time",
    "profile_push_time",
    "device_assigned_date",
    "device_assigned_by",
    "op_type",
    "op_date",
    "order_number",
)
_TIMES: Final = frozenset(
    {"profile_assign_time", "profile_push_time", "device_assigned_date", "op_date", "mdm_migration_deadline"}
)


@dataclass(frozen=True, slots=True)
class AbmDevice:
    """One device as ABM describes it (https://developer.apple.com/documentation/devicemanagement/device)."""

    serial_number: str
    model: str = ""
    description: str = ""
    color: str = ""
    asset_tag: str = ""
    device_family: str = ""
    os: str = ""
    profile_status: str = "empty"  # empty | assigned | pushed | removed
    profile_uuid: str = ""
    profile_assign_time: datetime | None = None
    profile_push_time: datetime | None = None
    device_assigned_date: datetime | None = None
    device_assigned_by: str = ""
    op_type: str = ""  # added | modified | deleted (sync only)
    op_date: datetime | None = None
    #: The order the device was bought with. Apple's device-assignment Device object has no such field
    #: today (the newer Apple Business Manager API's OrgDevice calls it ``orderNumber``): read when an
    #: answer carries it, empty otherwise; assignment rules by order number match only devices that have it.
    order_number: str = ""


def _device(obj: object) -> AbmDevice:
    if not isinstance(obj, dict):
        raise DepParseError("a device is not a JSON object")
    serial = obj.get("serial_number")
    if not isinstance(serial, str) or not serial:
        raise DepParseError("a device has no serial_number")
    kw: dict[str, str | datetime | None] = {}
    for name in DEVICE_FIELDS[1:]:
        v = obj.get(name)
        if v is None:
            continue
        if name in _TIMES:
            kw[name] = parse_time(v)
        elif isinstance(v, str):
            kw[name] = v
        else:
            raise DepParseError(f"a device's {name} is not a string")
    return AbmDevice(serial, **kw)  # type: ignore[arg-type]


def encode_device(d: AbmDevice, *, sync: bool = False) -> dict[str, str]:
    """Apple's JSON for a device: absent fields left out; op_type and op_date only in sync answers."""
    out: dict[str, str] = {}
    for name in DEVICE_FIELDS:
        if not sync and name in ("op_type", "op_date"):
            continue
        v = getattr(d, name)
        if v is None or v == "":
            continue
        out[name] = format_time(v) if isinstance(v, datetime) else v
    return out


@dataclass(frozen=True, slots=True)
class FetchPage:
    """One answer of POST /server/devices or /devices/sync (FetchDeviceResponse)."""

    devices: list[AbmDevice]
    cursor: str
    more_to_follow: bool
    fetched_until: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


def decode_fetch_page(body: bytes) -> FetchPage:
    """A FetchDeviceResponse body."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise DepParseError("the device list is not JSON") from None
    if not isinstance(obj, dict):
        raise DepParseError("the device list is not a JSON object")
    cursor, more = obj.get("cursor"), obj.get("more_to_follow")
    if not isinstance(cursor, str) or not isinstance(more, bool):
        raise DepParseError("the device list has no cursor or more_to_follow")
    devices = obj.get("devices") or []
    if not isinstance(devices, list):
        raise DepParseError("devices is not a list")
    return FetchPage([_device(d) for d in devices], cursor, more, parse_time(obj.get("fetched_until")))
