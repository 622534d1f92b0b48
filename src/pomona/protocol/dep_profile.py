"""The ADE enrollment profile as Apple's device enrollment service takes it (``POST /profile``) and gives it
back (``GET /profile``): one typed wire object, and the only place its JSON key names appear.

:class:`ProfileDefinition` mirrors Apple's ``Profile`` object field for field (snake_case already);
:func:`encode_profile_definition` writes the JSON body of "Define a Profile", leaving out what is unset,
and :func:`decode_profile` reads a profile Apple returns (it adds ``profile_uuid``). Unknown keys in a
decoded profile are tolerated, as Apple adds keys (``is_return_to_service`` came with iOS 26).

The rules about which values Apple accepts (lengths, formats, flag combinations) are domain rules:
``pomona.domain.ade_profile`` lints a profile before it is encoded here.

References:
https://developer.apple.com/documentation/devicemanagement/profile
https://developer.apple.com/documentation/devicemanagement/define-a-profile
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from pomona.protocol.errors import ProfileError

__all__ = [
    "PROFILE_CONTENT_TYPE",
    "ProfileDefinition",
    "decode_profile",
    "encode_profile_definition",
    "is_der_certificate",
]

PROFILE_CONTENT_TYPE: Final = "application/json;charset=UTF8"
"""Content type of ``POST /profile`` (Apple's spelling)."""

_BOOLS: Final = (
    "allow_pairing",
    "is_supervised",
    "is_multi_user",
    "is_mandatory",
    "await_device_configured",
    "is_mdm_removable",
    "auto_advance_setup",
)
_STRINGS: Final = (
    "url",
    "configuration_web_url",
    "language",
    "region",
    "department",
    "support_phone_number",
    "support_email_address",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileDefinition:
    """One ADE profile in Apple's terms. ``anchor_certs`` and ``supervising_host_certs`` are DER bytes
    here and base64 strings on the wire; ``None`` means "not sent" (Apple's default applies).

    https://developer.apple.com/documentation/devicemanagement/profile
    """

    profile_name: str
    url: str
    org_magic: str
    is_mdm_removable: bool
    is_supervised: bool | None = None
    is_mandatory: bool | None = None
    await_device_configured: bool | None = None
    allow_pairing: bool | None = None
    is_multi_user: bool | None = None
    auto_advance_setup: bool | None = None
    skip_setup_items: tuple[str, ...] = ()
    configuration_web_url: str | None = None
    language: str | None = None
    region: str | None = None
    department: str | None = None
    support_phone_number: str | None = None
    support_email_address: str | None = None
    anchor_certs: tuple[bytes, ...] = ()
    supervising_host_certs: tuple[bytes, ...] = ()
    devices: tuple[str, ...] = ()
    profile_uuid: str | None = None  # only in what Apple returns


def encode_profile_definition(profile: ProfileDefinition) -> dict[str, object]:
    """The JSON object of ``POST /profile`` (``json.dumps`` it): unset fields are left out, lists are sent
    only when non-empty (``skip_setup_items`` always, so that "skip nothing" is explicit)."""
    body: dict[str, object] = {
        "profile_name": profile.profile_name,
        "url": profile.url,
        "org_magic": profile.org_magic,
        "is_mdm_removable": profile.is_mdm_removable,
        "skip_setup_items": list(profile.skip_setup_items),
    }
    for name in _BOOLS:
        value = getattr(profile, name)
        if value is not None:
            body[name] = value
    for name in _STRINGS:
        value = getattr(profile, name)
        if value is not None:
            body[name] = value
    if profile.anchor_certs:
        body["anchor_certs"] = [base64.b64encode(c).decode("ascii") for c in profile.anchor_certs]
    if profile.supervising_host_certs:
        body["supervising_host_certs"] = [
            base64.b64encode(c).decode("ascii") for c in profile.supervising_host_certs
        ]
    if profile.devices:
        body["devices"] = list(profile.devices)
    return body


def _certs(value: object, key: str) -> tuple[bytes, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{key} must be a list of base64 strings")
    try:
        return tuple(base64.b64decode(v, validate=True) for v in value)
    except (binascii.Error, ValueError) as exc:
        raise ProfileError(f"{key} holds a value that is not base64") from exc


def _strings(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{key} must be a list of strings")
    return tuple(value)


def decode_profile(data: bytes | str | Mapping[str, object]) -> ProfileDefinition:
    """A profile as Apple returns it (``GET /profile``) or as it was sent; raises :class:`ProfileError`."""
    if isinstance(data, bytes | str):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ProfileError(f"profile is not JSON: {exc}") from exc
    else:
        obj = dict(data)
    if not isinstance(obj, dict):
        raise ProfileError("profile must be a JSON object")

    def string(key: str, required: bool = False) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise ProfileError(f"profile lacks {key}")
            return None
        if not isinstance(value, str):
            raise ProfileError(f"{key} must be a string")
        return value

    def boolean(key: str) -> bool | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            raise ProfileError(f"{key} must be a boolean")
        return value

    removable = boolean("is_mdm_removable")
    return ProfileDefinition(
        profile_name=string("profile_name", required=True) or "",
        url=string("url", required=True) or "",
        org_magic=string("org_magic") or "",
        is_mdm_removable=True if removable is None else removable,  # Apple's default
        is_supervised=boolean("is_supervised"),
        is_mandatory=boolean("is_mandatory"),
        await_device_configured=boolean("await_device_configured"),
        allow_pairing=boolean("allow_pairing"),
        is_multi_user=boolean("is_multi_user"),
        auto_advance_setup=boolean("auto_advance_setup"),
        skip_setup_items=_strings(obj.get("skip_setup_items"), "skip_setup_items"),
        configuration_web_url=string("configuration_web_url"),
        language=string("language"),
        region=string("region"),
        department=string("department"),
        support_phone_number=string("support_phone_number"),
        support_email_address=string("support_email_address"),
        anchor_certs=_certs(obj.get("anchor_certs"), "anchor_certs"),
        supervising_host_certs=_certs(obj.get("supervising_host_certs"), "supervising_host_certs"),
        devices=_strings(obj.get("devices"), "devices"),
        profile_uuid=string("profile_uuid"),
    )


def is_der_certificate(der: bytes) -> bool:
    """Whether ``der`` is one DER X.509 certificate (what ``anchor_certs`` must hold)."""
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True
