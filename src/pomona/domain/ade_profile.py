"""The ADE enrollment profile, and the linter that runs before anything is sent to Apple.

An :class:`AdeProfile` is what an admin defines (``pomona abm profile create``): the Setup Assistant
behaviour of the devices it is assigned to, and how their user signs in (:class:`AuthMode`). Apple's
device enrollment service refuses a bad definition only when it is sent, with a terse code
(``FLAGS_INVALID``, ``CONFIG_URL_INVALID`` ...), and then every device assigned to it stops enrolling
(fleetdm/fleet #17558, #21397). :func:`lint` says the same before sending, field by field, as
:class:`ProfileFinding`s with a message key in ``pomona/i18n`` (en and zh-CN).

Severities (``domain.checks.Severity``): CRITICAL means Apple rejects the profile, or it cannot work
(:attr:`ProfileFinding.blocking`: the profile is not sent); WARNING means it is accepted but does not do
what it says (``await_device_configured`` without supervision; MFA users behind legacy authentication);
INFO is advice. Apple-rejected findings carry DEP_PROFILE_REJECTED, the MFA one DEP_MFA_WITH_LEGACY_AUTH.

The rules, in the order :func:`lint` checks them (one :class:`LintRule` each):

1. ``profile_name``: required; at most :data:`PROFILE_NAME_MAX` characters; no control characters.
2. ``url`` and ``configuration_web_url``: absolute ``https://`` URLs (a device refuses plain HTTP).
3. The flags: ``is_mdm_removable`` false needs ``is_supervised`` true (Apple: ``FLAGS_INVALID``);
   ``await_device_configured`` is ignored on iOS without supervision; an unsupervised profile is advised
   against (iOS 13 supervises every ADE device anyway).
4. Authentication: MODERN needs ``configuration_web_url`` (the web view is the sign-in); LEGACY and NONE
   must not have one (the device would show the web view anyway); LEGACY for users who must pass MFA
   strands them at Setup Assistant's sign-in (DEP_MFA_WITH_LEGACY_AUTH, warned only when the caller
   says the targeted users require MFA).
5. ``skip_setup_items``: each a key of Apple's SkipKeys list (:data:`SKIP_KEYS`, mirrored from
   ``apple-device-management/other/skipkeys.yaml`` and cross-checked by a test); a duplicate is a
   warning; a key that iOS/iPadOS does not have (or no longer has) is advice.
6. ``language`` (ISO 639, two or three lower-case letters) and ``region`` (ISO 3166-1, two capitals).
7. ``department``: at most :data:`DEPARTMENT_MAX` characters, one line.
8. ``support_phone_number``: digits with the usual separators (``+``, spaces, ``-``, ``.``, ``/``,
   parentheses) and an optional extension, 3 to 20 digits, at most :data:`PHONE_MAX` characters;
   ``support_email_address``: one address, at most 254 characters.
9. ``anchor_certs``: each one DER X.509 certificate.

Apple publishes the formats but not the lengths; :data:`PROFILE_NAME_MAX`, :data:`DEPARTMENT_MAX` and
:data:`PHONE_MAX` are Pomona's bounds, below what Apple Business Manager's own form takes.

https://developer.apple.com/documentation/devicemanagement/profile
https://developer.apple.com/documentation/devicemanagement/skipkeys
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from pomona.domain.checks import Severity
from pomona.domain.reasons import ReasonCode
from pomona.protocol.dep_profile import ProfileDefinition, is_der_certificate

__all__ = [
    "DEPARTMENT_MAX",
    "PHONE_MAX",
    "PROFILE_NAME_MAX",
    "SKIP_KEYS",
    "AdeProfile",
    "AuthMode",
    "LintRule",
    "ProfileFinding",
    "from_settings",
    "is_sendable",
    "lint",
    "to_definition",
    "to_settings",
]

PROFILE_NAME_MAX: Final = 125
DEPARTMENT_MAX: Final = 125
PHONE_MAX: Final = 50
EMAIL_MAX: Final = 254
URL_MAX: Final = 2048

SKIP_KEYS: Final[Mapping[str, tuple[str | None, str | None]]] = MappingProxyType(
    {
        # key: (iOS version that introduced it, None when iOS/iPadOS never had it; iOS version that
        # deprecated or removed it, or None). "7.0" stands for keys iOS has had since ADE began.
        "Accessibility": (None, None),
        "ActionButton": ("17.0", None),
        "Android": ("9.0", None),
        "Appearance": ("13.0", None),
        "AppleID": ("7.0", None),
        "AppStore": ("14.3", None),
        "Biometric": ("8.1", None),
        "CameraButton": ("18.0", None),
        "DeviceToDeviceMigration": ("12.4", None),
        "Diagnostics": ("7.0", None),
        "DisplayTone": ("9.3.2", "15.0"),
        "EnableLockdownMode": ("17.1", None),
        "FileVault": (None, None),
        "HomeButtonSensitivity": ("10.0", "15.0"),
        "iCloudDiagnostics": (None, None),
        "iCloudStorage": (None, None),
        "iMessageAndFaceTime": ("12.0", None),
        "Intelligence": ("18.0", None),
        "Keyboard": ("13.0", None),
        "Location": ("7.0", None),
        "MessagingActivationUsingPhoneNumber": ("10.0", None),
        "OnBoarding": ("11.0", "14.0"),
        "Passcode": ("7.0", None),
        "Payment": ("8.1", None),
        "Privacy": ("11.3", None),
        "Restore": ("7.0", None),
        "RestoreCompleted": ("14.0", None),
        "ScreenSaver": (None, None),
        "Safety": ("16.0", None),
        "ScreenTime": ("12.0", None),
        "SIMSetup": ("12.0", None),
        "Siri": ("7.0", None),
        "SoftwareUpdate": ("12.0", None),
        "SpokenLanguage": ("13.0", None),
        "TapToSetup": (None, None),
        "TermsOfAddress": ("16.0", None),
        "TOS": ("7.0", None),
        "TVHomeScreenSync": (None, None),
        "TVProviderSignIn": (None, None),
        "TVRoom": (None, None),
        "UpdateCompleted": ("14.0", None),
        "Wallpaper": (None, None),
        "WatchMigration": ("11.0", None),
        "Welcome": ("13.0", None),
        "Zoom": ("8.3", "17.0"),
    }
)
"""Apple's SkipKeys (iOS 18.1 / macOS 15.1 schema set): what ``skip_setup_items`` may hold."""


class AuthMode(StrEnum):
    """How the user signs in during Setup Assistant.

    MODERN: a web view at ``configuration_web_url`` (the portal's sign-in, with MFA); LEGACY: Setup
    Assistant's own user name and password prompt, which cannot do MFA; NONE: no user sign-in (the
    device has no user).
    """

    MODERN = "modern"
    LEGACY = "legacy"
    NONE = "none"


class LintRule(StrEnum):
    """One rule of :func:`lint`; its message key is ``ade_profile.lint.<value>``."""

    NAME_REQUIRED = "name_required"
    NAME_TOO_LONG = "name_too_long"
    NAME_INVALID = "name_invalid"
    URL_INVALID = "url_invalid"
    URL_NOT_HTTPS = "url_not_https"
    REMOVABLE_NEEDS_SUPERVISION = "removable_needs_supervision"
    AWAIT_NEEDS_SUPERVISION = "await_needs_supervision"
    NOT_SUPERVISED = "not_supervised"
    MODERN_AUTH_NEEDS_WEB_URL = "modern_auth_needs_web_url"
    WEB_URL_WITHOUT_MODERN_AUTH = "web_url_without_modern_auth"
    MFA_WITH_LEGACY_AUTH = "mfa_with_legacy_auth"
    SKIP_ITEM_UNKNOWN = "skip_item_unknown"
    SKIP_ITEM_DUPLICATE = "skip_item_duplicate"
    SKIP_ITEM_NOT_ON_IOS = "skip_item_not_on_ios"
    LANGUAGE_INVALID = "language_invalid"
    REGION_INVALID = "region_invalid"
    DEPARTMENT_TOO_LONG = "department_too_long"
    DEPARTMENT_INVALID = "department_invalid"
    PHONE_INVALID = "phone_invalid"
    EMAIL_INVALID = "email_invalid"
    ANCHOR_CERT_INVALID = "anchor_cert_invalid"


_REJECTED = ReasonCode.DEP_PROFILE_REJECTED
# rule: (severity, reason code or None for advice that is no refusal of Apple's)
_RULES: Final[Mapping[LintRule, tuple[Severity, ReasonCode | None]]] = MappingProxyType(
    {
        LintRule.NAME_REQUIRED: (Severity.CRITICAL, _REJECTED),
        LintRule.NAME_TOO_LONG: (Severity.CRITICAL, _REJECTED),
        LintRule.NAME_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.URL_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.URL_NOT_HTTPS: (Severity.CRITICAL, _REJECTED),
        LintRule.REMOVABLE_NEEDS_SUPERVISION: (Severity.CRITICAL, _REJECTED),
        LintRule.AWAIT_NEEDS_SUPERVISION: (Severity.WARNING, None),
        LintRule.NOT_SUPERVISED: (Severity.INFO, None),
        LintRule.MODERN_AUTH_NEEDS_WEB_URL: (Severity.CRITICAL, None),
        LintRule.WEB_URL_WITHOUT_MODERN_AUTH: (Severity.CRITICAL, None),
        LintRule.MFA_WITH_LEGACY_AUTH: (Severity.WARNING, ReasonCode.DEP_MFA_WITH_LEGACY_AUTH),
        LintRule.SKIP_ITEM_UNKNOWN: (Severity.CRITICAL, _REJECTED),
        LintRule.SKIP_ITEM_DUPLICATE: (Severity.WARNING, None),
        LintRule.SKIP_ITEM_NOT_ON_IOS: (Severity.INFO, None),
        LintRule.LANGUAGE_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.REGION_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.DEPARTMENT_TOO_LONG: (Severity.CRITICAL, _REJECTED),
        LintRule.DEPARTMENT_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.PHONE_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.EMAIL_INVALID: (Severity.CRITICAL, _REJECTED),
        LintRule.ANCHOR_CERT_INVALID: (Severity.CRITICAL, _REJECTED),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdeProfile:
    """An ADE enrollment profile as an admin defines it.

    ``url`` is Pomona's MachineInfo endpoint and ``configuration_web_url`` its sign-in web view (both
    set by the service from the public URL). ``org_magic`` identifies the organisation to Apple (the
    tenant). ``anchor_certs`` are DER certificates the device trusts for ``url`` instead of its roots.
    The defaults are what ADE is for: supervised, not removable, modern sign-in.
    """

    name: str
    url: str
    org_magic: str
    auth: AuthMode = AuthMode.MODERN
    is_mdm_removable: bool = False
    is_supervised: bool = True
    await_device_configured: bool = False
    skip_setup_items: tuple[str, ...] = ()
    language: str | None = None
    region: str | None = None
    department: str | None = None
    support_phone_number: str | None = None
    support_email_address: str | None = None
    configuration_web_url: str | None = None
    anchor_certs: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class ProfileFinding:
    """One thing :func:`lint` found: the rule, the profile field it is about, and its message.

    ``message_key`` is a key of ``pomona/i18n/<lang>.json``; ``values`` fill its ``{placeholders}``.
    """

    rule: LintRule
    field: str
    values: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    @property
    def severity(self) -> Severity:
        return _RULES[self.rule][0]

    @property
    def code(self) -> ReasonCode | None:
        """The reason code this finding predicts (DEP_PROFILE_REJECTED, DEP_MFA_WITH_LEGACY_AUTH), or None."""
        return _RULES[self.rule][1]

    @property
    def blocking(self) -> bool:
        """Whether the profile must not be sent to Apple while this finding stands."""
        return self.severity is Severity.CRITICAL

    @property
    def message_key(self) -> str:
        return f"ade_profile.lint.{self.rule.value}"

    def to_json(self) -> dict[str, object]:
        """The shape the API and the CLI print: rule, code, field, severity, message key and values."""
        return {
            "rule": self.rule.value,
            "code": self.code.value if self.code else None,
            "field": self.field,
            "severity": self.severity.value,
            "message_key": self.message_key,
            "values": dict(self.values),
        }


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_REGION = re.compile(r"[A-Z]{2}")
_PHONE = re.compile(r"\+?[0-9(][0-9 ().\-/]*(?:\s*(?:x|ext\.?|#)\s*[0-9]{1,6})?", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")


def _check_url(out: list[ProfileFinding], name: str, value: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if (
        parts is None
        or not parts.scheme
        or not parts.hostname
        or len(value) > URL_MAX
        or value != value.strip()
    ):
        out.append(ProfileFinding(LintRule.URL_INVALID, name, {"value": value[:200]}))
    elif parts.scheme.lower() != "https":
        out.append(ProfileFinding(LintRule.URL_NOT_HTTPS, name, {"value": value[:200]}))


def _is_phone(value: str) -> bool:
    digits = sum(ch.isdigit() for ch in value)
    return len(value) <= PHONE_MAX and 3 <= digits <= 20 and _PHONE.fullmatch(value.strip()) is not None


def lint(profile: AdeProfile, *, users_require_mfa: bool = False) -> list[ProfileFinding]:
    """Every finding about ``profile``, in the order of the module docstring's rules.

    ``users_require_mfa``: the users the profile targets must pass MFA (the caller knows it from the
    directory); with LEGACY authentication that is DEP_MFA_WITH_LEGACY_AUTH.
    """
    out: list[ProfileFinding] = []
    # 1. the name
    name = profile.name
    if not name.strip():
        out.append(ProfileFinding(LintRule.NAME_REQUIRED, "profile_name"))
    elif len(name) > PROFILE_NAME_MAX:
        out.append(ProfileFinding(LintRule.NAME_TOO_LONG, "profile_name", {"limit": PROFILE_NAME_MAX}))
    elif _CONTROL.search(name):
        out.append(ProfileFinding(LintRule.NAME_INVALID, "profile_name"))
    # 2. the URLs
    _check_url(out, "url", profile.url)
    if profile.configuration_web_url is not None:
        _check_url(out, "configuration_web_url", profile.configuration_web_url)
    # 3. the flags
    if not profile.is_mdm_removable and not profile.is_supervised:
        out.append(ProfileFinding(LintRule.REMOVABLE_NEEDS_SUPERVISION, "is_mdm_removable"))
    if profile.await_device_configured and not profile.is_supervised:
        out.append(ProfileFinding(LintRule.AWAIT_NEEDS_SUPERVISION, "await_device_configured"))
    if not profile.is_supervised:
        out.append(ProfileFinding(LintRule.NOT_SUPERVISED, "is_supervised"))
    # 4. authentication
    if profile.auth is AuthMode.MODERN and not profile.configuration_web_url:
        out.append(ProfileFinding(LintRule.MODERN_AUTH_NEEDS_WEB_URL, "configuration_web_url"))
    if profile.auth is not AuthMode.MODERN and profile.configuration_web_url:
        out.append(ProfileFinding(LintRule.WEB_URL_WITHOUT_MODERN_AUTH, "configuration_web_url"))
    if profile.auth is AuthMode.LEGACY and users_require_mfa:
        out.append(ProfileFinding(LintRule.MFA_WITH_LEGACY_AUTH, "auth"))
    # 5. skip keys
    seen: set[str] = set()
    for item in profile.skip_setup_items:
        if item not in SKIP_KEYS:
            out.append(ProfileFinding(LintRule.SKIP_ITEM_UNKNOWN, "skip_setup_items", {"value": item[:100]}))
        elif item in seen:
            out.append(ProfileFinding(LintRule.SKIP_ITEM_DUPLICATE, "skip_setup_items", {"value": item}))
        else:
            introduced, gone = SKIP_KEYS[item]
            if introduced is None or gone is not None:
                out.append(
                    ProfileFinding(
                        LintRule.SKIP_ITEM_NOT_ON_IOS, "skip_setup_items", {"value": item, "since": gone}
                    )
                )
        seen.add(item)
    # 6. language and region
    if profile.language is not None and not _LANGUAGE.fullmatch(profile.language):
        out.append(ProfileFinding(LintRule.LANGUAGE_INVALID, "language", {"value": profile.language[:20]}))
    if profile.region is not None and not _REGION.fullmatch(profile.region):
        out.append(ProfileFinding(LintRule.REGION_INVALID, "region", {"value": profile.region[:20]}))
    # 7. department
    if profile.department is not None:
        if len(profile.department) > DEPARTMENT_MAX:
            out.append(ProfileFinding(LintRule.DEPARTMENT_TOO_LONG, "department", {"limit": DEPARTMENT_MAX}))
        elif not profile.department.strip() or _CONTROL.search(profile.department):
            out.append(ProfileFinding(LintRule.DEPARTMENT_INVALID, "department"))
    # 8. support contacts
    if profile.support_phone_number is not None and not _is_phone(profile.support_phone_number):
        out.append(
            ProfileFinding(
                LintRule.PHONE_INVALID, "support_phone_number", {"value": profile.support_phone_number[:60]}
            )
        )
    email = profile.support_email_address
    if email is not None and (len(email) > EMAIL_MAX or not _EMAIL.fullmatch(email)):
        out.append(ProfileFinding(LintRule.EMAIL_INVALID, "support_email_address", {"value": email[:100]}))
    # 9. anchor certificates
    for index, der in enumerate(profile.anchor_certs):
        if not is_der_certificate(der):
            out.append(ProfileFinding(LintRule.ANCHOR_CERT_INVALID, "anchor_certs", {"index": index}))
    return out


def is_sendable(findings: list[ProfileFinding]) -> bool:
    """Whether a profile with these findings may be sent to Apple (no blocking finding)."""
    return not any(f.blocking for f in findings)


def to_definition(profile: AdeProfile, *, devices: tuple[str, ...] = ()) -> ProfileDefinition:
    """The wire object of ``POST /profile`` for this profile (``protocol.dep_profile`` encodes it).

    ``is_mandatory`` is always sent true (iOS 13 makes every ADE enrollment mandatory); the web view URL
    only with MODERN authentication.
    """
    return ProfileDefinition(
        profile_name=profile.name,
        url=profile.url,
        org_magic=profile.org_magic,
        is_mdm_removable=profile.is_mdm_removable,
        is_supervised=profile.is_supervised,
        is_mandatory=True,
        await_device_configured=profile.await_device_configured,
        skip_setup_items=tuple(dict.fromkeys(profile.skip_setup_items)),
        configuration_web_url=profile.configuration_web_url if profile.auth is AuthMode.MODERN else None,
        language=profile.language,
        region=profile.region,
        department=profile.department,
        support_phone_number=profile.support_phone_number,
        support_email_address=profile.support_email_address,
        anchor_certs=profile.anchor_certs,
        devices=devices,
    )


_SETTINGS: Final = (
    "is_mdm_removable",
    "is_supervised",
    "await_device_configured",
    "language",
    "region",
    "department",
    "support_phone_number",
    "support_email_address",
)


def to_settings(profile: AdeProfile) -> dict[str, object]:
    """What is kept of a profile (JSON): everything but its name and the URLs and ``org_magic``, which
    the server gives (:func:`from_settings` puts them back)."""
    out: dict[str, object] = {name: getattr(profile, name) for name in _SETTINGS}
    out["auth"] = profile.auth.value
    out["skip_setup_items"] = list(profile.skip_setup_items)
    out["anchor_certs"] = [der.hex() for der in profile.anchor_certs]
    return out


def from_settings(
    name: str, settings: Mapping[str, object], *, url: str, web_url: str, org_magic: str
) -> AdeProfile:
    """The profile :func:`to_settings` kept, at the server's URLs (the web view only with MODERN)."""
    auth = AuthMode(str(settings.get("auth", AuthMode.MODERN.value)))

    def opt(key: str) -> str | None:
        value = settings.get(key)
        return None if value is None else str(value)

    skip = settings.get("skip_setup_items") or []
    certs = settings.get("anchor_certs") or []
    return AdeProfile(
        name=name,
        url=url,
        org_magic=org_magic,
        auth=auth,
        is_mdm_removable=bool(settings.get("is_mdm_removable", False)),
        is_supervised=bool(settings.get("is_supervised", True)),
        await_device_configured=bool(settings.get("await_device_configured", False)),
        skip_setup_items=tuple(str(v) for v in skip) if isinstance(skip, list) else (),
        language=opt("language"),
        region=opt("region"),
        department=opt("department"),
        support_phone_number=opt("support_phone_number"),
        support_email_address=opt("support_email_address"),
        configuration_web_url=web_url if auth is AuthMode.MODERN else None,
        anchor_certs=tuple(bytes.fromhex(str(v)) for v in certs) if isinstance(certs, list) else (),
    )
